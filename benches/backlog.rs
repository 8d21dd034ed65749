//! Memory with a large backlog: VmRSS of the service (in this process, with the emulator and the
//! load) idle, then with 1,000,000 deferred jobs waiting while a cycle works through them at the
//! default pace, then with 100 activations/s posted on top. The goal is a flat figure: a cycle
//! reads its plan a page at a time, so what it holds does not grow with the backlog.
//!
//! Also the immediate lane beside the backlog: receipt → AWS confirmed of five activations of new
//! users posted at once on an empty queue (after five that warm the service up), and again once
//! the backlog is in (before statistics are taken on it, so the intake runs on the plans it made
//! while the queue was empty).
//!
//! Run: `cargo bench --bench backlog` (add `-- --jobs N` for another backlog). Under
//! `cargo test --all-targets` it makes a small smoke run (2,000 jobs, short samples).

// A benchmark may panic on a failed set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{event, mib, now_rfc3339, percentile, rss_kib, Bench, Journey};

/// How long after five admissions the default admission window (10 s) is empty again.
const WINDOW_EMPTY: Duration = Duration::from_millis(10_500);

/// Peak VmRSS sampled every 100 ms for `seconds`.
async fn peak_rss(seconds: f64) -> u64 {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut peak = rss_kib();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib());
    }
    peak
}

/// Posts five activations of users new to AWS at once (ids `tag-0` … `tag-4`), waits until AWS
/// confirmed each, and returns receipt → AWS confirmed of each in ms, sorted.
async fn five_at_once(bench: &std::sync::Arc<Bench>, tag: &str) -> Vec<f64> {
    let posts: Vec<_> = (0..5)
        .map(|i| {
            let (bench, id) = (bench.clone(), format!("{tag}-{i}"));
            tokio::spawn(async move {
                let body = event(&id, "activation", &format!("{id}-user"), &now_rfc3339());
                let response = bench.signed_post(body).send().await.unwrap();
                assert_eq!(response.status(), 202);
            })
        })
        .collect();
    for post in posts {
        post.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let journeys = support::journeys(&bench.db, tag).await;
        if journeys.len() == 5 {
            let mut ms: Vec<f64> = journeys.iter().map(Journey::until_confirmed).collect();
            ms.sort_by(f64::total_cmp);
            return ms;
        }
        assert!(Instant::now() < deadline, "{tag}: not all five reached AWS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut jobs: i64 = if full { 1_000_000 } else { 2_000 };
    let mut args = std::env::args();
    while let Some(arg) = args.next() {
        if arg == "--jobs" {
            jobs = args.next().and_then(|v| v.parse().ok()).unwrap_or(jobs);
        }
    }
    let sample = if full { 10.0 } else { 0.5 };
    // Defaults of the application (pace 5 requests/s); cycles only when asked for.
    let bench = Bench::start(
        "[sync]\ncheck_interval = \"100ms\"",
        "cycle_interval = \"1d\"",
    )
    .await;
    bench.initial_cycle().await;
    let idle = peak_rss(sample).await;
    let bench = std::sync::Arc::new(bench);
    // Five to make the service's connections ready (and their plans, on an empty queue), then,
    // once the admission window (10 s by default) is empty again, five measured.
    five_at_once(&bench, "warm").await;
    tokio::time::sleep(WINDOW_EMPTY).await;
    let empty_queue = five_at_once(&bench, "before").await;
    let window_empty = Instant::now() + WINDOW_EMPTY;

    // The backlog: activations of users new to AWS, each with its deferred job and running grant.
    let loading = Instant::now();
    bench
        .db
        .batch_execute(&format!(
            "INSERT INTO events (source, source_event_id, kind, occurred_at, group_id, principal_id,
                                 user_attributes, group_attributes, routing)
             SELECT 'api', 'backlog-' || i, 'activation', now() - interval '1 minute',
                    '{GROUP}', 'backlog-user-' || i,
                    jsonb_build_object('userName', 'backlog-user-' || i || '@bench.example',
                                       'displayName', 'Bench User', 'givenName', 'Bench',
                                       'familyName', 'User'),
                    jsonb_build_object('displayName', 'Bench-Admins'), 'routed'
             FROM generate_series(1, {jobs}) i;
             INSERT INTO jobs (event_id, application, action, lane)
             SELECT id, 'bench', 'add', 'deferred' FROM events
             WHERE source_event_id LIKE 'backlog-%';
             INSERT INTO grants (application, source, grant_key, principal_id, group_id,
                                 started_at, ends_at, activated_at, event_id)
             SELECT 'bench', 'api', source_event_id, principal_id, group_id, occurred_at,
                    occurred_at + interval '8 hours', occurred_at, id
             FROM events WHERE source_event_id LIKE 'backlog-%';",
            GROUP = support::GROUP
        ))
        .await
        .unwrap();
    let loaded_in = loading.elapsed().as_secs_f64();
    tokio::time::sleep_until(window_empty.into()).await;
    let long_queue = five_at_once(&bench, "after").await;
    bench.db.batch_execute("ANALYZE").await.unwrap();
    let waiting = bench
        .count("SELECT count(*) FROM jobs WHERE lane = 'deferred' AND state = 'pending'")
        .await;

    // A cycle takes the backlog on (at 5 requests/s it will not finish here).
    let asked = Instant::now();
    bench
        .db
        .execute("UPDATE applications SET next_cycle_at = now()", &[])
        .await
        .unwrap();
    // Planned once its row counts the changes asked for.
    let planned_in = loop {
        let planned = bench
            .count("SELECT count(*) FROM cycles WHERE outcome = 'running' AND changes_planned > 0")
            .await;
        if planned > 0 {
            break asked.elapsed().as_secs_f64();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(600),
            "the cycle never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cycling = peak_rss(sample).await;

    // And 100 activations/s on top, for `sample` seconds, sampled while they are posted.
    let n = (100.0 * sample) as usize;
    let load = {
        let bench = bench.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                tokio::time::sleep_until((start + Duration::from_millis(10) * i as u32).into())
                    .await;
                let bench = bench.clone();
                tasks.push(tokio::spawn(async move {
                    let body = event(
                        &format!("load-{i}"),
                        "activation",
                        &format!("load-user-{i}"),
                        &now_rfc3339(),
                    );
                    let response = bench.signed_post(body).send().await.unwrap();
                    assert_eq!(response.status(), 202);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        })
    };
    let under_load = peak_rss(sample).await;
    load.await.unwrap();
    let sent = bench
        .emulator
        .request_log()
        .iter()
        .filter(|r| r.method != "GET")
        .count();

    println!("backlog: {waiting} deferred jobs waiting (loaded in {loaded_in:.1} s)\n");
    println!(
        "   VmRSS idle, empty queue                    {:>7.1} MiB",
        mib(idle)
    );
    println!(
        "   VmRSS while a cycle works the backlog      {:>7.1} MiB  (planned {planned_in:.1} s after it was due)",
        mib(cycling)
    );
    println!(
        "   VmRSS with 100 activations/s on top        {:>7.1} MiB  (goal ≤ 64 MiB, flat)",
        mib(under_load)
    );
    println!("   SCIM requests sent meanwhile (5/s pace)    {sent}");
    println!(
        "\n   five new users at once, receipt → AWS confirmed: empty queue p50 {:.2} ms, fifth {:.2} ms; \
         {waiting} deferred waiting p50 {:.2} ms, fifth {:.2} ms",
        percentile(&empty_queue, 50.0),
        empty_queue[4],
        percentile(&long_queue, 50.0),
        long_queue[4]
    );
    match std::sync::Arc::try_unwrap(bench) {
        Ok(bench) => bench.stop().await,
        Err(_) => unreachable!("every load task has finished"),
    }
}
