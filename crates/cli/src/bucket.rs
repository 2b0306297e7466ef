//! Buckets as a source: `backup s3://...`, restoring bucket snapshots into a bucket or a directory,
//! and the source bucket's credentials.
//!
//! The bucket is read (or written) with the standard AWS_* variables, the same ones the
//! repository uses when it is on S3. When the two sides need different credentials,
//! TIDEMARK_BUCKET_ACCESS_KEY_ID and TIDEMARK_BUCKET_SECRET_ACCESS_KEY override them for the
//! bucket alone; the endpoint and region always come from the bucket's own URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tidemark_format::Id;
use tidemark_format::objects::Snapshot;
use tidemark_repo::Repository;
use tidemark_source_objects::{
    BucketBackupOptions, BucketBackupOutcome, BucketRestoreOptions, BucketRestoreOutcome, DEFAULT_CONCURRENCY, Target,
};

use crate::args::{BackupArgs, RestoreArgs};
use crate::exit::{Status, UserError};
use crate::output::{Out, bytes};
use crate::progress::Bar;

/// Access key id of the bucket being backed up or restored into, overriding AWS_ACCESS_KEY_ID.
pub const ACCESS_KEY_ENV: &str = "TIDEMARK_BUCKET_ACCESS_KEY_ID";
/// Secret key of the bucket being backed up or restored into, overriding AWS_SECRET_ACCESS_KEY.
pub const SECRET_KEY_ENV: &str = "TIDEMARK_BUCKET_SECRET_ACCESS_KEY";

/// Whether an argument names a bucket rather than a path.
pub fn is_url(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// The bucket URL when the backup arguments name one bucket, `None` when they name paths only;
/// a mix, or two buckets, is a usage error.
pub fn backup_url(args: &BackupArgs) -> Result<Option<String>> {
    let urls: Vec<&Path> = args.paths.iter().map(PathBuf::as_path).filter(|p| is_url(p)).collect();
    if urls.is_empty() {
        let mut bucket_only = Vec::new();
        if args.all_versions {
            bucket_only.push("--all-versions");
        }
        if args.concurrency.is_some() {
            bucket_only.push("--concurrency");
        }
        if !bucket_only.is_empty() {
            return Err(UserError::usage(
                format!("{} only apply to bucket backups", bucket_only.join(" and ")),
                "back up an s3://bucket URL, or leave the option out",
            )
            .into());
        }
        return Ok(None);
    }
    if urls.len() != args.paths.len() {
        return Err(UserError::usage(
            "a backup takes either paths or one bucket URL, not both",
            "run one backup for the paths and another for s3://...",
        )
        .into());
    }
    if urls.len() > 1 {
        return Err(UserError::usage(
            "a backup takes one bucket URL",
            "back up each bucket on its own (or their common parent prefix)",
        )
        .into());
    }
    if args.force {
        return Err(UserError::usage(
            "--force applies to directory backups only",
            "a bucket backup fetches every object whose ETag, size or last-modified time changed",
        )
        .into());
    }
    Ok(urls.first().and_then(|p| p.to_str()).map(str::to_string))
}

/// TIDEMARK_BUCKET_ACCESS_KEY_ID and TIDEMARK_BUCKET_SECRET_ACCESS_KEY, when both are set;
/// `None` means the AWS_* variables.
pub fn credentials() -> Result<Option<(String, String)>> {
    let id = std::env::var(ACCESS_KEY_ENV).ok().filter(|v| !v.is_empty());
    let secret = std::env::var(SECRET_KEY_ENV).ok().filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => Err(UserError::new(
            format!("only one of {ACCESS_KEY_ENV} and {SECRET_KEY_ENV} is set"),
            "set both (or neither, to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        )
        .into()),
    }
}

fn concurrency(flag: Option<u16>) -> usize {
    flag.map_or(DEFAULT_CONCURRENCY, usize::from)
}

/// Back up the bucket `url` with the options of `args`; returns the outcome and the seconds it took.
pub fn backup(repo: &Repository, url: &str, args: &BackupArgs, out: &Out) -> Result<(BucketBackupOutcome, f64)> {
    let parent = crate::backup::parent_id(repo, args)?;
    let opts = BucketBackupOptions {
        concurrency: concurrency(args.concurrency),
        all_versions: args.all_versions,
        credentials: credentials()?,
        parent,
        host: args.host.clone().unwrap_or_default(),
        tags: args.tags.clone(),
        excludes: args.excludes.clone(),
        ..BucketBackupOptions::new(url)
    };
    let bar = Arc::new(Bar::new(out, "backup"));
    let started = Instant::now();
    let outcome =
        tidemark_source_objects::backup_bucket(repo, &opts, bar.clone()).with_context(|| format!("bucket {url}"))?;
    bar.finish();
    for w in &outcome.warnings {
        if !bar.warned_about(&w.key) {
            out.warn(format!("{}: {}", w.key, w.message));
        }
    }
    Ok((outcome, started.elapsed().as_secs_f64()))
}

/// Print the summary of a bucket backup and return its status: warnings (objects that could not
/// be read) make it [`Status::Incomplete`], as unreadable files do for directories.
pub fn report_backup(outcome: &BucketBackupOutcome, seconds: f64, out: &Out) -> Result<Status> {
    let summary = outcome.snapshot.summary.clone().unwrap_or_default();
    let stats = &outcome.stats;
    if out.json {
        let mut value = serde_json::to_value(&summary)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("message_type".into(), "summary".into());
            map.insert("kind".into(), outcome.snapshot.kind.clone().into());
            map.insert("snapshot_id".into(), serde_json::to_value(outcome.id)?);
            map.insert("short_id".into(), outcome.id.short().into());
            map.insert("objects_fetched".into(), stats.objects_fetched.into());
            map.insert("objects_reused".into(), stats.objects_reused.into());
            map.insert("bytes_fetched".into(), stats.bytes_fetched.into());
            map.insert("versions".into(), stats.versions.into());
            map.insert("duration_seconds".into(), seconds.into());
            map.insert("warnings".into(), serde_json::to_value(&outcome.warnings)?);
        }
        out.json_value(&value)?;
    } else if !out.quiet {
        let s = &summary;
        out.line(format!(
            "Objects:     {:>6} new, {:>6} changed, {:>6} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        ))?;
        out.line(format!(
            "Fetched:     {:>6} objects ({}), {} reused from the parent",
            stats.objects_fetched,
            bytes(stats.bytes_fetched),
            stats.objects_reused
        ))?;
        if stats.versions > 0 {
            out.line(format!("Versions:    {:>6} non-current kept", stats.versions))?;
        }
        out.line(format!(
            "Added to the repository: {} ({} stored, {} new chunks)",
            bytes(s.data_added),
            bytes(s.data_added_packed),
            s.blobs_added
        ))?;
        out.line(format!("processed {} objects, {} in {seconds:.1}s", s.total_files, bytes(s.total_bytes)))?;
    }
    out.info(format!("snapshot {} saved", outcome.id.short()))?;
    if outcome.warnings.is_empty() {
        Ok(Status::Ok)
    } else {
        eprintln!(
            "warning: {} object(s) could not be read and are not in the snapshot (exit code 3)",
            outcome.warnings.len()
        );
        Ok(Status::Incomplete)
    }
}

/// Restore the bucket snapshot `(id, snapshot)` as `args` say, print the summary, return the status.
pub fn restore(repo: &Repository, id: &Id, snapshot: &Snapshot, args: &RestoreArgs, out: &Out) -> Result<Status> {
    let target = if is_url(&args.target) {
        Target::Bucket(args.target.to_string_lossy().into_owned())
    } else {
        Target::Dir(std::path::absolute(&args.target).with_context(|| format!("target {}", args.target.display()))?)
    };
    let shown = match &target {
        Target::Bucket(url) => url.clone(),
        Target::Dir(dir) => dir.display().to_string(),
    };
    let opts = BucketRestoreOptions {
        includes: args.includes.clone(),
        overwrite: args.overwrite,
        include_deleted: args.include_deleted,
        concurrency: concurrency(args.concurrency),
        credentials: credentials()?,
        ..BucketRestoreOptions::new(target)
    };
    let bar = Arc::new(Bar::new(out, "restore"));
    let started = Instant::now();
    let outcome = tidemark_source_objects::restore_bucket(repo, snapshot, &opts, bar.clone())
        .with_context(|| format!("restoring into {shown}"))?;
    bar.finish();
    report_restore(id, &shown, &outcome, started.elapsed().as_secs_f64(), out)
}

fn report_restore(id: &Id, target: &str, outcome: &BucketRestoreOutcome, seconds: f64, out: &Out) -> Result<Status> {
    for e in &outcome.errors {
        eprintln!("error: {}: {}", e.key, e.message);
    }
    if out.json {
        out.json_value(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id,
            "target": target,
            "objects": outcome.objects,
            "markers": outcome.markers,
            "bytes": outcome.bytes,
            "skipped": outcome.skipped,
            "errors": outcome.errors,
            "duration_seconds": seconds,
        }))?;
    } else {
        out.info(format!(
            "restored {} objects, {} folder markers, {} in {seconds:.1}s",
            outcome.objects,
            outcome.markers,
            bytes(outcome.bytes)
        ))?;
        if outcome.skipped > 0 {
            out.warn(format!(
                "{} existing object(s) were left as they are; use --overwrite to replace them",
                outcome.skipped
            ));
        }
    }
    if outcome.errors.is_empty() {
        Ok(Status::Ok)
    } else {
        eprintln!(
            "Fatal: {} object(s) could not be restored (the others were); run `tidemark check --read-data`",
            outcome.errors.len()
        );
        Ok(Status::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(paths: &[&str]) -> BackupArgs {
        BackupArgs {
            paths: paths.iter().map(PathBuf::from).collect(),
            tags: Vec::new(),
            host: None,
            excludes: Vec::new(),
            parent: None,
            force: false,
            all_versions: false,
            concurrency: None,
        }
    }

    fn usage_message(args: &BackupArgs) -> String {
        let err = backup_url(args).unwrap_err();
        assert_eq!(crate::exit::code_for(&err), crate::exit::USAGE, "{err}");
        err.to_string()
    }

    #[test]
    fn backup_arguments_name_paths_or_one_bucket() {
        assert_eq!(backup_url(&args(&["/srv", "rel"])).unwrap(), None);
        assert_eq!(backup_url(&args(&["s3://b/p?region=r"])).unwrap().as_deref(), Some("s3://b/p?region=r"));
        assert!(usage_message(&args(&["s3://b", "/srv"])).contains("not both"));
        assert!(usage_message(&args(&["s3://a", "s3://b"])).contains("one bucket"));
        let mut dir = args(&["/srv"]);
        dir.all_versions = true;
        dir.concurrency = Some(4);
        assert!(usage_message(&dir).contains("--all-versions and --concurrency only apply"));
        let mut forced = args(&["s3://b"]);
        forced.force = true;
        assert!(usage_message(&forced).contains("--force"));
    }
}
