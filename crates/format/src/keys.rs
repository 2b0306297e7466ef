//! Master keys, user keys and key wrapping.

use serde::{Deserialize, Serialize};

use zeroize::Zeroize;

use crate::{FormatError, Id, ObjectType};

/// The repository master key: a data key for sealing and an id key for chunk ids.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// AEAD root key.
    pub data: [u8; 32],
    /// BLAKE3 key for chunk ids.
    pub id: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Build from 64 random bytes: data key first, id key second.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        let mut data = [0u8; 32];
        let mut id = [0u8; 32];
        data.copy_from_slice(&bytes[..32]);
        id.copy_from_slice(&bytes[32..]);
        MasterKey { data, id }
    }

    /// Keyed BLAKE3 of a chunk's plaintext: the chunk id.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// Default for new keys: 64 MiB, 3 iterations, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams { m_kib: 64 * 1024, t: 3, p: 1 };
    /// Largest accepted from a repository: 2 GiB, 20 iterations, 16 lanes.
    pub const MAX: KdfParams = KdfParams { m_kib: 2 * 1024 * 1024, t: 20, p: 16 };
}

/// Shortest accepted salt for password derivation.
pub const MIN_SALT_LEN: usize = 16;
/// Shortest accepted key file.
pub const MIN_KEYFILE_LEN: usize = 32;
/// BLAKE3 `derive_key` context for key files. DO NOT CHANGE.
pub const KEYFILE_CONTEXT: &str = "tidemark 2026 key file v1";

/// A key derived from what the user holds; it only opens key files. Zeroized on drop.
pub struct UserKey(pub(crate) [u8; 32]);

impl Drop for UserKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)")
    }
}

/// Derive a user key from a password (Argon2id); refuses parameters above [`KdfParams::MAX`] or
/// below the Argon2 minimums.
///
/// Argon2id, version 0x13, 32-byte output, no secret or associated data. Parameters above the caps
/// give [`FormatError::KdfParamsTooLarge`] before anything is allocated; salts shorter than
/// [`MIN_SALT_LEN`] or parameters below the Argon2 minimums (`t >= 1`, `p >= 1`, `m_kib >= 8 * p`)
/// give [`FormatError::Corrupt`].
pub fn derive_from_password(password: &[u8], salt: &[u8], params: &KdfParams) -> Result<UserKey, FormatError> {
    let max = KdfParams::MAX;
    if params.m_kib > max.m_kib || params.t > max.t || params.p > max.p {
        return Err(FormatError::KdfParamsTooLarge(format!(
            "m={} KiB, t={}, p={} (maximum m={} KiB, t={}, p={})",
            params.m_kib, params.t, params.p, max.m_kib, max.t, max.p
        )));
    }
    let corrupt = |detail: String| FormatError::Corrupt { what: "key derivation parameters", detail };
    if salt.len() < MIN_SALT_LEN {
        return Err(corrupt(format!("salt of {} bytes, at least {MIN_SALT_LEN} required", salt.len())));
    }
    let argon_params = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| corrupt(format!("m={} KiB, t={}, p={}: {e}", params.m_kib, params.t, params.p)))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = [0u8; 32];
    argon.hash_password_into(password, salt, &mut out).map_err(|e| corrupt(format!("argon2id failed: {e}")))?;
    Ok(UserKey(out))
}

/// Derive a user key from a key file's contents (at least 32 bytes, else an error).
///
/// The user key is `BLAKE3.derive_key("tidemark 2026 key file v1", contents)`. Shorter files give
/// [`FormatError::KeyFileTooShort`].
pub fn derive_from_keyfile(contents: &[u8]) -> Result<UserKey, FormatError> {
    if contents.len() < MIN_KEYFILE_LEN {
        return Err(FormatError::KeyFileTooShort { len: contents.len() });
    }
    Ok(UserKey(blake3::derive_key(KEYFILE_CONTEXT, contents)))
}

/// Seal the master key under a user key, bound to the key file's id.
///
/// Plaintext: data key (32 bytes) || id key (32 bytes), sealed as [`ObjectType::Key`] with `key_id`;
/// the result is 104 bytes.
pub fn wrap_master_key(user: &UserKey, master: &MasterKey, key_id: &Id, nonce: &[u8; 24]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(24 + 64 + crate::aead::TAG_LEN);
    buf.extend_from_slice(nonce);
    buf.extend_from_slice(&master.data);
    buf.extend_from_slice(&master.id);
    crate::aead::seal_in_place(&user.0, ObjectType::Key, key_id, &mut buf);
    buf
}

/// Open a wrapped master key; [`FormatError::WrongKey`] when the user key does not fit.
pub fn unwrap_master_key(user: &UserKey, key_id: &Id, sealed: &[u8]) -> Result<MasterKey, FormatError> {
    let mut plain = crate::aead::open(&user.0, ObjectType::Key, key_id, sealed).map_err(|_| FormatError::WrongKey)?;
    let result = match <[u8; 64]>::try_from(plain.as_slice()) {
        Ok(mut bytes) => {
            let key = MasterKey::from_bytes(bytes);
            bytes.zeroize();
            Ok(key)
        }
        Err(_) => Err(FormatError::Corrupt {
            what: "key file",
            detail: format!("wrapped master key of {} bytes, expected 64", plain.len()),
        }),
    };
    plain.zeroize();
    result
}
