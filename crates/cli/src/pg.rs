//! `tidemark pg ...`: PostgreSQL base backups, the WAL archive behind `archive_command` and
//! `restore_command`, and point-in-time restores (the `tidemark-source-pg` library on the command
//! line).
//!
//! `archive-push` and `archive-get` run under PostgreSQL, which logs their stderr: they print
//! nothing on success and end with the codes of [`crate::exit`]'s WAL table (never above 125).
//! `restore` writes a `restore_command` that runs this same binary with the same repository and
//! credential *file*, since the server's environment holds none of ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tidemark_repo::SnapshotFilter;
use tidemark_repo::forget::KeepPolicy;
use tidemark_source_pg::archive::{Fetched, archive_fetch};
use tidemark_source_pg::backup::extra;
use tidemark_source_pg::verify::{VerifyOptions, pg_verify_with};
use tidemark_source_pg::{
    Lsn, PgBackupOptions, PgForgetOptions, PgForgetOutcome, PgRestoreOptions, PushOutcome, RecoveryTarget,
    TargetAction, archive_push, pg_backup, pg_forget, pg_restore,
};
use tidemark_source_pg::{PgStreamOptions, pg_stream};

use crate::args::PgStreamArgs;
use crate::args::{
    Global, PgArchiveGetArgs, PgArchivePushArgs, PgBackupArgs, PgCommand, PgRestoreArgs, PgTargetAction, PgVerifyArgs,
};
use crate::exit::{self, Status, UserError};
use crate::open;
use crate::output::{Out, bytes};
use crate::progress::Bar;

/// Run `pg ...`.
pub fn run(global: &Global, command: &PgCommand, out: &Out) -> Result<Status> {
    match command {
        PgCommand::Backup(args) => run_backup(global, args, out),
        PgCommand::ArchivePush(args) => Ok(match push(global, args) {
            Ok(outcome) => {
                if out.verbose {
                    let what = match outcome {
                        PushOutcome::Stored => "stored",
                        PushOutcome::AlreadyIdentical => "already stored (identical)",
                    };
                    eprintln!("{}: {what}", args.path.display());
                }
                Status::Ok
            }
            Err(err) => exit::wal_failure(&err, false),
        }),
        PgCommand::ArchiveGet(args) => Ok(match get(global, args) {
            Ok(true) => Status::Ok,
            Ok(false) => {
                if out.verbose {
                    eprintln!("{}: not in the repository", args.file);
                }
                Status::WalNotFound
            }
            Err(err) => exit::wal_failure(&err, true),
        }),
        PgCommand::Restore(args) => run_restore(global, args, out),
        PgCommand::Verify(args) => run_verify(global, args, out),
        PgCommand::Stream(args) => run_stream(global, args, out),
    }
}

/// `--lsn`: `0/16B3748`.
pub fn parse_lsn(text: &str) -> Result<Lsn, String> {
    text.trim().parse().map_err(|e: tidemark_source_pg::PgError| e.to_string())
}

fn push(global: &Global, args: &PgArchivePushArgs) -> Result<PushOutcome> {
    let repo = open::open(global)?;
    archive_push(&repo, &args.source, &args.path)
        .with_context(|| format!("archive-push of {} (source {})", args.path.display(), args.source))
}

fn get(global: &Global, args: &PgArchiveGetArgs) -> Result<bool> {
    let repo = open::open(global)?;
    let fetched = archive_fetch(&repo, &args.source, &args.file, &args.dest)
        .with_context(|| format!("archive-get of {} (source {})", args.file, args.source))?;
    if let Some(Fetched::StreamPartial { end }) = fetched {
        // Never silently: PostgreSQL logs this.
        eprintln!(
            "tidemark pg archive-get: {}: no complete segment in the repository; wrote the newest partial \
             segment `pg stream` stored (WAL up to {end}, zeros after it): recovery ends there unless more \
             WAL arrives",
            args.file
        );
    }
    Ok(fetched.is_some())
}

/// `pg stream`: runs until killed (SIGTERM, Ctrl-C) or a non-transient error. Being killed
/// loses nothing: only WAL stored in the repository is ever acknowledged to the server, so the
/// next run streams the rest again from the slot.
fn run_stream(global: &Global, args: &PgStreamArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let options = PgStreamOptions {
        slot: args.slot.clone(),
        synchronous: args.synchronous,
        ..PgStreamOptions::new(args.source.clone(), args.connect.clone())
    };
    let never = std::sync::atomic::AtomicBool::new(false);
    let log = Arc::new(StreamLog { quiet: out.quiet });
    let outcome = pg_stream(&repo, &options, &never, log).with_context(|| format!("pg stream of {}", args.source))?;
    out.info(format!(
        "stream stopped: WAL before {} on timeline {} is in the repository ({} segments, {} partial records)",
        outcome.durable, outcome.timeline, outcome.segments, outcome.partials
    ))?;
    Ok(Status::Ok)
}

/// A long-running stream logs lines, not a progress bar: what it streams, and every reconnect.
struct StreamLog {
    quiet: bool,
}

impl tidemark_repo::Progress for StreamLog {
    fn warn(&self, message: &str) {
        eprintln!("{} warning: {message}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
    }

    fn status(&self, message: &str) {
        if !self.quiet {
            eprintln!("{} {message}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
        }
    }
}

fn run_backup(global: &Global, args: &PgBackupArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let options = PgBackupOptions {
        source: args.source.clone(),
        connect: args.connect.clone(),
        label: args.label.clone().unwrap_or_default(),
        host: args.host.clone().unwrap_or_else(tidemark_repo::hostname),
        tags: args.tags.clone(),
    };
    let bar = Arc::new(Bar::new(out, "pg backup"));
    let started = Instant::now();
    let outcome = pg_backup(&repo, &options, bar.clone()).with_context(|| format!("pg backup of {}", args.source))?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let summary = outcome.snapshot.summary.clone().unwrap_or_default();
    let info = &outcome.info;
    let extra = |k: &str| outcome.snapshot.extra.get(k).cloned().unwrap_or_default();
    if out.json {
        out.json_value(&serde_json::json!({
            "message_type": "summary",
            "kind": "postgres",
            "snapshot_id": outcome.id,
            "short_id": outcome.id.short(),
            "source": args.source,
            "label": info.label,
            "start_lsn": info.start_lsn.to_string(),
            "stop_lsn": info.end_lsn.to_string(),
            "timeline": info.start_timeline,
            "stop_timeline": info.end_timeline,
            "system_identifier": extra(extra::SYSTEM_IDENTIFIER),
            "pg_version": extra(extra::PG_VERSION),
            "total_files": summary.total_files,
            "total_bytes": summary.total_bytes,
            "data_added": summary.data_added,
            "data_added_packed": summary.data_added_packed,
            "duration_seconds": seconds,
        }))?;
    } else if !out.quiet {
        out.line(format!(
            "Base backup: start LSN {} stop LSN {} timeline {} (PostgreSQL {})",
            info.start_lsn,
            info.end_lsn,
            info.start_timeline,
            extra(extra::PG_VERSION)
        ))?;
        out.line(format!(
            "Added to the repository: {} ({} stored)",
            bytes(summary.data_added),
            bytes(summary.data_added_packed)
        ))?;
        out.line(format!("processed {} files, {} in {seconds:.1}s", summary.total_files, bytes(summary.total_bytes)))?;
    }
    out.info(format!("snapshot {} saved", outcome.id.short()))?;
    Ok(Status::Ok)
}

fn run_restore(global: &Global, args: &PgRestoreArgs, out: &Out) -> Result<Status> {
    // The restore_command (and its refusal of an environment-only password) before any work.
    let restore_command = restore_command(global, &args.source, out)?;
    let target = match (&args.time, &args.lsn, &args.xid, &args.name) {
        (Some(t), ..) => RecoveryTarget::Time(*t),
        (_, Some(l), ..) => RecoveryTarget::Lsn(*l),
        (_, _, Some(x), _) => RecoveryTarget::Xid(*x),
        (.., Some(n)) => RecoveryTarget::Name(n.clone()),
        _ => RecoveryTarget::Latest,
    };
    let target_action = match args.target_action {
        None | Some(PgTargetAction::Pause) => TargetAction::Pause,
        Some(PgTargetAction::Promote) => TargetAction::Promote,
        Some(PgTargetAction::Shutdown) => TargetAction::Shutdown,
    };
    let target_dir = std::path::absolute(&args.target_dir)
        .with_context(|| format!("target directory {}", args.target_dir.display()))?;
    let repo = open::open(global)?;
    let options = PgRestoreOptions {
        source: args.source.clone(),
        target_dir: target_dir.clone(),
        target,
        target_action,
        restore_command,
    };
    let bar = Arc::new(Bar::new(out, "pg restore"));
    let started = Instant::now();
    let outcome = pg_restore(&repo, &options, bar.clone()).with_context(|| format!("pg restore of {}", args.source))?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let backup = &outcome.plan.backup;
    if out.json {
        out.json_value(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": backup.id,
            "short_id": backup.id.short(),
            "start_lsn": backup.start_lsn.to_string(),
            "stop_lsn": backup.stop_lsn.to_string(),
            "timeline": backup.timeline,
            "target_dir": target_dir.to_string_lossy(),
            "files": outcome.files,
            "bytes": outcome.bytes,
            "recovery_settings": outcome.recovery_settings,
            "duration_seconds": seconds,
        }))?;
    } else if !out.quiet {
        out.line(format!(
            "restored base backup {} (start LSN {}, timeline {}): {} files, {} into {} in {seconds:.1}s",
            backup.id.short(),
            backup.start_lsn,
            backup.timeline,
            outcome.files,
            bytes(outcome.bytes),
            target_dir.display()
        ))?;
        if out.verbose {
            for line in &outcome.recovery_settings {
                out.line(format!("  {line}"))?;
            }
        }
        out.info(format!(
            "start PostgreSQL on {} as the user that will own it (chown -R it first); it replays the archived WAL \
             through restore_command",
            target_dir.display()
        ))?;
    }
    Ok(Status::Ok)
}

fn run_verify(global: &Global, args: &PgVerifyArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let bar = Arc::new(Bar::new(out, "pg verify"));
    let options = VerifyOptions { read_data: args.read_data };
    let report = pg_verify_with(&repo, &args.source, &options, bar.clone())
        .with_context(|| format!("pg verify of {}", args.source))?;
    bar.finish();
    let status = |v: &tidemark_source_pg::BackupVerdict| {
        if !v.restorable {
            "unrestorable"
        } else if v.ok() {
            "ok"
        } else {
            "gap"
        }
    };
    let range = |(from, to): &(String, String)| if from == to { from.clone() } else { format!("{from}..{to}") };
    if out.json {
        let backups: Vec<serde_json::Value> = report
            .backups
            .iter()
            .map(|v| {
                serde_json::json!({
                    "snapshot_id": v.backup.id,
                    "short_id": v.backup.id.short(),
                    "time": v.backup.time.to_string(),
                    "timeline": v.backup.timeline,
                    "timelines": v.timelines,
                    "start_lsn": v.backup.start_lsn.to_string(),
                    "stop_lsn": v.backup.stop_lsn.to_string(),
                    "first_segment": v.first_segment,
                    "stop_segment": v.stop_segment,
                    "last_segment": v.last_segment,
                    "status": status(v),
                    "restorable": v.restorable,
                    "ok": v.ok(),
                    "gaps": v.gaps.iter().map(|(from, to)| serde_json::json!({"from": from, "to": to})).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.json_value(&serde_json::json!({
            "message_type": "summary",
            "source": args.source,
            "ok": report.ok(),
            "backups": backups,
            "skipped": report.skipped,
            "read_data": report.read_data,
            "damaged": report.damaged.iter().map(|d| serde_json::json!({"name": d.name, "problem": d.problem})).collect::<Vec<_>>(),
        }))?;
    } else {
        let rows: Vec<Vec<String>> = report
            .backups
            .iter()
            .map(|v| {
                vec![
                    v.backup.id.short(),
                    v.timelines.iter().map(u32::to_string).collect::<Vec<_>>().join(">"),
                    v.first_segment.clone(),
                    v.last_segment.clone().unwrap_or_else(|| "-".to_owned()),
                    status(v).to_owned(),
                    v.gaps.iter().map(range).collect::<Vec<_>>().join(", "),
                ]
            })
            .collect();
        out.line(crate::output::table(
            &["backup", "timelines", "start segment", "last segment", "status", "gaps"],
            &rows,
        ))?;
        for id in &report.skipped {
            out.warn(format!("snapshot {} of source {} is not a usable base backup", id.short(), args.source));
        }
        for d in &report.damaged {
            out.line(format!("damaged: {}: {}", d.name, d.problem))?;
        }
    }
    if report.ok() {
        let read = if report.read_data { " (every archived file read back and authenticated)" } else { "" };
        out.info(format!("WAL of source {} is continuous from every base backup{read}", args.source))?;
        Ok(Status::Ok)
    } else {
        let bad = report.backups.iter().filter(|v| !v.ok()).count();
        if !report.damaged.is_empty() {
            eprintln!(
                "Fatal: {} archived WAL file(s) of source {} are damaged; see above",
                report.damaged.len(),
                args.source
            );
        }
        eprintln!("Fatal: {bad} base backup(s) of source {} have gaps in the archived WAL; see above", args.source);
        Ok(Status::Failed)
    }
}

/// Whether a snapshot is a PostgreSQL base backup (retention goes through [`forget_source`]).
pub fn is_base_backup(s: &tidemark_repo::format::objects::Snapshot) -> bool {
    s.kind == tidemark_source_pg::backup::SNAPSHOT_KIND && s.source.is_some()
}

/// `forget` for one PostgreSQL source: its base backups by `policy` (among those `filter`
/// passes), then the WAL no retained backup needs; prints the plan unless `--json`/`--quiet`.
pub fn forget_source(
    repo: &tidemark_repo::Repository,
    source: &str,
    policy: &KeepPolicy,
    filter: &SnapshotFilter,
    dry_run: bool,
    out: &Out,
) -> Result<PgForgetOutcome> {
    let options = PgForgetOptions {
        source: source.to_owned(),
        policy: policy.clone(),
        filter: filter.clone(),
        tz: jiff::tz::TimeZone::system(),
        now: jiff::Timestamp::now(),
        dry_run,
    };
    let bar = Arc::new(Bar::new(out, "forget"));
    let outcome =
        pg_forget(repo, &options, bar.clone()).with_context(|| format!("forget of PostgreSQL source {source}"))?;
    bar.finish();
    if !out.json && !out.quiet {
        let plan = &outcome.plan;
        out.line(format!("base backups of PostgreSQL source {source}:"))?;
        let rows: Vec<Vec<String>> = plan
            .decisions
            .iter()
            .map(|d| {
                vec![
                    d.id.short(),
                    crate::output::local_time(d.time),
                    if d.keep { "keep".into() } else { "remove".into() },
                    d.reasons.join(","),
                ]
            })
            .collect();
        out.line(crate::output::table(&["ID", "Time", "Verdict", "Reasons"], &rows))?;
        let verb = if dry_run { "would delete" } else { "deleted" };
        match (&plan.wal_held, &plan.keep_wal_from) {
            (Some(why), _) => out.line(format!("WAL: none deleted: {why}"))?,
            (None, Some(from)) => out.line(format!(
                "WAL: {verb} {} archived file(s) before {from}, keeping {} (history files are always kept)",
                plan.wal_delete.len(),
                plan.wal_kept
            ))?,
            (None, None) => out.line("WAL: none deleted")?,
        }
        if let Some(start) = plan.window_start {
            out.line(format!("every instant since {} stays restorable", crate::output::local_time(start)))?;
        }
        out.line("")?;
    }
    Ok(outcome)
}

/// The `--json` object of [`forget_source`].
pub fn forget_json(source: &str, outcome: &PgForgetOutcome) -> serde_json::Value {
    serde_json::json!({
        "source": source,
        "plan": outcome.plan,
        "removed": outcome.removed,
        "wal_deleted": outcome.wal_deleted,
    })
}

const ENV_PASSWORD_HINT: &str = "give --password-file FILE or --key-file FILE (readable by the user PostgreSQL \
                                 runs as): restore_command names that file";

/// The `restore_command` for a restored cluster: this binary, the same repository (made
/// absolute: the server runs it in the data directory) and the same credential file, then
/// `pg archive-get --source SOURCE %f %p`, every argument quoted for `sh` and `%` doubled for
/// PostgreSQL. A password that came only from TIDEMARK_PASSWORD or a prompt is refused: the
/// server would not see it.
pub fn restore_command(global: &Global, source: &str, out: &Out) -> Result<String> {
    let exe = std::env::current_exe().context("finding this program's path for restore_command")?;
    let url = open::repo_url(global)?;
    let repo = if url.contains("://") { url.to_owned() } else { path_arg(Path::new(url))? };
    if url.starts_with("s3://") {
        out.warn(
            "restore_command reaches an S3 repository with the AWS_* variables of the PostgreSQL server's \
             environment: set them there",
        );
    }
    let mut args = vec![path_arg(&exe)?, "-r".to_owned(), repo];
    match (&global.key_file, &global.password_file) {
        (Some(key), _) => args.extend(["--key-file".to_owned(), path_arg(key)?]),
        (None, Some(pw)) => args.extend(["--password-file".to_owned(), path_arg(pw)?]),
        (None, None) => {
            return Err(UserError::new(
                "restore_command needs a credential that PostgreSQL can use: a password from TIDEMARK_PASSWORD \
                 or a prompt does not reach the server",
                ENV_PASSWORD_HINT,
            )
            .into());
        }
    }
    args.extend(["pg", "archive-get", "--source", source].map(str::to_owned));
    let mut command: Vec<String> = args.iter().map(|a| shell_quote(a).replace('%', "%%")).collect();
    command.extend(["%f".to_owned(), "%p".to_owned()]);
    Ok(command.join(" "))
}

fn path_arg(path: &Path) -> Result<String> {
    let abs: PathBuf = std::path::absolute(path).with_context(|| format!("path {}", path.display()))?;
    abs.to_str().map(str::to_owned).ok_or_else(|| {
        UserError::new(format!("{} is not valid UTF-8", abs.display()), "restore_command needs UTF-8 paths").into()
    })
}

/// `arg` as one `sh` word: unchanged when it holds only safe characters, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/usr/bin/tidemark"), "/usr/bin/tidemark");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("s3://b/p?endpoint=x&region=y"), "'s3://b/p?endpoint=x&region=y'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn restore_command_names_the_repository_and_the_credential_file() {
        let global = Global {
            repo: Some("/srv/my repo".into()),
            key_file: Some(PathBuf::from("/etc/tidemark/100%.key")),
            ..Global::default()
        };
        let cmd = restore_command(&global, "db", &Out::default()).unwrap();
        assert!(
            cmd.contains(" -r '/srv/my repo' --key-file '/etc/tidemark/100%%.key' pg archive-get --source db %f %p"),
            "{cmd}"
        );
        let global = Global {
            repo: Some("s3://b/p?endpoint=http://h:9000".into()),
            password_file: Some(PathBuf::from("/etc/pw")),
            ..Global::default()
        };
        let cmd = restore_command(&global, "db", &Out::default()).unwrap();
        assert!(cmd.contains(" -r 's3://b/p?endpoint=http://h:9000' --password-file /etc/pw pg archive-get"), "{cmd}");
    }

    #[test]
    fn a_password_from_the_environment_only_is_refused() {
        let global = Global { repo: Some("/srv/repo".into()), ..Global::default() };
        let err = restore_command(&global, "db", &Out::default()).unwrap_err();
        assert!(exit::hint_for(&err).is_some_and(|h| h.contains("--password-file")), "{err}");
    }
}
