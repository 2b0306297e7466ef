//! The service's commands: `config check`, `policy`, `token create` and `serve` (the daemon).
//!
//! Each reads the daemon's `tidemark.toml` (`--config`); a config with problems prints every
//! diagnostic as `file:line:column: what; the fix` and exits 2 before anything starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tidemark_service::{Daemon, DaemonOptions};
use tidemark_service_core::{Catalog, CatalogError, Config, Control, PolicyRow, Role, ServiceError, format_duration};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::exit::{Status, UserError};
use crate::output::{Out, local_time, table};

/// `config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a service config file: every problem with its file, line, column and fix (exit 2).
    Check(ConfigArgs),
}

/// The service config file.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The daemon's configuration file.
    #[arg(long, env = "TIDEMARK_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The service config file.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// What the daemon logs on stderr (journald under systemd): off, error, warn, info, debug or
    /// trace. It sets tidemark's own messages; the libraries below it log warnings and errors.
    #[arg(
        long,
        env = "TIDEMARK_LOG_LEVEL",
        value_name = "LEVEL",
        default_value = "info",
        value_parser = parse_log_level
    )]
    pub log_level: LevelFilter,
}

/// A `--log-level` value.
fn parse_log_level(text: &str) -> Result<LevelFilter, String> {
    match text.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::OFF),
        "error" => Ok(LevelFilter::ERROR),
        "warn" => Ok(LevelFilter::WARN),
        "info" => Ok(LevelFilter::INFO),
        "debug" => Ok(LevelFilter::DEBUG),
        "trace" => Ok(LevelFilter::TRACE),
        _ => Err(format!("{text:?} is not a log level; use off, error, warn, info, debug or trace")),
    }
}

/// Sends `tracing` events to stderr: the HTTP layer's 500 details (under their request id) and
/// the daemon's warnings. Events of tidemark's crates up to `level`; of other crates (hyper,
/// rustls, ...) up to `warn`, or `level` when that is quieter.
fn init_logging(level: LevelFilter) {
    let filter = Targets::new().with_target("tidemark", level).with_default(level.min(LevelFilter::WARN));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Fails only when a subscriber is installed already (never in the binary): keep that one.
    let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
}

/// `token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API bearer token; it is printed once, only its hash is kept (in server.state_dir).
    Create(TokenCreateArgs),
}

/// `token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The service config file.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The token's name (shown in the audit log and job triggers).
    #[arg(long)]
    pub name: String,
    /// viewer (read), operator (also start jobs, create links) or admin (everything).
    #[arg(long)]
    pub role: String,
}

/// Read and validate the config; problems are printed to stderr and exit 2.
pub fn load(path: &Path) -> Result<Config> {
    match Config::load(path) {
        Ok(config) => Ok(config),
        Err(ServiceError::Config(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            Err(UserError::usage(
                format!("{} has {} problem(s)", path.display(), problems.len()),
                "fix them as each line says, then run `tidemark config check --config FILE` again",
            )
            .into())
        }
        Err(e) => Err(UserError::plain(e.to_string()).into()),
    }
}

/// `tidemark config check`.
pub fn run_config(command: &ConfigCommand, out: &Out) -> Result<Status> {
    let ConfigCommand::Check(args) = command;
    let config = load(&args.config)?;
    // Problems that only show on this machine: they do not stop the daemon from starting, so
    // they are warnings.
    let mut warnings = Vec::new();
    for repo in config.repositories.values() {
        if let Err(e) = std::fs::metadata(&repo.password_file) {
            warnings.push(format!("[repositories.{}]: password_file {}: {e}", repo.name, repo.password_file.display()));
        }
    }
    if out.json {
        out.json_value(&serde_json::json!({
            "file": args.config.display().to_string(),
            "ok": true,
            "repositories": config.repositories.keys().collect::<Vec<_>>(),
            "sources": config.sources.keys().collect::<Vec<_>>(),
            "webhooks": config.notify.len(),
            "warnings": warnings,
        }))?;
        return Ok(Status::Ok);
    }
    for w in &warnings {
        out.warn(w);
    }
    out.line(format!(
        "{}: ok ({} repositories, {} sources, {} webhooks)",
        args.config.display(),
        config.repositories.len(),
        config.sources.len(),
        config.notify.len()
    ))?;
    for source in config.sources.values() {
        out.info(format!("  {}: {}", source.name, tidemark_service::frequency(source)))?;
    }
    Ok(Status::Ok)
}

/// `tidemark policy`.
pub fn run_policy(args: &ConfigArgs, out: &Out) -> Result<Status> {
    let config = Arc::new(load(&args.config)?);
    let owner = tidemark_service_state::daemon_name(&config.server);
    let catalog: Arc<dyn Catalog> = match tidemark_service_state::open(&config.server, &owner) {
        Ok(catalog) => catalog,
        Err(CatalogError::Locked { .. }) => {
            out.warn(
                "the running daemon holds the catalog: drill results are not shown; \
                 GET /api/v1/policy on the daemon shows them",
            );
            Arc::new(tidemark_service_state::MemoryCatalog::new())
        }
        Err(e) => return Err(e).context("opening the service's catalog"),
    };
    let daemon = Daemon::new(config, catalog, DaemonOptions { owner, ..DaemonOptions::default() });
    let rows = daemon.policy().map_err(|e| anyhow::anyhow!("{e}"))?;
    if out.json {
        out.json_value(&rows)?;
    } else {
        out.line(policy_table(&rows))?;
    }
    Ok(Status::Ok)
}

fn age(seconds: Option<i64>) -> String {
    seconds.map_or("-".into(), |s| format_duration(jiff::SignedDuration::from_secs(s)))
}

fn policy_table(rows: &[PolicyRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let offsite: Vec<String> =
                r.offsite_lag_seconds.iter().map(|(n, lag)| format!("{n}: {}", age(*lag))).collect();
            let drill = r.last_drill.as_ref().map_or("-".to_string(), |d| {
                format!("{} {:.1}s ({})", if d.ok { "ok" } else { "FAILED" }, d.restore_seconds, local_time(d.time))
            });
            vec![
                r.source.clone(),
                r.method.clone(),
                r.frequency.clone(),
                r.retention.clone(),
                r.oldest_restorable.map_or("-".into(), local_time),
                r.recovery_precision.clone(),
                age(r.newest_backup_age_seconds),
                if offsite.is_empty() { "-".into() } else { offsite.join(", ") },
                drill,
            ]
        })
        .collect();
    table(
        &[
            "Source",
            "Method",
            "Frequency",
            "Retention",
            "Oldest restorable",
            "Precision",
            "Newest backup age",
            "Off-site lag",
            "Last drill",
        ],
        &cells,
    )
}

/// `tidemark token create`.
pub fn run_token(command: &TokenCommand, out: &Out) -> Result<Status> {
    let TokenCommand::Create(args) = command;
    let role: Role = args.role.parse().map_err(|e: ServiceError| UserError::usage(e.to_string(), "--role viewer"))?;
    let config = load(&args.config.config)?;
    let token = tidemark_service_http::tokens::create(&config.server.state_dir, &args.name, role)?;
    if out.json {
        out.json_value(&serde_json::json!({"name": args.name, "role": role.as_str(), "token": token}))?;
    } else {
        out.line(&token)?;
        out.info(format!("token {:?} ({role}) created; it is shown only this once", args.name))?;
    }
    Ok(Status::Ok)
}

/// `tidemark serve`: recover interrupted jobs, run the scheduler, serve the API until SIGTERM or
/// ctrl-c. Jobs still running then are left to the next start, which marks them interrupted and
/// reruns them.
///
/// The daemon is `server.name` (else the host name) in the catalog. An embedded catalog that
/// another daemon holds is refused with [`CatalogError::Locked`], whose message carries the fix,
/// and exit code 11 (see `exit.rs`).
pub fn run_serve(args: &ServeArgs, out: &Out) -> Result<Status> {
    init_logging(args.log_level);
    let config = Arc::new(load(&args.config.config)?);
    let owner = tidemark_service_state::daemon_name(&config.server);
    let catalog = tidemark_service_state::open(&config.server, &owner).map_err(|e| match e {
        CatalogError::Locked { .. } => anyhow::Error::new(e),
        other => anyhow::Error::new(other).context("opening the service's catalog"),
    })?;
    let daemon = Daemon::new(config.clone(), catalog, DaemonOptions { owner, ..DaemonOptions::default() });
    for job in daemon.recover()? {
        // On stderr: stdout's first line is the address, for whoever started the daemon.
        if !out.quiet {
            eprintln!(
                "tidemark serve: rerunning interrupted {} of {} as job {}",
                job.kind.as_str(),
                job.source,
                job.id
            );
        }
    }
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let scheduler = daemon.spawn_scheduler(stopped);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await.map_err(|e| {
            UserError::new(
                format!("cannot listen on {}: {e}", config.server.listen),
                "stop what uses that port, or change listen in [server]",
            )
        })?;
        out.line(format!("tidemark serve: listening on http://{}/", listener.local_addr()?))?;
        let control: Arc<dyn Control> = Arc::new(daemon.clone());
        tidemark_service_http::serve(config.clone(), control, listener, shutdown_signal()).await
    });
    drop(stop);
    let _ = scheduler.join();
    served?;
    out.info("tidemark serve: stopped")?;
    Ok(Status::Ok)
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
