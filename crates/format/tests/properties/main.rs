//! Property tests of every codec: round trips, tamper detection, streaming equivalence, and
//! panic-freedom on arbitrary input. Shared generators live here, one module per codec.

use std::collections::BTreeMap;
use std::io::{self, Read};

use jiff::Timestamp;
use proptest::prelude::*;
use tidemark_format::chunker::{ChunkerParams, StreamChunker, chunk_lengths};
use tidemark_format::compression::{self, Compression, compress_into, decompress};
use tidemark_format::keys::{KdfParams, derive_from_keyfile, derive_from_password, unwrap_master_key, wrap_master_key};
use tidemark_format::objects::{
    IndexBlob, IndexFile, IndexPack, Kdf, KeyFile, Lock, Node, NodeType, RepoConfig, RepoMarker, Snapshot,
    SnapshotSummary, Tree,
};
use tidemark_format::pack::{self, BlobType, HeaderRead, PackWriter, read_header};
use tidemark_format::{FormatError, Id, MasterKey, ObjectType, aead, object};

mod chunking;
mod compressing;
mod fuzz;
mod json;
mod packs;
mod sealing;

const TYPES: [ObjectType; 8] = [
    ObjectType::Config,
    ObjectType::Key,
    ObjectType::Snapshot,
    ObjectType::Index,
    ObjectType::Lock,
    ObjectType::PackHeader,
    ObjectType::DataBlob,
    ObjectType::TreeBlob,
];

fn master(seed: u8) -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ seed))
}

fn xof(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(seed).finalize_xof().fill(&mut out);
    out
}

fn arb_id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id::from_bytes)
}

fn arb_type() -> impl Strategy<Value = ObjectType> {
    prop::sample::select(&TYPES[..])
}
