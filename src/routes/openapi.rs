//! `GET /openapi.json` (internal listener): the OpenAPI 3.1 description of every route, built by
//! [`document`] from [`OPERATIONS`] — the route table of this module, one entry per route the
//! `configure` functions register — and the schemas of the request and response bodies
//! ([`schemas`]). `tests/api/openapi.rs` checks the table against the routes actix actually
//! serves and the checked-in `docs/openapi.json` against [`document`]; regenerate that file with
//! `cargo run -- openapi > docs/openapi.json`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::Listener;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi));
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Nobody needs a credential (probes, metrics, handshakes).
    None,
    /// `X-Pimbridge-Signature` (HMAC) or a bearer JWT (`[intake.jwt]`).
    Intake,
    /// Every notification's `clientState`, checked inside the body.
    ClientState,
    /// `Authorization: Bearer <admin.token>`.
    Admin,
}

/// A query parameter: name, JSON type, description.
pub type Param = (&'static str, &'static str, &'static str);

/// One route: what it takes and what it answers.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    /// The actix route pattern (also the `route` label of the HTTP metrics).
    pub path: &'static str,
    /// The listeners that serve it.
    pub listeners: &'static [Listener],
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub security: Security,
    pub query: &'static [Param],
    /// The request body's schema in `components.schemas`.
    pub body: Option<&'static str>,
    /// Status, description and the body's schema (`text` for plain text).
    pub responses: &'static [(u16, &'static str, Option<&'static str>)],
}

const PUBLIC: &[Listener] = &[Listener::Public];
const INTERNAL: &[Listener] = &[Listener::Internal];
const BOTH: &[Listener] = &[Listener::Public, Listener::Internal];

/// The refusals every intake route shares.
const INTAKE_REFUSALS: [(u16, &str, Option<&str>); 6] = [
    (
        400,
        "A malformed or invalid body; `code` and `message` name the field",
        Some("Error"),
    ),
    (401, "No valid signature or token", Some("Error")),
    (
        413,
        "The body exceeds `intake.max_body_bytes` or the batch 1,000 events",
        Some("Error"),
    ),
    (415, "Not `application/json`", Some("Error")),
    (
        429,
        "Over the client's rate limit (`Retry-After`)",
        Some("Error"),
    ),
    (
        503,
        "The database is away; retry (`Retry-After`)",
        Some("Error"),
    ),
];

/// The refusals every admin route shares.
const ADMIN_REFUSALS: [(u16, &str, Option<&str>); 4] = [
    (401, "No or a wrong admin token", Some("Error")),
    (
        404,
        "The admin API is off (no `admin.token`), or the application is unknown",
        Some("Error"),
    ),
    (
        429,
        "Over the client's admin rate limit (`Retry-After`)",
        Some("Error"),
    ),
    (
        503,
        "The database is away or not migrated yet",
        Some("Error"),
    ),
];

const fn with<const N: usize, const M: usize>(
    first: [(u16, &'static str, Option<&'static str>); N],
    rest: [(u16, &'static str, Option<&'static str>); M],
) -> [(u16, &'static str, Option<&'static str>); 12] {
    let none = (0, "", None);
    let mut all = [none; 12];
    let mut i = 0;
    while i < N {
        all[i] = first[i];
        i += 1;
    }
    let mut j = 0;
    while j < M {
        all[N + j] = rest[j];
        j += 1;
    }
    all
}

const EVENTS_RESPONSES: [(u16, &str, Option<&str>); 12] = with(
    [(
        202,
        "Stored (committed) before the answer",
        Some("Accepted"),
    )],
    INTAKE_REFUSALS,
);
const EVENTGRID_RESPONSES: [(u16, &str, Option<&str>); 12] = with(
    [
        (
            200,
            "The subscription validation handshake answered",
            Some("EventGridValidation"),
        ),
        (202, "Stored before the answer", Some("EventGridAccepted")),
    ],
    INTAKE_REFUSALS,
);
const GRAPH_RESPONSES: [(u16, &str, Option<&str>); 12] = with(
    [
        (
            200,
            "`validationToken` echoed (the subscription handshake)",
            Some("text"),
        ),
        (
            202,
            "One hint per assigned group stored",
            Some("GraphAccepted"),
        ),
        (400, "Not a Graph notification collection", Some("Error")),
        (
            401,
            "A notification without the right `clientState`",
            Some("Error"),
        ),
        (404, "`[graph]` is not configured", Some("Error")),
        (503, "The database is away; Graph retries", Some("Error")),
    ],
    [],
);

macro_rules! admin {
    ($($ok:expr),*) => {
        with([$($ok),*], ADMIN_REFUSALS)
    };
}

const ADMIN_LIST: [(u16, &str, Option<&str>); 12] = admin!((
    200,
    "The applications and their state",
    Some("Applications")
));
const ADMIN_ONE: [(u16, &str, Option<&str>); 12] =
    admin!((200, "One application's state", Some("Application")));
const ADMIN_CYCLES: [(u16, &str, Option<&str>); 12] =
    admin!((200, "Recent cycles, newest first", Some("Cycles")));
const ADMIN_CYCLE_NOW: [(u16, &str, Option<&str>); 12] =
    admin!((202, "A cycle is requested", Some("Message")));
const ADMIN_TEST: [(u16, &str, Option<&str>); 12] = admin!(
    (200, "The SCIM endpoint answered", Some("ConnectionTest")),
    (502, "AWS refused the token or failed", Some("Error"))
);
const ADMIN_PROVISION: [(u16, &str, Option<&str>); 12] = admin!(
    (200, "The pair was reconciled", Some("Object")),
    (400, "An invalid request", Some("Error")),
    (502, "AWS refused or failed the change", Some("Error"))
);
const ADMIN_CLEAR: [(u16, &str, Option<&str>); 12] = admin!((
    200,
    "The quarantine is cleared and a cycle requested",
    Some("Object")
));
const ADMIN_CONFIRM: [(u16, &str, Option<&str>); 12] = admin!(
    (
        202,
        "The held removals are confirmed and a cycle requested",
        Some("Object")
    ),
    (409, "The latest cycle held no removals", Some("Error"))
);
const ADMIN_LOG: [(u16, &str, Option<&str>); 12] = admin!(
    (
        200,
        "Provisioning-log entries, newest first",
        Some("ProvisioningLog")
    ),
    (400, "An invalid filter", Some("Error"))
);
const ADMIN_JOBS: [(u16, &str, Option<&str>); 12] = admin!(
    (200, "Jobs, newest first", Some("Jobs")),
    (400, "An invalid filter", Some("Error"))
);
const ADMIN_RETRY: [(u16, &str, Option<&str>); 12] = admin!(
    (
        200,
        "Failed jobs moved back to the deferred lane",
        Some("Object")
    ),
    (400, "An invalid body", Some("Error"))
);

const NAME: Param = ("name", "string", "");
const LIMIT: Param = ("limit", "integer", "Rows to return (default 100)");

/// Every route, in the order of the document.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/v1/events",
        listeners: PUBLIC,
        id: "postEvents",
        summary: "Record one activation or deactivation, or a batch of up to 1,000",
        tag: "intake",
        security: Security::Intake,
        query: &[],
        body: Some("EventOrBatch"),
        responses: &EVENTS_RESPONSES,
    },
    Operation {
        method: "post",
        path: "/webhooks/audit",
        listeners: PUBLIC,
        id: "postAuditRecords",
        summary: "Record Entra audit-log records (an Azure Monitor export); records other than PIM activations and deactivations are ignored",
        tag: "intake",
        security: Security::Intake,
        query: &[],
        body: Some("AuditRecords"),
        responses: &EVENTS_RESPONSES,
    },
    Operation {
        method: "post",
        path: "/webhooks/eventgrid",
        listeners: PUBLIC,
        id: "postEventGrid",
        summary: "Record an Event Grid delivery (Event Grid schema or CloudEvents), answering its validation handshake",
        tag: "intake",
        security: Security::Intake,
        query: &[],
        body: Some("EventGridDelivery"),
        responses: &EVENTGRID_RESPONSES,
    },
    Operation {
        method: "options",
        path: "/webhooks/eventgrid",
        listeners: PUBLIC,
        id: "eventGridAbuseProtection",
        summary: "CloudEvents abuse-protection handshake: consents to the `WebHook-Request-Origin`",
        tag: "intake",
        security: Security::None,
        query: &[],
        body: None,
        responses: &[
            (200, "Consent (`WebHook-Allowed-Origin`, `WebHook-Allowed-Rate`)", None),
            (400, "No `WebHook-Request-Origin`", Some("Error")),
        ],
    },
    Operation {
        method: "post",
        path: "/webhooks/graph",
        listeners: PUBLIC,
        id: "postGraphNotifications",
        summary: "Microsoft Graph change notifications (hints) and lifecycle events; the subscription handshake",
        tag: "intake",
        security: Security::ClientState,
        query: &[("validationToken", "string", "Graph's subscription handshake: echoed as text/plain")],
        body: Some("GraphNotifications"),
        responses: &GRAPH_RESPONSES,
    },
    Operation {
        method: "get",
        path: "/health/live",
        listeners: BOTH,
        id: "live",
        summary: "Liveness: the process answers",
        tag: "health",
        security: Security::None,
        query: &[],
        body: None,
        responses: &[(200, "Alive", Some("Status"))],
    },
    Operation {
        method: "get",
        path: "/health/ready",
        listeners: BOTH,
        id: "ready",
        summary: "Readiness: the database answers and the schema is at this binary's version",
        tag: "health",
        security: Security::None,
        query: &[],
        body: None,
        responses: &[
            (200, "Ready", Some("Status")),
            (503, "Not ready, with the reason", Some("Status")),
        ],
    },
    Operation {
        method: "get",
        path: "/metrics",
        listeners: INTERNAL,
        id: "metrics",
        summary: "Prometheus text exposition (memory only; no database query)",
        tag: "operations",
        security: Security::None,
        query: &[],
        body: None,
        responses: &[(200, "The exposition", Some("text"))],
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        listeners: INTERNAL,
        id: "openapi",
        summary: "This document",
        tag: "operations",
        security: Security::None,
        query: &[],
        body: None,
        responses: &[(200, "OpenAPI 3.1", Some("Object"))],
    },
    Operation {
        method: "get",
        path: "/admin/applications",
        listeners: INTERNAL,
        id: "listApplications",
        summary: "Applications: queues, next and current cycle, last cycle, quarantine",
        tag: "admin",
        security: Security::Admin,
        query: &[],
        body: None,
        responses: &ADMIN_LIST,
    },
    Operation {
        method: "get",
        path: "/admin/applications/{name}",
        listeners: INTERNAL,
        id: "getApplication",
        summary: "One application's state",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: None,
        responses: &ADMIN_ONE,
    },
    Operation {
        method: "get",
        path: "/admin/applications/{name}/cycles",
        listeners: INTERNAL,
        id: "listCycles",
        summary: "Recent sync cycles of an application",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME, LIMIT],
        body: None,
        responses: &ADMIN_CYCLES,
    },
    Operation {
        method: "post",
        path: "/admin/applications/{name}/cycles",
        listeners: INTERNAL,
        id: "startCycle",
        summary: "Start a sync cycle now",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: None,
        responses: &ADMIN_CYCLE_NOW,
    },
    Operation {
        method: "post",
        path: "/admin/applications/{name}/test-connection",
        listeners: INTERNAL,
        id: "testConnection",
        summary: "One authenticated request to the application's SCIM endpoint",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: None,
        responses: &ADMIN_TEST,
    },
    Operation {
        method: "post",
        path: "/admin/applications/{name}/provision",
        listeners: INTERNAL,
        id: "provision",
        summary: "Provision one membership on demand (an operator's grant), or end it",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: Some("ProvisionRequest"),
        responses: &ADMIN_PROVISION,
    },
    Operation {
        method: "post",
        path: "/admin/applications/{name}/quarantine/clear",
        listeners: INTERNAL,
        id: "clearQuarantine",
        summary: "End a quarantine and run a cycle now",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: None,
        responses: &ADMIN_CLEAR,
    },
    Operation {
        method: "post",
        path: "/admin/applications/{name}/removals/confirm",
        listeners: INTERNAL,
        id: "confirmRemovals",
        summary: "Confirm the removals a held cycle held back (more than max_removals_per_cycle) and run a cycle now",
        tag: "admin",
        security: Security::Admin,
        query: &[NAME],
        body: None,
        responses: &ADMIN_CONFIRM,
    },
    Operation {
        method: "get",
        path: "/admin/provisioning-log",
        listeners: INTERNAL,
        id: "provisioningLog",
        summary: "Provisioning-log entries, newest first",
        tag: "admin",
        security: Security::Admin,
        query: &[
            ("application", "string", "Only this application"),
            ("status", "string", "succeeded, skipped, retrying, failed, superseded or held"),
            (
                "action",
                "string",
                "add, remove, create_user, update_user or create_group",
            ),
            ("cycle", "integer", "Only this cycle"),
            ("principal", "string", "Only this Entra user"),
            ("group", "string", "Only this Entra group"),
            ("since", "string", "RFC 3339: entries at or after"),
            ("before", "integer", "Entries with a smaller id (paging)"),
            LIMIT,
        ],
        body: None,
        responses: &ADMIN_LOG,
    },
    Operation {
        method: "get",
        path: "/admin/jobs",
        listeners: INTERNAL,
        id: "listJobs",
        summary: "Jobs, e.g. `state=failed` with their last error",
        tag: "admin",
        security: Security::Admin,
        query: &[
            ("application", "string", "Only this application"),
            ("state", "string", "pending, running, done, failed or superseded"),
            LIMIT,
        ],
        body: None,
        responses: &ADMIN_JOBS,
    },
    Operation {
        method: "post",
        path: "/admin/jobs/retry",
        listeners: INTERNAL,
        id: "retryJobs",
        summary: "Failed jobs back to the deferred lane, and a cycle now",
        tag: "admin",
        security: Security::Admin,
        query: &[],
        body: Some("RetryRequest"),
        responses: &ADMIN_RETRY,
    },
];

/// The schemas of the bodies, by name.
pub fn schemas() -> Value {
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let count = json!({"type": "integer", "minimum": 0});
    let event = json!({
        "type": "object",
        "required": ["id", "type", "occurredAt", "groupId", "principalId"],
        "properties": {
            "id": {"type": "string", "description": "The sender's id; a redelivery changes nothing"},
            "type": {"type": "string", "enum": ["activation", "deactivation"]},
            "occurredAt": time,
            "groupId": {"type": "string", "description": "Entra group (object id)"},
            "principalId": {"type": "string", "description": "Entra user (object id)"},
            "endsAt": {"type": "string", "format": "date-time", "description": "When the activation ends"},
            "user": {
                "type": "object",
                "description": "Attributes to create the user in AWS when it does not exist there",
                "properties": {
                    "userName": string, "givenName": string, "familyName": string,
                    "displayName": string, "email": string
                }
            },
            "group": {
                "type": "object",
                "properties": {"displayName": {"type": "string", "description": "The AWS group's name"}}
            }
        }
    });
    json!({
        "Event": event,
        "EventOrBatch": {
            "oneOf": [
                {"$ref": "#/components/schemas/Event"},
                {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/Event"}}
            ]
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted", "duplicates"],
            "properties": {"accepted": count, "duplicates": count}
        },
        "AuditRecords": {
            "type": "object",
            "required": ["records"],
            "description": "Entra audit-log records as Azure Monitor exports them (docs/webhooks.md)",
            "properties": {"records": {"type": "array", "items": {"type": "object"}}}
        },
        "EventGridDelivery": {
            "description": "Event Grid schema (an array of events), a CloudEvent, or a CloudEvents batch; Entra audit records or Graph notifications inside",
            "oneOf": [
                {"type": "array", "items": {"type": "object"}},
                {"type": "object"}
            ]
        },
        "EventGridValidation": {
            "type": "object",
            "required": ["validationResponse"],
            "properties": {"validationResponse": string}
        },
        "EventGridAccepted": {
            "type": "object",
            "properties": {"accepted": count, "duplicates": count, "ignored": count, "hints": count}
        },
        "GraphNotifications": {
            "type": "object",
            "required": ["value"],
            "properties": {
                "value": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "subscriptionId": string,
                            "clientState": {"type": "string", "description": "Must equal graph.client_state"},
                            "changeType": string,
                            "resource": string,
                            "lifecycleEvent": string,
                            "resourceData": {"type": "object"}
                        }
                    }
                }
            }
        },
        "GraphAccepted": {
            "type": "object",
            "properties": {"hints": count, "ignored": count}
        },
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code, e.g. invalid_timestamp, rate_limited"},
                "message": string
            }
        },
        "Status": {
            "type": "object",
            "properties": {"status": string, "reason": string}
        },
        "Object": {"type": "object"},
        "Message": {
            "type": "object",
            "properties": {"application": string, "message": string}
        },
        "Application": {
            "type": "object",
            "description": "Queues (immediate, deferred, failed), next cycle, current cycle with progress, last cycle, quarantine",
            "properties": {"name": string}
        },
        "Applications": {
            "type": "object",
            "properties": {"applications": {"type": "array", "items": {"$ref": "#/components/schemas/Application"}}}
        },
        "Cycles": {
            "type": "object",
            "properties": {"cycles": {"type": "array", "items": {"type": "object"}}}
        },
        "ConnectionTest": {
            "type": "object",
            "properties": {"application": string, "ok": {"type": "boolean"}, "elapsedMs": {"type": "number"}}
        },
        "ProvisioningLog": {
            "type": "object",
            "properties": {"entries": {"type": "array", "items": {"type": "object"}}}
        },
        "Jobs": {
            "type": "object",
            "properties": {"jobs": {"type": "array", "items": {"type": "object"}}}
        },
        "ProvisionRequest": {
            "type": "object",
            "required": ["action", "groupId"],
            "additionalProperties": false,
            "properties": {
                "action": {"type": "string", "enum": ["add", "remove"]},
                "principalId": {"type": "string", "description": "Without it, `add` provisions the group alone"},
                "groupId": string,
                "endsAt": time,
                "user": {"type": "object"},
                "group": {"type": "object"}
            }
        },
        "RetryRequest": {
            "type": "object",
            "properties": {
                "application": {"type": "string", "description": "Only this application's failed jobs"},
                "ids": {"type": "array", "items": {"type": "integer"}, "description": "Only these jobs"}
            }
        }
    })
}

fn security(security: Security) -> Value {
    match security {
        Security::None | Security::ClientState => json!([]),
        Security::Intake => json!([{"hmacSignature": []}, {"bearerJwt": []}]),
        Security::Admin => json!([{"adminToken": []}]),
    }
}

fn operation(op: &Operation) -> Value {
    let mut parameters = Vec::new();
    for (name, kind, description) in op.query {
        let in_path = op.path.contains(&format!("{{{name}}}"));
        let mut parameter = json!({
            "name": name,
            "in": if in_path { "path" } else { "query" },
            "required": in_path,
            "schema": {"type": kind},
        });
        if in_path {
            parameter["description"] = json!("The application's name");
        } else if !description.is_empty() {
            parameter["description"] = json!(description);
        }
        parameters.push(parameter);
    }
    let mut responses = Map::new();
    for (status, description, schema) in op.responses.iter().filter(|r| r.0 != 0) {
        let mut response = json!({"description": description});
        match schema {
            Some("text") => {
                response["content"] = json!({"text/plain": {"schema": {"type": "string"}}});
            }
            Some(name) => {
                response["content"] = json!({"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{name}")}
                }});
            }
            None => {}
        }
        responses.insert(status.to_string(), response);
    }
    let listeners: Vec<&str> = op.listeners.iter().map(|l| l.label()).collect();
    let mut value = json!({
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "x-pimbridge-listeners": listeners,
        "security": security(op.security),
        "responses": responses,
    });
    if !parameters.is_empty() {
        value["parameters"] = json!(parameters);
    }
    if let Some(body) = op.body {
        value["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{body}")}
            }}
        });
    }
    value
}

/// The OpenAPI 3.1 document of every route.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        item[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pimbridge",
            "version": crate::metrics::VERSION,
            "description": "Microsoft Entra PIM-for-Groups activations to AWS IAM Identity Center. Two listeners: the public one (server.listen, 8080) serves the inputs and the probes; the internal one (server.internal_listen, 9090) serves /metrics, the admin API and this document. Each operation names its listeners in x-pimbridge-listeners.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [
            {"url": "http://localhost:8080", "description": "public listener (server.listen)"},
            {"url": "http://localhost:9090", "description": "internal listener (server.internal_listen)"}
        ],
        "tags": [
            {"name": "intake", "description": "Events in (public listener)"},
            {"name": "health", "description": "Probes (both listeners)"},
            {"name": "operations", "description": "Metrics and this document (internal listener)"},
            {"name": "admin", "description": "The operators' API (internal listener)"}
        ],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "hmacSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Pimbridge-Signature",
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" under intake.hmac_secret>"
                },
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token of a configured issuer and audience ([intake.jwt])"
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "admin.token"
                }
            }
        }
    })
}
