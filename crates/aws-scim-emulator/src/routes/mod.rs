//! SCIM routes under `/{tenantId}/scim/v2`.

mod groups;
mod users;

use std::time::Instant;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use serde_json::Value;

use super::discovery;
use super::errors::ApiError;
use super::pipeline::{scim_gate, LoggedBody, VisibilityDelay};

pub(crate) type ScimResult = Result<HttpResponse, ApiError>;

/// Registers the SCIM scope.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/{tenant}/scim/v2")
            .wrap(from_fn(scim_gate))
            .service(
                web::resource("/ServiceProviderConfig")
                    .get(service_provider_config)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Schemas")
                    .get(schemas)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Schemas/{urn}")
                    .get(schema)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/ResourceTypes")
                    .get(resource_types)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/ResourceTypes/{name}")
                    .get(resource_type)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Users")
                    .get(users::list)
                    .post(users::create)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Users/{id}")
                    .get(users::get)
                    .put(users::put)
                    .patch(users::patch)
                    .delete(users::delete)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Groups")
                    .get(groups::list)
                    .post(groups::create)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource("/Groups/{id}")
                    .get(groups::get)
                    .patch(groups::patch)
                    .delete(groups::delete)
                    .default_service(web::to(unsupported_method)),
            )
            .service(
                web::resource([
                    "/Bulk",
                    "/Me",
                    "/Search",
                    "/Users/.search",
                    "/Groups/.search",
                ])
                .to(unsupported_endpoint),
            )
            .default_service(web::to(not_found)),
    );
}

/// Parses a JSON request body and keeps it for the request log.
pub(crate) fn json_body(req: &HttpRequest, body: &web::Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            req.extensions_mut().insert(LoggedBody(v.clone()));
            Ok(v)
        }
        Err(_) => {
            let raw = String::from_utf8_lossy(body).into_owned();
            req.extensions_mut().insert(LoggedBody(Value::String(raw)));
            Err(ApiError::unparsable())
        }
    }
}

/// False while a delayed-visibility fault hides a resource created at `born`.
pub(crate) fn visible(req: &HttpRequest, born: Instant) -> bool {
    req.extensions()
        .get::<VisibilityDelay>()
        .is_none_or(|d| born.elapsed() >= d.0)
}

fn ok_json(body: Value) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

async fn service_provider_config() -> HttpResponse {
    ok_json(discovery::service_provider_config())
}

async fn schemas() -> HttpResponse {
    ok_json(discovery::list(discovery::schemas()))
}

async fn schema(path: web::Path<(String, String)>) -> ScimResult {
    let (_, urn) = path.into_inner();
    discovery::schema_by_urn(&urn)
        .map(ok_json)
        .ok_or_else(|| ApiError::not_found("Specified schema does not exist."))
}

async fn resource_types() -> HttpResponse {
    ok_json(discovery::list(discovery::resource_types()))
}

async fn resource_type(path: web::Path<(String, String)>) -> ScimResult {
    let (_, name) = path.into_inner();
    discovery::resource_types()
        .into_iter()
        .find(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(&name))
        })
        .map(ok_json)
        .ok_or_else(|| ApiError::not_found("Specified resource type does not exist."))
}

async fn unsupported_method(req: HttpRequest) -> ScimResult {
    Err(ApiError::unsupported(&format!(
        "{} on this resource",
        req.method()
    )))
}

async fn unsupported_endpoint(req: HttpRequest) -> ScimResult {
    let last = req.path().rsplit('/').next().unwrap_or_default().to_owned();
    Err(ApiError::unsupported(&format!("the /{last} endpoint")))
}

async fn not_found() -> ScimResult {
    Err(ApiError::not_found(
        "The requested resource does not exist.",
    ))
}
