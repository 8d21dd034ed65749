//! What must be on disk before pimbridge answers or acts. The intake commits without waiting for
//! the disk (so that its locks are released at once) and flushes afterwards: it answers only once
//! its commit is on disk. A job it hands over at its commit may read, and create or update the
//! user in AWS, before that flush, but sends no membership change until the commit is on disk; otherwise a
//! crash could lose the event after AWS applied it, and the membership would look like someone
//! else's doing and never be removed.
//!
//! Shown on a durable server whose WAL writer is paused, so that an asynchronous commit stays off
//! disk until a backend flushes the log: the test reads how far the log is flushed when the intake
//! returns and, through a proxy in front of the emulator, when each `PATCH` arrives.

use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use aws_scim_emulator::{RunningEmulator, DEFAULT_TOKEN};
use pimbridge::config::UserNameAttribute;
use pimbridge::domain::{EventKind, EventSource, NewEvent};
use pimbridge::intake::{Intake, Routing};
use pimbridge::provision::{Options, Origin, PairRequest, Provisioner, Target};
use pimbridge::scim::{ScimClient, ScimClientSettings};
use pimbridge::store::jobs::{self, ClaimedJob};
use serde_json::json;

use crate::fixture::*;
use crate::helpers::*;
use crate::postgres::PgServer;

const OWNER: &str = "replica-x";

/// Forwards SCIM requests to the emulator. Before forwarding a membership change (a `PATCH` of a
/// group), it notes whether the server's log is flushed up to `must_be_flushed`.
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    db: tokio_postgres::Client,
    must_be_flushed: Mutex<String>,
    patches_flushed: Mutex<Vec<bool>>,
}

async fn forward(request: HttpRequest, body: web::Bytes, proxy: web::Data<Proxy>) -> HttpResponse {
    if request.method() == actix_web::http::Method::PATCH && request.path().contains("/Groups/") {
        let lsn = proxy.must_be_flushed.lock().unwrap().clone();
        let flushed: bool = proxy
            .db
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .unwrap()
            .get(0);
        proxy.patches_flushed.lock().unwrap().push(flushed);
    }
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).unwrap();
    let mut outgoing = proxy
        .http
        .request(method, format!("{}{}", proxy.upstream, request.uri()));
    for (name, value) in request.headers() {
        if name != actix_web::http::header::HOST {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = outgoing.body(body.to_vec()).send().await.unwrap();
    let mut response = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(answer.status().as_u16()).unwrap(),
    );
    for (name, value) in answer.headers() {
        if name != reqwest::header::CONTENT_LENGTH && name != reqwest::header::TRANSFER_ENCODING {
            response.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    response.body(answer.bytes().await.unwrap())
}

/// Starts the proxy in front of `emulator`; returns it and the SCIM base URL through it.
async fn start_proxy(emulator: &RunningEmulator, database_url: &str) -> (web::Data<Proxy>, String) {
    let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let proxy = web::Data::new(Proxy {
        upstream: format!("http://{}", emulator.address()),
        http: reqwest::Client::new(),
        db,
        must_be_flushed: Mutex::new("0/0".into()),
        patches_flushed: Mutex::new(Vec::new()),
    });
    let data = proxy.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(forward))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let emulator_base = emulator.scim_base_url();
    let path = emulator_base
        .split_once(&emulator.address().to_string())
        .unwrap()
        .1;
    (proxy, format!("http://127.0.0.1:{port}{path}"))
}

/// Keeps the server's WAL writer stopped while alive (continued when dropped, also on a failed
/// assertion, so that the server can shut down).
struct PausedWalWriter(rustix::process::Pid);

impl PausedWalWriter {
    async fn pause(admin: &tokio_postgres::Client) -> Self {
        let pid: i32 = admin
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let pid = rustix::process::Pid::from_raw(pid).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::Stop).unwrap();
        Self(pid)
    }
}

impl Drop for PausedWalWriter {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::Cont);
    }
}

fn activation(id: &str, principal: &str) -> NewEvent {
    let now = time::OffsetDateTime::now_utc();
    NewEvent {
        id: id.to_owned(),
        kind: EventKind::Activation,
        occurred_at: now,
        group_id: GROUP_A.to_owned(),
        principal_id: principal.to_owned(),
        ends_at: Some(now + Duration::from_secs(3600)),
        grant_id: None,
        user: Some(
            json!({"userName": "alice@contoso.com", "givenName": "Alice",
                          "familyName": "Liddell", "displayName": "Alice Liddell",
                          "email": "alice@contoso.com"}),
        ),
        group: Some(json!({"displayName": AWS_GROUP})),
    }
}

/// Claims the one due job as the intake does, committed without waiting for the disk; returns
/// it and the log position the commit reached.
async fn claim_off_disk(pool: &deadpool_postgres::Pool) -> (ClaimedJob, String) {
    let mut db = pool.get().await.unwrap();
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .unwrap();
    let mut claimed = jobs::claim_immediate(&tx, OWNER, 60.0, 10, 60.0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1, "one job due");
    let row = db
        .query_one(
            "SELECT pg_current_wal_insert_lsn()::text,
                    pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(1),
        "the claim must still be off disk here, or the test shows nothing"
    );
    let mut job = claimed.remove(0);
    job.claim_on_disk = false;
    (job, row.get(0))
}

/// A migrated database on a server of its own that flushes commits to disk, a pool on it, an
/// admin connection, and an intake (without a dispatcher) routed as the test settings say.
struct Durable {
    _server: PgServer,
    database_url: String,
    pool: deadpool_postgres::Pool,
    admin: tokio_postgres::Client,
    intake: Intake,
}

async fn durable() -> Durable {
    let server = PgServer::private_durable();
    let database_url = server.fresh_database().await;
    let pool = pool_on(&database_url, 3);
    migrate_with_applications(&pool).await;
    let admin = admin_on(&database_url).await;
    let intake = Intake::new(
        pool.clone(),
        Routing::from_settings(&test_settings(&database_url)),
    );
    Durable {
        _server: server,
        database_url,
        pool,
        admin,
        intake,
    }
}

/// Records one activation with the WAL writer paused; returns whether the log was flushed past
/// everything written when the intake returned.
async fn flushed_when_intake_returns(admin: &tokio_postgres::Client, intake: &Intake) -> bool {
    let paused = PausedWalWriter::pause(admin).await;
    intake
        .record(EventSource::Api, &[activation("one", "alice")])
        .await
        .unwrap();
    let flushed = admin
        .query_one(
            "SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(paused);
    flushed
}

#[tokio::test]
async fn the_intake_returns_only_once_its_commit_is_on_disk() {
    let Durable {
        _server,
        admin,
        intake,
        ..
    } = durable().await;

    assert!(
        flushed_when_intake_returns(&admin, &intake).await,
        "the log is flushed past the intake's commit"
    );
    assert_eq!(
        admin
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn the_intake_waits_for_the_disk_even_where_commits_do_not_by_default() {
    let Durable {
        _server,
        database_url,
        admin,
        ..
    } = durable().await;
    let database = database_url.rsplit_once('/').unwrap().1.to_owned();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{database}\" SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    // New connections, which take the database's setting.
    let intake = Intake::new(
        pool_on(&database_url, 2),
        Routing::from_settings(&test_settings(&database_url)),
    );

    assert!(
        flushed_when_intake_returns(&admin, &intake).await,
        "the log is flushed past the intake's commit"
    );
}

#[tokio::test]
async fn a_job_handed_over_before_its_flush_sends_no_membership_change_until_its_claim_is_on_disk()
{
    let Durable {
        _server,
        database_url,
        pool,
        admin,
        intake,
    } = durable().await;
    let aws = emulator().await;
    let (proxy, scim_url) = start_proxy(&aws, &database_url).await;
    let mut client_settings = ScimClientSettings::new(scim_url, DEFAULT_TOKEN);
    client_settings.requests_per_second = 100;
    client_settings.burst = 100;
    let provisioner = Provisioner::new(
        [(
            "alpha".to_owned(),
            Target {
                client: ScimClient::new(client_settings, None).unwrap(),
                user_name_attribute: UserNameAttribute::UserPrincipalName,
            },
        )]
        .into(),
    );
    // An activation of alice, its job claimed off disk (the WAL writer paused meanwhile) and
    // reconciled as a job handed over at the intake's commit.
    let activate_off_disk = |id: &'static str| {
        let (pool, provisioner, intake, admin, proxy) =
            (pool.clone(), &provisioner, &intake, &admin, &proxy);
        async move {
            intake
                .record(EventSource::Api, &[activation(id, "alice")])
                .await
                .unwrap();
            let paused = PausedWalWriter::pause(admin).await;
            let (job, lsn) = claim_off_disk(&pool).await;
            *proxy.must_be_flushed.lock().unwrap() = lsn;
            let mut db = pool.get().await.unwrap();
            let request = PairRequest {
                subject: job.subject.clone(),
                event_id: Some(job.event_id),
                job_id: Some(job.id),
            };
            let origin = Origin::Job {
                job_id: job.id,
                lease_owner: OWNER,
                claim_on_disk: job.claim_on_disk,
            };
            let report = provisioner
                .reconcile(&mut db, "alpha", origin, &[request], &Options::default())
                .await
                .unwrap();
            drop(paused);
            report
        }
    };

    // A user new to AWS: created, then its first add, written ahead (a synchronous commit).
    activate_off_disk("first").await;
    let group = aws.state().groups[0].id.clone();
    assert_eq!(aws.group_members(&group).unwrap().len(), 1);

    // Removed since (as a cycle removes an ended grant), then activated again: an add of a pair
    // pimbridge owns, which needs no write-ahead; only the claim's flush stands before it.
    let user = aws.group_members(&group).unwrap()[0].clone();
    aws.remove_member(&group, &user).unwrap();
    admin
        .execute("UPDATE aws_memberships SET aws_state = 'absent'", &[])
        .await
        .unwrap();
    let report = activate_off_disk("again").await;

    assert!(
        matches!(report.outcomes[..], [pimbridge::provision::Outcome::Added]),
        "{:?}",
        report.outcomes
    );
    assert_eq!(aws.group_members(&group).unwrap(), vec![user]);
    assert_eq!(
        *proxy.patches_flushed.lock().unwrap(),
        vec![true, true],
        "each membership PATCH left only once the claim was on disk"
    );
}
