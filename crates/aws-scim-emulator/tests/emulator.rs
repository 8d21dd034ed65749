//! The AWS SCIM emulator, driven over real HTTP (a checklist of the AWS behaviour it reproduces).

// Test helpers outside `#[test]` functions panic on purpose when the harness itself breaks.
#![allow(clippy::expect_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use aws_scim_emulator::{EmulatorSettings, Fault, RedundantMemberChange, RunningEmulator};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const DUPLICATE: &str = "Refused to create a new, duplicate resource.";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Emu {
    emu: RunningEmulator,
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .expect("response has an id")
            .to_owned()
    }

    fn resources(&self) -> Vec<Value> {
        self.body["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("pimbridge-emulator-tests/1.0")
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

async fn start_with(settings: EmulatorSettings) -> Emu {
    let token = settings.tokens[0].clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let emu = RunningEmulator::start(settings, listener)
        .await
        .expect("emulator starts");
    let base = emu.scim_base_url();
    Emu {
        emu,
        http: client(),
        base,
        token,
    }
}

async fn start() -> Emu {
    start_with(EmulatorSettings::default()).await
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body readable");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

impl Emu {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json");
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        into_resp(
            req.send()
                .await
                .expect("request succeeds at transport level"),
        )
        .await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, ops: Value) -> Resp {
        self.send(
            Method::PATCH,
            path,
            Some(json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    async fn create_user(&self, name: &str) -> String {
        let r = self.post("/Users", user(name)).await;
        assert_eq!(r.status, 201, "creating {name}: {:?}", r.body);
        r.id()
    }

    async fn create_group(&self, name: &str) -> String {
        let r = self.post("/Groups", json!({"displayName": name})).await;
        assert_eq!(r.status, 201, "creating {name}: {:?}", r.body);
        r.id()
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.control_url()));
        if let Some(body) = body {
            req = req.json(&body);
        }
        into_resp(req.send().await.expect("control request succeeds")).await
    }
}

type RemoveAttr = fn(&mut Value);

fn user(name: &str) -> Value {
    json!({
        "userName": name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "displayName": format!("Display {name}"),
        "emails": [{"value": format!("{name}@example.com"), "type": "work", "primary": true}],
    })
}

fn members(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|id| json!({"value": id})).collect())
}

fn q(filter: &str) -> String {
    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect()
}

fn assert_envelope(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "body: {:?}", r.body);
    assert_eq!(r.body["schema"], json!([ERROR_URN]), "body: {:?}", r.body);
    assert_eq!(r.body["schemas"], json!([ERROR_URN]));
    assert_eq!(r.body["status"], json!(status.to_string()));
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(r.body.get("scimType").is_none());
    let rid = r.body["exceptionRequestId"]
        .as_str()
        .expect("exceptionRequestId");
    assert!(uuid::Uuid::parse_str(rid).is_ok(), "{rid} is a uuid");
    let ts = r.body["timeStamp"].as_str().expect("timeStamp");
    let shape = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$").expect("regex");
    assert!(shape.is_match(ts), "timeStamp {ts}");
}

fn assert_duplicate(r: &Resp) {
    assert_envelope(r, 409);
    assert_eq!(r.body["detail"], json!(DUPLICATE));
}

// ---------------------------------------------------------------------------------------------
// Authentication, User-Agent, routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_bearer_token_is_refused_with_401_and_the_aws_envelope() {
    // Arrange
    let mut emu = start().await;
    emu.token = "not-the-token".into();

    // Act
    let r = emu.get("/Users").await;

    // Assert
    assert_envelope(&r, 401);
}

#[tokio::test]
async fn a_missing_authorization_header_is_refused_with_401() {
    // Arrange
    let emu = start().await;

    // Act
    let r = into_resp(emu.http.get(emu.url("/Users")).send().await.expect("sent")).await;

    // Assert
    assert_envelope(&r, 401);
}

#[tokio::test]
async fn an_unknown_tenant_id_is_refused_with_401() {
    // Arrange
    let emu = start().await;
    let url = emu.url("/Users").replace(
        "kE3934e0444-9ba8-41e7-b468-2fecf5b4fa22",
        "bdh6a5e3698-0fc6-4232-a028-fea1a99ff77a",
    );

    // Act
    let r = into_resp(
        emu.http
            .get(url)
            .bearer_auth(&emu.token)
            .send()
            .await
            .expect("sent"),
    )
    .await;

    // Assert
    assert_envelope(&r, 401);
}

#[tokio::test]
async fn a_second_configured_token_is_accepted_too() {
    // Arrange
    let mut settings = EmulatorSettings::default();
    settings.tokens.push("second-token".into());
    let mut emu = start_with(settings).await;
    emu.token = "second-token".into();

    // Act
    let r = emu.get("/Users").await;

    // Assert
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_request_without_user_agent_is_refused_with_403_and_the_envelope() {
    // Arrange
    let emu = start().await;
    let bare = reqwest::Client::new(); // reqwest sends no User-Agent unless told to

    // Act
    let r = into_resp(
        bare.get(emu.url("/Users"))
            .bearer_auth(&emu.token)
            .send()
            .await
            .expect("sent"),
    )
    .await;

    // Assert
    assert_envelope(&r, 403);
}

#[tokio::test]
async fn the_user_agent_requirement_can_be_switched_off() {
    // Arrange
    let settings = EmulatorSettings {
        require_user_agent: false,
        ..EmulatorSettings::default()
    };
    let emu = start_with(settings).await;

    // Act
    let r = reqwest::Client::new()
        .get(emu.url("/Users"))
        .bearer_auth(&emu.token)
        .send()
        .await
        .expect("sent");

    // Assert
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn routes_answer_with_and_without_a_trailing_slash() {
    // Arrange
    let emu = start().await;

    // Act
    let plain = emu.get("/Users").await;
    let slashed = emu.get("/Users/").await;
    let config = emu.get("/ServiceProviderConfig/").await;

    // Assert
    assert_eq!(
        (plain.status, slashed.status, config.status),
        (200, 200, 200)
    );
}

#[tokio::test]
async fn every_response_carries_x_amzn_request_id_matching_the_error_request_id() {
    // Arrange
    let emu = start().await;

    // Act
    let ok = emu.get("/Users").await;
    let err = emu.get("/Users/does-not-exist").await;

    // Assert
    assert!(ok.header("x-amzn-requestid").is_some());
    assert_envelope(&err, 404);
    assert_eq!(
        err.header("x-amzn-requestid"),
        err.body["exceptionRequestId"].as_str()
    );
}

#[tokio::test]
async fn bulk_me_and_search_endpoints_are_unsupported_with_400() {
    // Arrange
    let emu = start().await;

    // Act
    let bulk = emu.post("/Bulk", json!({})).await;
    let me = emu.get("/Me").await;
    let search = emu.post("/Users/.search", json!({})).await;

    // Assert
    assert_envelope(&bulk, 400);
    assert_envelope(&me, 400);
    assert_envelope(&search, 400);
}

#[tokio::test]
async fn an_unknown_scim_path_is_404_with_the_envelope() {
    // Arrange
    let emu = start().await;

    // Act
    let r = emu.get("/Widgets").await;

    // Assert
    assert_envelope(&r, 404);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_400() {
    // Arrange
    let emu = start().await;

    // Act
    let r = into_resp(
        emu.http
            .post(emu.url("/Users"))
            .bearer_auth(&emu.token)
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;

    // Assert
    assert_envelope(&r, 400);
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn service_provider_config_advertises_bearer_auth_patch_and_no_bulk() {
    // Arrange
    let emu = start().await;

    // Act
    let r = emu.get("/ServiceProviderConfig").await;

    // Assert
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["authenticationSchemes"][0]["type"],
        json!("oauthbearertoken")
    );
    assert_eq!(r.body["patch"]["supported"], json!(true));
    assert_eq!(r.body["bulk"]["supported"], json!(false));
    assert_eq!(
        r.body["filter"],
        json!({"supported": true, "maxResults": 50})
    );
    assert_eq!(r.body["etag"]["supported"], json!(false));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
}

#[tokio::test]
async fn schemas_lists_three_schemas_and_each_can_be_fetched_by_urn() {
    // Arrange
    let emu = start().await;

    // Act
    let list = emu.get("/Schemas").await;
    let user_schema = emu
        .get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User")
        .await;
    let unknown = emu.get("/Schemas/urn:example:nope").await;

    // Assert
    assert_eq!(list.body["totalResults"], json!(3));
    let ids: Vec<Value> = list.resources().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(
        ids,
        vec![
            json!("urn:ietf:params:scim:schemas:core:2.0:User"),
            json!(ENTERPRISE),
            json!("urn:ietf:params:scim:schemas:core:2.0:Group"),
        ]
    );
    let user_name = user_schema.body["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "userName").cloned())
        .expect("userName attribute");
    assert_eq!(user_name["caseExact"], json!(false));
    assert_eq!(user_name["required"], json!(true));
    assert_envelope(&unknown, 404);
}

#[tokio::test]
async fn resource_types_lists_user_with_a_required_enterprise_extension_and_group() {
    // Arrange
    let emu = start().await;

    // Act
    let r = emu.get("/ResourceTypes").await;

    // Assert
    assert_eq!(r.body["totalResults"], json!(2));
    let res = r.resources();
    assert_eq!(res[0]["endpoint"], json!("/Users"));
    assert_eq!(
        res[0]["schemaExtensions"],
        json!([{"schema": ENTERPRISE, "required": true}])
    );
    assert_eq!(res[1]["endpoint"], json!("/Groups"));
}

// ---------------------------------------------------------------------------------------------
// Users: create and validation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_user_returns_201_with_id_meta_and_core_schema_only() {
    // Arrange
    let emu = start().await;

    // Act
    let r = emu.post("/Users", user("alice")).await;

    // Assert
    assert_eq!(r.status, 201);
    assert!(!r.id().is_empty());
    assert_eq!(r.body["userName"], json!("alice"));
    assert_eq!(r.body["active"], json!(true));
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
    );
    assert_eq!(r.body["meta"]["resourceType"], json!("User"));
    let created = r.body["meta"]["created"].as_str().expect("created");
    let shape = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").expect("regex");
    assert!(shape.is_match(created), "{created}");
    assert!(r.body["meta"].get("location").is_none());
    assert!(r.body["meta"].get("version").is_none());
}

#[tokio::test]
async fn a_user_with_enterprise_data_gets_the_enterprise_schema_and_manager_value_only() {
    // Arrange
    let emu = start().await;
    let mut body = user("bjensen");
    body[ENTERPRISE] = json!({
        "department": "Tour Operations",
        "manager": {"value": "m-1", "$ref": "../Users/m-1"}
    });

    // Act
    let r = emu.post("/Users", body).await;

    // Assert
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE])
    );
    assert_eq!(r.body[ENTERPRISE]["manager"], json!({"value": "m-1"}));
    assert_eq!(r.body[ENTERPRISE]["department"], json!("Tour Operations"));
}

#[tokio::test]
async fn a_user_missing_any_required_attribute_is_refused_with_400() {
    // Arrange
    let emu = start().await;
    let removals: [(&str, RemoveAttr); 4] = [
        ("userName", |u| {
            u.as_object_mut().map(|o| o.remove("userName"));
        }),
        ("name.givenName", |u| {
            u["name"].as_object_mut().map(|o| o.remove("givenName"));
        }),
        ("name.familyName", |u| {
            u["name"].as_object_mut().map(|o| o.remove("familyName"));
        }),
        ("displayName", |u| {
            u.as_object_mut().map(|o| o.remove("displayName"));
        }),
    ];

    for (what, remove) in removals {
        let mut body = user("alice");
        remove(&mut body);

        // Act
        let r = emu.post("/Users", body).await;

        // Assert
        assert_envelope(&r, 400);
        assert!(
            r.body["detail"].as_str().is_some_and(|d| d.contains(what)),
            "{what}: {:?}",
            r.body
        );
    }
    assert!(emu.emu.state().users.is_empty());
}

#[tokio::test]
async fn a_user_with_two_emails_is_refused_with_the_list_limit_detail() {
    // Arrange
    let emu = start().await;
    let mut body = user("alice");
    body["emails"] = json!([
        {"value": "a@example.com", "primary": true},
        {"value": "b@example.com", "primary": false}
    ]);

    // Act
    let r = emu.post("/Users", body).await;

    // Assert
    assert_envelope(&r, 400);
    assert_eq!(
        r.body["detail"],
        json!("List attribute emails exceeds allowed limit of 1")
    );
}

#[tokio::test]
async fn two_phone_numbers_addresses_or_roles_are_refused_too() {
    // Arrange
    let emu = start().await;
    let two = |attr: &str| {
        let mut body = user("alice");
        body[attr] = json!([{"value": "1", "type": "work"}, {"value": "2", "type": "home"}]);
        body
    };

    for attr in ["phoneNumbers", "addresses", "roles"] {
        // Act
        let r = emu.post("/Users", two(attr)).await;

        // Assert
        assert_envelope(&r, 400);
        assert_eq!(
            r.body["detail"],
            json!(format!("List attribute {attr} exceeds allowed limit of 1"))
        );
    }
}

#[tokio::test]
async fn an_email_not_marked_primary_is_refused() {
    // Arrange
    let emu = start().await;
    let mut missing = user("alice");
    missing["emails"] = json!([{"value": "a@example.com", "type": "work"}]);
    let mut false_primary = user("alice");
    false_primary["emails"] = json!([{"value": "a@example.com", "primary": false}]);

    // Act
    let r1 = emu.post("/Users", missing).await;
    let r2 = emu.post("/Users", false_primary).await;

    // Assert
    assert_envelope(&r1, 400);
    assert_envelope(&r2, 400);
}

#[tokio::test]
async fn strict_characters_are_refused_in_user_and_group_attributes() {
    // Arrange
    let emu = start().await;

    for bad in ["\t", "\r", "\n", "\"", "<", ">", ";", ":", "%"] {
        let mut body = user("alice");
        body["displayName"] = json!(format!("Alice{bad}Liddell"));

        // Act
        let r = emu.post("/Users", body).await;
        let g = emu
            .post(
                "/Groups",
                json!({"displayName": format!("Hello{bad} there")}),
            )
            .await;

        // Assert
        assert_envelope(&r, 400);
        assert_envelope(&g, 400);
    }
    let mut external = user("alice");
    external["externalId"] = json!("a:b");
    assert_envelope(&emu.post("/Users", external).await, 400);
    assert!(emu.emu.state().users.is_empty());
}

#[tokio::test]
async fn strict_characters_are_accepted_when_the_mode_is_off() {
    // Arrange
    let settings = EmulatorSettings {
        strict_characters: false,
        ..EmulatorSettings::default()
    };
    let emu = start_with(settings).await;
    let mut body = user("alice");
    body["displayName"] = json!("Alice: <the> \"first\"; 100%");

    // Act
    let r = emu.post("/Users", body).await;
    let g = emu
        .post("/Groups", json!({"displayName": "Hello: there"}))
        .await;

    // Assert
    assert_eq!(r.status, 201);
    assert_eq!(g.status, 201);
}

#[tokio::test]
async fn whitespace_in_user_name_and_zero_width_space_in_names_are_refused() {
    // Arrange
    let emu = start().await;
    let spaced = user("alice liddell");
    let mut zero_width = user("alice");
    zero_width["name"]["givenName"] = json!("Ali\u{200b}ce");

    // Act
    let r1 = emu.post("/Users", spaced).await;
    let r2 = emu.post("/Users", zero_width).await;

    // Assert
    assert_envelope(&r1, 400);
    assert_envelope(&r2, 400);
}

#[tokio::test]
async fn empty_strings_are_refused() {
    // Arrange
    let emu = start().await;
    let cases: Vec<Value> = vec![
        {
            let mut u = user("alice");
            u["name"]["givenName"] = json!("");
            u
        },
        {
            let mut u = user("alice");
            u["externalId"] = json!("");
            u
        },
        {
            let mut u = user("alice");
            u["nickName"] = json!("");
            u
        },
        {
            let mut u = user("alice");
            u["emails"][0]["type"] = json!("");
            u
        },
    ];

    for body in cases {
        // Act
        let r = emu.post("/Users", body).await;

        // Assert
        assert_envelope(&r, 400);
    }
    let g = emu.post("/Groups", json!({"displayName": ""})).await;
    assert_envelope(&g, 400);
}

#[tokio::test]
async fn over_long_values_are_refused() {
    // Arrange
    let emu = start().await;
    let long_name = "a".repeat(129);

    // Act
    let r = emu.post("/Users", user(&long_name)).await;

    // Assert
    assert_envelope(&r, 400);
    assert!(r.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("less than or equal to 128")));
}

#[tokio::test]
async fn unsupported_user_attributes_are_refused() {
    // Arrange
    let emu = start().await;

    for (attr, value) in [
        ("password", json!("hunter2")),
        ("groups", json!([{"value": "g"}])),
        ("photos", json!([{"value": "https://x"}])),
    ] {
        let mut body = user("alice");
        body[attr] = value;

        // Act
        let r = emu.post("/Users", body).await;

        // Assert
        assert_envelope(&r, 400);
    }
    let mut display = user("alice");
    display["emails"][0]["display"] = json!("Alice");
    assert_envelope(&emu.post("/Users", display).await, 400);
}

#[tokio::test]
async fn reserved_names_are_refused_for_users_and_groups_and_allowed_with_the_flag_off() {
    // Arrange
    let emu = start().await;
    let settings = EmulatorSettings {
        reserved_names: false,
        ..EmulatorSettings::default()
    };
    let lenient = start_with(settings).await;

    // Act
    let user_r = emu.post("/Users", user("Administrator")).await;
    let group_r = emu
        .post("/Groups", json!({"displayName": "AWSAdministrators"}))
        .await;
    let lenient_r = lenient
        .post("/Groups", json!({"displayName": "AWSAdministrators"}))
        .await;

    // Assert
    assert_envelope(&user_r, 400);
    assert_envelope(&group_r, 400);
    assert_eq!(lenient_r.status, 201);
}

#[tokio::test]
async fn a_user_name_differing_only_in_case_is_a_duplicate_with_409() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    let mut body = user("ALICE");
    body["emails"][0]["value"] = json!("other@example.com");

    // Act
    let r = emu.post("/Users", body).await;

    // Assert
    assert_duplicate(&r);
}

#[tokio::test]
async fn user_names_differing_in_case_are_distinct_when_the_flag_is_off() {
    // Arrange
    let settings = EmulatorSettings {
        user_name_case_insensitive: false,
        ..EmulatorSettings::default()
    };
    let emu = start_with(settings).await;
    emu.create_user("alice").await;
    let mut body = user("ALICE");
    body["emails"][0]["value"] = json!("other@example.com");

    // Act
    let r = emu.post("/Users", body).await;
    let lookup = emu
        .get(&format!("/Users?filter={}", q("userName eq \"Alice\"")))
        .await;

    // Assert
    assert_eq!(r.status, 201);
    assert_eq!(lookup.body["totalResults"], json!(0));
}

#[tokio::test]
async fn a_duplicate_primary_email_is_refused_with_409() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    let mut body = user("alice2");
    body["emails"][0]["value"] = json!("alice@example.com");

    // Act
    let r = emu.post("/Users", body).await;

    // Assert
    assert_duplicate(&r);
}

#[tokio::test]
async fn a_duplicate_external_id_is_refused_with_409() {
    // Arrange
    let emu = start().await;
    let mut first = user("alice");
    first["externalId"] = json!("oid-1");
    assert_eq!(emu.post("/Users", first).await.status, 201);
    let mut second = user("bob");
    second["externalId"] = json!("oid-1");

    // Act
    let r = emu.post("/Users", second).await;

    // Assert
    assert_duplicate(&r);
}

// ---------------------------------------------------------------------------------------------
// Users: read, list, filters, paging
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_user_can_be_read_by_id_and_an_unknown_id_is_404() {
    // Arrange
    let emu = start().await;
    let id = emu.create_user("alice").await;

    // Act
    let found = emu.get(&format!("/Users/{id}")).await;
    let missing = emu.get("/Users/6b5c0a4e-0000-0000-0000-000000000000").await;

    // Assert
    assert_eq!(found.status, 200);
    assert_eq!(found.body["userName"], json!("alice"));
    assert_envelope(&missing, 404);
}

#[tokio::test]
async fn listing_without_cursor_returns_the_first_hundred_with_total_equal_to_page_size() {
    // Arrange
    let emu = start().await;
    for i in 0..105 {
        emu.create_user(&format!("user{i:03}")).await;
    }

    // Act
    let r = emu.get("/Users").await;
    let small = emu.get("/Users?count=10&startIndex=50").await;

    // Assert
    assert_eq!(r.resources().len(), 100);
    assert_eq!(r.body["totalResults"], json!(100));
    assert_eq!(r.body["itemsPerPage"], json!(100));
    assert_eq!(r.body["startIndex"], json!(1));
    assert!(r.body.get("nextCursor").is_none());
    assert_eq!(small.body["totalResults"], json!(10));
    assert_eq!(small.resources()[0]["userName"], json!("user000"));
}

#[tokio::test]
async fn cursor_paging_walks_all_users_beyond_one_hundred() {
    // Arrange
    let emu = start().await;
    for i in 0..105 {
        emu.create_user(&format!("user{i:03}")).await;
    }

    // Act
    let first = emu.get("/Users?cursor").await;
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("nextCursor")
        .to_owned();
    let second = emu.get(&format!("/Users?cursor={cursor}")).await;

    // Assert
    assert_eq!(first.resources().len(), 100);
    assert!(first.body.get("totalResults").is_none());
    assert!(first.body.get("startIndex").is_none());
    assert_eq!(first.body["itemsPerPage"], json!(100));
    assert!(regex::Regex::new("^[-a-zA-Z0-9+=/:_]*$")
        .expect("regex")
        .is_match(&cursor));
    assert_eq!(second.resources().len(), 5);
    assert!(second.body.get("nextCursor").is_none());
    let names: std::collections::BTreeSet<String> = first
        .resources()
        .iter()
        .chain(second.resources().iter())
        .map(|u| u["userName"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), 105, "every user exactly once");
}

#[tokio::test]
async fn cursor_paging_honours_count_and_the_filter() {
    // Arrange
    let emu = start().await;
    let group = emu.create_group("Readers").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(emu.create_user(&format!("reader{i}")).await);
    }
    emu.create_user("outsider").await;
    assert_eq!(
        emu.patch(
            &format!("/Groups/{group}"),
            json!([{"op": "add", "path": "members", "value": members(&ids)}])
        )
        .await
        .status,
        204
    );
    let filter = q(&format!("groups.value eq \"{group}\""));

    // Act
    let mut seen = Vec::new();
    let mut url = format!("/Users?cursor&count=3&filter={filter}");
    let mut pages = 0;
    loop {
        let page = emu.get(&url).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages += 1;
        seen.extend(
            page.resources()
                .iter()
                .map(|u| u["id"].as_str().unwrap_or_default().to_owned()),
        );
        match page.body["nextCursor"].as_str() {
            Some(c) => url = format!("/Users?cursor={c}&count=3&filter={filter}"),
            None => break,
        }
    }

    // Assert
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn a_cursor_used_with_another_filter_is_refused_with_400() {
    // Arrange
    let emu = start().await;
    for i in 0..3 {
        emu.create_user(&format!("user{i}")).await;
    }
    let first = emu.get("/Users?cursor&count=1").await;
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("nextCursor")
        .to_owned();

    // Act
    let r = emu
        .get(&format!(
            "/Users?cursor={cursor}&count=1&filter={}",
            q("userName eq \"user1\"")
        ))
        .await;
    let garbage = emu.get("/Users?cursor=bm90LWEtY3Vyc29y").await;

    // Assert
    assert_envelope(&r, 400);
    assert_envelope(&garbage, 400);
}

#[tokio::test]
async fn count_outside_one_to_one_hundred_is_refused() {
    // Arrange
    let emu = start().await;

    for count in ["0", "101", "-1", "ten"] {
        // Act
        let r = emu.get(&format!("/Users?count={count}")).await;

        // Assert
        assert_envelope(&r, 400);
    }
    assert_eq!(emu.get("/Groups?count=100").await.status, 200);
}

#[tokio::test]
async fn user_filters_find_by_user_name_case_insensitively_external_id_id_and_manager() {
    // Arrange
    let emu = start().await;
    let boss = emu.create_user("boss").await;
    let mut body = user("alice");
    body["externalId"] = json!("oid-a");
    body[ENTERPRISE] = json!({"manager": {"value": boss}});
    let alice = emu.post("/Users", body).await.id();

    // Act
    let by_name = emu
        .get(&format!("/Users?filter={}", q("userName eq \"ALICE\"")))
        .await;
    let by_external = emu
        .get(&format!("/Users?filter={}", q("externalId eq \"oid-a\"")))
        .await;
    let by_id = emu
        .get(&format!(
            "/Users?filter={}",
            q(&format!("id eq \"{alice}\""))
        ))
        .await;
    let by_manager = emu
        .get(&format!(
            "/Users?filter={}",
            q(&format!("manager eq \"{boss}\" and id eq \"{alice}\""))
        ))
        .await;
    let wrong_manager = emu
        .get(&format!(
            "/Users?filter={}",
            q(&format!("id eq \"{alice}\" and manager eq \"{alice}\""))
        ))
        .await;
    let none = emu
        .get(&format!("/Users?filter={}", q("userName eq \"nobody\"")))
        .await;

    // Assert
    for r in [&by_name, &by_external, &by_id, &by_manager] {
        assert_eq!(r.body["totalResults"], json!(1), "{:?}", r.body);
        assert_eq!(r.resources()[0]["id"], json!(alice));
    }
    assert_eq!(wrong_manager.body["totalResults"], json!(0));
    assert_eq!(none.status, 200);
    assert_eq!(none.body["Resources"], json!([]));
}

#[tokio::test]
async fn unsupported_user_filters_are_refused_with_400() {
    // Arrange
    let emu = start().await;

    for filter in [
        "emails.value eq \"a@example.com\"",
        "displayName eq \"x\"",
        "userName ne \"alice\"",
        "userName co \"ali\"",
        "userName sw \"ali\"",
        "userName pr",
        "userName eq \"a\" or userName eq \"b\"",
        "id eq \"a\" and manager eq \"b\" and id eq \"c\"",
        "userName eq \"a\" and externalId eq \"b\"",
        "userName eq alice",
        "(userName eq \"alice\")",
        "not (userName eq \"alice\")",
    ] {
        // Act
        let r = emu.get(&format!("/Users?filter={}", q(filter))).await;

        // Assert
        assert_eq!(r.status, 400, "{filter} should be refused");
        assert_envelope(&r, 400);
    }
}

#[tokio::test]
async fn groups_value_filter_lists_members_and_an_unknown_group_is_404() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    emu.create_user("b").await;
    let g = emu.create_group("G").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let r = emu
        .get(&format!(
            "/Users?filter={}",
            q(&format!("groups.value eq \"{g}\""))
        ))
        .await;
    let unknown = emu
        .get(&format!("/Users?filter={}", q("groups.value eq \"nope\"")))
        .await;

    // Assert
    assert_eq!(r.resources().len(), 1);
    assert_eq!(r.resources()[0]["id"], json!(a));
    assert_envelope(&unknown, 404);
}

// ---------------------------------------------------------------------------------------------
// Users: PUT, PATCH, DELETE
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn put_replaces_a_user_and_returns_200_with_the_body() {
    // Arrange
    let emu = start().await;
    let mut body = user("alice");
    body["title"] = json!("Engineer");
    let id = emu.post("/Users", body).await.id();
    let mut replacement = user("alice");
    replacement["displayName"] = json!("Alice Replaced");

    // Act
    let r = emu
        .send(Method::PUT, &format!("/Users/{id}"), Some(replacement))
        .await;
    let unknown = emu
        .send(Method::PUT, "/Users/nope", Some(user("zed")))
        .await;

    // Assert
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], json!(id));
    assert_eq!(r.body["displayName"], json!("Alice Replaced"));
    assert!(r.body.get("title").is_none());
    assert_envelope(&unknown, 404);
}

#[tokio::test]
async fn put_onto_another_users_name_is_refused_with_409() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    let bob = emu.create_user("bob").await;
    let mut body = user("Alice");
    body["emails"][0]["value"] = json!("bob@example.com");

    // Act
    let r = emu
        .send(Method::PUT, &format!("/Users/{bob}"), Some(body))
        .await;

    // Assert
    assert_duplicate(&r);
}

#[tokio::test]
async fn patch_user_returns_200_with_the_full_body_and_accepts_string_active() {
    // Arrange
    let emu = start().await;
    let id = emu.create_user("alice").await;

    // Act
    let r = emu
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "active", "value": "false"}]),
        )
        .await;

    // Assert
    assert_eq!(r.status, 200);
    assert_eq!(r.body["active"], json!(false));
    assert_eq!(r.body["userName"], json!("alice"));
    assert_eq!(r.body["id"], json!(id));
    assert_eq!(r.body["emails"][0]["value"], json!("alice@example.com"));
}

#[tokio::test]
async fn patch_user_accepts_capitalised_ops_and_attribute_paths() {
    // Arrange
    let emu = start().await;
    let id = emu.create_user("alice").await;

    // Act
    let r = emu
        .patch(
            &format!("/Users/{id}"),
            json!([
                {"op": "Replace", "path": "displayName", "value": "Alice L"},
                {"op": "Add", "path": "name.middleName", "value": "Pleasance"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "al@example.com"},
                {"op": "Add", "path": format!("{ENTERPRISE}:department"), "value": "Ops"},
                {"op": "Remove", "path": "name.middleName"}
            ]),
        )
        .await;

    // Assert
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["displayName"], json!("Alice L"));
    assert!(r.body["name"].get("middleName").is_none());
    assert_eq!(r.body["emails"][0]["value"], json!("al@example.com"));
    assert_eq!(r.body[ENTERPRISE]["department"], json!("Ops"));
}

#[tokio::test]
async fn case_sensitive_op_names_are_refused_when_the_flag_is_off() {
    // Arrange
    let settings = EmulatorSettings {
        case_insensitive_ops: false,
        ..EmulatorSettings::default()
    };
    let emu = start_with(settings).await;
    let id = emu.create_user("alice").await;

    // Act
    let r = emu
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Replace", "path": "active", "value": false}]),
        )
        .await;

    // Assert
    assert_envelope(&r, 400);
}

#[tokio::test]
async fn patch_user_refuses_remove_of_user_name_or_active_and_two_ops_on_active() {
    // Arrange
    let emu = start().await;
    let id = emu.create_user("alice").await;
    let path = format!("/Users/{id}");

    // Act
    let remove_name = emu
        .patch(&path, json!([{"op": "remove", "path": "userName"}]))
        .await;
    let remove_active = emu
        .patch(&path, json!([{"op": "remove", "path": "active"}]))
        .await;
    let twice = emu
        .patch(
            &path,
            json!([
                {"op": "replace", "path": "active", "value": false},
                {"op": "replace", "path": "active", "value": true}
            ]),
        )
        .await;
    let remove_required = emu
        .patch(&path, json!([{"op": "remove", "path": "displayName"}]))
        .await;
    let second_email = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "emails", "value": [{"value": "x@example.com", "primary": true}]}]),
        )
        .await;
    let no_value = emu
        .patch(&path, json!([{"op": "replace", "path": "title"}]))
        .await;
    let groups = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        )
        .await;

    // Assert
    for r in [
        &remove_name,
        &remove_active,
        &twice,
        &remove_required,
        &second_email,
        &no_value,
        &groups,
    ] {
        assert_envelope(r, 400);
    }
    assert_eq!(emu.get(&path).await.body["active"], json!(true));
}

#[tokio::test]
async fn path_less_user_patches_are_refused_by_default_and_accepted_with_the_flag() {
    // Arrange
    let emu = start().await;
    let settings = EmulatorSettings {
        user_patch_without_path: true,
        ..EmulatorSettings::default()
    };
    let lenient = start_with(settings).await;
    let ops = json!([{"op": "replace", "value": {"displayName": "New Name", "title": "Boss"}}]);
    let strict_id = emu.create_user("alice").await;
    let lenient_id = lenient.create_user("alice").await;

    // Act
    let refused = emu.patch(&format!("/Users/{strict_id}"), ops.clone()).await;
    let accepted = lenient.patch(&format!("/Users/{lenient_id}"), ops).await;

    // Assert
    assert_envelope(&refused, 400);
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.body["title"], json!("Boss"));
}

#[tokio::test]
async fn patch_renaming_onto_an_existing_user_name_is_409() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    let bob = emu.create_user("bob").await;

    // Act
    let r = emu
        .patch(
            &format!("/Users/{bob}"),
            json!([{"op": "replace", "path": "userName", "value": "Alice"}]),
        )
        .await;

    // Assert
    assert_duplicate(&r);
}

#[tokio::test]
async fn patching_an_unknown_user_is_404() {
    // Arrange
    let emu = start().await;

    // Act
    let r = emu
        .patch(
            "/Users/nope",
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;

    // Assert
    assert_envelope(&r, 404);
}

#[tokio::test]
async fn deleting_a_user_returns_204_then_404_and_removes_its_memberships() {
    // Arrange
    let emu = start().await;
    let id = emu.create_user("alice").await;
    let g = emu.create_group("G").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": id}]}]),
    )
    .await;

    // Act
    let first = emu.delete(&format!("/Users/{id}")).await;
    let second = emu.delete(&format!("/Users/{id}")).await;

    // Assert
    assert_eq!(first.status, 204);
    assert_eq!(first.body, Value::Null);
    assert_envelope(&second, 404);
    assert_envelope(&emu.get(&format!("/Users/{id}")).await, 404);
    assert_eq!(emu.emu.group_members(&g), Some(vec![]));
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_group_returns_201_without_members_and_get_never_lists_members() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;

    // Act
    let created = emu
        .post(
            "/Groups",
            json!({"displayName": "Group Bar", "externalId": "701984",
                   "members": [{"value": a, "$ref": format!("../Users/{a}"), "type": "User"}]}),
        )
        .await;
    let id = created.id();
    let fetched = emu.get(&format!("/Groups/{id}")).await;

    // Assert
    assert_eq!(created.status, 201);
    assert!(created.body.get("members").is_none());
    assert_eq!(
        created.body["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:Group"])
    );
    assert_eq!(created.body["externalId"], json!("701984"));
    assert_eq!(fetched.status, 200);
    assert!(fetched.body.get("members").is_none());
    assert_eq!(fetched.body["displayName"], json!("Group Bar"));
    assert_eq!(emu.emu.group_members(&id), Some(vec![a]));
}

#[tokio::test]
async fn listing_groups_shows_an_empty_members_list_on_every_group() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let g = emu.create_group("G").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let r = emu.get("/Groups").await;

    // Assert
    assert_eq!(r.body["totalResults"], json!(1));
    assert_eq!(r.resources()[0]["members"], json!([]));
}

#[tokio::test]
async fn a_duplicate_group_display_name_is_refused_with_409() {
    // Arrange
    let emu = start().await;
    emu.create_group("Admins-Prod").await;

    // Act
    let same = emu
        .post("/Groups", json!({"displayName": "Admins-Prod"}))
        .await;
    let other_case = emu
        .post("/Groups", json!({"displayName": "admins-prod"}))
        .await;

    // Assert
    assert_duplicate(&same);
    assert_duplicate(&other_case);
}

#[tokio::test]
async fn more_than_one_hundred_members_on_group_create_are_refused() {
    // Arrange
    let emu = start().await;
    let ids: Vec<String> = (0..101).map(|i| format!("user-{i}")).collect();

    // Act
    let r = emu
        .post(
            "/Groups",
            json!({"displayName": "Big", "members": members(&ids)}),
        )
        .await;

    // Assert
    assert_envelope(&r, 400);
    assert!(emu.emu.state().groups.is_empty());
}

#[tokio::test]
async fn one_hundred_members_on_group_create_are_accepted() {
    // Arrange
    let emu = start().await;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(emu.create_user(&format!("u{i}")).await);
    }

    // Act
    let r = emu
        .post(
            "/Groups",
            json!({"displayName": "Big", "members": members(&ids)}),
        )
        .await;

    // Assert
    assert_eq!(r.status, 201);
    assert_eq!(
        emu.emu.group_members_by_name("Big").map(|m| m.len()),
        Some(100)
    );
}

#[tokio::test]
async fn patch_group_adds_and_removes_members_and_answers_204_without_body() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let b = emu.create_user("b").await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");

    // Act
    let added = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": a}, {"value": b}]}]),
        )
        .await;
    let after_add = emu.emu.group_members(&g);
    let removed = emu
        .patch(
            &path,
            json!([
                {"op": "remove", "path": "members", "value": [{"value": a}]},
                {"op": "add", "path": "members", "value": [{"value": a}]},
                {"op": "remove", "path": format!("members[value eq \"{b}\"]")}
            ]),
        )
        .await;

    // Assert
    assert_eq!(added.status, 204);
    assert_eq!(added.body, Value::Null);
    let mut expected = vec![a.clone(), b];
    expected.sort();
    assert_eq!(after_add, Some(expected));
    assert_eq!(removed.status, 204);
    assert_eq!(emu.emu.group_members(&g), Some(vec![a]));
}

#[tokio::test]
async fn more_than_one_hundred_member_changes_in_one_patch_are_refused() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("G").await;
    let first: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let second: Vec<String> = (60..101).map(|i| format!("u{i}")).collect();

    // Act
    let r = emu
        .patch(
            &format!("/Groups/{g}"),
            json!([
                {"op": "add", "path": "members", "value": members(&first)},
                {"op": "remove", "path": "members", "value": members(&second)}
            ]),
        )
        .await;

    // Assert
    assert_envelope(&r, 400);
}

#[tokio::test]
async fn replace_on_group_members_is_refused_and_changes_nothing() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let b = emu.create_user("b").await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");
    emu.patch(
        &path,
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let with_path = emu
        .patch(
            &path,
            json!([{"op": "replace", "path": "members", "value": [{"value": b}]}]),
        )
        .await;
    let path_less = emu
        .patch(
            &path,
            json!([{"op": "replace", "value": {"members": [{"value": b}]}}]),
        )
        .await;

    // Assert
    assert_envelope(&with_path, 400);
    assert_envelope(&path_less, 400);
    assert_eq!(emu.emu.group_members(&g), Some(vec![a]));
}

#[tokio::test]
async fn member_operations_with_an_empty_or_missing_value_are_refused() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");

    for ops in [
        json!([{"op": "remove", "path": "members"}]),
        json!([{"op": "remove", "path": "members", "value": []}]),
        json!([{"op": "add", "path": "members", "value": []}]),
        json!([{"op": "add", "path": "members", "value": [{"value": ""}]}]),
        json!([{"op": "remove", "path": "members", "value": [{"value": ""}]}]),
    ] {
        // Act
        let r = emu.patch(&path, ops.clone()).await;

        // Assert
        assert_eq!(r.status, 400, "{ops}");
        assert_envelope(&r, 400);
    }
}

#[tokio::test]
async fn adding_a_present_member_and_removing_an_absent_one_are_no_ops_by_default() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let b = emu.create_user("b").await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");
    emu.patch(
        &path,
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let again = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
        )
        .await;
    let absent = emu
        .patch(
            &path,
            json!([{"op": "remove", "path": "members", "value": [{"value": b}]}]),
        )
        .await;

    // Assert
    assert_eq!(again.status, 204);
    assert_eq!(absent.status, 204);
    assert_eq!(emu.emu.group_members(&g), Some(vec![a]));
}

#[tokio::test]
async fn redundant_member_changes_follow_the_configured_answers() {
    // Arrange
    let settings = EmulatorSettings {
        duplicate_member_add: RedundantMemberChange::Conflict,
        absent_member_remove: RedundantMemberChange::NotFound,
        ..EmulatorSettings::default()
    };
    let emu = start_with(settings).await;
    let a = emu.create_user("a").await;
    let b = emu.create_user("b").await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");
    emu.patch(
        &path,
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let again = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": b}, {"value": a}]}]),
        )
        .await;
    let absent = emu
        .patch(
            &path,
            json!([{"op": "remove", "path": "members", "value": [{"value": b}]}]),
        )
        .await;

    // Assert
    assert_duplicate(&again);
    assert_envelope(&absent, 404);
    assert_eq!(
        emu.emu.group_members(&g),
        Some(vec![a]),
        "a refused PATCH applies nothing"
    );
}

#[tokio::test]
async fn adding_an_unknown_user_as_member_is_404() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("G").await;

    // Act
    let r = emu
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": "ghost"}]}]),
        )
        .await;

    // Assert
    assert_envelope(&r, 404);
}

#[tokio::test]
async fn a_group_can_be_renamed_by_path_or_by_a_path_less_value_and_names_stay_unique() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("Old").await;
    emu.create_group("Taken").await;
    let path = format!("/Groups/{g}");

    // Act
    let by_path = emu
        .patch(
            &path,
            json!([{"op": "replace", "path": "displayName", "value": "Middle"}]),
        )
        .await;
    let by_value = emu
        .patch(&path, json!([{"op": "replace", "value": {"id": g, "displayName": "New", "externalId": "x-1"}}]))
        .await;
    let onto_taken = emu
        .patch(
            &path,
            json!([{"op": "replace", "path": "displayName", "value": "Taken"}]),
        )
        .await;
    let fetched = emu.get(&path).await;

    // Assert
    assert_eq!(by_path.status, 204);
    assert_eq!(by_value.status, 204);
    assert_duplicate(&onto_taken);
    assert_eq!(fetched.body["displayName"], json!("New"));
    assert_eq!(fetched.body["externalId"], json!("x-1"));
}

#[tokio::test]
async fn put_on_a_group_is_refused_with_400() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("G").await;

    // Act
    let r = emu
        .send(
            Method::PUT,
            &format!("/Groups/{g}"),
            Some(json!({"displayName": "H"})),
        )
        .await;

    // Assert
    assert_envelope(&r, 400);
    assert_eq!(
        emu.get(&format!("/Groups/{g}")).await.body["displayName"],
        json!("G")
    );
}

#[tokio::test]
async fn deleting_a_group_returns_204_then_404() {
    // Arrange
    let emu = start().await;
    let g = emu.create_group("G").await;

    // Act
    let first = emu.delete(&format!("/Groups/{g}")).await;
    let second = emu.delete(&format!("/Groups/{g}")).await;
    let patch = emu
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "replace", "path": "displayName", "value": "H"}]),
        )
        .await;

    // Assert
    assert_eq!(first.status, 204);
    assert_envelope(&second, 404);
    assert_envelope(&patch, 404);
}

#[tokio::test]
async fn id_and_members_filter_tests_membership_and_an_unknown_member_is_404() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let b = emu.create_user("b").await;
    let g = emu.create_group("G").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;
    let filter = |m: &str| {
        format!(
            "/Groups?filter={}",
            q(&format!("id eq \"{g}\" and members eq \"{m}\""))
        )
    };

    // Act
    let member = emu.get(&filter(&a)).await;
    let reversed = emu
        .get(&format!(
            "/Groups?filter={}",
            q(&format!("members eq \"{a}\" and id eq \"{g}\""))
        ))
        .await;
    let not_member = emu.get(&filter(&b)).await;
    let unknown = emu.get(&filter("ghost")).await;
    let empty = emu.get(&filter("")).await;

    // Assert
    assert_eq!(member.body["totalResults"], json!(1));
    assert_eq!(member.resources()[0]["id"], json!(g));
    assert_eq!(reversed.body["totalResults"], json!(1));
    assert_eq!(not_member.body["totalResults"], json!(0));
    assert_envelope(&unknown, 404);
    assert_envelope(&empty, 400);
}

#[tokio::test]
async fn members_value_filter_lists_the_groups_of_a_user() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let g1 = emu.create_group("G1").await;
    emu.create_group("G2").await;
    let g3 = emu.create_group("G3").await;
    for g in [&g1, &g3] {
        emu.patch(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
        )
        .await;
    }

    // Act
    let r = emu
        .get(&format!(
            "/Groups?cursor&filter={}",
            q(&format!("members.value eq \"{a}\""))
        ))
        .await;

    // Assert
    let ids: Vec<Value> = r.resources().iter().map(|g| g["id"].clone()).collect();
    assert_eq!(ids, vec![json!(g1), json!(g3)]);
    assert!(r.body.get("nextCursor").is_none());
}

#[tokio::test]
async fn group_filters_by_display_name_and_external_id_work() {
    // Arrange
    let emu = start().await;
    let g = emu
        .post(
            "/Groups",
            json!({"displayName": "Group Bar", "externalId": "ext-1"}),
        )
        .await
        .id();

    // Act
    let by_name = emu
        .get(&format!(
            "/Groups?filter={}",
            q("displayName eq \"Group Bar\"")
        ))
        .await;
    let by_external = emu
        .get(&format!("/Groups?filter={}", q("externalId eq \"ext-1\"")))
        .await;

    // Assert
    assert_eq!(by_name.resources()[0]["id"], json!(g));
    assert_eq!(by_external.resources()[0]["id"], json!(g));
    assert_eq!(by_name.resources()[0]["members"], json!([]));
}

#[tokio::test]
async fn unsupported_group_filters_are_refused_with_400() {
    // Arrange
    let emu = start().await;

    for filter in [
        "members eq \"u\"",
        "displayName eq \"a\" and members eq \"u\"",
        "displayName co \"a\"",
        "displayName eq \"a\" or displayName eq \"b\"",
        "id eq \"g\" and members eq \"u\" and members eq \"v\"",
        "userName eq \"a\"",
    ] {
        // Act
        let r = emu.get(&format!("/Groups?filter={}", q(filter))).await;

        // Assert
        assert_eq!(r.status, 400, "{filter} should be refused");
        assert_envelope(&r, 400);
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_throttle_fault_answers_429_with_retry_after_for_the_next_n_requests_only() {
    // Arrange
    let emu = start().await;
    emu.emu.inject(Fault::throttle(2, 7));

    // Act
    let first = emu.post("/Users", user("alice")).await;
    let second = emu.get("/Users").await;
    let third = emu.get("/Users").await;

    // Assert
    assert_envelope(&first, 429);
    assert_eq!(first.header("retry-after"), Some("7"));
    assert_eq!(
        first.body["detail"],
        json!("Too many requests exceeded the limits.")
    );
    assert_envelope(&second, 429);
    assert_eq!(third.status, 200);
    assert_eq!(
        third.body["totalResults"],
        json!(0),
        "a throttled write is not applied"
    );
}

#[tokio::test]
async fn a_throttle_with_ratio_one_hits_every_request_until_cleared() {
    // Arrange
    let emu = start().await;
    let added = emu
        .control(
            Method::POST,
            "/faults",
            Some(json!({"kind": "throttle", "ratio": 1.0, "retryAfterSeconds": 1})),
        )
        .await;

    // Act
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(emu.get("/Users").await.status);
    }
    let cleared = emu.control(Method::DELETE, "/faults", None).await;
    let after = emu.get("/Users").await;

    // Assert
    assert_eq!(added.status, 201);
    assert_eq!(statuses, vec![429; 5]);
    assert_eq!(cleared.status, 204);
    assert_eq!(after.status, 200);
}

#[tokio::test]
async fn a_ratio_of_zero_never_fires() {
    // Arrange
    let emu = start().await;
    emu.emu.inject(Fault::error(500, 0).with_ratio(0.0));

    // Act
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(emu.get("/Users").await.status);
    }

    // Assert
    assert_eq!(statuses, vec![200; 5]);
}

#[tokio::test]
async fn an_error_fault_answers_500_for_the_next_n_requests() {
    // Arrange
    let emu = start().await;
    emu.control(
        Method::POST,
        "/faults",
        Some(json!({"kind": "error", "status": 500, "count": 2})),
    )
    .await;

    // Act
    let first = emu.get("/Users").await;
    let second = emu.post("/Groups", json!({"displayName": "G"})).await;
    let third = emu.get("/Users").await;

    // Assert
    assert_envelope(&first, 500);
    assert_envelope(&second, 500);
    assert_eq!(third.status, 200);
    assert!(emu.emu.state().groups.is_empty());
}

#[tokio::test]
async fn a_latency_fault_delays_responses() {
    // Arrange
    let emu = start().await;
    emu.control(
        Method::POST,
        "/faults",
        Some(json!({"kind": "latency", "millis": 250})),
    )
    .await;

    // Act
    let started = Instant::now();
    let r = emu.get("/Users").await;
    let elapsed = started.elapsed();

    // Assert
    assert_eq!(r.status, 200);
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    let logged = emu.emu.request_log();
    assert!(logged.last().is_some_and(|e| e.duration_ms >= 250));
}

#[tokio::test]
async fn delayed_visibility_hides_new_resources_from_by_id_operations_for_a_while() {
    // Arrange
    let emu = start().await;
    emu.control(
        Method::POST,
        "/faults",
        Some(json!({"kind": "delayedVisibility", "millis": 900})),
    )
    .await;
    let u = emu.create_user("alice").await;
    let g = emu.create_group("G").await;

    // Act
    let early_get = emu.get(&format!("/Users/{u}")).await;
    let early_patch = emu
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": u}]}]),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late_get = emu.get(&format!("/Users/{u}")).await;
    let late_patch = emu
        .patch(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": u}]}]),
        )
        .await;

    // Assert
    assert_envelope(&early_get, 404);
    assert_envelope(&early_patch, 404);
    assert_eq!(late_get.status, 200);
    assert_eq!(late_patch.status, 204);
}

#[tokio::test]
async fn a_lost_reply_applies_the_write_and_the_client_sees_a_transport_error() {
    // Arrange
    let emu = start().await;
    emu.control(
        Method::POST,
        "/faults",
        Some(json!({"kind": "lostReply", "count": 1, "methods": ["POST"]})),
    )
    .await;

    // Act
    let lost = emu
        .http
        .post(emu.url("/Users"))
        .bearer_auth(&emu.token)
        .json(&user("alice"))
        .send()
        .await;
    let retry = emu.post("/Users", user("alice")).await;

    // Assert
    let err = lost.expect_err("no status reaches the client");
    assert!(!err.is_status());
    assert_eq!(emu.emu.state().users.len(), 1, "the write was applied");
    assert_duplicate(&retry);
    let log = emu.emu.request_log();
    assert_eq!(log[0].fault.as_deref(), Some("lostReply"));
    assert_eq!(log[0].status, 201);
}

#[tokio::test]
async fn faults_never_touch_the_control_api() {
    // Arrange
    let emu = start().await;
    emu.emu.inject(Fault::error(500, 0).with_ratio(1.0));
    emu.emu.inject(Fault::throttle(0, 1).with_ratio(1.0));

    // Act
    let state = emu.control(Method::GET, "/state", None).await;
    let requests = emu.control(Method::GET, "/requests", None).await;
    let scim = emu.get("/Users").await;

    // Assert
    assert_eq!(state.status, 200);
    assert_eq!(requests.status, 200);
    assert_eq!(scim.status, 500);
}

#[tokio::test]
async fn faults_can_be_listed_and_removed_one_by_one_through_the_control_api() {
    // Arrange
    let emu = start().await;
    let added = emu
        .control(
            Method::POST,
            "/faults",
            Some(json!({"kind": "error", "status": 503, "count": 3})),
        )
        .await;
    let invalid = emu
        .control(
            Method::POST,
            "/faults",
            Some(json!({"kind": "throttle", "ratio": 2.0})),
        )
        .await;
    let id = added.body["id"].as_u64().expect("fault id");

    // Act
    let listed = emu.control(Method::GET, "/faults", None).await;
    let removed = emu
        .control(Method::DELETE, &format!("/faults/{id}"), None)
        .await;
    let after = emu.get("/Users").await;

    // Assert
    assert_eq!(invalid.status, 400);
    assert_eq!(listed.body[0]["kind"], json!("error"));
    assert_eq!(listed.body[0]["status"], json!(503));
    assert_eq!(listed.body[0]["remaining"], json!(3));
    assert_eq!(removed.status, 204);
    assert_eq!(after.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Inspection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_request_log_records_method_path_query_status_and_time_and_can_be_cleared() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    emu.get("/Users?count=5").await;

    // Act
    let log = emu.control(Method::GET, "/requests", None).await;
    let cleared = emu.control(Method::DELETE, "/requests", None).await;
    let after = emu.control(Method::GET, "/requests", None).await;

    // Assert
    let entries = log.body.as_array().expect("array");
    assert_eq!(entries.len(), 2, "control calls are not logged");
    assert_eq!(entries[0]["method"], json!("POST"));
    assert!(entries[0]["path"]
        .as_str()
        .is_some_and(|p| p.ends_with("/scim/v2/Users")));
    assert_eq!(entries[0]["status"], json!(201));
    assert_eq!(entries[0]["body"]["userName"], json!("alice"));
    assert_eq!(entries[1]["query"], json!("count=5"));
    assert_eq!(entries[1]["status"], json!(200));
    let at = entries[1]["at"].as_str().expect("at");
    let shape = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").expect("regex");
    assert!(shape.is_match(at), "{at}");
    assert!(
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok()
    );
    assert_eq!(cleared.status, 204);
    assert_eq!(after.body, json!([]));
}

#[tokio::test]
async fn group_members_can_be_inspected_by_id_and_by_display_name() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("alice").await;
    let g = emu.create_group("AWS Prod Admins").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let by_id = emu
        .control(Method::GET, &format!("/groups/{g}/members"), None)
        .await;
    let by_name = emu
        .control(
            Method::GET,
            "/groups/by-name/AWS%20Prod%20Admins/members",
            None,
        )
        .await;
    let unknown = emu
        .control(Method::GET, "/groups/by-name/Nope/members", None)
        .await;

    // Assert
    assert_eq!(by_id.body["members"], json!([a]));
    assert_eq!(by_id.body["memberUserNames"], json!(["alice"]));
    assert_eq!(by_name.body["id"], json!(g));
    assert_eq!(by_name.body["members"], json!([a]));
    assert_eq!(unknown.status, 404);
    assert_eq!(
        emu.emu.group_members_by_name("AWS Prod Admins"),
        Some(vec![a])
    );
    assert_eq!(emu.emu.group_members_by_name("Nope"), None);
}

#[tokio::test]
async fn the_state_dump_lists_users_and_groups_with_member_ids() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("alice").await;
    let g = emu.create_group("G").await;
    emu.patch(
        &format!("/Groups/{g}"),
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let state = emu.control(Method::GET, "/state", None).await;

    // Assert
    assert_eq!(state.body["users"][0]["id"], json!(a));
    assert_eq!(state.body["users"][0]["userName"], json!("alice"));
    assert_eq!(state.body["groups"][0]["id"], json!(g));
    assert_eq!(state.body["groups"][0]["displayName"], json!("G"));
    assert_eq!(state.body["groups"][0]["members"], json!([a]));
}

#[tokio::test]
async fn reset_forgets_users_groups_faults_and_the_log() {
    // Arrange
    let emu = start().await;
    emu.create_user("alice").await;
    emu.create_group("G").await;
    emu.emu.inject(Fault::latency(1));

    // Act
    let r = emu.control(Method::POST, "/reset", None).await;

    // Assert
    assert_eq!(r.status, 204);
    let state = emu.emu.state();
    assert!(state.users.is_empty() && state.groups.is_empty());
    assert!(emu.emu.faults().is_empty());
    assert!(emu.emu.request_log().is_empty());
}

#[tokio::test]
async fn behaviour_flags_can_be_changed_at_run_time_through_the_control_api() {
    // Arrange
    let emu = start().await;
    let a = emu.create_user("a").await;
    let g = emu.create_group("G").await;
    let path = format!("/Groups/{g}");
    emu.patch(
        &path,
        json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
    )
    .await;

    // Act
    let changed = emu
        .control(
            Method::PATCH,
            "/settings",
            Some(json!({"duplicateMemberAdd": "conflict"})),
        )
        .await;
    let unknown = emu
        .control(
            Method::PATCH,
            "/settings",
            Some(json!({"noSuchFlag": true})),
        )
        .await;
    let again = emu
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
        )
        .await;

    // Assert
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["duplicateMemberAdd"], json!("conflict"));
    assert_eq!(changed.body["tokens"], json!(["[redacted]"]));
    assert_eq!(unknown.status, 400);
    assert_duplicate(&again);
}

#[tokio::test]
async fn stop_shuts_the_server_down() {
    // Arrange
    let emu = start().await;
    let url = emu.url("/Users");
    let http = client();

    // Act
    emu.emu.stop().await;
    let r = http.get(url).send().await;

    // Assert
    assert!(r.is_err());
}
