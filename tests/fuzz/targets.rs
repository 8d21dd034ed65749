//! The fuzz targets: every parser of outside input, each with the property it must keep besides
//! not panicking. A target returns `Err` when the property fails; a panic is a crash.

use actix_web::web::BytesMut;
use pimbridge::config::Settings;
use pimbridge::graph::token::{TokenErrorBody, TokenResponse};
use pimbridge::graph::types::{
    AssignmentInstance, ErrorEnvelope, GraphGroup, GraphUser, ODataPage, Subscription,
};
use pimbridge::intake::event::{parse_body, NewEvent};
use pimbridge::intake::eventgrid::{parse_delivery, Delivery, Schema};
use pimbridge::intake::validate::{self, Bounds};
use pimbridge::intake::{audit, event};
use pimbridge::scim::types::{ListResponse, ScimErrorBody, ServiceProviderConfig};
use pimbridge::scim::{ScimGroup, ScimUser};
use pimbridge::secret::SecretString;
use serde_json::Value;
use time::UtcOffset;
use tokio_postgres::types::{ToSql, Type};

/// The `clientState` the Graph notification seeds carry.
pub const CLIENT_STATE: &str = "fuzz-client-state-0123456789";

pub type Target = fn(&[u8]) -> Result<(), String>;

/// Every target, by the name of its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("event", our_event),
    ("audit", audit_records),
    ("eventgrid", event_grid),
    ("graph_notification", graph_notification),
    ("scim_response", scim_response),
    ("graph_response", graph_response),
    ("config", configuration),
];

/// What a route does with parsed events before storing them, then what storing needs: no NUL,
/// UTC timestamps that Postgres' conversion takes (it panicked on some before `validate`).
fn storable(events: &[NewEvent]) -> Result<(), String> {
    let Ok(events) = validate::events(events, &Bounds::default()) else {
        return Ok(());
    };
    for e in &events {
        for text in [&e.id, &e.group_id, &e.principal_id] {
            if text.contains('\0') {
                return Err(format!("a NUL passed validation in event {:?}", e.id));
            }
        }
        for json in [&e.user, &e.group].into_iter().flatten() {
            if json.to_string().contains("\\u0000") {
                return Err(format!(
                    "a NUL passed validation in the attributes of {:?}",
                    e.id
                ));
            }
        }
        for at in std::iter::once(e.occurred_at).chain(e.ends_at) {
            if at.offset() != UtcOffset::UTC {
                return Err(format!("{at} is not in UTC after validation"));
            }
            let mut buffer = BytesMut::new();
            at.to_sql(&Type::TIMESTAMPTZ, &mut buffer)
                .map_err(|e| format!("{at} cannot be sent to Postgres: {e}"))?;
        }
    }
    Ok(())
}

fn our_event(data: &[u8]) -> Result<(), String> {
    match parse_body(data) {
        Ok(events) => {
            if events.is_empty() || events.len() > event::MAX_BATCH {
                return Err(format!("{} events accepted", events.len()));
            }
            storable(&events)
        }
        Err(e) => {
            // Every refusal has a code and a message that names something.
            if e.code().is_empty() || e.to_string().is_empty() {
                return Err(format!("an error without code or message: {e:?}"));
            }
            Ok(())
        }
    }
}

fn audit_records(data: &[u8]) -> Result<(), String> {
    match audit::parse_records(data) {
        Ok(batch) => storable(&batch.events),
        Err(_) => Ok(()),
    }
}

fn event_grid(data: &[u8]) -> Result<(), String> {
    for schema in [
        Schema::EventGrid,
        Schema::CloudEvent,
        Schema::CloudEventBatch,
    ] {
        for announced in [false, true] {
            if let Ok(Delivery::Events(batch)) = parse_delivery(data, schema, announced) {
                storable(&batch.events)?;
                let secret = SecretString::new(CLIENT_STATE);
                let _ = pimbridge::intake::graph::verify(&secret, &batch.graph_notifications_data);
            }
        }
    }
    Ok(())
}

fn graph_notification(data: &[u8]) -> Result<(), String> {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return Ok(());
    };
    let Some(notifications) = value.get("value").and_then(Value::as_array) else {
        return Ok(());
    };
    let secret = SecretString::new(CLIENT_STATE);
    let accepted = pimbridge::intake::graph::verify(&secret, notifications).is_ok();
    let all_carry_the_secret = notifications
        .iter()
        .all(|n| n.get("clientState").and_then(Value::as_str) == Some(CLIENT_STATE));
    if accepted != all_carry_the_secret {
        return Err(format!(
            "accepted = {accepted} although every clientState matching = {all_carry_the_secret}"
        ));
    }
    Ok(())
}

fn scim_response(data: &[u8]) -> Result<(), String> {
    let _ = serde_json::from_slice::<ScimUser>(data);
    let _ = serde_json::from_slice::<ScimGroup>(data);
    let _ = serde_json::from_slice::<ListResponse<ScimUser>>(data);
    let _ = serde_json::from_slice::<ListResponse<ScimGroup>>(data);
    let _ = serde_json::from_slice::<ScimErrorBody>(data);
    let _ = serde_json::from_slice::<ServiceProviderConfig>(data);
    Ok(())
}

fn graph_response(data: &[u8]) -> Result<(), String> {
    let _ = serde_json::from_slice::<ODataPage<AssignmentInstance>>(data);
    let _ = serde_json::from_slice::<ODataPage<Subscription>>(data);
    let _ = serde_json::from_slice::<GraphUser>(data);
    let _ = serde_json::from_slice::<GraphGroup>(data);
    let _ = serde_json::from_slice::<ErrorEnvelope>(data);
    let _ = serde_json::from_slice::<TokenErrorBody>(data);
    if let Ok(token) = serde_json::from_slice::<TokenResponse>(data) {
        if format!("{token:?}").contains(token.access_token.expose())
            && !token.access_token.is_empty()
        {
            return Err("a token's Debug shows the access token".into());
        }
    }
    Ok(())
}

fn configuration(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    // `*_file` keys read files: keep the fuzzer away from the machine's files.
    if text.contains("file") {
        return Ok(());
    }
    if let Ok(settings) = Settings::from_toml_str(text) {
        // What passed validation must be usable: the listen address parses.
        settings
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| "an unusable listen address passed validation".to_owned())?;
    }
    Ok(())
}
