//! Start-up validation: every rule on one key or across keys, each refusal naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::secrets::resolve_secret;
use super::{ConfigError, Settings};

const TEN_MS: Duration = Duration::from_millis(10);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Settings {
    /// Reads `…_file` secrets and checks every rule that spans keys.
    pub(super) fn resolve_and_validate(&mut self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "server.listen",
                format!(
                    "`{}` is not an address such as 0.0.0.0:8080",
                    self.server.listen
                ),
            ));
        }
        let internal = self
            .server
            .internal_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| {
                ConfigError::invalid(
                    "server.internal_listen",
                    format!(
                        "`{}` is not an address such as 0.0.0.0:9090",
                        self.server.internal_listen
                    ),
                )
            })?;
        if internal.port() != 0 && self.server.listen.parse().ok() == Some(internal) {
            return Err(ConfigError::invalid(
                "server.internal_listen",
                "must differ from server.listen (the internal routes must not be public)",
            ));
        }
        if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600))
            .contains(&self.server.keep_alive)
        {
            return Err(ConfigError::invalid(
                "server.keep_alive",
                "must be between 1s and 1h",
            ));
        }
        if !(std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(3600))
            .contains(&self.server.metrics_refresh_interval)
        {
            return Err(ConfigError::invalid(
                "server.metrics_refresh_interval",
                "must be between 10ms and 1h",
            ));
        }

        if !(std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(3600))
            .contains(&self.server.secret_reload_interval)
        {
            return Err(ConfigError::invalid(
                "server.secret_reload_interval",
                "must be between 10ms and 1h",
            ));
        }

        self.database.url = resolve_secret(
            "database.url",
            self.database.url.take(),
            self.database.url_file.as_deref(),
        )?;
        match &self.database.url {
            None => return Err(ConfigError::invalid("database.url", "is required")),
            Some(url) if url.expose().parse::<tokio_postgres::Config>().is_err() => {
                return Err(ConfigError::invalid(
                    "database.url",
                    "is not a valid Postgres connection string",
                ))
            }
            Some(_) => {}
        }
        if let Some(path) = &self.database.ca_file {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    "database.ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }

        self.validate_intake()?;
        self.validate_dispatch()?;
        self.validate_sync()?;
        self.validate_admin()?;
        self.validate_replica()?;
        self.validate_retention()?;
        self.validate_graph()?;
        self.validate_applications()?;
        Ok(())
    }

    fn validate_intake(&mut self) -> Result<(), ConfigError> {
        let intake = &mut self.intake;
        if intake.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "intake.max_body_bytes",
                "must be at least 1024",
            ));
        }
        intake.hmac_secret = resolve_secret(
            "intake.hmac_secret",
            intake.hmac_secret.take(),
            intake.hmac_secret_file.as_deref(),
        )?;
        if intake.requests_per_second > 0 && intake.requests_burst == 0 {
            return Err(ConfigError::invalid(
                "intake.requests_burst",
                "must be at least 1 while intake.requests_per_second is set",
            ));
        }
        if intake.client_ip_header.is_some() {
            return Err(ConfigError::invalid(
                "intake.client_ip_header",
                "was replaced by intake.trusted_proxies: list the addresses (CIDRs) of your reverse proxies and pimbridge reads X-Forwarded-For and Forwarded from them only",
            ));
        }
        for proxy in &intake.trusted_proxies {
            crate::proxy::Cidr::parse(proxy).map_err(|reason| {
                ConfigError::invalid("intake.trusted_proxies", format!("`{proxy}`: {reason}"))
            })?;
        }
        crate::proxy::ForwardingHeader::parse(&intake.proxy_header)
            .map_err(|reason| ConfigError::invalid("intake.proxy_header", reason))?;
        if intake.max_clock_skew > std::time::Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "intake.max_clock_skew",
                "must be at most 1d",
            ));
        }
        if let Some(secret) = &intake.hmac_secret {
            if secret.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    "intake.hmac_secret",
                    "must be at least 16 characters",
                ));
            }
        }
        if let Some(jwt) = &intake.jwt {
            if jwt.issuers.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.issuers",
                    "must name at least one issuer",
                ));
            }
            if jwt.audiences.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.audiences",
                    "must name at least one audience",
                ));
            }
            if jwt.algorithms.is_empty() {
                return Err(ConfigError::invalid(
                    "intake.jwt.algorithms",
                    "must name at least one algorithm",
                ));
            }
            for alg in &jwt.algorithms {
                parse_algorithm(alg)
                    .map_err(|reason| ConfigError::invalid("intake.jwt.algorithms", reason))?;
            }
            match (&jwt.jwks_url, &jwt.jwks_file) {
                (None, None) => {
                    return Err(ConfigError::invalid(
                        "intake.jwt.jwks_url",
                        "set jwks_url or jwks_file",
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        "intake.jwt.jwks_url",
                        "set only one of jwks_url and jwks_file",
                    ))
                }
                (Some(url), None) => {
                    let parsed = url::Url::parse(url).map_err(|e| {
                        ConfigError::invalid("intake.jwt.jwks_url", format!("not a URL: {e}"))
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(ConfigError::invalid(
                            "intake.jwt.jwks_url",
                            "must be an http(s) URL",
                        ));
                    }
                }
                (None, Some(path)) => {
                    if !path.is_file() {
                        return Err(ConfigError::invalid(
                            "intake.jwt.jwks_file",
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
        }
        if intake.hmac_secret.is_none() && intake.jwt.is_none() {
            return Err(ConfigError::invalid(
                "intake.hmac_secret",
                "events must be authenticated: set intake.hmac_secret (or hmac_secret_file) or configure [intake.jwt]",
            ));
        }
        Ok(())
    }

    fn validate_dispatch(&self) -> Result<(), ConfigError> {
        let d = &self.dispatch;
        if d.concurrency == 0 {
            return Err(ConfigError::invalid(
                "dispatch.concurrency",
                "must be at least 1",
            ));
        }
        if d.poll_interval < SECOND {
            return Err(ConfigError::invalid(
                "dispatch.poll_interval",
                "must be at least 1s",
            ));
        }
        if d.lease < SECOND {
            return Err(ConfigError::invalid(
                "dispatch.lease",
                "must be at least 1s",
            ));
        }
        if d.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "dispatch.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_replica(&self) -> Result<(), ConfigError> {
        let r = &self.replica;
        if !(TEN_MS * 10..=MINUTE).contains(&r.heartbeat_interval) {
            return Err(ConfigError::invalid(
                "replica.heartbeat_interval",
                "must be between 100ms and 1m",
            ));
        }
        // Three missed beats before a live replica could be taken for dead.
        if r.dead_after < r.heartbeat_interval * 3 || r.dead_after > 10 * MINUTE {
            return Err(ConfigError::invalid(
                "replica.dead_after",
                "must be at least three replica.heartbeat_interval and at most 10m",
            ));
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<(), ConfigError> {
        let r = &self.retention;
        let check_days = |key: &str, days: u32| {
            if (1..=36_500).contains(&days) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    "must be between 1 and 36500 days",
                ))
            }
        };
        check_days("retention.days", r.days)?;
        let d = &r.days_by_kind;
        for (kind, days) in [
            ("events", d.events),
            ("jobs", d.jobs),
            ("grants", d.grants),
            ("provisioning_log", d.provisioning_log),
            ("cycles", d.cycles),
            ("graph_hints", d.graph_hints),
        ] {
            if let Some(days) = days {
                check_days(&format!("retention.days_by_kind.{kind}"), days)?;
            }
        }
        if !(1..=100_000).contains(&r.batch_size) {
            return Err(ConfigError::invalid(
                "retention.batch_size",
                "must be between 1 and 100000",
            ));
        }
        if !(r.duty_cycle > 0.0 && r.duty_cycle <= 1.0) {
            return Err(ConfigError::invalid(
                "retention.duty_cycle",
                "must be more than 0 and at most 1",
            ));
        }
        if !(SECOND..=24 * HOUR).contains(&r.interval) {
            return Err(ConfigError::invalid(
                "retention.interval",
                "must be between 1s and 1d",
            ));
        }
        Ok(())
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        if !(TEN_MS..=HOUR).contains(&self.sync.check_interval) {
            return Err(ConfigError::invalid(
                "sync.check_interval",
                "must be between 10ms and 1h",
            ));
        }
        if self.sync.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "sync.max_attempts",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_admin(&mut self) -> Result<(), ConfigError> {
        let admin = &mut self.admin;
        admin.token = resolve_secret(
            "admin.token",
            admin.token.take(),
            admin.token_file.as_deref(),
        )?;
        if admin.token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(ConfigError::invalid(
                "admin.token",
                "must be at least 16 characters",
            ));
        }
        if admin.requests_per_second > 0 && admin.requests_burst == 0 {
            return Err(ConfigError::invalid(
                "admin.requests_burst",
                "must be at least 1 while admin.requests_per_second is set",
            ));
        }
        if let (Some(admin), Some(hmac)) = (&admin.token, &self.intake.hmac_secret) {
            if admin.expose() == hmac.expose() {
                return Err(ConfigError::invalid(
                    "admin.token",
                    "must differ from intake.hmac_secret (the admin API needs its own credential)",
                ));
            }
        }
        Ok(())
    }

    fn validate_graph(&mut self) -> Result<(), ConfigError> {
        let Some(graph) = &mut self.graph else {
            return Ok(());
        };
        for (key, value) in [
            ("graph.tenant_id", &graph.tenant_id),
            ("graph.client_id", &graph.client_id),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "is empty"));
            }
        }
        graph.client_secret = resolve_secret(
            "graph.client_secret",
            graph.client_secret.take(),
            graph.client_secret_file.as_deref(),
        )?;
        validate_graph_credential(graph)?;
        graph.client_state = resolve_secret(
            "graph.client_state",
            graph.client_state.take(),
            graph.client_state_file.as_deref(),
        )?;
        match &graph.client_state {
            None => {
                return Err(ConfigError::invalid(
                    "graph.client_state",
                    "is required (or client_state_file): notifications are authenticated by it",
                ))
            }
            Some(state) if !(16..=128).contains(&state.expose().len()) => {
                return Err(ConfigError::invalid(
                    "graph.client_state",
                    "must be 16 to 128 characters (Graph's limit is 128)",
                ))
            }
            Some(_) => {}
        }
        for (key, value) in [
            ("graph.authority_url", &graph.authority_url),
            ("graph.graph_url", &graph.graph_url),
        ] {
            let url = url::Url::parse(value)
                .map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(key, "must be an http(s) URL"));
            }
        }
        if let Some(url) = &graph.notification_url {
            let parsed = url::Url::parse(url).map_err(|e| {
                ConfigError::invalid("graph.notification_url", format!("not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "graph.notification_url",
                    "must be an http(s) URL (Graph requires https)",
                ));
            }
        }
        if !(45 * MINUTE..=41_760 * MINUTE).contains(&graph.subscription_lifetime) {
            return Err(ConfigError::invalid(
                "graph.subscription_lifetime",
                "must be between 45m and 29d (41760 minutes, Graph's maximum for groups)",
            ));
        }
        if graph.renew_before >= graph.subscription_lifetime {
            return Err(ConfigError::invalid(
                "graph.renew_before",
                "must be less than graph.subscription_lifetime",
            ));
        }
        if !(TEN_MS..=HOUR).contains(&graph.subscription_check_interval) {
            return Err(ConfigError::invalid(
                "graph.subscription_check_interval",
                "must be between 10ms and 1h",
            ));
        }
        if !(TEN_MS..=MINUTE).contains(&graph.resolve_interval) {
            return Err(ConfigError::invalid(
                "graph.resolve_interval",
                "must be between 10ms and 1m",
            ));
        }
        Ok(())
    }

    fn validate_applications(&mut self) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, app) in &mut self.applications {
            let key = |field: &str| format!("applications.{name}.{field}");
            if !is_valid_application_name(name) {
                return Err(ConfigError::invalid(
                    format!("applications.{name}"),
                    "application names use lowercase letters, digits and `_`, starting with a letter (so that PIMBRIDGE_APPLICATIONS__<NAME>__… can override them)",
                ));
            }
            let url = url::Url::parse(&app.scim_url)
                .map_err(|e| ConfigError::invalid(key("scim_url"), format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    key("scim_url"),
                    "must be an http(s) URL",
                ));
            }
            app.scim_token = resolve_secret(
                &key("scim_token"),
                app.scim_token.take(),
                app.scim_token_file.as_deref(),
            )?;
            if app.scim_token.is_none() {
                return Err(ConfigError::invalid(
                    key("scim_token"),
                    "is required (or scim_token_file)",
                ));
            }
            if app.groups.is_empty() {
                return Err(ConfigError::invalid(
                    key("groups"),
                    "must list at least one Entra group object id",
                ));
            }
            for group in &app.groups {
                if group.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        key("groups"),
                        "contains an empty group id",
                    ));
                }
                owners
                    .entry(group.clone())
                    .or_default()
                    .insert(name.clone());
            }
            if app.activation_limit == 0 {
                return Err(ConfigError::invalid(
                    key("activation_limit"),
                    "must be at least 1",
                ));
            }
            if app.max_removals_per_cycle == 0 {
                return Err(ConfigError::invalid(
                    key("max_removals_per_cycle"),
                    "must be at least 1 (every cycle with a removal would wait for an operator)",
                ));
            }
            if app.activation_window.is_zero() || app.activation_window > HOUR {
                return Err(ConfigError::invalid(
                    key("activation_window"),
                    "must be more than 0 and at most 1h",
                ));
            }
            if app.cycle_interval < SECOND {
                return Err(ConfigError::invalid(
                    key("cycle_interval"),
                    "must be at least 1s",
                ));
            }
            if app.requests_per_second == 0 {
                return Err(ConfigError::invalid(
                    key("requests_per_second"),
                    "must be at least 1",
                ));
            }
            if app.requests_burst == 0 {
                return Err(ConfigError::invalid(
                    key("requests_burst"),
                    "must be at least 1",
                ));
            }
            for (name, value) in [
                (
                    "immediate_requests_per_second",
                    app.immediate_requests_per_second,
                ),
                ("immediate_requests_burst", app.immediate_requests_burst),
            ] {
                if value == Some(0) {
                    return Err(ConfigError::invalid(key(name), "must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

/// Parses a JWT algorithm name; symmetric (HS*) algorithms are refused because a JWKS publishes
/// public keys, and accepting HS* with them is the classic key-confusion attack.
/// Exactly one way for pimbridge to sign in to Graph: a client secret, a certificate (both of
/// its files), or a federated token file; the certificate and its key must belong together.
fn validate_graph_credential(graph: &super::GraphSettings) -> Result<(), ConfigError> {
    const CHOICES: &str = "set exactly one of graph.client_secret (or graph.client_secret_file), \
        graph.client_certificate_file with graph.client_certificate_key_file, or \
        graph.federated_token_file";
    let certificate = match (
        &graph.client_certificate_file,
        &graph.client_certificate_key_file,
    ) {
        (Some(_), Some(_)) => true,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "graph.client_certificate_key_file",
                "is required with graph.client_certificate_file (the certificate's PEM private key)",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "graph.client_certificate_file",
                "is required with graph.client_certificate_key_file (the PEM certificate registered on the app)",
            ))
        }
        (None, None) => false,
    };
    let configured: Vec<&str> = [
        (graph.client_secret.is_some(), "graph.client_secret"),
        (certificate, "graph.client_certificate_file"),
        (
            graph.federated_token_file.is_some(),
            "graph.federated_token_file",
        ),
    ]
    .into_iter()
    .filter_map(|(set, key)| set.then_some(key))
    .collect();
    match configured.as_slice() {
        [] => {
            let hint = if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                " (AZURE_FEDERATED_TOKEN_FILE is set: for workload identity set \
                 graph.federated_token_file to its value, e.g. \
                 PIMBRIDGE_GRAPH__FEDERATED_TOKEN_FILE=$(AZURE_FEDERATED_TOKEN_FILE))"
            } else {
                ""
            };
            Err(ConfigError::invalid(
                "graph.client_secret",
                format!("no Graph credential: {CHOICES}{hint}"),
            ))
        }
        [_] => match graph.client_assertion() {
            Some(assertion) => assertion.check(&graph.client_id).map_err(|e| {
                let key = if certificate {
                    "graph.client_certificate_file"
                } else {
                    "graph.federated_token_file"
                };
                ConfigError::invalid(key, e.to_string())
            }),
            None => Ok(()),
        },
        [first, ..] => Err(ConfigError::invalid(
            *first,
            format!(
                "more than one Graph credential is set ({}): {CHOICES}",
                configured.join(", ")
            ),
        )),
    }
}

pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = name
        .parse()
        .map_err(|_| format!("unknown algorithm `{name}`"))?;
    if name.starts_with("HS") {
        return Err(format!(
            "`{name}` is symmetric; only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted"
        ));
    }
    Ok(alg)
}

fn is_valid_application_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}
