//! Authentication of `/v1/events`: HMAC signatures and bearer JWTs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::postgres::PgServer;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
const ISSUER: &str = "https://login.example.test/tenant/v2.0";
const AUDIENCE: &str = "api://pimbridge";

fn key(file: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{file}")).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&key("ec-private.pem")).unwrap()
}

fn jwk(encoding: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(encoding, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "entra-forwarder", "exp": now() + 600, "nbf": now() - 10})
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A JWKS endpoint the test controls: counts fetches and can be switched off.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks_server(set: JwkSet) -> JwksServer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (f, d) = (fetches.clone(), down.clone());
    let body = serde_json::to_string(&set).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let (f, d, body) = (f.clone(), d.clone(), body.clone());
        App::new().route(
            "/keys",
            web::get().to(move || {
                let (f, d, body) = (f.clone(), d.clone(), body.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        HttpResponse::ServiceUnavailable().finish()
                    } else {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    JwksServer {
        url: format!("http://127.0.0.1:{port}/keys"),
        fetches,
        down,
    }
}

async fn spawn_jwt_app(jwks_url: &str) -> TestApp {
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.intake.jwt = Some(section(&format!(
        "issuers = [\"{ISSUER}\"]\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\", \"ES256\"]\njwks_url = \"{jwks_url}\"\njwks_min_refetch = \"0s\"\nleeway = \"0s\""
    )));
    spawn_app_with(settings, &url).await
}

async fn post_with_token(app: &TestApp, bearer: &str, id: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {bearer}"))
        .body(activation(id, GROUP_A, "u1").to_string())
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn hmac_signatures_are_checked_against_body_secret_and_time() {
    let app = spawn_app().await;
    let body = activation("h-1", GROUP_A, "u1").to_string();
    let post = |signature: Option<String>, body: String| {
        let mut request = app
            .http
            .post(format!("{}/v1/events", app.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-pimbridge-signature", signature);
        }
        async move { request.send().await.unwrap() }
    };
    let wrong_secret = pimbridge::auth::hmac::sign(
        &pimbridge::secret::SecretString::new("not-the-configured-secret"),
        now(),
        body.as_bytes(),
    );
    let stale = pimbridge::auth::hmac::sign(
        &pimbridge::secret::SecretString::new(HMAC_SECRET),
        now() - 3600,
        body.as_bytes(),
    );
    let tampered_body = body.replace("u1", "u2");

    let cases = vec![
        (
            "tampered body",
            post(Some(sign_now(body.as_bytes())), tampered_body).await,
            401,
            "invalid_signature",
        ),
        (
            "wrong secret",
            post(Some(wrong_secret), body.clone()).await,
            401,
            "invalid_signature",
        ),
        (
            "stale timestamp",
            post(Some(stale), body.clone()).await,
            401,
            "stale_signature",
        ),
        (
            "missing header",
            post(None, body.clone()).await,
            401,
            "missing_credentials",
        ),
        (
            "malformed header",
            post(Some("sha256=abc".into()), body.clone()).await,
            401,
            "malformed_signature",
        ),
    ];
    for (case, response, status, code) in cases {
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{case}"
        );
        assert_eq!(
            error_code(response).await,
            (status, code.to_owned()),
            "{case}"
        );
    }
    assert_eq!(app.events().await, 0, "nothing unauthenticated is stored");

    let valid = post(Some(sign_now(body.as_bytes())), body.clone()).await;
    assert_eq!(valid.status(), 202);
    assert_eq!(app.events().await, 1);
}

#[tokio::test]
async fn jwts_are_verified_for_signature_time_audience_issuer_and_algorithm() {
    let rsa = rsa_key();
    let ec = ec_key();
    let jwks = jwks_server(JwkSet {
        keys: vec![
            jwk(&rsa, Algorithm::RS256, "rsa-1"),
            jwk(&ec, Algorithm::ES256, "ec-1"),
        ],
    })
    .await;
    let app = spawn_jwt_app(&jwks.url).await;

    // Valid RS256 and ES256 tokens are accepted.
    let rs = token(Algorithm::RS256, "rsa-1", &rsa, &claims());
    assert_eq!(post_with_token(&app, &rs, "j-1").await.status(), 202);
    let es = token(Algorithm::ES256, "ec-1", &ec, &claims());
    assert_eq!(post_with_token(&app, &es, "j-2").await.status(), 202);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        token(Algorithm::RS256, "rsa-1", &rsa, &c)
    };
    let public_pem = key("rsa-public.pem");
    let hs_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&public_pem).unwrap(),
        )
        .unwrap()
    };
    let unsigned = {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
            b64.encode(claims().to_string())
        )
    };
    let other_key = EncodingKey::from_rsa_pem(&key("rsa-other-private.pem")).unwrap();
    let wrongly_signed = token(Algorithm::RS256, "rsa-1", &other_key, &claims());

    let cases = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 60)),
            "token_expired",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(now() + 600)),
            "token_not_yet_valid",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("api://someone-else")),
            "invalid_audience",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example/")),
            "invalid_issuer",
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "invalid_token",
        ),
        ("alg none", unsigned, "invalid_token"),
        (
            "HS256 signed with the public key",
            hs_with_public_key,
            "unsupported_algorithm",
        ),
        (
            "signed by another key",
            wrongly_signed,
            "invalid_token_signature",
        ),
        ("not a JWT", "abc.def".to_string(), "invalid_token"),
    ];
    for (i, (case, bearer, code)) in cases.into_iter().enumerate() {
        let response = post_with_token(&app, &bearer, &format!("bad-{i}")).await;
        assert_eq!(error_code(response).await, (401, code.to_owned()), "{case}");
    }
    assert_eq!(
        app.events().await,
        2,
        "only the two valid tokens stored events"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_once_and_is_then_refused() {
    let rsa = rsa_key();
    let jwks = jwks_server(JwkSet {
        keys: vec![jwk(&rsa, Algorithm::RS256, "rsa-1")],
    })
    .await;
    let app = spawn_jwt_app(&jwks.url).await;
    let good = token(Algorithm::RS256, "rsa-1", &rsa, &claims());
    assert_eq!(post_with_token(&app, &good, "k-1").await.status(), 202);
    let fetches_before = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(fetches_before, 1, "keys are fetched once and cached");

    let unknown = token(Algorithm::RS256, "rotated-away", &rsa, &claims());
    let response = post_with_token(&app, &unknown, "k-2").await;

    assert_eq!(error_code(response).await, (401, "unknown_key".into()));
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        fetches_before + 1,
        "exactly one refetch for the unknown kid"
    );
    assert_eq!(post_with_token(&app, &good, "k-3").await.status(), 202);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetches_before + 1);
}

#[tokio::test]
async fn a_jwks_endpoint_that_is_down_gives_a_clear_503_and_no_panic() {
    let rsa = rsa_key();
    let jwks = jwks_server(JwkSet {
        keys: vec![jwk(&rsa, Algorithm::RS256, "rsa-1")],
    })
    .await;
    jwks.down.store(true, Ordering::SeqCst);
    let app = spawn_jwt_app(&jwks.url).await;
    let good = token(Algorithm::RS256, "rsa-1", &rsa, &claims());

    let response = post_with_token(&app, &good, "d-1").await;

    assert_eq!(response.headers().get("retry-after").unwrap(), "5");
    assert_eq!(error_code(response).await, (503, "keys_unavailable".into()));
    assert_eq!(app.events().await, 0);

    // When the key server is back, the same token works without a restart.
    jwks.down.store(false, Ordering::SeqCst);
    assert_eq!(post_with_token(&app, &good, "d-2").await.status(), 202);
}

#[tokio::test]
async fn a_bearer_token_is_refused_when_jwt_is_not_configured() {
    let app = spawn_app().await;
    let bearer = token(Algorithm::RS256, "rsa-1", &rsa_key(), &claims());

    let response = post_with_token(&app, &bearer, "n-1").await;

    assert_eq!(
        error_code(response).await,
        (401, "bearer_not_accepted".into())
    );
}

#[tokio::test]
async fn keys_can_come_from_a_jwks_file_instead_of_a_url() {
    let rsa = rsa_key();
    let dir = std::env::temp_dir().join(format!("pimbridge-jwks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    let set = JwkSet {
        keys: vec![jwk(&rsa, Algorithm::RS256, "file-key")],
    };
    std::fs::write(&file, serde_json::to_string(&set).unwrap()).unwrap();
    let url = PgServer::shared().fresh_database().await;
    let mut settings = test_settings(&url);
    settings.intake.jwt = Some(section(&format!(
        "issuers = [\"{ISSUER}\"]\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{}\"",
        file.display()
    )));
    let app = spawn_app_with(settings, &url).await;

    let good = token(Algorithm::RS256, "file-key", &rsa, &claims());
    let unknown = token(Algorithm::RS256, "not-in-file", &rsa, &claims());

    assert_eq!(post_with_token(&app, &good, "f-1").await.status(), 202);
    assert_eq!(
        error_code(post_with_token(&app, &unknown, "f-2").await).await,
        (401, "unknown_key".into())
    );
    std::fs::remove_dir_all(dir).unwrap();
}
