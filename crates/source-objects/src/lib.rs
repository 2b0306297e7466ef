//! Tidemark object-storage source: snapshot S3 buckets incrementally, restore objects, and find files across snapshots.
//!
//! [`backup_bucket`] streams the listing of `s3://bucket/prefix` (keys arrive sorted, so each
//! directory of the key hierarchy is finished and its tree saved as soon as the listing leaves
//! it), reuses the parent snapshot's content for objects whose size, last-modified time and ETag
//! (when the listing has one) are unchanged, and fetches the rest in parallel into the repository. With `all_versions`, the
//! non-current versions of a versioned bucket are captured too, so an object created and deleted
//! between two runs is kept. [`restore_bucket`] writes a snapshot (or the objects matching
//! `includes`) into a bucket (keys, content, content-type, user metadata) or a directory.
//! [`find`] lists every snapshot holding a matching file; [`snapshot_at`] picks the newest
//! snapshot of a source at or before a time.
//!
//! Tree layout of a bucket snapshot (see [`names`] for the escaping rules):
//!
//! - the root tree is the key hierarchy below the prefix: `photos/2024/a.jpg` is the file
//!   `a.jpg` in the directories `photos` and `2024`;
//! - a file node has `size`, `mtime_ns` (the object's last-modified time), content blobs and
//!   `attrs`: `etag`, `content_type`, `user_metadata` (a JSON object) and, with `all_versions`,
//!   `version_id`;
//! - with `all_versions`, each directory holding objects with non-current versions gets a
//!   reserved subdirectory [`names::VERSIONS_DIR`] (`%versions`) with one file per captured
//!   version, named `NAME;v=VERSION`, carrying the same attrs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidemark_repo::{NoProgress, Repository};
//! use tidemark_source_objects::{BucketBackupOptions, BucketRestoreOptions, Target};
//! # fn demo(repo: &Repository) -> Result<(), tidemark_source_objects::ObjectsError> {
//! let opts = BucketBackupOptions::new("s3://photos?endpoint=http://127.0.0.1:9000&path_style=true");
//! let done = tidemark_source_objects::backup_bucket(repo, &opts, Arc::new(NoProgress))?;
//! let to = BucketRestoreOptions::new(Target::Dir("/tmp/photos".into()));
//! let restored = tidemark_source_objects::restore_bucket(repo, &done.snapshot, &to, Arc::new(NoProgress))?;
//! assert!(restored.errors.is_empty());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backup;
mod client;
mod error;
mod find;
pub mod names;
mod restore;
mod walker;

use std::path::PathBuf;

use serde::Serialize;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::Snapshot;

pub use backup::{KIND, backup_bucket};
pub use error::ObjectsError;
pub use find::{Found, find, snapshot_at};
pub use restore::restore_bucket;

/// Default number of objects fetched (or restored) at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// What to back up.
#[derive(Debug, Clone)]
pub struct BucketBackupOptions {
    /// `s3://bucket[/prefix][?endpoint=...&region=...&path_style=true]`; credentials from the
    /// AWS_* variables (see `tidemark_storage_s3::S3Config::from_url`).
    pub url: String,
    /// Objects fetched at once.
    pub concurrency: usize,
    /// Capture non-current versions too (versioned buckets).
    pub all_versions: bool,
    /// Access key id and secret for the source bucket; `None` = the AWS_* variables.
    pub credentials: Option<(String, String)>,
    /// Compare against this snapshot; `None` = the newest bucket snapshot of the same URL, host
    /// and source.
    pub parent: Option<Id>,
    /// Host to record (this host when empty).
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Source name to record.
    pub source: Option<String>,
    /// Only keys matching one of these patterns (tidemark-source-fs pattern syntax on `/KEY`);
    /// empty = all.
    pub includes: Vec<String>,
    /// Leave out keys matching one of these patterns.
    pub excludes: Vec<String>,
}

impl BucketBackupOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        BucketBackupOptions {
            url: url.into(),
            concurrency: DEFAULT_CONCURRENCY,
            all_versions: false,
            credentials: None,
            parent: None,
            host: String::new(),
            tags: Vec::new(),
            source: None,
            includes: Vec::new(),
            excludes: Vec::new(),
        }
    }
}

/// A problem with one object that did not stop the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectWarning {
    /// The key (relative to the snapshot's prefix).
    pub key: String,
    /// What happened.
    pub message: String,
}

/// Counters of one bucket backup beyond the snapshot summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BucketStats {
    /// Objects read from the bucket (GET requests that completed).
    pub objects_fetched: u64,
    /// Objects whose content was reused from the parent snapshot (no GET).
    pub objects_reused: u64,
    /// Bytes read from the bucket.
    pub bytes_fetched: u64,
    /// Non-current versions in the snapshot.
    pub versions: u64,
    /// Most fetches queued or running at once.
    pub max_pending_fetches: usize,
    /// Most directories held in memory at once (open along the current key, or waiting for
    /// fetches): bounded by depth and concurrency, not by the number of objects.
    pub max_dirs_held: usize,
}

/// Result of a bucket backup.
#[derive(Debug, Clone)]
pub struct BucketBackupOutcome {
    /// The new snapshot's id.
    pub id: Id,
    /// The snapshot (with summary).
    pub snapshot: Snapshot,
    /// Objects skipped or suspicious.
    pub warnings: Vec<ObjectWarning>,
    /// What the run fetched and reused.
    pub stats: BucketStats,
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A directory (created if missing): keys become paths below it, never outside.
    Dir(PathBuf),
    /// A bucket URL (`s3://bucket[/prefix]?...`): keys are written below its prefix.
    Bucket(String),
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct BucketRestoreOptions {
    /// Where to.
    pub target: Target,
    /// Only keys matching one of these patterns (tidemark-source-fs syntax on `/KEY`: `*.jpg`
    /// matches the name at any depth, `/photos/2024` anchors, `photos/` means a directory and all
    /// below); empty = all.
    pub includes: Vec<String>,
    /// Replace existing objects or files (otherwise they are skipped and counted).
    pub overwrite: bool,
    /// Also restore objects deleted before the snapshot whose versions it captured
    /// (`all_versions`): the newest captured version of each key without a current object.
    pub include_deleted: bool,
    /// Objects written at once.
    pub concurrency: usize,
    /// Access key id and secret for a target bucket; `None` = the AWS_* variables.
    pub credentials: Option<(String, String)>,
}

impl BucketRestoreOptions {
    /// Options for `target` with the defaults.
    pub fn new(target: Target) -> Self {
        BucketRestoreOptions {
            target,
            includes: Vec::new(),
            overwrite: false,
            include_deleted: false,
            concurrency: DEFAULT_CONCURRENCY,
            credentials: None,
        }
    }
}

/// Result of a restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BucketRestoreOutcome {
    /// Objects (or files) written.
    pub objects: u64,
    /// Directory markers written (bucket targets) or directories created (directory targets).
    pub markers: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Objects skipped because they existed and `overwrite` was off.
    pub skipped: u64,
    /// Objects that could not be restored; the others were.
    pub errors: Vec<ObjectWarning>,
}
