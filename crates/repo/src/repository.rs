//! Opening and creating repositories, and reading and writing their sealed objects.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidemark_format::chunker::ChunkerParams;
use tidemark_format::keys::{self, KdfParams};
use tidemark_format::objects::{Kdf, KeyFile, RepoConfig, RepoMarker};
use tidemark_format::pack::BlobType;
use tidemark_format::{FORMAT_VERSION, Id, MasterKey, ObjectType, object};
use tidemark_storage::{ErrorKind, Storage};

use crate::index::MasterIndex;
use crate::{RepoError, Result};

/// Storage key of the plaintext marker.
pub const CONFIG_KEY: &str = "config";
/// Storage key of the sealed config.
pub const SEALED_CONFIG_KEY: &str = "config.sealed";
/// Prefix of key files.
pub const KEYS: &str = "keys/";
/// Prefix of snapshots.
pub const SNAPSHOTS: &str = "snapshots/";
/// Prefix of index files.
pub const INDEX: &str = "index/";
/// Prefix of locks.
pub const LOCKS: &str = "locks/";
/// Prefix of packs.
pub const DATA: &str = "data/";

/// Storage key of a pack.
pub fn pack_key(id: &Id) -> String {
    let hex = id.to_hex();
    format!("{DATA}{}/{hex}", &hex[..2])
}

/// What the user holds to open a repository.
#[derive(Clone)]
pub enum Credential {
    /// A password (Argon2id).
    Password(Vec<u8>),
    /// The contents of a key file.
    KeyFile(Vec<u8>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(..)",
            Credential::KeyFile(_) => "Credential::KeyFile(..)",
        })
    }
}

/// Settings for a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// KDF cost for the first key.
    pub kdf: KdfParams,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// zstd level (0 = off).
    pub compression_level: i32,
    /// Share the chunk-id key and chunker parameters of another repository (so `copy` between
    /// them deduplicates): `init --copy-chunker-params-from`.
    pub shared_ids: Option<SharedIds>,
}

/// The chunk-id key and chunker parameters two repositories share for copies.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedIds {
    /// BLAKE3 key for chunk ids.
    pub id_key: [u8; 32],
    /// Chunker parameters.
    pub chunker: ChunkerParams,
}

impl std::fmt::Debug for SharedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIds").field("chunker", &self.chunker).finish_non_exhaustive()
    }
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { kdf: KdfParams::DEFAULT, pack_size: 16 * 1024 * 1024, compression_level: 1, shared_ids: None }
    }
}

/// Lock timing. Defaults: stale after 30 minutes, refreshed every 5.
#[derive(Debug, Clone, Copy)]
pub struct LockOptions {
    /// A lock not refreshed for this long is stale, and its holder must stop writing.
    pub lifetime: Duration,
    /// How often a holder refreshes.
    pub refresh: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions { lifetime: Duration::from_secs(30 * 60), refresh: Duration::from_secs(5 * 60) }
    }
}

pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) key: MasterKey,
    pub(crate) key_id: Id,
    pub(crate) config: RepoConfig,
    pub(crate) lock_options: LockOptions,
    pub(crate) index: RwLock<Option<Arc<MasterIndex>>>,
}

/// An open repository. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").field("location", &self.inner.storage.location()).finish()
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

pub(crate) fn random_id() -> Id {
    Id::from_bytes(random_bytes())
}

/// This machine's host name as recorded in snapshots and locks (`localhost` when unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The user name recorded in snapshots and locks (`$USER`, else `$LOGNAME`, else `unknown`).
pub fn username() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn whoami() -> (String, String) {
    (hostname(), username())
}

fn derive_user_key(cred: &Credential, kdf: &Kdf) -> Option<Result<keys::UserKey>> {
    match (cred, kdf) {
        (Credential::Password(pw), Kdf::Argon2id { params, salt }) => {
            Some(keys::derive_from_password(pw, salt, params).map_err(|e| RepoError::format("key file", e)))
        }
        (Credential::KeyFile(bytes), Kdf::Keyfile) => {
            Some(keys::derive_from_keyfile(bytes).map_err(|e| RepoError::Key(e.to_string())))
        }
        _ => None,
    }
}

pub(crate) fn make_key_file(
    cred: &Credential,
    master: &MasterKey,
    key_id: &Id,
    kdf_params: KdfParams,
) -> Result<KeyFile> {
    let (host, user) = whoami();
    let kdf = match cred {
        Credential::Password(_) => Kdf::Argon2id { params: kdf_params, salt: random_bytes::<16>().to_vec() },
        Credential::KeyFile(_) => Kdf::Keyfile,
    };
    let user_key = derive_user_key(cred, &kdf).expect("kdf matches credential")?;
    let data = keys::wrap_master_key(&user_key, master, key_id, &random_bytes());
    Ok(KeyFile { created: jiff::Timestamp::now(), host, username: user, kdf, data })
}

impl Repository {
    /// Create a repository at an empty location and open it with `cred`.
    pub fn init(storage: Arc<dyn Storage>, cred: &Credential, opts: &InitOptions) -> Result<Repository> {
        if storage.stat(CONFIG_KEY)?.is_some() {
            return Err(RepoError::AlreadyInitialized(storage.location()));
        }
        let mut master = MasterKey::from_bytes(random_bytes());
        if let Some(shared) = &opts.shared_ids {
            master.id = shared.id_key;
        }
        let repo_id = random_id();
        let key_id = random_id();
        let key_file = make_key_file(cred, &master, &key_id, opts.kdf)?;
        storage.put(&format!("{KEYS}{key_id}"), &serde_json::to_vec_pretty(&key_file).expect("serializable"))?;
        let seed = u64::from_le_bytes(random_bytes());
        let config = RepoConfig {
            version: FORMAT_VERSION,
            id: repo_id,
            chunker: opts.shared_ids.as_ref().map_or(ChunkerParams::with_seed(seed), |s| s.chunker),
            pack_size: opts.pack_size,
            compression_level: opts.compression_level,
        };
        let sealed = object::encode_json(&master, ObjectType::Config, &repo_id, &config, &random_bytes());
        storage.put(SEALED_CONFIG_KEY, &sealed)?;
        let marker = RepoMarker { format: "tidemark".into(), version: FORMAT_VERSION, id: repo_id };
        // The plaintext marker goes last: a location without it is not a repository yet.
        storage.put(CONFIG_KEY, &serde_json::to_vec_pretty(&marker).expect("serializable"))?;
        Ok(Repository::from_parts(storage, master, key_id, config))
    }

    fn from_parts(storage: Arc<dyn Storage>, key: MasterKey, key_id: Id, config: RepoConfig) -> Repository {
        Repository {
            inner: Arc::new(Inner {
                storage,
                key,
                key_id,
                config,
                lock_options: LockOptions::default(),
                index: RwLock::new(None),
            }),
        }
    }

    /// Read the plaintext marker: fails for a missing repository or a newer format.
    pub fn marker(storage: &dyn Storage) -> Result<RepoMarker> {
        let raw = match storage.get(CONFIG_KEY) {
            Ok(raw) => raw,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(RepoError::NoRepository(storage.location())),
            Err(e) => return Err(e.into()),
        };
        let marker: RepoMarker = serde_json::from_slice(&raw).map_err(|e| {
            RepoError::Invalid(format!("{}/config is not a tidemark repository config: {e}", storage.location()))
        })?;
        if marker.format != "tidemark" {
            return Err(RepoError::Invalid(format!(
                "{} holds a {:?} repository, not tidemark",
                storage.location(),
                marker.format
            )));
        }
        if marker.version > FORMAT_VERSION {
            return Err(RepoError::NewerVersion { found: marker.version, supported: FORMAT_VERSION });
        }
        Ok(marker)
    }

    /// Open a repository with the user's credential.
    pub fn open(storage: Arc<dyn Storage>, cred: &Credential) -> Result<Repository> {
        let marker = Self::marker(storage.as_ref())?;
        let mut found = None;
        for entry in storage.list(KEYS)? {
            let Some(key_id) = entry.key.strip_prefix(KEYS).and_then(|n| n.parse::<Id>().ok()) else { continue };
            let raw = storage.get(&entry.key)?;
            let Ok(key_file) = serde_json::from_slice::<KeyFile>(&raw) else { continue };
            let Some(user_key) = derive_user_key(cred, &key_file.kdf) else { continue };
            match keys::unwrap_master_key(&user_key?, &key_id, &key_file.data) {
                Ok(master) => {
                    found = Some((key_id, master));
                    break;
                }
                Err(tidemark_format::FormatError::WrongKey) => continue,
                Err(e) => return Err(RepoError::format(format!("key {key_id}"), e)),
            }
        }
        let Some((key_id, master)) = found else { return Err(RepoError::WrongPassword(storage.location())) };
        let sealed = storage.get(SEALED_CONFIG_KEY)?;
        let config: RepoConfig = object::decode_json(&master, ObjectType::Config, &marker.id, &sealed)
            .map_err(|e| RepoError::format("repository config", e))?;
        config.chunker.validate().map_err(|e| RepoError::format("repository config", e))?;
        if config.version != marker.version || config.id != marker.id {
            return Err(RepoError::Invalid("repository config does not match its marker (tampered with?)".into()));
        }
        Ok(Repository::from_parts(storage, master, key_id, config))
    }

    /// A new handle on the same repository with nothing cached (sees what others wrote since).
    pub fn fresh(&self) -> Repository {
        self.clone().with_lock_options(self.lock_options())
    }

    /// Same repository with other lock timing (tests, and the CLI's TIDEMARK_LOCK_LIFETIME).
    pub fn with_lock_options(self, lock_options: LockOptions) -> Repository {
        let inner = &self.inner;
        Repository {
            inner: Arc::new(Inner {
                storage: inner.storage.clone(),
                key: inner.key.clone(),
                key_id: inner.key_id,
                config: inner.config.clone(),
                lock_options,
                index: RwLock::new(None),
            }),
        }
    }

    /// This handle with `index` as its cached index (see [`Repository::index`]).
    pub(crate) fn with_cached_index(self, index: Arc<MasterIndex>) -> Repository {
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = Some(index);
        self
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The sealed config.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// What a repository created to receive copies from this one must share.
    pub fn shared_ids(&self) -> SharedIds {
        SharedIds { id_key: self.inner.key.id, chunker: self.inner.config.chunker }
    }

    /// The master key (for sources that seal their own objects).
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.key
    }

    /// Id of the key file this handle was opened with.
    pub fn key_id(&self) -> Id {
        self.inner.key_id
    }

    /// Lock timing in force.
    pub fn lock_options(&self) -> LockOptions {
        self.inner.lock_options
    }

    /// Seal and store a JSON object under `prefix` + a new random id.
    pub(crate) fn save_json<T: Serialize>(&self, ty: ObjectType, prefix: &str, value: &T) -> Result<Id> {
        let id = random_id();
        let sealed = object::encode_json(&self.inner.key, ty, &id, value, &random_bytes());
        self.inner.storage.put(&format!("{prefix}{id}"), &sealed)?;
        Ok(id)
    }

    /// Load and open a JSON object.
    pub(crate) fn load_json<T: DeserializeOwned>(&self, ty: ObjectType, prefix: &str, id: &Id) -> Result<T> {
        let sealed = self.inner.storage.get(&format!("{prefix}{id}"))?;
        object::decode_json(&self.inner.key, ty, id, &sealed).map_err(|e| RepoError::format(format!("{ty} {id}"), e))
    }

    /// Ids of all objects under a prefix (names that are not ids are skipped).
    pub(crate) fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self
            .inner
            .storage
            .list(prefix)?
            .into_iter()
            .filter_map(|e| e.key.strip_prefix(prefix).and_then(|n| n.parse().ok()))
            .collect())
    }

    /// The index of all blobs, loaded on first use and then cached for this handle (open a new
    /// handle to see what other writers added since).
    pub fn index(&self) -> Result<Arc<MasterIndex>> {
        if let Some(ix) = self.inner.index.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(ix.clone());
        }
        let present = crate::index::list_packs(self)?;
        let files = crate::index::load_index_files(self)?;
        let ix = Arc::new(MasterIndex::from_files_preferring(files, Some(&present)));
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = Some(ix.clone());
        Ok(ix)
    }

    /// Forget the cached index; the next read loads it again (done after every commit).
    pub fn refresh_index(&self) {
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Read a blob through the index, verified against its id.
    pub fn read_blob(&self, blob_type: BlobType, id: &Id) -> Result<Vec<u8>> {
        let index = self.index()?;
        let loc = index.get(id).ok_or(RepoError::MissingBlob(*id))?;
        let pack = index.pack(loc.pack);
        let sealed =
            self.inner.storage.get_range(&pack_key(&pack.id), loc.offset..loc.offset + u64::from(loc.length))?;
        object::decode_blob(&self.inner.key, blob_type.object_type(), id, &sealed)
            .map_err(|e| RepoError::format(format!("{} {} in pack {}", blob_type.object_type(), id, pack.id), e))
    }

    /// Load a directory tree.
    pub fn load_tree(&self, id: &Id) -> Result<tidemark_format::objects::Tree> {
        let raw = self.read_blob(BlobType::Tree, id)?;
        serde_json::from_slice(&raw).map_err(|e| {
            RepoError::format(format!("tree {id}"), tidemark_format::FormatError::Json { what: "tree", source: e })
        })
    }
}
