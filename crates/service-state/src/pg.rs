//! [`PgCatalog`]: the catalog in PostgreSQL, shared by several daemons.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use postgres::config::Host;
use postgres::{Client, Config, NoTls};
use serde::Serialize;
use tidemark_service_core::api::{Catalog, CatalogError, Claim, JobFilter, JobLogLine, JobRecord, RunKey};

use crate::{SCHEMA_VERSION, duplicate_job, unknown_job};

/// How long a connection attempt may take when the connection string sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An arbitrary constant: the advisory lock that serializes schema creation between daemons
/// starting at once (`CREATE TABLE IF NOT EXISTS` alone races on the catalog's own indexes).
const SCHEMA_LOCK: i64 = 0x7469_6465_6d61_726b; // "tidemark"

/// The schema, created on first use. Documented in the crate docs; a change bumps
/// [`SCHEMA_VERSION`].
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tidemark_catalog_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS tidemark_jobs (
    id text PRIMARY KEY,
    source text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    created_s bigint NOT NULL,
    created_ns integer NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS tidemark_jobs_newest
    ON tidemark_jobs (created_s DESC, created_ns DESC, id COLLATE \"C\" DESC);
CREATE TABLE IF NOT EXISTS tidemark_job_logs (
    job_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    line jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS tidemark_runs (
    source text NOT NULL,
    kind text NOT NULL,
    scheduled_s bigint NOT NULL,
    scheduled_ns integer NOT NULL,
    owner text NOT NULL,
    until_s bigint,
    until_ns integer,
    done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (source, kind, scheduled_s, scheduled_ns)
);
CREATE TABLE IF NOT EXISTS tidemark_link_uses (
    nonce text PRIMARY KEY,
    used_s bigint NOT NULL,
    used_ns integer NOT NULL
);
";

const CLAIM: &str = "
INSERT INTO tidemark_runs AS r (source, kind, scheduled_s, scheduled_ns, owner, until_s, until_ns, done)
VALUES ($1, $2, $3, $4, $5, $6, $7, false)
ON CONFLICT (source, kind, scheduled_s, scheduled_ns) DO UPDATE
    SET owner = excluded.owner, until_s = excluded.until_s, until_ns = excluded.until_ns
    WHERE NOT r.done
        AND (r.owner = excluded.owner OR r.until_s IS NULL OR (r.until_s, r.until_ns) <= ($8, $9))
RETURNING owner";

/// The catalog in a PostgreSQL database: several daemons share it, and the leases on scheduled
/// runs make each run happen exactly once.
///
/// One connection per catalog, used by one call at a time; a broken connection is reported as
/// [`CatalogError::Unavailable`] and replaced on the next call. The tables (see the crate docs)
/// are created on first use. Each method is one statement, atomic on its own: a claim is a single
/// `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the lease ended or the owner is the same, so that
/// of several daemons racing for a run exactly one is granted it.
pub struct PgCatalog {
    config: Config,
    /// `host:port/dbname`, for messages (never the password).
    place: String,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalog").field("place", &self.place).finish_non_exhaustive()
    }
}

impl PgCatalog {
    /// Connects to the catalog at `connection` (a `postgres://` URL or a libpq `key=value`
    /// string) as the daemon `owner` (shown as its `application_name`), reading the password from
    /// `password_file` when the connection names none, and creates the tables when missing.
    pub fn connect(connection: &str, password_file: Option<&Path>, owner: &str) -> Result<PgCatalog, CatalogError> {
        let mut config = Config::from_str(connection).map_err(|e| {
            CatalogError::Unavailable(format!(
                "server.catalog is not a valid PostgreSQL connection string ({e}); write e.g. \
                 \"postgres://tidemark@db.example.com/tidemark\""
            ))
        })?;
        if let (None, Some(file)) = (config.get_password(), password_file) {
            let password = std::fs::read_to_string(file).map_err(|e| {
                CatalogError::Unavailable(format!(
                    "cannot read the catalog password from {}: {e}; check server.catalog_password_file",
                    file.display()
                ))
            })?;
            config.password(password.trim_end_matches(['\r', '\n']));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let name: String = format!("tidemark {owner}").chars().take(63).collect();
        config.application_name(&name);
        let place = place(&config);
        let catalog = PgCatalog { config, place, client: Mutex::new(None) };
        catalog.with_client(|client| catalog.create_schema(client))??;
        Ok(catalog)
    }

    fn create_schema(&self, client: &mut Client) -> Result<Result<(), CatalogError>, postgres::Error> {
        let mut txn = client.transaction()?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        txn.batch_execute(SCHEMA)?;
        txn.execute(
            "INSERT INTO tidemark_catalog_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT DO NOTHING",
            &[&SCHEMA_VERSION.to_string()],
        )?;
        let version: String =
            txn.query_one("SELECT value FROM tidemark_catalog_meta WHERE key = 'schema_version'", &[])?.get(0);
        if version != SCHEMA_VERSION.to_string() {
            return Ok(Err(CatalogError::Corrupt(format!(
                "the PostgreSQL catalog at {} has schema version {version}, this tidemark knows version \
                 {SCHEMA_VERSION}; run the tidemark release that wrote it, or a newer one",
                self.place
            ))));
        }
        txn.commit()?;
        Ok(Ok(()))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        // A panic while the lock was held leaves at worst a connection in an unknown state:
        // dropped below when it fails, like any broken one.
        self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the connection, connecting first when there is none. A failure drops the
    /// connection unless the server answered it with an SQL error (the connection is fine then).
    fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, CatalogError> {
        let mut slot = self.lock();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            let client = self.config.connect(NoTls).map_err(|e| {
                CatalogError::Unavailable(format!(
                    "cannot connect to the PostgreSQL catalog at {}: {}; check that the server runs \
                     and accepts this daemon, and server.catalog / server.catalog_password_file",
                    self.place,
                    describe(&e)
                ))
            })?;
            *slot = Some(client);
        }
        let Some(client) = slot.as_mut() else {
            return Err(CatalogError::Unavailable(format!(
                "no connection to the PostgreSQL catalog at {}",
                self.place
            )));
        };
        f(client).map_err(|e| {
            if e.as_db_error().is_none() {
                *slot = None;
            }
            CatalogError::Unavailable(format!(
                "the PostgreSQL catalog at {} failed: {}; the daemon retries, check the database",
                self.place,
                describe(&e)
            ))
        })
    }
}

/// `host:port/dbname` of the first host, for messages.
fn place(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().or(config.get_user()).unwrap_or("postgres"))
}

/// The error with its cause (postgres' own message is only the outer layer).
fn describe(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(source)) => format!("{e}: {source}"),
        (None, None) => e.to_string(),
    }
}

fn split(t: Timestamp) -> (i64, i32) {
    (t.as_second(), t.subsec_nanosecond())
}

fn join(what: &str, s: i64, ns: i32) -> Result<Timestamp, CatalogError> {
    Timestamp::new(s, ns).map_err(|e| CatalogError::Corrupt(format!("{what} holds an impossible instant: {e}")))
}

/// The JSON spelling of an enum variant, as stored in the text columns.
fn spelling<T: Serialize>(value: &T) -> Result<String, CatalogError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(CatalogError::Corrupt(format!("cannot encode: {e}"))),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, CatalogError> {
    serde_json::to_string(value).map_err(|e| CatalogError::Corrupt(format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, CatalogError> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("{what} does not decode: {e}")))
}

impl Catalog for PgCatalog {
    fn insert_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let (record, status) = (to_json(job)?, spelling(&job.status)?);
        let (s, ns) = split(job.created);
        let inserted = self.with_client(|c| {
            c.execute(
                "INSERT INTO tidemark_jobs (id, source, kind, status, created_s, created_ns, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) ON CONFLICT (id) DO NOTHING",
                &[&job.id, &job.source, &job.kind.as_str(), &status, &s, &ns, &record],
            )
        })?;
        if inserted == 0 { Err(duplicate_job(&job.id)) } else { Ok(()) }
    }

    fn update_job(&self, job: &JobRecord) -> Result<(), CatalogError> {
        let (record, status) = (to_json(job)?, spelling(&job.status)?);
        let (s, ns) = split(job.created);
        let updated = self.with_client(|c| {
            c.execute(
                "UPDATE tidemark_jobs SET source = $2, kind = $3, status = $4, created_s = $5, created_ns = $6, \
                 record = $7::text::jsonb WHERE id = $1",
                &[&job.id, &job.source, &job.kind.as_str(), &status, &s, &ns, &record],
            )
        })?;
        if updated == 0 { Err(unknown_job(&job.id)) } else { Ok(()) }
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, CatalogError> {
        let row = self.with_client(|c| c.query_opt("SELECT record::text FROM tidemark_jobs WHERE id = $1", &[&id]))?;
        row.map(|row| from_json(&format!("job {id}"), row.get(0))).transpose()
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, CatalogError> {
        let kind = filter.kind.map(|k| k.as_str());
        let status = filter.status.iter().map(spelling).collect::<Result<Vec<String>, _>>()?;
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let rows = self.with_client(|c| {
            c.query(
                "SELECT record::text FROM tidemark_jobs \
                 WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR kind = $2) \
                 AND (cardinality($3::text[]) = 0 OR status = ANY($3)) \
                 ORDER BY created_s DESC, created_ns DESC, id COLLATE \"C\" DESC LIMIT $4",
                &[&filter.source, &kind, &status, &limit],
            )
        })?;
        rows.iter().map(|row| from_json("a job", row.get(0))).collect()
    }

    fn append_log(&self, job_id: &str, line: &JobLogLine) -> Result<(), CatalogError> {
        let line = to_json(line)?;
        self.with_client(|c| {
            c.execute("INSERT INTO tidemark_job_logs (job_id, line) VALUES ($1, $2::text::jsonb)", &[&job_id, &line])
        })?;
        Ok(())
    }

    fn job_log(&self, job_id: &str) -> Result<Vec<JobLogLine>, CatalogError> {
        let rows = self.with_client(|c| {
            c.query("SELECT line::text FROM tidemark_job_logs WHERE job_id = $1 ORDER BY seq", &[&job_id])
        })?;
        rows.iter().map(|row| from_json(&format!("a log line of job {job_id}"), row.get(0))).collect()
    }

    fn claim(&self, run: &RunKey, owner: &str, until: Timestamp, now: Timestamp) -> Result<Claim, CatalogError> {
        let (sched_s, sched_ns) = split(run.scheduled_for);
        let ((until_s, until_ns), (now_s, now_ns)) = (split(until), split(now));
        let kind = run.kind.as_str();
        // `None`: granted; else the row that refused the claim.
        let refused = self.with_client(|c| {
            let granted = c.query_opt(
                CLAIM,
                &[&run.source, &kind, &sched_s, &sched_ns, &owner, &until_s, &until_ns, &now_s, &now_ns],
            )?;
            if granted.is_some() {
                return Ok(None);
            }
            // Refused: the run's row exists (rows are never deleted), and this new statement
            // sees it as committed.
            c.query_one(
                "SELECT owner, until_s, until_ns, done FROM tidemark_runs \
                 WHERE source = $1 AND kind = $2 AND scheduled_s = $3 AND scheduled_ns = $4",
                &[&run.source, &kind, &sched_s, &sched_ns],
            )
            .map(Some)
        })?;
        let Some(row) = refused else { return Ok(Claim::Granted) };
        if row.get::<_, bool>(3) {
            return Ok(Claim::Done);
        }
        let until = match (row.get::<_, Option<i64>>(1), row.get::<_, Option<i32>>(2)) {
            (Some(s), Some(ns)) => join("a lease", s, ns)?,
            _ => now,
        };
        Ok(Claim::HeldBy { owner: row.get(0), until })
    }

    fn complete(&self, run: &RunKey, owner: &str) -> Result<(), CatalogError> {
        let (s, ns) = split(run.scheduled_for);
        self.with_client(|c| {
            c.execute(
                "INSERT INTO tidemark_runs (source, kind, scheduled_s, scheduled_ns, owner, done) \
                 VALUES ($1, $2, $3, $4, $5, true) \
                 ON CONFLICT (source, kind, scheduled_s, scheduled_ns) DO UPDATE SET owner = excluded.owner, done = true",
                &[&run.source, &run.kind.as_str(), &s, &ns, &owner],
            )
        })?;
        Ok(())
    }

    fn use_link(&self, nonce: &str, at: Timestamp) -> Result<bool, CatalogError> {
        let (s, ns) = split(at);
        let inserted = self.with_client(|c| {
            c.execute(
                "INSERT INTO tidemark_link_uses (nonce, used_s, used_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&nonce, &s, &ns],
            )
        })?;
        Ok(inserted == 1)
    }
}
