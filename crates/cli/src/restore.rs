//! `tidemark restore`: a snapshot back into a directory.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tidemark_format::Id;
use tidemark_format::objects::Snapshot;
use tidemark_repo::{Repository, SnapshotFilter};
use tidemark_source_fs::{RestoreOptions, RestoreOutcome};

use crate::args::{FilterArgs, Global, RestoreArgs};
use crate::exit::Status;
use crate::open;
use crate::output::{Out, bytes, local_time};
use crate::progress::Bar;

/// The engine's filter for `--host/--tag/--path`.
pub fn filter(args: &FilterArgs) -> SnapshotFilter {
    SnapshotFilter { hosts: args.hosts.clone(), tags: args.tags.clone(), paths: args.paths.clone(), source: None }
}

/// Run `restore`.
pub fn run(global: &Global, args: &RestoreArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot, &filter(&args.filter))?;
    out.info(format!(
        "restoring snapshot {} of {} at {} to {}",
        id.short(),
        snapshot.paths.join(", "),
        local_time(snapshot.time),
        args.target.display()
    ))?;
    let started = Instant::now();
    let outcome = restore(&repo, &snapshot, args, out)?;
    report(&id, args, &outcome, started.elapsed().as_secs_f64(), out)
}

/// Restore `snapshot` as `args` say (also used by `demo`).
pub fn restore(repo: &Repository, snapshot: &Snapshot, args: &RestoreArgs, out: &Out) -> Result<RestoreOutcome> {
    let opts =
        RestoreOptions { target: args.target.clone(), includes: args.includes.clone(), overwrite: args.overwrite };
    let bar = Arc::new(Bar::new(out, "restore"));
    let outcome = tidemark_source_fs::restore(repo, snapshot, &opts, bar.clone())?;
    bar.finish();
    for e in &outcome.errors {
        eprintln!("error: {}: {}", e.path.display(), e.message);
    }
    Ok(outcome)
}

fn report(id: &Id, args: &RestoreArgs, outcome: &RestoreOutcome, seconds: f64, out: &Out) -> Result<Status> {
    if out.json {
        let errors: Vec<serde_json::Value> = outcome
            .errors
            .iter()
            .map(|e| serde_json::json!({"path": e.path.to_string_lossy(), "message": e.message}))
            .collect();
        out.json_value(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id,
            "target": args.target.to_string_lossy(),
            "files": outcome.files,
            "dirs": outcome.dirs,
            "bytes": outcome.bytes,
            "skipped": outcome.skipped,
            "errors": errors,
            "duration_seconds": seconds,
        }))?;
    } else {
        out.info(format!(
            "restored {} files, {} directories, {} in {seconds:.1}s",
            outcome.files,
            outcome.dirs,
            bytes(outcome.bytes)
        ))?;
        if outcome.skipped > 0 {
            out.warn(format!(
                "{} existing file(s) were left as they are; use --overwrite to replace them",
                outcome.skipped
            ));
        }
    }
    if outcome.errors.is_empty() {
        Ok(Status::Ok)
    } else {
        eprintln!(
            "Fatal: {} file(s) could not be restored (the others were); run `tidemark check --read-data`",
            outcome.errors.len()
        );
        Ok(Status::Failed)
    }
}
