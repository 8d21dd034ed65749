//! The Graph half under `/v1.0`: the bearer gate and faults, PIM-for-Groups assignment
//! instances, users, groups and subscriptions.

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, Error, HttpMessage as _, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use url::Url;

use super::auth::check_bearer;
use super::directory::{normalise_resource, to_tick, EmulatedSubscription};
use super::errors::GraphApiError;
use super::filter::parse_instance_filter;
use super::notify;
use super::settings::MAX_SUBSCRIPTION_LIFETIME;
use super::Shared;
use crate::wire::{
    encode_query_value, format_graph_time, required_time, NewSubscription, ODataPage,
    MAX_CLIENT_STATE_CHARS,
};

type GraphResult = Result<HttpResponse, GraphApiError>;

/// Path of the assignment-instance collection below `/v1.0`.
pub const INSTANCES_PATH: &str =
    "/identityGovernance/privilegedAccess/group/assignmentScheduleInstances";
/// Graph's metadata base for `@odata.context`.
const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// The status an injected fault answered (request extension, for the request log).
pub(crate) struct Faulted(pub u16);

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1.0")
            .wrap(from_fn(gate))
            .route(INSTANCES_PATH, web::get().to(instances))
            .route("/users/{id}", web::get().to(user))
            .route("/groups/{id}", web::get().to(group))
            .service(
                web::resource("/subscriptions")
                    .get(list_subscriptions)
                    .post(create_subscription),
            )
            .service(
                web::resource("/subscriptions/{id}")
                    .get(get_subscription)
                    .patch(renew_subscription)
                    .delete(delete_subscription),
            )
            .default_service(web::to(unknown_segment)),
    );
}

/// Authentication first (a refused token consumes no fault), then injected faults.
async fn gate<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let Some(shared) = req.app_data::<web::Data<Shared>>().cloned() else {
        return Ok(req
            .error_response(GraphApiError::injected(500, None))
            .map_into_right_body());
    };
    if let Err(refused) = check_bearer(&shared, req.request()) {
        return Ok(req.error_response(refused).map_into_right_body());
    }
    let fault = shared.faults().take();
    if let Some((status, retry_after)) = fault {
        req.extensions_mut().insert(Faulted(status));
        return Ok(req
            .error_response(GraphApiError::injected(status, retry_after))
            .map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// A query parameter, percent-decoded (`+` and `%20` both read as a space).
fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.into_owned())
}

/// `GET …/assignmentScheduleInstances?$filter=…[&$skiptoken=…]`.
async fn instances(shared: web::Data<Shared>, req: HttpRequest) -> GraphResult {
    let filter_text = query_param(&req, "$filter").ok_or_else(|| {
        GraphApiError::bad_request(
            "This request requires $filter=groupId eq '<id>', optionally with 'and principalId eq '<id>''.",
        )
    })?;
    let filter = parse_instance_filter(&filter_text)
        .map_err(|e| GraphApiError::bad_request(format!("Invalid filter clause: {e}.")))?;
    let offset = match query_param(&req, "$skiptoken") {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| GraphApiError::bad_request("Invalid $skiptoken."))?,
    };
    let all = shared.directory().active_instances(
        &filter.group_id,
        filter.principal_id.as_deref(),
        OffsetDateTime::now_utc(),
    );
    if offset > all.len() {
        return Err(GraphApiError::bad_request("Invalid $skiptoken."));
    }
    let end = offset
        .saturating_add(shared.settings().page_size.max(1))
        .min(all.len());
    let next_link = (end < all.len()).then(|| {
        let connection = req.connection_info();
        format!(
            "{}://{}{}?$filter={}&$skiptoken={end}",
            connection.scheme(),
            connection.host(),
            req.path(),
            encode_query_value(&filter_text)
        )
    });
    Ok(HttpResponse::Ok().json(ODataPage {
        context: Some(format!(
            "{METADATA}#identityGovernance/privilegedAccess/group/assignmentScheduleInstances"
        )),
        value: all[offset..end].to_vec(),
        next_link,
    }))
}

/// Keeps the properties named in `$select` (all when absent); unknown names are a 400 as
/// in Graph.
fn select(
    resource: Value,
    select: Option<String>,
    type_name: &str,
) -> Result<Value, GraphApiError> {
    let Value::Object(all) = resource else {
        return Ok(resource);
    };
    let mut picked = match select {
        None => all.clone(),
        Some(list) => {
            let mut picked = Map::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let (key, value) = all
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        GraphApiError::bad_request(format!(
                            "Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'."
                        ))
                    })?;
                picked.insert(key.clone(), value.clone());
            }
            picked
        }
    };
    picked.insert(
        "@odata.context".to_owned(),
        json!(format!("{METADATA}#{type_name}s/$entity")),
    );
    Ok(Value::Object(picked))
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `GET /users/{id | userPrincipalName}[?$select=…]`.
async fn user(shared: web::Data<Shared>, id: web::Path<String>, req: HttpRequest) -> GraphResult {
    let found = shared.directory().user(&id).map(to_value);
    let found = found.ok_or_else(|| GraphApiError::resource_not_found(&id))?;
    Ok(HttpResponse::Ok().json(select(found, query_param(&req, "$select"), "user")?))
}

/// `GET /groups/{id}[?$select=…]`.
async fn group(shared: web::Data<Shared>, id: web::Path<String>, req: HttpRequest) -> GraphResult {
    let found = shared.directory().group(&id).map(to_value);
    let found = found.ok_or_else(|| GraphApiError::resource_not_found(&id))?;
    Ok(HttpResponse::Ok().json(select(found, query_param(&req, "$select"), "group")?))
}

fn invalid_request(message: impl Into<String>) -> GraphApiError {
    GraphApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

fn subscription_not_found(id: &str) -> GraphApiError {
    GraphApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The object was not found: subscription '{id}'."),
    )
}

/// The subscription as Graph shows it; `clientState` only in the answer to its creation.
fn subscription_json(s: &EmulatedSubscription, with_state: bool) -> Value {
    json!({
        "@odata.context": format!("{METADATA}#subscriptions/$entity"),
        "id": s.id,
        "resource": s.resource,
        "applicationId": s.application_id,
        "changeType": s.change_type,
        "clientState": with_state.then(|| s.client_state.expose().to_owned()).filter(|c| !c.is_empty()),
        "notificationUrl": s.notification_url,
        "lifecycleNotificationUrl": s.lifecycle_notification_url,
        "expirationDateTime": format_graph_time(s.expiration),
        "creatorId": s.application_id,
        "includeResourceData": false,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    })
}

/// Graph's limits on a subscription's expiry: in the future, at most 41,760 minutes ahead.
fn check_expiration(expiration: OffsetDateTime) -> Result<(), GraphApiError> {
    let now = OffsetDateTime::now_utc();
    if expiration <= now {
        return Err(invalid_request(
            "Subscription expiration must be in the future.",
        ));
    }
    // A minute of slack for the time the request took to get here.
    if expiration > now + MAX_SUBSCRIPTION_LIFETIME + Duration::from_secs(60) {
        return Err(invalid_request(
            "Subscription expiration can only be 41760 minutes in the future.",
        ));
    }
    Ok(())
}

/// The resources the emulator can notify about: groups and users.
fn supported_resource(resource: &str) -> bool {
    let normalised = normalise_resource(resource);
    let parts: Vec<&str> = normalised.split('/').collect();
    let id_ok = |id: &str| !id.is_empty();
    match parts.as_slice() {
        ["groups" | "users"] => true,
        ["groups" | "users", id] => id_ok(id),
        ["groups", id, "members"] => id_ok(id),
        _ => false,
    }
}

fn check_new_subscription(request: &NewSubscription) -> Result<(), GraphApiError> {
    let kinds: Vec<&str> = request.change_type.split(',').map(str::trim).collect();
    if let Some(bad) = kinds
        .iter()
        .find(|k| !["created", "updated", "deleted"].contains(&k.to_ascii_lowercase().as_str()))
    {
        return Err(invalid_request(format!(
            "'{bad}' is not a valid changeType."
        )));
    }
    if !supported_resource(&request.resource) {
        return Err(invalid_request(format!(
            "Resource '{}' is not supported by the emulator (groups and users only).",
            request.resource
        )));
    }
    let urls =
        std::iter::once(&request.notification_url).chain(&request.lifecycle_notification_url);
    for url in urls {
        let ok = Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(invalid_request(format!(
                "Invalid notification URL '{url}'."
            )));
        }
    }
    if request.client_state.expose().chars().count() > MAX_CLIENT_STATE_CHARS {
        return Err(invalid_request(format!(
            "clientState must be at most {MAX_CLIENT_STATE_CHARS} characters."
        )));
    }
    check_expiration(request.expiration)
}

fn conflict(existing: &EmulatedSubscription) -> GraphApiError {
    GraphApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Subscription Id {} already exists for the requested combination",
            existing.id
        ),
    )
}

/// `POST /subscriptions`: checks, the validation handshake(s), then 201.
async fn create_subscription(shared: web::Data<Shared>, body: web::Bytes) -> GraphResult {
    let request: NewSubscription = serde_json::from_slice(&body).map_err(|e| {
        invalid_request(format!(
            "The subscription in the request body is not valid: {e}."
        ))
    })?;
    check_new_subscription(&request)?;
    let now = OffsetDateTime::now_utc();
    if let Some(existing) =
        shared
            .directory()
            .duplicate_of(&request.change_type, &request.resource, now)
    {
        return Err(conflict(existing));
    }
    let settings = shared.settings();
    // Graph validates both URLs, even when they are the same.
    let urls =
        std::iter::once(&request.notification_url).chain(&request.lifecycle_notification_url);
    for url in urls {
        notify::validate(shared.outbound(), url, settings.validation_timeout)
            .await
            .map_err(|message| {
                GraphApiError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
            })?;
    }
    let subscription = EmulatedSubscription {
        id: uuid::Uuid::new_v4().to_string(),
        change_type: request.change_type,
        notification_url: request.notification_url,
        lifecycle_notification_url: request.lifecycle_notification_url,
        resource: request.resource,
        expiration: to_tick(request.expiration),
        client_state: request.client_state,
        application_id: settings.client_id,
    };
    let mut directory = shared.directory();
    // Another create for the same target may have finished during the handshake.
    if let Some(existing) =
        directory.duplicate_of(&subscription.change_type, &subscription.resource, now)
    {
        return Err(conflict(existing));
    }
    directory.insert_subscription(subscription.clone());
    Ok(HttpResponse::Created().json(subscription_json(&subscription, true)))
}

async fn list_subscriptions(shared: web::Data<Shared>) -> HttpResponse {
    let value: Vec<Value> = shared
        .directory()
        .subscriptions()
        .iter()
        .map(|s| subscription_json(s, false))
        .collect();
    HttpResponse::Ok().json(json!({
        "@odata.context": format!("{METADATA}#subscriptions"),
        "value": value,
    }))
}

async fn get_subscription(shared: web::Data<Shared>, id: web::Path<String>) -> GraphResult {
    let directory = shared.directory();
    let found = directory
        .subscription(&id)
        .ok_or_else(|| subscription_not_found(&id))?;
    Ok(HttpResponse::Ok().json(subscription_json(found, false)))
}

#[derive(Deserialize)]
struct Renewal {
    #[serde(rename = "expirationDateTime", with = "required_time")]
    expiration: OffsetDateTime,
}

/// `PATCH /subscriptions/{id}` with a new `expirationDateTime`.
async fn renew_subscription(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Bytes,
) -> GraphResult {
    let renewal: Renewal = serde_json::from_slice(&body).map_err(|e| {
        invalid_request(format!(
            "The request body needs an expirationDateTime: {e}."
        ))
    })?;
    check_expiration(renewal.expiration)?;
    let mut directory = shared.directory();
    let found = directory
        .subscription_mut(&id)
        .ok_or_else(|| subscription_not_found(&id))?;
    found.expiration = to_tick(renewal.expiration);
    Ok(HttpResponse::Ok().json(subscription_json(found, false)))
}

async fn delete_subscription(shared: web::Data<Shared>, id: web::Path<String>) -> GraphResult {
    if shared.directory().remove_subscription(&id) {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(subscription_not_found(&id))
    }
}

async fn unknown_segment(req: HttpRequest) -> GraphResult {
    let segment = req
        .path()
        .trim_start_matches("/v1.0")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    Err(GraphApiError::bad_request(format!(
        "Resource not found for the segment '{segment}'."
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_users_are_the_supported_resources() {
        for ok in [
            "/groups",
            "groups/g1",
            "/groups/g1/members",
            "/users",
            "/users/u1/",
            "/Groups/g1/Members",
        ] {
            assert!(supported_resource(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "/me/messages",
            "/groups/g1/owners",
            "/users/u1/members",
            "/groups//members",
        ] {
            assert!(!supported_resource(bad), "{bad}");
        }
    }

    #[test]
    fn select_keeps_the_named_properties_in_their_own_case() {
        let user = json!({"id": "u1", "displayName": "A", "mail": null});
        let picked = select(user.clone(), Some("ID, displayname".into()), "user").unwrap();
        assert_eq!(picked["id"], "u1");
        assert_eq!(picked["displayName"], "A");
        assert!(picked.get("mail").is_none());
        assert!(picked["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#users/$entity"));
        let err = select(user, Some("id,jobTitle".into()), "user").unwrap_err();
        assert!(err.message.contains("jobTitle"), "{err}");
    }
}
