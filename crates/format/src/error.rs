use crate::{Id, ObjectType};

/// Everything that can go wrong decoding repository bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Authentication failed: wrong key, or the bytes were altered, swapped or replayed.
    #[error("{ty} {id} failed authentication (corrupted, tampered with, or stored under another name)")]
    Authentication {
        /// Expected type.
        ty: ObjectType,
        /// Expected id.
        id: Id,
    },
    /// A user key did not open a key file.
    #[error("wrong password or key file")]
    WrongKey,
    /// A blob decrypted but its plaintext hashes to another id.
    #[error("blob {expected} holds content of {actual}")]
    IdMismatch {
        /// Id it was stored under.
        expected: Id,
        /// Keyed hash of the plaintext.
        actual: Id,
    },
    /// Structurally invalid bytes.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A string that is not 64 hex digits.
    #[error("invalid id {0:?}: expected 64 hex digits")]
    InvalidId(String),
    /// Key-derivation parameters beyond the caps (a hostile repository could make us allocate).
    #[error("key derivation parameters {0} exceed the allowed maximum")]
    KdfParamsTooLarge(String),
    /// An object of a newer format.
    #[error("repository format version {found} is newer than this tidemark supports ({supported}); upgrade tidemark")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
        /// Newest version this code reads.
        supported: u32,
    },
    /// A key file holds fewer than [`crate::keys::MIN_KEYFILE_LEN`] bytes.
    #[error(
        "key file holds {len} bytes, at least 32 are required; create one with e.g. `head -c 64 /dev/urandom > FILE`"
    )]
    KeyFileTooShort {
        /// Its length.
        len: usize,
    },
    /// JSON (de)serialization.
    #[error("corrupt {what}: {source}")]
    Json {
        /// What was being decoded.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
}
