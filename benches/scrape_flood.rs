//! Scrape-flood benchmark: intake latency while many clients scrape `/metrics` at once.
//!
//! Run: `cargo bench --bench scrape_flood` (defaults: 150 scrapers, 200 events per phase; change
//! with `-- --scrapers 300 --events 400`). Under `cargo test` it makes a short smoke run instead.
//! Bounded: each phase sends a fixed number of events, one after another, and the scrapers stop
//! when that phase ends; everything runs on loopback against a private Postgres.
//! Prints intake latency (POST → 202) idle and under the flood, their ratio, and the scrapes
//! served. Before the gauges were refreshed in the background each scrape ran database queries
//! on the request pool and the flood raised intake p50 ~35x; the goal is within 2x of idle.

// A benchmark may panic on a failed set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use support::{event, percentile, summary, Bench};

struct Args {
    scrapers: usize,
    events: usize,
}

fn args() -> Args {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut args = Args {
        scrapers: if benchmarking { 150 } else { 10 },
        events: if benchmarking { 200 } else { 10 },
    };
    let given: Vec<String> = std::env::args().skip(1).collect();
    for pair in given.windows(2) {
        let value = pair[1].parse().ok();
        match (pair[0].as_str(), value) {
            ("--scrapers", Some(v)) => args.scrapers = v,
            ("--events", Some(v)) => args.events = v,
            _ => {}
        }
    }
    args
}

/// Posts `n` activations one after another; returns POST → 202 times in ms.
async fn intake(bench: &Bench, phase: &str, n: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = event(
            &format!("{phase}-{i}"),
            "activation",
            &format!("{phase}-u{i}"),
            &at,
        );
        let start = Instant::now();
        let response = bench.signed_post(body).send().await.unwrap();
        assert_eq!(response.status(), 202);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times
}

#[tokio::main]
async fn main() {
    let args = args();
    // Dispatch off: this measures intake and scrapes, not AWS.
    let bench = Bench::start("[dispatch]\nenabled = false\n[sync]\nenabled = false", "").await;
    intake(&bench, "warm", 20.min(args.events)).await;

    let idle = intake(&bench, "idle", args.events).await;

    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scrapers: Vec<_> = (0..args.scrapers)
        .map(|_| {
            let (http, url) = (bench.http.clone(), format!("{}/metrics", bench.internal));
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = http.get(&url).send().await {
                        let _ = r.bytes().await;
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let flood_started = Instant::now();
    let flooded = intake(&bench, "flood", args.events).await;
    let flood_secs = flood_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        s.await.unwrap();
    }

    let p50 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(&v, 50.0)
    };
    let ratio = p50(&flooded) / p50(&idle);
    summary("intake, idle", idle);
    summary(&format!("intake, {} scrapers", args.scrapers), flooded);
    let served = scrapes.load(Ordering::Relaxed);
    println!(
        "scrapes served: {served} ({:.0}/s); intake p50 under the flood / idle = {ratio:.2}x",
        served as f64 / flood_secs
    );
    bench.stop().await;
}
