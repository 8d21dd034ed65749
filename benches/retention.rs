//! Retention under load: a database holding old history is pruned while intake runs at 100
//! single activations/s, beside the same intake measured idle (no pruning) in the same run.
//!
//! Run: `cargo bench --bench retention` (10,000,000 events 120 days old, each with its done job;
//! `-- --events N` for another size). A pass over that much history takes longer than is worth
//! waiting for: it is measured for its first 180 s (`-- --window S`) and then stopped between two
//! batches, as a shutdown would. Under `cargo test --all-targets` it makes a small smoke run
//! (20,000 events, to the end).
//!
//! The service runs with retention off; the benchmark runs one pass of `pimbridge::retention`
//! with the default settings (90 days, batches of 1,000, duty cycle 0.25) itself, so that it
//! knows when the pass starts and ends. `-- --settings 1000:0.25,250:0.1` measures several batch
//! sizes and duty cycles on the same data, one after the other, each beside its own idle run. Intake latency is POST → 202 at the sender (every accepted event is durable
//! before its 202: Postgres runs with fsync on).

// A benchmark may panic on a failed set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pimbridge::config::{DatabaseSettings, RetentionSettings};
use pimbridge::retention::Retention;
use support::{event, now_rfc3339, summary, Bench};
use tokio_util::sync::CancellationToken;

/// Posts single activations at 100/s until `stop`; returns each POST → answer time in ms, and
/// how many were not answered 202 (the service answers 503 when the database does not keep up).
async fn intake_at_100(
    bench: Arc<Bench>,
    prefix: String,
    stop: CancellationToken,
) -> (Vec<f64>, usize) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i: u32 = 0;
    while !stop.is_cancelled() {
        tokio::time::sleep_until((start + Duration::from_millis(10) * i).into()).await;
        let (bench, prefix) = (bench.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let body = event(
                &format!("{prefix}-{i}"),
                "activation",
                &format!("{prefix}-user-{i}"),
                &now_rfc3339(),
            );
            let sent = Instant::now();
            let response = bench.signed_post(body).send().await.unwrap();
            (
                sent.elapsed().as_secs_f64() * 1000.0,
                response.status() == 202,
            )
        }));
        i += 1;
    }
    let mut times = Vec::with_capacity(tasks.len());
    let mut refused = 0;
    for task in tasks {
        let (ms, accepted) = task.await.unwrap();
        times.push(ms);
        refused += usize::from(!accepted);
    }
    (times, refused)
}

fn p99(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    support::percentile(&sorted, 99.0)
}

/// Intake alone for `idle_seconds`, then intake while one pass with `settings` runs for at most
/// `window_seconds`; prints both. Each round prunes where the previous one stopped.
async fn measure(
    bench: &Arc<Bench>,
    round: usize,
    settings: RetentionSettings,
    idle_seconds: f64,
    window_seconds: f64,
) {
    // Prefixes must differ between rounds: each event id is stored once.
    let prefix = |name: &str| format!("{name}{round}");
    let stop = CancellationToken::new();
    let idle = tokio::spawn(intake_at_100(bench.clone(), prefix("idle"), stop.clone()));
    tokio::time::sleep(Duration::from_secs_f64(idle_seconds)).await;
    stop.cancel();
    let (idle, idle_refused) = idle.await.unwrap();

    // Pruning: one pass, intake at the same rate until the pass ends.
    let pool = pimbridge::store::build_pool(&DatabaseSettings {
        url: Some(bench.database_url.as_str().into()),
        url_file: None,
        max_connections: 1,
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
    })
    .unwrap();
    let (batch_size, duty_cycle) = (settings.batch_size, settings.duty_cycle);
    let retention = Retention {
        pool: pool.clone(),
        settings,
    };
    let stop = CancellationToken::new();
    let during = tokio::spawn(intake_at_100(bench.clone(), prefix("during"), stop.clone()));
    let started = Instant::now();
    let db = pool.get().await.unwrap();
    // A long pass is measured for `window` seconds, then stopped between two batches.
    let window = CancellationToken::new();
    let timer = {
        let window = window.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(window_seconds)).await;
            window.cancel();
        })
    };
    let report = retention.pass(&db, &window).await.unwrap();
    timer.abort();
    let pass_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let (during, during_refused) = during.await.unwrap();
    let deleted: u64 = report.values().sum();
    let left = bench
        .count("SELECT count(*) FROM events WHERE source_event_id LIKE 'old-%'")
        .await;

    println!("batches of {batch_size}, duty cycle {duty_cycle}:");
    summary("intake POST → 202, idle", idle.clone());
    summary("intake POST → 202, while pruning", during.clone());
    println!("   not accepted (503): {idle_refused} idle, {during_refused} while pruning");
    println!(
        "   p99 while pruning / idle p99 = {:.2}x (goal ≤ 2x)",
        p99(&during) / p99(&idle)
    );
    println!(
        "   pass: {deleted} rows deleted in {pass_secs:.1} s ({:.0} rows/s; stopped after {window_seconds} s if not done), {left} old events left; {report:?}\n",
        deleted as f64 / pass_secs
    );
}

/// `--settings 1000:0.25,250:0.25`: the batch sizes and duty cycles to measure, one round each
/// (default: the defaults alone).
fn settings_to_try() -> Vec<(usize, f64)> {
    let defaults = RetentionSettings::default();
    let mut args = std::env::args();
    while let Some(arg) = args.next() {
        if arg == "--settings" {
            let list = args.next().expect("--settings batch:duty[,batch:duty…]");
            return list
                .split(',')
                .map(|pair| {
                    let (batch, duty) = pair.split_once(':').expect("batch:duty");
                    (batch.parse().unwrap(), duty.parse().unwrap())
                })
                .collect();
        }
    }
    vec![(defaults.batch_size, defaults.duty_cycle)]
}

#[tokio::main]
async fn main() {
    let settings = settings_to_try();
    let full = std::env::args().any(|a| a == "--bench");
    let mut events: i64 = if full { 10_000_000 } else { 20_000 };
    let mut args = std::env::args();
    while let Some(arg) = args.next() {
        if arg == "--events" {
            events = args.next().and_then(|v| v.parse().ok()).unwrap_or(events);
        }
    }
    let idle_seconds = if full { 30.0 } else { 1.0 };
    let mut window_seconds: f64 = if full { 180.0 } else { 60.0 };
    let mut args = std::env::args();
    while let Some(arg) = args.next() {
        if arg == "--window" {
            window_seconds = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(window_seconds);
        }
    }
    let bench = Arc::new(Bench::start("[retention]\nenabled = false", "").await);

    // Old history: events received 120 days ago and their done jobs.
    let loading = Instant::now();
    let chunk = 1_000_000.min(events);
    let mut loaded = 0;
    while loaded < events {
        let n = chunk.min(events - loaded);
        bench
            .db
            .execute(
                "INSERT INTO events (source, source_event_id, kind, occurred_at, received_at,
                                     group_id, principal_id, routing)
                 SELECT 'api', 'old-' || i, 'activation',
                        now() - interval '120 days' + i * interval '100 microseconds',
                        now() - interval '120 days' + i * interval '100 microseconds',
                        $3, 'old-user-' || (i % 100000), 'routed'
                 FROM generate_series($1::int8, $2::int8) i",
                &[&(loaded + 1), &(loaded + n), &support::GROUP],
            )
            .await
            .unwrap();
        // Each with the job that applied it, done as long ago.
        bench
            .db
            .execute(
                "INSERT INTO jobs (event_id, application, action, lane, state, created_at,
                                   completed_at)
                 SELECT id, 'bench', 'add', 'deferred', 'done', received_at, received_at
                 FROM events WHERE source_event_id LIKE 'old-%' AND id BETWEEN $1 AND $2",
                &[&(loaded + 1), &(loaded + n)],
            )
            .await
            .unwrap();
        loaded += n;
    }
    // The load's dirty pages are written out now, so that the idle run measures intake, not
    // the load's checkpoint.
    // (One statement per call: VACUUM refuses to run inside the implicit transaction of several.)
    for statement in ["VACUUM ANALYZE events", "VACUUM ANALYZE jobs", "CHECKPOINT"] {
        bench.db.batch_execute(statement).await.unwrap();
    }
    let loaded_in = loading.elapsed().as_secs_f64();

    // Warm-up (connections, caches), not counted.
    let stop = CancellationToken::new();
    let warm = tokio::spawn(intake_at_100(bench.clone(), "warm".into(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    warm.await.unwrap();

    println!(
        "retention: {events} events of 120 days ago (loaded in {loaded_in:.1} s), intake at 100 activations/s\n"
    );
    for (round, (batch_size, duty_cycle)) in settings.into_iter().enumerate() {
        let retention = RetentionSettings {
            batch_size,
            duty_cycle,
            ..RetentionSettings::default()
        };
        measure(&bench, round, retention, idle_seconds, window_seconds).await;
    }
    match Arc::try_unwrap(bench) {
        Ok(bench) => bench.stop().await,
        Err(_) => unreachable!("every load task has finished"),
    }
}
