//! The operators' API under `/admin/` (docs/architecture.md), behind its own bearer token: applications
//! and their state, cycles (and starting one now), the provisioning log, jobs (and retrying failed
//! ones), a connection test, on-demand provisioning, confirming held removals, and clearing a
//! quarantine.

use std::collections::BTreeSet;
use std::future::{ready, Ready};
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::domain::{Action, Subject};
use crate::error::ApiError;
use crate::provision::{Options, Origin, Outcome, PairRequest};
use crate::state::AppState;
use crate::store::{cycles, grants, jobs, quarantine, removal_holds, reports, StoreError};

/// Rows a listing returns unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|e, _| ApiError::InvalidRequest(format!("body: {e}")).into());
    let query = web::QueryConfig::default()
        .error_handler(|e, _| ApiError::InvalidRequest(format!("query: {e}")).into());
    cfg.service(
        web::scope("/admin")
            .app_data(json)
            .app_data(query)
            .route("/applications", web::get().to(list_applications))
            .route("/applications/{name}", web::get().to(get_application))
            .route("/applications/{name}/cycles", web::get().to(list_cycles))
            .route("/applications/{name}/cycles", web::post().to(start_cycle))
            .route(
                "/applications/{name}/test-connection",
                web::post().to(test_connection),
            )
            .route("/applications/{name}/provision", web::post().to(provision))
            .route(
                "/applications/{name}/removals/confirm",
                web::post().to(confirm_removals),
            )
            .route(
                "/applications/{name}/quarantine/clear",
                web::post().to(clear_quarantine),
            )
            .route("/provisioning-log", web::get().to(provisioning_log))
            .route("/jobs", web::get().to(list_jobs))
            .route("/jobs/retry", web::post().to(retry_jobs)),
    );
}

/// Proof that the caller presented the admin token. Every handler takes one, so none can forget.
struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<Admin, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or(ApiError::AdminDisabled)?;
    let token = state.admin_token.as_ref().ok_or(ApiError::AdminDisabled)?;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::AdminUnauthorized)?;
    if token.matches(presented.as_bytes()) {
        Ok(Admin)
    } else {
        tracing::warn!("admin request with a wrong token refused");
        Err(ApiError::AdminUnauthorized)
    }
}

/// The application named in the path, if configured.
fn application<'a>(state: &'a AppState, name: &str) -> Result<&'a str, ApiError> {
    state
        .applications
        .iter()
        .find(|a| *a == name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::UnknownApplication(name.to_owned()))
}

/// A database connection, once the schema is in place.
async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    if !state.is_bootstrapped() {
        return Err(ApiError::NotReady);
    }
    Ok(state.pool.get().await.map_err(StoreError::from)?)
}

async fn list_applications(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = connection(&state).await?;
    let apps = reports::applications(&db, &state.applications).await?;
    Ok(HttpResponse::Ok().json(json!({ "applications": apps })))
}

async fn get_application(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?.to_owned();
    let db = connection(&state).await?;
    let mut apps = reports::applications(&db, std::slice::from_ref(&name)).await?;
    let app = apps.pop().ok_or(ApiError::UnknownApplication(name))?;
    Ok(HttpResponse::Ok().json(app))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn list_cycles(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let db = connection(&state).await?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let list = reports::cycles(&db, name, limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "cycles": list })))
}

async fn start_cycle(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let db = connection(&state).await?;
    cycles::request_now(&db, name).await?;
    tracing::info!(application = %name, "cycle requested by an operator");
    Ok(HttpResponse::Accepted().json(json!({
        "application": name,
        "message": "the cycle starts within sync.check_interval on a replica with sync enabled"
    })))
}

/// Confirms the removals the application's latest (held) cycle held back, and starts a cycle
/// now to make them. The confirmation covers as many removals as were held; if more are due by
/// then, the cycle holds again.
async fn confirm_removals(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let db = connection(&state).await?;
    let held = removal_holds::latest_held(&db, name)
        .await?
        .ok_or_else(|| ApiError::NothingHeld(name.to_owned()))?;
    removal_holds::confirm(&db, name, held.removals_due).await?;
    cycles::request_now(&db, name).await?;
    tracing::warn!(application = %name, cycle.id = held.cycle_id, removals = held.removals_due,
        "held removals confirmed by an operator; a cycle is due now");
    Ok(HttpResponse::Accepted().json(json!({
        "application": name,
        "heldCycleId": held.cycle_id,
        "removalsConfirmed": held.removals_due,
        "message": "the next cycle removes up to this many memberships; it starts within sync.check_interval"
    })))
}

async fn test_connection(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let target = state.provisioner.target(name)?;
    let started = Instant::now();
    target
        .client
        .test_connection()
        .await
        .map_err(crate::provision::ProvisionError::from)?;
    Ok(HttpResponse::Ok().json(json!({
        "application": name,
        "ok": true,
        "elapsedMs": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

/// An on-demand change, as Entra's "provision on demand", through the same grants as PIM: `add`
/// records an operator's grant (until `endsAt`, or until removed) and reconciles the pair; `remove`
/// ends that grant and reconciles (a user whose PIM grant still runs stays a member). `add`
/// without `principalId` provisions the group alone, so permission sets can be assigned to it
/// before anyone activates.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProvisionRequest {
    action: String,
    principal_id: Option<String>,
    group_id: String,
    ends_at: Option<String>,
    user: Option<Value>,
    group: Option<Value>,
}

async fn provision(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<ProvisionRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let mut db = connection(&state).await?;
    let body = body.into_inner();
    let action = match body.action.as_str() {
        "add" => Action::Add,
        "remove" => Action::Remove,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "action: `{other}` is not `add` or `remove`"
            )))
        }
    };
    if body.group_id.trim().is_empty() {
        return Err(ApiError::InvalidRequest(
            "groupId: must not be empty".into(),
        ));
    }
    if !state.intake.routes_to(&body.group_id, name) {
        return Err(ApiError::InvalidRequest(format!(
            "groupId: the group is not assigned to application `{name}`"
        )));
    }
    let ends_at = match body.ends_at.as_deref() {
        Some(text) => Some(
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
                |_| ApiError::InvalidRequest("endsAt: not an RFC 3339 timestamp".into()),
            )?,
        ),
        None => None,
    };
    let Some(principal_id) = body.principal_id.filter(|p| !p.trim().is_empty()) else {
        if action == Action::Remove {
            return Err(ApiError::InvalidRequest(
                "principalId: must not be empty".into(),
            ));
        }
        let subject = Subject {
            application: name.to_owned(),
            principal_id: String::new(),
            group_id: body.group_id,
            user_attributes: None,
            group_attributes: body.group,
        };
        let group = state.provisioner.provision_group(&db, &subject).await?;
        tracing::info!(application = %name, "group provisioned on demand");
        return Ok(HttpResponse::Ok().json(json!({
            "application": name, "action": "create_group", "status": "succeeded", "awsGroupId": group,
        })));
    };
    let subject = Subject {
        application: name.to_owned(),
        principal_id,
        group_id: body.group_id,
        user_attributes: body.user,
        group_attributes: body.group,
    };
    match action {
        Action::Add => {
            grants::record_operator_grant(
                &db,
                name,
                &subject.principal_id,
                &subject.group_id,
                ends_at,
            )
            .await?;
        }
        Action::Remove => {
            grants::end_operator_grant(&db, name, &subject.principal_id, &subject.group_id).await?;
        }
    }
    let started = Instant::now();
    let request = PairRequest {
        subject,
        event_id: None,
        job_id: None,
    };
    let report = state
        .provisioner
        .reconcile(
            &mut db,
            name,
            Origin::Operator,
            &[request],
            &Options::default(),
        )
        .await?;
    let (status, reason) = match report.outcomes.first() {
        Some(Outcome::Added) => ("added", None),
        Some(Outcome::Removed) => ("removed", None),
        Some(Outcome::Unchanged(reason)) => ("unchanged", Some((*reason).to_owned())),
        Some(Outcome::Held(reason)) => ("held", Some(reason.clone())),
        Some(Outcome::Failed(failure)) => return Err(ApiError::ChangeFailed(failure.clone())),
        Some(other) => ("unchanged", Some(format!("{other:?}"))),
        None => ("unchanged", None),
    };
    tracing::info!(application = %name, action = action.as_str(), status, "provisioned on demand");
    Ok(HttpResponse::Ok().json(json!({
        "application": name,
        "action": action.as_str(),
        "status": status,
        "reason": reason,
        "member": report.desired.first().copied().unwrap_or(false),
        "elapsedMs": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

async fn clear_quarantine(
    _: Admin,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = application(&state, &name)?;
    let db = connection(&state).await?;
    let cleared = quarantine::clear(&db, name).await?;
    if cleared {
        // The queued changes go out in a cycle now rather than after the back-off.
        cycles::request_now(&db, name).await?;
        tracing::info!(application = %name, "quarantine cleared by an operator");
    }
    Ok(HttpResponse::Ok().json(json!({ "application": name, "cleared": cleared })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    application: Option<String>,
    status: Option<String>,
    cycle: Option<i64>,
    principal: Option<String>,
    group: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

async fn provisioning_log(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if let Some(name) = &q.application {
        application(&state, name)?;
    }
    if let Some(status) = &q.status {
        if !["succeeded", "skipped", "retrying", "failed"].contains(&status.as_str()) {
            return Err(ApiError::InvalidRequest(format!(
                "status: `{status}` is not one of succeeded, skipped, retrying, failed"
            )));
        }
    }
    let since = q
        .since
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::InvalidRequest(format!("since: `{s}` is not an RFC 3339 timestamp"))
                })
                .and_then(|at| {
                    crate::intake::validate::in_range("since", at).map_err(ApiError::from)
                })
        })
        .transpose()?;
    let filter = reports::LogFilter {
        application: q.application,
        status: q.status,
        cycle_id: q.cycle,
        principal_id: q.principal,
        group_id: q.group,
        since,
        before_id: q.before,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let db = connection(&state).await?;
    let entries = reports::provisioning_log(&db, &filter).await?;
    Ok(HttpResponse::Ok().json(json!({ "entries": entries })))
}

#[derive(Deserialize)]
struct JobQuery {
    application: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_jobs(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<JobQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if let Some(name) = &q.application {
        application(&state, name)?;
    }
    let db = connection(&state).await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let list = reports::jobs(&db, q.application.as_deref(), q.state.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "jobs": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    application: Option<String>,
    ids: Option<Vec<i64>>,
}

async fn retry_jobs(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // No body retries every failed job; a body narrows it down and must be valid.
    let body: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?
    };
    if let Some(name) = &body.application {
        application(&state, name)?;
    }
    let db = connection(&state).await?;
    let retried = jobs::retry_failed(&db, body.application.as_deref(), body.ids.as_deref()).await?;
    let applications: BTreeSet<&String> = retried.iter().collect();
    for name in &applications {
        cycles::request_now(&db, name).await?;
    }
    tracing::info!(
        retried = retried.len(),
        "failed jobs retried by an operator"
    );
    Ok(HttpResponse::Ok().json(json!({
        "retried": retried.len(),
        "applications": applications,
    })))
}
