//! [`EmbeddedCatalog`]: the catalog in a redb database file under `server.state_dir`.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidemark_service_core::api::{Catalog, CatalogError, Claim, JobFilter, JobLogLine, JobRecord, RunKey};

use crate::lease::{Lease, completed, decide, run_key};
use crate::{SCHEMA_VERSION, duplicate_job, unknown_job};

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "catalog.redb";
/// The file naming the daemon that opened the database last (pid, host, owner, time).
pub const HOLDER_FILE_NAME: &str = "catalog.holder";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const JOBS_BY_CREATED: TableDefinition<(i128, &str), ()> = TableDefinition::new("jobs_by_created");
const LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("job_logs");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const LINKS: TableDefinition<&str, &str> = TableDefinition::new("link_uses");

/// The catalog in an embedded database (`STATE_DIR/catalog.redb`), for one daemon.
///
/// Every method is one transaction, committed with an fsync before it returns, so what a method
/// stored survives a crash or power loss right after. The file is locked while the catalog is
/// open: a second daemon (another process, or another handle in this one) gets
/// [`CatalogError::Locked`] naming the holder, as recorded in `STATE_DIR/catalog.holder`.
///
/// ```
/// use tidemark_service_core::api::Catalog;
/// use tidemark_service_state::EmbeddedCatalog;
///
/// let dir = tempfile::tempdir().unwrap();
/// let catalog = EmbeddedCatalog::open(dir.path(), "host-1").unwrap();
/// assert!(catalog.use_link("00ff", "2026-01-10T19:30:00Z".parse().unwrap()).unwrap());
/// // A second daemon on the same state refuses to run.
/// assert!(EmbeddedCatalog::open(dir.path(), "host-2").is_err());
/// ```
#[derive(Debug)]
pub struct EmbeddedCatalog {
    db: Database,
    path: PathBuf,
}

impl EmbeddedCatalog {
    /// Opens (creating when needed) the catalog in `state_dir` for the daemon `owner`.
    pub fn open(state_dir: &Path, owner: &str) -> Result<EmbeddedCatalog, CatalogError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            CatalogError::Unavailable(format!(
                "cannot create the state directory {}: {e}; create it and give the daemon's user \
                 write access, or set server.state_dir",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join(FILE_NAME);
        let holder_path = state_dir.join(HOLDER_FILE_NAME);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                let holder = std::fs::read_to_string(&holder_path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "unknown: no catalog.holder file".to_string());
                return Err(CatalogError::Locked { path: path.display().to_string(), holder });
            }
            Err(e) => return Err(db_error(&path, e)),
        };
        let catalog = EmbeddedCatalog { db, path };
        catalog.create_tables()?;
        let holder = format!(
            "pid {} on {}, owner {owner:?}, since {}",
            std::process::id(),
            crate::hostname(),
            Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| Timestamp::now())
        );
        std::fs::write(&holder_path, format!("{holder}\n")).map_err(|e| {
            CatalogError::Unavailable(format!(
                "cannot write {}: {e}; give the daemon's user write access to the state directory",
                holder_path.display()
            ))
        })?;
        Ok(catalog)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), CatalogError> {
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let version = meta.get("schema_version")?.map(|v| v.value().to_string());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_string().as_str())?;
                }
                Some(v) if v == SCHEMA_VERSION.to_string() => {}
                Some(v) => return Ok(Err(v)),
            }
            txn.open_table(JOBS)?;
            txn.open_table(JOBS_BY_CREATED)?;
            txn.open_table(LOGS)?;
            txn.open_table(RUNS)?;
            txn.open_table(LINKS)?;
            Ok(Ok(()))
        })?
        .map_err(|version| {
            CatalogError::Corrupt(format!(
                "{} has catalog schema version {version}, this tidemark knows version {SCHEMA_VERSION}; \
                 run the tidemark release that wrote it, or a newer one",
                self.path.display()
            ))
        })
    }

    /// Runs `f` in a write transaction and commits it (with an fsync) when `f` returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<T, Failure>) -> Result<T, CatalogError> {
        let txn = self.db.begin_write().map_err(|e| db_error(&self.path, e))?;
        let value = f(&txn).map_err(|e| e.into_catalog(&self.path))?;
        txn.commit().map_err(|e| db_error(&self.path, e))?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, Failure>) -> Result<T, CatalogError> {
        let txn = self.db.begin_read().map_err(|e| db_error(&self.path, e))?;
        f(&txn).map_err(|e| e.into_catalog(&self.path))
    }
}

/// An error inside a transaction: the database's, or a record that does not decode.
enum Failure {
    Db(redb::Error),
    Catalog(CatalogError),
}

impl Failure {
    fn into_catalog(self, path: &Path) -> CatalogError {
        match self {
            Failure::Db(e) => db_error(path, e),
            Failure::Catalog(e) => e,
        }
    }
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Db(e.into())
    }
}

fn db_error(path: &Path, e: impl Into<redb::Error>) -> CatalogError {
    match e.into() {
        redb::Error::Corrupted(what) => CatalogError::Corrupt(format!(
            "{}: {what}; restore the state directory from a backup, or move the file away to start \
             with an empty job history",
            path.display()
        )),
        redb::Error::DatabaseAlreadyOpen => {
            CatalogError::Locked { path: path.display().to_string(), holder: "unknown".to_string() }
        }
        other => CatalogError::Unavailable(format!("{}: {other}", path.display())),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| Failure::Catalog(CatalogError::Corrupt(format!("cannot encode: {e}"))))
}

fn decode<T: DeserializeOwned>(what: impl Display, bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::Catalog(CatalogError::Corrupt(format!("{what} does not decode: {e}"))))
}

/// The lease recorded for `run` (stored under `key`), if any.
fn lease(runs: &redb::Table<&str, &[u8]>, key: &str, run: &RunKey) -> Result<Option<Lease>, Failure> {
    runs.get(key)?.map(|bytes| decode(format_args!("the lease of {run:?}"), bytes.value())).transpose()
}

impl Catalog for EmbeddedCatalog {
    fn insert_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let bytes = encode(job).map_err(|e| e.into_catalog(&self.path))?;
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS)?;
            if jobs.get(job.id.as_str())?.is_some() {
                return Err(Failure::Catalog(duplicate_job(&job.id)));
            }
            jobs.insert(job.id.as_str(), bytes.as_slice())?;
            txn.open_table(JOBS_BY_CREATED)?.insert((job.created.as_nanosecond(), job.id.as_str()), ())?;
            Ok(())
        })
    }

    fn update_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let bytes = encode(job).map_err(|e| e.into_catalog(&self.path))?;
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS)?;
            let old: JobRecord = match jobs.get(job.id.as_str())? {
                Some(old) => decode(format_args!("job {}", job.id), old.value())?,
                None => return Err(Failure::Catalog(unknown_job(&job.id))),
            };
            jobs.insert(job.id.as_str(), bytes.as_slice())?;
            if old.created != job.created {
                let mut index = txn.open_table(JOBS_BY_CREATED)?;
                index.remove((old.created.as_nanosecond(), job.id.as_str()))?;
                index.insert((job.created.as_nanosecond(), job.id.as_str()), ())?;
            }
            Ok(())
        })
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, CatalogError> {
        self.read(|txn| match txn.open_table(JOBS)?.get(id)? {
            Some(bytes) => Ok(Some(decode(format_args!("job {id}"), bytes.value())?)),
            None => Ok(None),
        })
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        self.read(|txn| {
            let jobs = txn.open_table(JOBS)?;
            let index = txn.open_table(JOBS_BY_CREATED)?;
            let mut out = Vec::new();
            // The index runs oldest first, ties by id: backwards is the order `jobs` promises.
            for entry in index.iter()?.rev() {
                if filter.limit.is_some_and(|limit| out.len() >= limit) {
                    break;
                }
                let (key, _) = entry?;
                let id = key.value().1;
                let Some(bytes) = jobs.get(id)? else {
                    return Err(Failure::Catalog(CatalogError::Corrupt(format!(
                        "the job index names job {id}, which is missing"
                    ))));
                };
                let job: JobRecord = decode(format_args!("job {id}"), bytes.value())?;
                if filter.matches(&job) {
                    out.push(job);
                }
            }
            Ok(out)
        })
    }

    fn append_log(&self, job_id: &str, line: &JobLogLine) -> Result<(), CatalogError> {
        let bytes = encode(line).map_err(|e| e.into_catalog(&self.path))?;
        self.write(|txn| {
            let mut logs = txn.open_table(LOGS)?;
            let next = match logs.range((job_id, 0)..=(job_id, u64::MAX))?.next_back() {
                Some(entry) => entry?.0.value().1 + 1,
                None => 0,
            };
            logs.insert((job_id, next), bytes.as_slice())?;
            Ok(())
        })
    }

    fn job_log(&self, job_id: &str) -> Result<Vec<JobLogLine>, CatalogError> {
        self.read(|txn| {
            let logs = txn.open_table(LOGS)?;
            let mut out = Vec::new();
            for entry in logs.range((job_id, 0)..=(job_id, u64::MAX))? {
                let (_, bytes) = entry?;
                out.push(decode(format_args!("a log line of job {job_id}"), bytes.value())?);
            }
            Ok(out)
        })
    }

    fn claim(&self, run: &RunKey, owner: &str, until: Timestamp, now: Timestamp) -> Result<Claim, CatalogError> {
        let key = run_key(run);
        self.write(|txn| {
            let mut runs = txn.open_table(RUNS)?;
            let existing = lease(&runs, &key, run)?;
            let (claim, lease) = decide(existing.as_ref(), owner, until, now);
            if let Some(lease) = lease {
                runs.insert(key.as_str(), encode(&lease)?.as_slice())?;
            }
            Ok(claim)
        })
    }

    fn complete(&self, run: &RunKey, owner: &str) -> Result<(), CatalogError> {
        let key = run_key(run);
        self.write(|txn| {
            let mut runs = txn.open_table(RUNS)?;
            let existing = lease(&runs, &key, run)?;
            runs.insert(key.as_str(), encode(&completed(existing.as_ref(), owner))?.as_slice())?;
            Ok(())
        })
    }

    fn use_link(&self, nonce: &str, at: Timestamp) -> Result<bool, CatalogError> {
        self.write(|txn| {
            let mut links = txn.open_table(LINKS)?;
            if links.get(nonce)?.is_some() {
                return Ok(false);
            }
            links.insert(nonce, at.to_string().as_str())?;
            Ok(true)
        })
    }
}
