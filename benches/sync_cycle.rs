//! Sync-cycle benchmark: how long one cycle takes to apply N deferred changes to AWS (the
//! emulator), paced at the application's `requests_per_second`.
//!
//! Run: `cargo bench --bench sync_cycle` (add `-- --changes 1000 --rate 50` to change the size and
//! the outbound pace). Under `cargo test` it makes a small smoke run instead.
//! Three cases, one cycle each: N activations of users AWS has never seen (a user create each, then
//! PATCHes of 100 members), the N deactivations of those users (PATCHes of 100 removals), and N
//! re-activations of the now known users (PATCHes only).
//!
//! Then planning against history (`-- --history 1000000 --pending 10000`, both the defaults under
//! `cargo bench`): a fresh database gets `history` past events of 50,000 other users (each with its
//! done job and ended grant, and an `absent` record of AWS), then `pending` activations of new users
//! go to the deferred lane; the cycle's planning statement (`store::cycles::plan`) is timed on its
//! own and with its pages read, then the cycle runs unpaced (10,000 requests/s), then the deactivations of the same users,
//! then their re-activations (users AWS knows: PATCHes only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{event, Bench};

struct Args {
    changes: usize,
    rate: u32,
    history: i64,
    pending: usize,
}

fn args() -> Args {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut args = Args {
        changes: if benchmarking { 1000 } else { 20 },
        rate: 50,
        history: if benchmarking { 1_000_000 } else { 2_000 },
        pending: if benchmarking { 10_000 } else { 50 },
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--changes" => {
                args.changes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.changes)
            }
            "--rate" => args.rate = it.next().and_then(|v| v.parse().ok()).unwrap_or(args.rate),
            "--history" => {
                args.history = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.history)
            }
            "--pending" => {
                args.pending = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.pending)
            }
            _ => {}
        }
    }
    args
}

/// Posts `n` events of `kind` for users 0..n, `hours_ago` hours ago, in batches of 1000.
async fn post_all(bench: &Bench, prefix: &str, kind: &str, n: usize, hours_ago: i64) {
    let at = (time::OffsetDateTime::now_utc() - time::Duration::hours(hours_ago))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        let batch: Vec<String> = chunk
            .iter()
            .map(|i| event(&format!("{prefix}-{i}"), kind, &format!("user-{i}"), &at))
            .collect();
        let response = bench
            .signed_post(format!("[{}]", batch.join(",")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
}

/// Makes the cycle due, waits for it, and prints what it did.
async fn cycle(bench: &Bench, label: &str) {
    let before = bench.count("SELECT coalesce(max(id), 0) FROM cycles").await;
    // Immediate jobs first, so that the cycle sees a settled queue.
    while bench
        .count("SELECT count(*) FROM jobs WHERE lane = 'immediate' AND state IN ('pending', 'running')")
        .await
        > 0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bench.emulator.clear_request_log();
    bench
        .db
        .execute("UPDATE applications SET next_cycle_at = now()", &[])
        .await
        .unwrap();
    let waited = Instant::now();
    let row = loop {
        let row = bench
            .db
            .query_opt(
                "SELECT changes_planned, changes_applied, changes_failed + changes_retrying,
                        extract(epoch FROM finished_at - started_at)::float8
                 FROM cycles WHERE id > $1 AND outcome <> 'running' ORDER BY id LIMIT 1",
                &[&before],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(waited.elapsed() < Duration::from_secs(3600), "no cycle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (planned, applied, failed, secs): (i32, i32, i32, f64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(failed, 0, "{label}: changes failed");
    // Every case changes what it plans (a held or skipped cycle would measure nothing).
    assert_eq!(
        applied, planned,
        "{label}: not every planned change was applied"
    );
    let log = bench.emulator.request_log();
    let count = |method: &str| log.iter().filter(|r| r.method == method).count();
    println!(
        "{label:<34} changes={planned:<6} applied={applied:<6} duration={secs:>8.2} s  \
         {:>8.1} changes/s  requests: POST {} PATCH {} GET {}",
        f64::from(applied) / secs,
        count("POST"),
        count("PATCH"),
        count("GET"),
    );
}

/// Planning against `history` past events, then unpaced cycles of `pending` changes.
async fn history_case(history: i64, pending: usize) {
    let bench = Bench::start(
        "[sync]\ncheck_interval = \"20ms\"",
        "activation_limit = 1\nrequests_per_second = 10000\nrequests_burst = 10000\ncycle_interval = \"1d\"\nmax_removals_per_cycle = 100000000",
    )
    .await;
    bench.initial_cycle().await;
    let loading = Instant::now();
    bench
        .db
        .batch_execute(&format!(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, received_at, group_id,
                                 principal_id, routing)
             SELECT 'api', 'hist-' || i, CASE WHEN i % 2 = 0 THEN 'activation' ELSE 'deactivation' END,
                    now() - interval '60 days' + i * interval '1 ms',
                    now() - interval '60 days' + i * interval '1 ms',
                    '{GROUP}', 'hist-user-' || (i / 2) % 50000, 'routed'
             FROM generate_series(1, {history}) i;
             INSERT INTO jobs (event_id, application, action, lane, state, created_at, completed_at)
             SELECT id, 'bench', CASE kind WHEN 'activation' THEN 'add' ELSE 'remove' END,
                    'deferred', 'done', received_at, received_at
             FROM events WHERE source_event_id LIKE 'hist-%';
             INSERT INTO grants (application, source, grant_key, principal_id, group_id,
                                 started_at, ends_at, activated_at, event_id)
             SELECT 'bench', 'api', source_event_id, principal_id, group_id, occurred_at,
                    occurred_at + interval '1 hour', occurred_at, id
             FROM events WHERE kind = 'activation' AND source_event_id LIKE 'hist-%';
             INSERT INTO aws_memberships (application, principal_id, group_id, aws_state, provenance)
             SELECT 'bench', 'hist-user-' || u, '{GROUP}', 'absent', 'owned'
             FROM generate_series(0, least(49999, {history} / 2)) u
             ON CONFLICT DO NOTHING;
             ANALYZE;",
            GROUP = support::GROUP
        ))
        .await
        .unwrap();
    println!(
        "\nplanning against history: {history} past events loaded in {:.1} s, {pending} pending changes",
        loading.elapsed().as_secs_f64()
    );
    post_all(&bench, "pend", "activation", pending, 1).await;
    let settings = pimbridge::config::DatabaseSettings {
        url: Some(bench.database_url.as_str().into()),
        url_file: None,
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
    };
    let pool = pimbridge::store::build_pool(&settings).unwrap();
    let client = pool.get().await.unwrap();
    let mut times = Vec::new();
    let mut pairs = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let plan =
            pimbridge::store::cycles::plan(&client, "bench", time::OffsetDateTime::now_utc())
                .await
                .unwrap();
        let planned = started.elapsed().as_secs_f64();
        // Then read it a page at a time, as a cycle does.
        let mut after: Option<(String, String)> = None;
        let mut read = 0;
        loop {
            let from = after.as_ref().map(|(g, p)| (g.as_str(), p.as_str()));
            let page = pimbridge::store::cycles::plan_page(&client, "bench", from, 1000)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            read += page.len();
            after = Some((
                last.subject.group_id.clone(),
                last.subject.principal_id.clone(),
            ));
        }
        assert_eq!(read as i64, plan.pairs);
        times.push((planned, started.elapsed().as_secs_f64()));
        pairs = plan.pairs;
    }
    times.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap());
    println!(
        "{:<34} pairs={pairs:<6} {:.3} s, with every page read {:.3} s (fastest of 3; slowest {:.3} s)",
        "planning (store::cycles::plan)", times[0].0, times[0].1, times[2].1
    );
    cycle(&bench, "unpaced: activations, new users").await;
    post_all(&bench, "pend-off", "deactivation", pending, 0).await;
    cycle(&bench, "unpaced: deactivations").await;
    post_all(&bench, "pend-again", "activation", pending, 0).await;
    cycle(&bench, "unpaced: re-activations").await;
    bench.stop().await;
}

#[tokio::main]
async fn main() {
    let args = args();
    let rate = args.rate;
    let bench = Bench::start(
        "[sync]\ncheck_interval = \"20ms\"",
        // One immediate slot per window: nearly everything posted goes to the deferred lane.
        &format!(
            "activation_limit = 1\nrequests_per_second = {rate}\nrequests_burst = {rate}\ncycle_interval = \"1d\"\n# Removes what it measures: no deletion threshold.\nmax_removals_per_cycle = 100000000"
        ),
    )
    .await;
    // Let the application's initial cycle pass.
    bench.initial_cycle().await;
    let n = args.changes;
    println!(
        "sync cycle: {n} changes per case, outbound pace {rate} requests/s (burst {rate}), {} cores, loopback\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    post_all(&bench, "new", "activation", n, 3).await;
    cycle(&bench, "activations, users new to AWS").await;
    post_all(&bench, "off", "deactivation", n, 2).await;
    cycle(&bench, "deactivations").await;
    post_all(&bench, "again", "activation", n, 1).await;
    cycle(&bench, "activations, users known to AWS").await;
    bench.stop().await;
    history_case(args.history, args.pending).await;
}
