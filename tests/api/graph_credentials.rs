//! The three ways pimbridge signs in to Microsoft Graph — a client secret, a certificate (a
//! client assertion signed here) and a federated token (workload identity) — against the Graph
//! emulator's token endpoint, which verifies assertions with its own code; and the start-up rule
//! that exactly one is configured.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use graph_emulator::{GraphEmulatorSettings, GraphGroup, LoggedRequest, RunningGraphEmulator};
use pimbridge::config::Settings;
use pimbridge::graph::{ClientAssertion, GraphClient, GraphError};
use pimbridge::secret::SecretString;
use testkit::graph::GraphEmulatorClient as _;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/graph-credentials")
        .join(name)
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// An emulator that knows the test certificate and the federated token `federated`, and one
/// group.
async fn emulator(federated: &str) -> RunningGraphEmulator {
    let settings = GraphEmulatorSettings {
        client_certificate: Some(pem("client-cert.pem")),
        federated_token: Some(graph_emulator::SecretString::new(federated)),
        ..GraphEmulatorSettings::default()
    };
    let emulator = RunningGraphEmulator::start(settings, TcpListener::bind("127.0.0.1:0").unwrap())
        .await
        .unwrap();
    emulator.add_group(GraphGroup {
        id: "g1".into(),
        display_name: Some("AWS-Admins".into()),
    });
    emulator
}

/// A client of `emulator` that signs in with `assertion` instead of the secret.
fn client(emulator: &RunningGraphEmulator, assertion: ClientAssertion) -> GraphClient {
    let mut settings = emulator.client_settings();
    settings.client_secret = SecretString::default();
    settings.assertion = Some(assertion);
    settings.request_timeout = Duration::from_secs(5);
    settings.max_attempts = 1;
    GraphClient::new(settings).unwrap()
}

fn certificate(cert: &str, key: &str) -> ClientAssertion {
    ClientAssertion::Certificate {
        certificate_file: fixture(cert),
        key_file: fixture(key),
    }
}

fn token_requests(emulator: &RunningGraphEmulator) -> Vec<LoggedRequest> {
    emulator
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .collect()
}

fn aad_codes(error: &GraphError) -> Vec<u64> {
    match error {
        GraphError::Token(failure) => failure.aad_codes.clone(),
        other => panic!("expected a token refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_signs_in_and_a_certificate_the_app_does_not_know_is_refused() {
    let emulator = emulator("unused-federated-token").await;

    let good = client(&emulator, certificate("client-cert.pem", "client-key.pem"));
    let group = good.group("g1").await.unwrap().unwrap();
    assert_eq!(group.display_name.as_deref(), Some("AWS-Admins"));
    assert_eq!(token_requests(&emulator).len(), 1);

    // Another certificate (the app has not registered it): its thumbprint names no key.
    let unknown = client(&emulator, certificate("other-cert.pem", "other-key.pem"));
    let error = unknown.group("g1").await.unwrap_err();
    assert_eq!(aad_codes(&error), [700_027]);
    assert!(error.is_auth() && !error.is_transient());
}

#[tokio::test]
async fn an_assertion_for_another_client_id_is_refused() {
    let emulator = emulator("unused-federated-token").await;
    let mut settings = emulator.client_settings();
    settings.client_secret = SecretString::default();
    settings.client_id = "not-our-app".into();
    settings.assertion = Some(certificate("client-cert.pem", "client-key.pem"));
    settings.max_attempts = 1;
    let error = GraphClient::new(settings)
        .unwrap()
        .group("g1")
        .await
        .unwrap_err();
    assert_eq!(aad_codes(&error), [700_016], "unknown client id");
}

#[tokio::test]
async fn a_federated_token_is_read_from_its_file_for_each_token_and_a_wrong_one_is_refused() {
    let emulator = emulator("federated-token-1").await;
    let dir = std::env::temp_dir().join(format!("pimbridge-fed-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("azure-identity-token");
    std::fs::write(&file, "federated-token-1\n").unwrap();
    let federated = client(&emulator, ClientAssertion::FederatedTokenFile(file.clone()));

    assert!(federated.group("g1").await.unwrap().is_some());

    // The kubelet rotates the token; the issuer (the emulator) now trusts the new one only.
    std::fs::write(&file, "federated-token-2").unwrap();
    emulator.update_settings(|s| {
        s.federated_token = Some(graph_emulator::SecretString::new("federated-token-2"))
    });
    emulator.revoke_tokens();
    assert!(federated.group("g1").await.unwrap().is_some());
    // Only the rotated token is trusted now: the second token request carried it.
    assert_eq!(token_requests(&emulator).len(), 2);

    // A token the issuer does not trust.
    std::fs::write(&file, "federated-token-forged").unwrap();
    emulator.revoke_tokens();
    let error = federated.group("g1").await.unwrap_err();
    assert_eq!(aad_codes(&error), [700_213]);
    assert!(!format!("{error} {error:?}").contains("federated-token-forged"));
    std::fs::remove_dir_all(dir).unwrap();
}

const BASE: &str = "[database]\nurl = \"postgres://a@b/c\"\n[intake]\nhmac_secret = \"0123456789abcdef0123\"\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_state = \"0123456789abcdef\"\n";

fn error_for(extra: &str) -> String {
    Settings::from_toml_str(&format!("{BASE}{extra}"))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn exactly_one_graph_credential_is_configured_and_its_files_are_checked_at_start_up() {
    let certificate = format!(
        "client_certificate_file = \"{}\"\nclient_certificate_key_file = \"{}\"\n",
        fixture("client-cert.pem").display(),
        fixture("client-key.pem").display()
    );
    let federated = format!(
        "federated_token_file = \"{}\"\n",
        fixture("client-cert.pem").display()
    );

    assert_eq!(error_for("client_secret = \"s\"\n"), "");
    assert_eq!(error_for(&certificate), "");
    assert_eq!(error_for(&federated), "");

    let none = error_for("");
    for key in [
        "graph.client_secret",
        "graph.client_certificate_file",
        "graph.federated_token_file",
    ] {
        assert!(none.contains(key), "{none}");
    }
    let two = error_for(&format!("client_secret = \"s\"\n{federated}"));
    assert!(two.contains("more than one Graph credential"), "{two}");
    assert!(two.contains("graph.federated_token_file"), "{two}");
    let half = error_for(&format!(
        "client_certificate_file = \"{}\"\n",
        fixture("client-cert.pem").display()
    ));
    assert!(half.contains("graph.client_certificate_key_file"), "{half}");
    let mismatched = error_for(&format!(
        "client_certificate_file = \"{}\"\nclient_certificate_key_file = \"{}\"\n",
        fixture("client-cert.pem").display(),
        fixture("other-key.pem").display()
    ));
    assert!(
        mismatched.contains("graph.client_certificate_file")
            && mismatched.contains("does not belong"),
        "{mismatched}"
    );
    let missing = error_for("federated_token_file = \"/nonexistent/token\"\n");
    assert!(missing.contains("graph.federated_token_file"), "{missing}");
}
