//! The `pimbridge` binary: `serve`, `migrate`, `check-config`, `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pimbridge::config::Settings;
use pimbridge::startup::Application;

#[derive(Parser)]
#[command(
    version,
    about = "Entra PIM activations to AWS IAM Identity Center, in milliseconds"
)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "PIMBRIDGE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and run the dispatcher (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Print an X-Pimbridge-Signature header value for the body on standard input, signed now
    /// with `intake.hmac_secret` (for curl and for testing senders).
    Sign,
    /// Print the OpenAPI 3.1 document of every route (`> docs/openapi.json` regenerates it).
    Openapi,
    /// Exit 0 if the service on this host answers /health/live (for container health checks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/health/live")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pimbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Healthcheck { url }) = &cli.command {
        let response = reqwest::get(url).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url} answered {}",
            response.status()
        );
        return Ok(());
    }
    if let Some(Command::Openapi) = &cli.command {
        println!(
            "{}",
            serde_json::to_string_pretty(&pimbridge::routes::openapi::document())?
        );
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            println!(
                "configuration is valid: {} application(s), listening on {} (internal: {})",
                settings.applications.len(),
                settings.server.listen,
                settings.server.internal_listen
            );
            Ok(())
        }
        Command::Sign => {
            let secret = settings
                .intake
                .hmac_secret
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("intake.hmac_secret is not configured"))?;
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            println!("{}", pimbridge::auth::hmac::sign(secret, now, &body));
            Ok(())
        }
        Command::Migrate => {
            pimbridge::telemetry::init(&settings.log);
            let applied = pimbridge::startup::migrate_only(&settings).await?;
            println!("migrations applied: {applied}");
            Ok(())
        }
        Command::Serve => {
            pimbridge::telemetry::init(&settings.log);
            let app = Application::build(settings).await?;
            tracing::info!(
                port = app.port(),
                internal_port = app.internal_port(),
                "listening"
            );
            let token = app.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                token.cancel();
            });
            app.run_until_stopped().await
        }
        Command::Healthcheck { .. } | Command::Openapi => Ok(()),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
