//! `tidemark`: the command line, and the composition root that joins storage backends, the
//! repository engine and the sources (directories, buckets and PostgreSQL clusters).
//!
//! Each command lives in the module of its group; [`exit`] documents the exit codes and is the only
//! place where errors become codes. docs/CLI.md describes every command and flag.

mod args;
mod backup;
mod bucket;
mod copy;
mod demo;
mod exit;
mod find;
mod key;
mod maintenance;
mod malloc;
mod open;
mod output;
mod pg;
mod progress;
mod restore;
mod serve_repo;
mod service;
mod snapshots;
mod watch;

use std::process::ExitCode;
use std::sync::LazyLock;

use anyhow::Result;
use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Status;
use crate::output::Out;

static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!("{} (repository format version {})", env!("CARGO_PKG_VERSION"), tidemark_format::FORMAT_VERSION)
});

/// `0.1.0 (repository format version 1)`.
pub fn version_string() -> &'static str {
    VERSION.as_str()
}

fn run(cli: &Cli) -> Result<Status> {
    let g = &cli.global;
    let out = Out::new(g);
    match &cli.command {
        Command::Init(args) => open::init(g, args, &out).map(|_| Status::Ok),
        Command::Backup(args) => backup::run(g, args, &out),
        Command::Watch(args) => watch::run(g, args, &out),
        Command::Snapshots(args) => snapshots::run_snapshots(g, args, &out),
        Command::Ls(args) => snapshots::run_ls(g, args, &out),
        Command::Restore(args) => restore::run(g, args, &out),
        Command::Find(args) => find::run(g, args, &out),
        Command::Dump(args) => snapshots::run_dump(g, args, &out),
        Command::Diff(args) => snapshots::run_diff(g, args, &out),
        Command::Check(args) => maintenance::run_check(g, args, &out),
        Command::Forget(args) => maintenance::run_forget(g, args, &out),
        Command::Prune(args) => maintenance::run_prune(g, args, &out),
        Command::Stats => maintenance::run_stats(g, &out),
        Command::Copy(args) => copy::run(g, args, &out),
        Command::Key(command) => key::run(g, command, &out),
        Command::Unlock(args) => maintenance::run_unlock(g, args, &out),
        Command::ServeRepo(args) => serve_repo::run(args, &out),
        Command::Version => {
            if out.json {
                out.json_value(&serde_json::json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "format_version": tidemark_format::FORMAT_VERSION,
                }))?;
            } else {
                out.line(format!("tidemark {}", version_string()))?;
            }
            Ok(Status::Ok)
        }
        Command::Demo(args) => demo::run(g, args, &out),
        Command::Pg(command) => pg::run(g, command, &out),
        Command::Config(command) => service::run_config(command, &out),
        Command::Policy(args) => service::run_policy(args, &out),
        Command::Token(command) => service::run_token(command, &out),
        Command::Serve(args) => service::run_serve(args, &out),
    }
}

fn main() -> ExitCode {
    malloc::tune();
    exit::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout with 0; real usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match run(&cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => exit::report(&err),
    }
}
