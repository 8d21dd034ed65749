//! Sync-cycle benchmark: how long one cycle takes to apply N deferred changes to AWS (the
//! emulator), paced at the application's `requests_per_second`.
//!
//! Run: `cargo bench --bench sync_cycle` (add `-- --changes 1000 --rate 50` to change the size and
//! the outbound pace). Under `cargo test` it makes a small smoke run instead.
//! Three cases, one cycle each: N activations of users AWS has never seen (a user create each, then
//! PATCHes of 100 members), the N deactivations of those users (PATCHes of 100 removals), and N
//! re-activations of the now known users (PATCHes only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{event, Bench};

struct Args {
    changes: usize,
    rate: u32,
}

fn args() -> Args {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut args = Args {
        changes: if benchmarking { 1000 } else { 20 },
        rate: 50,
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

#[tokio::main]
async fn main() {
    let args = args();
    let rate = args.rate;
    let bench = Bench::start(
        "[sync]\ncheck_interval = \"20ms\"",
        // One immediate slot per window: nearly everything posted goes to the deferred lane.
        &format!(
            "activation_limit = 1\nrequests_per_second = {rate}\nrequests_burst = {rate}\ncycle_interval = \"1d\""
        ),
    )
    .await;
    // Let the application's initial cycle pass.
    while bench
        .count("SELECT count(*) FROM cycles WHERE outcome <> 'running'")
        .await
        == 0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
}
