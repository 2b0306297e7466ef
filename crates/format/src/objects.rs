//! The JSON objects of a repository: config, key files, snapshots, trees, index files and locks.
//!
//! Every object here is serialized with `serde_json`, then compressed and sealed by [`crate::object`]
//! (except key files, which carry their own sealed payload, and the plaintext [`RepoMarker`]).
//! Field names are part of the format: extend with optional fields, never rename.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Id;
use crate::chunker::ChunkerParams;
use crate::keys::KdfParams;
use crate::pack::BlobType;

/// The only plaintext object: `config` at the repository root. It says what the repository is before
/// any key is known, so that a newer format version is refused with a clear error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoMarker {
    /// Always `"tidemark"`.
    pub format: String,
    /// The format version, see [`crate::FORMAT_VERSION`].
    pub version: u32,
    /// The repository id (random, chosen at `init`).
    pub id: Id,
}

/// The sealed repository config (`keys`-independent settings), stored as `config.sealed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Must equal [`RepoMarker::version`]; a mismatch means the marker was tampered with.
    pub version: u32,
    /// Must equal [`RepoMarker::id`].
    pub id: Id,
    /// Content-defined chunking parameters, fixed for the life of the repository.
    pub chunker: ChunkerParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// zstd level used for new data (0 disables compression).
    pub compression_level: i32,
}

/// A key file under `keys/<id>`: the master key wrapped by one user key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// When the key was added.
    pub created: Timestamp,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub username: String,
    /// How the user key is derived.
    pub kdf: Kdf,
    /// The master key sealed under the user key (see [`crate::keys::wrap_master_key`]).
    #[serde(with = "crate::objects::b64")]
    pub data: Vec<u8>,
}

/// How a user key is derived from what the user holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Kdf {
    /// Argon2id over a password.
    Argon2id {
        /// Memory, time and parallelism cost.
        #[serde(flatten)]
        params: KdfParams,
        /// Random salt.
        #[serde(with = "crate::objects::b64")]
        salt: Vec<u8>,
    },
    /// BLAKE3 key derivation over the contents of a key file (which must hold at least 32 bytes).
    Keyfile,
}

/// A snapshot under `snapshots/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the snapshot was started.
    pub time: Timestamp,
    /// Host name the backup ran on (or `--host`).
    pub hostname: String,
    /// User that ran the backup.
    pub username: String,
    /// What kind of source: `directory`, `bucket`, `postgres`.
    pub kind: String,
    /// Name of the configured source, when taken by the service or `--source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The paths (or URLs) given to backup, absolute.
    pub paths: Vec<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot this one was compared against to skip unchanged files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Root tree blob.
    pub tree: Id,
    /// Program that wrote it, e.g. `tidemark 0.1.0`.
    pub program: String,
    /// Statistics of the run that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SnapshotSummary>,
    /// Source-specific metadata (PostgreSQL LSNs, bucket endpoint...). Kept as free-form strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// What a backup run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// When the run started.
    pub backup_start: Option<Timestamp>,
    /// When the snapshot was committed.
    pub backup_end: Option<Timestamp>,
    /// Files not in the parent.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (re-read).
    pub files_changed: u64,
    /// Files skipped as unchanged (not re-read).
    pub files_unmodified: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Files that could not be read (reported, not in the snapshot).
    pub errors: u64,
    /// Chunks that were new to the repository.
    pub blobs_added: u64,
    /// Uncompressed bytes of the new chunks.
    pub data_added: u64,
    /// Bytes the new chunks take in packs (compressed, sealed).
    pub data_added_packed: u64,
    /// Files in the snapshot.
    pub total_files: u64,
    /// Bytes of all files in the snapshot.
    pub total_bytes: u64,
}

/// The kind of a tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Regular file.
    File,
    /// Directory (has `subtree`).
    Dir,
    /// Symbolic link (has `link_target`).
    Symlink,
    /// FIFO, socket or device: metadata only.
    Other,
}

/// One entry of a directory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name (one path component). Names that are not UTF-8 are stored in `name_bytes` instead.
    pub name: String,
    /// Raw name bytes for names that are not valid UTF-8 (then `name` holds a lossy rendering).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::objects::b64_opt")]
    pub name_bytes: Option<Vec<u8>>,
    /// Kind of node.
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// Unix mode bits including the permission and set-id bits (not the file type bits).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Owner name, when resolvable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Group name, when resolvable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Inode number (used to detect unchanged files).
    pub inode: u64,
    /// Device id.
    pub device: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Data blobs that make up the content, in order (files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Tree blob of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Source-specific attributes (content-type, user metadata of an object...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

/// A directory listing, stored as a tree blob. Nodes are sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by `name`.
    pub nodes: Vec<Node>,
}

/// An index file under `index/<id>`: which blobs live in which packs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Index files this one replaces (written by prune); readers ignore superseded ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<Id>,
    /// Packs and their blobs.
    pub packs: Vec<IndexPack>,
}

/// One pack in an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack id (the BLAKE3 hash of the pack file).
    pub id: Id,
    /// Size of the pack file in bytes.
    pub size: u64,
    /// Blobs in the pack.
    pub blobs: Vec<IndexBlob>,
}

/// One blob in an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlob {
    /// Blob id (keyed hash of the plaintext).
    pub id: Id,
    /// Data or tree.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// A lock under `locks/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// When the lock was taken or last refreshed.
    pub time: Timestamp,
    /// Whether it is exclusive (prune) or shared (backup, check, restore...).
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// User of the holder.
    pub username: String,
    /// What the holder is doing (e.g. `backup`).
    pub operation: String,
}

pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod b64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom)).transpose()
    }
}
