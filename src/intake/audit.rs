//! Entra audit-log records as Azure Monitor exports them (`POST /webhooks/audit`, docs/webhooks.md).
//!
//! Diagnostic settings stream the `AuditLogs` category to an Event Hub, and a forwarder posts the
//! Event Hub message as is: `{"records": [...]}`, each record an Azure Monitor envelope (`time`,
//! `category`, `operationName`, …) whose `properties` is the directoryAudit object. Few records
//! matter here: successful PIM-for-Groups activations and deactivations (category
//! `GroupManagement`). Every other record is skipped and reported as ignored. A record that claims
//! to be one of ours must be complete (id, timestamp, user and group targets), or the whole request
//! is refused with an error naming the record and the field, as `/v1/events` does.
//! [`parse_embedded`] reads the same records when they arrive inside another message (an Event
//! Grid event's `data`, `POST /webhooks/eventgrid`), also as a single directoryAudit object.
//!
//! Much of the record format is not confirmed by Microsoft's documentation (docs/webhooks.md), so parsing is defensive:
//! - targets and details are found by their `type` / `key`, never by position; a target without
//!   `type` by its `@odata.type` (`#microsoft.graph.targetResourceUser`), as older directoryAudit
//!   examples write them;
//! - `result` is the string `success` in any case, or the number 0, as the Azure Monitor export
//!   writes the enum; `failure`, `timeout` (1, 2) and `unknownFutureValue` (3) are failures;
//! - a record that names a PIM-for-Groups activity but cannot be read as one (no category, a
//!   result of another shape) is never dropped in silence: it is counted as `unusable` and logged
//!   at warning with its id;
//! - a PIM change of a group's *owners* (the Role target is `Owner`, or a role property says
//!   `owner`) is not a membership: counted as `ignored_owner`;
//! - member names match without regard to case, since exports mix `properties` and `Properties`;
//! - activity names match without regard to case or spacing, in both "role" and "group" wordings;
//! - `loggedByService` is not checked ("PIM" and "Privileged Identity Management" are both seen);
//! - the end time is read from whichever of several keys is present. One that cannot be read is
//!   left out with a warning rather than refusing the request: its format is undocumented, an
//!   activation without an end is still valid, and the expiry arrives as a record of its own.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::counting::{self, Outcome};
use super::event::{EventError, NewEvent, MAX_BATCH};
use super::validate;
use crate::domain::{EventKind, EventSource};
use crate::metrics::Metrics;

/// Longest accepted identifier (audit record id, group id, user id).
const MAX_ID_LEN: usize = 256;
/// Longest accepted user or group attribute.
const MAX_ATTRIBUTE_LEN: usize = 1024;
/// Longest excerpt of an unreadable value quoted in a warning.
const MAX_QUOTED_LEN: usize = 64;

/// The Azure Monitor category of Entra audit logs (the envelope's `category`).
const AUDIT_LOGS: &str = "AuditLogs";
/// The directoryAudit category of PIM for Groups (Entra roles use `RoleManagement`).
const GROUP_MANAGEMENT: &str = "GroupManagement";
/// The directoryAudit `result` of a change that happened, as a string and as the enum's number.
const SUCCESS: &str = "success";
const SUCCESS_NUMBER: u64 = 0;
/// The other documented results (`failure`, `timeout`, `unknownFutureValue`) and their numbers.
const FAILURES: &[&str] = &["failure", "timeout", "unknownfuturevalue"];
const FAILURE_NUMBERS: &[u64] = &[1, 2, 3];
/// The PIM-for-Groups role that grants ownership rather than membership.
const OWNER: &str = "owner";
/// Keys (of `additionalDetails` and of `modifiedProperties`) that name the PIM role, compared as
/// [`END_KEYS`] are.
const ROLE_KEYS: &[&str] = &[
    "roledefinitionoriginid",
    "roledisplayname",
    "roledefinitiondisplayname",
];

/// Activities that make a membership active: self-activation and an administrator's active
/// assignment (docs/architecture.md). Microsoft's list says "role" even for groups (the role being Member
/// or Owner); third-party code also sees "group".
const ACTIVATIONS: &[&str] = &[
    "Add member to role completed (PIM activation)",
    "Add member to group completed (PIM activation)",
    "Add member to role in PIM completed (timebound)",
    "Add member to role in PIM completed (permanent)",
];
/// Activities that end a membership: self-deactivation, expiry and an administrator's removal
/// (the removal wording mirrors the documented assignment wording; UNCONFIRMED, so both forms).
const DEACTIVATIONS: &[&str] = &[
    "Remove member from role completed (PIM deactivate)",
    "Remove member from group completed (PIM deactivate)",
    "Remove member from role (PIM activation expired)",
    "Remove member from group (PIM activation expired)",
    "Remove member from role in PIM completed (timebound)",
    "Remove member from role in PIM completed (permanent)",
];
/// `additionalDetails` keys that may carry an activation's end, compared lower-case with only
/// letters and digits kept (so `ExpirationTime`, `expiration_time` and `Expiration Time` match).
const END_KEYS: &[&str] = &[
    "expirationtime",
    "expirationdatetime",
    "endtime",
    "enddatetime",
];

/// A request body, sorted: the events to store and the records skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditBatch {
    /// PIM-for-Groups activations and deactivations, in record order.
    pub events: Vec<NewEvent>,
    /// Every other record, in record order.
    pub ignored: Vec<IgnoredRecord>,
    /// Parts of accepted records that were left out, each naming the record and field.
    pub warnings: Vec<String>,
}

/// A record that is not a PIM-for-Groups activation or deactivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredRecord {
    /// Position in `records` (0 for a directoryAudit that came alone, see [`parse_embedded`]).
    pub index: usize,
    /// The directoryAudit `id`, when the record has one, for logs.
    pub record_id: Option<String>,
    /// The activity class, when the record names a PIM activation or deactivation.
    pub kind: Option<EventKind>,
    pub reason: IgnoreReason,
}

impl IgnoredRecord {
    /// The `type` label of the metric that counts it.
    pub fn type_label(&self) -> &'static str {
        self.kind.map_or(counting::UNKNOWN, EventKind::as_str)
    }

    /// Counts the record under `source` and logs it: at warning when it is unusable, since then
    /// a PIM change may have been missed. `context` names where it came from (`records[3]`).
    pub fn report(&self, metrics: &Metrics, source: EventSource, context: &str) {
        let outcome = self.reason.outcome();
        let id = self.record_id.as_deref().unwrap_or("");
        if outcome == Outcome::Unusable {
            tracing::warn!(record = %context, record.id = %quote(id),
                event.type = self.type_label(), reason = self.reason.as_str(),
                "a record that looks like PIM for Groups cannot be read as an event; skipped");
        } else {
            tracing::debug!(record = %context, record.id = %quote(id),
                event.type = self.type_label(), reason = self.reason.as_str(),
                "audit record ignored");
        }
        counting::count(metrics, source, self.type_label(), outcome, 1);
    }
}

/// Why a record is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Another log category (e.g. `SignInLogs`), or no `properties` object.
    NotAnAuditRecord,
    /// An activity other than a PIM activation or deactivation.
    OtherActivity,
    /// A PIM activity outside `GroupManagement` (Entra roles, Azure resources).
    OtherCategory,
    /// A PIM activity whose result is a documented failure (`failure`, `timeout`, …).
    Unsuccessful,
    /// A PIM-for-Groups change of the group's owners, not its members.
    Owner,
    /// A PIM activity whose `result` is missing or of a shape we do not know.
    UnreadableResult,
    /// A PIM activity without a `category`, so it cannot be told from an Entra role's.
    MissingCategory,
}

impl IgnoreReason {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnAuditRecord => "not_an_audit_record",
            Self::OtherActivity => "other_activity",
            Self::OtherCategory => "other_category",
            Self::Unsuccessful => "unsuccessful",
            Self::Owner => "owner",
            Self::UnreadableResult => "unreadable_result",
            Self::MissingCategory => "missing_category",
        }
    }

    /// The `outcome` label it is counted under.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::NotAnAuditRecord
            | Self::OtherActivity
            | Self::OtherCategory
            | Self::Unsuccessful => Outcome::Ignored,
            Self::Owner => Outcome::IgnoredOwner,
            Self::UnreadableResult | Self::MissingCategory => Outcome::Unusable,
        }
    }
}

/// Parses an Azure Monitor export body holding at most [`MAX_BATCH`] records.
pub fn parse_records(body: &[u8]) -> Result<AuditBatch, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::MalformedJson(e.to_string()))?;
    let records = value
        .as_object()
        .and_then(|object| member(object, "records"))
        .and_then(|(_, records)| records.as_array())
        .ok_or_else(|| {
            refuse(
                "records".to_owned(),
                "invalid_body",
                "the body must be an object with a `records` array, as Azure Monitor exports logs",
            )
        })?;
    parse_record_list(records, "records")
}

/// Parses audit records that arrive inside another message (an Event Grid event's `data`), and
/// says `None` when `value` holds none. Two forms are recognised: an Azure Monitor export
/// (`{"records": [...]}`, as on `/webhooks/audit`) and a single directoryAudit object as Microsoft
/// Graph returns it (recognised by `activityDisplayName` and `targetResources`). `path` names
/// `value` in errors and warnings, e.g. `[2].data`.
pub fn parse_embedded(value: &Value, path: &str) -> Option<Result<AuditBatch, EventError>> {
    let object = value.as_object()?;
    if let Some((key, records)) = member(object, "records") {
        let records_path = format!("{path}.{key}");
        return Some(match records.as_array() {
            Some(records) => parse_record_list(records, &records_path),
            None => Err(refuse(
                records_path,
                "invalid_field",
                "must be an array of Azure Monitor log records",
            )),
        });
    }
    if member(object, "activityDisplayName").is_none()
        || member(object, "targetResources").is_none()
    {
        return None;
    }
    let mut batch = AuditBatch::default();
    let claimed = claim_audit(object, None, path.to_owned());
    Some(batch.add(0, audit_id(object), claimed).map(|()| batch))
}

/// Parses the records of an export, at most [`MAX_BATCH`]; `records_path` names the array.
fn parse_record_list(records: &[Value], records_path: &str) -> Result<AuditBatch, EventError> {
    if records.len() > MAX_BATCH {
        return Err(EventError::BatchTooLarge(records.len()));
    }
    let mut batch = AuditBatch::default();
    for (index, record) in records.iter().enumerate() {
        let path = format!("{records_path}[{index}]");
        let Some(record) = record.as_object() else {
            return Err(refuse(path, "invalid_field", "must be an object"));
        };
        let record_id = member(record, "properties")
            .and_then(|(_, properties)| properties.as_object())
            .and_then(audit_id);
        batch.add(index, record_id, claim(record, path))?;
    }
    Ok(batch)
}

impl AuditBatch {
    /// Adds record `index`: its event when it is one of ours, else the reason it is skipped.
    fn add(
        &mut self,
        index: usize,
        record_id: Option<String>,
        claimed: Result<Claim<'_>, (Option<EventKind>, IgnoreReason)>,
    ) -> Result<(), EventError> {
        match claimed {
            Ok(claim) => self.events.push(claim.into_event(&mut self.warnings)?),
            Err((kind, reason)) => self.ignored.push(IgnoredRecord {
                index,
                record_id,
                kind,
                reason,
            }),
        }
        Ok(())
    }
}

/// A record that names a successful PIM-for-Groups activation or deactivation.
struct Claim<'a> {
    kind: EventKind,
    properties: &'a Map<String, Value>,
    /// How to name `properties` in errors, e.g. `records[2].Properties`.
    path: String,
}

/// Decides whether an export record is one of ours, or why not.
fn claim(
    record: &Map<String, Value>,
    path: String,
) -> Result<Claim<'_>, (Option<EventKind>, IgnoreReason)> {
    if text(record, "category").is_some_and(|c| !c.eq_ignore_ascii_case(AUDIT_LOGS)) {
        return Err((None, IgnoreReason::NotAnAuditRecord));
    }
    let Some((key, Value::Object(properties))) = member(record, "properties") else {
        return Err((None, IgnoreReason::NotAnAuditRecord));
    };
    claim_audit(
        properties,
        text(record, "operationName"),
        format!("{path}.{key}"),
    )
}

/// Decides whether a directoryAudit object (`properties`, named `path` in errors) is one of ours,
/// or why not. `operation_name` stands in for a missing `activityDisplayName`.
fn claim_audit<'a>(
    properties: &'a Map<String, Value>,
    operation_name: Option<&str>,
    path: String,
) -> Result<Claim<'a>, (Option<EventKind>, IgnoreReason)> {
    let kind = text(properties, "activityDisplayName")
        .or(operation_name)
        .and_then(activity_kind)
        .ok_or((None, IgnoreReason::OtherActivity))?;
    let unless = |holds: bool, reason| {
        if holds {
            Ok(())
        } else {
            Err((Some(kind), reason))
        }
    };
    let category = text(properties, "category");
    unless(category.is_some(), IgnoreReason::MissingCategory)?;
    unless(
        category.is_some_and(|c| c.eq_ignore_ascii_case(GROUP_MANAGEMENT)),
        IgnoreReason::OtherCategory,
    )?;
    match result_of(properties) {
        Some(true) => {}
        Some(false) => return Err((Some(kind), IgnoreReason::Unsuccessful)),
        None => return Err((Some(kind), IgnoreReason::UnreadableResult)),
    }
    unless(!is_owner_change(properties), IgnoreReason::Owner)?;
    Ok(Claim {
        kind,
        properties,
        path,
    })
}

/// Whether `result` says the change happened (`Some(true)`), failed (`Some(false)`), or cannot be
/// read (`None`). Graph and Log Analytics write the enum as a string, the Azure Monitor export as
/// its number.
fn result_of(properties: &Map<String, Value>) -> Option<bool> {
    match member(properties, "result")?.1 {
        Value::String(result) => {
            let result = result.trim();
            if result.eq_ignore_ascii_case(SUCCESS) {
                Some(true)
            } else {
                FAILURES
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(result))
                    .then_some(false)
            }
        }
        Value::Number(number) => match number.as_u64() {
            Some(SUCCESS_NUMBER) => Some(true),
            Some(n) if FAILURE_NUMBERS.contains(&n) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the record changes a group's owners: PIM for Groups has two roles, Member and Owner,
/// and records of both carry the same activity names. The role is read from the `Role` target's
/// name, and from role properties of the targets (`modifiedProperties`) and of the record
/// (`additionalDetails`), whichever are present.
fn is_owner_change(properties: &Map<String, Value>) -> bool {
    let is_owner = |value: &str| value.trim().trim_matches('"').eq_ignore_ascii_case(OWNER);
    let objects = |name: &str, within: &Map<String, Value>| -> Vec<Map<String, Value>> {
        match member(within, name) {
            Some((_, Value::Array(items))) => items
                .iter()
                .filter_map(|item| item.as_object().cloned())
                .collect(),
            _ => Vec::new(),
        }
    };
    let role_value = |pair: &Map<String, Value>, key: &str, value: &str| {
        text(pair, key).is_some_and(is_role_key) && text(pair, value).is_some_and(is_owner)
    };
    let targets = objects("targetResources", properties);
    let owner_target = targets.iter().any(|target| {
        (target_is(target, "Role") && text(target, "displayName").is_some_and(is_owner))
            || objects("modifiedProperties", target).iter().any(|p| {
                role_value(p, "displayName", "newValue") || role_value(p, "displayName", "oldValue")
            })
    });
    owner_target
        || objects("additionalDetails", properties)
            .iter()
            .any(|detail| role_value(detail, "key", "value"))
}

/// Whether a property key names the PIM role.
fn is_role_key(key: &str) -> bool {
    ROLE_KEYS.contains(&normalized_key(key).as_str())
}

/// The directoryAudit `id` of a record, for logs.
fn audit_id(properties: &Map<String, Value>) -> Option<String> {
    text(properties, "id").map(str::to_owned)
}

/// The event an activity name stands for, if any.
fn activity_kind(activity: &str) -> Option<EventKind> {
    let activity = activity.split_whitespace().collect::<Vec<_>>().join(" ");
    let named = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(&activity));
    if named(ACTIVATIONS) {
        Some(EventKind::Activation)
    } else if named(DEACTIVATIONS) {
        Some(EventKind::Deactivation)
    } else {
        None
    }
}

impl Claim<'_> {
    /// The event the record describes; refuses a record that lacks what an event needs.
    fn into_event(self, warnings: &mut Vec<String>) -> Result<NewEvent, EventError> {
        let id = required_text(self.properties, "id", &self.path, MAX_ID_LEN)?;
        let occurred_at = {
            let (field, text) = required_text_at(self.properties, "activityDateTime", &self.path)?;
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| {
                    refuse(
                        field.clone(),
                        "invalid_timestamp",
                        format!("`{}` is not an RFC 3339 timestamp", quote(text)),
                    )
                })
                .and_then(|at| validate::in_range(&field, at))?
        };
        let (targets, targets_path) = self.targets()?;
        let (user_path, user) = target_of_type(targets, "User", &targets_path)?;
        let (group_path, group) = target_of_type(targets, "Group", &targets_path)?;
        let ends_at = match self.kind {
            EventKind::Activation => self.ends_at(occurred_at, warnings),
            // An end time means nothing once a membership has ended.
            EventKind::Deactivation => None,
        };
        Ok(NewEvent {
            id,
            kind: self.kind,
            occurred_at,
            group_id: required_text(group, "id", &group_path, MAX_ID_LEN)?,
            principal_id: required_text(user, "id", &user_path, MAX_ID_LEN)?,
            ends_at,
            grant_id: pim_request(targets),
            user: attributes(
                user,
                &user_path,
                &[
                    ("userPrincipalName", "userName"),
                    ("displayName", "displayName"),
                ],
            )?,
            group: attributes(group, &group_path, &[("displayName", "displayName")])?,
        })
    }

    /// `targetResources`, with how to name it in errors.
    fn targets(&self) -> Result<(&[Value], String), EventError> {
        match member(self.properties, "targetResources") {
            Some((key, Value::Array(targets))) => Ok((targets, format!("{}.{key}", self.path))),
            Some((key, _)) => Err(refuse(
                format!("{}.{key}", self.path),
                "invalid_field",
                "must be an array",
            )),
            None => Err(refuse(
                format!("{}.targetResources", self.path),
                "missing_field",
                "is required: it names the user and the group",
            )),
        }
    }

    /// The activation's end from `additionalDetails`, if one can be read and follows
    /// `occurred_at`; otherwise none, with a warning when a detail was there but unusable.
    fn ends_at(
        &self,
        occurred_at: OffsetDateTime,
        warnings: &mut Vec<String>,
    ) -> Option<OffsetDateTime> {
        let (key, Value::Array(details)) = member(self.properties, "additionalDetails")? else {
            return None;
        };
        let mut unusable = None;
        for (index, detail) in details.iter().enumerate() {
            let Some(detail) = detail.as_object() else {
                continue;
            };
            if !text(detail, "key").is_some_and(is_end_key) {
                continue;
            }
            let value = text(detail, "value").unwrap_or_default();
            match parse_time(value) {
                Some(ends_at) if validate::in_range("", ends_at).is_err() => {
                    unusable = Some((index, value, "is out of range"))
                }
                Some(ends_at) if ends_at >= occurred_at => return Some(ends_at),
                Some(_) => unusable = Some((index, value, "is before activityDateTime")),
                None => unusable = Some((index, value, "is not a timestamp")),
            }
        }
        if let Some((index, value, why)) = unusable {
            warnings.push(format!(
                "{}.{key}[{index}].value: `{}` {why}; the event is stored without endsAt",
                self.path,
                quote(value)
            ));
        }
        None
    }
}

/// The PIM request a record names (a target whose display name is "PIM request"): the grant an
/// activation starts or extends, or the one a deactivation ends. Without it an activation's grant
/// is the record itself and a deactivation ends every audit grant of the pair that started before.
fn pim_request(targets: &[Value]) -> Option<String> {
    targets
        .iter()
        .filter_map(Value::as_object)
        .find(|t| text(t, "displayName").is_some_and(|n| n.eq_ignore_ascii_case("PIM request")))
        .and_then(|t| text(t, "id"))
        .filter(|id| id.len() <= MAX_ID_LEN)
        .map(str::to_owned)
}

/// The first target of `kind` (`User`, `Group`), with how to name it in errors.
fn target_of_type<'a>(
    targets: &'a [Value],
    kind: &str,
    targets_path: &str,
) -> Result<(String, &'a Map<String, Value>), EventError> {
    targets
        .iter()
        .enumerate()
        .filter_map(|(index, target)| Some((index, target.as_object()?)))
        .find(|(_, target)| target_is(target, kind))
        .map(|(index, target)| (format!("{targets_path}[{index}]"), target))
        .ok_or_else(|| {
            refuse(
                targets_path.to_owned(),
                "missing_target",
                format!("no target of type {kind}"),
            )
        })
}

/// Whether a target is of `kind` (`User`, `Group`, `Role`): by its `type`, or, when it has none,
/// by its `@odata.type` (`#microsoft.graph.targetResourceUser`; `#microsoft.graph.user` too).
fn target_is(target: &Map<String, Value>, kind: &str) -> bool {
    if let Some(type_name) = text(target, "type") {
        return type_name.eq_ignore_ascii_case(kind);
    }
    let Some(odata) = text(target, "@odata.type") else {
        return false;
    };
    let odata = odata.trim_start_matches('#').to_ascii_lowercase();
    let name = odata.strip_prefix("microsoft.graph.").unwrap_or(&odata);
    let name = name.strip_prefix("targetresource").unwrap_or(name);
    name.eq_ignore_ascii_case(kind)
}

/// The attributes a target carries, renamed (`from` → `to`); `None` when it carries none.
fn attributes(
    target: &Map<String, Value>,
    target_path: &str,
    names: &[(&str, &'static str)],
) -> Result<Option<Value>, EventError> {
    let mut kept = Map::new();
    for (from, to) in names {
        if let Some((key, value)) = member(target, from) {
            let Some(value) = value.as_str().map(str::trim).filter(|v| !v.is_empty()) else {
                continue;
            };
            if value.chars().count() > MAX_ATTRIBUTE_LEN {
                return Err(too_long(format!("{target_path}.{key}"), MAX_ATTRIBUTE_LEN));
            }
            validate::text(&format!("{target_path}.{key}"), value)?;
            kept.insert((*to).to_owned(), Value::String(value.to_owned()));
        }
    }
    Ok((!kept.is_empty()).then_some(Value::Object(kept)))
}

/// Whether an `additionalDetails` key names an end time.
fn is_end_key(key: &str) -> bool {
    END_KEYS.contains(&normalized_key(key).as_str())
}

/// A key in lower case with only letters and digits kept.
fn normalized_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// An RFC 3339 timestamp, or an ISO 8601 one without an offset, taken as UTC (the form .NET
/// writes for `DateTime` values of kind Unspecified).
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let without_offset = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        PrimitiveDateTime::parse(text, &without_offset)
            .ok()
            .map(PrimitiveDateTime::assume_utc)
    })
}

/// A member by name: exactly, else without regard to ASCII case. `null` counts as absent.
/// Returns the key as sent, so that errors name the field the way the caller spelled it.
fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Option<(&'a str, &'a Value)> {
    object
        .get_key_value(name)
        .or_else(|| {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
        })
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.as_str(), value))
}

/// A non-blank string member, trimmed; anything else counts as absent.
fn text<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    member(object, name)
        .and_then(|(_, value)| value.as_str())
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// A required non-blank string member and its field name, or the error naming it.
fn required_text_at<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<(String, &'a str), EventError> {
    let Some((key, value)) = member(object, name) else {
        return Err(refuse(
            format!("{path}.{name}"),
            "missing_field",
            "is required",
        ));
    };
    let field = format!("{path}.{key}");
    match value.as_str() {
        Some(text) if text.trim().is_empty() => {
            Err(refuse(field, "empty_field", "must not be empty"))
        }
        Some(text) => validate::text(&field, text).map(|()| (field, text)),
        None => Err(refuse(field, "invalid_field", "must be a string")),
    }
}

/// A required identifier of at most `max_len` characters.
fn required_text(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    max_len: usize,
) -> Result<String, EventError> {
    let (field, text) = required_text_at(object, name, path)?;
    if text.chars().count() > max_len {
        return Err(too_long(field, max_len));
    }
    Ok(text.to_owned())
}

fn too_long(field: String, max_len: usize) -> EventError {
    refuse(
        field,
        "field_too_long",
        format!("is longer than {max_len} characters"),
    )
}

/// A field error: `field` named as sent, a stable `code`, and why.
pub(super) fn refuse(field: String, code: &'static str, reason: impl Into<String>) -> EventError {
    EventError::InvalidField {
        field,
        code,
        reason: reason.into(),
    }
}

/// A value short enough to quote in an error or a log line.
pub(super) fn quote(text: &str) -> String {
    text.chars().take(MAX_QUOTED_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const BATCH: &str = include_str!("../../tests/fixtures/audit/pim_batch.json");
    const PASCAL_CASE: &str = include_str!("../../tests/fixtures/audit/pascal_case.json");

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn parse(value: &Value) -> Result<AuditBatch, EventError> {
        parse_records(value.to_string().as_bytes())
    }

    /// The fixture batch's first record: a completed PIM-for-Groups activation.
    fn activation_record() -> Value {
        fixture(BATCH)["records"][0].clone()
    }

    fn single(record: Value) -> Result<AuditBatch, EventError> {
        parse(&json!({ "records": [record] }))
    }

    #[test]
    fn the_fixture_batch_yields_its_three_pim_events_in_order() {
        let batch = parse_records(BATCH.as_bytes()).unwrap();

        let kinds: Vec<(&str, EventKind)> = batch
            .events
            .iter()
            .map(|e| (e.id.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    "PIM_c3a7e2d1-4f5b-4a6c-8d9e-0f1a2b3c4d5e_activation",
                    EventKind::Activation
                ),
                (
                    "PIM_4b5c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d_deactivate",
                    EventKind::Deactivation
                ),
                (
                    "PIM_6e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b_expired",
                    EventKind::Deactivation
                ),
            ]
        );
        assert!(batch.warnings.is_empty(), "{:?}", batch.warnings);
    }

    #[test]
    fn every_other_record_is_ignored_with_its_reason() {
        let batch = parse_records(BATCH.as_bytes()).unwrap();

        let ignored: Vec<(usize, &str, IgnoreReason)> = batch
            .ignored
            .iter()
            .map(|r| (r.index, r.type_label(), r.reason))
            .collect();
        assert_eq!(
            ignored,
            vec![
                (1, "unknown", IgnoreReason::OtherActivity),
                (2, "unknown", IgnoreReason::OtherActivity),
                (4, "activation", IgnoreReason::Unsuccessful),
                (5, "activation", IgnoreReason::OtherCategory),
                (7, "unknown", IgnoreReason::NotAnAuditRecord),
            ]
        );
    }

    #[test]
    fn an_activation_carries_targets_attributes_and_end_time() {
        let batch = parse_records(BATCH.as_bytes()).unwrap();
        let event = &batch.events[0];

        assert_eq!(event.group_id, "11111111-aaaa-4aaa-8aaa-000000000001");
        assert_eq!(event.principal_id, "a11ce000-0000-4000-8000-000000000001");
        assert_eq!(
            event.occurred_at,
            datetime!(2026-11-28 10:00:03.1415926 UTC)
        );
        assert_eq!(event.ends_at, Some(datetime!(2026-11-28 18:00 UTC)));
        assert_eq!(
            event.user,
            Some(json!({"userName": "alice@contoso.com", "displayName": "Alice Liddell"}))
        );
        assert_eq!(event.group, Some(json!({"displayName": "AWS-Admins"})));
    }

    #[test]
    fn a_deactivation_has_no_end_time_even_when_the_record_names_one() {
        let batch = parse_records(BATCH.as_bytes()).unwrap();
        let expiry = &batch.events[2];

        assert_eq!(expiry.principal_id, "d0d00000-0000-4000-8000-000000000004");
        assert_eq!(expiry.group_id, "33333333-cccc-4ccc-8ccc-000000000003");
        assert_eq!(expiry.ends_at, None);
    }

    #[test]
    fn a_pascal_case_envelope_parses_like_a_camel_case_one() {
        let batch = parse_records(PASCAL_CASE.as_bytes()).unwrap();

        assert_eq!(batch.events.len(), 1);
        let event = &batch.events[0];
        assert_eq!(event.kind, EventKind::Activation);
        assert_eq!(event.group_id, "22222222-bbbb-4bbb-8bbb-000000000002");
        assert_eq!(event.principal_id, "e7e00000-0000-4000-8000-000000000005");
        assert_eq!(event.ends_at, Some(datetime!(2026-11-28 16:00 UTC)));
        assert_eq!(
            event.user.as_ref().unwrap()["userName"],
            json!("erin@contoso.com")
        );
    }

    #[test]
    fn activity_names_match_in_either_wording_case_and_spacing() {
        let cases = [
            (
                "Add member to role completed (PIM activation)",
                Some(EventKind::Activation),
            ),
            (
                "add member to GROUP completed (pim activation)",
                Some(EventKind::Activation),
            ),
            (
                "  Remove member from role  completed (PIM deactivate) ",
                Some(EventKind::Deactivation),
            ),
            (
                "Remove member from group completed (PIM deactivate)",
                Some(EventKind::Deactivation),
            ),
            (
                "Remove member from role (PIM activation expired)",
                Some(EventKind::Deactivation),
            ),
            (
                "Remove member from group (PIM activation expired)",
                Some(EventKind::Deactivation),
            ),
            ("Add member to role requested (PIM activation)", None),
            ("PIM activation request expired", None),
            (
                "Add member to role in PIM completed (timebound)",
                Some(EventKind::Activation),
            ),
            (
                "Remove member from role in PIM completed (permanent)",
                Some(EventKind::Deactivation),
            ),
            (
                "Add eligible member to role in PIM completed (permanent)",
                None,
            ),
            ("Add member to group", None),
        ];
        for (name, kind) in cases {
            assert_eq!(activity_kind(name), kind, "{name}");
        }
    }

    #[test]
    fn the_operation_name_stands_in_for_a_missing_activity_name() {
        let mut record = activation_record();
        record["properties"]
            .as_object_mut()
            .unwrap()
            .remove("activityDisplayName");

        assert_eq!(single(record).unwrap().events.len(), 1);
    }

    #[test]
    fn the_end_time_is_found_by_key_whatever_its_spelling() {
        let keys = [
            "ExpirationTime",
            "endDateTime",
            "EndTime",
            "expiration_time",
            "Expiration Time",
        ];
        for key in keys {
            let mut record = activation_record();
            record["properties"]["additionalDetails"] = json!([{"key": "StartTime", "value": "2026-11-28T10:00:00Z"},
                       {"key": key, "value": "2026-11-28T12:00:00Z"}]);

            let batch = single(record).unwrap();

            assert_eq!(
                batch.events[0].ends_at,
                Some(datetime!(2026-11-28 12:00 UTC)),
                "{key}"
            );
        }
    }

    #[test]
    fn an_end_time_without_offset_is_taken_as_utc() {
        let mut record = activation_record();
        record["properties"]["additionalDetails"] =
            json!([{"key": "ExpirationTime", "value": "2026-11-28T12:30:00.0000000"}]);

        let batch = single(record).unwrap();

        assert_eq!(
            batch.events[0].ends_at,
            Some(datetime!(2026-11-28 12:30 UTC))
        );
    }

    #[test]
    fn an_unusable_end_time_is_left_out_with_a_warning() {
        for (value, why) in [
            ("11/28/2026 6:00:00 PM", "is not a timestamp"),
            ("2026-11-28T09:00:00Z", "is before activityDateTime"),
        ] {
            let mut record = activation_record();
            record["properties"]["additionalDetails"] =
                json!([{"key": "ExpirationTime", "value": value}]);

            let batch = single(record).unwrap();

            assert_eq!(batch.events[0].ends_at, None, "{value}");
            assert_eq!(batch.warnings.len(), 1, "{value}");
            assert!(
                batch.warnings[0]
                    .starts_with("records[0].properties.additionalDetails[0].value: `")
                    && batch.warnings[0].contains(why),
                "{}",
                batch.warnings[0]
            );
        }
    }

    #[test]
    fn absent_attributes_are_left_out() {
        let mut record = activation_record();
        let targets = record["properties"]["targetResources"]
            .as_array_mut()
            .unwrap();
        targets[2] = json!({"id": "u-1", "type": "User", "displayName": null});
        targets[3] = json!({"id": "g-1", "type": "group"});

        let event = &single(record).unwrap().events[0];

        assert_eq!(event.user, None);
        assert_eq!(event.group, None);
        assert_eq!(event.group_id, "g-1", "target types match without case");
    }

    /// A case name, how to spoil the activation record, the expected code and the field named.
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Value)>,
        &'static str,
        &'static str,
    );

    fn properties(record: &mut Value) -> &mut Map<String, Value> {
        record["properties"].as_object_mut().unwrap()
    }

    fn without_target(kind: &'static str) -> Box<dyn Fn(&mut Value)> {
        Box::new(move |r| {
            r["properties"]["targetResources"]
                .as_array_mut()
                .unwrap()
                .retain(|t| t["type"] != kind);
        })
    }

    #[test]
    fn an_incomplete_pim_record_is_refused_naming_the_field() {
        let cases: Vec<Case> = vec![
            (
                "no group target",
                without_target("Group"),
                "missing_target",
                "records[0].properties.targetResources: no target of type Group",
            ),
            (
                "no user target",
                without_target("User"),
                "missing_target",
                "records[0].properties.targetResources: no target of type User",
            ),
            (
                "group target without id",
                Box::new(|r| {
                    r["properties"]["targetResources"][3]
                        .as_object_mut()
                        .unwrap()
                        .remove("id");
                }),
                "missing_field",
                "records[0].properties.targetResources[3].id",
            ),
            (
                "no targets",
                Box::new(|r| {
                    properties(r).remove("targetResources");
                }),
                "missing_field",
                "records[0].properties.targetResources",
            ),
            (
                "targets not an array",
                Box::new(|r| r["properties"]["targetResources"] = json!({})),
                "invalid_field",
                "records[0].properties.targetResources",
            ),
            (
                "bad timestamp",
                Box::new(|r| r["properties"]["activityDateTime"] = json!("28/11/2026 10:00")),
                "invalid_timestamp",
                "records[0].properties.activityDateTime",
            ),
            (
                "no timestamp",
                Box::new(|r| {
                    properties(r).remove("activityDateTime");
                }),
                "missing_field",
                "records[0].properties.activityDateTime",
            ),
            (
                "no id",
                Box::new(|r| {
                    properties(r).remove("id");
                }),
                "missing_field",
                "records[0].properties.id",
            ),
            (
                "blank id",
                Box::new(|r| r["properties"]["id"] = json!(" ")),
                "empty_field",
                "records[0].properties.id",
            ),
            (
                "numeric user id",
                Box::new(|r| r["properties"]["targetResources"][2]["id"] = json!(7)),
                "invalid_field",
                "records[0].properties.targetResources[2].id",
            ),
            (
                "id too long",
                Box::new(|r| r["properties"]["id"] = json!("x".repeat(300))),
                "field_too_long",
                "records[0].properties.id",
            ),
        ];
        for (case, spoil, code, field) in cases {
            let mut record = activation_record();
            spoil(&mut record);

            let error = single(record).unwrap_err();

            assert_eq!(error.code(), code, "{case}: {error}");
            assert!(error.to_string().starts_with(field), "{case}: {error}");
        }
    }

    #[test]
    fn errors_name_the_record_and_the_keys_as_sent() {
        let mut record = fixture(PASCAL_CASE)["records"][0].clone();
        record["Properties"]["ActivityDateTime"] = json!("soon");
        let batch = json!({"records": [activation_record(), record]});

        let error = parse(&batch).unwrap_err();

        assert!(
            error
                .to_string()
                .starts_with("records[1].Properties.ActivityDateTime: `soon`"),
            "{error}"
        );
    }

    #[test]
    fn an_ignored_record_need_not_be_complete() {
        let mut failed = activation_record();
        failed["properties"]["result"] = json!("failure");
        properties(&mut failed).remove("targetResources");
        let mut role = activation_record();
        role["properties"]["category"] = json!("RoleManagement");
        role["properties"]["activityDateTime"] = json!("never");

        let batch = parse(&json!({"records": [failed, role, {"category": "AuditLogs"}]})).unwrap();

        assert!(batch.events.is_empty());
        assert_eq!(batch.ignored.len(), 3);
        assert_eq!(batch.ignored[2].reason, IgnoreReason::NotAnAuditRecord);
    }

    const EXPORT: &str = include_str!("../../tests/fixtures/microsoft/azure_monitor_export.json");
    const ODATA_TARGETS: &str =
        include_str!("../../tests/fixtures/microsoft/directory_audit_odata_targets.json");
    const OWNER: &str = include_str!("../../tests/fixtures/audit/owner_activation.json");

    /// (index, reason) of each ignored record.
    fn reasons(batch: &AuditBatch) -> Vec<(usize, IgnoreReason)> {
        batch.ignored.iter().map(|r| (r.index, r.reason)).collect()
    }

    #[test]
    fn microsofts_export_with_result_0_yields_its_activation() {
        let batch = parse_records(EXPORT.as_bytes()).unwrap();

        assert_eq!(batch.events.len(), 1);
        let event = &batch.events[0];
        assert_eq!(
            event.id,
            "PIM_0f2b7c1e-5a3d-4e6f-8a9b-1c2d3e4f5a6b_activation"
        );
        assert_eq!(event.kind, EventKind::Activation);
        assert_eq!(event.group_id, "11111111-aaaa-4aaa-8aaa-000000000001");
        assert_eq!(event.ends_at, Some(datetime!(2026-11-28 17:02 UTC)));
        assert_eq!(reasons(&batch), vec![(0, IgnoreReason::OtherActivity)]);
    }

    #[test]
    fn result_is_success_in_any_case_or_0_and_failure_by_name_or_number() {
        let cases = [
            (json!("success"), None),
            (json!("Success"), None),
            (json!(" SUCCESS "), None),
            (json!(0), None),
            (json!("failure"), Some(IgnoreReason::Unsuccessful)),
            (json!("Timeout"), Some(IgnoreReason::Unsuccessful)),
            (
                json!("unknownFutureValue"),
                Some(IgnoreReason::Unsuccessful),
            ),
            (json!(1), Some(IgnoreReason::Unsuccessful)),
            (json!(2), Some(IgnoreReason::Unsuccessful)),
            (json!(3), Some(IgnoreReason::Unsuccessful)),
            (json!(4), Some(IgnoreReason::UnreadableResult)),
            (json!(-1), Some(IgnoreReason::UnreadableResult)),
            (json!(0.5), Some(IgnoreReason::UnreadableResult)),
            (json!("succeeded"), Some(IgnoreReason::UnreadableResult)),
            (json!(true), Some(IgnoreReason::UnreadableResult)),
            (json!(null), Some(IgnoreReason::UnreadableResult)),
        ];
        for (result, reason) in cases {
            let mut record = activation_record();
            record["properties"]["result"] = result.clone();

            let batch = single(record).unwrap();

            assert_eq!(batch.ignored.first().map(|r| r.reason), reason, "{result}");
            assert_eq!(
                batch.events.len(),
                usize::from(reason.is_none()),
                "{result}"
            );
        }
    }

    #[test]
    fn a_pim_record_that_cannot_be_read_is_unusable_with_its_id() {
        let mut no_category = activation_record();
        properties(&mut no_category).remove("category");
        let mut odd_result = activation_record();
        odd_result["properties"]["result"] = json!({"value": "success"});

        let batch = parse(&json!({"records": [no_category, odd_result]})).unwrap();

        assert!(batch.events.is_empty());
        assert_eq!(
            reasons(&batch),
            vec![
                (0, IgnoreReason::MissingCategory),
                (1, IgnoreReason::UnreadableResult)
            ]
        );
        for record in &batch.ignored {
            assert_eq!(record.reason.outcome(), Outcome::Unusable);
            assert_eq!(record.type_label(), "activation");
            assert_eq!(
                record.record_id.as_deref(),
                Some("PIM_c3a7e2d1-4f5b-4a6c-8d9e-0f1a2b3c4d5e_activation")
            );
        }
    }

    #[test]
    fn targets_without_type_are_found_by_odata_type() {
        let directory_audit = fixture(ODATA_TARGETS);

        let batch = parse_embedded(&directory_audit, "data").unwrap().unwrap();

        assert_eq!(batch.events.len(), 1, "{:?}", batch.ignored);
        let event = &batch.events[0];
        assert_eq!(event.group_id, "22222222-bbbb-4bbb-8bbb-000000000002");
        assert_eq!(event.principal_id, "b0b00000-0000-4000-8000-000000000002");
        assert_eq!(
            event.user,
            Some(json!({"userName": "bob@contoso.com", "displayName": "Bob Kahn"}))
        );
        let mut typed_otherwise = directory_audit.clone();
        typed_otherwise["targetResources"][2]["type"] = json!("Other");
        assert_eq!(
            parse_embedded(&typed_otherwise, "data")
                .unwrap()
                .unwrap_err()
                .code(),
            "missing_target",
            "`type` wins over `@odata.type`"
        );
    }

    #[test]
    fn owner_activations_and_deactivations_are_ignored_as_owner_changes() {
        let batch = parse_records(OWNER.as_bytes()).unwrap();

        assert!(batch.events.is_empty(), "{:?}", batch.events);
        assert_eq!(
            reasons(&batch),
            vec![
                (0, IgnoreReason::Owner),
                (1, IgnoreReason::Owner),
                (2, IgnoreReason::Owner)
            ]
        );
        assert!(batch
            .ignored
            .iter()
            .all(|r| r.reason.outcome() == Outcome::IgnoredOwner));
        assert_eq!(batch.ignored[2].type_label(), "deactivation");
    }

    #[test]
    fn a_member_role_is_not_an_owner_change() {
        let mut record = activation_record();
        record["properties"]["targetResources"][0]["modifiedProperties"] = json!([{"displayName": "Role.DisplayName", "oldValue": null, "newValue": "\"Member\""}]);

        assert_eq!(single(record).unwrap().events.len(), 1);
    }

    #[test]
    fn the_body_must_be_an_object_with_at_most_1000_records() {
        assert_eq!(
            parse_records(b"{\"records\": [").unwrap_err().code(),
            "malformed_json"
        );
        for body in [json!([]), json!({"value": []}), json!({"records": {}})] {
            let error = parse(&body).unwrap_err();
            assert_eq!(error.code(), "invalid_body", "{body}");
            assert!(error.to_string().starts_with("records: "), "{error}");
        }
        assert_eq!(
            parse(&json!({"records": [42]})).unwrap_err().to_string(),
            "records[0]: must be an object"
        );
        let most = Value::Array(vec![activation_record(); 1000]);
        assert_eq!(
            parse(&json!({ "records": most })).unwrap().events.len(),
            1000
        );
        let many = Value::Array(vec![json!({}); 1001]);
        assert_eq!(
            parse(&json!({ "records": many })).unwrap_err(),
            EventError::BatchTooLarge(1001)
        );
        assert_eq!(
            parse(&json!({"Records": []})).unwrap(),
            AuditBatch::default()
        );
    }
}
