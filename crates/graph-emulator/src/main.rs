//! Microsoft Graph emulator: the identity platform's token endpoint and the part of Graph
//! pimbridge uses, in memory. See `docs/graph-emulator.md`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use graph_emulator::{
    GraphEmulatorSettings, RunningGraphEmulator, SecretString, DEFAULT_CLIENT_ID,
    DEFAULT_PAGE_SIZE, DEFAULT_TENANT_ID,
};

/// Microsoft Graph emulator (in memory; control API under /_graph).
#[derive(Debug, Parser)]
#[command(name = "graph-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "GRAPH_EMULATOR_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// The tenant the token endpoint knows.
    #[arg(long, env = "GRAPH_EMULATOR_TENANT_ID", default_value = DEFAULT_TENANT_ID)]
    tenant_id: String,
    /// The app registration's client id.
    #[arg(long, env = "GRAPH_EMULATOR_CLIENT_ID", default_value = DEFAULT_CLIENT_ID)]
    client_id: String,
    /// The app registration's client secret (default "graph-emulator-secret").
    #[arg(long, env = "GRAPH_EMULATOR_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// File holding the client secret (first line), instead of --client-secret.
    #[arg(
        long,
        env = "GRAPH_EMULATOR_CLIENT_SECRET_FILE",
        conflicts_with = "client_secret"
    )]
    client_secret_file: Option<PathBuf>,
    /// PEM certificate registered on the app: client assertions signed with its key are accepted.
    #[arg(long, env = "GRAPH_EMULATOR_CLIENT_CERTIFICATE_FILE")]
    client_certificate_file: Option<PathBuf>,
    /// File holding a federated token accepted as the client assertion.
    #[arg(long, env = "GRAPH_EMULATOR_FEDERATED_TOKEN_FILE")]
    federated_token_file: Option<PathBuf>,
    /// Lifetime of issued tokens, in seconds.
    #[arg(
        long,
        env = "GRAPH_EMULATOR_TOKEN_LIFETIME_SECONDS",
        default_value_t = 3599
    )]
    token_lifetime_seconds: u64,
    /// Assignment instances per page before @odata.nextLink.
    #[arg(long, env = "GRAPH_EMULATOR_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE)]
    page_size: usize,
    /// Activations and deactivations send change notifications at once.
    #[arg(long, env = "GRAPH_EMULATOR_NOTIFY_ON_CHANGE")]
    notify_on_change: bool,
    /// Worker threads.
    #[arg(long, env = "GRAPH_EMULATOR_WORKERS", default_value_t = 2)]
    workers: usize,
}

impl Args {
    fn settings(&self) -> anyhow::Result<GraphEmulatorSettings> {
        let defaults = GraphEmulatorSettings::default();
        let client_secret = match (&self.client_secret, &self.client_secret_file) {
            (Some(secret), _) => SecretString::new(secret.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                SecretString::new(text.lines().next().unwrap_or_default().trim())
            }
            (None, None) => defaults.client_secret.clone(),
        };
        anyhow::ensure!(!client_secret.is_empty(), "the client secret is empty");
        anyhow::ensure!(
            self.page_size > 0 && self.token_lifetime_seconds > 0,
            "--page-size and --token-lifetime-seconds must be at least 1"
        );
        let client_certificate = self
            .client_certificate_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            })
            .transpose()?;
        let federated_token = self
            .federated_token_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))
                    .map(|t| SecretString::new(t.trim()))
            })
            .transpose()?;
        Ok(GraphEmulatorSettings {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            client_certificate,
            federated_token,
            token_lifetime: Duration::from_secs(self.token_lifetime_seconds),
            page_size: self.page_size,
            notify_on_change: self.notify_on_change,
            ..defaults
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let settings = args.settings()?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let emulator =
        RunningGraphEmulator::start_with_workers(settings, listener, args.workers).await?;
    println!("Authority:   {}", emulator.base_url());
    println!("Graph:       {}", emulator.graph_url());
    println!("Control API: {}", emulator.control_url());
    println!(
        "Tenant {} / client {}. Ctrl-C or SIGTERM stops.",
        args.tenant_id, args.client_id
    );
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            stopped = tokio::signal::ctrl_c() => stopped?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    tracing::info!("stopping");
    emulator.stop().await;
    Ok(())
}
