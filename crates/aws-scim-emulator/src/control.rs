//! The control API under `/_emulator`: inspection, faults, reset, settings. Never faulted,
//! never logged.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::faults::Fault;
use super::Shared;

fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message.to_string() }))
}

fn not_found(message: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": message }))
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(super::CONTROL_PREFIX)
            .route("/health", web::get().to(health))
            .route("/state", web::get().to(state))
            .route(
                "/groups/by-name/{name}/members",
                web::get().to(members_by_name),
            )
            .route("/groups/{id}/members", web::get().to(members_by_id))
            .route("/requests", web::get().to(requests))
            .route("/requests", web::delete().to(clear_requests))
            .route("/faults", web::get().to(list_faults))
            .route("/faults", web::post().to(add_fault))
            .route("/faults", web::delete().to(clear_faults))
            .route("/faults/{id}", web::delete().to(remove_fault))
            .route("/reset", web::post().to(reset))
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::patch().to(patch_settings))
            .default_service(web::to(|| async { not_found("unknown control endpoint") })),
    );
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn state(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.store().dump())
}

fn members_body(shared: &Shared, id: Option<String>) -> HttpResponse {
    let store = shared.store();
    let Some(group) = id.as_deref().and_then(|id| store.group(id)) else {
        return not_found("no such group");
    };
    let names: Vec<Value> = group
        .members
        .iter()
        .map(|m| store.user(m).map_or(Value::Null, |u| json!(u.user_name())))
        .collect();
    HttpResponse::Ok().json(json!({
        "id": group.id,
        "displayName": group.display_name,
        "members": group.members,
        "memberUserNames": names,
    }))
}

async fn members_by_id(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    members_body(&shared, Some(id.into_inner()))
}

async fn members_by_name(shared: web::Data<Shared>, name: web::Path<String>) -> HttpResponse {
    let id = shared.group_id_by_name(&name);
    members_body(&shared, id)
}

async fn requests(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.request_log())
}

async fn clear_requests(shared: web::Data<Shared>) -> HttpResponse {
    shared.clear_request_log();
    HttpResponse::NoContent().finish()
}

async fn list_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.faults().list())
}

async fn add_fault(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    match shared.faults().add(fault) {
        Ok(id) => HttpResponse::Created().json(json!({ "id": id })),
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(shared: web::Data<Shared>) -> HttpResponse {
    shared.faults().clear();
    HttpResponse::NoContent().finish()
}

async fn remove_fault(shared: web::Data<Shared>, id: web::Path<u64>) -> HttpResponse {
    if shared.faults().remove(id.into_inner()) {
        HttpResponse::NoContent().finish()
    } else {
        not_found("no such fault")
    }
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset();
    HttpResponse::NoContent().finish()
}

async fn get_settings(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.settings().redacted())
}

async fn patch_settings(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let changes: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("expected a JSON object"),
        Err(e) => return bad_request(e),
    };
    match shared.merge_settings(&changes) {
        Ok(settings) => HttpResponse::Ok().json(settings.redacted()),
        Err(e) => bad_request(e),
    }
}
