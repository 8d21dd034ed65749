//! Our own JSON event (docs/webhooks.md): parsing and validation of a request body into domain events.
//!
//! Validation is done by hand rather than by serde so that every error names the field and, in a
//! batch, the element: `events[3].occurredAt: not an RFC 3339 timestamp`.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::validate;
use crate::domain::EventKind;

/// Most events accepted in one request.
pub const MAX_BATCH: usize = 1000;
/// Longest accepted identifier (event id, group id, principal id).
const MAX_ID_LEN: usize = 256;
/// Longest accepted attribute value in `user` / `group`.
const MAX_ATTRIBUTE_LEN: usize = 1024;

pub use crate::domain::NewEvent;

/// Why a body is not a valid event or batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be an event object or an array of events")]
    NotAnEventOrBatch,
    #[error("the batch is empty")]
    EmptyBatch,
    #[error("the batch holds {0} events; at most 1000 are accepted per request")]
    BatchTooLarge(usize),
    #[error("{field}: {reason}")]
    InvalidField {
        field: String,
        code: &'static str,
        reason: String,
    },
}

impl EventError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::NotAnEventOrBatch => "invalid_body",
            Self::EmptyBatch => "empty_batch",
            Self::BatchTooLarge(_) => "batch_too_large",
            Self::InvalidField { code, .. } => code,
        }
    }

    fn field(field: String, code: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            code,
            reason: reason.into(),
        }
    }
}

/// Parses a body holding one event or an array of up to [`MAX_BATCH`].
pub fn parse_body(body: &[u8]) -> Result<Vec<NewEvent>, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::MalformedJson(e.to_string()))?;
    match value {
        Value::Object(object) => Ok(vec![parse_event(&object, "")?]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(EventError::EmptyBatch);
            }
            if items.len() > MAX_BATCH {
                return Err(EventError::BatchTooLarge(items.len()));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let prefix = format!("[{i}].");
                    match item {
                        Value::Object(object) => parse_event(object, &prefix),
                        _ => Err(EventError::field(
                            format!("[{i}]"),
                            "invalid_field",
                            "must be an object",
                        )),
                    }
                })
                .collect()
        }
        _ => Err(EventError::NotAnEventOrBatch),
    }
}

fn parse_event(object: &Map<String, Value>, prefix: &str) -> Result<NewEvent, EventError> {
    let name = |field: &str| format!("{prefix}{field}");
    let id = required_string(object, "id", prefix, MAX_ID_LEN)?;
    let kind = match required_string(object, "type", prefix, MAX_ID_LEN)?.as_str() {
        "activation" => EventKind::Activation,
        "deactivation" => EventKind::Deactivation,
        other => {
            return Err(EventError::field(
                name("type"),
                "invalid_type",
                format!("`{other}` is not one of `activation`, `deactivation`"),
            ))
        }
    };
    let occurred_at = timestamp(
        "occurredAt",
        prefix,
        &required_string(object, "occurredAt", prefix, MAX_ID_LEN)?,
    )?;
    let group_id = required_string(object, "groupId", prefix, MAX_ID_LEN)?;
    let principal_id = required_string(object, "principalId", prefix, MAX_ID_LEN)?;
    let ends_at = match optional_string(object, "endsAt", prefix, MAX_ID_LEN)? {
        Some(text) => Some(timestamp("endsAt", prefix, &text)?),
        None => None,
    };
    if let Some(ends_at) = ends_at {
        if ends_at < occurred_at {
            return Err(EventError::field(
                name("endsAt"),
                "ends_before_occurred",
                "is before occurredAt",
            ));
        }
    }
    let grant_id = optional_string(object, "grantId", prefix, MAX_ID_LEN)?;
    let user = attributes(
        object,
        "user",
        prefix,
        &[
            "userName",
            "givenName",
            "familyName",
            "displayName",
            "email",
        ],
    )?;
    let group = attributes(object, "group", prefix, &["displayName"])?;
    Ok(NewEvent {
        id,
        kind,
        occurred_at,
        group_id,
        principal_id,
        ends_at,
        grant_id,
        user,
        group,
    })
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    prefix: &str,
    max_len: usize,
) -> Result<Option<String>, EventError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            if text.trim().is_empty() {
                return Err(EventError::field(
                    format!("{prefix}{field}"),
                    "empty_field",
                    "must not be empty",
                ));
            }
            if text.chars().count() > max_len {
                return Err(EventError::field(
                    format!("{prefix}{field}"),
                    "field_too_long",
                    format!("is longer than {max_len} characters"),
                ));
            }
            validate::text(&format!("{prefix}{field}"), text)?;
            Ok(Some(text.clone()))
        }
        Some(_) => Err(EventError::field(
            format!("{prefix}{field}"),
            "invalid_field",
            "must be a string",
        )),
    }
}

fn required_string(
    object: &Map<String, Value>,
    field: &str,
    prefix: &str,
    max_len: usize,
) -> Result<String, EventError> {
    optional_string(object, field, prefix, max_len)?.ok_or_else(|| {
        EventError::field(format!("{prefix}{field}"), "missing_field", "is required")
    })
}

/// An RFC 3339 timestamp in the documented range, in UTC. How far ahead of now an `occurredAt`
/// may be depends on the configuration: [`validate::events`] checks that before storing.
fn timestamp(field: &str, prefix: &str, text: &str) -> Result<OffsetDateTime, EventError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        EventError::field(
            format!("{prefix}{field}"),
            "invalid_timestamp",
            format!("`{text}` is not an RFC 3339 timestamp such as 2026-11-28T10:00:00Z"),
        )
    })?;
    validate::in_range(&format!("{prefix}{field}"), at)
}

/// An optional object of known string attributes; unknown attributes are dropped.
fn attributes(
    object: &Map<String, Value>,
    field: &str,
    prefix: &str,
    known: &[&str],
) -> Result<Option<Value>, EventError> {
    let inner = match object.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(inner)) => inner,
        Some(_) => {
            return Err(EventError::field(
                format!("{prefix}{field}"),
                "invalid_field",
                "must be an object",
            ))
        }
    };
    let nested = format!("{prefix}{field}.");
    let mut kept = Map::new();
    for key in known {
        if let Some(value) = optional_string(inner, key, &nested, MAX_ATTRIBUTE_LEN)? {
            kept.insert((*key).to_owned(), Value::String(value));
        }
    }
    Ok(Some(Value::Object(kept)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "id": "evt-1", "type": "activation", "occurredAt": "2026-11-28T10:00:00Z",
            "groupId": "g1", "principalId": "u1", "endsAt": "2026-11-28T18:00:00Z",
            "user": {"userName": "alice@contoso.com", "givenName": "Alice", "familyName": "Liddell",
                     "displayName": "Alice Liddell", "email": "alice@contoso.com", "extra": 1},
            "group": {"displayName": "AWS-Admins"}
        })
    }

    fn parse(value: &Value) -> Result<Vec<NewEvent>, EventError> {
        parse_body(value.to_string().as_bytes())
    }

    #[test]
    fn a_single_event_parses_with_its_attributes() {
        let events = parse(&valid()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventKind::Activation);
        assert_eq!(e.user.as_ref().unwrap()["givenName"], "Alice");
        assert!(e.user.as_ref().unwrap().get("extra").is_none());
        assert!(e.ends_at.unwrap() > e.occurred_at);
    }

    #[test]
    fn a_batch_parses_in_order() {
        let mut second = valid();
        second["id"] = json!("evt-2");
        second["type"] = json!("deactivation");
        let events = parse(&json!([valid(), second])).unwrap();
        assert_eq!(events[1].id, "evt-2");
        assert_eq!(events[1].kind, EventKind::Deactivation);
    }

    /// A case name, how to spoil a valid event, the expected code and the field named.
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Value)>,
        &'static str,
        &'static str,
    );

    #[test]
    fn each_invalid_field_is_named_with_its_code() {
        let cases: Vec<Case> = vec![
            (
                "missing id",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "missing_field",
                "id",
            ),
            (
                "empty group",
                Box::new(|v| v["groupId"] = json!("  ")),
                "empty_field",
                "groupId",
            ),
            (
                "unknown type",
                Box::new(|v| v["type"] = json!("promotion")),
                "invalid_type",
                "type",
            ),
            (
                "numeric principal",
                Box::new(|v| v["principalId"] = json!(5)),
                "invalid_field",
                "principalId",
            ),
            (
                "bad timestamp",
                Box::new(|v| v["occurredAt"] = json!("yesterday")),
                "invalid_timestamp",
                "occurredAt",
            ),
            (
                "end before start",
                Box::new(|v| v["endsAt"] = json!("2026-11-28T09:00:00Z")),
                "ends_before_occurred",
                "endsAt",
            ),
            (
                "user not object",
                Box::new(|v| v["user"] = json!("alice")),
                "invalid_field",
                "user",
            ),
            (
                "empty user attribute",
                Box::new(|v| v["user"]["givenName"] = json!("")),
                "empty_field",
                "user.givenName",
            ),
            (
                "id too long",
                Box::new(|v| v["id"] = json!("x".repeat(300))),
                "field_too_long",
                "id",
            ),
        ];
        for (case, mutate, code, field) in cases {
            let mut value = valid();
            mutate(&mut value);
            let error = parse(&value).unwrap_err();
            assert_eq!(error.code(), code, "{case}");
            assert!(error.to_string().starts_with(field), "{case}: {error}");
        }
    }

    #[test]
    fn errors_in_a_batch_name_the_element() {
        let mut bad = valid();
        bad["type"] = json!("nope");
        let error = parse(&json!([valid(), bad])).unwrap_err();
        assert!(error.to_string().starts_with("[1].type"), "{error}");
    }

    #[test]
    fn batch_size_limits_hold() {
        assert_eq!(parse(&json!([])).unwrap_err(), EventError::EmptyBatch);
        let many: Vec<Value> = (0..1001).map(|_| valid()).collect();
        assert_eq!(
            parse(&Value::Array(many)).unwrap_err(),
            EventError::BatchTooLarge(1001)
        );
        let most: Vec<Value> = (0..1000).map(|_| valid()).collect();
        assert_eq!(parse(&Value::Array(most)).unwrap().len(), 1000);
    }

    #[test]
    fn non_json_and_scalars_are_refused() {
        assert_eq!(parse_body(b"{nope").unwrap_err().code(), "malformed_json");
        assert_eq!(parse_body(b"42").unwrap_err().code(), "invalid_body");
    }
}
