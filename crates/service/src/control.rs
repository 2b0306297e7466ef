//! What the HTTP layer, the dashboard and `tidemark policy` ask of the daemon ([`Control`]).

use std::collections::HashMap;
use std::path::PathBuf;

use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{NodeType, Snapshot};
use tidemark_repo::{Repository, SnapshotFilter, tree};
use tidemark_service_core::{
    Catalog, Control, ControlError, DrillResult, FileStream, JobFilter, JobKind, JobLogLine, JobRecord, JobRequest,
    JobStatus, PolicyRow, SnapshotInfo, Source, SourceKind, SourceStatus, Trigger, format_duration,
};

use crate::files::BlobReader;
use crate::jobs::{Work, snapshots_of};
use crate::{Daemon, DaemonError, words};

fn control(e: DaemonError) -> ControlError {
    match e {
        DaemonError::Catalog(c) => ControlError::from(c),
        DaemonError::Repository { .. } => ControlError::Unavailable(e.to_string()),
        other => ControlError::Internal(other.to_string()),
    }
}

impl Daemon {
    fn source(&self, name: &str) -> Result<&Source, ControlError> {
        self.inner.config.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.inner.config.sources.keys().map(String::as_str).collect();
            ControlError::NotFound(format!("no source {name:?}; configured: {}", known.join(", ")))
        })
    }

    fn repository(&self, name: &str) -> Result<Repository, ControlError> {
        let config = self
            .inner
            .config
            .repositories
            .get(name)
            .ok_or_else(|| ControlError::NotFound(format!("no repository {name:?}")))?;
        self.inner.repos.get(config).map_err(control)
    }

    /// The snapshots of `source` in its repository, oldest first.
    fn source_snapshots(&self, source: &Source) -> Result<Vec<(Id, Snapshot)>, ControlError> {
        let repo = self.repository(&source.repository)?;
        snapshots_of(&repo, &source.name).map_err(ControlError::Unavailable)
    }

    fn newest_job(&self, source: &str, kind: JobKind) -> Result<Option<JobRecord>, ControlError> {
        let filter = JobFilter { source: Some(source.to_string()), kind: Some(kind), status: vec![], limit: Some(1) };
        Ok(self.inner.catalog.jobs(&filter)?.into_iter().next())
    }

    fn status_of(&self, source: &Source, now: Timestamp) -> Result<SourceStatus, ControlError> {
        let last_backup = self.newest_job(&source.name, JobKind::Backup)?;
        // A repository that cannot be read leaves the newest snapshot unknown, not the whole list.
        let newest_snapshot = self.source_snapshots(source).ok().and_then(|l| l.last().map(|(_, s)| s.time));
        let health = match (&last_backup, newest_snapshot) {
            (Some(job), _) if job.status == JobStatus::Running => "running",
            (Some(job), _) if matches!(job.status, JobStatus::Failed | JobStatus::Missed | JobStatus::Cancelled) => {
                "failing"
            }
            (_, None) => "never",
            (_, Some(t)) if now.duration_since(t) > crate::scheduler::stale_limit(source, now) => "stale",
            _ => "ok",
        };
        Ok(SourceStatus {
            name: source.name.clone(),
            kind: words::kind_name(&source.kind).into(),
            repository: source.repository.clone(),
            schedule: source.schedule.expression().into(),
            timezone: source.schedule.time_zone().into(),
            window: source.window.map(format_duration),
            last_backup,
            next_backup: source.schedule.next_after(now),
            next_drill: source.drill.as_ref().and_then(|d| d.schedule.next_after(now)),
            newest_snapshot,
            health: health.into(),
        })
    }

    /// The policy row of `source`, measured from its repositories and the catalog.
    pub fn policy_row(&self, source: &Source) -> Result<PolicyRow, ControlError> {
        let now = self.inner.clock.now();
        let snapshots = self.source_snapshots(source)?;
        let newest = snapshots.last().map(|(_, s)| s.time);
        let mut offsite = Vec::new();
        for target in &source.copy_to {
            let lag = self
                .repository(target)
                .ok()
                .and_then(|repo| snapshots_of(&repo, &source.name).ok())
                .and_then(|list| list.last().map(|(_, s)| s.time))
                .map(|copied| newest.map_or(0, |n| n.duration_since(copied).as_secs().max(0)));
            offsite.push((target.clone(), lag));
        }
        let precision = match &source.kind {
            SourceKind::Postgres { .. } => {
                let repo = self.repository(&source.repository)?;
                let wal = tidemark_source_pg::archive::list_wal(&repo, &source.name).unwrap_or_default();
                if wal.is_empty() { "per snapshot" } else { "to the second" }
            }
            _ => "per snapshot",
        };
        let method = match (&source.kind, precision) {
            (SourceKind::Postgres { .. }, "to the second") => "base backups + WAL archive".to_string(),
            (kind, _) => words::method(kind).to_string(),
        };
        Ok(PolicyRow {
            source: source.name.clone(),
            method,
            frequency: words::frequency(source),
            retention: words::retention(source.retention.as_ref()),
            oldest_restorable: snapshots.first().map(|(_, s)| s.time),
            recovery_precision: precision.into(),
            newest_backup_age_seconds: newest.map(|t| now.duration_since(t).as_secs()),
            offsite_lag_seconds: offsite,
            last_drill: self.drill_results(Some(&source.name), Some(1))?.into_iter().next(),
        })
    }

    fn drill_results(&self, source: Option<&str>, limit: Option<usize>) -> Result<Vec<DrillResult>, ControlError> {
        let filter = JobFilter {
            source: source.map(str::to_string),
            kind: Some(JobKind::Drill),
            status: vec![JobStatus::Succeeded, JobStatus::Failed],
            limit,
        };
        Ok(self.inner.catalog.jobs(&filter)?.into_iter().map(|job| drill_result(&job)).collect())
    }

    fn find_snapshot(&self, reference: &str) -> Result<(Repository, String, Id, Snapshot), ControlError> {
        let mut found = Vec::new();
        for (name, config) in &self.inner.config.repositories {
            let Ok(repo) = self.inner.repos.get(config) else { continue };
            if let Ok((id, s)) = repo.find_snapshot(reference, &SnapshotFilter::default()) {
                found.push((repo, name.clone(), id, s));
            }
        }
        // A copy in an off-site repository is the same snapshot: prefer the first repository.
        found.dedup_by(|a, b| a.2 == b.2);
        match found.len() {
            0 => Err(ControlError::NotFound(format!("no snapshot {reference:?} in any configured repository"))),
            _ => Ok(found.swap_remove(0)),
        }
    }
}

fn drill_result(job: &JobRecord) -> DrillResult {
    DrillResult {
        job: job.id.clone(),
        time: job.finished.unwrap_or(job.created),
        ok: job.status == JobStatus::Succeeded && job.verified == Some(true),
        restore_seconds: job.duration_seconds().unwrap_or(0.0),
        snapshot: job.snapshot.clone(),
        message: job.message.clone().unwrap_or_default(),
    }
}

fn snapshot_info(id: &Id, s: &Snapshot, repository: &str) -> SnapshotInfo {
    SnapshotInfo {
        id: id.to_string(),
        source: s.source.clone(),
        repository: repository.to_string(),
        time: s.time,
        hostname: s.hostname.clone(),
        paths: s.paths.clone(),
        tags: s.tags.clone(),
        total_bytes: s.summary.as_ref().map(|x| x.total_bytes),
    }
}

impl Control for Daemon {
    fn sources(&self) -> Result<Vec<SourceStatus>, ControlError> {
        let now = self.inner.clock.now();
        self.inner.config.sources.values().map(|s| self.status_of(s, now)).collect()
    }

    fn snapshots(&self, source: Option<&str>) -> Result<Vec<SnapshotInfo>, ControlError> {
        let mut out = Vec::new();
        match source {
            Some(name) => {
                let source = self.source(name)?;
                for (id, s) in self.source_snapshots(source)? {
                    out.push(snapshot_info(&id, &s, &source.repository));
                }
            }
            None => {
                // Each repository that sources use, listed once.
                let mut seen: HashMap<&str, ()> = HashMap::new();
                for source in self.inner.config.sources.values() {
                    if seen.insert(source.repository.as_str(), ()).is_some() {
                        continue;
                    }
                    let repo = self.repository(&source.repository)?;
                    let list = repo.snapshots().map_err(|e| ControlError::Unavailable(e.to_string()))?;
                    out.extend(list.iter().map(|(id, s)| snapshot_info(id, s, &source.repository)));
                }
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.time));
        Ok(out)
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, ControlError> {
        Ok(self.inner.catalog.jobs(filter)?)
    }

    fn job(&self, id: &str) -> Result<(JobRecord, Vec<JobLogLine>), ControlError> {
        let job = self.inner.catalog.job(id)?.ok_or_else(|| ControlError::NotFound(format!("no job {id:?}")))?;
        let log = self.inner.catalog.job_log(id)?;
        Ok((job, log))
    }

    fn start(&self, source: &str, request: &JobRequest, by: &str) -> Result<JobRecord, ControlError> {
        let config = self.source(source)?;
        let trigger = Trigger::Manual { by: by.to_string() };
        let (kind, work) = match request {
            JobRequest::Backup => (JobKind::Backup, Work::Backup),
            JobRequest::Drill => (JobKind::Drill, Work::Drill),
            JobRequest::Restore { snapshot, target, include } => {
                if matches!(config.kind, SourceKind::Postgres { .. }) {
                    return Err(ControlError::Invalid(
                        "PostgreSQL restores need a restore_command: run `tidemark pg restore` on the database host"
                            .into(),
                    ));
                }
                let target = PathBuf::from(target);
                if !target.is_absolute() {
                    return Err(ControlError::Invalid(format!(
                        "restore target {:?} must be an absolute directory",
                        target.display()
                    )));
                }
                if let Ok(mut entries) = std::fs::read_dir(&target)
                    && entries.next().is_some()
                {
                    return Err(ControlError::Conflict(format!(
                        "restore target {} is not empty; choose a new or empty directory",
                        target.display()
                    )));
                }
                let work = Work::Restore { snapshot: snapshot.clone(), target, include: include.clone() };
                (JobKind::Restore, work)
            }
        };
        if kind == JobKind::Backup && self.busy(source, JobKind::Backup) {
            return Err(ControlError::Conflict(format!("a backup of {source} is running; wait for it to finish")));
        }
        let job = self.inner.new_job(source, kind, trigger, None);
        self.launch(job, None, work).map_err(control)
    }

    fn policy(&self) -> Result<Vec<PolicyRow>, ControlError> {
        self.inner.config.sources.values().map(|s| self.policy_row(s)).collect()
    }

    fn drills(&self, source: Option<&str>) -> Result<Vec<DrillResult>, ControlError> {
        if let Some(name) = source {
            self.source(name)?;
        }
        self.drill_results(source, None)
    }

    fn open_file(&self, snapshot: &str, path: &str) -> Result<FileStream, ControlError> {
        let (repo, _, id, s) = self.find_snapshot(snapshot)?;
        let node = tree::find_node(&repo, &s.tree, path)
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .ok_or_else(|| ControlError::NotFound(format!("no {path:?} in snapshot {}", id.short())))?;
        if node.node_type != NodeType::File {
            return Err(ControlError::Invalid(format!("{path:?} in snapshot {} is not a regular file", id.short())));
        }
        Ok(FileStream {
            size: node.size,
            name: node.name.clone(),
            reader: Box::new(BlobReader::new(repo, node.content.clone())),
        })
    }

    fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog.as_ref()
    }
}
