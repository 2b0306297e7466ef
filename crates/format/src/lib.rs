//! Tidemark repository format: pure codecs over bytes.
//!
//! Everything that decides what bytes a Tidemark repository holds lives here: object ids, keyed chunk
//! ids, content-defined chunking, compression, authenticated encryption bound to object type and id,
//! key wrapping, the pack layout and the JSON object encodings. Nothing in this crate touches a
//! filesystem, a network, a clock or a global random number generator: randomness (nonces, salts,
//! ids) is passed in, so every function is reproducible and the test vectors in `docs/FORMAT.md` hold.
//!
//! ```
//! use tidemark_format::{Id, MasterKey, ObjectType, object};
//! let key = MasterKey::from_bytes([7u8; 64]);
//! let id = key.chunk_id(b"hello");
//! let sealed = object::encode(&key, ObjectType::DataBlob, &id, b"hello", &[1u8; 24], 1);
//! assert_eq!(object::decode_blob(&key, ObjectType::DataBlob, &id, &sealed).unwrap(), b"hello");
//! ```
#![deny(missing_docs)]

pub mod aead;
pub mod chunker;
pub mod compression;
mod error;
mod id;
pub mod keys;
pub mod object;
pub mod objects;
pub mod pack;

pub use aead::ObjectType;
pub use error::FormatError;
pub use id::Id;
pub use keys::MasterKey;

/// The repository format version this code writes and the newest it reads.
///
/// DO NOT CHANGE without a new section in docs/FORMAT.md: a repository whose config names a higher
/// version is refused with an "upgrade tidemark" error.
pub const FORMAT_VERSION: u32 = 1;
