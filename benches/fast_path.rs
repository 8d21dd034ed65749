//! Fast-path benchmark: activations over HTTP → intake → dispatcher → AWS SCIM emulator.
//!
//! Run: `cargo bench --bench fast_path` (add `-- --rate 25 --seconds 20` to change the load).
//! Under `cargo test` it makes a short smoke run instead.
//! Starts its own Postgres from the system's binaries (as the tests do), with fsync on.
//! Prints receipt → AWS-confirmed latency percentiles (from the database clock: event receipt to
//! the job's completion right after the emulator's 204) for two cases — users whose AWS ids are
//! already cached (one PATCH) and users seen for the first time (create user + PATCH) — plus
//! intake latency as a sender sees it and the emulator's own PATCH time, to show where time goes.

// A benchmark may panic on a failed set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{event, summary, Bench};

struct Args {
    rate: f64,
    seconds: f64,
}

fn args() -> Args {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then a short smoke
    // run checks that the benchmark still works without taking the test suite's time.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut args = Args {
        rate: 25.0,
        seconds: if benchmarking { 20.0 } else { 0.4 },
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rate" => args.rate = it.next().and_then(|v| v.parse().ok()).unwrap_or(args.rate),
            "--seconds" => {
                args.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.seconds)
            }
            _ => {}
        }
    }
    args
}

/// Sends activations at `rate` per second for `seconds`; returns POST→202 times in ms.
async fn drive(bench: &Bench, prefix: &str, users: &[String], rate: f64) -> (Vec<f64>, f64) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        // Dated now: an activation dated days ago has no running grant and is not sent.
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = event(&format!("{prefix}-{i}"), "activation", user, &now);
        let request = bench.signed_post(body);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = request.send().await.expect("POST");
            assert_eq!(response.status(), 202);
            sent.elapsed().as_secs_f64() * 1000.0
        }));
    }
    let mut intake = Vec::new();
    for task in tasks {
        intake.push(task.await.unwrap());
    }
    (intake, users.len() as f64 / start.elapsed().as_secs_f64())
}

async fn wait_done(db: &tokio_postgres::Client, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = db
            .query_one("SELECT count(*) FROM jobs WHERE state = 'done'", &[])
            .await
            .unwrap()
            .get(0);
        if done >= expected || Instant::now() > deadline {
            assert!(done >= expected, "only {done} of {expected} jobs done");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn latencies(db: &tokio_postgres::Client, prefix: &str) -> Vec<f64> {
    db.query(
        "SELECT extract(epoch FROM (j.completed_at - e.received_at))::float8 * 1000
         FROM jobs j JOIN events e ON e.id = j.event_id
         WHERE e.source_event_id LIKE $1 AND j.state = 'done'",
        &[&format!("{prefix}-%")],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Receipt to the admission decision inside the intake transaction, per event.
async fn admission_ms(db: &tokio_postgres::Client) -> Vec<f64> {
    db.query(
        "SELECT extract(epoch FROM (j.admitted_at - e.received_at))::float8 * 1000
         FROM jobs j JOIN events e ON e.id = j.event_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Sum and count of the SCIM request duration histogram for one method.
fn scim_duration(metrics: &str, method: &str) -> (f64, f64) {
    let read = |suffix: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "pimbridge_scim_request_duration_seconds_{suffix}{{"
                )) && l.contains(&format!("method=\"{method}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (read("sum"), read("count"))
}

#[tokio::main]
async fn main() {
    let args = args();
    let bench = Bench::start(
        "[dispatch]\nconcurrency = 8",
        // Raised for the benchmark: every activation takes the immediate lane.
        "activation_limit = 1000000\nrequests_per_second = 10000\nrequests_burst = 1000",
    )
    .await;

    let n = (args.rate * args.seconds).round() as usize;
    println!(
        "fast path: {n} activations per case at {} /s, {} cores, emulator and Postgres on loopback\n",
        args.rate,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // Case 1: users seen for the first time (AWS create user + PATCH).
    let new_users: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
    let cpu_start = support::cpu_ms(&bench.db).await;
    let (intake_new, rate_new) = drive(&bench, "new", &new_users, args.rate).await;
    wait_done(&bench.db, n as i64).await;
    let cpu_new = support::cpu_ms(&bench.db).await;

    // Case 2: the same users again (ids cached: one PATCH each).
    bench.emulator.clear_request_log();
    let (intake_known, rate_known) = drive(&bench, "known", &new_users, args.rate).await;
    wait_done(&bench.db, 2 * n as i64).await;
    let cpu_known = support::cpu_ms(&bench.db).await;
    summary(
        "receipt → AWS confirmed, new users",
        latencies(&bench.db, "new").await,
    );
    summary(
        "receipt → AWS confirmed, known users",
        latencies(&bench.db, "known").await,
    );
    for case in ["new", "known"] {
        let [committed, claimed, reconciled, recorded] =
            support::stages(&support::journeys(&bench.db, case).await);
        summary(&format!("  {case}: receipt → intake committed"), committed);
        summary(
            &format!("  {case}: committed → reconciliation starts"),
            claimed,
        );
        summary(
            &format!("  {case}: reconciliation (lock, reads, SCIM)"),
            reconciled,
        );
        summary(&format!("  {case}: outcome recorded (commit)"), recorded);
    }
    summary("sender POST → 202 (intake), new users", intake_new);
    summary("sender POST → 202 (intake), known users", intake_known);
    summary(
        "receipt → admission (in the intake tx)",
        admission_ms(&bench.db).await,
    );
    let metrics = bench.metrics().await;
    for method in ["PATCH", "POST", "GET"] {
        let (sum, count) = scim_duration(&metrics, method);
        if count > 0.0 {
            println!(
                "{:<44} n={count:<5} mean={:>6.2} ms (client side)",
                format!("SCIM {method} round trip"),
                sum / count * 1000.0
            );
        }
    }
    // Everything on this machine's CPUs that serves the load, per activation: the service, the
    // emulator and the load itself in this process, and Postgres (its bookkeeping included).
    for (case, from, to) in [("new", cpu_start, cpu_new), ("known", cpu_new, cpu_known)] {
        println!(
            "{:<44} this process {:>5.2} ms, Postgres {:>5.2} ms",
            format!("CPU per activation, {case} users"),
            (to.0 - from.0) / n as f64,
            (to.1 - from.1) / n as f64
        );
    }
    println!("\nachieved rates: {rate_new:.1} /s (new), {rate_known:.1} /s (known)");
    bench.stop().await;
}
