//! The binary stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::test_settings_toml;
use crate::postgres::{free_port, PgServer};

#[tokio::test]
async fn sigterm_stops_the_service_and_it_exits_zero() {
    // Arrange: the real binary, serving on known ports (public and internal).
    let url = PgServer::shared().fresh_database().await;
    let port = free_port();
    let internal_port = free_port();
    let dir = std::env::temp_dir().join(format!("pimbridge-sig-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, test_settings_toml(&url)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pimbridge"))
        // As an operator would override keys of the file.
        .env("PIMBRIDGE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "PIMBRIDGE_SERVER__INTERNAL_LISTEN",
            format!("127.0.0.1:{internal_port}"),
        )
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
        {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service became ready");

    // Act
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // Assert: exits by itself, with status 0, and no longer listens on either port.
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the service did not exit within 10 s of SIGTERM");
    });
    assert!(status.success(), "exit status {status:?}");
    for port in [port, internal_port] {
        assert!(http
            .get(format!("http://127.0.0.1:{port}/health/live"))
            .send()
            .await
            .is_err());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
