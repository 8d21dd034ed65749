//! Microsoft Graph wire types that pimbridge reads and writes, shared by the client and the
//! Graph emulator so that both speak exactly the same JSON.
//!
//! Field names follow Graph's camelCase; the few Rust names that differ (`start`, `end`,
//! `expiration`) are renamed to the Graph property. Timestamps are read leniently: Graph
//! writes `2026-11-28T10:00:00Z`, sometimes seven fractional digits
//! (`2026-11-28T10:00:00.1234567Z`), and now and then no offset at all (taken as UTC). They
//! are written with at most seven fractional digits, the precision .NET keeps.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::secret::SecretString;

/// `accessId` of a membership (as opposed to `owner`), the only kind pimbridge provisions.
pub const ACCESS_MEMBER: &str = "member";
/// `assignmentType` of an instance that a PIM activation created (docs/webhooks.md).
pub const ASSIGNMENT_ACTIVATED: &str = "activated";
/// `assignmentType` of a standing (permanent or scheduled) assignment.
pub const ASSIGNMENT_ASSIGNED: &str = "assigned";

/// One active PIM-for-Groups assignment: a `privilegedAccessGroupAssignmentScheduleInstance`
/// (docs/webhooks.md). Graph lists only instances that are active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentInstance {
    /// Instance id (opaque).
    pub id: String,
    /// The PIM-governed group.
    pub group_id: String,
    /// The user (or group) holding the assignment.
    pub principal_id: String,
    /// `member` or `owner`; absent reads as empty (and is then not a member).
    #[serde(default)]
    pub access_id: String,
    /// `activated` (a just-in-time activation) or `assigned`; absent reads as empty.
    #[serde(default)]
    pub assignment_type: String,
    /// `direct` or `group` (membership through a group).
    #[serde(default)]
    pub member_type: Option<String>,
    /// `startDateTime`.
    #[serde(rename = "startDateTime", default, with = "optional_time")]
    pub start: Option<OffsetDateTime>,
    /// `endDateTime`; `None` for an assignment without end.
    #[serde(rename = "endDateTime", default, with = "optional_time")]
    pub end: Option<OffsetDateTime>,
}

impl AssignmentInstance {
    /// True for a just-in-time activation (as opposed to a standing assignment).
    pub fn is_activation(&self) -> bool {
        self.assignment_type
            .eq_ignore_ascii_case(ASSIGNMENT_ACTIVATED)
    }

    /// True for group membership (as opposed to ownership).
    pub fn is_member(&self) -> bool {
        self.access_id.eq_ignore_ascii_case(ACCESS_MEMBER)
    }
}

/// The user attributes pimbridge maps to a SCIM user (`/users/{id}` with `$select`).
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

/// The group attributes pimbridge needs (`/groups/{id}` with `$select`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphGroup {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The body of `POST /subscriptions` (docs/webhooks.md). Basic notifications only: user and group
/// resources support no rich notifications (docs/webhooks.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    /// Comma list of `created`, `updated`, `deleted`; groups notify `updated`.
    pub change_type: String,
    /// Where Graph POSTs notifications (HTTPS in Graph); validated by a handshake on create.
    pub notification_url: String,
    /// Where lifecycle notifications go; can only be set on create. Validated too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_notification_url: Option<String>,
    /// e.g. `/groups/{id}/members`, `/groups/{id}`, `/groups`.
    pub resource: String,
    /// `expirationDateTime`; at most 41,760 minutes ahead for groups and users.
    #[serde(rename = "expirationDateTime", with = "required_time")]
    pub expiration: OffsetDateTime,
    /// Echoed in every notification so the receiver can tell Graph from a forger (≤ 128
    /// characters). Graph calls it optional; pimbridge always sets one (docs/webhooks.md).
    #[serde(default, serialize_with = "expose_secret")]
    pub client_state: SecretString,
}

/// A subscription as Graph returns it (only what pimbridge keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub resource: String,
    /// `expirationDateTime`.
    #[serde(rename = "expirationDateTime", with = "required_time")]
    pub expiration: OffsetDateTime,
}

/// One page of an OData collection: `value` plus the link to the next page, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ODataPage<T> {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub context: Option<String>,
    pub value: Vec<T>,
    /// Absolute URL of the next page; absent on the last page.
    #[serde(
        rename = "@odata.nextLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
}

/// Graph's error envelope: `{"error": {"code", "message", "innerError": {…}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

/// The `error` member of [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// e.g. `Request_ResourceNotFound`, `InvalidAuthenticationToken`, `TooManyRequests`.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_error: Option<InnerError>,
}

/// What Graph support asks for: the request id and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerError {
    #[serde(
        rename = "request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    #[serde(
        rename = "client-request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// Parses a Graph timestamp: RFC 3339 with any number of fractional digits, or the same
/// without an offset (taken as UTC).
pub fn parse_graph_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339))
        .ok()
        .map(|at| at.to_offset(UtcOffset::UTC))
}

/// Formats a timestamp as Graph does: UTC, `Z`, whole seconds bare, else seven fractional
/// digits (100 ns, .NET's tick).
pub fn format_graph_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let formatted = if at.nanosecond() / 100 == 0 {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
    } else {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
    };
    // Formatting a UTC date with this description cannot fail; stay total anyway.
    formatted.unwrap_or_default()
}

fn invalid_time<E: serde::de::Error>(text: &str) -> E {
    E::custom(format!("not a Graph timestamp: {text:?}"))
}

/// Serde adapter for required timestamps.
pub(crate) mod required_time {
    use super::*;

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_graph_time(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        parse_graph_time(&text).ok_or_else(|| invalid_time(&text))
    }
}

/// Serde adapter for optional timestamps (`null` and absent are `None`). A present but
/// unreadable value is an error, never `None`: an end time must not silently vanish.
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
                .ok_or_else(|| invalid_time(&text)),
        }
    }
}

pub(crate) fn expose_secret<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn graph_timestamps_parse_with_zero_three_or_seven_fractional_digits_and_without_offset() {
        let cases = [
            ("2026-11-28T10:00:00Z", datetime!(2026-11-28 10:00:00 UTC)),
            (
                "2026-11-28T10:00:00.123Z",
                datetime!(2026-11-28 10:00:00.123 UTC),
            ),
            (
                "2026-11-28T10:00:00.1234567Z",
                datetime!(2026-11-28 10:00:00.1234567 UTC),
            ),
            (
                "2026-11-28T12:00:00+02:00",
                datetime!(2026-11-28 10:00:00 UTC),
            ),
            (
                "2026-11-28T10:00:00.5",
                datetime!(2026-11-28 10:00:00.5 UTC),
            ),
            (" 2026-11-28T10:00:00 ", datetime!(2026-11-28 10:00:00 UTC)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_graph_time(text), Some(expected), "{text}");
        }
        for text in ["", "yesterday", "2026-11-28", "2026-13-01T00:00:00Z"] {
            assert_eq!(parse_graph_time(text), None, "{text}");
        }
    }

    #[test]
    fn graph_timestamps_format_whole_seconds_bare_and_fractions_with_seven_digits() {
        assert_eq!(
            format_graph_time(datetime!(2026-11-28 10:00:00 UTC)),
            "2026-11-28T10:00:00Z"
        );
        assert_eq!(
            format_graph_time(datetime!(2026-11-28 12:00:00.25 +02:00)),
            "2026-11-28T10:00:00.2500000Z"
        );
        // Below .NET's 100 ns tick there is nothing Graph would keep.
        assert_eq!(
            format_graph_time(datetime!(2026-11-28 10:00:00.000000050 UTC)),
            "2026-11-28T10:00:00Z"
        );
    }

    #[test]
    fn an_assignment_instance_reads_the_documented_shape() {
        let wire = json!({
            "id": "b2a1",
            "accessId": "member",
            "principalId": "u1",
            "groupId": "g1",
            "startDateTime": "2026-11-28T10:00:00Z",
            "endDateTime": "2026-11-28T18:00:00.0000000Z",
            "assignmentScheduleId": "g1_member_r1",
            "assignmentType": "activated",
            "memberType": "direct"
        });
        let instance: AssignmentInstance = serde_json::from_value(wire).unwrap();
        assert!(instance.is_activation() && instance.is_member());
        assert_eq!(instance.end, Some(datetime!(2026-11-28 18:00:00 UTC)));
        assert_eq!(instance.member_type.as_deref(), Some("direct"));
        let back = serde_json::to_value(&instance).unwrap();
        assert_eq!(back["endDateTime"], json!("2026-11-28T18:00:00Z"));
        assert_eq!(back["groupId"], json!("g1"));
    }

    #[test]
    fn an_unreadable_end_time_is_an_error_not_a_missing_end() {
        let wire = json!({
            "id": "x", "groupId": "g", "principalId": "u",
            "accessId": "member", "assignmentType": "activated",
            "endDateTime": "tomorrow"
        });
        let err = serde_json::from_value::<AssignmentInstance>(wire).unwrap_err();
        assert!(err.to_string().contains("tomorrow"), "{err}");
        let null_end = json!({"id": "x", "groupId": "g", "principalId": "u", "endDateTime": null});
        let instance: AssignmentInstance = serde_json::from_value(null_end).unwrap();
        assert_eq!(instance.end, None);
        assert!(
            !instance.is_member(),
            "a missing accessId is not a membership"
        );
    }

    #[test]
    fn a_new_subscription_serialises_the_client_state_but_debug_hides_it() {
        let request = NewSubscription {
            change_type: "updated".into(),
            notification_url: "https://pimbridge.example/webhooks/graph".into(),
            lifecycle_notification_url: None,
            resource: "/groups/g1/members".into(),
            expiration: datetime!(2026-12-01 00:00:00 UTC),
            client_state: SecretString::new("state-secret"),
        };
        let wire = serde_json::to_value(&request).unwrap();
        assert_eq!(
            wire,
            json!({
                "changeType": "updated",
                "notificationUrl": "https://pimbridge.example/webhooks/graph",
                "resource": "/groups/g1/members",
                "expirationDateTime": "2026-12-01T00:00:00Z",
                "clientState": "state-secret"
            })
        );
        assert!(!format!("{request:?}").contains("state-secret"));
    }

    #[test]
    fn pages_and_error_envelopes_read_graph_json() {
        let page: ODataPage<GraphGroup> = serde_json::from_value(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
            "value": [{"id": "g1", "displayName": "AWS-Admins"}],
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/groups?$skiptoken=X"
        }))
        .unwrap();
        assert_eq!(page.value[0].display_name.as_deref(), Some("AWS-Admins"));
        assert!(page.next_link.is_some());
        let envelope: ErrorEnvelope = serde_json::from_value(json!({
            "error": {
                "code": "Request_ResourceNotFound",
                "message": "Resource 'x' does not exist.",
                "innerError": {"date": "2026-11-28T10:00:00", "request-id": "r1"}
            }
        }))
        .unwrap();
        assert_eq!(envelope.error.code, "Request_ResourceNotFound");
        assert_eq!(
            envelope
                .error
                .inner_error
                .and_then(|i| i.request_id)
                .as_deref(),
            Some("r1")
        );
    }
}
