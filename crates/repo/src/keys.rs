//! Managing the user keys that wrap the master key: `key add|list|remove|passwd`.

use tidemark_format::Id;
use tidemark_format::keys::KdfParams;
use tidemark_format::objects::KeyFile;

use crate::repository::{Credential, KEYS, make_key_file, random_id};
use crate::{RepoError, Repository, Result};

/// One key as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub id: Id,
    /// Whether this handle was opened with it.
    pub current: bool,
    /// Who added it.
    pub username: String,
    /// Where.
    pub host: String,
    /// When.
    pub created: jiff::Timestamp,
    /// `argon2id` or `keyfile`.
    pub kind: String,
}

impl Repository {
    /// All keys.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for e in self.storage().list(KEYS)? {
            let Some(id) = e.key.strip_prefix(KEYS).and_then(|n| n.parse::<Id>().ok()) else { continue };
            let raw = self.storage().get(&e.key)?;
            let kf: KeyFile = serde_json::from_slice(&raw)
                .map_err(|err| RepoError::Invalid(format!("key file {id} is not valid JSON: {err}")))?;
            out.push(KeyInfo {
                id,
                current: id == self.key_id(),
                username: kf.username,
                host: kf.host,
                created: kf.created,
                kind: match kf.kdf {
                    tidemark_format::objects::Kdf::Argon2id { .. } => "argon2id".into(),
                    tidemark_format::objects::Kdf::Keyfile => "keyfile".into(),
                },
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Add a key for a new credential; returns its id.
    pub fn add_key(&self, cred: &Credential, kdf: KdfParams) -> Result<Id> {
        let id = random_id();
        let kf = make_key_file(cred, self.master_key(), &id, kdf)?;
        self.storage().put(&format!("{KEYS}{id}"), &serde_json::to_vec_pretty(&kf).expect("serializable"))?;
        Ok(id)
    }

    /// Remove a key by id or unique prefix. The key this handle was opened with cannot be removed
    /// (use `passwd`), and the last key never.
    pub fn remove_key(&self, prefix: &str) -> Result<Id> {
        let keys = self.list_keys()?;
        let matching: Vec<&crate::keys::KeyInfo> = keys.iter().filter(|k| k.id.to_hex().starts_with(prefix)).collect();
        let key = match matching.as_slice() {
            [k] => *k,
            [] => return Err(RepoError::Key(format!("no key matches {prefix:?}"))),
            _ => return Err(RepoError::Key(format!("key prefix {prefix:?} is ambiguous"))),
        };
        if key.current {
            return Err(RepoError::Key(
                "refusing to remove the key in use; open the repository with another key, or use `key passwd`".into(),
            ));
        }
        if keys.len() <= 1 {
            return Err(RepoError::Key("refusing to remove the last key".into()));
        }
        self.storage().delete(&format!("{KEYS}{}", key.id))?;
        Ok(key.id)
    }

    /// Replace the current key by one for `cred`: the new key is written before the old one goes.
    pub fn change_key(&self, cred: &Credential, kdf: KdfParams) -> Result<Id> {
        let new = self.add_key(cred, kdf)?;
        self.storage().delete(&format!("{KEYS}{}", self.key_id()))?;
        Ok(new)
    }
}
