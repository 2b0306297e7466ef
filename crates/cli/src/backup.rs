//! `tidemark backup`: directories (or, through [`crate::bucket`], a bucket) into a new snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tidemark_format::Id;
use tidemark_format::objects::SnapshotSummary;
use tidemark_repo::{Repository, SnapshotFilter};
use tidemark_source_fs::{BackupOptions, BackupOutcome};

use crate::args::{BackupArgs, Global};
use crate::exit::Status;
use crate::output::{Out, bytes};
use crate::progress::Bar;
use crate::{bucket, open};

/// Run `backup`.
pub fn run(global: &Global, args: &BackupArgs, out: &Out) -> Result<Status> {
    // Usage errors before asking for a password.
    let url = bucket::backup_url(args)?;
    let repo = open::open(global)?;
    once(&repo, url.as_deref(), args, out).map(|(status, _)| status)
}

/// One backup of the paths, or of the bucket `url`, with its summary printed (also used by
/// `watch`): the status and the new snapshot's id.
pub fn once(repo: &Repository, url: Option<&str>, args: &BackupArgs, out: &Out) -> Result<(Status, Id)> {
    match url {
        Some(url) => {
            let (outcome, seconds) = bucket::backup(repo, url, args, out)?;
            Ok((bucket::report_backup(&outcome, seconds, out)?, outcome.id))
        }
        None => {
            let (outcome, seconds) = backup(repo, args, out)?;
            Ok((report(&outcome, seconds, out)?, outcome.id))
        }
    }
}

/// The snapshot `--parent` names, if any (directory and bucket backups alike).
pub fn parent_id(repo: &Repository, args: &BackupArgs) -> Result<Option<Id>> {
    args.parent
        .as_ref()
        .map(|reference| {
            repo.find_snapshot(reference, &SnapshotFilter::default())
                .map(|(id, _)| id)
                .with_context(|| format!("parent snapshot {reference:?}"))
        })
        .transpose()
}

/// Back up with `args`; returns the outcome and the seconds it took (also used by `demo`).
pub fn backup(repo: &Repository, args: &BackupArgs, out: &Out) -> Result<(BackupOutcome, f64)> {
    let parent = parent_id(repo, args)?;
    let paths = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("path {}", p.display())))
        .collect::<Result<Vec<PathBuf>>>()?;
    let opts = BackupOptions {
        paths,
        excludes: args.excludes.clone(),
        parent,
        force: args.force,
        host: args.host.clone().unwrap_or_default(),
        tags: args.tags.clone(),
        source: None,
    };
    let bar = Arc::new(Bar::new(out, "backup"));
    let started = Instant::now();
    let outcome = tidemark_source_fs::backup(repo, &opts, bar.clone())?;
    bar.finish();
    for w in &outcome.warnings {
        if !bar.warned_about(&w.path.display().to_string()) {
            out.warn(format!("{}: {}", w.path.display(), w.message));
        }
    }
    Ok((outcome, started.elapsed().as_secs_f64()))
}

/// Print the summary of a backup and return its status.
pub fn report(outcome: &BackupOutcome, seconds: f64, out: &Out) -> Result<Status> {
    let summary = outcome.snapshot.summary.clone().unwrap_or_default();
    if out.json {
        let mut value = serde_json::to_value(&summary)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("message_type".into(), "summary".into());
            map.insert("snapshot_id".into(), serde_json::to_value(outcome.id)?);
            map.insert("short_id".into(), outcome.id.short().into());
            map.insert("duration_seconds".into(), seconds.into());
            let warnings: Vec<serde_json::Value> = outcome
                .warnings
                .iter()
                .map(|w| serde_json::json!({"path": w.path.to_string_lossy(), "message": w.message}))
                .collect();
            map.insert("warnings".into(), warnings.into());
        }
        out.json_value(&value)?;
    } else if !out.quiet {
        for line in summary_lines(&summary, seconds) {
            out.line(line)?;
        }
    }
    out.info(format!("snapshot {} saved", outcome.id.short()))?;
    if outcome.warnings.is_empty() {
        Ok(Status::Ok)
    } else {
        eprintln!(
            "warning: {} file(s) could not be read and are not in the snapshot (exit code 3)",
            outcome.warnings.len()
        );
        Ok(Status::Incomplete)
    }
}

fn summary_lines(s: &SnapshotSummary, seconds: f64) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Files:       {:>6} new, {:>6} changed, {:>6} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        ),
        format!("Dirs:        {:>6}", s.dirs),
        format!(
            "Added to the repository: {} ({} stored, {} new chunks)",
            bytes(s.data_added),
            bytes(s.data_added_packed),
            s.blobs_added
        ),
        format!("processed {} files, {} in {seconds:.1}s", s.total_files, bytes(s.total_bytes)),
    ];
    if s.errors > 0 {
        lines.push(format!("{} file(s) could not be read", s.errors));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_counter() {
        let s = SnapshotSummary {
            files_new: 3,
            files_changed: 2,
            files_unmodified: 1,
            dirs: 4,
            errors: 1,
            blobs_added: 7,
            data_added: 2048,
            data_added_packed: 1024,
            total_files: 6,
            total_bytes: 4096,
            ..Default::default()
        };
        let text = summary_lines(&s, 1.25).join("\n");
        for needle in
            ["3 new", "2 changed", "1 unmodified", "2.00 KiB", "1.00 KiB stored", "6 files", "1.2s", "1 file(s)"]
        {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }
}
