//! Assembly: builds every shared handle once, binds the listener, starts background work, and
//! shuts it all down in order.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use crate::auth::admin_token::AdminToken;
use crate::auth::rate::ClientLimiter;
use crate::auth::Authenticator;
use crate::backoff::Backoff;
use crate::config::{DatabaseSettings, Settings};
use crate::dispatch::Dispatcher;
use crate::graph::GraphClient;
use crate::handoff::Handoff;
use crate::intake::{Intake, Routing};
use crate::metrics::Metrics;
use crate::metrics::{ScimBudgets, ScimObserver};
use crate::provision::{Provisioner, Target};
use crate::proxy::{ForwardingHeader, TrustedProxies};
use crate::reload::SecretWatcher;
use crate::replica::Heartbeat;
use crate::resolve::subscriptions::SubscriptionManager;
use crate::resolve::Resolver;
use crate::retention::Retention;
use crate::routes::{self, Listener};
use crate::scim::{RequestObserver, ScimClient};
use crate::secret::SecretString;
use crate::state::AppState;
use crate::store::{self, migrate};
use crate::sync::CycleRunner;

/// First wait between bootstrap attempts while the database is unreachable.
const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_millis(250);
/// Connections of the readiness probes' own pool.
const PROBE_CONNECTIONS: usize = 2;
/// Longest wait between bootstrap attempts.
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(10);

/// A built, not yet running, service.
pub struct Application {
    port: u16,
    internal_port: u16,
    server: Server,
    internal_server: Server,
    state: web::Data<AppState>,
    shutdown: CancellationToken,
    background: Vec<(&'static str, JoinHandle<()>)>,
    /// Stopped after the other tasks, so that jobs finishing during shutdown keep their leases.
    heartbeat: Option<(CancellationToken, JoinHandle<()>)>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds everything from `settings`, binding `server.listen` and `server.internal_listen`
    /// (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.server.listen)
            .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();
        let internal_listener = TcpListener::bind(&settings.server.internal_listen)
            .with_context(|| format!("cannot listen on {}", settings.server.internal_listen))?;
        let internal_port = internal_listener.local_addr()?.port();
        let pool = store::build_pool(&settings.database)?;
        let probe_pool = store::build_pool(&DatabaseSettings {
            max_connections: PROBE_CONNECTIONS,
            ..settings.database.clone()
        })?;
        let metrics = Metrics::new().context("cannot register metrics")?;
        let authenticator = Authenticator::new(&settings.intake)
            .map_err(|e| anyhow::anyhow!("intake authentication: {e}"))?;
        let bootstrapped = Arc::new(AtomicBool::new(false));
        let applications: Vec<String> = settings.applications.keys().cloned().collect();
        // Two SCIM clients per application: one for the immediate lane, one for cycles and the
        // admin API, each with its own outbound rate limit.
        let graph_client = match &settings.graph {
            Some(graph) => Some(
                GraphClient::new(graph.client_settings())
                    .context("cannot build the Microsoft Graph client")?,
            ),
            None => None,
        };
        let mut secret_files = SecretWatcher::new();
        if let (Some(path), Some(secret)) = (
            &settings.intake.hmac_secret_file,
            authenticator.hmac_secret(),
        ) {
            let target = secret.clone();
            secret_files.watch(
                "intake.hmac_secret",
                path,
                secret.current(),
                Box::new(move |value| {
                    long_enough(value)?;
                    target.replace(value.clone());
                    Ok(())
                }),
            );
        }
        if let (Some(graph), Some(client)) = (&settings.graph, &graph_client) {
            if let (Some(path), Some(secret)) = (&graph.client_secret_file, &graph.client_secret) {
                let client = client.clone();
                secret_files.watch(
                    "graph.client_secret",
                    path,
                    secret.clone(),
                    Box::new(move |value| {
                        client
                            .replace_client_secret(value)
                            .map_err(|e| e.to_string())
                    }),
                );
            }
        }
        // The cycles' budget is the application's across replicas: the heartbeat divides it.
        let mut budgets = ScimBudgets::new(metrics.clone());
        let mut provisioner = build_provisioner(
            &settings,
            &metrics,
            Lane::Cycles,
            &mut secret_files,
            &mut budgets,
        )?;
        // The immediate lane spends a budget of its own (docs/architecture.md, "Outbound budgets"),
        // never divided: admission already bounds its traffic across replicas, and a divided
        // bucket would hold back the first activations of a window.
        let mut immediate = build_provisioner(
            &settings,
            &metrics,
            Lane::Immediate,
            &mut secret_files,
            &mut ScimBudgets::new(metrics.clone()),
        )?;
        // Users an event names too thinly (audit records carry no given or family name) are
        // completed from Graph when it is configured.
        if let Some(client) = &graph_client {
            provisioner = provisioner.with_graph(client.clone());
            immediate = immediate.with_graph(client.clone());
        }
        let provisioner = Arc::new(provisioner);
        let immediate = Arc::new(immediate);
        // Names this replica in leases and cycles.
        let owner = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        // The intake hands the jobs it admits to this replica's dispatcher, if it runs one.
        let (handoff, handed) = Handoff::new(
            &owner,
            settings.dispatch.lease,
            settings.dispatch.concurrency,
        );
        let mut intake = Intake::new(pool.clone(), Routing::from_settings(&settings));
        if settings.dispatch.enabled {
            intake = intake.with_handoff(handoff.clone());
        }
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            probe_pool,
            intake,
            authenticator,
            metrics,
            max_body_bytes: settings.intake.max_body_bytes,
            max_clock_skew: settings.intake.max_clock_skew,
            applications: applications.clone(),
            bootstrapped: bootstrapped.clone(),
            admin_token: settings
                .admin
                .token
                .as_ref()
                .map(|t| Arc::new(AdminToken::new(t))),
            trusted_proxies: TrustedProxies::new(
                &settings.intake.trusted_proxies,
                ForwardingHeader::parse(&settings.intake.proxy_header).unwrap_or_default(),
            ),
            inbound_limiter: ClientLimiter::new(
                settings.intake.requests_per_second,
                settings.intake.requests_burst,
            ),
            admin_limiter: ClientLimiter::new(
                settings.admin.requests_per_second,
                settings.admin.requests_burst,
            ),
            graph_client_state: settings.graph.as_ref().and_then(|g| g.client_state.clone()),
            provisioner: provisioner.clone(),
            rendered_metrics: std::sync::Mutex::new(None),
        });

        if let (Some(path), Some(token), Some(admin)) = (
            &settings.admin.token_file,
            &settings.admin.token,
            &state.admin_token,
        ) {
            let admin = admin.clone();
            secret_files.watch(
                "admin.token",
                path,
                token.clone(),
                Box::new(move |value| {
                    long_enough(value)?;
                    admin.replace(value);
                    Ok(())
                }),
            );
        }

        let shutdown = CancellationToken::new();
        // Workers start once migrations have run: before that their tables may not exist.
        let (migrated, ready) = watch::channel(false);
        let mut background = vec![(
            "bootstrap",
            tokio::spawn(bootstrap(
                pool.clone(),
                applications,
                bootstrapped,
                migrated,
                shutdown.clone(),
            )),
        )];
        let gated = {
            let (ready, shutdown) = (ready.clone(), shutdown.clone());
            move |work: Work| after_bootstrap(ready.clone(), shutdown.clone(), work)
        };
        {
            let (pool, shutdown) = (pool.clone(), shutdown.clone());
            let statements = immediate_lane_statements();
            background.push((
                "connection warm-up and plans",
                tokio::spawn(gated(Box::pin(async move {
                    store::warm(&pool, &statements).await;
                    store::plans::PlanKeeper::default()
                        .run(pool, statements, shutdown)
                        .await
                }))),
            ));
        }
        if let (Some(graph), Some(client)) = (&settings.graph, graph_client) {
            let resolver = Resolver {
                pool: state.pool.clone(),
                intake: state.intake.clone(),
                metrics: state.metrics.clone(),
                bootstrapped: state.bootstrapped.clone(),
                max_clock_skew: state.max_clock_skew,
                graph: client.clone(),
                interval: graph.resolve_interval,
                owner: owner.clone(),
            };
            background.push((
                "graph resolver",
                tokio::spawn(gated(Box::pin(resolver.run(shutdown.clone())))),
            ));
            if let Some(url) = &graph.notification_url {
                let manager = SubscriptionManager {
                    pool: pool.clone(),
                    graph: client,
                    groups: settings.group_routes().into_keys().collect(),
                    notification_url: url.clone(),
                    client_state: graph.client_state.clone().unwrap_or_default(),
                    lifetime: graph.subscription_lifetime,
                    renew_before: graph.renew_before,
                    interval: graph.subscription_check_interval,
                };
                background.push((
                    "graph subscriptions",
                    tokio::spawn(gated(Box::pin(manager.run(shutdown.clone())))),
                ));
            }
        }
        // Leases are taken only once this replica is known alive (docs/architecture.md).
        let (registered, alive) = watch::channel(false);
        let mut heartbeat = None;
        if settings.dispatch.enabled || settings.sync.enabled {
            let stop = CancellationToken::new();
            let beating = Heartbeat {
                pool: store::build_pool(&DatabaseSettings {
                    max_connections: 1,
                    ..settings.database.clone()
                })?,
                owner: owner.clone(),
                settings: settings.replica.clone(),
                registered,
                live_replicas: Box::new(move |live| budgets.divide(live)),
            };
            let task = after_bootstrap(
                ready.clone(),
                stop.clone(),
                Box::pin(beating.run(stop.clone())),
            );
            heartbeat = Some((stop, tokio::spawn(task)));
        }
        if settings.dispatch.enabled || settings.sync.enabled {
            let metrics = state.metrics.clone();
            if settings.dispatch.enabled {
                let dispatcher = Dispatcher {
                    provisioner: immediate,
                    pool: pool.clone(),
                    metrics: metrics.clone(),
                    settings: settings.dispatch.clone(),
                    database_url: settings.database.url.clone().unwrap_or_default(),
                    tls: store::tls::connector(settings.database.ca_file.as_deref())?,
                    owner: owner.clone(),
                    dead_after: settings.replica.dead_after,
                    handoff,
                };
                background.push((
                    "dispatcher",
                    tokio::spawn(after_bootstrap(
                        alive.clone(),
                        shutdown.clone(),
                        Box::pin(dispatcher.run(handed, shutdown.clone())),
                    )),
                ));
            }
            if settings.sync.enabled {
                let runner = CycleRunner {
                    pool,
                    provisioner,
                    metrics,
                    settings: settings.sync.clone(),
                    intervals: settings
                        .applications
                        .iter()
                        .map(|(name, app)| (name.clone(), app.cycle_interval.as_secs_f64()))
                        .collect(),
                    max_removals: settings
                        .applications
                        .iter()
                        .map(|(name, app)| (name.clone(), app.max_removals_per_cycle))
                        .collect(),
                    owner,
                    reconcile_groups: if settings.graph.is_some() {
                        settings
                            .applications
                            .iter()
                            .map(|(name, app)| (name.clone(), app.groups.clone()))
                            .collect()
                    } else {
                        BTreeMap::new()
                    },
                };
                background.push((
                    "sync",
                    tokio::spawn(gated(Box::pin(runner.run(shutdown.clone())))),
                ));
            }
        }

        if settings.retention.enabled {
            let retention = Retention {
                pool: state.pool.clone(),
                settings: settings.retention.clone(),
            };
            background.push((
                "retention",
                tokio::spawn(gated(Box::pin(retention.run(shutdown.clone())))),
            ));
        }
        if !secret_files.is_empty() {
            tracing::info!(keys = ?secret_files.keys(), "secret files are read again when they change");
            background.push((
                "secret files",
                tokio::spawn(
                    secret_files.run(settings.server.secret_reload_interval, shutdown.clone()),
                ),
            ));
        }
        background.push((
            "metrics gauges",
            tokio::spawn(gated(Box::pin(routes::metrics::refresh_loop(
                state.clone(),
                settings.server.metrics_refresh_interval,
                shutdown.clone(),
            )))),
        ));
        if state.inbound_limiter.is_some() || state.admin_limiter.is_some() {
            background.push((
                "rate limiter upkeep",
                tokio::spawn(forget_idle_clients(state.clone(), shutdown.clone())),
            ));
        }

        let shutdown_timeout = settings.server.shutdown_timeout;
        let server = http_server(&state, Listener::Public, listener, &settings.server)?;
        // Workers of its own: a scrape flood or a slow admin query never takes intake's.
        let internal_server = http_server(
            &state,
            Listener::Internal,
            internal_listener,
            &settings.server,
        )?;
        Ok(Self {
            port,
            internal_port,
            server,
            internal_server,
            state,
            shutdown,
            background,
            heartbeat,
            shutdown_timeout,
        })
    }

    /// The bound port of the public listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound port of the internal listener (`/metrics`, `/admin/…`).
    pub fn internal_port(&self) -> u16 {
        self.internal_port
    }

    /// A token that stops the service when cancelled (signals in `main`, tests directly).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The shared state (for tests and background workers).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until the shutdown token is cancelled, then stops accepting, lets in-flight requests
    /// finish and joins background tasks.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handles = [self.server.handle(), self.internal_server.handle()];
        let mut server = tokio::spawn(self.server);
        let mut internal_server = tokio::spawn(self.internal_server);
        let stopper = {
            let token = self.shutdown.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                futures_util::future::join_all(handles.iter().map(|h| h.stop(true))).await;
            })
        };
        // Either server ending (e.g. a fatal listener error) stops the other.
        let (served, internal_served) = tokio::select! {
            served = &mut server => {
                self.shutdown.cancel();
                (served, internal_server.await)
            }
            internal_served = &mut internal_server => {
                self.shutdown.cancel();
                (server.await, internal_served)
            }
        };
        let _ = stopper.await;
        for (name, task) in self.background {
            match tokio::time::timeout(self.shutdown_timeout, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error.message = %e, "task panicked"),
                Err(_) => tracing::warn!(task = name, "task did not stop in time"),
            }
        }
        if let Some((stop, task)) = self.heartbeat {
            stop.cancel();
            if tokio::time::timeout(self.shutdown_timeout, task)
                .await
                .is_err()
            {
                tracing::warn!(task = "heartbeat", "task did not stop in time");
            }
        }
        served.context("server task failed")??;
        internal_served.context("internal server task failed")??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Whose outbound budget a provisioner's SCIM clients spend.
#[derive(Clone, Copy)]
enum Lane {
    /// The dispatcher: `immediate_requests_per_second` / `immediate_requests_burst`.
    Immediate,
    /// Cycles and the admin API: `requests_per_second` / `requests_burst`.
    Cycles,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Cycles => "cycles",
        }
    }
}

/// Worker threads of the internal listener: scrapes and admin calls are few and cheap.
const INTERNAL_WORKERS: usize = 1;

/// How long the internal listener keeps an idle connection (actix-web's default): its scrapers
/// come straight, not through a proxy.
const INTERNAL_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// One HTTP server for `listener`'s routes on `socket`, with the settings that listener takes.
fn http_server(
    state: &web::Data<AppState>,
    listener: Listener,
    socket: TcpListener,
    settings: &crate::config::ServerSettings,
) -> anyhow::Result<Server> {
    // `workers` 0 means one per core.
    let (workers, keep_alive) = match listener {
        Listener::Public => (settings.workers, settings.keep_alive),
        Listener::Internal => (INTERNAL_WORKERS, INTERNAL_KEEP_ALIVE),
    };
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        if listener == Listener::Internal {
            yield_cpu_to_intake();
        }
        App::new()
            .app_data(app_state.clone())
            .app_data(listener)
            .wrap(from_fn(routes::limit::limit_clients))
            // Outside the rate limit, so that a panic anywhere inside is answered.
            .wrap(from_fn(routes::recover::catch_panics))
            // Outermost, so that every answer (429s, caught panics) is counted.
            .wrap(from_fn(routes::observe::observe_requests))
            .configure(match listener {
                Listener::Public => routes::configure_public,
                Listener::Internal => routes::configure_internal,
            })
    })
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .keep_alive(keep_alive)
    .listen(socket)?;
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.run())
}

/// Lowers the calling thread (an internal-listener worker, which builds its app on its own thread)
/// to the lowest CPU priority: however hard `/metrics` is scraped, intake's threads come first
/// (docs/security.md, "A flood"). Idle, it changes nothing. On Linux the priority is the thread's.
fn yield_cpu_to_intake() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if LOWERED.with(|done| done.replace(true)) {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error.message = %e, "cannot lower the internal listener's CPU priority");
    }
}

/// The rule start-up applies to the HMAC secret and the admin token, for their new values.
fn long_enough(value: &SecretString) -> Result<(), String> {
    if value.expose().len() < 16 {
        return Err("shorter than 16 characters".to_owned());
    }
    Ok(())
}

/// One SCIM client per application for `lane`, each reporting to the SCIM metrics and its pacer
/// added to `budgets`; a token read from a file is watched in `secret_files` (for each lane's
/// client).
fn build_provisioner(
    settings: &Settings,
    metrics: &Metrics,
    lane: Lane,
    secret_files: &mut SecretWatcher,
    budgets: &mut ScimBudgets,
) -> anyhow::Result<Provisioner> {
    let mut targets = BTreeMap::new();
    for (name, app) in &settings.applications {
        let observer: Arc<dyn RequestObserver> = Arc::new(ScimObserver::new(metrics.clone(), name));
        let client_settings = match lane {
            Lane::Immediate => app.immediate_scim_client_settings(),
            Lane::Cycles => app.scim_client_settings(),
        };
        let client = ScimClient::new(client_settings, Some(observer))
            .with_context(|| format!("application `{name}`: cannot build the SCIM client"))?;
        budgets.add(name, lane.name(), client.pacer());
        if let (Some(path), Some(token)) = (&app.scim_token_file, &app.scim_token) {
            let target = client.clone();
            secret_files.watch(
                format!("applications.{name}.scim_token ({} lane)", lane.name()),
                path,
                token.clone(),
                Box::new(move |value| target.replace_token(value).map_err(|e| e.to_string())),
            );
        }
        let target = Target {
            client,
            user_name_attribute: app.user_name_attribute,
        };
        targets.insert(name.clone(), target);
    }
    Ok(Provisioner::new(targets))
}

/// Every minute, forgets the rate-limit buckets of clients that have gone quiet.
async fn forget_idle_clients(state: web::Data<AppState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        for limiter in [&state.inbound_limiter, &state.admin_limiter]
            .into_iter()
            .flatten()
        {
            limiter.forget_idle();
        }
    }
}

/// This host's name, for lease owners that an operator can recognise.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pimbridge".to_owned())
}

/// A background task that waits for start-up's migrations.
type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `work` once `migrated` says so (bootstrap has migrated the database, or the heartbeat has
/// registered this replica); never, if shutdown comes first.
async fn after_bootstrap(
    mut migrated: watch::Receiver<bool>,
    shutdown: CancellationToken,
    work: Work,
) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = migrated.wait_for(|done| *done) => if ready.is_err() { return },
    }
    work.await;
}

/// Applies migrations and registers applications, retrying until the database answers.
async fn bootstrap(
    pool: Pool,
    applications: Vec<String>,
    done: Arc<AtomicBool>,
    migrated: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let backoff = Backoff::new(BOOTSTRAP_RETRY_MIN, BOOTSTRAP_RETRY_MAX);
    let mut failures = 0;
    loop {
        failures += 1;
        let delay = backoff.step(failures);
        match try_bootstrap(&pool, &applications).await {
            Ok(applied) => {
                tracing::info!(migrations_applied = applied, "database ready");
                done.store(true, Ordering::Release);
                migrated.send_replace(true);
                return;
            }
            Err(e) => {
                tracing::warn!(error.message = %crate::telemetry::error_chain(&*e), retry_in_ms = delay.as_millis() as u64,
                    "database not ready");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn try_bootstrap(pool: &Pool, applications: &[String]) -> anyhow::Result<usize> {
    let mut client = pool.get().await?;
    let applied = migrate::run(&mut client).await?;
    store::register_applications(&client, applications).await?;
    if !store::commits_wait_for_disk(&client).await? {
        tracing::warn!(
            "synchronous_commit is off for pimbridge's database user: a crash of the database \
             server can lose the records that say which memberships pimbridge added, and then \
             leave them in AWS; set it to on (Postgres's default)"
        );
    }
    Ok(applied)
}

/// The statements every activation in the immediate lane runs (intake, admission, the job and
/// its reconciliation), which start-up prepares on the connections it opens ahead.
pub fn immediate_lane_statements() -> Vec<String> {
    [store::hot_statements(), crate::admission::hot_statements()].concat()
}

/// Applies migrations once and exits (the `migrate` subcommand and the Helm hook).
pub async fn migrate_only(settings: &Settings) -> anyhow::Result<usize> {
    let pool = store::build_pool(&settings.database)?;
    let mut client = pool.get().await.context("cannot connect to the database")?;
    let applied = migrate::run(&mut client).await?;
    let names: Vec<String> = settings.applications.keys().cloned().collect();
    store::register_applications(&client, &names).await?;
    Ok(applied)
}
