//! TLS to Postgres: `sslmode=require` with the server certificate verified against `ca_file`.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::helpers::*;
use crate::postgres::PgServer;

/// A CA (PEM) and a server certificate and key (PEM) for 127.0.0.1 signed by it.
fn certificates() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pimbridge test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

fn write_temp(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pimbridge-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn database_settings(
    url: &str,
    ca_file: Option<std::path::PathBuf>,
) -> pimbridge::config::DatabaseSettings {
    pimbridge::config::DatabaseSettings {
        url: Some(url.into()),
        url_file: None,
        max_connections: 2,
        connect_timeout: std::time::Duration::from_secs(2),
        ca_file,
    }
}

#[tokio::test]
async fn the_service_talks_to_a_tls_only_postgres_and_verifies_its_certificate() {
    // Arrange: a Postgres that refuses plain TCP connections.
    let (ca, cert, key) = certificates();
    let server = PgServer::private_tls(&cert, &key);
    let url = format!("{}?sslmode=require", server.fresh_database().await);
    let ca_file = write_temp("ca.pem", &ca);

    // Act + Assert: connections are encrypted.
    let pool =
        pimbridge::store::build_pool(&database_settings(&url, Some(ca_file.clone()))).unwrap();
    let db = pool.get().await.unwrap();
    let encrypted: bool = db
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);

    // A certificate from an unknown CA is refused: no connection, no data sent in clear.
    let (other_ca, _, _) = certificates();
    let wrong = pimbridge::store::build_pool(&database_settings(
        &url,
        Some(write_temp("other.pem", &other_ca)),
    ))
    .unwrap();
    assert!(wrong.get().await.is_err());

    // The whole service runs on it: ready, and events are stored.
    let mut settings = test_settings(&url);
    settings.database.ca_file = Some(ca_file.clone());
    let name = url
        .rsplit_once('/')
        .unwrap()
        .1
        .trim_end_matches("?sslmode=require");
    let over_socket = server
        .admin_url
        .replace("dbname=postgres", &format!("dbname={name}"));
    let app = spawn_app_with_assertions_via(settings, &over_socket).await;
    let response = app.post_events(&activation("tls-1", GROUP_A, "u1")).await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.events().await, 1);
}
