//! Tidemark directory source: walk, back up and restore directory trees with path-escape guards.
//!
//! [`backup`] walks paths, skips files unchanged since the parent snapshot (size, mtime, ctime,
//! inode), stores the rest through an [`tidemark_repo::Archiver`], and commits a snapshot whose root
//! tree mirrors the absolute paths (as restic does). [`restore`] writes a snapshot's tree below a
//! target directory and refuses any name that would escape it.
//!
//! Module map: [`patterns`] (exclude/include globs), [`walk`] (metadata into nodes, the
//! [`Opener`] seam), `backup` (walker and reader threads), `restore` (planner, writer threads and
//! the path-escape guards).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidemark_repo::{NoProgress, Repository};
//! use tidemark_source_fs::{BackupOptions, RestoreOptions, backup, restore};
//! # fn demo(repo: &Repository) -> Result<(), tidemark_source_fs::FsError> {
//! let opts = BackupOptions { paths: vec!["/srv/data".into()], ..Default::default() };
//! let done = backup(repo, &opts, Arc::new(NoProgress))?;
//! let target = RestoreOptions { target: "/tmp/restored".into(), ..Default::default() };
//! let outcome = restore(repo, &done.snapshot, &target, Arc::new(NoProgress))?;
//! assert!(outcome.errors.is_empty());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backup;
mod direct;
pub mod patterns;
mod restore;
pub mod walk;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::Snapshot;
use tidemark_repo::{Progress, RepoError, Repository};

pub use backup::{KIND, READERS, backup_with_opener};
pub use patterns::Patterns;
pub use restore::{WRITERS, safe_name};
pub use walk::{Opener, SourceFile, SystemOpener};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A path given by the user is unusable.
    #[error("{path}: {message}")]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Restore refused to write outside or over existing data.
    #[error("{0}")]
    Refused(String),
    /// Invalid pattern.
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        message: String,
    },
}

/// A problem with one file that did not stop the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileWarning {
    /// The file.
    pub path: PathBuf,
    /// What happened (`unreadable: permission denied`, `changed while being read`, ...).
    pub message: String,
}

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Files and directories (made absolute).
    pub paths: Vec<PathBuf>,
    /// Glob patterns of paths to leave out (gitignore-like: `*.tmp`, `/abs/dir`, `cache/`).
    pub excludes: Vec<String>,
    /// Compare against this snapshot to skip unchanged files; `None` = look up the newest snapshot
    /// with the same host and paths.
    pub parent: Option<Id>,
    /// Force re-reading every file.
    pub force: bool,
    /// Host to record (defaults to this host when empty).
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Source name to record.
    pub source: Option<String>,
}

/// Result of a backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: Id,
    /// The snapshot (with summary).
    pub snapshot: Snapshot,
    /// Files skipped or suspicious; non-empty means exit code 3.
    pub warnings: Vec<FileWarning>,
}

/// Back up `opts.paths` into `repo`.
///
/// Files that cannot be read are left out and reported in [`BackupOutcome::warnings`] (and counted
/// in the summary's `errors`); repository errors stop the backup and commit nothing.
pub fn backup(repo: &Repository, opts: &BackupOptions, progress: Arc<dyn Progress>) -> Result<BackupOutcome, FsError> {
    backup_with_opener(repo, opts, progress, &SystemOpener)
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only paths matching one of these globs (and their parents/children); empty = all.
    pub includes: Vec<String>,
    /// Replace existing files.
    pub overwrite: bool,
}

/// Result of a restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreOutcome {
    /// Files and symlinks written.
    pub files: u64,
    /// Directories restored (created, or already present and used).
    pub dirs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files skipped because they existed and `overwrite` was off.
    pub skipped: u64,
    /// Files that could not be restored (damaged data, refused names); others still were.
    pub errors: Vec<FileWarning>,
}

/// Restore a snapshot's tree below `opts.target`.
///
/// Takes a shared repository lock. Files with damaged data, refused names and existing paths that
/// must not be replaced are reported in the outcome (by snapshot path, e.g. `/srv/data/x`) while
/// everything else is restored; only repository failures (storage unreachable, lock lost) stop the
/// restore with an error. Directory metadata is set only on directories the restore created (or on
/// every one with `overwrite`); FIFOs, sockets and devices are not recreated.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreOutcome, FsError> {
    restore::restore(repo, snapshot, opts, progress)
}

/// The first fatal (repository) error of any worker thread; once set, every thread stops.
#[derive(Default)]
pub(crate) struct Fatal {
    stop: AtomicBool,
    error: Mutex<Option<RepoError>>,
}

impl Fatal {
    pub(crate) fn set(&self, e: RepoError) {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        self.stop();
    }
    /// Stop the workers without an error of their own (the caller already has one).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub(crate) fn is_set(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    pub(crate) fn take(&self) -> RepoError {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or(RepoError::Interrupted)
    }
}
