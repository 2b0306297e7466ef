//! Tidemark PostgreSQL source: a replication-protocol client that takes base backups and streams
//! WAL from a running cluster over the network, and the WAL segment helpers around it.
//!
//! It speaks the streaming replication protocol as `pg_basebackup` and `pg_receivewal` do, so it
//! needs a `REPLICATION` role and a `pg_hba.conf` `replication` line, never the data directory.
//! Frontend messages and SCRAM-SHA-256 come from the `postgres-protocol` crate; backend messages
//! are framed here and parsed by it (except `CopyBothResponse`, which it does not know).
//!
//! - [`ReplicationClient`]: connect (trust, password, MD5, SCRAM-SHA-256; TCP or Unix socket),
//!   [`identify_system`](ReplicationClient::identify_system),
//!   [`timeline_history`](ReplicationClient::timeline_history),
//!   [`create_physical_slot`](ReplicationClient::create_physical_slot) (idempotent),
//!   [`base_backup`](ReplicationClient::base_backup) into a [`BaseBackupSink`], member by member,
//!   and [`start_replication`](ReplicationClient::start_replication) into a [`WalStream`].
//! - [`Lsn`]: log sequence numbers and their `0/16B3748` text form.
//! - [`wal`]: segment and history file names, and the long page header that lets archive-push
//!   refuse a segment of another cluster.
//!
//! On top of the client, the protection of a cluster in a Tidemark repository:
//! - [`pg_backup`]: a base backup streamed into the repository as a snapshot ([`backup`]).
//! - [`archive::archive_push`] / [`archive::archive_get`]: the WAL archive behind `archive_command`
//!   and `restore_command`, with the per-source cluster identity ([`archive`]).
//! - [`pg_restore`]: the base backup a recovery target needs, written out with the recovery
//!   settings ([`restore`]).
//! - [`pg_stream`]: continuous WAL streaming through a replication slot into the same archive,
//!   the in-progress segment stored every second (or at every commit, as a synchronous standby)
//!   ([`receive`]).
//! - [`pg_verify`]: WAL continuity from every base backup to the newest archived segment, with
//!   every gap named; [`pg_verify_with`] also reads back and authenticates every archived file
//!   ([`verify`]).
//! - [`pg_forget`]: retention: the base backups a keep policy removes, then the WAL no retained
//!   backup needs, with `--keep-within` as a promise ([`retention`]).
//!
//! Synchronous, one command at a time per connection. No TLS yet (`sslmode=require` is
//! refused, not ignored).
//!
//! ```no_run
//! use tidemark_source_pg::{BaseBackupOptions, BaseBackupSink, Member, ArchiveInfo, PgError,
//!     ReplicationClient};
//!
//! struct Count(u64);
//! impl BaseBackupSink for Count {
//!     fn member(&mut self, _: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError> {
//!         self.0 += std::io::copy(member, &mut std::io::sink()).map_err(PgError::sink)?;
//!         Ok(())
//!     }
//! }
//!
//! let mut client = ReplicationClient::connect_str("host=db1 user=repl password=secret")?;
//! let system = client.identify_system()?;
//! let mut count = Count(0);
//! let backup = client.base_backup(&BaseBackupOptions::default(), &mut count)?;
//! println!("cluster {} backup {}..{}: {} bytes", system.system_identifier,
//!     backup.start_lsn, backup.end_lsn, count.0);
//! # Ok::<(), PgError>(())
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod backup;
mod basebackup;
mod client;
mod config;
mod conn;
mod error;
mod lsn;
pub mod partial;
pub mod receive;
pub mod restore;
pub mod retention;
mod stream;
pub mod verify;
pub mod wal;

pub use archive::{PushOutcome, WalRecord, archive_get, archive_push};
pub use backup::{PgBackupOptions, PgBackupOutcome, pg_backup};
pub use basebackup::{
    ArchiveInfo, BackupStart, BaseBackupInfo, BaseBackupOptions, BaseBackupSink, Member, MemberKind, Tablespace,
};
pub use client::{ReplicationClient, SlotCreated, SlotInfo, SystemIdentity, TimelineHistory};
pub use config::ConnectConfig;
pub use conn::ResultSet;
pub use error::{ErrorKind, PgError};
pub use lsn::Lsn;
pub use receive::{PgStreamOptions, PgStreamOutcome, pg_stream};
pub use restore::{PgRestoreOptions, PgRestoreOutcome, RecoveryTarget, TargetAction, pg_restore};
pub use retention::{PgForgetOptions, PgForgetOutcome, RetentionPlan, pg_forget, plan_retention};
pub use stream::{WalMessage, WalStream};
pub use verify::{
    BackupPoint, BackupVerdict, DamagedWal, VerifyOptions, VerifyReport, pg_verify, pg_verify_with, verify_plan,
};
