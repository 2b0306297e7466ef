//! The one error type of this crate.

use tidemark_repo::RepoError;
use tidemark_source_fs::FsError;
use tidemark_storage::{ErrorKind, StorageError};

/// Everything bucket backup, restore and find report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectsError {
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The bucket (source or target) failed, or its URL is invalid.
    #[error("{0}")]
    Bucket(#[from] StorageError),
    /// An invalid include or exclude pattern.
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        message: String,
    },
    /// A restore target directory is unusable.
    #[error("{path}: {message}")]
    Target {
        /// The directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No snapshot of the source at or before the requested time.
    #[error("no snapshot of {source_name} at or before {at}")]
    NoSnapshotAt {
        /// The source asked for.
        source_name: String,
        /// The time asked for.
        at: jiff::Timestamp,
    },
    /// Invalid argument or state.
    #[error("{0}")]
    Invalid(String),
}

impl ObjectsError {
    /// Whether retrying the whole operation later may succeed (network, throttling, 5xx).
    pub fn is_transient(&self) -> bool {
        let storage = match self {
            ObjectsError::Bucket(e) => e,
            ObjectsError::Repo(RepoError::Storage(e)) => e,
            _ => return false,
        };
        matches!(storage.kind(), ErrorKind::Transient | ErrorKind::Unreachable)
    }

    /// A one-line suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ObjectsError::Repo(e) => e.hint(),
            ObjectsError::Bucket(e) => Some(match e.kind() {
                ErrorKind::PermissionDenied => {
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy".into()
                }
                ErrorKind::NotFound => "check the bucket name, endpoint and region in the URL".into(),
                ErrorKind::Transient | ErrorKind::Unreachable => {
                    "check the endpoint and network, then run again; nothing was committed".into()
                }
                _ => return None,
            }),
            ObjectsError::NoSnapshotAt { .. } => {
                Some("list the source's snapshots with `tidemark snapshots --source ...`".into())
            }
            _ => None,
        }
    }
}

impl From<FsError> for ObjectsError {
    fn from(e: FsError) -> Self {
        match e {
            FsError::Repo(r) => ObjectsError::Repo(r),
            FsError::Pattern { pattern, message } => ObjectsError::Pattern { pattern, message },
            other => ObjectsError::Invalid(other.to_string()),
        }
    }
}
