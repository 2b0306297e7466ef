//! Running jobs: each on its own thread, with the engine's library functions (no shelling out).
//!
//! - **backup**: the source (directory, bucket, PostgreSQL base backup) into its repository as
//!   a snapshot named after the source; then retention (forget per `retention`, then prune, only
//!   when something was forgotten); then each `copy_to` repository gets the source's snapshots it
//!   lacks, and the same retention.
//! - **drill**: the source's newest snapshot restored into a scratch directory, every restored
//!   file compared with the snapshot's content (each blob verified against its id), or for
//!   PostgreSQL a server started on the restored base backup and its WAL and asked `SELECT 1`;
//!   the time measured against `max_duration`, the scratch directory removed.
//! - **restore**: a snapshot (or the newest) into a target directory on request.
//!
//! Cancellation is cooperative: a job checks between its steps whether it was cancelled (window
//! end with `overrun = "cancel"`); a library step already running finishes, but nothing after it
//! runs, and what it wrote is only ever new data, never a deletion.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tidemark_repo::forget::{self, KeepPolicy};
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::Snapshot;
use tidemark_repo::prune::PruneOptions;
use tidemark_repo::{Progress, Repository};
use tidemark_service_core::config::Event;
use tidemark_service_core::{JobKind, JobRecord, JobStatus, Retention, RunKey, Source, SourceKind};

use crate::{Daemon, DaemonError, Inner, Running, lock};

mod drill;
mod pg_drill;

/// What a job does, with its arguments.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Backup,
    Drill,
    Restore { snapshot: Option<String>, target: PathBuf, include: Vec<String> },
}

impl Daemon {
    /// Stores `job` as running and starts its thread.
    pub(crate) fn launch(&self, mut job: JobRecord, key: Option<RunKey>, work: Work) -> Result<JobRecord, DaemonError> {
        let inner = &self.inner;
        job.status = JobStatus::Running;
        job.started = Some(inner.clock.now());
        inner.catalog.insert_job(&job)?;
        let record = Arc::new(Mutex::new(job.clone()));
        let cancel = Arc::new(AtomicBool::new(false));
        let running = Running { record: record.clone(), key: key.clone(), cancel: cancel.clone(), overran: false };
        lock(&inner.running).insert(job.id.clone(), running);
        let ctx = Ctx { inner: inner.clone(), record, cancel };
        let spawned = std::thread::Builder::new()
            .name(format!("job-{}", job.id))
            .spawn(move || execute(ctx, key, work))
            .map_err(DaemonError::Thread);
        match spawned {
            Ok(handle) => lock(&inner.threads).push(handle),
            Err(e) => {
                lock(&inner.running).remove(&job.id);
                let mut failed = job.clone();
                failed.status = JobStatus::Failed;
                failed.finished = Some(inner.clock.now());
                failed.message = Some(e.to_string());
                inner.catalog.update_job(&failed)?;
                return Err(e);
            }
        }
        Ok(job)
    }
}

/// A running job's view of the daemon.
struct Ctx {
    inner: Arc<Inner>,
    record: Arc<Mutex<JobRecord>>,
    cancel: Arc<AtomicBool>,
}

impl Ctx {
    fn id(&self) -> String {
        lock(&self.record).id.clone()
    }

    fn log(&self, level: &str, message: impl Into<String>) {
        self.inner.log(&self.id(), level, message);
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) {
        f(&mut lock(&self.record));
    }

    /// Before each step: the test hook, then whether the job was cancelled.
    fn step(&self, step: &str) -> Result<(), String> {
        if let Some(hook) = &self.inner.hook {
            let snapshot = lock(&self.record).clone();
            hook.before_step(&snapshot, step)?;
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Err(format!("cancelled before {step}"));
        }
        self.log("info", format!("{step} started"));
        Ok(())
    }

    fn source(&self) -> Result<Source, String> {
        let name = lock(&self.record).source.clone();
        self.inner.config.sources.get(&name).cloned().ok_or_else(|| format!("source {name:?} is not configured"))
    }

    fn repo(&self, name: &str) -> Result<Repository, String> {
        let config =
            self.inner.config.repositories.get(name).ok_or_else(|| format!("repository {name:?} is not configured"))?;
        self.inner.repos.get(config).map_err(|e| e.to_string())
    }

    fn progress(&self) -> Arc<dyn Progress> {
        Arc::new(LogProgress { inner: self.inner.clone(), job: self.id() })
    }
}

/// Warnings of the engine go into the job's log.
struct LogProgress {
    inner: Arc<Inner>,
    job: String,
}

impl Progress for LogProgress {
    fn warn(&self, message: &str) {
        let line = tidemark_service_core::JobLogLine {
            time: self.inner.clock.now(),
            level: "warn".into(),
            message: message.to_string(),
        };
        let _ = self.inner.catalog.append_log(&self.job, &line);
    }
}

/// The job thread: runs the work, records the outcome, completes the run, notifies.
fn execute(ctx: Ctx, key: Option<RunKey>, work: Work) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &work {
        Work::Backup => backup(&ctx),
        Work::Drill => drill::drill(&ctx),
        Work::Restore { snapshot, target, include } => restore(&ctx, snapshot.as_deref(), target, include),
    }))
    .unwrap_or_else(|_| Err("the job panicked (a bug); see the daemon's log".to_string()));
    let inner = &ctx.inner;
    let now = inner.clock.now();
    let record = {
        let mut record = lock(&ctx.record);
        if record.status.is_final() {
            // Cancelled at its window's end meanwhile: that verdict stands.
            inner.log(&record.id, "warn", "finished its current step after it was cancelled");
        } else {
            record.finished = Some(now);
            match &result {
                Ok(summary) => {
                    record.status = JobStatus::Succeeded;
                    record.message = Some(summary.clone());
                }
                Err(e) => {
                    record.status = JobStatus::Failed;
                    record.message = Some(e.clone());
                }
            }
        }
        record.clone()
    };
    match &result {
        Ok(summary) => inner.log(&record.id, "info", summary.clone()),
        Err(e) => inner.log(&record.id, "error", e.clone()),
    }
    if let Err(e) = inner.catalog.update_job(&record) {
        // The catalog is down; the job stays `running` there and is marked interrupted at the
        // next start.
        inner.log(&record.id, "error", format!("cannot record the outcome: {e}"));
    }
    // A job that lost its lease leaves the run to the daemon that took it over.
    if let Some(key) = key.as_ref().filter(|_| record.status != JobStatus::Interrupted) {
        let _ = inner.catalog.complete(key, &inner.owner);
    }
    lock(&inner.running).remove(&record.id);
    if record.status == JobStatus::Failed {
        let event = if record.kind == JobKind::Drill { Event::DrillFailed } else { Event::JobFailed };
        for failure in inner.notifier.send(event, &inner.notice(event, &record)) {
            inner.log(&record.id, "warn", failure);
        }
    }
}

fn backup(ctx: &Ctx) -> Result<String, String> {
    let source = ctx.source()?;
    let repo = ctx.repo(&source.repository)?;
    ctx.step("backup")?;
    let progress = ctx.progress();
    let name = source.name.clone();
    let (id, snapshot, warnings) = match &source.kind {
        SourceKind::Directory { paths, exclude } => {
            let opts = tidemark_source_fs::BackupOptions {
                paths: paths.clone(),
                excludes: exclude.clone(),
                source: Some(name.clone()),
                ..Default::default()
            };
            let o = tidemark_source_fs::backup(&repo, &opts, progress)
                .map_err(|e| format!("backup of {}: {e}", paths_text(paths)))?;
            let warnings: Vec<String> =
                o.warnings.iter().map(|w| format!("{}: {}", w.path.display(), w.message)).collect();
            (o.id, o.snapshot, warnings)
        }
        SourceKind::Bucket { url } => {
            let opts = tidemark_source_objects::BucketBackupOptions {
                source: Some(name.clone()),
                credentials: bucket_credentials()?,
                ..tidemark_source_objects::BucketBackupOptions::new(url.clone())
            };
            let o = tidemark_source_objects::backup_bucket(&repo, &opts, progress)
                .map_err(|e| format!("backup of bucket {url}: {e}"))?;
            let warnings: Vec<String> = o.warnings.iter().map(|w| format!("{}: {}", w.key, w.message)).collect();
            (o.id, o.snapshot, warnings)
        }
        SourceKind::Postgres { connection } => {
            let opts = tidemark_source_pg::PgBackupOptions {
                source: name.clone(),
                connect: connection.clone(),
                label: String::new(),
                host: String::new(),
                tags: Vec::new(),
            };
            let o = tidemark_source_pg::pg_backup(&repo, &opts, progress)
                .map_err(|e| format!("base backup of {name}: {e}"))?;
            (o.id, o.snapshot, Vec::new())
        }
        _ => return Err(format!("source {name:?} is of a kind this daemon cannot back up")),
    };
    for w in &warnings {
        ctx.log("warn", w.clone());
    }
    let summary = snapshot.summary.clone().unwrap_or_default();
    ctx.update(|r| {
        r.snapshot = Some(id.to_string());
        r.bytes_added = Some(summary.data_added_packed);
    });
    ctx.log(
        "info",
        format!(
            "snapshot {} saved: {} files, {} bytes, {} bytes added to the repository",
            id.short(),
            summary.total_files,
            summary.total_bytes,
            summary.data_added_packed
        ),
    );
    let mut done = vec![format!("snapshot {} saved", id.short())];
    if !warnings.is_empty() {
        done.push(format!("{} item(s) could not be read (see the log)", warnings.len()));
    }
    if let Some(retention) = &source.retention {
        ctx.step("retention")?;
        let removed = apply_retention(ctx, &repo, &source, retention)?;
        done.push(format!("{removed} old snapshot(s) forgotten"));
    }
    for target_name in &source.copy_to {
        ctx.step("copy")?;
        let target = ctx.repo(target_name)?;
        let list = snapshots_of(&repo, &name)?;
        let report = repo
            .copy_to(&target, &list, ctx.progress())
            .map_err(|e| format!("copy of {name} to repository {target_name:?}: {e}"))?;
        ctx.log(
            "info",
            format!(
                "copied {} snapshot(s) to {target_name} ({} already there, {} bytes sent and verified)",
                report.copied.len(),
                report.already_present.len(),
                report.bytes_copied
            ),
        );
        if let Some(retention) = &source.retention {
            apply_retention(ctx, &target, &source, retention)?;
        }
        done.push(format!("copied to {target_name}"));
    }
    Ok(done.join("; "))
}

/// The source bucket's own credentials, as the command line takes them:
/// TIDEMARK_BUCKET_ACCESS_KEY_ID and TIDEMARK_BUCKET_SECRET_ACCESS_KEY when both are set; `None`
/// means the AWS_* variables (which the repository on S3 uses too).
fn bucket_credentials() -> Result<Option<(String, String)>, String> {
    let id = std::env::var("TIDEMARK_BUCKET_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty());
    let secret = std::env::var("TIDEMARK_BUCKET_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((id, secret))),
        (None, None) => Ok(None),
        _ => Err("only one of TIDEMARK_BUCKET_ACCESS_KEY_ID and TIDEMARK_BUCKET_SECRET_ACCESS_KEY is set in the \
                  daemon's environment; set both, or neither to use the AWS_* variables"
            .into()),
    }
}

fn paths_text(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The snapshots of the source `name` in `repo`, oldest first.
pub(crate) fn snapshots_of(repo: &Repository, name: &str) -> Result<Vec<(Id, Snapshot)>, String> {
    let mut list: Vec<(Id, Snapshot)> = repo
        .snapshots()
        .map_err(|e| format!("listing snapshots in {}: {e}", repo.storage().location()))?
        .into_iter()
        .filter(|(_, s)| s.source.as_deref() == Some(name))
        .collect();
    list.sort_by_key(|(_, s)| s.time);
    Ok(list)
}

/// Forget per `retention`, then prune when something was forgotten; returns how many were
/// forgotten. Prune deletes only data no remaining snapshot uses (it proves that first).
fn apply_retention(ctx: &Ctx, repo: &Repository, source: &Source, retention: &Retention) -> Result<usize, String> {
    let policy = KeepPolicy {
        last: retention.last,
        hourly: retention.hourly,
        daily: retention.daily,
        weekly: retention.weekly,
        monthly: retention.monthly,
        yearly: retention.yearly,
        within: retention.within,
        tags: Vec::new(),
    };
    if policy.is_empty() {
        return Ok(0);
    }
    let tz = jiff::tz::TimeZone::get(source.schedule.time_zone()).unwrap_or(jiff::tz::TimeZone::UTC);
    let list = snapshots_of(repo, &source.name)?;
    let groups = forget::plan(&list, &policy, &tz);
    let doomed = groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep).count();
    let location = repo.storage().location();
    if doomed == 0 {
        ctx.log("info", format!("retention keeps all {} snapshot(s) in {location}", list.len()));
        return Ok(0);
    }
    let removed = repo.forget(&groups).map_err(|e| format!("forget in {location}: {e}"))?;
    ctx.log("info", format!("forgot {} snapshot(s) in {location}", removed.len()));
    let report =
        repo.prune(PruneOptions::default(), ctx.progress()).map_err(|e| format!("prune in {location}: {e}"))?;
    // The handle's index predates the prune: later steps (the off-site copy) need the new one.
    repo.refresh_index();
    ctx.log(
        "info",
        format!(
            "pruned {location}: {} pack(s) deleted, {} repacked, {} bytes freed",
            report.packs_deleted.len(),
            report.packs_repacked.len(),
            report.bytes_freed
        ),
    );
    Ok(removed.len())
}

fn restore(ctx: &Ctx, reference: Option<&str>, target: &Path, include: &[String]) -> Result<String, String> {
    let source = ctx.source()?;
    let repo = ctx.repo(&source.repository)?;
    let (id, snapshot) = match reference {
        None | Some("latest") => snapshots_of(&repo, &source.name)?
            .pop()
            .ok_or_else(|| format!("no snapshot of {} to restore", source.name))?,
        Some(r) => {
            let found = repo
                .find_snapshot(r, &tidemark_repo::SnapshotFilter::default())
                .map_err(|e| format!("snapshot {r:?}: {e}"))?;
            if found.1.source.as_deref() != Some(source.name.as_str()) {
                return Err(format!("snapshot {r:?} is not a snapshot of {}", source.name));
            }
            found
        }
    };
    ctx.update(|r| r.snapshot = Some(id.to_string()));
    ctx.step("restore")?;
    match &source.kind {
        SourceKind::Directory { .. } => {
            let opts = tidemark_source_fs::RestoreOptions {
                target: target.to_path_buf(),
                includes: include.to_vec(),
                overwrite: false,
            };
            let o = tidemark_source_fs::restore(&repo, &snapshot, &opts, ctx.progress())
                .map_err(|e| format!("restore into {}: {e}", target.display()))?;
            for w in &o.errors {
                ctx.log("error", format!("{}: {}", w.path.display(), w.message));
            }
            if !o.errors.is_empty() {
                return Err(format!("{} file(s) could not be restored (see the log)", o.errors.len()));
            }
            Ok(format!(
                "restored snapshot {} into {}: {} file(s), {} bytes",
                id.short(),
                target.display(),
                o.files,
                o.bytes
            ))
        }
        SourceKind::Bucket { .. } => {
            let opts = tidemark_source_objects::BucketRestoreOptions {
                includes: include.to_vec(),
                credentials: bucket_credentials()?,
                ..tidemark_source_objects::BucketRestoreOptions::new(tidemark_source_objects::Target::Dir(
                    target.to_path_buf(),
                ))
            };
            let o = tidemark_source_objects::restore_bucket(&repo, &snapshot, &opts, ctx.progress())
                .map_err(|e| format!("restore into {}: {e}", target.display()))?;
            if !o.errors.is_empty() {
                return Err(format!("{} object(s) could not be restored", o.errors.len()));
            }
            Ok(format!("restored snapshot {} into {}: {} object(s)", id.short(), target.display(), o.objects))
        }
        _ => Err("PostgreSQL restores need a restore_command: run `tidemark pg restore` on the database host".into()),
    }
}
