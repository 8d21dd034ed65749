//! What the benchmarks share: a private durable Postgres, the AWS SCIM emulator and pimbridge on
//! loopback in one process, signed posting, and percentile summaries.

// Each benchmark is its own crate and uses part of this module.
#![allow(dead_code)]

use std::time::Duration;

use aws_scim_emulator::{EmulatorSettings, RunningEmulator, DEFAULT_TOKEN};
use pimbridge::config::Settings;
use pimbridge::startup::Application;
use testkit::postgres;
use testkit::signing::{sign_now_with, SIGNATURE_HEADER};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "bench-hmac-secret-0123456789";
pub const GROUP: &str = "bench-group-0000-0000-000000000001";

/// Everything a benchmark drives.
pub struct Bench {
    pub db: tokio_postgres::Client,
    pub emulator: RunningEmulator,
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>` of the public listener.
    pub base: String,
    pub database_url: String,
    /// `http://127.0.0.1:<port>` of the internal listener (`/metrics`, `/admin/…`).
    pub internal: String,
    shutdown: CancellationToken,
    service: JoinHandle<anyhow::Result<()>>,
    _server: postgres::PgServer,
}

impl Bench {
    /// Starts Postgres (fsync on: every accepted event is flushed before its 202), the emulator
    /// (one worker) and pimbridge with one application `bench` on GROUP; `sections` adds TOML
    /// sections (e.g. `[dispatch]`) and `application` adds keys to the application.
    pub async fn start(sections: &str, application: &str) -> Self {
        let server = postgres::PgServer::private_durable();
        let database_url = server.fresh_database().await;
        let emulator = RunningEmulator::start_with_workers(
            EmulatorSettings::default(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            1,
        )
        .await
        .unwrap();
        let toml = config_toml(
            &database_url,
            &emulator.scim_base_url(),
            sections,
            application,
        );
        let settings = Settings::from_toml_str(&toml).unwrap();
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let internal = format!("http://127.0.0.1:{}", app.internal_port());
        let shutdown = app.shutdown_token();
        let service = tokio::spawn(app.run_until_stopped());
        let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // A client that reused a connection just as the service closed it for idleness
        // (`server.keep_alive`) would see it closed under its request: idle connections are
        // dropped here long before the service would close them.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        for _ in 0..200 {
            let ready = http.get(format!("{base}/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            db,
            emulator,
            http,
            base,
            database_url,
            internal,
            shutdown,
            service,
            _server: server,
        }
    }

    /// A signed `POST /v1/events` of `body`, ready to send.
    pub fn signed_post(&self, body: String) -> reqwest::RequestBuilder {
        let signature = sign_now_with(SECRET, body.as_bytes());
        self.http
            .post(format!("{}/v1/events", self.base))
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.internal))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the application's initial cycle has passed.
    pub async fn initial_cycle(&self) {
        while self
            .count("SELECT count(*) FROM cycles WHERE outcome <> 'running'")
            .await
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.service.await;
        self.emulator.stop().await;
    }
}

/// The configuration `Bench::start` runs with: one application `bench` on GROUP, served by the
/// SCIM endpoint `scim_url`; `sections` adds TOML sections and `application` adds keys to the
/// application.
pub fn config_toml(
    database_url: &str,
    scim_url: &str,
    sections: &str,
    application: &str,
) -> String {
    format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        internal_listen = "127.0.0.1:0"
        workers = 1
        [database]
        url = "{database_url}"
        max_connections = 16
        [intake]
        hmac_secret = "{SECRET}"
        # Off: the load comes from one address.
        requests_per_second = 0
        [log]
        level = "error"
        {sections}
        [applications.bench]
        scim_url = "{scim_url}"
        scim_token = "{DEFAULT_TOKEN}"
        groups = ["{GROUP}"]
        {application}
        "#
    )
}

/// Now, as RFC 3339 text (an activation dated now has a running grant).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The value at percentile `p` of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints p50/p95/p99/max of values in milliseconds.
pub fn summary(label: &str, mut values_ms: Vec<f64>) {
    values_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label:<44} n={:<5} p50={:>7.2} ms  p95={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        values_ms.len(),
        percentile(&values_ms, 50.0),
        percentile(&values_ms, 95.0),
        percentile(&values_ms, 99.0),
        values_ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// An activation (or deactivation) of `user` in GROUP, as JSON text.
pub fn event(id: &str, kind: &str, user: &str, occurred_at: &str) -> String {
    serde_json::json!({
        "id": id, "type": kind, "occurredAt": occurred_at,
        "groupId": GROUP, "principalId": user,
        "user": {"userName": format!("{user}@bench.example"), "givenName": "Bench", "familyName": "User",
                 "displayName": "Bench User", "email": format!("{user}@bench.example")},
        "group": {"displayName": "Bench-Admins"}
    })
    .to_string()
}

/// One done immediate job of a case, each point in ms from the case's first receipt: its receipt
/// (the `events` insert), its intake's commit (the commit timestamp of the event's row; needs
/// `track_commit_timestamp`, which the durable server has), its reconciliation's start (the add's
/// log entry, `finished_at` less the reconciliation's time), AWS confirmed (that entry's
/// `finished_at`, the first statement after AWS answered) and the job marked done (before the
/// outcome's commit).
#[derive(Debug, Clone, Copy)]
pub struct Journey {
    pub received: f64,
    pub committed: f64,
    pub started: f64,
    pub confirmed: f64,
    pub done: f64,
}

impl Journey {
    /// Receipt → AWS confirmed.
    pub fn until_confirmed(&self) -> f64 {
        self.confirmed - self.received
    }

    /// Receipt → the job marked done.
    pub fn until_done(&self) -> f64 {
        self.done - self.received
    }
}

/// The journeys of the done immediate jobs of events whose id starts with `prefix-`, in receipt
/// order.
pub async fn journeys(db: &tokio_postgres::Client, prefix: &str) -> Vec<Journey> {
    let rows = db
        .query(
            "WITH t AS (
                 SELECT e.received_at AS r, pg_xact_commit_timestamp(e.xmin) AS c,
                        l.started_at AS s, l.finished_at AS a, j.completed_at AS d
                 FROM jobs j JOIN events e ON e.id = j.event_id
                 JOIN provisioning_log l ON l.job_id = j.id AND l.action = 'add'
                                        AND l.status = 'succeeded'
                 WHERE e.source_event_id LIKE $1 AND j.lane = 'immediate' AND j.state = 'done')
             SELECT extract(epoch FROM (r - first))::float8 * 1000,
                    extract(epoch FROM (c - first))::float8 * 1000,
                    extract(epoch FROM (s - first))::float8 * 1000,
                    extract(epoch FROM (a - first))::float8 * 1000,
                    extract(epoch FROM (d - first))::float8 * 1000
             FROM t, (SELECT min(r) AS first FROM t) f ORDER BY r",
            &[&format!("{prefix}-%")],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| Journey {
            received: r.get(0),
            committed: r.get(1),
            started: r.get(2),
            confirmed: r.get(3),
            done: r.get(4),
        })
        .collect()
}

/// Where the time from receipt to AWS confirmed goes, per journey: the rest of the intake
/// transaction, until the reconciliation started (hand-over or claim), the reconciliation (pair
/// lock, reads, SCIM requests), and from AWS confirmed to the job marked done.
pub fn stages(journeys: &[Journey]) -> [Vec<f64>; 4] {
    let column = |f: fn(&Journey) -> f64| journeys.iter().map(f).collect();
    [
        column(|j| j.committed - j.received),
        column(|j| j.started - j.committed),
        column(|j| j.confirmed - j.started),
        column(|j| j.done - j.confirmed),
    ]
}

/// Time on a CPU so far, in ms: of this process (every thread: the service, the emulator and the
/// load), and of the benchmark's Postgres server (its postmaster and every process it started).
/// From `/proc/…/schedstat`, which counts nanoseconds (unlike the 10 ms ticks of `stat`).
pub async fn cpu_ms(db: &tokio_postgres::Client) -> (f64, f64) {
    let on_cpu = |path: std::path::PathBuf| -> f64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e6)
    };
    let threads: f64 = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| on_cpu(t.path().join("schedstat")))
                .sum()
        })
        .unwrap_or(0.0);
    let backend: i32 = db
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let postmaster = parent_of(&backend.to_string());
    let mut server = 0.0;
    for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = process.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if Some(pid.as_str()) == postmaster.as_deref() || parent_of(&pid) == postmaster {
            server += on_cpu(process.path().join("schedstat"));
        }
    }
    (threads, server)
}

/// The parent process id of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields after it are fixed.
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().nth(1)?.to_owned())
}

/// `VmRSS` of this process (the service, the emulator and the load all live in it), in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
