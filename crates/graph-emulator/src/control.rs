//! The control API under `/_graph`: tenant contents, activations, notifications, faults,
//! tokens, the request log and settings. Never authenticated, faulted or logged.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::directory::{ControlError, NewInstance};
use super::faults::GraphFault;
use super::notify::REAUTHORIZATION_REQUIRED;
use super::settings::SettingsChange;
use super::{Shared, CONTROL_PREFIX};
use crate::wire::{format_graph_time, GraphGroup, GraphUser};

fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.to_string() }))
}

fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, message)
}

fn control_error(e: &ControlError) -> HttpResponse {
    let status = match e {
        ControlError::Invalid(_) | ControlError::NoLifecycleUrl(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::NOT_FOUND,
    };
    error(status, e)
}

/// Bodies that are not the expected JSON get the control API's 400.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().error_handler(|err, _| {
        let response = bad_request(&err);
        actix_web::error::InternalError::from_response(err, response).into()
    })
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(CONTROL_PREFIX)
            .app_data(json_config())
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
            .route("/state", web::get().to(state))
            .route("/users", web::post().to(add_user))
            .route("/users/{id}", web::delete().to(remove_user))
            .route("/groups", web::post().to(add_group))
            .route("/groups/{id}", web::delete().to(remove_group))
            .route("/groups/{id}/activate", web::post().to(activate))
            .route("/groups/{id}/deactivate", web::post().to(deactivate))
            .route("/groups/{id}/notify", web::post().to(notify_group))
            .route("/subscriptions", web::get().to(subscriptions))
            .route("/subscriptions/{id}/lifecycle", web::post().to(lifecycle))
            .route("/faults", web::get().to(list_faults))
            .route("/faults", web::post().to(add_fault))
            .route("/faults", web::delete().to(clear_faults))
            .route("/tokens/revoke", web::post().to(revoke_tokens))
            .route("/requests", web::get().to(requests))
            .route("/requests", web::delete().to(clear_requests))
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::patch().to(patch_settings))
            .route("/reset", web::post().to(reset))
            .default_service(web::to(|| async {
                error(StatusCode::NOT_FOUND, "unknown control endpoint")
            })),
    );
}

async fn state(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.directory().dump())
}

async fn add_user(shared: web::Data<Shared>, user: web::Json<GraphUser>) -> HttpResponse {
    shared.directory().put_user(user.clone());
    HttpResponse::Created().json(user.into_inner())
}

async fn add_group(shared: web::Data<Shared>, group: web::Json<GraphGroup>) -> HttpResponse {
    shared.directory().put_group(group.clone());
    HttpResponse::Created().json(group.into_inner())
}

fn removed(found: bool, what: &str) -> HttpResponse {
    if found {
        HttpResponse::NoContent().finish()
    } else {
        error(StatusCode::NOT_FOUND, format!("no such {what}"))
    }
}

async fn remove_user(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    removed(shared.directory().remove_user(&id), "user")
}

async fn remove_group(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    removed(shared.directory().remove_group(&id), "group")
}

/// `POST /_graph/groups/{id}/activate` with a [`NewInstance`] body (the group from the path).
async fn activate(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    new: web::Json<NewInstance>,
) -> HttpResponse {
    let mut new = new.into_inner();
    new.group_id = id.into_inner();
    match shared.add_instance(new).await {
        Ok(instance) => HttpResponse::Created().json(instance),
        Err(e) => control_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Principal {
    principal_id: String,
}

async fn deactivate(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    principal: web::Json<Principal>,
) -> HttpResponse {
    match shared.deactivate(&id, &principal.principal_id).await {
        Ok(removed) => HttpResponse::Ok().json(json!({ "removed": removed })),
        Err(e) => control_error(&e),
    }
}

async fn notify_group(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let deliveries = shared.notify_group(&id).await;
    HttpResponse::Ok().json(json!({ "deliveries": deliveries }))
}

/// Subscriptions without their clientState.
async fn subscriptions(shared: web::Data<Shared>) -> HttpResponse {
    let list: Vec<Value> = shared
        .directory()
        .subscriptions()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "changeType": s.change_type,
                "resource": s.resource,
                "notificationUrl": s.notification_url,
                "lifecycleNotificationUrl": s.lifecycle_notification_url,
                "expirationDateTime": format_graph_time(s.expiration),
                "applicationId": s.application_id,
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LifecycleRequest {
    lifecycle_event: Option<String>,
}

async fn lifecycle(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    // The body is optional; without one the event is reauthorizationRequired.
    let request: LifecycleRequest = if body.is_empty() {
        LifecycleRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(e),
        }
    };
    let event = request
        .lifecycle_event
        .unwrap_or_else(|| REAUTHORIZATION_REQUIRED.to_owned());
    match shared.send_lifecycle(&id, &event).await {
        Ok(delivery) => HttpResponse::Ok().json(delivery),
        Err(e) => control_error(&e),
    }
}

async fn list_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.faults().list())
}

async fn add_fault(shared: web::Data<Shared>, fault: web::Json<GraphFault>) -> HttpResponse {
    match shared.faults().push(fault.into_inner()) {
        Ok(()) => HttpResponse::Created().finish(),
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(shared: web::Data<Shared>) -> HttpResponse {
    shared.faults().clear();
    HttpResponse::NoContent().finish()
}

async fn revoke_tokens(shared: web::Data<Shared>) -> HttpResponse {
    shared.tokens().revoke_all();
    HttpResponse::NoContent().finish()
}

async fn requests(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.request_log())
}

async fn clear_requests(shared: web::Data<Shared>) -> HttpResponse {
    shared.clear_request_log();
    HttpResponse::NoContent().finish()
}

async fn get_settings(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.settings().public_view())
}

async fn patch_settings(
    shared: web::Data<Shared>,
    change: web::Json<SettingsChange>,
) -> HttpResponse {
    match shared.change_settings(|s| s.apply(&change)) {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => bad_request(e),
    }
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset();
    HttpResponse::NoContent().finish()
}
