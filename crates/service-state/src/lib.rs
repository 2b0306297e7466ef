//! Tidemark service state: the daemon's catalog (job history and logs, leases on scheduled runs,
//! link uses), embedded under `server.state_dir` or shared in PostgreSQL.
//!
//! Three implementations of [`tidemark_service_core::api::Catalog`] with one semantics, held by
//! one conformance test suite:
//! - [`EmbeddedCatalog`]: a redb database file, `STATE_DIR/catalog.redb`, fsync'd on every
//!   commit, locked by one daemon at a time (a second gets [`CatalogError::Locked`]).
//! - [`PgCatalog`]: PostgreSQL tables (`server.catalog`), shared by several daemons; a lease on
//!   each scheduled run makes it run exactly once.
//! - [`MemoryCatalog`]: the same in memory, for tests.
//!
//! [`open`] picks the catalog the config names, for the daemon [`daemon_name`] names.
//!
//! ```
//! use std::sync::Arc;
//! use tidemark_service_core::api::{Catalog, Claim, JobKind, RunKey};
//! use tidemark_service_state::MemoryCatalog;
//!
//! let catalog: Arc<dyn Catalog> = Arc::new(MemoryCatalog::new());
//! let run = RunKey {
//!     source: "uploads".into(),
//!     kind: JobKind::Backup,
//!     scheduled_for: "2026-01-10T19:30:00Z".parse().unwrap(),
//! };
//! let now = "2026-01-10T19:30:01Z".parse().unwrap();
//! let until = "2026-01-10T19:35:01Z".parse().unwrap();
//! assert_eq!(catalog.claim(&run, "host-1", until, now).unwrap(), Claim::Granted);
//! assert!(matches!(catalog.claim(&run, "host-2", until, now).unwrap(), Claim::HeldBy { .. }));
//! catalog.complete(&run, "host-1").unwrap();
//! assert_eq!(catalog.claim(&run, "host-1", until, now).unwrap(), Claim::Done);
//! ```
//!
//! # Semantics shared by every catalog
//!
//! - Jobs: `insert_job` refuses an id that exists, `update_job` one that does not (both as
//!   [`CatalogError::Conflict`]: the catalog is intact, the caller's view of it is not);
//!   `jobs` lists newest first by `created`, ties by id descending, then applies the limit.
//! - Logs: `append_log` keeps lines in the order appended, per job id.
//! - Leases: a lease claimed until `until` covers the instants before `until`; at `now >= until`
//!   another owner may take the run over. The holder renews by claiming again. `complete` makes a
//!   run `Done` for every owner, forever, whoever calls it.
//! - Links: the first `use_link` of a nonce returns `true`, every later one `false`.
//!
//! # Embedded schema (redb, `STATE_DIR/catalog.redb`)
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `"schema_version"` | `"1"` ([`SCHEMA_VERSION`]) |
//! | `jobs` | job id | the `JobRecord` as JSON (the API's spelling) |
//! | `jobs_by_created` | (`created` in ns since the epoch, job id) | `()`: the newest-first index |
//! | `job_logs` | (job id, sequence number from 0) | the `JobLogLine` as JSON |
//! | `runs` | `source NUL kind NUL scheduled_for` (RFC 3339) | the lease as JSON: `owner`, `until` (`null` when completed unclaimed), `done` |
//! | `link_uses` | nonce | the instant of its use (RFC 3339) |
//!
//! `STATE_DIR/catalog.holder` names the daemon that opened the file last (pid, host, owner, time),
//! for the [`CatalogError::Locked`] message.
//!
//! # PostgreSQL schema
//!
//! Created on first use inside one transaction under an advisory lock, so daemons starting at
//! once do not race. Instants are stored exactly as two columns, seconds since the Unix epoch and
//! nanoseconds (`to_timestamp(x_s)` reads them); records as `jsonb` in the API's spelling.
//!
//! ```sql
//! tidemark_catalog_meta (key text PRIMARY KEY, value text)   -- ('schema_version', '1')
//! tidemark_jobs (id text PRIMARY KEY, source text, kind text, status text,
//!                created_s bigint, created_ns integer, record jsonb)
//!     -- index tidemark_jobs_newest (created_s DESC, created_ns DESC, id COLLATE "C" DESC)
//! tidemark_job_logs (job_id text, seq bigint GENERATED ALWAYS AS IDENTITY, line jsonb,
//!                    PRIMARY KEY (job_id, seq))
//! tidemark_runs (source text, kind text, scheduled_s bigint, scheduled_ns integer,
//!                owner text, until_s bigint, until_ns integer, done boolean,
//!                PRIMARY KEY (source, kind, scheduled_s, scheduled_ns))
//! tidemark_link_uses (nonce text PRIMARY KEY, used_s bigint, used_ns integer)
//! ```
//!
//! A claim is one statement, so that of several daemons racing for a run exactly one wins:
//!
//! ```sql
//! INSERT INTO tidemark_runs AS r (...) VALUES (..., owner, until, false)
//! ON CONFLICT (source, kind, scheduled_s, scheduled_ns) DO UPDATE SET owner = ..., until = ...
//!     WHERE NOT r.done AND (r.owner = excluded.owner OR r.until <= now)
//! RETURNING owner                  -- a row: granted; none: held or done (read back to say which)
//! ```
//!
//! `complete` upserts `done = true`; `use_link` is `INSERT ... ON CONFLICT DO NOTHING` (one row
//! inserted: first use). Connections use no TLS yet: reach the database over a trusted network or
//! a Unix socket (`host=/run/postgresql`).
#![deny(missing_docs)]

mod embedded;
mod lease;
mod memory;
mod pg;

use std::sync::Arc;

pub use embedded::EmbeddedCatalog;
pub use memory::MemoryCatalog;
pub use pg::PgCatalog;
pub use tidemark_service_core::api::{Catalog, CatalogError};
use tidemark_service_core::config::Server;

/// The version of the catalog's schema (embedded tables and PostgreSQL tables alike).
pub const SCHEMA_VERSION: u32 = 1;

/// Opens the catalog `server` configures for the daemon `owner` (its name in leases and job
/// records, `server.name` or the host name): the PostgreSQL one when `server.catalog` names it,
/// else the embedded one under `server.state_dir`.
pub fn open(server: &Server, owner: &str) -> Result<Arc<dyn Catalog>, CatalogError> {
    match &server.catalog {
        Some(connection) => {
            Ok(Arc::new(PgCatalog::connect(connection, server.catalog_password_file.as_deref(), owner)?))
        }
        None => Ok(Arc::new(EmbeddedCatalog::open(&server.state_dir, owner)?)),
    }
}

/// This daemon's owner id for [`open`], leases and job records: `server.name`, else the host
/// name (`/proc/sys/kernel/hostname`, else `localhost`).
pub fn daemon_name(server: &Server) -> String {
    server.name.clone().unwrap_or_else(hostname)
}

/// This host's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn duplicate_job(id: &str) -> CatalogError {
    CatalogError::Conflict(format!(
        "job {id} is already in the catalog; a new job needs a new id (update_job changes one)"
    ))
}

fn unknown_job(id: &str) -> CatalogError {
    CatalogError::Conflict(format!("job {id} is not in the catalog; insert_job it first"))
}

#[cfg(test)]
mod tests {
    use tidemark_service_core::Config;

    #[test]
    fn the_daemon_is_named_by_the_config_else_after_its_host() {
        let named = Config::parse("[server]\nstate_dir = \"/s\"\nname = \"eu-1\"\n", "t").unwrap();
        assert_eq!(super::daemon_name(&named.server), "eu-1");
        let plain = Config::parse("[server]\nstate_dir = \"/s\"\n", "t").unwrap();
        assert_eq!(super::daemon_name(&plain.server), super::hostname());
        assert!(!super::hostname().is_empty());
    }
}
