//! Authenticated encryption of every object, bound to its type and id.
//!
//! Sealed layout: `nonce (24 bytes) || ciphertext || tag (16 bytes)`. A fresh per-object AES-256 key is
//! derived from the repository data key and the first 12 nonce bytes; the last 12 are the GCM nonce.
//! AAD = `"tidemark\x01" || type byte || id (32 bytes)`. See docs/FORMAT.md.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroize;

use crate::{FormatError, Id};

/// Bytes a sealed object adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Nonce length.
pub const NONCE_LEN: usize = 24;
/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// What an object is; its byte code is bound into the AAD. DO NOT CHANGE the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectType {
    /// `config.sealed`.
    Config = 1,
    /// The master key inside a key file.
    Key = 2,
    /// A snapshot.
    Snapshot = 3,
    /// An index file.
    Index = 4,
    /// A lock.
    Lock = 5,
    /// A pack's header.
    PackHeader = 6,
    /// A file-content chunk.
    DataBlob = 7,
    /// A directory tree.
    TreeBlob = 8,
    /// A named object (`named/<namespace>/<name>`: WAL segment records and other catalogs).
    Named = 9,
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ObjectType {
    /// The type byte bound into the AAD.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// A short lowercase name, as in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectType::Config => "config",
            ObjectType::Key => "key",
            ObjectType::Snapshot => "snapshot",
            ObjectType::Index => "index",
            ObjectType::Lock => "lock",
            ObjectType::PackHeader => "pack header",
            ObjectType::DataBlob => "data blob",
            ObjectType::TreeBlob => "tree blob",
            ObjectType::Named => "named object",
        }
    }
}

/// Domain separation prefix of the per-object subkey derivation. DO NOT CHANGE.
pub const SUBKEY_CONTEXT: &[u8] = b"tidemark-aead-subkey-v1";
/// Prefix of the associated data. DO NOT CHANGE.
pub const AAD_PREFIX: &[u8; 9] = b"tidemark\x01";

/// Length of the AAD: prefix, type byte, id.
const AAD_LEN: usize = 9 + 1 + 32;

fn aad(ty: ObjectType, id: &Id) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..9].copy_from_slice(AAD_PREFIX);
    aad[9] = ty.code();
    aad[10..].copy_from_slice(id.as_bytes());
    aad
}

/// The per-object AES-256-GCM key and GCM nonce for a 24-byte nonce.
fn object_key(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(SUBKEY_CONTEXT);
    hasher.update(&nonce[..12]);
    let mut subkey: [u8; 32] = *hasher.finalize().as_bytes();
    let unbound = UnboundKey::new(&AES_256_GCM, &subkey).expect("AES-256-GCM takes 32-byte keys");
    subkey.zeroize();
    let mut gcm_nonce = [0u8; 12];
    gcm_nonce.copy_from_slice(&nonce[12..]);
    (LessSafeKey::new(unbound), Nonce::assume_unique_for_key(gcm_nonce))
}

/// Seal in place: `buf` holds `nonce (24 bytes) || plaintext`; afterwards it holds the sealed object.
///
/// Lets callers (object encoding) build the plaintext right behind the nonce and seal without a copy.
pub(crate) fn seal_in_place(key: &[u8; 32], ty: ObjectType, id: &Id, buf: &mut Vec<u8>) {
    seal_in_place_from(key, ty, id, buf, 0);
}

/// [`seal_in_place`] for an object that starts at `start` in `buf` (sealing into a pack buffer).
pub(crate) fn seal_in_place_from(key: &[u8; 32], ty: ObjectType, id: &Id, buf: &mut Vec<u8>, start: usize) {
    assert!(buf.len() >= start + NONCE_LEN, "seal_in_place needs the nonce in front");
    let (nonce, body) = buf[start..].split_at_mut(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = (&*nonce).try_into().expect("split at NONCE_LEN");
    let (sealing, gcm_nonce) = object_key(key, nonce);
    let tag = sealing
        .seal_in_place_separate_tag(gcm_nonce, Aad::from(aad(ty, id)), body)
        .expect("plaintext below the AES-GCM limit of 64 GiB");
    buf.extend_from_slice(tag.as_ref());
}

/// Seal `plaintext` under `key` (a 32-byte data key) with the given 24-byte nonce, binding type and id.
///
/// The nonce must never repeat under one key; draw it from a CSPRNG. Copies the plaintext once.
///
/// # Panics
/// If `plaintext` exceeds the AES-GCM limit of 2^36 - 32 bytes.
pub fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], ty: ObjectType, id: &Id, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    seal_in_place(key, ty, id, &mut out);
    out
}

/// Open a sealed object; fails with [`FormatError::Authentication`] on any mismatch.
pub fn open(key: &[u8; 32], ty: ObjectType, id: &Id, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let fail = || FormatError::Authentication { ty, id: *id };
    if sealed.len() < OVERHEAD {
        return Err(fail());
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
    let tag = Tag::try_from(tag).map_err(|_| fail())?;
    let (opening, gcm_nonce) = object_key(key, nonce);
    let mut out = ciphertext.to_vec();
    opening.open_in_place_separate_tag(gcm_nonce, Aad::from(aad(ty, id)), tag, &mut out, 0..).map_err(|_| fail())?;
    Ok(out)
}
