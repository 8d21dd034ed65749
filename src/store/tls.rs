//! TLS for Postgres connections (managed Postgres services require it).
//!
//! Whether TLS is used follows the URL's `sslmode` (`disable`, `prefer` — the default — or
//! `require`). When it is, the server's certificate is always verified, against the operating
//! system's trust store plus `database.ca_file` (for a provider's CA bundle such as Amazon RDS's).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// Builds the connector every Postgres connection uses.
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable entries of the system store are skipped; the store may legitimately be empty
    // (a minimal image) when `ca_file` names the only CA needed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StoreError::Config(format!(
                    "database.ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(StoreError::Config(format!(
                "database.ca_file: {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                StoreError::Config(format!(
                    "database.ca_file: {} holds an unusable certificate: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Config(format!("TLS set-up: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
