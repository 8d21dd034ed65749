//! AWS IAM Identity Center SCIM emulator: an in-memory SCIM endpoint for dry runs and tests.
//! See `docs/emulator.md`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::Context as _;
use aws_scim_emulator::{
    EmulatorSettings, RedundantMemberChange, RunningEmulator, DEFAULT_TENANT_ID,
};
use clap::{ArgAction, Parser, ValueEnum};

/// Answer to a membership change that changes nothing.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum MemberChange {
    /// 204, nothing changes.
    NoOp,
    /// 409 ConflictException.
    Conflict,
    /// 404 ResourceNotFoundException.
    NotFound,
    /// 400 ValidationException.
    BadRequest,
}

impl From<MemberChange> for RedundantMemberChange {
    fn from(value: MemberChange) -> Self {
        match value {
            MemberChange::NoOp => Self::NoOp,
            MemberChange::Conflict => Self::Conflict,
            MemberChange::NotFound => Self::NotFound,
            MemberChange::BadRequest => Self::BadRequest,
        }
    }
}

/// AWS IAM Identity Center SCIM emulator (in memory; control API under /_emulator).
#[derive(Debug, Parser)]
#[command(name = "aws-scim-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// Tenant id: first path segment of the SCIM base URL.
    #[arg(long, env = "EMULATOR_TENANT_ID", default_value = DEFAULT_TENANT_ID)]
    tenant_id: String,
    /// Accepted bearer token; repeat or separate with commas for several.
    /// Default "emulator-token" when neither --token nor --token-file is given.
    #[arg(
        long = "token",
        env = "EMULATOR_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    tokens: Vec<String>,
    /// File with accepted bearer tokens, one per line.
    #[arg(long, env = "EMULATOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, env = "EMULATOR_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Refuse tab, CR, LF, " < > ; : % in string attributes.
    #[arg(long, env = "EMULATOR_STRICT_CHARACTERS", action = ArgAction::Set, default_value_t = true)]
    strict_characters: bool,
    /// Refuse the reserved names Administrator and AWSAdministrators.
    #[arg(long, env = "EMULATOR_RESERVED_NAMES", action = ArgAction::Set, default_value_t = true)]
    reserved_names: bool,
    /// userName uniqueness and `userName eq` ignore case.
    #[arg(long, env = "EMULATOR_USER_NAME_CASE_INSENSITIVE", action = ArgAction::Set, default_value_t = true)]
    user_name_case_insensitive: bool,
    /// Group displayName uniqueness and `displayName eq` ignore case.
    #[arg(long, env = "EMULATOR_GROUP_NAME_CASE_INSENSITIVE", action = ArgAction::Set, default_value_t = true)]
    group_name_case_insensitive: bool,
    /// PATCH op names are case-insensitive ("Replace").
    #[arg(long, env = "EMULATOR_CASE_INSENSITIVE_OPS", action = ArgAction::Set, default_value_t = true)]
    case_insensitive_ops: bool,
    /// Refuse requests without a User-Agent header (403).
    #[arg(long, env = "EMULATOR_REQUIRE_USER_AGENT", action = ArgAction::Set, default_value_t = true)]
    require_user_agent: bool,
    /// Answer to adding a user who is already a member.
    #[arg(
        long,
        env = "EMULATOR_DUPLICATE_MEMBER_ADD",
        value_enum,
        default_value = "no-op"
    )]
    duplicate_member_add: MemberChange,
    /// Answer to removing a user who is not a member.
    #[arg(
        long,
        env = "EMULATOR_ABSENT_MEMBER_REMOVE",
        value_enum,
        default_value = "no-op"
    )]
    absent_member_remove: MemberChange,
    /// Unknown user ids in group members answer 404.
    #[arg(long, env = "EMULATOR_REJECT_UNKNOWN_MEMBERS", action = ArgAction::Set, default_value_t = true)]
    reject_unknown_members: bool,
    /// `members.value eq` / `groups.value eq` naming an unknown id answer 404 (else an empty list).
    #[arg(long, env = "EMULATOR_UNKNOWN_FILTER_REFERENCE_NOT_FOUND", action = ArgAction::Set, default_value_t = true)]
    unknown_filter_reference_not_found: bool,
    /// Accept `member eq` as an alias of `members eq` in group filters.
    #[arg(long, env = "EMULATOR_ACCEPT_MEMBER_FILTER_ALIAS", action = ArgAction::Set, default_value_t = true)]
    accept_member_filter_alias: bool,
    /// Accept user PATCH operations without `path`.
    #[arg(long, env = "EMULATOR_USER_PATCH_WITHOUT_PATH", action = ArgAction::Set, default_value_t = false)]
    user_patch_without_path: bool,
    /// Generate ids in the old `<10 hex>-<uuid>` form.
    #[arg(long, env = "EMULATOR_PREFIXED_IDS", action = ArgAction::Set, default_value_t = false)]
    prefixed_ids: bool,
    /// Request-log entries kept.
    #[arg(long, env = "EMULATOR_REQUEST_LOG_CAPACITY", default_value_t = 10_000)]
    request_log_capacity: usize,
}

impl Args {
    fn settings(&self) -> anyhow::Result<EmulatorSettings> {
        let mut tokens: Vec<String> = self
            .tokens
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect();
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        let defaults = EmulatorSettings::default();
        if tokens.is_empty() {
            tokens = defaults.tokens.clone();
        }
        Ok(EmulatorSettings {
            tenant_id: self.tenant_id.clone(),
            tokens,
            strict_characters: self.strict_characters,
            reserved_names: self.reserved_names,
            user_name_case_insensitive: self.user_name_case_insensitive,
            group_name_case_insensitive: self.group_name_case_insensitive,
            case_insensitive_ops: self.case_insensitive_ops,
            require_user_agent: self.require_user_agent,
            duplicate_member_add: self.duplicate_member_add.into(),
            absent_member_remove: self.absent_member_remove.into(),
            reject_unknown_members: self.reject_unknown_members,
            unknown_filter_reference_not_found: self.unknown_filter_reference_not_found,
            accept_member_filter_alias: self.accept_member_filter_alias,
            user_patch_without_path: self.user_patch_without_path,
            prefixed_ids: self.prefixed_ids,
            request_log_capacity: self.request_log_capacity,
        })
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let settings = args.settings()?;
    let token_count = settings.tokens.len();
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let emulator = RunningEmulator::start_with_workers(settings, listener, args.workers).await?;
    println!("SCIM base URL: {}", emulator.scim_base_url());
    println!("Control API:   {}", emulator.control_url());
    println!("Accepting {token_count} bearer token(s). Ctrl-C or SIGTERM stops.");
    shutdown_signal().await?;
    tracing::info!("stopping");
    emulator.stop().await;
    Ok(())
}
