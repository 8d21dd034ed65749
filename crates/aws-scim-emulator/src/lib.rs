//! AWS IAM Identity Center SCIM emulator.
//!
//! An in-memory, AWS-faithful SCIM 2.0 endpoint (see `docs/emulator.md`) with run-time fault
//! injection and inspection, for dry runs and tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use aws_scim_emulator::{EmulatorSettings, Fault, RunningEmulator};
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let emulator = RunningEmulator::start(EmulatorSettings::default(), listener).await?;
//! println!("{}", emulator.scim_base_url());
//! emulator.inject(Fault::throttle(2, 1));
//! emulator.stop().await;
//! # Ok(()) }
//! ```

mod clock;
mod control;
mod discovery;
mod errors;
mod faults;
mod filter;
mod log;
mod paging;
mod patch;
mod pipeline;
mod routes;
mod settings;
mod store;
mod validate;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::dev::ServerHandle;
use actix_web::middleware::{from_fn, NormalizePath};
use actix_web::{web, App, HttpServer};
use serde_json::Value;

pub use errors::ApiError;
pub use faults::{ActiveFault, Fault, FaultKind};
pub use log::LoggedRequest;
pub use settings::{EmulatorSettings, RedundantMemberChange, DEFAULT_TENANT_ID, DEFAULT_TOKEN};
pub use store::{GroupDump, StateDump};

/// Core User schema URN.
pub const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Group schema URN.
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// ListResponse message URN.
pub const LIST_RESPONSE_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/_emulator";

/// Largest accepted request body.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by all workers.
pub(crate) struct Shared {
    settings: Mutex<Arc<EmulatorSettings>>,
    store: Mutex<store::Store>,
    faults: Mutex<faults::FaultSet>,
    log: Mutex<log::RequestLog>,
}

impl Shared {
    fn new(settings: EmulatorSettings) -> Self {
        Self {
            settings: Mutex::new(Arc::new(settings)),
            store: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
        }
    }

    pub(crate) fn settings(&self) -> Arc<EmulatorSettings> {
        lock(&self.settings).clone()
    }

    fn replace_settings(&self, settings: EmulatorSettings) {
        *lock(&self.settings) = Arc::new(settings);
    }

    /// Applies the keys of `changes` (camelCase setting names) to the settings.
    pub(crate) fn merge_settings(&self, changes: &Value) -> Result<EmulatorSettings, String> {
        let mut guard = lock(&self.settings);
        let mut current = serde_json::to_value(guard.as_ref()).map_err(|e| e.to_string())?;
        let (Some(target), Some(changes)) = (current.as_object_mut(), changes.as_object()) else {
            return Err("expected a JSON object".to_owned());
        };
        for (k, v) in changes {
            if !target.contains_key(k) {
                return Err(format!("unknown setting {k}"));
            }
            target.insert(k.clone(), v.clone());
        }
        let merged: EmulatorSettings =
            serde_json::from_value(current).map_err(|e| e.to_string())?;
        *guard = Arc::new(merged.clone());
        Ok(merged)
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, faults::FaultSet> {
        lock(&self.faults)
    }

    pub(crate) fn decide(&self, method: &str, path: &str) -> faults::Decision {
        self.faults().decide(method, path)
    }

    pub(crate) fn record(&self, entry: LoggedRequest) {
        let capacity = self.settings().request_log_capacity;
        lock(&self.log).push(entry, capacity);
    }

    pub(crate) fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.log).entries()
    }

    pub(crate) fn clear_request_log(&self) {
        lock(&self.log).clear();
    }

    pub(crate) fn reset(&self) {
        self.store().clear();
        self.faults().clear();
        self.clear_request_log();
    }

    /// Id of the group named `name`: exact match first, then per the case setting.
    pub(crate) fn group_id_by_name(&self, name: &str) -> Option<String> {
        let ci = self.settings().group_name_case_insensitive;
        let store = self.store();
        let found = store
            .groups_named(name, false)
            .next()
            .or_else(|| store.groups_named(name, ci).next());
        found.map(|g| g.id.clone())
    }

    fn group_members(&self, id: &str) -> Option<Vec<String>> {
        self.store()
            .group(id)
            .map(|g| g.members.iter().cloned().collect())
    }
}

/// A running emulator. Dropping it stops the server (without waiting); prefer [`Self::stop`].
pub struct RunningEmulator {
    address: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stopped: bool,
}

impl RunningEmulator {
    /// Binds and starts serving on `listener` (use port 0 in tests), spawned on the current
    /// tokio runtime, with one worker thread.
    pub async fn start(
        settings: EmulatorSettings,
        listener: TcpListener,
    ) -> std::io::Result<RunningEmulator> {
        Self::start_with_workers(settings, listener, 1).await
    }

    /// Like [`Self::start`] with `workers` worker threads.
    pub async fn start_with_workers(
        settings: EmulatorSettings,
        listener: TcpListener,
        workers: usize,
    ) -> std::io::Result<RunningEmulator> {
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::new(settings));
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .configure(control::configure)
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::not_found(
                        "The requested resource does not exist.",
                    ))
                }))
                .wrap(NormalizePath::trim())
                .wrap(from_fn(pipeline::observe))
        })
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(pipeline::on_connect)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(RunningEmulator {
            address,
            shared,
            handle,
            task: Some(task),
            stopped: false,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// e.g. `http://127.0.0.1:PORT/kE3934e0444-.../scim/v2`
    pub fn scim_base_url(&self) -> String {
        format!(
            "http://{}/{}/scim/v2",
            self.address,
            self.shared.settings().tenant_id
        )
    }

    /// e.g. `http://127.0.0.1:PORT/_emulator`
    pub fn control_url(&self) -> String {
        format!("http://{}{CONTROL_PREFIX}", self.address)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.stopped = true;
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Current settings (tokens included).
    pub fn settings(&self) -> EmulatorSettings {
        self.shared.settings().as_ref().clone()
    }

    /// Changes settings at run time; applies to requests that start afterwards.
    pub fn update_settings(&self, change: impl FnOnce(&mut EmulatorSettings)) {
        let mut settings = self.settings();
        change(&mut settings);
        self.shared.replace_settings(settings);
    }

    /// All users and groups (with member ids).
    pub fn state(&self) -> StateDump {
        self.shared.store().dump()
    }

    /// Member user ids of the group with this id.
    pub fn group_members(&self, group_id: &str) -> Option<Vec<String>> {
        self.shared.group_members(group_id)
    }

    /// Member user ids of the group with this displayName.
    pub fn group_members_by_name(&self, display_name: &str) -> Option<Vec<String>> {
        let id = self.shared.group_id_by_name(display_name)?;
        self.shared.group_members(&id)
    }

    /// The SCIM request log, oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.request_log()
    }

    pub fn clear_request_log(&self) {
        self.shared.clear_request_log();
    }

    /// Installs a fault and returns its id. An invalid fault (ratio outside 0..=1, status
    /// outside 400..=599) is not installed and yields 0.
    pub fn inject(&self, fault: Fault) -> u64 {
        match self.shared.faults().add(fault) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "fault not installed");
                0
            }
        }
    }

    /// Installed faults with their counters.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.shared.faults().list()
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.faults().remove(id)
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Forgets all users, groups, faults and logged requests (settings are kept).
    pub fn reset(&self) {
        self.shared.reset();
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if !self.stopped {
            // Sends the stop command now; nobody waits for its completion.
            drop(self.handle.stop(false));
        }
    }
}
