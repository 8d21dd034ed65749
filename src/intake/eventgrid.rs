//! Azure Event Grid deliveries (`POST /webhooks/eventgrid`, docs/webhooks.md): from a request body to
//! the events it carries.
//!
//! Event Grid posts in one of two schemas (docs/webhooks.md):
//! - the Event Grid schema: an array of `{id, eventType, subject, eventTime, data, dataVersion,
//!   …}`, as `application/json`. Its subscription handshake is such an array holding one
//!   `Microsoft.EventGrid.SubscriptionValidationEvent`, whose `validationCode` is echoed back;
//! - CloudEvents 1.0 in structured mode, `{specversion, id, source, type, time, datacontenttype,
//!   data}`: one event or an array of them. Its handshake is the `OPTIONS` request, answered by
//!   the route.
//!
//! The media type does not say which: Microsoft's own samples post a single CloudEvent as
//! `application/json`, and its Entra events page shows Graph CloudEvents as an array. So the body
//! decides. Under `application/json`, `application/cloudevents+json` or
//! `application/cloudevents-batch+json` alike, an object is one CloudEvent and an array holds
//! events, each read as a CloudEvent when it has `specversion`. Only under `application/json` may
//! an element be in the Event Grid schema; under the CloudEvents media types every element is
//! held to the CloudEvents attributes.
//!
//! Each event's `data` is sorted into one of three kinds:
//! - Entra audit records, as an Azure Monitor export (`{"records": [...]}`) or as one directoryAudit
//!   object. They are read by the audit parser ([`audit::parse_embedded`]), so this route and
//!   `/webhooks/audit` agree on what a PIM-for-Groups activation is; the idempotency key is the
//!   record's own `id`, never the Event Grid event's, which changes when a forwarder republishes;
//! - Microsoft Graph change or lifecycle notifications. Their `data` is handed to the Graph
//!   notification parser ([`super::graph`]) when `[graph]` is configured, as on `/webhooks/graph`;
//!   otherwise they are skipped;
//! - anything else: skipped.
//!
//! Envelopes are checked only as far as we rely on them (`id`, the type and, for CloudEvents, the
//! attributes the specification requires). A malformed envelope, or an audit record that claims to
//! be a PIM-for-Groups change but is incomplete, refuses the whole request with an error naming the
//! event and the field (`[3].data.records[0].properties.id`), so that nothing is stored twice when
//! Event Grid retries.

use serde_json::{Map, Value};

use super::audit::{self, quote, refuse, IgnoredRecord};
use super::counting;
use super::event::{EventError, NewEvent, MAX_BATCH};

/// The event type of Event Grid's subscription handshake (Event Grid schema only).
pub const SUBSCRIPTION_VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// The prefix of the event types Microsoft Graph publishes to Event Grid partner topics
/// (`Microsoft.Graph.GroupUpdated`, `Microsoft.Graph.SubscriptionReauthorizationRequired`, …).
const GRAPH_TYPE_PREFIX: &str = "Microsoft.Graph.";
/// The only CloudEvents `specversion` there is.
const CLOUDEVENTS_VERSION: &str = "1.0";
/// The code of every CloudEvents attribute error, whichever attribute it is.
const INVALID_CLOUDEVENT: &str = "invalid_cloudevent";

/// What a delivery's media type allows; the body says which shape it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `application/json`: Event Grid schema events or CloudEvents (told apart by
    /// `specversion`), one CloudEvent or an array.
    EventGrid,
    /// `application/cloudevents+json`: one CloudEvent, or an array of them.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents, or one.
    CloudEventBatch,
}

impl Schema {
    /// The media types accepted, for the 415 message.
    pub const MEDIA_TYPES: &'static str = "application/json (Event Grid schema or CloudEvents), \
        application/cloudevents+json or application/cloudevents-batch+json";

    /// The schema of a media type given without parameters, in lower case.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/json" => Some(Self::EventGrid),
            "application/cloudevents+json" => Some(Self::CloudEvent),
            "application/cloudevents-batch+json" => Some(Self::CloudEventBatch),
            _ => None,
        }
    }
}

/// What a delivery asks of us.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Event Grid's subscription handshake: answer `{"validationResponse": code}`.
    Validation { code: String },
    /// Events to store, and what was skipped.
    Events(EventGridBatch),
}

/// A delivery's events, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventGridBatch {
    /// PIM-for-Groups activations and deactivations from audit records, in delivery order.
    pub events: Vec<NewEvent>,
    /// Every audit record and every event that yields no event, in delivery order.
    pub skipped: Vec<Skipped>,
    /// Parts of accepted audit records that were left out, each naming the event, record and field.
    pub warnings: Vec<String>,
    /// The `data` of each Microsoft Graph notification (a changeNotification or lifecycle
    /// notification), for the Graph webhook's handling when Graph is configured.
    pub graph_notifications_data: Vec<Value>,
}

impl EventGridBatch {
    /// How many skipped events are Microsoft Graph notifications.
    pub fn graph_notifications(&self) -> usize {
        self.skipped
            .iter()
            .filter(|s| matches!(s.content, SkippedContent::GraphNotification))
            .count()
    }
}

/// Something a delivery carried that is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Position of the Event Grid event in the delivery (0 for a single CloudEvent).
    pub event: usize,
    /// The Event Grid event's `id`, for logs.
    pub event_id: String,
    pub content: SkippedContent,
}

/// What a skipped item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkippedContent {
    /// An audit record that is not a PIM-for-Groups activation or deactivation.
    AuditRecord(IgnoredRecord),
    /// A Microsoft Graph change or lifecycle notification, while `[graph]` is not configured.
    GraphNotification,
    /// An event that carries neither audit records nor a Graph notification.
    Other,
}

impl Skipped {
    /// The `type` label of the metric that counts it.
    pub fn type_label(&self) -> &'static str {
        match &self.content {
            SkippedContent::AuditRecord(record) => record.type_label(),
            SkippedContent::GraphNotification => counting::GRAPH_NOTIFICATION,
            SkippedContent::Other => counting::UNKNOWN,
        }
    }

    /// Why it is skipped, for logs.
    pub fn reason(&self) -> &'static str {
        match &self.content {
            SkippedContent::AuditRecord(record) => record.reason.as_str(),
            SkippedContent::GraphNotification => "graph_not_configured",
            SkippedContent::Other => "other_event",
        }
    }
}

/// Parses a delivery body in `schema`. `validation_announced` says whether the request carried
/// `aeg-event-type: SubscriptionValidation`; the body must then be the handshake. A body that is
/// the handshake is answered as one even without the header, which some relays drop.
pub fn parse_delivery(
    body: &[u8],
    schema: Schema,
    validation_announced: bool,
) -> Result<Delivery, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::MalformedJson(e.to_string()))?;
    let envelopes = envelopes(&value, schema)?;
    if let Some(code) = validation_code(&envelopes, validation_announced)? {
        return Ok(Delivery::Validation { code });
    }
    let mut batch = EventGridBatch::default();
    for envelope in &envelopes {
        batch.add(envelope)?;
    }
    Ok(Delivery::Events(batch))
}

/// One event's envelope, checked.
struct Envelope<'a> {
    /// Position in the delivery (0 for a single CloudEvent).
    index: usize,
    /// How to name the event in errors: `[3]`, or empty for a single CloudEvent.
    path: String,
    id: &'a str,
    /// `eventType` (Event Grid schema) or `type` (CloudEvents).
    event_type: &'a str,
    data: Option<&'a Value>,
}

/// The envelopes of a body, in order.
fn envelopes(value: &Value, schema: Schema) -> Result<Vec<Envelope<'_>>, EventError> {
    let items = match value {
        Value::Object(object) if schema != Schema::EventGrid || is_cloud_event(object) => {
            return Ok(vec![cloud_event(object, 0, String::new())?]);
        }
        Value::Array(items) => items,
        _ if schema == Schema::EventGrid => {
            return Err(invalid_body(
                "an application/json delivery is an array of events (Event Grid schema or \
                 CloudEvents) or one CloudEvent object",
            ))
        }
        _ => {
            return Err(invalid_body(
                "a CloudEvents delivery is one CloudEvent object or an array of them",
            ))
        }
    };
    if items.len() > MAX_BATCH {
        return Err(EventError::BatchTooLarge(items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let path = format!("[{index}]");
            let Value::Object(object) = item else {
                return Err(refuse(path, "invalid_field", "must be an object"));
            };
            if schema != Schema::EventGrid || is_cloud_event(object) {
                cloud_event(object, index, path)
            } else {
                event_grid_event(object, index, path)
            }
        })
        .collect()
}

/// Whether an object is a CloudEvent rather than an Event Grid schema event.
fn is_cloud_event(object: &Map<String, Value>) -> bool {
    object.contains_key("specversion")
}

/// An event in the Event Grid schema; we rely on `id` and `eventType` only.
fn event_grid_event(
    object: &Map<String, Value>,
    index: usize,
    path: String,
) -> Result<Envelope<'_>, EventError> {
    Ok(Envelope {
        index,
        id: required(object, "id", &path, None)?,
        event_type: required(object, "eventType", &path, None)?,
        data: present(object, "data"),
        path,
    })
}

/// A CloudEvent in structured mode, with the attributes CloudEvents 1.0 requires.
fn cloud_event(
    object: &Map<String, Value>,
    index: usize,
    path: String,
) -> Result<Envelope<'_>, EventError> {
    let strict = Some(INVALID_CLOUDEVENT);
    let version = required(object, "specversion", &path, strict)?;
    if version != CLOUDEVENTS_VERSION {
        return Err(refuse(
            field(&path, "specversion"),
            INVALID_CLOUDEVENT,
            format!(
                "`{}` is not supported; only CloudEvents 1.0 is",
                quote(version)
            ),
        ));
    }
    let id = required(object, "id", &path, strict)?;
    required(object, "source", &path, strict)?;
    let event_type = required(object, "type", &path, strict)?;
    Ok(Envelope {
        index,
        id,
        event_type,
        data: present(object, "data"),
        path,
    })
}

/// The handshake's code, when the body is the handshake; an error when the body and the
/// `aeg-event-type` header disagree, or when a handshake shares a delivery with other events.
fn validation_code(
    envelopes: &[Envelope<'_>],
    announced: bool,
) -> Result<Option<String>, EventError> {
    let validation = envelopes.iter().find(|e| {
        e.event_type
            .eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION_EVENT)
    });
    let Some(validation) = validation else {
        return if announced {
            Err(invalid_body(format!(
                "aeg-event-type is SubscriptionValidation, but no event is a \
                 {SUBSCRIPTION_VALIDATION_EVENT}"
            )))
        } else {
            Ok(None)
        };
    };
    if envelopes.len() > 1 {
        return Err(refuse(
            field(&validation.path, "eventType"),
            "invalid_field",
            "a SubscriptionValidationEvent comes alone, as Event Grid sends it",
        ));
    }
    validation
        .data
        .and_then(Value::as_object)
        .and_then(|data| data.get("validationCode"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(|code| Some(code.to_owned()))
        .ok_or_else(|| {
            refuse(
                format!("{}.validationCode", field(&validation.path, "data")),
                "missing_field",
                "must be a non-empty string: Event Grid expects it echoed back",
            )
        })
}

impl EventGridBatch {
    /// Sorts one event's `data` into events and skipped items.
    fn add(&mut self, envelope: &Envelope<'_>) -> Result<(), EventError> {
        let skipped = |content| Skipped {
            event: envelope.index,
            event_id: envelope.id.to_owned(),
            content,
        };
        let records = envelope
            .data
            .and_then(|data| audit::parse_embedded(data, &field(&envelope.path, "data")));
        if let Some(records) = records {
            let records = records?;
            self.events.extend(records.events);
            self.skipped.extend(
                records
                    .ignored
                    .into_iter()
                    .map(|record| skipped(SkippedContent::AuditRecord(record))),
            );
            self.warnings.extend(records.warnings);
        } else if is_graph_notification(envelope) {
            self.skipped
                .push(skipped(SkippedContent::GraphNotification));
            if let Some(data) = envelope.data {
                self.graph_notifications_data.push(data.clone());
            }
        } else {
            self.skipped.push(skipped(SkippedContent::Other));
        }
        Ok(())
    }
}

/// A Graph change notification (`data` is a changeNotification: `subscriptionId`, `changeType`,
/// `resource`, …) or lifecycle notification (`subscriptionId`, `lifecycleEvent`), by its event
/// type or by its data.
fn is_graph_notification(envelope: &Envelope<'_>) -> bool {
    let graph_type = envelope
        .event_type
        .get(..GRAPH_TYPE_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(GRAPH_TYPE_PREFIX));
    let graph_data = envelope
        .data
        .and_then(Value::as_object)
        .is_some_and(|data| {
            data.contains_key("subscriptionId")
                && (data.contains_key("changeType") || data.contains_key("lifecycleEvent"))
        });
    graph_type || graph_data
}

/// A member that is there and not `null`.
fn present<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|value| !value.is_null())
}

/// A required non-blank string attribute. Errors use the usual field codes, or `code` for every
/// failure when given (CloudEvents attributes are all `invalid_cloudevent`).
fn required<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: &str,
    code: Option<&'static str>,
) -> Result<&'a str, EventError> {
    let fail = |usual, reason| Err(refuse(field(path, name), code.unwrap_or(usual), reason));
    match present(object, name) {
        None => fail("missing_field", "is required"),
        Some(Value::String(text)) if text.trim().is_empty() => {
            fail("empty_field", "must not be empty")
        }
        Some(Value::String(text)) => Ok(text),
        Some(_) => fail("invalid_field", "must be a string"),
    }
}

/// `name` inside the event at `path` (empty for a single CloudEvent).
fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn invalid_body(reason: impl Into<String>) -> EventError {
    refuse("body".to_owned(), "invalid_body", reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use serde_json::json;
    use time::macros::datetime;

    const VALIDATION: &str =
        include_str!("../../tests/fixtures/eventgrid/subscription_validation.json");
    const EVENT_GRID_BATCH: &str =
        include_str!("../../tests/fixtures/eventgrid/eventgrid_schema_batch.json");
    const CLOUD_EVENT: &str = include_str!("../../tests/fixtures/eventgrid/cloudevent_single.json");
    const CLOUD_EVENTS: &str =
        include_str!("../../tests/fixtures/eventgrid/cloudevents_batch.json");
    const GRAPH: &str = include_str!("../../tests/fixtures/eventgrid/graph_notifications.json");

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn parse(value: &Value, schema: Schema) -> Result<Delivery, EventError> {
        parse_delivery(value.to_string().as_bytes(), schema, false)
    }

    fn events(text: &str, schema: Schema) -> EventGridBatch {
        match parse_delivery(text.as_bytes(), schema, false).unwrap() {
            Delivery::Events(batch) => batch,
            other => panic!("not a batch of events: {other:?}"),
        }
    }

    fn error(value: &Value, schema: Schema) -> EventError {
        parse(value, schema).unwrap_err()
    }

    /// (event index, metric type label, reason) of each skipped item.
    fn skipped(batch: &EventGridBatch) -> Vec<(usize, &'static str, &'static str)> {
        batch
            .skipped
            .iter()
            .map(|s| (s.event, s.type_label(), s.reason()))
            .collect()
    }

    /// (id, kind) of each event to store.
    fn stored(batch: &EventGridBatch) -> Vec<(&str, EventKind)> {
        batch
            .events
            .iter()
            .map(|e| (e.id.as_str(), e.kind))
            .collect()
    }

    fn assert_refused(error: &EventError, code: &str, field: &str) {
        assert_eq!(error.code(), code, "{error}");
        assert!(
            error.to_string().starts_with(&format!("{field}: ")),
            "expected the message to name `{field}`: {error}"
        );
    }

    #[test]
    fn the_media_type_picks_the_schema() {
        let cases = [
            ("application/json", Some(Schema::EventGrid)),
            ("application/cloudevents+json", Some(Schema::CloudEvent)),
            (
                "application/cloudevents-batch+json",
                Some(Schema::CloudEventBatch),
            ),
            ("text/plain", None),
            ("application/xml", None),
            ("", None),
        ];
        for (media_type, schema) in cases {
            assert_eq!(Schema::from_media_type(media_type), schema, "{media_type}");
        }
    }

    #[test]
    fn an_event_grid_batch_yields_its_pim_events_and_skips_the_rest() {
        let batch = events(EVENT_GRID_BATCH, Schema::EventGrid);

        let kinds: Vec<(&str, EventKind, &str)> = batch
            .events
            .iter()
            .map(|e| (e.id.as_str(), e.kind, e.group_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    "PIM_f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b_activation",
                    EventKind::Activation,
                    "11111111-aaaa-4aaa-8aaa-000000000001"
                ),
                (
                    "PIM_7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d_deactivate",
                    EventKind::Deactivation,
                    "22222222-bbbb-4bbb-8bbb-000000000002"
                ),
            ],
            "an Azure Monitor export and a single directoryAudit both count"
        );
        assert_eq!(
            skipped(&batch),
            vec![
                (0, "unknown", "other_activity"),
                (2, "unknown", "other_activity"),
                (3, "unknown", "other_event"),
            ],
            "an Azure event whose data has a subscriptionId is not a Graph notification"
        );
        assert_eq!(
            batch.skipped[2].event_id,
            "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5c"
        );
        assert!(batch.warnings.is_empty(), "{:?}", batch.warnings);
    }

    #[test]
    fn a_single_cloud_event_carries_a_directory_audit() {
        let batch = events(CLOUD_EVENT, Schema::CloudEvent);

        assert!(batch.skipped.is_empty());
        let [event] = batch.events.as_slice() else {
            panic!("one event expected: {:?}", batch.events);
        };
        assert_eq!(
            event.id,
            "PIM_8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e_activation"
        );
        assert_eq!(event.kind, EventKind::Activation);
        assert_eq!(event.group_id, "22222222-bbbb-4bbb-8bbb-000000000002");
        assert_eq!(event.principal_id, "4a700000-0000-4000-8000-000000000008");
        assert_eq!(event.occurred_at, datetime!(2026-11-28 11:00:01.8 UTC));
        assert_eq!(event.ends_at, Some(datetime!(2026-11-28 15:00 UTC)));
        assert_eq!(
            event.user,
            Some(json!({"userName": "hal@contoso.com", "displayName": "Hal Jordan"}))
        );
    }

    #[test]
    fn a_cloud_events_batch_sorts_each_event() {
        let batch = events(CLOUD_EVENTS, Schema::CloudEventBatch);

        assert_eq!(
            stored(&batch),
            vec![
                (
                    "PIM_1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f_expired",
                    EventKind::Deactivation
                ),
                (
                    "PIM_2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6c_activation",
                    EventKind::Activation
                ),
            ]
        );
        assert_eq!(
            skipped(&batch),
            vec![
                (0, "unknown", "not_an_audit_record"),
                (2, "activation", "unsuccessful"),
            ]
        );
    }

    #[test]
    fn graph_notifications_are_recognised_by_type_or_by_data() {
        let batch = events(GRAPH, Schema::CloudEventBatch);
        assert!(batch.events.is_empty());
        assert_eq!(batch.graph_notifications(), 2);
        assert_eq!(
            skipped(&batch),
            vec![
                (0, "graph_notification", "graph_not_configured"),
                (1, "graph_notification", "graph_not_configured"),
            ]
        );

        // The same notifications relayed under other event types, in the Event Grid schema.
        let relayed: Vec<Value> = fixture(GRAPH)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!({"id": e["id"], "eventType": "Contoso.Relay", "data": e["data"]}))
            .collect();
        let Delivery::Events(batch) = parse(&Value::Array(relayed), Schema::EventGrid).unwrap()
        else {
            panic!("not a batch of events");
        };
        assert_eq!(batch.graph_notifications(), 2);
    }

    #[test]
    fn events_without_usable_data_are_skipped() {
        let body = json!([
            {"id": "1", "eventType": "Contoso.Nothing"},
            {"id": "2", "eventType": "Contoso.Null", "data": null},
            {"id": "3", "eventType": "Contoso.Text", "data": "hello"},
            {"id": "4", "eventType": "Microsoft.EventGrid.SubscriptionDeletedEvent",
             "data": {"eventSubscriptionId": "/subscriptions/x"}},
        ]);

        let Delivery::Events(batch) = parse(&body, Schema::EventGrid).unwrap() else {
            panic!("not a batch of events");
        };

        assert!(batch.events.is_empty());
        assert_eq!(
            skipped(&batch),
            (0..4)
                .map(|i| (i, "unknown", "other_event"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            parse(&json!([]), Schema::EventGrid).unwrap(),
            Delivery::Events(EventGridBatch::default())
        );
    }

    #[test]
    fn a_cloud_event_in_an_event_grid_array_is_read_as_one() {
        let body = Value::Array(vec![fixture(CLOUD_EVENT)]);

        let Delivery::Events(batch) = parse(&body, Schema::EventGrid).unwrap() else {
            panic!("not a batch of events");
        };

        assert_eq!(batch.events.len(), 1);
    }

    #[test]
    fn the_subscription_handshake_yields_its_code_with_or_without_the_header() {
        for announced in [true, false] {
            let delivery = parse_delivery(VALIDATION.as_bytes(), Schema::EventGrid, announced);

            assert_eq!(
                delivery.unwrap(),
                Delivery::Validation {
                    code: "0f6e2b4a-7c1d-4e8f-9a3b-5d2c1e0f9a8b".to_owned()
                },
                "announced: {announced}"
            );
        }
    }

    #[test]
    fn a_malformed_handshake_is_refused() {
        let announced_without_one =
            parse_delivery(EVENT_GRID_BATCH.as_bytes(), Schema::EventGrid, true).unwrap_err();
        assert_refused(&announced_without_one, "invalid_body", "body");

        let mut with_others = fixture(EVENT_GRID_BATCH);
        with_others
            .as_array_mut()
            .unwrap()
            .push(fixture(VALIDATION)[0].clone());
        assert_refused(
            &error(&with_others, Schema::EventGrid),
            "invalid_field",
            "[4].eventType",
        );

        for data in [json!({}), json!({"validationCode": ""}), json!("code")] {
            let mut without_code = fixture(VALIDATION);
            without_code[0]["data"] = data.clone();
            assert_refused(
                &error(&without_code, Schema::EventGrid),
                "missing_field",
                "[0].data.validationCode",
            );
        }
    }

    #[test]
    fn each_missing_cloud_event_attribute_is_named() {
        for attribute in ["specversion", "id", "source", "type"] {
            let mut single = fixture(CLOUD_EVENT);
            single.as_object_mut().unwrap().remove(attribute);
            assert_refused(
                &error(&single, Schema::CloudEvent),
                INVALID_CLOUDEVENT,
                attribute,
            );

            let mut batch = fixture(CLOUD_EVENTS);
            batch[1][attribute] = json!(7);
            assert_refused(
                &error(&batch, Schema::CloudEventBatch),
                INVALID_CLOUDEVENT,
                &format!("[1].{attribute}"),
            );
        }

        let mut old = fixture(CLOUD_EVENT);
        old["specversion"] = json!("0.3");
        let refused = error(&old, Schema::CloudEvent);
        assert_refused(&refused, INVALID_CLOUDEVENT, "specversion");
        assert!(refused.to_string().contains("`0.3`"), "{refused}");

        let mut blank = fixture(CLOUD_EVENT);
        blank["id"] = json!("  ");
        assert_refused(&error(&blank, Schema::CloudEvent), INVALID_CLOUDEVENT, "id");
    }

    #[test]
    fn event_grid_envelopes_need_an_id_and_a_type() {
        let cases = [
            ("id", Value::Null, "missing_field"),
            ("id", json!(42), "invalid_field"),
            ("eventType", Value::Null, "missing_field"),
            ("eventType", json!(""), "empty_field"),
        ];
        for (field, value, code) in cases {
            let mut batch = fixture(EVENT_GRID_BATCH);
            batch[2][field] = value;
            assert_refused(
                &error(&batch, Schema::EventGrid),
                code,
                &format!("[2].{field}"),
            );
        }
    }

    #[test]
    fn the_body_decides_between_one_cloud_event_and_an_array_under_every_media_type() {
        let schemas = [
            Schema::EventGrid,
            Schema::CloudEvent,
            Schema::CloudEventBatch,
        ];
        for schema in schemas {
            let one = events(CLOUD_EVENT, schema);
            assert_eq!(
                stored(&one),
                vec![(
                    "PIM_8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e_activation",
                    EventKind::Activation
                )],
                "{schema:?}"
            );
            let many = events(CLOUD_EVENTS, schema);
            assert_eq!(many.events.len(), 2, "{schema:?}");
            assert_eq!(many.skipped.len(), 2, "{schema:?}");
        }
    }

    #[test]
    fn event_grid_schema_events_come_only_as_application_json_arrays() {
        assert_eq!(
            parse_delivery(b"[{", Schema::EventGrid, false)
                .unwrap_err()
                .code(),
            "malformed_json"
        );
        let event_grid_event = fixture(EVENT_GRID_BATCH)[1].clone();
        for schema in [Schema::CloudEvent, Schema::CloudEventBatch] {
            assert_refused(
                &error(&json!([event_grid_event.clone()]), schema),
                INVALID_CLOUDEVENT,
                "[0].specversion",
            );
            assert_refused(&error(&json!("events"), schema), "invalid_body", "body");
        }
        for body in [json!("events"), event_grid_event] {
            assert_refused(&error(&body, Schema::EventGrid), "invalid_body", "body");
        }
        assert_refused(
            &error(&json!([fixture(CLOUD_EVENT), 7]), Schema::CloudEventBatch),
            "invalid_field",
            "[1]",
        );
    }

    #[test]
    fn a_delivery_holds_at_most_1000_events() {
        let event = json!({"id": "1", "eventType": "Contoso.Nothing"});

        let most = parse(&Value::Array(vec![event.clone(); 1000]), Schema::EventGrid);
        let many = parse(&Value::Array(vec![event; 1001]), Schema::EventGrid);

        assert!(most.is_ok());
        assert_eq!(many.unwrap_err(), EventError::BatchTooLarge(1001));
    }

    #[test]
    fn audit_errors_name_the_event_the_record_and_the_field() {
        let mut batch = fixture(EVENT_GRID_BATCH);
        batch[0]["data"]["records"][0]["properties"]["targetResources"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["type"] != "Group");
        assert_refused(
            &error(&batch, Schema::EventGrid),
            "missing_target",
            "[0].data.records[0].properties.targetResources",
        );

        let mut single = fixture(CLOUD_EVENT);
        single["data"]["activityDateTime"] = json!("tomorrow");
        assert_refused(
            &error(&single, Schema::CloudEvent),
            "invalid_timestamp",
            "data.activityDateTime",
        );

        let mut records = fixture(CLOUD_EVENTS);
        records[0]["data"]["records"] = json!({"time": "2026-11-28T12:00:00Z"});
        assert_refused(
            &error(&records, Schema::CloudEventBatch),
            "invalid_field",
            "[0].data.records",
        );
    }

    #[test]
    fn warnings_name_the_event_too() {
        let mut single = fixture(CLOUD_EVENT);
        single["data"]["additionalDetails"][2]["value"] = json!("next Tuesday");

        let Delivery::Events(batch) = parse(&single, Schema::CloudEvent).unwrap() else {
            panic!("not a batch of events");
        };

        assert_eq!(batch.events[0].ends_at, None);
        assert!(
            batch.warnings[0].starts_with("data.additionalDetails[2].value: `next Tuesday`"),
            "{:?}",
            batch.warnings
        );
    }
}
