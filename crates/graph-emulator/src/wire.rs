//! The Microsoft Graph and identity-platform JSON the emulator reads and writes, written from
//! Graph's documented wire format and independent of any client, so that a client that
//! misnames a property fails against the emulator instead of agreeing with it.
//!
//! Graph spells properties in camelCase (`groupId`, `startDateTime`, `@odata.nextLink`);
//! the token endpoint uses OAuth's snake_case (`access_token`, `expires_in`). Timestamps go
//! out in UTC with a `Z`, bare whole seconds or seven fractional digits (a .NET tick), and
//! are read leniently (any number of fractional digits, a missing offset taken as UTC).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::secret::{serialize_exposed, SecretString};

/// `accessId` of a membership instance (the other value is `owner`).
pub const ACCESS_MEMBER: &str = "member";
/// `accessId` of an ownership instance.
pub const ACCESS_OWNER: &str = "owner";
/// `assignmentType` of an instance a PIM activation created.
pub const ASSIGNMENT_ACTIVATED: &str = "activated";
/// `assignmentType` of a standing assignment.
pub const ASSIGNMENT_ASSIGNED: &str = "assigned";
/// The OAuth grant the token endpoint accepts: an app acting as itself.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// Graph's limit on a subscription's `clientState`.
pub const MAX_CLIENT_STATE_CHARS: usize = 128;

/// A `privilegedAccessGroupAssignmentScheduleInstance`: one assignment active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentInstance {
    pub id: String,
    pub group_id: String,
    pub principal_id: String,
    /// `member` or `owner`.
    pub access_id: String,
    /// `activated` or `assigned`.
    pub assignment_type: String,
    /// `direct` or `group`.
    #[serde(default)]
    pub member_type: Option<String>,
    #[serde(rename = "startDateTime", default, with = "optional_time")]
    pub start: Option<OffsetDateTime>,
    /// `null` for an assignment without end.
    #[serde(rename = "endDateTime", default, with = "optional_time")]
    pub end: Option<OffsetDateTime>,
}

impl AssignmentInstance {
    /// True for a just-in-time activation.
    pub fn is_activation(&self) -> bool {
        self.assignment_type
            .eq_ignore_ascii_case(ASSIGNMENT_ACTIVATED)
    }
}

/// A `user` with the properties the emulator keeps (absent ones are `null` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: String,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
}

/// A `group` with the properties the emulator keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphGroup {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The body of `POST /subscriptions`. `clientState` is optional in Graph; the rest is
/// required.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    pub change_type: String,
    pub notification_url: String,
    #[serde(default)]
    pub lifecycle_notification_url: Option<String>,
    pub resource: String,
    #[serde(rename = "expirationDateTime", with = "required_time")]
    pub expiration: OffsetDateTime,
    #[serde(default)]
    pub client_state: SecretString,
}

/// One page of an OData collection.
#[derive(Debug, Clone, Serialize)]
pub struct ODataPage<T> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub value: Vec<T>,
    /// Absolute URL of the next page; left out on the last page.
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_error: Option<InnerError>,
}

/// `innerError`: the ids and time Graph support asks for (hyphenated names, as Graph sends).
#[derive(Debug, Clone, Serialize)]
pub struct InnerError {
    #[serde(rename = "request-id", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(rename = "client-request-id", skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// A v2.0 token endpoint success (`expires_in` as a number of seconds).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub token_type: String,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext_expires_in: Option<u64>,
    #[serde(serialize_with = "serialize_exposed")]
    pub access_token: SecretString,
}

/// A token endpoint refusal: RFC 6749's `error` and `error_description` plus the
/// identity platform's own fields.
#[derive(Debug, Clone, Serialize)]
pub struct TokenErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    pub error_codes: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

/// Reads a Graph timestamp: RFC 3339 with any fractional digits, or the same without an
/// offset (UTC).
pub fn parse_graph_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
        .ok()
        .map(|at| at.to_offset(UtcOffset::UTC))
}

/// Writes a timestamp as Graph does: UTC with `Z`; whole seconds bare, otherwise seven
/// fractional digits.
pub fn format_graph_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let written = if at.nanosecond() / 100 == 0 {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
    } else {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
    };
    // A UTC date always fits this description.
    written.unwrap_or_default()
}

/// An OData string literal: in single quotes, inner quotes doubled.
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A query value percent-encoded with `%20` for spaces, as Graph writes its own links.
pub fn encode_query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn unreadable_time<E: serde::de::Error>(text: &str) -> E {
    E::custom(format!("not a Graph timestamp: {text:?}"))
}

/// Serde adapter for reading a required timestamp (the emulator writes them with
/// [`format_graph_time`]).
pub(crate) mod required_time {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        parse_graph_time(&text).ok_or_else(|| unreadable_time(&text))
    }
}

/// Serde adapter for an optional timestamp: `null` or absent is `None`, an unreadable value
/// an error.
pub(crate) mod optional_time {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&format_graph_time(*at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_graph_time(&text)
                .map(Some)
                .ok_or_else(|| unreadable_time(&text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn an_instance_goes_out_with_graphs_property_names() {
        let instance = AssignmentInstance {
            id: "i1".into(),
            group_id: "g1".into(),
            principal_id: "u1".into(),
            access_id: ACCESS_MEMBER.into(),
            assignment_type: ASSIGNMENT_ACTIVATED.into(),
            member_type: Some("direct".into()),
            start: Some(datetime!(2026-11-28 10:00 UTC)),
            end: None,
        };
        assert_eq!(
            serde_json::to_value(&instance).unwrap(),
            json!({
                "id": "i1", "groupId": "g1", "principalId": "u1", "accessId": "member",
                "assignmentType": "activated", "memberType": "direct",
                "startDateTime": "2026-11-28T10:00:00Z", "endDateTime": null
            })
        );
    }

    #[test]
    fn timestamps_are_written_as_graph_writes_them_and_read_leniently() {
        assert_eq!(
            format_graph_time(datetime!(2026-11-28 12:00:00.25 +02:00)),
            "2026-11-28T10:00:00.2500000Z"
        );
        assert_eq!(
            parse_graph_time("2026-11-28T10:00:00.5"),
            Some(datetime!(2026-11-28 10:00:00.5 UTC))
        );
        assert_eq!(parse_graph_time("tomorrow"), None);
    }

    #[test]
    fn a_subscription_request_needs_its_required_properties() {
        let full = json!({
            "changeType": "updated", "notificationUrl": "https://x/hook",
            "resource": "/groups/g1", "expirationDateTime": "2026-12-01T00:00:00Z",
            "clientState": "s"
        });
        let request: NewSubscription = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(request.client_state.expose(), "s");
        let mut misnamed = full;
        let object = misnamed.as_object_mut().unwrap();
        let expiration = object.remove("expirationDateTime").unwrap();
        object.insert("expiration".into(), expiration);
        assert!(serde_json::from_value::<NewSubscription>(misnamed).is_err());
    }
}
