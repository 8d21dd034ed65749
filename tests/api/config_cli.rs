//! `pimbridge check-config`: the binary refuses each kind of bad configuration, naming the key.

use std::process::Command;

fn check_config(toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("pimbridge-cc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pimbridge"));
    command.arg("--config").arg(&path).arg("check-config");
    for (key, _) in std::env::vars() {
        if key.starts_with("PIMBRIDGE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

const GOOD: &str = r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/pimbridge"
[intake]
hmac_secret = "0123456789abcdef0123"
[applications.prod]
scim_url = "https://scim.us-east-1.amazonaws.com/abc/scim/v2"
scim_token = "t"
groups = ["g1"]
"#;

#[test]
fn the_example_configuration_is_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    let (ok, output) = check_config(&example, &[]);
    assert!(ok, "{output}");
}

#[test]
fn a_good_configuration_passes() {
    let (ok, output) = check_config(GOOD, &[]);
    assert!(ok, "{output}");
    assert!(output.contains("1 application(s)"));
}

/// A case name, the file, extra environment variables, and the key the error must name.
type Case = (
    &'static str,
    String,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

#[test]
fn each_bad_configuration_is_refused_naming_its_key() {
    let cases: Vec<Case> = vec![
        (
            "typo in a key",
            edit(GOOD, "[intake]", "[intake]\nhmac_secert = \"x\""),
            vec![],
            "hmac_secert",
        ),
        (
            "bad type",
            edit(
                GOOD,
                "groups = [\"g1\"]",
                "groups = [\"g1\"]\nactivation_limit = \"five\"",
            ),
            vec![],
            "activation_limit",
        ),
        (
            "zero window",
            edit(
                GOOD,
                "groups = [\"g1\"]",
                "groups = [\"g1\"]\nactivation_window = \"0s\"",
            ),
            vec![],
            "applications.prod.activation_window",
        ),
        (
            "bad env override",
            GOOD.to_string(),
            vec![("PIMBRIDGE_SERVER__LISTEN", "nowhere")],
            "server.listen",
        ),
        (
            "env override of a limit",
            GOOD.to_string(),
            vec![("PIMBRIDGE_APPLICATIONS__PROD__REQUESTS_PER_SECOND", "0")],
            "applications.prod.requests_per_second",
        ),
        (
            "missing token file",
            edit(
                GOOD,
                "scim_token = \"t\"",
                "scim_token_file = \"/nonexistent/token\"",
            ),
            vec![],
            "applications.prod.scim_token_file",
        ),
        (
            "bad database url",
            edit(
                GOOD,
                "postgres://postgres@127.0.0.1:5432/pimbridge",
                "postgres://host:notaport/db",
            ),
            vec![],
            "database.url",
        ),
        (
            "not TOML",
            "this is = = not toml".to_string(),
            vec![],
            "configuration",
        ),
        (
            "admin token equal to the HMAC secret",
            format!("{GOOD}\n[admin]\ntoken = \"0123456789abcdef0123\""),
            vec![],
            "admin.token",
        ),
        (
            "Graph without a clientState",
            format!("{GOOD}\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\""),
            vec![],
            "graph.client_state",
        ),
        (
            "Graph clientState too short",
            format!("{GOOD}\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nclient_state = \"short\""),
            vec![],
            "graph.client_state",
        ),
        (
            "Graph renewal margin not below the lifetime",
            format!(
                "{GOOD}\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nclient_state = \"0123456789abcdef\"\nsubscription_lifetime = \"1h\"\nrenew_before = \"60m\""
            ),
            vec![],
            "graph.renew_before",
        ),
        (
            "a bad client IP header",
            edit(GOOD, "[intake]", "[intake]\nclient_ip_header = \"not a header\""),
            vec![],
            "intake.client_ip_header",
        ),
        (
            "a zero cycle interval",
            edit(GOOD, "groups = [\"g1\"]", "groups = [\"g1\"]\ncycle_interval = \"0s\""),
            vec![],
            "applications.prod.cycle_interval",
        ),
    ];
    for (case, toml, env, key) in cases {
        let (ok, output) = check_config(&toml, &env);
        assert!(!ok, "{case}: expected a failure");
        assert!(
            output.contains(key),
            "{case}: expected `{key}` in: {output}"
        );
        assert!(
            !output.contains("0123456789abcdef0123"),
            "{case}: a secret leaked"
        );
    }
}

#[test]
fn durations_are_read_in_human_form_and_bad_ones_refused_naming_the_key() {
    for good in ["500ms", "10s", "40m", "6h", "1d", "1h30m"] {
        let toml = edit(
            GOOD,
            "[intake]",
            &format!("[intake]\nsignature_tolerance = \"{good}\""),
        );
        let (ok, output) = check_config(&toml, &[]);
        assert!(ok, "{good}: {output}");
    }
    let (ok, output) = check_config(GOOD, &[("PIMBRIDGE_SYNC__CHECK_INTERVAL", "250ms")]);
    assert!(ok, "a duration from the environment: {output}");
    for bad in ["60", "10 s", "1.5s", "10sec", "-1s", "", "soon"] {
        let toml = format!("{GOOD}\n[dispatch]\nlease = \"{bad}\"");
        let (ok, output) = check_config(&toml, &[]);
        assert!(!ok, "`{bad}` was accepted");
        assert!(output.contains("dispatch.lease"), "{bad}: {output}");
        assert!(
            output.contains("\"40m\""),
            "{bad}: the form is shown: {output}"
        );
    }
    let (ok, output) = check_config(&format!("{GOOD}\n[dispatch]\nlease = 60"), &[]);
    assert!(
        !ok && output.contains("dispatch.lease"),
        "a bare number: {output}"
    );
}

#[test]
fn renamed_duration_keys_are_refused_naming_the_new_key_and_value() {
    let cases = [
        (
            format!("{GOOD}cycle_interval_secs = 2400"),
            vec![],
            "configuration key `applications.prod.cycle_interval_secs` was renamed: use `applications.prod.cycle_interval = \"40m\"`",
        ),
        (
            format!("{GOOD}\n[dispatch]\nlease_secs = 60"),
            vec![],
            "configuration key `dispatch.lease_secs` was renamed: use `dispatch.lease = \"1m\"`",
        ),
        (
            format!("{GOOD}\n[sync]\ncheck_interval_ms = 500"),
            vec![],
            "configuration key `sync.check_interval_ms` was renamed: use `sync.check_interval = \"500ms\"`",
        ),
        (
            format!("{GOOD}activation_window_secs = 0.5"),
            vec![],
            "`applications.prod.activation_window_secs` was renamed: use `applications.prod.activation_window = \"500ms\"`",
        ),
        (
            GOOD.to_string(),
            vec![("PIMBRIDGE_SERVER__SHUTDOWN_TIMEOUT_SECS", "20")],
            "`server.shutdown_timeout_secs` was renamed: use `server.shutdown_timeout = \"20s\"`",
        ),
        (
            format!("{GOOD}\n[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nclient_state = \"0123456789abcdef\"\nsubscription_minutes = 2880"),
            vec![],
            "`graph.subscription_minutes` was renamed: use `graph.subscription_lifetime = \"2d\"`",
        ),
    ];
    for (toml, env, message) in cases {
        let (ok, output) = check_config(&toml, &env);
        assert!(!ok, "accepted: {toml}");
        assert!(output.contains(message), "expected {message} in: {output}");
    }
}

#[test]
fn environment_variables_override_file_keys() {
    let (ok, output) = check_config(GOOD, &[("PIMBRIDGE_SERVER__LISTEN", "127.0.0.1:9999")]);
    assert!(ok, "{output}");
    assert!(output.contains("127.0.0.1:9999"), "{output}");
}

#[tokio::test]
async fn the_migrate_subcommand_applies_every_migration_once() {
    let url = crate::postgres::PgServer::shared().fresh_database().await;
    let toml = edit(GOOD, "postgres://postgres@127.0.0.1:5432/pimbridge", &url);
    let dir = std::env::temp_dir().join(format!("pimbridge-mig-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_pimbridge"))
            .arg("--config")
            .arg(&path)
            .arg("migrate")
            .output()
            .unwrap()
    };

    // Every file in sql/ is one migration.
    let expected = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "sql")
        })
        .count();

    let first = migrate();
    let second = migrate();

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains(&format!("migrations applied: {expected}"))
    );
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("migrations applied: 0"));
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let applied: i64 = db
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, expected as i64);
    let registered: i64 = db
        .query_one("SELECT count(*) FROM applications WHERE name = 'prod'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 1, "configured applications are registered");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `text` with `from` replaced by `to`; a `from` that is not there fails the test rather than
/// leaving the text unchanged (and the test testing nothing).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` is not in the configuration");
    text.replace(from, to)
}
