//! A small in-memory [`Control`]: the HTTP layer is what these tests exercise, so the daemon
//! behind it is a fixture with fixed records (the daemon has its own end-to-end tests).

use std::collections::HashSet;
use std::io::{Cursor, Read};
use std::sync::{Arc, Condvar, Mutex};

use jiff::Timestamp;
use tidemark_service_core::{
    Catalog, CatalogError, Claim, Control, ControlError, DrillResult, FileStream, JobFilter, JobKind, JobLogLine,
    JobRecord, JobRequest, JobStatus, PolicyRow, RunKey, SnapshotInfo, SourceStatus, Trigger,
};

pub const UPLOADS_SNAPSHOT: &str = "aa11c0ffee00000000000000000000000000000000000000000000000000aa01";
pub const UPLOADS_OLDER: &str = "ab22c0ffee00000000000000000000000000000000000000000000000000ab02";
pub const PG_SNAPSHOT: &str = "bb33c0ffee00000000000000000000000000000000000000000000000000bb03";
pub const REPORT: &str = "/srv/uploads/report Q1.pdf";
/// A file whose reader blocks until [`Fixture::release`].
pub const HELD: &str = "/srv/uploads/held.bin";
pub const BACKUP_JOB: &str = "0011223344556677";
pub const FAILED_JOB: &str = "8899aabbccddeeff";
pub const DRILL_JOB: &str = "d1d1d1d1d1d1d1d1";

/// The linked file: over a megabyte, so that it streams in several chunks.
pub fn report_bytes() -> Vec<u8> {
    (0..1_300_007u32).map(|i| (i % 251) as u8).collect()
}

fn t(text: &str) -> Timestamp {
    text.parse().expect("fixture timestamp")
}

fn job(id: &str, source: &str, kind: JobKind, status: JobStatus, finished: &str, message: Option<&str>) -> JobRecord {
    let finished = t(finished);
    JobRecord {
        id: id.into(),
        source: source.into(),
        kind,
        trigger: Trigger::Schedule,
        scheduled_for: Some(finished),
        created: finished,
        started: Some(finished),
        finished: Some(finished),
        status,
        message: message.map(str::to_string),
        snapshot: None,
        bytes_added: Some(1024),
        verified: (kind == JobKind::Drill).then_some(true),
        owner: "fixture".into(),
    }
}

/// What [`Control::start`] was asked: source, request, by.
pub type Started = (String, JobRequest, String);

#[derive(Default)]
pub struct Fixture {
    used_links: Mutex<HashSet<String>>,
    pub started: Mutex<Vec<Started>>,
    released: Arc<(Mutex<bool>, Condvar)>,
}

/// Waits for the release before its first byte.
struct Held {
    released: Arc<(Mutex<bool>, Condvar)>,
    data: Cursor<Vec<u8>>,
}

impl Read for Held {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, condvar) = &*self.released;
        let _released = condvar.wait_while(lock.lock().unwrap(), |released| !*released).unwrap();
        self.data.read(buf)
    }
}

impl Fixture {
    /// Lets readers of [`HELD`] go on.
    pub fn release(&self) {
        let (lock, condvar) = &*self.released;
        *lock.lock().unwrap() = true;
        condvar.notify_all();
    }

    fn all_jobs(&self) -> Vec<JobRecord> {
        vec![
            job(
                FAILED_JOB,
                "pgmain",
                JobKind::Backup,
                JobStatus::Failed,
                "2026-01-10T20:00:00Z",
                Some("connection refused"),
            ),
            job(DRILL_JOB, "uploads", JobKind::Drill, JobStatus::Succeeded, "2026-01-10T03:10:00Z", Some("verified")),
            job(BACKUP_JOB, "uploads", JobKind::Backup, JobStatus::Succeeded, "2026-01-09T19:31:00Z", None),
        ]
    }

    fn drill() -> DrillResult {
        DrillResult {
            job: DRILL_JOB.into(),
            time: t("2026-01-10T03:10:00Z"),
            ok: true,
            restore_seconds: 42.5,
            snapshot: Some(UPLOADS_SNAPSHOT.into()),
            message: "3 files verified".into(),
        }
    }

    fn resolve(&self, snapshot: &str) -> Result<&'static str, ControlError> {
        let all = [UPLOADS_SNAPSHOT, UPLOADS_OLDER, PG_SNAPSHOT];
        let found: Vec<_> = all.into_iter().filter(|id| id.starts_with(snapshot)).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(ControlError::NotFound(format!("no snapshot {snapshot}"))),
            _ => Err(ControlError::Invalid(format!("ambiguous snapshot {snapshot}"))),
        }
    }
}

impl Control for Fixture {
    fn sources(&self) -> Result<Vec<SourceStatus>, ControlError> {
        let jobs = self.all_jobs();
        Ok(vec![
            SourceStatus {
                name: "pgmain".into(),
                kind: "postgres".into(),
                repository: "primary".into(),
                schedule: "0 */6 * * *".into(),
                timezone: "UTC".into(),
                window: None,
                last_backup: Some(jobs[0].clone()),
                next_backup: Some(t("2026-01-11T00:00:00Z")),
                next_drill: None,
                newest_snapshot: Some(t("2026-01-09T18:00:00Z")),
                health: "failing".into(),
            },
            SourceStatus {
                name: "uploads".into(),
                kind: "directory".into(),
                repository: "primary".into(),
                schedule: "0 1 * * *".into(),
                timezone: "Asia/Kolkata".into(),
                window: Some("1h".into()),
                last_backup: Some(jobs[2].clone()),
                next_backup: Some(t("2026-01-10T19:30:00Z")),
                next_drill: Some(t("2026-01-11T03:00:00Z")),
                newest_snapshot: Some(t("2026-01-09T19:30:30Z")),
                health: "ok".into(),
            },
        ])
    }

    fn snapshots(&self, source: Option<&str>) -> Result<Vec<SnapshotInfo>, ControlError> {
        let snap = |id: &str, source: &str, time: &str| SnapshotInfo {
            id: id.into(),
            source: Some(source.into()),
            repository: "primary".into(),
            time: t(time),
            hostname: "db1".into(),
            paths: vec!["/srv/uploads".into()],
            tags: vec![],
            total_bytes: Some(4096),
        };
        let all = vec![
            snap(UPLOADS_SNAPSHOT, "uploads", "2026-01-09T19:30:30Z"),
            snap(PG_SNAPSHOT, "pgmain", "2026-01-09T18:00:00Z"),
            snap(UPLOADS_OLDER, "uploads", "2026-01-08T19:30:30Z"),
        ];
        match source {
            None => Ok(all),
            Some(s @ ("uploads" | "pgmain")) => {
                Ok(all.into_iter().filter(|x| x.source.as_deref() == Some(s)).collect())
            }
            Some(other) => Err(ControlError::NotFound(format!("no source named {other}"))),
        }
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, ControlError> {
        let mut jobs: Vec<_> = self.all_jobs().into_iter().filter(|j| filter.matches(j)).collect();
        if let Some(limit) = filter.limit {
            jobs.truncate(limit);
        }
        Ok(jobs)
    }

    fn job(&self, id: &str) -> Result<(JobRecord, Vec<JobLogLine>), ControlError> {
        let job = self.all_jobs().into_iter().find(|j| j.id == id);
        let job = job.ok_or_else(|| ControlError::NotFound(format!("no job {id}")))?;
        let log = vec![JobLogLine {
            time: job.created,
            level: "info".into(),
            message: format!("{} started", job.kind.as_str()),
        }];
        Ok((job, log))
    }

    fn start(&self, source: &str, request: &JobRequest, by: &str) -> Result<JobRecord, ControlError> {
        match source {
            "busy" => return Err(ControlError::Conflict("a backup of busy is running".into())),
            "down" => return Err(ControlError::Unavailable("the repository primary is unreachable".into())),
            "broken" => return Err(ControlError::Internal("secret internal detail".into())),
            "uploads" | "pgmain" => {}
            other => return Err(ControlError::NotFound(format!("no source named {other}"))),
        }
        if let JobRequest::Restore { target, .. } = request
            && !target.starts_with('/')
        {
            return Err(ControlError::Invalid(format!("the restore target {target} is not absolute")));
        }
        self.started.lock().unwrap().push((source.into(), request.clone(), by.into()));
        let kind = match request {
            JobRequest::Backup => JobKind::Backup,
            JobRequest::Drill => JobKind::Drill,
            JobRequest::Restore { .. } => JobKind::Restore,
        };
        let mut record = job("feedfeedfeedfeed", source, kind, JobStatus::Queued, "2026-01-10T12:00:00Z", None);
        record.trigger = Trigger::Manual { by: by.into() };
        record.finished = None;
        record.started = None;
        Ok(record)
    }

    fn policy(&self) -> Result<Vec<PolicyRow>, ControlError> {
        let row = |source: &str, method: &str, drill: Option<DrillResult>| PolicyRow {
            source: source.into(),
            method: method.into(),
            frequency: "daily at 01:00 Asia/Kolkata (0 1 * * *)".into(),
            retention: "14 daily, 8 weekly, 6 monthly, 1 yearly".into(),
            oldest_restorable: Some(t("2025-12-01T19:30:00Z")),
            recovery_precision: "per snapshot".into(),
            newest_backup_age_seconds: Some(3600),
            offsite_lag_seconds: vec![("offsite".into(), Some(120))],
            last_drill: drill,
        };
        Ok(vec![
            row("pgmain", "base backups + WAL archive", None),
            row("uploads", "directory snapshots", Some(Fixture::drill())),
        ])
    }

    fn drills(&self, _source: Option<&str>) -> Result<Vec<DrillResult>, ControlError> {
        Ok(vec![Fixture::drill()])
    }

    fn open_file(&self, snapshot: &str, path: &str) -> Result<FileStream, ControlError> {
        let id = self.resolve(snapshot)?;
        if id == UPLOADS_SNAPSHOT && path == HELD {
            let data = Cursor::new(report_bytes());
            let size = data.get_ref().len() as u64;
            return Ok(FileStream {
                size,
                name: "held.bin".into(),
                reader: Box::new(Held { released: self.released.clone(), data }),
            });
        }
        if id != UPLOADS_SNAPSHOT || path != REPORT {
            return Err(ControlError::NotFound(format!("no file {path} in snapshot {snapshot}")));
        }
        let data = report_bytes();
        Ok(FileStream { size: data.len() as u64, name: "report Q1.pdf".into(), reader: Box::new(Cursor::new(data)) })
    }

    fn catalog(&self) -> &dyn Catalog {
        self
    }
}

impl Catalog for Fixture {
    fn insert_job(&self, _job: &JobRecord) -> Result<(), CatalogError> {
        Err(CatalogError::Unavailable("fixture".into()))
    }
    fn update_job(&self, _job: &JobRecord) -> Result<(), CatalogError> {
        Err(CatalogError::Unavailable("fixture".into()))
    }
    fn job(&self, _id: &str) -> Result<Option<JobRecord>, CatalogError> {
        Ok(None)
    }
    fn jobs(&self, _filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        Ok(vec![])
    }
    fn append_log(&self, _job_id: &str, _line: &JobLogLine) -> Result<(), CatalogError> {
        Ok(())
    }
    fn job_log(&self, _job_id: &str) -> Result<Vec<JobLogLine>, CatalogError> {
        Ok(vec![])
    }
    fn claim(&self, _run: &RunKey, _owner: &str, _until: Timestamp, _now: Timestamp) -> Result<Claim, CatalogError> {
        Ok(Claim::Done)
    }
    fn complete(&self, _run: &RunKey, _owner: &str) -> Result<(), CatalogError> {
        Ok(())
    }
    fn use_link(&self, nonce: &str, _at: Timestamp) -> Result<bool, CatalogError> {
        Ok(self.used_links.lock().unwrap().insert(nonce.to_string()))
    }
}
