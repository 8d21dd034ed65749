//! The Graph emulator's own rules, driven over real HTTP with a plain HTTP client: the token
//! endpoint, the bearer check, the instance filters and paging, users and groups, the
//! subscription handshake, notifications to a receiver in the test, faults and the log.

// Test helpers fail loudly: a panic in a helper is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use graph_emulator::wire::{format_graph_time, odata_string, parse_graph_time};
use graph_emulator::{
    GraphEmulatorSettings, GraphFault, GraphGroup, GraphUser, NewInstance, RunningGraphEmulator,
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, INSTANCES_PATH,
    REAUTHORIZATION_REQUIRED,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Emu {
    emu: RunningGraphEmulator,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts Graph's error envelope with `code`; returns the message.
    fn graph_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(self.body["error"]["innerError"]["request-id"].is_string());
        self.body["error"]["message"].as_str().unwrap().to_owned()
    }
}

async fn into_resp(response: reqwest::Response) -> Resp {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp {
        status,
        headers,
        body,
    }
}

impl Emu {
    async fn start_with(change: impl FnOnce(&mut GraphEmulatorSettings)) -> Self {
        let mut settings = GraphEmulatorSettings::default();
        change(&mut settings);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let emu = RunningGraphEmulator::start(settings, listener)
            .await
            .unwrap();
        Self {
            emu,
            http: reqwest::Client::new(),
        }
    }

    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    fn scope(&self) -> String {
        format!("{}/.default", self.emu.base_url())
    }

    async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.emu.base_url());
        into_resp(
            self.http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn token(&self) -> String {
        let scope = self.scope();
        let resp = self
            .token_request(
                DEFAULT_TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", DEFAULT_CLIENT_ID),
                    ("client_secret", DEFAULT_CLIENT_SECRET),
                    ("scope", &scope),
                ],
            )
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.body["access_token"].as_str().unwrap().to_owned()
    }

    /// A Graph request below `/v1.0` (`path` includes any query).
    async fn graph(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.emu.graph_url())
        };
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_resp(request.send().await.unwrap()).await
    }

    async fn create_subscription(&self, token: &str, body: Value) -> Resp {
        self.graph(
            reqwest::Method::POST,
            "/subscriptions",
            Some(token),
            Some(body),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.graph(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.emu.control_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_resp(request.send().await.unwrap()).await
    }

    fn add_user(&self, id: &str) {
        self.emu.add_user(user(id));
    }

    fn add_group(&self, id: &str) {
        self.emu.add_group(GraphGroup {
            id: id.to_owned(),
            display_name: Some(format!("Group {id}")),
        });
    }
}

fn user(id: &str) -> GraphUser {
    GraphUser {
        id: id.to_owned(),
        user_principal_name: Some(format!("{id}@contoso.example")),
        given_name: Some("Given".into()),
        surname: Some("Family".into()),
        display_name: Some(format!("User {id}")),
        mail: None,
    }
}

fn instances_path(filter: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("{INSTANCES_PATH}?$filter={encoded}")
}

fn in_a_day() -> String {
    format_graph_time(OffsetDateTime::now_utc() + 24 * HOUR)
}

/// What a subscriber received.
#[derive(Debug, Clone)]
struct Inbound {
    validation_token: Option<String>,
    content_type: String,
    body: String,
}

/// How the receiver answers the validation handshake.
#[derive(Clone, Copy)]
enum Handshake {
    Echo,
    WrongEcho,
    Status(u16),
}

/// A subscriber: records every POST, answers handshakes per `Handshake`, notifications 202.
struct Receiver {
    url: String,
    inbound: Arc<Mutex<Vec<Inbound>>>,
    _server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(handshake: Handshake) -> Self {
        let inbound: Arc<Mutex<Vec<Inbound>>> = Arc::default();
        let recorded = Arc::clone(&inbound);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook?tenant=contoso",
            listener.local_addr().unwrap()
        );
        let server = HttpServer::new(move || {
            let recorded = Arc::clone(&recorded);
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let recorded = Arc::clone(&recorded);
                async move {
                    let validation_token =
                        url::form_urlencoded::parse(req.query_string().as_bytes())
                            .find(|(k, _)| k == "validationToken")
                            .map(|(_, v)| v.into_owned());
                    let content_type = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    recorded.lock().unwrap().push(Inbound {
                        validation_token: validation_token.clone(),
                        content_type,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    match (validation_token, handshake) {
                        (None, _) => HttpResponse::Accepted().finish(),
                        (Some(token), Handshake::Echo) => {
                            HttpResponse::Ok().content_type("text/plain").body(token)
                        }
                        (Some(_), Handshake::WrongEcho) => HttpResponse::Ok()
                            .content_type("text/plain")
                            .body("not-the-token"),
                        (Some(_), Handshake::Status(s)) => {
                            HttpResponse::build(actix_web::http::StatusCode::from_u16(s).unwrap())
                                .finish()
                        }
                    }
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            inbound,
            _server: handle,
        }
    }

    fn handshakes(&self) -> Vec<Inbound> {
        self.inbound
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.validation_token.is_some())
            .cloned()
            .collect()
    }

    fn notifications(&self) -> Vec<Value> {
        self.inbound
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.validation_token.is_none())
            .map(|i| {
                assert!(i.content_type.starts_with("application/json"), "{i:?}");
                serde_json::from_str(&i.body).unwrap()
            })
            .collect()
    }
}

/// An emulator, a receiver that passes the handshake, and a token.
async fn with_echoing_receiver() -> (Emu, Receiver, String) {
    let emu = Emu::start().await;
    let receiver = Receiver::start(Handshake::Echo).await;
    let token = emu.token().await;
    (emu, receiver, token)
}

fn subscription(url: &str, resource: &str, client_state: &str) -> Value {
    json!({
        "changeType": "updated",
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": in_a_day(),
        "clientState": client_state,
    })
}

// ---------------------------------------------------------------------------------------------
// Token endpoint and bearer check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_token_endpoint_issues_bearer_tokens_for_the_known_app() {
    // Arrange
    let emu = Emu::start_with(|s| s.token_lifetime = Duration::from_secs(120)).await;
    // Act
    let resp = emu
        .token_request(
            DEFAULT_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ],
        )
        .await;
    // Assert
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body["token_type"], "Bearer");
    assert_eq!(resp.body["expires_in"], 120);
    assert!(resp.body["access_token"]
        .as_str()
        .is_some_and(|t| t.len() > 20));
}

/// One way to ask for a token wrongly, and what the identity platform answers.
struct Refusal {
    tenant: &'static str,
    grant_type: &'static str,
    client_id: &'static str,
    client_secret: Option<&'static str>,
    scope: Option<&'static str>,
    error: &'static str,
    aad_code: u64,
}

const WRONG_SECRET: &str = "wrong-secret-xyz-123";

const REFUSALS: [Refusal; 6] = [
    Refusal {
        tenant: DEFAULT_TENANT_ID,
        grant_type: "client_credentials",
        client_id: DEFAULT_CLIENT_ID,
        client_secret: Some(WRONG_SECRET),
        scope: None,
        error: "invalid_client",
        aad_code: 7_000_215,
    },
    Refusal {
        tenant: DEFAULT_TENANT_ID,
        grant_type: "client_credentials",
        client_id: "someone-else",
        client_secret: Some(DEFAULT_CLIENT_SECRET),
        scope: None,
        error: "invalid_client",
        aad_code: 700_016,
    },
    Refusal {
        tenant: DEFAULT_TENANT_ID,
        grant_type: "client_credentials",
        client_id: DEFAULT_CLIENT_ID,
        client_secret: None,
        scope: None,
        error: "invalid_client",
        aad_code: 7_000_216,
    },
    Refusal {
        tenant: DEFAULT_TENANT_ID,
        grant_type: "password",
        client_id: DEFAULT_CLIENT_ID,
        client_secret: Some(DEFAULT_CLIENT_SECRET),
        scope: None,
        error: "unsupported_grant_type",
        aad_code: 70_003,
    },
    Refusal {
        tenant: DEFAULT_TENANT_ID,
        grant_type: "client_credentials",
        client_id: DEFAULT_CLIENT_ID,
        client_secret: Some(DEFAULT_CLIENT_SECRET),
        scope: Some("https://management.azure.com/.default"),
        error: "invalid_scope",
        aad_code: 1_002_012,
    },
    Refusal {
        tenant: "other-tenant",
        grant_type: "client_credentials",
        client_id: DEFAULT_CLIENT_ID,
        client_secret: Some(DEFAULT_CLIENT_SECRET),
        scope: None,
        error: "invalid_request",
        aad_code: 90_002,
    },
];

#[tokio::test]
async fn the_token_endpoint_refuses_like_the_identity_platform_without_echoing_the_secret() {
    let emu = Emu::start().await;
    let own_scope = emu.scope();
    for case in REFUSALS {
        let mut form = vec![
            ("grant_type", case.grant_type),
            ("client_id", case.client_id),
            ("scope", case.scope.unwrap_or(&own_scope)),
        ];
        form.extend(case.client_secret.map(|s| ("client_secret", s)));
        let resp = emu.token_request(case.tenant, &form).await;
        let code = case.aad_code;
        assert_eq!(resp.status, 400, "{}: {resp:?}", case.error);
        assert_eq!(resp.body["error"], case.error, "{resp:?}");
        assert_eq!(resp.body["error_codes"], json!([code]), "{resp:?}");
        let description = resp.body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}:")),
            "{description}"
        );
        assert!(resp.body["correlation_id"].is_string() && resp.body["trace_id"].is_string());
        assert!(
            !resp.body.to_string().contains(WRONG_SECRET),
            "{code}: secret echoed"
        );
    }
}

#[tokio::test]
async fn graph_requests_without_a_valid_token_get_401_with_graphs_envelope() {
    let emu = Emu::start_with(|s| s.token_lifetime = Duration::from_secs(1)).await;
    emu.add_user("u1");
    let expiring = emu.token().await;

    let none = emu
        .graph(reqwest::Method::GET, "/users/u1", None, None)
        .await;
    assert_eq!(
        none.graph_error(401, "InvalidAuthenticationToken"),
        "Access token is empty."
    );
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let made_up = emu.get("/users/u1", "made-up-token").await;
    made_up.graph_error(401, "InvalidAuthenticationToken");
    assert_eq!(emu.get("/users/u1", &expiring).await.status, 200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = emu.get("/users/u1", &expiring).await;
    assert!(expired
        .graph_error(401, "InvalidAuthenticationToken")
        .contains("expired"));

    let fresh = emu.token().await;
    assert_eq!(emu.get("/users/u1", &fresh).await.status, 200);
    emu.emu.revoke_tokens();
    emu.get("/users/u1", &fresh)
        .await
        .graph_error(401, "InvalidAuthenticationToken");
}

// ---------------------------------------------------------------------------------------------
// Assignment instances
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn instances_are_listed_for_the_filter_forms_and_other_filters_are_refused() {
    // Arrange: g1 has u1 activated, u2 assigned, u3 as owner; g2 has u1 activated.
    let emu = Emu::start().await;
    for id in ["u1", "u2", "u3"] {
        emu.add_user(id);
    }
    for id in ["g1", "g2", "o'brien"] {
        emu.add_group(id);
    }
    emu.emu.activate("g1", "u1", HOUR).await.unwrap();
    emu.emu.assign("g1", "u2").await.unwrap();
    emu.emu
        .add_instance(NewInstance::assignment("g1", "u3").as_owner())
        .await
        .unwrap();
    emu.emu.activate("g2", "u1", HOUR).await.unwrap();
    emu.emu.activate("o'brien", "u2", HOUR).await.unwrap();
    let token = emu.token().await;
    let principals = |resp: &Resp| -> Vec<String> {
        let mut p: Vec<String> = resp.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}:{}:{}",
                    i["principalId"].as_str().unwrap(),
                    i["accessId"].as_str().unwrap(),
                    i["assignmentType"].as_str().unwrap()
                )
            })
            .collect();
        p.sort();
        p
    };

    // Act + Assert: the accepted forms.
    let all = emu.get(&instances_path("groupId eq 'g1'"), &token).await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(
        principals(&all),
        [
            "u1:member:activated",
            "u2:member:assigned",
            "u3:owner:assigned"
        ]
    );
    let first = &all.body["value"][0];
    for field in ["id", "groupId", "startDateTime", "memberType"] {
        assert!(first[field].is_string(), "{field} in {first}");
    }
    assert!(all.body.get("@odata.nextLink").is_none());
    let quoted_group = format!("groupId eq {}", odata_string("o'brien"));
    for (filter, expected, has_end) in [
        (
            "groupId eq 'g1' and principalId eq 'u1'",
            "u1:member:activated",
            true,
        ),
        (
            "principalId eq 'u2' and groupId eq 'g1'",
            "u2:member:assigned",
            false,
        ),
        (quoted_group.as_str(), "u2:member:activated", true),
    ] {
        let resp = emu.get(&instances_path(filter), &token).await;
        assert_eq!(principals(&resp), [expected], "{filter}");
        let end = &resp.body["value"][0]["endDateTime"];
        assert_eq!(end.is_string(), has_end, "{filter}: {end}");
    }

    // Everything else is a 400.
    for filter in [
        "principalId eq 'u1'",
        "accessId eq 'member'",
        "groupId eq 'g1' or principalId eq 'u1'",
        "groupId eq g1",
        "groupId eq 'g1",
    ] {
        let resp = emu.get(&instances_path(filter), &token).await;
        let message = resp.graph_error(400, "BadRequest");
        assert!(message.contains("filter"), "{filter}: {message}");
    }
    emu.get(INSTANCES_PATH, &token)
        .await
        .graph_error(400, "BadRequest");
}

#[tokio::test]
async fn instances_are_paged_with_absolute_next_links_and_expired_ones_are_not_listed() {
    // Arrange: page size 2, five live activations and one that has ended.
    let emu = Emu::start_with(|s| s.page_size = 2).await;
    emu.add_group("g1");
    for i in 0..6 {
        emu.add_user(&format!("u{i}"));
    }
    for i in 0..5 {
        emu.emu
            .activate("g1", &format!("u{i}"), HOUR)
            .await
            .unwrap();
    }
    let now = OffsetDateTime::now_utc();
    emu.emu
        .add_instance(NewInstance {
            start: Some(now - 2 * HOUR),
            end: Some(now - HOUR),
            ..NewInstance::activation("g1", "u5", HOUR)
        })
        .await
        .unwrap();
    let token = emu.token().await;

    // Act: follow the links.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut next = Some(instances_path("groupId eq 'g1'"));
    while let Some(path) = next.take() {
        let page = emu.get(&path, &token).await;
        assert_eq!(page.status, 200, "{page:?}");
        let values = page.body["value"].as_array().unwrap();
        sizes.push(values.len());
        seen.extend(
            values
                .iter()
                .map(|v| v["principalId"].as_str().unwrap().to_owned()),
        );
        if let Some(link) = page.body["@odata.nextLink"].as_str() {
            assert!(
                link.starts_with(&format!("{}{INSTANCES_PATH}?", emu.emu.graph_url())),
                "{link}"
            );
            next = Some(link.to_owned());
        }
    }

    // Assert
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, ["u0", "u1", "u2", "u3", "u4"]);
    assert_eq!(
        emu.emu.state().instances.len(),
        6,
        "the ended one is stored, just not listed"
    );
    emu.get(
        &format!("{}&$skiptoken=zz", instances_path("groupId eq 'g1'")),
        &token,
    )
    .await
    .graph_error(400, "BadRequest");
}

// ---------------------------------------------------------------------------------------------
// Users and groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_and_groups_answer_selected_properties_and_404_with_graphs_envelope() {
    let emu = Emu::start().await;
    emu.add_user("u1");
    emu.add_group("g1");
    let token = emu.token().await;

    let full = emu.get("/users/u1", &token).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body["userPrincipalName"], "u1@contoso.example");
    assert!(
        full.body["mail"].is_null() && full.body.get("mail").is_some(),
        "unset properties are null"
    );
    let selected = emu.get("/users/u1?$select=id,displayName", &token).await;
    let keys: Vec<&String> = selected.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["@odata.context", "displayName", "id"]);
    let by_upn = emu
        .get("/users/U1@contoso.example?$select=id", &token)
        .await;
    assert_eq!(by_upn.body["id"], "u1");
    emu.get("/users/u1?$select=id,jobTitle", &token)
        .await
        .graph_error(400, "BadRequest");

    let group = emu.get("/groups/g1?$select=id,displayName", &token).await;
    assert_eq!(group.body["displayName"], "Group g1");

    let missing = emu.get("/users/nobody", &token).await;
    assert!(missing
        .graph_error(404, "Request_ResourceNotFound")
        .contains("'nobody'"));
    emu.get("/groups/nothing", &token)
        .await
        .graph_error(404, "Request_ResourceNotFound");
    assert!(missing.header("request-id").is_some());
    emu.get("/applications", &token)
        .await
        .graph_error(400, "BadRequest");
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_subscription_validates_both_urls_with_a_plain_text_handshake() {
    // Arrange
    let (emu, receiver, token) = with_echoing_receiver().await;
    let mut body = subscription(&receiver.url, "/groups/g1/members", "state-1");
    body["lifecycleNotificationUrl"] = json!(receiver.url);

    // Act
    let created = emu.create_subscription(&token, body).await;

    // Assert: 201 with the subscription; two handshakes (same URL twice), each text/plain with
    // a token that needed URL-decoding.
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["clientState"], "state-1");
    assert_eq!(created.body["applicationId"], DEFAULT_CLIENT_ID);
    assert_eq!(created.body["resource"], "/groups/g1/members");
    let handshakes = receiver.handshakes();
    assert_eq!(handshakes.len(), 2);
    for h in &handshakes {
        assert!(h.content_type.starts_with("text/plain"), "{h:?}");
        assert!(
            h.validation_token
                .as_deref()
                .unwrap()
                .starts_with("Validation: Testing"),
            "{h:?}"
        );
        assert!(h.body.is_empty());
    }
    let stored = emu.emu.subscriptions();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].client_state.expose(), "state-1");
    let listed = emu.get("/subscriptions", &token).await;
    assert_eq!(listed.body["value"][0]["id"], created.body["id"]);
    assert!(
        listed.body["value"][0]["clientState"].is_null(),
        "not shown after creation"
    );
}

#[tokio::test]
async fn a_failed_handshake_is_a_400_and_creates_nothing() {
    let emu = Emu::start_with(|s| s.validation_timeout = Duration::from_secs(2)).await;
    let token = emu.token().await;
    let wrong = Receiver::start(Handshake::WrongEcho).await;
    let failing = Receiver::start(Handshake::Status(500)).await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    for (url, expected) in [
        (wrong.url.as_str(), "exactly match"),
        (failing.url.as_str(), "200 OK"),
        (closed.as_str(), "could not be reached"),
    ] {
        let resp = emu
            .create_subscription(&token, subscription(url, "/groups/g1", "s"))
            .await;
        let message = resp.graph_error(400, "ValidationError");
        assert!(
            message.starts_with("Subscription validation request failed."),
            "{message}"
        );
        assert!(message.contains(expected), "{message}");
    }
    assert!(emu.emu.subscriptions().is_empty());
}

#[tokio::test]
async fn subscriptions_refuse_duplicates_and_bad_expiry_and_renew_and_delete() {
    let (emu, receiver, token) = with_echoing_receiver().await;
    let post = |body: Value| emu.create_subscription(&token, body);

    let created = post(subscription(&receiver.url, "/groups/g1", "s1")).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Same changeType and resource (spelt differently): 409, without a handshake.
    let handshakes = receiver.handshakes().len();
    let duplicate = post(subscription(&receiver.url, "Groups/g1/", "s2")).await;
    assert!(duplicate.graph_error(409, "Conflict").contains(&id));
    assert_eq!(receiver.handshakes().len(), handshakes);

    let mut too_far = subscription(&receiver.url, "/groups/g2", "s");
    too_far["expirationDateTime"] = json!(format_graph_time(
        OffsetDateTime::now_utc() + 30 * 24 * HOUR
    ));
    assert!(post(too_far)
        .await
        .graph_error(400, "InvalidRequest")
        .contains("41760"));
    let mut past = subscription(&receiver.url, "/groups/g2", "s");
    past["expirationDateTime"] = json!("2020-01-01T00:00:00Z");
    post(past).await.graph_error(400, "InvalidRequest");
    post(subscription(&receiver.url, "/me/messages", "s"))
        .await
        .graph_error(400, "InvalidRequest");
    post(subscription(&receiver.url, "/groups/g2", &"x".repeat(129)))
        .await
        .graph_error(400, "InvalidRequest");

    // Renew.
    let later = OffsetDateTime::now_utc() + 48 * HOUR;
    let renewed = emu
        .graph(
            reqwest::Method::PATCH,
            &format!("/subscriptions/{id}"),
            Some(&token),
            Some(json!({"expirationDateTime": format_graph_time(later)})),
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    let stored = emu.emu.subscriptions()[0].expiration;
    assert!((stored - later).abs() < time::Duration::milliseconds(1));
    assert_eq!(
        emu.get(&format!("/subscriptions/{id}"), &token).await.body["id"],
        id.as_str()
    );

    // Delete, then it is gone.
    let deleted = emu
        .graph(
            reqwest::Method::DELETE,
            &format!("/subscriptions/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let again = emu
        .graph(
            reqwest::Method::DELETE,
            &format!("/subscriptions/{id}"),
            Some(&token),
            None,
        )
        .await;
    again.graph_error(404, "ResourceNotFound");
    emu.graph(
        reqwest::Method::PATCH,
        &format!("/subscriptions/{id}"),
        Some(&token),
        Some(json!({"expirationDateTime": in_a_day()})),
    )
    .await
    .graph_error(404, "ResourceNotFound");
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_group_change_notifies_every_subscription_naming_the_group_with_graphs_shape() {
    // Arrange: five subscriptions, three of which concern g1.
    let (emu, receiver, token) = with_echoing_receiver().await;
    for (resource, state) in [
        ("/groups/g1", "state-group"),
        ("/groups/g1/members", "state-members"),
        ("/groups", "state-all-groups"),
        ("/groups/g2", "state-other-group"),
        ("/users", "state-users"),
    ] {
        let resp = emu
            .create_subscription(&token, subscription(&receiver.url, resource, state))
            .await;
        assert_eq!(resp.status, 201, "{resp:?}");
    }
    let by_id: std::collections::HashMap<String, String> = emu
        .emu
        .subscriptions()
        .into_iter()
        .map(|s| (s.id.clone(), s.client_state.expose().to_owned()))
        .collect();

    // Act
    let deliveries = emu.emu.notify_group_changed("g1").await;

    // Assert
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries
            .iter()
            .all(|d| d.accepted() && d.status == Some(202)),
        "{deliveries:?}"
    );
    let notifications = receiver.notifications();
    assert_eq!(notifications.len(), 3);
    let mut states: Vec<String> = Vec::new();
    for collection in &notifications {
        let items = collection["value"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        let item = &items[0];
        let subscription_id = item["subscriptionId"].as_str().unwrap();
        assert_eq!(
            item["clientState"].as_str(),
            Some(by_id[subscription_id].as_str()),
            "clientState of its own subscription"
        );
        states.push(by_id[subscription_id].clone());
        let keys: std::collections::BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "changeType",
                "clientState",
                "id",
                "resource",
                "resourceData",
                "subscriptionExpirationDateTime",
                "subscriptionId",
                "tenantId"
            ]
            .into()
        );
        assert_eq!(item["changeType"], "updated");
        assert_eq!(item["resource"], "Groups/g1");
        assert_eq!(item["tenantId"], DEFAULT_TENANT_ID);
        assert!(
            parse_graph_time(item["subscriptionExpirationDateTime"].as_str().unwrap()).is_some()
        );
        assert_eq!(
            item["resourceData"],
            json!({
                "@odata.type": "#Microsoft.Graph.Group",
                "@odata.id": "Groups/g1",
                "id": "g1",
                "organizationId": DEFAULT_TENANT_ID,
            })
        );
    }
    states.sort();
    assert_eq!(states, ["state-all-groups", "state-group", "state-members"]);
}

#[tokio::test]
async fn with_notify_on_change_activation_and_deactivation_over_the_control_api_notify() {
    // Arrange: everything through the HTTP control API.
    let (emu, receiver, token) = with_echoing_receiver().await;
    assert_eq!(
        emu.control(
            reqwest::Method::PATCH,
            "/settings",
            Some(json!({"notifyOnChange": true}))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        emu.control(
            reqwest::Method::POST,
            "/users",
            Some(json!({"id": "u1", "displayName": "U"}))
        )
        .await
        .status,
        201
    );
    assert_eq!(
        emu.control(reqwest::Method::POST, "/groups", Some(json!({"id": "g1"})))
            .await
            .status,
        201
    );
    emu.create_subscription(
        &token,
        subscription(&receiver.url, "/groups/g1/members", "s"),
    )
    .await;

    // Act
    let activated = emu
        .control(
            reqwest::Method::POST,
            "/groups/g1/activate",
            Some(json!({"principalId": "u1", "durationSeconds": 7200})),
        )
        .await;
    let deactivated = emu
        .control(
            reqwest::Method::POST,
            "/groups/g1/deactivate",
            Some(json!({"principalId": "u1"})),
        )
        .await;

    // Assert
    assert_eq!(activated.status, 201, "{activated:?}");
    assert_eq!(activated.body["assignmentType"], "activated");
    let start = parse_graph_time(activated.body["startDateTime"].as_str().unwrap()).unwrap();
    let end = parse_graph_time(activated.body["endDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(end - start, time::Duration::hours(2));
    assert_eq!(deactivated.body["removed"], 1);
    assert_eq!(receiver.notifications().len(), 2, "one per change");
    assert!(emu.emu.state().instances.is_empty());
    let unknown = emu
        .control(
            reqwest::Method::POST,
            "/groups/g1/activate",
            Some(json!({"principalId": "ghost"})),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn lifecycle_notifications_go_to_the_lifecycle_url_with_graphs_shape() {
    let (emu, receiver, token) = with_echoing_receiver().await;
    let mut body = subscription(&receiver.url, "/groups/g1", "life-state");
    body["lifecycleNotificationUrl"] = json!(receiver.url);
    let created = emu.create_subscription(&token, body).await;
    let id = created.body["id"].as_str().unwrap();

    let delivery = emu
        .emu
        .send_lifecycle_notification(id, REAUTHORIZATION_REQUIRED)
        .await
        .unwrap();

    assert!(delivery.accepted(), "{delivery:?}");
    let notifications = receiver.notifications();
    assert_eq!(notifications.len(), 1);
    let item = &notifications[0]["value"][0];
    assert_eq!(item["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(item["subscriptionId"], id);
    assert_eq!(item["clientState"], "life-state");
    assert_eq!(item["tenantId"], DEFAULT_TENANT_ID);
    assert!(item.get("resourceData").is_none() && item.get("changeType").is_none());
    // Over HTTP too; a subscription without a lifecycle URL cannot get one.
    let over_http = emu
        .control(
            reqwest::Method::POST,
            &format!("/subscriptions/{id}/lifecycle"),
            None,
        )
        .await;
    assert_eq!(over_http.status, 200, "{over_http:?}");
    let plain = emu
        .create_subscription(&token, subscription(&receiver.url, "/groups/g2", "s"))
        .await;
    let plain_id = plain.body["id"].as_str().unwrap();
    assert_eq!(
        emu.control(
            reqwest::Method::POST,
            &format!("/subscriptions/{plain_id}/lifecycle"),
            None
        )
        .await
        .status,
        400
    );
}

// ---------------------------------------------------------------------------------------------
// Faults and the request log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn faults_answer_the_next_graph_requests_and_the_log_shows_them() {
    let emu = Emu::start().await;
    emu.add_user("u1");
    let token = emu.token().await;
    emu.emu.inject(GraphFault::throttle(2, 7)).unwrap();
    let over_http = emu
        .control(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"status": 503, "count": 1})),
        )
        .await;
    assert_eq!(over_http.status, 201);
    assert_eq!(
        emu.control(
            reqwest::Method::POST,
            "/faults",
            Some(json!({"status": 200, "count": 1}))
        )
        .await
        .status,
        400
    );

    let statuses = [
        emu.get("/users/u1", &token).await,
        emu.get("/users/u1", &token).await,
        emu.get("/users/u1", &token).await,
        emu.get("/users/u1", &token).await,
    ];

    statuses[0].graph_error(429, "TooManyRequests");
    assert_eq!(statuses[0].header("retry-after"), Some("7"));
    statuses[1].graph_error(429, "TooManyRequests");
    statuses[2].graph_error(503, "serviceNotAvailable");
    assert_eq!(statuses[3].status, 200);
    // The token endpoint is never faulted.
    emu.emu.inject(GraphFault::error(500, 1)).unwrap();
    emu.token().await;
    assert_eq!(emu.emu.faults().len(), 1);

    let log = emu.emu.request_log();
    let summary: Vec<(String, u16, Option<String>)> = log
        .iter()
        .map(|r| (r.method.clone(), r.status, r.fault.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST".to_owned(), 200, None),
            ("GET".to_owned(), 429, Some("429".to_owned())),
            ("GET".to_owned(), 429, Some("429".to_owned())),
            ("GET".to_owned(), 503, Some("503".to_owned())),
            ("GET".to_owned(), 200, None),
            ("POST".to_owned(), 200, None),
        ]
    );
    assert!(log[0].path.ends_with("/oauth2/v2.0/token"));
    assert_eq!(log[1].path, "/v1.0/users/u1");
    assert!(
        log.iter().all(|r| r.body.is_none()),
        "no bodies: the token request carries the secret"
    );
    let over_http = emu.control(reqwest::Method::GET, "/requests", None).await;
    assert_eq!(
        over_http.body.as_array().unwrap().len(),
        log.len(),
        "control calls are not logged"
    );
}

#[tokio::test]
async fn the_control_api_shows_state_and_settings_without_the_secret_and_resets() {
    let emu = Emu::start().await;
    emu.add_user("u1");
    emu.add_group("g1");
    emu.emu.activate("g1", "u1", HOUR).await.unwrap();

    let state = emu.control(reqwest::Method::GET, "/state", None).await;
    assert_eq!(state.body["instances"][0]["principalId"], "u1");
    let settings = emu.control(reqwest::Method::GET, "/settings", None).await;
    assert_eq!(settings.body["clientId"], DEFAULT_CLIENT_ID);
    assert!(!settings.body.to_string().contains(DEFAULT_CLIENT_SECRET));
    let refused = emu
        .control(
            reqwest::Method::PATCH,
            "/settings",
            Some(json!({"clientSecret": "x"})),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        emu.control(reqwest::Method::DELETE, "/users/u1", None)
            .await
            .status,
        204
    );
    assert!(
        emu.emu.state().instances.is_empty(),
        "a removed user's instances go with it"
    );

    assert_eq!(
        emu.control(reqwest::Method::POST, "/reset", None)
            .await
            .status,
        204
    );
    assert!(emu.emu.state().groups.is_empty());
    assert_eq!(
        emu.control(reqwest::Method::GET, "/nope", None)
            .await
            .status,
        404
    );
}
