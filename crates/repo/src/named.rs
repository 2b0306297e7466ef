//! Named objects: small sealed JSON records stored under a name a source chooses
//! (`named/<namespace>/<name>`), created once and never overwritten. PostgreSQL WAL segment records
//! live here; their data is stored as ordinary blobs through an [`crate::Archiver`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidemark_format::{Id, ObjectType, object};
use tidemark_storage::ErrorKind;

use crate::repository::random_bytes;
use crate::{RepoError, Repository, Result};

/// Prefix of named objects.
pub const NAMED: &str = "named/";

fn check_component(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\0']) {
        return Err(RepoError::Invalid(format!("invalid {what} {s:?} for a named object")));
    }
    Ok(())
}

/// What [`Repository::put_named`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutNamed {
    /// The object was created.
    Created,
    /// An object with this name and an equal value already existed (nothing written).
    AlreadyIdentical,
}

impl Repository {
    /// The id bound into the seal of `namespace/name`.
    pub fn named_id(&self, namespace: &str, name: &str) -> Id {
        let mut input = Vec::with_capacity(24 + namespace.len() + name.len());
        input.extend_from_slice(b"tidemark named v1\0");
        input.extend_from_slice(namespace.as_bytes());
        input.push(0);
        input.extend_from_slice(name.as_bytes());
        self.master_key().chunk_id(&input)
    }

    fn named_key(namespace: &str, name: &str) -> String {
        format!("{NAMED}{namespace}/{name}")
    }

    /// Store `value` under `namespace/name`, create-only. An existing object with an equal value is
    /// success ([`PutNamed::AlreadyIdentical`]); a different value is an error and nothing changes.
    pub fn put_named<T: Serialize + DeserializeOwned + PartialEq>(
        &self,
        namespace: &str,
        name: &str,
        value: &T,
    ) -> Result<PutNamed> {
        check_component("namespace", namespace)?;
        check_component("name", name)?;
        let id = self.named_id(namespace, name);
        let sealed = object::encode_json(self.master_key(), ObjectType::Named, &id, value, &random_bytes());
        match self.storage().put(&Self::named_key(namespace, name), &sealed) {
            Ok(()) => Ok(PutNamed::Created),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => match self.get_named::<T>(namespace, name)? {
                Some(existing) if existing == *value => Ok(PutNamed::AlreadyIdentical),
                _ => Err(RepoError::Invalid(format!(
                    "{namespace}/{name} already exists in the repository with different content; refusing to overwrite it"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The value under `namespace/name`, if any.
    pub fn get_named<T: DeserializeOwned>(&self, namespace: &str, name: &str) -> Result<Option<T>> {
        check_component("namespace", namespace)?;
        check_component("name", name)?;
        let sealed = match self.storage().get(&Self::named_key(namespace, name)) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let id = self.named_id(namespace, name);
        object::decode_json(self.master_key(), ObjectType::Named, &id, &sealed)
            .map(Some)
            .map_err(|e| RepoError::format(format!("named object {namespace}/{name}"), e))
    }

    /// Names in a namespace, sorted (a listing error is an error, never a short list).
    pub fn list_named(&self, namespace: &str) -> Result<Vec<String>> {
        check_component("namespace", namespace)?;
        let prefix = format!("{NAMED}{namespace}/");
        let mut names: Vec<String> = self
            .storage()
            .list(&prefix)?
            .into_iter()
            .filter_map(|e| e.key.strip_prefix(&prefix).map(str::to_string))
            .filter(|n| !n.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Remove a named object (retention of the source that owns the namespace).
    pub fn delete_named(&self, namespace: &str, name: &str) -> Result<()> {
        check_component("namespace", namespace)?;
        check_component("name", name)?;
        self.storage().delete(&Self::named_key(namespace, name))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidemark_format::keys::KdfParams;
    use tidemark_storage::MemoryStorage;

    use super::*;
    use crate::{Credential, InitOptions};

    fn repo() -> (MemoryStorage, Repository) {
        let mem = MemoryStorage::new();
        let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
        let repo = Repository::init(Arc::new(mem.clone()), &Credential::Password(b"pw".to_vec()), &opts).unwrap();
        (mem, repo)
    }

    #[test]
    fn create_only_identical_again_is_fine_different_is_refused() {
        let (_mem, repo) = repo();
        let a = vec!["x".to_string()];
        assert_eq!(repo.put_named("wal", "000000010000000000000001", &a).unwrap(), PutNamed::Created);
        assert_eq!(repo.put_named("wal", "000000010000000000000001", &a).unwrap(), PutNamed::AlreadyIdentical);
        let err = repo.put_named("wal", "000000010000000000000001", &vec!["y".to_string()]).unwrap_err();
        assert!(err.to_string().contains("different content"), "{err}");
        assert_eq!(repo.get_named::<Vec<String>>("wal", "000000010000000000000001").unwrap(), Some(a));
        assert_eq!(repo.get_named::<Vec<String>>("wal", "missing").unwrap(), None);
        assert_eq!(repo.list_named("wal").unwrap(), vec!["000000010000000000000001".to_string()]);
        assert!(repo.put_named("wal", "../x", &1u32).is_err());
    }

    #[test]
    fn a_named_object_moved_to_another_name_fails_authentication() {
        let (mem, repo) = repo();
        repo.put_named("wal", "a", &1u32).unwrap();
        let bytes = mem.raw("named/wal/a").unwrap();
        mem.insert_raw("named/wal/b", bytes);
        assert!(repo.get_named::<u32>("wal", "b").is_err());
    }
}
