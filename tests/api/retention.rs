//! Retention (docs/operations.md, "Retention"): what a pass deletes and what it must never delete,
//! with backdated rows in a real Postgres and one pass driven directly.

use pimbridge::config::Settings;
use pimbridge::retention::{Retention, RetentionReport};
use pimbridge::store;
use testkit::helpers::*;
use tokio_util::sync::CancellationToken;

/// An app (for its migrations) with retention off, so that only the test's pass deletes.
async fn app_without_retention(
    tweak: impl Fn(&mut pimbridge::config::RetentionSettings),
) -> (TestApp, Retention) {
    let url = testkit::postgres::PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.retention.enabled = false;
    settings.retention.batch_size = 1000;
    tweak(&mut settings.retention);
    let app = spawn_app_with(settings.clone(), &url).await;
    let retention = Retention {
        pool: store::build_pool(&settings.database).unwrap(),
        settings: settings.retention,
    };
    (app, retention)
}

async fn pass(retention: &Retention) -> RetentionReport {
    retention
        .run_if_free(&CancellationToken::new())
        .await
        .unwrap()
        .expect("no other replica runs retention")
}

/// Inserts an event received `days_ago`, returning its id.
async fn event(app: &TestApp, key: &str, days_ago: i32) -> i64 {
    app.db
        .query_one(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, received_at,
                                 group_id, principal_id, routing)
             VALUES ('api', $1, 'activation', now() - make_interval(days => $2),
                     now() - make_interval(days => $2), $3, $1, 'routed')
             RETURNING id",
            &[&key, &days_ago, &GROUP_A],
        )
        .await
        .unwrap()
        .get(0)
}

/// Inserts a job of `event` in `state`, created (and, if final, completed) `days_ago`.
async fn job(app: &TestApp, event: i64, state: &str, days_ago: i32) -> i64 {
    app.db
        .query_one(
            "INSERT INTO jobs (event_id, application, action, lane, state, created_at,
                               completed_at, lease_owner, lease_expires_at)
             VALUES ($1, 'alpha', 'add', 'deferred', $2, now() - make_interval(days => $3),
                     CASE WHEN $2 IN ('done', 'failed', 'superseded')
                          THEN now() - make_interval(days => $3) END,
                     CASE WHEN $2 = 'running' THEN 'someone' END,
                     CASE WHEN $2 = 'running' THEN now() END)
             RETURNING id",
            &[&event, &state, &days_ago],
        )
        .await
        .unwrap()
        .get(0)
}

/// Inserts a grant of `event` that started `days_ago` and ends `ends_in_days` from now.
async fn grant(app: &TestApp, key: &str, event: i64, days_ago: i32, ends_in_days: i32) -> i64 {
    app.db
        .query_one(
            "INSERT INTO grants (application, source, grant_key, principal_id, group_id,
                                 started_at, ends_at, activated_at, event_id)
             VALUES ('alpha', 'api', $1, $1, $2, now() - make_interval(days => $3),
                     now() + make_interval(days => $4), now() - make_interval(days => $3), $5)
             RETURNING id",
            &[&key, &GROUP_A, &days_ago, &ends_in_days, &event],
        )
        .await
        .unwrap()
        .get(0)
}

async fn log_entry(app: &TestApp, job: Option<i64>, cycle: Option<i64>, days_ago: i32) -> i64 {
    app.db
        .query_one(
            "INSERT INTO provisioning_log (application, cycle_id, job_id, action, principal_id,
                                           group_id, status, started_at, finished_at)
             VALUES ('alpha', $1, $2, 'add', 'p', 'g', 'succeeded',
                     now() - make_interval(days => $3), now() - make_interval(days => $3))
             RETURNING id",
            &[&cycle, &job, &days_ago],
        )
        .await
        .unwrap()
        .get(0)
}

async fn cycle(app: &TestApp, days_ago: i32, outcome: &str) -> i64 {
    app.db
        .query_one(
            "INSERT INTO cycles (application, kind, owner, cutoff, started_at, finished_at,
                                 outcome)
             VALUES ('alpha', 'incremental', 'r', now() - make_interval(days => $1),
                     now() - make_interval(days => $1),
                     CASE WHEN $2 <> 'running' THEN now() - make_interval(days => $1) END, $2)
             RETURNING id",
            &[&days_ago, &outcome],
        )
        .await
        .unwrap()
        .get(0)
}

async fn exists(app: &TestApp, table: &str, id: i64) -> bool {
    app.db
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_pass_removes_old_finished_history_of_every_kind() {
    let (app, retention) = app_without_retention(|_| {}).await;
    let lone_event = event(&app, "lone", 100).await;
    let done_event = event(&app, "done", 100).await;
    let done_job = job(&app, done_event, "done", 100).await;
    let failed_event = event(&app, "failed", 100).await;
    let failed_job = job(&app, failed_event, "failed", 100).await;
    let ended_event = event(&app, "ended", 100).await;
    let ended_grant = grant(&app, "ended", ended_event, 100, -95).await;
    let old_log = log_entry(&app, Some(done_job), None, 100).await;
    let old_cycle = cycle(&app, 100, "succeeded").await;
    let cycle_log = log_entry(&app, None, Some(old_cycle), 100).await;
    let _newest_cycle = cycle(&app, 99, "succeeded").await;
    let hint: i64 = app
        .db
        .query_one(
            "INSERT INTO graph_hints (group_id, state, received_at, completed_at)
             VALUES ('g', 'done', now() - interval '100 days', now() - interval '100 days')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let report = pass(&retention).await;

    for (table, id) in [
        ("events", lone_event),
        ("events", done_event),
        ("jobs", done_job),
        ("events", failed_event),
        ("jobs", failed_job),
        ("events", ended_event),
        ("grants", ended_grant),
        ("provisioning_log", old_log),
        ("provisioning_log", cycle_log),
        ("cycles", old_cycle),
        ("graph_hints", hint),
    ] {
        assert!(!exists(&app, table, id).await, "{table} {id} deleted");
    }
    assert_eq!(report["events"], 4, "{report:?}");
    assert_eq!(report["jobs"], 2, "{report:?}");
    assert_eq!(report["grants"], 1, "{report:?}");
    assert_eq!(report["provisioning_log"], 2, "{report:?}");
    assert_eq!(report["cycles"], 1, "{report:?}");
    assert_eq!(report["graph_hints"], 1, "{report:?}");
}

#[tokio::test]
async fn a_pass_never_removes_what_is_still_needed() {
    let (app, retention) = app_without_retention(|_| {}).await;
    // Pending and running jobs, and their events, however old.
    let pending_event = event(&app, "pending", 200).await;
    let pending_job = job(&app, pending_event, "pending", 200).await;
    let running_event = event(&app, "running", 200).await;
    let running_job = job(&app, running_event, "running", 200).await;
    // A grant in force, and the event that started it.
    let active_event = event(&app, "active", 100).await;
    let active_grant = grant(&app, "active", active_event, 100, 1).await;
    // A grant that ended recently, and its event.
    let recent_end_event = event(&app, "recent-end", 100).await;
    let recent_end_grant = grant(&app, "recent-end", recent_end_event, 100, -2).await;
    // An old job a recent log entry still names.
    let logged_event = event(&app, "logged", 100).await;
    let logged_job = job(&app, logged_event, "done", 100).await;
    let recent_log = log_entry(&app, Some(logged_job), None, 1).await;
    // The newest cycle, however old, and a running or held one.
    let newest_cycle = cycle(&app, 300, "succeeded").await;
    let running_cycle = cycle(&app, 300, "running").await;
    // Recent history.
    let recent_event = event(&app, "recent", 1).await;
    let recent_job = job(&app, recent_event, "done", 1).await;
    // A pending hint, however old.
    let pending_hint: i64 = app
        .db
        .query_one(
            "INSERT INTO graph_hints (group_id, received_at) VALUES ('g', now() - interval '200 days')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Pimbridge's record of AWS: unknown, owned and present, absent; none is ever deleted.
    app.db
        .batch_execute(
            "INSERT INTO aws_memberships (application, principal_id, group_id, aws_state,
                                          provenance, updated_at)
             VALUES ('alpha', 'u1', 'g', 'unknown', 'owned', now() - interval '300 days'),
                    ('alpha', 'u2', 'g', 'present', 'owned', now() - interval '300 days'),
                    ('alpha', 'u3', 'g', 'absent', NULL, now() - interval '300 days')",
        )
        .await
        .unwrap();

    let report = pass(&retention).await;

    for (table, id) in [
        ("events", pending_event),
        ("jobs", pending_job),
        ("events", running_event),
        ("jobs", running_job),
        ("events", active_event),
        ("grants", active_grant),
        ("events", recent_end_event),
        ("grants", recent_end_grant),
        ("events", logged_event),
        ("jobs", logged_job),
        ("provisioning_log", recent_log),
        ("cycles", newest_cycle),
        ("cycles", running_cycle),
        ("events", recent_event),
        ("jobs", recent_job),
        ("graph_hints", pending_hint),
    ] {
        assert!(exists(&app, table, id).await, "{table} {id} kept");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM aws_memberships").await,
        3,
        "the record of AWS is never deleted"
    );
    assert!(report.values().all(|n| *n == 0), "{report:?}");
}

#[tokio::test]
async fn limits_per_kind_override_the_default_and_batches_finish_the_backlog() {
    let (app, retention) =
        app_without_retention(|r| r.days_by_kind.provisioning_log = Some(7)).await;
    let retention = Retention {
        settings: pimbridge::config::RetentionSettings {
            batch_size: 100,
            ..retention.settings
        },
        ..retention
    };
    let ten_days_log = log_entry(&app, None, None, 10).await;
    let ten_days_event = event(&app, "ten-days", 10).await;
    app.db
        .execute(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, received_at,
                                 group_id, principal_id, routing)
             SELECT 'api', 'bulk-' || i, 'deactivation', now() - interval '120 days',
                    now() - interval '120 days', 'g', 'p', 'unrouted'
             FROM generate_series(1, 250) i",
            &[],
        )
        .await
        .unwrap();

    let report = pass(&retention).await;

    assert!(!exists(&app, "provisioning_log", ten_days_log).await);
    assert!(exists(&app, "events", ten_days_event).await);
    assert_eq!(report["events"], 250, "three batches: {report:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE source_event_id LIKE 'bulk-%'")
            .await,
        0
    );
}

#[tokio::test]
async fn one_replica_at_a_time_runs_retention() {
    let (app, retention) = app_without_retention(|_| {}).await;
    let holder = retention.pool.get().await.unwrap();
    assert!(store::retention::try_lock(&holder).await.unwrap());
    let second = retention
        .run_if_free(&CancellationToken::new())
        .await
        .unwrap();
    assert!(second.is_none(), "the other replica skips its pass");
    store::retention::unlock(&holder).await.unwrap();
    drop(app);
}

#[test]
fn retention_settings_are_checked_at_start_up_naming_the_key() {
    let base = test_settings_toml("postgres://u@localhost/db");
    let (head, apps) = base.split_once("[applications.alpha]").unwrap();
    for (section, key) in [
        ("[retention]\ndays = 0", "retention.days"),
        ("[retention]\nbatch_size = 0", "retention.batch_size"),
        ("[retention]\nduty_cycle = 0", "retention.duty_cycle"),
        ("[retention]\nduty_cycle = 1.5", "retention.duty_cycle"),
        ("[retention]\ninterval = \"10ms\"", "retention.interval"),
        (
            "[retention.days_by_kind]\nevents = 0",
            "retention.days_by_kind.events",
        ),
    ] {
        let toml = format!("{head}{section}\n[applications.alpha]{apps}");
        let error = Settings::from_toml_str(&toml).unwrap_err().to_string();
        assert!(error.contains(key), "`{key}` named in: {error}");
    }
    let unknown = format!("{head}[retention.days_by_kind]\nmail = 3\n[applications.alpha]{apps}");
    let error = Settings::from_toml_str(&unknown).unwrap_err().to_string();
    assert!(error.contains("mail"), "{error}");
    let durations = format!("{head}[retention]\ninterval = \"1h\"\n[applications.alpha]{apps}");
    let settings = Settings::from_toml_str(&durations).unwrap();
    assert_eq!(settings.retention.interval.as_secs(), 3600);
    assert_eq!(settings.retention.days, 90);
}
