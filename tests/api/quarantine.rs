//! Quarantine: an application whose credentials AWS refuses stops getting immediate pushes, its
//! cycles back off, and the first success brings it back.

use std::time::{Duration, Instant};

use aws_scim_emulator::Fault;

use crate::fixture::*;
use crate::helpers::*;

/// Waits until `sql` counts at least one row.
async fn until(app: &TestApp, sql: &str) {
    let start = Instant::now();
    while app.count(sql).await == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {sql}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (quarantined, count, hours until the next cycle) of application alpha.
async fn quarantine_of(app: &TestApp) -> (bool, i32, f64) {
    let row = app
        .db
        .query_one(
            "SELECT quarantined_at IS NOT NULL, quarantine_count,
                    extract(epoch FROM next_cycle_at - now())::float8 / 3600
             FROM applications WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn quarantined_metric(metrics: &str) -> f64 {
    metric_value(
        metrics,
        "pimbridge_application_quarantined",
        &[("application", "alpha")],
    )
}

#[tokio::test]
async fn refused_credentials_quarantine_the_application_until_a_cycle_succeeds() {
    // Arrange: AWS refuses alpha's token.
    let f = spawn_with_cycles(|_| {}).await;
    f.a.inject(Fault::error(401, 1_000_000));

    // Act 1: an activation meets the 401.
    f.app
        .post_events(&activation("q-1", GROUP_A, "q-one"))
        .await;
    until(
        &f.app,
        "SELECT count(*) FROM jobs WHERE lane = 'deferred' AND state = 'pending'",
    )
    .await;

    // Assert 1: quarantined, the change kept for the cycles, the next cycle 6 hours away.
    let (quarantined, count, hours) = quarantine_of(&f.app).await;
    assert!(quarantined);
    assert_eq!(count, 1);
    assert!((5.9..=6.0).contains(&hours), "{hours}");
    assert_eq!(quarantined_metric(&f.app.metrics().await), 1.0);

    // Act 2: the next activation is deferred without a request.
    let requests = f.a.request_log().len();
    f.app
        .post_events(&activation("q-2", GROUP_A, "q-two"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Assert 2
    assert_eq!(
        f.a.request_log().len(),
        requests,
        "nothing sent while quarantined"
    );
    assert_eq!(
        f.app
            .count("SELECT count(*) FROM jobs WHERE lane = 'deferred' AND state = 'pending'")
            .await,
        2
    );

    // Act 3: a cycle still meets the 401: the back-off grows to 12 hours.
    let refused = run_cycle(&f.app, "alpha").await;
    let (quarantined, count, hours) = quarantine_of(&f.app).await;

    // Assert 3
    assert_eq!(refused.outcome, "failed");
    assert!(quarantined);
    assert_eq!(count, 2);
    assert!((11.9..=12.0).contains(&hours), "{hours}");

    // Act 4: the credentials work again.
    f.a.clear_faults();
    let recovered = run_cycle(&f.app, "alpha").await;

    // Assert 4: both activations applied, quarantine over.
    assert_eq!(
        (recovered.outcome.as_str(), recovered.applied),
        ("succeeded", 2)
    );
    assert_eq!(members(&f.a), 2);
    let (quarantined, count, _) = quarantine_of(&f.app).await;
    assert!(!quarantined);
    assert_eq!(count, 0);
    assert_eq!(quarantined_metric(&f.app.metrics().await), 0.0);
}

#[tokio::test]
async fn a_quarantined_application_with_nothing_to_do_is_probed() {
    // Arrange: quarantined earlier, no pending changes.
    let f = spawn_with_cycles(|_| {}).await;
    f.app
        .db
        .execute(
            "UPDATE applications SET quarantined_at = now(), quarantine_count = 1,
                 quarantine_reason = 'test' WHERE name = 'alpha'",
            &[],
        )
        .await
        .unwrap();
    f.a.inject(Fault::error(403, 1));

    // Act: the first probe is refused, the second succeeds.
    run_cycle(&f.app, "alpha").await;
    let after_refusal = quarantine_of(&f.app).await;
    run_cycle(&f.app, "alpha").await;
    let after_success = quarantine_of(&f.app).await;

    // Assert
    assert!(after_refusal.0);
    assert_eq!(after_refusal.1, 2);
    assert!(!after_success.0);
}

#[tokio::test]
async fn an_outage_does_not_quarantine() {
    let f = spawn_with_cycles(|_| {}).await;
    f.app.post_events(&activations("o", GROUP_A, 12)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;
    f.a.inject(Fault::error(503, 1_000_000));

    let cycle = run_cycle(&f.app, "alpha").await;

    assert_eq!(cycle.retrying, 7);
    assert!(!quarantine_of(&f.app).await.0);
}

#[tokio::test]
async fn changes_that_nearly_all_fail_for_good_quarantine_the_application() {
    // Arrange: five deferred activations without the attributes needed to create the users.
    let f = spawn_with_cycles(|app| app.activation_limit = 1).await;
    f.app
        .post_events(&activation("slot", GROUP_A, "slot-holder"))
        .await;
    let bare: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            let mut e = activation(&format!("bare-{i}"), GROUP_A, &format!("bare-{i}"));
            e.as_object_mut().unwrap().remove("user");
            e
        })
        .collect();
    f.app.post_events(&serde_json::Value::Array(bare)).await;
    wait_for_no_pending(&f.app, Duration::from_secs(5)).await;

    // Act
    let cycle = run_cycle(&f.app, "alpha").await;

    // Assert
    assert_eq!((cycle.failed, cycle.applied), (5, 0));
    let (quarantined, count, hours) = quarantine_of(&f.app).await;
    assert!(quarantined);
    assert_eq!(count, 1);
    assert!((5.9..=6.0).contains(&hours), "{hours}");
}
