//! Microsoft Graph emulator: the identity platform's token endpoint and the slice of Graph
//! pimbridge uses, in memory, for tests and dry runs (see `docs/graph-emulator.md`).
//!
//! One server plays both hosts: the authority is `http://127.0.0.1:P` (token endpoint
//! `/{tenant}/oauth2/v2.0/token`), Graph is `http://127.0.0.1:P/v1.0`. It knows one tenant
//! and one app registration; it lists PIM-for-Groups assignment instances (paged), reads users
//! and groups, runs subscriptions with Graph's validation handshake, and sends change and
//! lifecycle notifications when told to. A control API (`/_graph`, and the same as methods
//! here) changes the tenant, injects faults and shows a request log.
//!
//! Its JSON comes from its own [`wire`] types, written from Graph's wire format, not from
//! any client's: a client that gets a property name wrong fails here.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use graph_emulator::{GraphEmulatorSettings, GraphGroup, RunningGraphEmulator};
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let emulator = RunningGraphEmulator::start(GraphEmulatorSettings::default(), listener).await?;
//! emulator.add_group(GraphGroup { id: "g1".into(), display_name: Some("AWS-Admins".into()) });
//! println!("token endpoint under {}, Graph at {}", emulator.base_url(), emulator.graph_url());
//! emulator.stop().await;
//! # Ok(()) }
//! ```

mod auth;
mod control;
mod directory;
mod errors;
mod faults;
mod filter;
mod log;
mod notify;
mod routes;
mod secret;
mod settings;
pub mod wire;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, Error, HttpMessage as _, HttpServer};
use time::OffsetDateTime;

pub use directory::{
    ControlError, DirectoryDump, EmulatedSubscription, NewInstance, DEFAULT_ACTIVATION,
};
pub use faults::GraphFault;
pub use notify::{Delivery, LIFECYCLE_EVENTS, REAUTHORIZATION_REQUIRED};
pub use routes::INSTANCES_PATH;
pub use settings::{
    GraphEmulatorSettings, SettingsChange, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
    DEFAULT_PAGE_SIZE, DEFAULT_TENANT_ID, DEFAULT_TOKEN_LIFETIME, MAX_SUBSCRIPTION_LIFETIME,
};

pub use log::LoggedRequest;
pub use secret::SecretString;
pub use wire::{AssignmentInstance, GraphGroup, GraphUser};

use errors::REQUEST_ID_HEADER;
use wire::format_graph_time;

/// Path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/_graph";
/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 1024 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by all workers. No lock is ever held across an `await`.
pub(crate) struct Shared {
    settings: Mutex<GraphEmulatorSettings>,
    directory: Mutex<directory::Directory>,
    tokens: Mutex<auth::TokenStore>,
    faults: Mutex<faults::FaultQueue>,
    log: Mutex<VecDeque<LoggedRequest>>,
    /// For handshakes and notifications to subscribers.
    outbound: reqwest::Client,
}

impl Shared {
    pub(crate) fn settings(&self) -> GraphEmulatorSettings {
        lock(&self.settings).clone()
    }

    /// Changes the settings with `change`; the public view of the result.
    pub(crate) fn change_settings(
        &self,
        change: impl FnOnce(&mut GraphEmulatorSettings) -> Result<(), String>,
    ) -> Result<serde_json::Value, String> {
        let mut settings = lock(&self.settings);
        let mut changed = settings.clone();
        change(&mut changed)?;
        *settings = changed;
        Ok(settings.public_view())
    }

    pub(crate) fn directory(&self) -> MutexGuard<'_, directory::Directory> {
        lock(&self.directory)
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, auth::TokenStore> {
        lock(&self.tokens)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, faults::FaultQueue> {
        lock(&self.faults)
    }

    pub(crate) fn outbound(&self) -> &reqwest::Client {
        &self.outbound
    }

    fn record(&self, entry: LoggedRequest) {
        let capacity = lock(&self.settings).request_log_capacity.max(1);
        let mut log = lock(&self.log);
        log.push_back(entry);
        while log.len() > capacity {
            log.pop_front();
        }
    }

    pub(crate) fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn clear_request_log(&self) {
        lock(&self.log).clear();
    }

    pub(crate) fn reset(&self) {
        self.directory().clear();
        self.tokens().revoke_all();
        self.faults().clear();
        self.clear_request_log();
    }

    /// Adds an instance; with `notify_on_change`, notifies the group's subscribers.
    pub(crate) async fn add_instance(
        &self,
        new: NewInstance,
    ) -> Result<AssignmentInstance, ControlError> {
        let instance = self
            .directory()
            .add_instance(new, OffsetDateTime::now_utc())?;
        if self.settings().notify_on_change {
            self.notify_group(&instance.group_id).await;
        }
        Ok(instance)
    }

    /// Removes the principal's activations in the group; with `notify_on_change` and
    /// something removed, notifies the group's subscribers.
    pub(crate) async fn deactivate(
        &self,
        group_id: &str,
        principal_id: &str,
    ) -> Result<usize, ControlError> {
        let removed = {
            let mut directory = self.directory();
            if directory.group(group_id).is_none() {
                return Err(ControlError::UnknownGroup(group_id.to_owned()));
            }
            directory.remove_activations(group_id, principal_id)
        };
        if removed > 0 && self.settings().notify_on_change {
            self.notify_group(group_id).await;
        }
        Ok(removed)
    }

    /// Sends a change notification for `group_id` to every live subscription that watches
    /// it, concurrently, one POST per subscription.
    pub(crate) async fn notify_group(&self, group_id: &str) -> Vec<Delivery> {
        let settings = self.settings();
        let watchers = self
            .directory()
            .watchers_of(group_id, OffsetDateTime::now_utc());
        let sends = watchers.iter().map(|s| {
            let body = notify::group_changed(s, group_id, &settings.tenant_id);
            let timeout = settings.notification_timeout;
            async move {
                notify::deliver(&self.outbound, &s.id, &s.notification_url, &body, timeout).await
            }
        });
        let deliveries = futures_util::future::join_all(sends).await;
        for failed in deliveries.iter().filter(|d| !d.accepted()) {
            tracing::warn!(subscription = %failed.subscription_id, error = ?failed.error, "notification not accepted");
        }
        deliveries
    }

    /// Sends one lifecycle notification to the subscription's `lifecycleNotificationUrl`.
    pub(crate) async fn send_lifecycle(
        &self,
        subscription_id: &str,
        event: &str,
    ) -> Result<Delivery, ControlError> {
        if !LIFECYCLE_EVENTS.contains(&event) {
            return Err(ControlError::Invalid(format!(
                "lifecycleEvent must be one of {LIFECYCLE_EVENTS:?}"
            )));
        }
        let settings = self.settings();
        let subscription = self
            .directory()
            .subscription(subscription_id)
            .cloned()
            .ok_or_else(|| ControlError::UnknownSubscription(subscription_id.to_owned()))?;
        let url = subscription
            .lifecycle_notification_url
            .clone()
            .ok_or_else(|| ControlError::NoLifecycleUrl(subscription_id.to_owned()))?;
        let body = notify::lifecycle(&subscription, event, &settings.tenant_id);
        Ok(notify::deliver(
            &self.outbound,
            &subscription.id,
            &url,
            &body,
            settings.notification_timeout,
        )
        .await)
    }
}

/// Outermost middleware: a `request-id` on every answer, and the request log (control API
/// excluded).
async fn observe<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let path = req.path().to_owned();
    if path == CONTROL_PREFIX || path.starts_with(&format!("{CONTROL_PREFIX}/")) {
        return next.call(req).await;
    }
    let shared = req.app_data::<web::Data<Shared>>().cloned();
    let method = req.method().to_string();
    let query = req.query_string().to_owned();
    let at = format_graph_time(OffsetDateTime::now_utc());
    let started = Instant::now();
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    let request_id = match headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(value) = HeaderValue::from_str(&id) {
                headers.insert(
                    actix_web::http::header::HeaderName::from_static(REQUEST_ID_HEADER),
                    value,
                );
            }
            id
        }
    };
    let fault = response
        .request()
        .extensions()
        .get::<routes::Faulted>()
        .map(|f| f.0.to_string());
    if let Some(shared) = shared {
        shared.record(LoggedRequest {
            method,
            path,
            query,
            status: response.status().as_u16(),
            at,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            request_id,
            fault,
            body: None,
        });
    }
    Ok(response)
}

/// A running Graph emulator. Dropping it stops the server (without waiting); prefer
/// [`Self::stop`].
pub struct RunningGraphEmulator {
    address: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    /// The server task; taken by [`Self::stop`], so `Drop` knows whether to stop it.
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningGraphEmulator {
    /// Serves on `listener` (port 0 in tests) on the current tokio runtime, one worker.
    pub async fn start(
        settings: GraphEmulatorSettings,
        listener: TcpListener,
    ) -> std::io::Result<Self> {
        Self::start_with_workers(settings, listener, 1).await
    }

    /// Like [`Self::start`] with `workers` worker threads.
    pub async fn start_with_workers(
        settings: GraphEmulatorSettings,
        listener: TcpListener,
        workers: usize,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let outbound = reqwest::Client::builder()
            .user_agent(concat!(
                "pimbridge-graph-emulator/",
                env!("CARGO_PKG_VERSION")
            ))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            settings: Mutex::new(settings),
            directory: Mutex::default(),
            tokens: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
            outbound,
        });
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .configure(control::configure)
                .route("/{tenant}/oauth2/v2.0/token", web::post().to(auth::token))
                .configure(routes::configure)
                .wrap(from_fn(observe))
        })
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Self {
            address,
            shared,
            handle,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The server root, which is also the authority: `http://127.0.0.1:P`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The Graph base: `http://127.0.0.1:P/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// The control API: `http://127.0.0.1:P/_graph`.
    pub fn control_url(&self) -> String {
        format!("{}{CONTROL_PREFIX}", self.base_url())
    }

    /// Current settings (secret included).
    pub fn settings(&self) -> GraphEmulatorSettings {
        self.shared.settings()
    }

    /// Changes settings; applies to requests that start afterwards.
    pub fn update_settings(&self, change: impl FnOnce(&mut GraphEmulatorSettings)) {
        let _ = self.shared.change_settings(|s| {
            change(s);
            Ok(())
        });
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, user: GraphUser) {
        self.shared.directory().put_user(user);
    }

    /// Removes a user and its assignment instances.
    pub fn remove_user(&self, id: &str) -> bool {
        self.shared.directory().remove_user(id)
    }

    /// Adds or replaces a group.
    pub fn add_group(&self, group: GraphGroup) {
        self.shared.directory().put_group(group);
    }

    /// Removes a group and the instances in it.
    pub fn remove_group(&self, id: &str) -> bool {
        self.shared.directory().remove_group(id)
    }

    /// PIM activation: an `activated` member instance from now for `duration`.
    pub async fn activate(
        &self,
        group_id: &str,
        principal_id: &str,
        duration: Duration,
    ) -> Result<AssignmentInstance, ControlError> {
        self.add_instance(NewInstance::activation(group_id, principal_id, duration))
            .await
    }

    /// A standing `assigned` member instance without end.
    pub async fn assign(
        &self,
        group_id: &str,
        principal_id: &str,
    ) -> Result<AssignmentInstance, ControlError> {
        self.add_instance(NewInstance::assignment(group_id, principal_id))
            .await
    }

    /// Any instance (owners, explicit start and end, ...).
    pub async fn add_instance(&self, new: NewInstance) -> Result<AssignmentInstance, ControlError> {
        self.shared.add_instance(new).await
    }

    /// PIM deactivation: removes the principal's activations in the group; how many.
    pub async fn deactivate(
        &self,
        group_id: &str,
        principal_id: &str,
    ) -> Result<usize, ControlError> {
        self.shared.deactivate(group_id, principal_id).await
    }

    /// Users, groups and all stored instances (expired ones included).
    pub fn state(&self) -> DirectoryDump {
        self.shared.directory().dump()
    }

    /// Subscriptions, with their clientState.
    pub fn subscriptions(&self) -> Vec<EmulatedSubscription> {
        self.shared.directory().subscriptions()
    }

    /// Sends a change notification for the group to every subscription watching it.
    pub async fn notify_group_changed(&self, group_id: &str) -> Vec<Delivery> {
        self.shared.notify_group(group_id).await
    }

    /// Sends a lifecycle notification (e.g. [`REAUTHORIZATION_REQUIRED`]).
    pub async fn send_lifecycle_notification(
        &self,
        subscription_id: &str,
        event: &str,
    ) -> Result<Delivery, ControlError> {
        self.shared.send_lifecycle(subscription_id, event).await
    }

    /// Queues a fault for the next Graph requests.
    pub fn inject(&self, fault: GraphFault) -> Result<(), String> {
        self.shared.faults().push(fault)
    }

    /// Pending faults.
    pub fn faults(&self) -> Vec<GraphFault> {
        self.shared.faults().list()
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Makes every issued token invalid (Graph answers 401 until a new one is fetched).
    pub fn revoke_tokens(&self) {
        self.shared.tokens().revoke_all();
    }

    /// Token and Graph requests, oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.request_log()
    }

    pub fn clear_request_log(&self) {
        self.shared.clear_request_log();
    }

    /// Forgets users, groups, instances, subscriptions, tokens, faults and the log.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        let task = self.task.take();
        self.handle.stop(true).await;
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for RunningGraphEmulator {
    fn drop(&mut self) {
        if self.task.is_some() {
            // Sends the stop command; nobody waits for it.
            drop(self.handle.stop(false));
        }
    }
}
