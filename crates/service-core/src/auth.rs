//! Bearer tokens and roles.
//!
//! `tidemark token create --name N --role R` prints a new token once; the daemon keeps only a
//! [`TokenRecord`] with the token's SHA-256. A request's `Authorization: Bearer <token>` is
//! checked with [`TokenStore::verify`] and its role with [`Role::allows`].
//!
//! # Why SHA-256 and not a password hash?
//!
//! A token is 32 bytes from a cryptographically secure generator: 256 bits of entropy. Guessing
//! one from its hash costs about 2^255 hash evaluations whether the hash is fast or slow, so a
//! slow password hash (Argon2, bcrypt) would add nothing but CPU time on every request. Slow
//! hashes exist for low-entropy secrets such as passwords, which these are not. The hash is kept
//! so that a leaked state directory does not leak usable tokens.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ServiceError;

/// Every token starts with this, so that secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "tdm_";

/// What a token may do. Ordered: each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: sources, snapshots, jobs, the policy, metrics.
    Viewer,
    /// Also act: trigger backups, restores and drills; create links.
    Operator,
    /// Also administer: tokens, configuration, deletions.
    Admin,
}

impl Role {
    /// Whether this role may do what `required` may.
    ///
    /// ```
    /// use tidemark_service_core::Role;
    /// assert!(Role::Admin.allows(Role::Operator));
    /// assert!(!Role::Viewer.allows(Role::Operator));
    /// ```
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    /// The lowercase name, as on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ServiceError;

    fn from_str(s: &str) -> Result<Role, ServiceError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(ServiceError::UnknownRole(other.to_string())),
        }
    }
}

/// What the daemon keeps of a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A name for people and the audit log (`--name`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lowercase hex SHA-256 of the whole token string.
    pub hash: String,
    /// When it was created.
    pub created: Timestamp,
}

/// Make a new token from 32 bytes of `rng`: the token string, shown once, and the record to
/// keep.
///
/// The generator must be cryptographically secure (the type requires [`CryptoRng`]); the
/// daemon passes the operating system's, tests a seeded one.
pub fn generate_token<R: CryptoRng + ?Sized>(
    rng: &mut R,
    name: &str,
    role: Role,
    created: Timestamp,
) -> (String, TokenRecord) {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let record = TokenRecord { name: name.to_string(), role, hash: hash_token(&token), created };
    (token, record)
}

/// The lowercase hex SHA-256 of a token string, as kept in [`TokenRecord::hash`].
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The tokens the daemon accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStore {
    records: Vec<TokenRecord>,
}

impl TokenStore {
    /// A store holding `records`.
    pub fn new(records: Vec<TokenRecord>) -> TokenStore {
        let mut store = TokenStore::default();
        for record in records {
            store.insert(record);
        }
        store
    }

    /// Add `record`, replacing (and returning) the one with the same name: creating a token
    /// under an existing name rotates it.
    pub fn insert(&mut self, record: TokenRecord) -> Option<TokenRecord> {
        match self.records.iter_mut().find(|r| r.name == record.name) {
            Some(existing) => Some(std::mem::replace(existing, record)),
            None => {
                self.records.push(record);
                None
            }
        }
    }

    /// Remove the token named `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Option<TokenRecord> {
        let index = self.records.iter().position(|r| r.name == name)?;
        Some(self.records.remove(index))
    }

    /// The records, in insertion order.
    pub fn records(&self) -> &[TokenRecord] {
        &self.records
    }

    /// The record of the `presented` token (the text after `Bearer `), if it is one of ours.
    ///
    /// Compares the presented token's hash with every record in constant time, so that neither
    /// the position of a match nor the length of a common prefix shows in the timing.
    pub fn verify(&self, presented: &str) -> Option<&TokenRecord> {
        let digest = Sha256::digest(presented.trim().as_bytes());
        let mut found = None;
        for record in &self.records {
            let mut stored = [0u8; 32];
            if hex::decode_to_slice(&record.hash, &mut stored).is_err() {
                continue;
            }
            if bool::from(stored[..].ct_eq(digest.as_slice())) && found.is_none() {
                found = Some(record);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("expected viewer, operator or admin"), "{err}");
    }

    #[test]
    fn hash_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
