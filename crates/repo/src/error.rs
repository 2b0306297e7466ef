use tidemark_format::{FormatError, Id};
use tidemark_storage::{ErrorKind, StorageError};

/// Result of repository operations.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Everything the engine reports. User errors carry a hint (see [`RepoError::hint`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// No repository at the location.
    #[error("no repository at {0}")]
    NoRepository(String),
    /// `init` on a location that already holds one.
    #[error("a repository already exists at {0}")]
    AlreadyInitialized(String),
    /// The password or key file matches no key.
    #[error("wrong password or key file: no key in {0} opens with it")]
    WrongPassword(String),
    /// A repository written by a newer tidemark.
    #[error("repository format version {found} is newer than this tidemark supports ({supported})")]
    NewerVersion {
        /// Version found.
        found: u32,
        /// Newest supported.
        supported: u32,
    },
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Bytes did not decode.
    #[error("{context}: {source}")]
    Format {
        /// What was being read.
        context: String,
        /// The codec error.
        source: FormatError,
    },
    /// A blob the index or a tree names is not in any pack.
    #[error("blob {0} is not in the repository index")]
    MissingBlob(Id),
    /// A snapshot reference matched nothing.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// A snapshot id prefix matched more than one.
    #[error("snapshot prefix {0:?} is ambiguous")]
    AmbiguousSnapshot(String),
    /// Another process holds a conflicting lock.
    #[error("repository is locked by {holder}")]
    Locked {
        /// Who holds it, as text (`exclusive lock by pid 12 on host since T`).
        holder: String,
    },
    /// Our lock expired or was removed while we ran; nothing further was written.
    #[error("lost the repository lock ({0}); stopped before writing more")]
    LockLost(String),
    /// A key operation that is not allowed.
    #[error("{0}")]
    Key(String),
    /// Invalid argument or state.
    #[error("{0}")]
    Invalid(String),
    /// Reading the source failed (the file, not the repository): the caller may skip the file.
    #[error("read error: {0}")]
    SourceRead(#[source] std::io::Error),
    /// Operation aborted by the caller.
    #[error("interrupted")]
    Interrupted,
}

impl RepoError {
    pub(crate) fn format(context: impl Into<String>, source: FormatError) -> Self {
        RepoError::Format { context: context.into(), source }
    }

    /// A one-line suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RepoError::NoRepository(_) => "check --repo / TIDEMARK_REPOSITORY, or create one with `tidemark init`".into(),
            RepoError::WrongPassword(_) => "check --password-file / TIDEMARK_PASSWORD_FILE / TIDEMARK_PASSWORD".into(),
            RepoError::NewerVersion { .. } => "upgrade tidemark to read this repository".into(),
            RepoError::Locked { .. } => "wait for the other operation, or if its process is gone, retry after the lock expires (30 minutes without refresh)".into(),
            RepoError::LockLost(_) => "the operation was paused or cut off from storage for longer than the lock lifetime; run it again".into(),
            RepoError::SnapshotNotFound(_) => "list snapshots with `tidemark snapshots`; use `latest` or an id prefix".into(),
            RepoError::AmbiguousSnapshot(_) => "give more characters of the snapshot id".into(),
            RepoError::MissingBlob(_) => "run `tidemark check` to see which snapshots are affected".into(),
            RepoError::Format { .. } => "run `tidemark check --read-data` to find damaged objects".into(),
            RepoError::Storage(e) => match e.kind() {
                ErrorKind::Unreachable | ErrorKind::Transient => "check the endpoint, network and credentials; nothing was lost".into(),
                ErrorKind::StorageFull => "free space on the repository storage, then run the operation again; nothing was lost".into(),
                ErrorKind::PermissionDenied => "check the credentials and permissions for the repository storage".into(),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Whether the failure is the user's to fix (no internal bug): used for exit codes.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, RepoError::Format { .. } | RepoError::MissingBlob(_))
    }
}
