//! The seams between the daemon's parts: the records it keeps, the [`Catalog`] that keeps them
//! (embedded or in PostgreSQL), and the [`Control`] surface that the HTTP layer, the dashboard and
//! the command line drive.
//!
//! Everything here is data and traits; the implementations live in the crates that own the I/O:
//! `tidemark-service-state` (catalogs), `tidemark-service` (the daemon, implementing [`Control`]),
//! `tidemark-service-http` (the API and dashboard, consuming [`Control`]).
//!
//! Every record serializes to the JSON that `/api/v1` returns, so these types are part of the
//! API contract: extend them, never rename a field.

use std::io::Read;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Back a source up (and then apply its retention and copy it off-site).
    Backup,
    /// Restore the latest backup into a scratch place, verify it, measure, clean up.
    Drill,
    /// Restore a snapshot on request.
    Restore,
    /// Copy snapshots to an off-site repository.
    Copy,
    /// Apply retention (forget, then prune what nothing uses).
    Forget,
}

impl JobKind {
    /// The JSON and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Drill => "drill",
            JobKind::Restore => "restore",
            JobKind::Copy => "copy",
            JobKind::Forget => "forget",
        }
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, not started.
    Queued,
    /// Started and not finished.
    Running,
    /// Finished and did what it should.
    Succeeded,
    /// Finished with an error (see [`JobRecord::message`]).
    Failed,
    /// The daemon stopped (crash, kill, power) while it ran; it is rerun per policy.
    Interrupted,
    /// It could not start inside its window.
    Missed,
    /// Stopped at its window's end (`overrun = "cancel"`) or by an operator.
    Cancelled,
}

impl JobStatus {
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Why a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule: the run at `scheduled_for`.
    Schedule,
    /// A run missed while the daemon was down, caught up per policy.
    CatchUp,
    /// The rerun of an interrupted job.
    Rerun {
        /// The interrupted job.
        of: String,
    },
    /// Asked for through the API or the command line.
    Manual {
        /// The token's name (or `"cli"`).
        by: String,
    },
}

/// One job: a backup, drill, restore, copy or forget run of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Unique id (random, 16 hex characters or more).
    pub id: String,
    /// The source's name.
    pub source: String,
    /// What it does.
    pub kind: JobKind,
    /// Why it ran.
    pub trigger: Trigger,
    /// The scheduled instant it belongs to, for scheduled runs.
    pub scheduled_for: Option<Timestamp>,
    /// When it was accepted.
    pub created: Timestamp,
    /// When it started.
    pub started: Option<Timestamp>,
    /// When it finished.
    pub finished: Option<Timestamp>,
    /// Where it stands.
    pub status: JobStatus,
    /// The error of a failed job, the reason of a missed or cancelled one; a one-line summary
    /// otherwise.
    pub message: Option<String>,
    /// The snapshot it wrote (backup) or read (drill, restore).
    pub snapshot: Option<String>,
    /// Bytes added to the repository (backup, copy).
    pub bytes_added: Option<u64>,
    /// For a drill: whether the restored data was verified.
    pub verified: Option<bool>,
    /// The daemon that ran it (its owner id in the catalog).
    pub owner: String,
}

impl JobRecord {
    /// Seconds from start to finish, once finished.
    pub fn duration_seconds(&self) -> Option<f64> {
        let (start, end) = (self.started?, self.finished?);
        Some(end.duration_since(start).as_secs_f64())
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogLine {
    /// When.
    pub time: Timestamp,
    /// `"info"`, `"warn"` or `"error"`.
    pub level: String,
    /// What happened.
    pub message: String,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only this source's.
    pub source: Option<String>,
    /// Only this kind.
    pub kind: Option<JobKind>,
    /// Only in these states (empty: all).
    #[serde(default)]
    pub status: Vec<JobStatus>,
    /// At most this many, newest (by `created`) first; `None`: all.
    pub limit: Option<usize>,
}

impl JobFilter {
    /// Whether `job` passes the filter (ignoring `limit`).
    pub fn matches(&self, job: &JobRecord) -> bool {
        self.source.as_deref().is_none_or(|s| s == job.source)
            && self.kind.is_none_or(|k| k == job.kind)
            && (self.status.is_empty() || self.status.contains(&job.status))
    }
}

/// Identifies one scheduled run across daemons: source, kind and scheduled instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// The source's name.
    pub source: String,
    /// What the run does.
    pub kind: JobKind,
    /// The scheduled instant.
    pub scheduled_for: Timestamp,
}

/// The answer to [`Catalog::claim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Claim {
    /// This owner holds the run until the `until` it asked for (claim again before then to renew).
    Granted,
    /// Another owner holds a live lease on it.
    HeldBy {
        /// The holder.
        owner: String,
        /// Its lease ends then, unless renewed.
        until: Timestamp,
    },
    /// The run is already complete: nobody runs it again.
    Done,
}

/// Why the catalog could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Another daemon holds the embedded state (two daemons on one embedded state refuse to run).
    #[error(
        "the state in {path} is in use by another tidemark daemon ({holder}); stop it, or give this \
         daemon its own server.state_dir, or share a PostgreSQL catalog (server.catalog)"
    )]
    Locked {
        /// The state's path.
        path: String,
        /// Who holds it, as far as known (pid, host).
        holder: String,
    },
    /// The catalog cannot be reached (PostgreSQL down, disk gone); retry later.
    #[error("the catalog is unavailable: {0}; the daemon retries, check the database or disk")]
    Unavailable(String),
    /// The catalog's contents do not decode.
    #[error("the catalog is damaged: {0}")]
    Corrupt(String),
    /// The request contradicts what the catalog holds: a job id inserted twice, an update of a
    /// job that was never inserted. The catalog is intact; the caller's view of it is not.
    #[error("the catalog refused the change: {0}")]
    Conflict(String),
}

/// The daemon's durable memory: job history and logs, leases on scheduled runs, link uses.
///
/// Two implementations: an embedded database under `server.state_dir` (one daemon; a second one
/// on the same state refuses to start), and PostgreSQL (several daemons share one catalog; leases
/// make each scheduled run happen exactly once). Every method is a single atomic step; `now` is
/// passed in so tests drive the clock.
pub trait Catalog: Send + Sync {
    /// Stores a new job; an existing id is an error.
    fn insert_job(&self, job: &JobRecord) -> Result<(), CatalogError>;
    /// Replaces the job with the same id.
    fn update_job(&self, job: &JobRecord) -> Result<(), CatalogError>;
    /// One job by id.
    fn job(&self, id: &str) -> Result<Option<JobRecord>, CatalogError>;
    /// The jobs passing `filter`, newest first.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError>;
    /// Appends a line to a job's log.
    fn append_log(&self, job_id: &str, line: &JobLogLine) -> Result<(), CatalogError>;
    /// A job's log, oldest line first.
    fn job_log(&self, job_id: &str) -> Result<Vec<JobLogLine>, CatalogError>;
    /// Claims `run` for `owner` until `until`. Granted when nobody holds it, when `owner` already
    /// does (this renews), or when the holder's lease ended before `now` (the holder died: the
    /// caller marks that holder's job interrupted). `Done` once [`Catalog::complete`] was called.
    fn claim(&self, run: &RunKey, owner: &str, until: Timestamp, now: Timestamp) -> Result<Claim, CatalogError>;
    /// Marks `run` complete (whatever its outcome): it is never claimed again.
    fn complete(&self, run: &RunKey, owner: &str) -> Result<(), CatalogError>;
    /// Records the single use of the link with this nonce (hex); `false` if it was used before.
    fn use_link(&self, nonce: &str, at: Timestamp) -> Result<bool, CatalogError>;
}

/// A source as the API lists it: its configuration in brief and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Its name.
    pub name: String,
    /// `"directory"`, `"bucket"` or `"postgres"`.
    pub kind: String,
    /// Its repository's name.
    pub repository: String,
    /// The cron expression.
    pub schedule: String,
    /// The IANA time zone of the schedule.
    pub timezone: String,
    /// The window, e.g. `"1h"`.
    pub window: Option<String>,
    /// Its newest job of kind backup.
    pub last_backup: Option<JobRecord>,
    /// The next scheduled backup.
    pub next_backup: Option<Timestamp>,
    /// The next scheduled drill.
    pub next_drill: Option<Timestamp>,
    /// When its newest snapshot was taken.
    pub newest_snapshot: Option<Timestamp>,
    /// `"ok"`, `"running"`, `"failing"` (last backup failed), `"stale"` (newest backup older than
    /// the policy allows) or `"never"` (no backup yet).
    pub health: String,
}

/// A snapshot as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Full id (hex).
    pub id: String,
    /// The source (config name) it belongs to, when known.
    pub source: Option<String>,
    /// Its repository's name.
    pub repository: String,
    /// When it was taken.
    pub time: Timestamp,
    /// The host it was taken on.
    pub hostname: String,
    /// What it holds.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Bytes of the data it holds.
    pub total_bytes: Option<u64>,
}

/// One measured restore drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillResult {
    /// The drill's job id.
    pub job: String,
    /// When it finished.
    pub time: Timestamp,
    /// Whether the restore worked and verified.
    pub ok: bool,
    /// How long the restore took, seconds.
    pub restore_seconds: f64,
    /// The snapshot restored.
    pub snapshot: Option<String>,
    /// What was verified, or what failed.
    pub message: String,
}

/// One row of the live policy: the promises of a source, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// The source.
    pub source: String,
    /// How it is backed up, e.g. `"directory snapshots"`, `"base backups + WAL archive"`.
    pub method: String,
    /// How often, in words and cron, e.g. `"daily at 01:00 Asia/Kolkata (0 1 * * *)"`.
    pub frequency: String,
    /// The retention promised, e.g. `"14 daily, 8 weekly, 6 monthly, 1 yearly"`.
    pub retention: String,
    /// The oldest point that can be restored today.
    pub oldest_restorable: Option<Timestamp>,
    /// `"to the second"` (streamed or archived WAL) or `"per snapshot"`.
    pub recovery_precision: String,
    /// Seconds since the newest backup, if any.
    pub newest_backup_age_seconds: Option<i64>,
    /// Per off-site repository, seconds its newest copy lags the primary's newest snapshot.
    pub offsite_lag_seconds: Vec<(String, Option<i64>)>,
    /// The last drill's measured restore, if any.
    pub last_drill: Option<DrillResult>,
}

/// What an API caller asks the daemon to run now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    /// A backup now.
    Backup,
    /// A drill now.
    Drill,
    /// Restore `snapshot` (or the source's latest) into `target` on the daemon's host.
    Restore {
        /// Snapshot id or prefix; `None`: latest.
        snapshot: Option<String>,
        /// An absolute directory that must not exist or be empty.
        target: String,
        /// Only paths matching these globs.
        #[serde(default)]
        include: Vec<String>,
    },
}

/// A file of a snapshot, opened for download through a link.
pub struct FileStream {
    /// Its size in bytes.
    pub size: u64,
    /// A name for `Content-Disposition`.
    pub name: String,
    /// Its contents.
    pub reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream").field("size", &self.size).field("name", &self.name).finish_non_exhaustive()
    }
}

/// Why the daemon refused or failed a request; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// 404: no such source, snapshot, job or path.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is malformed or asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// 409: e.g. a backup of that source is already running.
    #[error("{0}")]
    Conflict(String),
    /// 503: a repository or the catalog is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<CatalogError> for ControlError {
    fn from(e: CatalogError) -> ControlError {
        match e {
            CatalogError::Unavailable(_) | CatalogError::Locked { .. } => ControlError::Unavailable(e.to_string()),
            CatalogError::Corrupt(_) => ControlError::Internal(e.to_string()),
            CatalogError::Conflict(_) => ControlError::Conflict(e.to_string()),
        }
    }
}

/// What the HTTP API, the dashboard and `tidemark policy` ask of the running daemon.
///
/// Blocking methods: the HTTP layer calls them from a blocking thread pool.
pub trait Control: Send + Sync + 'static {
    /// Every configured source with its status, in name order.
    fn sources(&self) -> Result<Vec<SourceStatus>, ControlError>;
    /// Snapshots, newest first; of one source when given (unknown source: `NotFound`).
    fn snapshots(&self, source: Option<&str>) -> Result<Vec<SnapshotInfo>, ControlError>;
    /// Jobs passing the filter, newest first.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, ControlError>;
    /// One job and its log.
    fn job(&self, id: &str) -> Result<(JobRecord, Vec<JobLogLine>), ControlError>;
    /// Starts a job of `source` now, on behalf of `by` (a token name); returns it as queued or
    /// running. A backup of a source whose backup is running is a `Conflict`.
    fn start(&self, source: &str, request: &JobRequest, by: &str) -> Result<JobRecord, ControlError>;
    /// The live policy table, one row per source in name order.
    fn policy(&self) -> Result<Vec<PolicyRow>, ControlError>;
    /// Drill results, newest first; of one source when given.
    fn drills(&self, source: Option<&str>) -> Result<Vec<DrillResult>, ControlError>;
    /// Opens `path` in `snapshot` (id or unique prefix) for a download link.
    fn open_file(&self, snapshot: &str, path: &str) -> Result<FileStream, ControlError>;
    /// The catalog, for link uses.
    fn catalog(&self) -> &dyn Catalog;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus) -> JobRecord {
        JobRecord {
            id: "0011223344556677".into(),
            source: "uploads".into(),
            kind: JobKind::Backup,
            trigger: Trigger::Manual { by: "ops".into() },
            scheduled_for: None,
            created: "2026-01-10T19:30:00Z".parse().unwrap(),
            started: Some("2026-01-10T19:30:01Z".parse().unwrap()),
            finished: Some("2026-01-10T19:30:31.5Z".parse().unwrap()),
            status,
            message: None,
            snapshot: None,
            bytes_added: Some(10),
            verified: None,
            owner: "host-1".into(),
        }
    }

    #[test]
    fn job_json_uses_the_contract_spelling() {
        let json = serde_json::to_value(job(JobStatus::Succeeded)).unwrap();
        assert_eq!(json["kind"], "backup");
        assert_eq!(json["status"], "succeeded");
        assert_eq!(json["trigger"]["type"], "manual");
        assert_eq!(json["trigger"]["by"], "ops");
        let back: JobRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, job(JobStatus::Succeeded));
    }

    #[test]
    fn duration_and_filter() {
        assert_eq!(job(JobStatus::Failed).duration_seconds(), Some(30.5));
        let filter = JobFilter { status: vec![JobStatus::Running], ..JobFilter::default() };
        assert!(!filter.matches(&job(JobStatus::Failed)));
        assert!(filter.matches(&job(JobStatus::Running)));
        assert!(JobFilter { source: Some("uploads".into()), ..JobFilter::default() }.matches(&job(JobStatus::Failed)));
        assert!(!JobFilter { kind: Some(JobKind::Drill), ..JobFilter::default() }.matches(&job(JobStatus::Failed)));
    }

    #[test]
    fn catalog_errors_map_to_control_errors() {
        let conflict = ControlError::from(CatalogError::Conflict("job 01 is already in the catalog".into()));
        assert!(matches!(&conflict, ControlError::Conflict(m) if m.contains("job 01")), "{conflict:?}");
        assert!(matches!(ControlError::from(CatalogError::Corrupt("x".into())), ControlError::Internal(_)));
        assert!(matches!(ControlError::from(CatalogError::Unavailable("x".into())), ControlError::Unavailable(_)));
    }

    #[test]
    fn job_request_json() {
        let r: JobRequest = serde_json::from_str(r#"{"kind":"restore","target":"/tmp/x"}"#).unwrap();
        assert_eq!(r, JobRequest::Restore { snapshot: None, target: "/tmp/x".into(), include: vec![] });
        let r: JobRequest = serde_json::from_str(r#"{"kind":"backup"}"#).unwrap();
        assert_eq!(r, JobRequest::Backup);
    }
}
