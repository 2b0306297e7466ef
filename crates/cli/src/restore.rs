//! `tidemark restore`: which snapshot (an id, `latest`, `--at TIME`, `--source`), then a directory
//! snapshot back into a directory, or a bucket snapshot (through [`crate::bucket`]) into a bucket
//! or a directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tidemark_format::Id;
use tidemark_format::objects::Snapshot;
use tidemark_repo::{Repository, SnapshotFilter};
use tidemark_source_fs::{RestoreOptions, RestoreOutcome};
use tidemark_storage_s3::S3Config;

use crate::args::{FilterArgs, Global, RestoreArgs};
use crate::exit::{Status, UserError};
use crate::output::{Out, bytes, local_time};
use crate::progress::Bar;
use crate::{bucket, open};

/// The engine's filter for `--host/--tag/--path`.
pub fn filter(args: &FilterArgs) -> SnapshotFilter {
    SnapshotFilter { hosts: args.hosts.clone(), tags: args.tags.clone(), paths: args.paths.clone(), source: None }
}

/// `--at`: RFC 3339 (`2026-03-01T14:00:00Z`, `2026-03-01T15:00:00+01:00`), or a date and time
/// (`2026-03-01 14:00`, `2026-03-01T14:00:00`) or a date (its midnight) in the local time zone.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    let civil = t
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| t.parse::<jiff::civil::Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| {
            format!("{text:?} is not a time: give RFC 3339 like 2026-03-01T14:00:00Z, or a local 2026-03-01 14:00")
        })?;
    civil.to_zoned_datetime(TimeZone::system()).map(|z| z.timestamp()).map_err(|e| format!("{text:?}: {e}"))
}

/// A `--source` as snapshots record it: bucket URLs and names as given, paths made absolute.
pub fn normalize_source(source: &str) -> String {
    let path_like = !source.contains("://") && (source.contains('/') || Path::new(source).exists());
    match std::path::absolute(source) {
        Ok(abs) if path_like => abs.to_string_lossy().into_owned(),
        _ => source.to_string(),
    }
}

/// Whether `s` is a snapshot of `source` (normalized): its source name, one of its paths, or the
/// same bucket URL once normalized (endpoint, region and path style as backup records them).
pub fn source_matches(s: &Snapshot, source: &str) -> bool {
    s.source.as_deref() == Some(source)
        || s.paths.iter().any(|p| p == source)
        || (source.starts_with("s3://") && S3Config::from_url(source).is_ok_and(|c| s.paths.contains(&c.url())))
}

/// The snapshot `args` name: an id or prefix; `latest` (of `--source` and the filters); or, with
/// `--at`, the newest of them taken at or before that time.
pub fn pick(repo: &Repository, args: &RestoreArgs) -> Result<(Id, Snapshot)> {
    let filter = filter(&args.filter);
    let reference = args.snapshot.as_deref().unwrap_or("latest");
    if reference != "latest" && (args.at.is_some() || args.source.is_some()) {
        return Err(UserError::usage(
            format!("--at and --source choose a snapshot, but {reference:?} already names one"),
            "write `latest` (or leave SNAPSHOT out) to choose by --at/--source, or leave those out",
        )
        .into());
    }
    if reference != "latest" || (args.at.is_none() && args.source.is_none()) {
        return Ok(repo.find_snapshot(reference, &filter)?);
    }
    let source = args.source.as_deref().map(normalize_source);
    let candidates: Vec<(Id, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s) && source.as_deref().is_none_or(|src| source_matches(s, src)))
        .collect();
    let of = source.as_deref().map(|s| format!(" of {s}")).unwrap_or_default();
    let Some(at) = args.at else {
        return candidates.into_iter().next_back().ok_or_else(|| {
            UserError::new(format!("no snapshot{of}"), "`tidemark snapshots` lists the snapshots and their paths")
                .into()
        });
    };
    if source.is_none() && args.filter.paths.is_empty() {
        let mut sources: Vec<String> = candidates.iter().map(|(_, s)| s.paths.join(", ")).collect();
        sources.sort();
        sources.dedup();
        if sources.len() > 1 {
            return Err(UserError::usage(
                format!("--at needs to know which source: the repository has snapshots of {}", sources.join("; ")),
                "add --source with a bucket URL or backed-up path (or --path for each path of the snapshot)",
            )
            .into());
        }
    }
    candidates.into_iter().rev().find(|(_, s)| s.time <= at).ok_or_else(|| {
        UserError::new(
            format!("no snapshot{of} at or before {at}"),
            "`tidemark snapshots` lists the snapshots and their times",
        )
        .into()
    })
}

/// Run `restore`.
pub fn run(global: &Global, args: &RestoreArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let (id, snapshot) = pick(&repo, args)?;
    out.info(format!(
        "restoring snapshot {} of {} at {} to {}",
        id.short(),
        snapshot.paths.join(", "),
        local_time(snapshot.time),
        args.target.display()
    ))?;
    if snapshot.kind == tidemark_source_objects::KIND {
        return bucket::restore(&repo, &id, &snapshot, args, out);
    }
    if bucket::is_url(&args.target) {
        return Err(UserError::usage(
            format!("snapshot {} is of a directory; only bucket snapshots restore into a bucket", id.short()),
            "give --target DIR",
        )
        .into());
    }
    if args.include_deleted || args.concurrency.is_some() {
        return Err(UserError::usage(
            "--include-deleted and --concurrency apply to bucket snapshots only",
            format!("snapshot {} is of {}; leave the option out", id.short(), snapshot.paths.join(", ")),
        )
        .into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_rfc3339_or_local() {
        assert_eq!(parse_time("2026-03-01T14:00:00Z").unwrap().as_second(), 1_772_373_600);
        assert_eq!(parse_time("2026-03-01T15:00:00+01:00").unwrap().as_second(), 1_772_373_600);
        let local = parse_time("2026-03-01 14:00").unwrap();
        let midnight = parse_time("2026-03-01").unwrap();
        assert_eq!(local.as_second() - midnight.as_second(), 14 * 3600);
        let err = parse_time("last tuesday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn sources_match_urls_paths_and_names() {
        let snapshot = |paths: &[&str], source: Option<&str>| Snapshot {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            source: source.map(str::to_string),
            ..serde_json::from_value(serde_json::json!({
                "time": "2026-03-01T14:00:00Z", "hostname": "h", "username": "u", "kind": "bucket",
                "paths": [], "tree": Id::from_bytes([0; 32]), "program": "t"
            }))
            .unwrap()
        };
        let url = "s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true";
        let s = snapshot(&[url], None);
        assert!(source_matches(&s, url));
        assert!(source_matches(&s, "s3://b/p/?region=us-east-1&path_style=true&endpoint=http://127.0.0.1:9000"));
        assert!(!source_matches(&s, "s3://b/other?endpoint=http://127.0.0.1:9000&region=us-east-1"));
        assert!(source_matches(&snapshot(&["/srv/a", "/srv/b"], None), "/srv/b"));
        assert!(source_matches(&snapshot(&["/srv/a"], Some("photos")), "photos"));
        assert_eq!(normalize_source("s3://b"), "s3://b");
        assert_eq!(normalize_source("a-name-only"), "a-name-only");
        assert!(normalize_source("rel/dir").starts_with('/'));
    }
}
