//! The token file: `tokens.json` in the state directory, holding only the SHA-256 of each
//! bearer token (see [`tidemark_service_core::auth`]).
//!
//! ```json
//! {"version":1,"tokens":[{"name":"ci","role":"operator","hash":"…64 hex…","created":"2026-01-10T19:30:00Z"}]}
//! ```
//!
//! The file is written whole to a temporary file (mode 0600), flushed to disk and renamed over
//! the old one, under an exclusive lock on `tokens.lock`, so that two `tidemark token create`
//! runs never lose each other's token and a running daemon never reads half a file. The daemon
//! notices a new file on the next request (see [`TokenCache`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_service_core::{Role, TokenRecord, TokenStore, generate_token};

/// The token file's name in the state directory.
pub const TOKENS_FILE: &str = "tokens.json";
const LOCK_FILE: &str = "tokens.lock";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

/// Creates a token named `name` with `role`, stores its hash in `state_dir/tokens.json` and
/// returns the token itself, which is shown once and kept nowhere. A token of the same name is
/// replaced (rotated): the old one stops working.
pub fn create(state_dir: &Path, name: &str, role: Role) -> anyhow::Result<String> {
    check_name(name)?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let lock = lock(state_dir)?;
    let mut store = load(state_dir)?;
    let (token, record) = generate_token(&mut rand::rng(), name, role, Timestamp::now());
    store.insert(record);
    write(state_dir, &store)?;
    drop(lock);
    audit_change(state_dir, "token create", &format!("token {name} ({})", role.as_str()))?;
    Ok(token)
}

/// Removes the token named `name` from `state_dir/tokens.json`; a running daemon refuses it
/// from its next request on. Returns whether there was such a token.
pub fn revoke(state_dir: &Path, name: &str) -> anyhow::Result<bool> {
    if !state_dir.join(TOKENS_FILE).exists() {
        return Ok(false);
    }
    let lock = lock(state_dir)?;
    let mut store = load(state_dir)?;
    let removed = store.remove(name).is_some();
    if removed {
        write(state_dir, &store)?;
    }
    drop(lock);
    if removed {
        audit_change(state_dir, "token revoke", &format!("token {name}"))?;
    }
    Ok(removed)
}

/// Records a change of who may call the API in the audit log, beside the daemon's own lines:
/// made on this host (the command line), so its address is the loopback one.
fn audit_change(state_dir: &Path, action: &str, target: &str) -> anyhow::Result<()> {
    let entry = tidemark_service_core::AuditEntry {
        time: Timestamp::now(),
        actor: Some("cli".into()),
        role: Some(Role::Admin),
        ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        action: action.into(),
        target: target.into(),
        outcome: tidemark_service_core::audit::Outcome::Ok,
        detail: None,
    };
    crate::AuditLog::open(state_dir)?.append(&entry)
}

/// The exclusive lock on `state_dir/tokens.lock` that serializes changes to the token file.
fn lock(state_dir: &Path) -> anyhow::Result<File> {
    let lock_path = state_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}; check the state directory's permissions", lock_path.display()))?;
    lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
    Ok(lock)
}

/// Reads the tokens of `state_dir/tokens.json`; no file means no tokens.
pub fn load(state_dir: &Path) -> anyhow::Result<TokenStore> {
    let path = state_dir.join(TOKENS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenStore::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the token file {}", path.display())),
    };
    let file: TokenFile = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the token file {} is damaged; restore it from a backup, or move it aside and create \
             the tokens again with `tidemark token create`",
            path.display()
        )
    })?;
    if file.version != VERSION {
        bail!(
            "the token file {} has version {}, this tidemark reads version {VERSION}; use the tidemark that wrote it",
            path.display(),
            file.version
        );
    }
    Ok(TokenStore::new(file.tokens))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if !fine {
        bail!("invalid token name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@', e.g. \"ci-deploy\"");
    }
    Ok(())
}

fn write(state_dir: &Path, store: &TokenStore) -> anyhow::Result<()> {
    let path = state_dir.join(TOKENS_FILE);
    let temporary = state_dir.join(format!("{TOKENS_FILE}.tmp"));
    let file = TokenFile { version: VERSION, tokens: store.records().to_vec() };
    let mut bytes = serde_json::to_vec_pretty(&file).context("cannot encode the token file")?;
    bytes.push(b'\n');
    let written = (|| {
        let mut out = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&temporary)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        File::open(state_dir)?.sync_all()
    })();
    written.with_context(|| format!("cannot write the token file {}; check the disk and permissions", path.display()))
}

/// The daemon's view of the token file, re-read whenever the file changes.
///
/// Each [`TokenCache::current`] costs one `stat` of the file; the file is read again only when
/// its inode, size or modification time differ from the last read, so a token created by
/// `tidemark token create` works on the running daemon at once.
#[derive(Debug)]
pub struct TokenCache {
    path: PathBuf,
    state_dir: PathBuf,
    cached: Mutex<Option<(Fingerprint, Arc<TokenStore>)>>,
}

type Fingerprint = Option<(u64, u64, i64, i64)>;

impl TokenCache {
    /// A cache of `state_dir/tokens.json`.
    pub fn new(state_dir: &Path) -> TokenCache {
        TokenCache { path: state_dir.join(TOKENS_FILE), state_dir: state_dir.to_path_buf(), cached: Mutex::new(None) }
    }

    /// The tokens as the file holds them now.
    pub fn current(&self) -> anyhow::Result<Arc<TokenStore>> {
        let fingerprint = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read the token file {}", self.path.display())),
        };
        let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((known, store)) = cached.as_ref()
            && *known == fingerprint
        {
            return Ok(store.clone());
        }
        let store = Arc::new(load(&self.state_dir)?);
        *cached = Some((fingerprint, store.clone()));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-deploy_1.x@host").is_ok());
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
