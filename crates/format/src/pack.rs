//! Pack files: sealed blobs back to back, then a sealed header, then the header length.
//!
//! Layout: `blob* || sealed_header || header_len (u32 LE) || "TMPK" || version (u8 = 1)`.
//! The header lists every blob (type, id, offset, sealed length, plaintext length) so an index can be
//! rebuilt from packs alone. The pack id is the unkeyed BLAKE3 hash of the whole file.

use serde::{Deserialize, Serialize};

use crate::aead::{NONCE_LEN, TAG_LEN, seal_in_place};
use crate::{FormatError, Id, MasterKey, ObjectType};

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content chunk.
    Data,
    /// Directory tree (JSON).
    Tree,
}

impl BlobType {
    /// The object type bound into a blob's AAD.
    pub fn object_type(self) -> crate::ObjectType {
        match self {
            BlobType::Data => crate::ObjectType::DataBlob,
            BlobType::Tree => crate::ObjectType::TreeBlob,
        }
    }
}

/// One blob of a pack as listed in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Data or tree.
    pub blob_type: BlobType,
    /// Blob id.
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// Bytes after the sealed header: length (4) + magic (4) + version (1).
pub const TRAILER_LEN: usize = 9;
/// Pack magic, right before the version byte. DO NOT CHANGE.
pub const MAGIC: &[u8; 4] = b"TMPK";
/// Pack layout version this code writes and reads. DO NOT CHANGE (a new layout gets a new number).
pub const PACK_VERSION: u8 = 1;
/// Bytes per header entry: type (1) + id (32) + sealed length (4) + plaintext length (4).
pub const HEADER_ENTRY_LEN: usize = 1 + 32 + 4 + 4;
/// How many bytes from the end of a pack to read first: enough for the header of a pack with up to
/// ~1500 blobs, so one ranged read usually suffices.
pub const TAIL_READ_HINT: usize = 64 * 1024;

impl BlobType {
    /// Type byte in a pack header. DO NOT CHANGE.
    pub const fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// Inverse of [`BlobType::code`].
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Builds one pack in memory from already sealed blobs.
///
/// The pack may start `pad` bytes into its buffer so that it begins on a page boundary
/// ([`PackWriter::with_aligned_capacity`]): storage can then write it with direct I/O, without a
/// page-cache copy. The pad is never part of the pack.
#[derive(Debug, Default)]
pub struct PackWriter {
    buf: Vec<u8>,
    pad: usize,
    entries: Vec<PackEntry>,
}

/// Alignment of packs built by [`PackWriter::with_aligned_capacity`].
pub const PACK_ALIGN: usize = 4096;

/// A finished pack whose bytes start `pad` bytes into their buffer (see [`PackWriter::finish_aligned`]).
#[derive(Debug)]
pub struct PackBytes {
    buf: Vec<u8>,
    pad: usize,
}

impl PackBytes {
    /// The pack.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.pad..]
    }

    /// The underlying buffer, for [`PackWriter::reuse`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

fn aligned_start(mut buf: Vec<u8>) -> (Vec<u8>, usize) {
    buf.clear();
    buf.reserve(PACK_ALIGN);
    let pad = match buf.as_ptr().align_offset(PACK_ALIGN) {
        n if n < PACK_ALIGN => n,
        _ => 0,
    };
    buf.resize(pad, 0);
    (buf, pad)
}

impl PackWriter {
    /// An empty pack, with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PackWriter { buf: Vec::with_capacity(capacity), pad: 0, entries: Vec::new() }
    }

    /// An empty pack with room for `capacity` bytes whose first byte is page-aligned in memory.
    pub fn with_aligned_capacity(capacity: usize) -> Self {
        let (buf, pad) = aligned_start(Vec::with_capacity(capacity + PACK_ALIGN));
        PackWriter { buf, pad, entries: Vec::new() }
    }

    /// Append a sealed blob.
    ///
    /// # Panics
    /// If `sealed` is 4 GiB or longer (blobs are at most a few MiB).
    pub fn add(&mut self, blob_type: BlobType, id: Id, sealed: &[u8], raw_length: u32) {
        let length = u32::try_from(sealed.len()).expect("sealed blob below 4 GiB");
        let offset = (self.buf.len() - self.pad) as u64;
        self.entries.push(PackEntry { blob_type, id, offset, length, raw_length });
        self.buf.extend_from_slice(sealed);
    }

    /// Append a blob that `write` seals straight into the pack buffer (no intermediate copy); the
    /// entry records what `write` appended. On error nothing is added.
    pub fn add_with<E>(
        &mut self,
        blob_type: BlobType,
        id: Id,
        raw_length: u32,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<u32, E> {
        let offset = self.buf.len();
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(offset);
            return Err(e);
        }
        let length = u32::try_from(self.buf.len() - offset).expect("sealed blob below 4 GiB");
        self.entries.push(PackEntry { blob_type, id, offset: (offset - self.pad) as u64, length, raw_length });
        Ok(length)
    }

    /// An empty, page-aligned pack reusing the allocation of an earlier pack (saves page faults).
    pub fn reuse(buf: Vec<u8>) -> Self {
        let (buf, pad) = aligned_start(buf);
        PackWriter { buf, pad, entries: Vec::new() }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pad
    }

    /// No blob yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries so far.
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// Seal the header and return `(pack id, bytes, entries)`.
    ///
    /// The header is sealed as [`crate::ObjectType::PackHeader`] with the all-zero id under the data
    /// key; the pack id is the unkeyed BLAKE3 hash of the returned bytes.
    ///
    /// # Panics
    /// If the sealed header reaches 4 GiB (about 100 million blobs).
    pub fn finish(self, key: &MasterKey, nonce: &[u8; 24]) -> (Id, Vec<u8>, Vec<PackEntry>) {
        let (id, bytes, entries) = self.finish_aligned(key, nonce);
        let PackBytes { mut buf, pad } = bytes;
        buf.drain(..pad);
        (id, buf, entries)
    }

    /// [`PackWriter::finish`] keeping the buffer and its alignment (no copy).
    pub fn finish_aligned(self, key: &MasterKey, nonce: &[u8; 24]) -> (Id, PackBytes, Vec<PackEntry>) {
        let PackWriter { mut buf, pad, entries } = self;
        let header_len = NONCE_LEN + entries.len() * HEADER_ENTRY_LEN + TAG_LEN;
        let mut header = Vec::with_capacity(header_len);
        header.extend_from_slice(nonce);
        let mut expected_offset = 0u64;
        for entry in &entries {
            debug_assert_eq!(entry.offset, expected_offset, "pack entries are contiguous from 0");
            expected_offset += u64::from(entry.length);
            header.push(entry.blob_type.code());
            header.extend_from_slice(entry.id.as_bytes());
            header.extend_from_slice(&entry.length.to_le_bytes());
            header.extend_from_slice(&entry.raw_length.to_le_bytes());
        }
        seal_in_place(&key.data, ObjectType::PackHeader, &Id::default(), &mut header);
        debug_assert_eq!(header.len(), header_len);
        let sealed_len = u32::try_from(header.len()).expect("pack header below 4 GiB");
        buf.reserve(header.len() + TRAILER_LEN);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&sealed_len.to_le_bytes());
        buf.extend_from_slice(MAGIC);
        buf.push(PACK_VERSION);
        (Id::hash(&buf[pad..]), PackBytes { buf, pad }, entries)
    }
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupt { what: "pack", detail: detail.into() }
}

/// Read the header of a pack given its last bytes (`tail`, at least the trailer) and the full pack
/// length. Returns `Err(needed)`-style [`HeaderRead::NeedMore`] when `tail` is too short.
///
/// Reading the last [`TAIL_READ_HINT`] (64 KiB) bytes first usually suffices. If not, `NeedMore(n)`
/// says how many trailing bytes to read; call again with those.
///
/// Checks, in order: the trailer (magic, then version: a newer one is
/// [`FormatError::UnsupportedVersion`]), that the sealed header fits in the pack, its
/// authentication, and that the blobs exactly fill the bytes before the header. Entry offsets are
/// implied by order, starting at 0.
pub fn read_header(key: &MasterKey, tail: &[u8], pack_len: u64) -> Result<HeaderRead, FormatError> {
    if (tail.len() as u64) > pack_len {
        return Err(corrupt(format!("tail of {} bytes is longer than the pack ({pack_len} bytes)", tail.len())));
    }
    if pack_len < (TRAILER_LEN + NONCE_LEN + TAG_LEN) as u64 {
        return Err(corrupt(format!("{pack_len} bytes is too short to be a pack")));
    }
    if tail.len() < TRAILER_LEN {
        return Ok(HeaderRead::NeedMore(TRAILER_LEN));
    }
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    let (len_bytes, rest) = trailer.split_at(4);
    let (magic, version) = rest.split_at(4);
    if magic != MAGIC {
        return Err(corrupt(format!(
            "bad magic {magic:02x?} at the end, expected \"TMPK\" (not a tidemark pack, or truncated)"
        )));
    }
    match version[0] {
        PACK_VERSION => {}
        0 => return Err(corrupt("pack version 0 is invalid")),
        found => {
            return Err(FormatError::UnsupportedVersion { found: found.into(), supported: PACK_VERSION.into() });
        }
    }
    let header_len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if header_len < NONCE_LEN + TAG_LEN || !(header_len - NONCE_LEN - TAG_LEN).is_multiple_of(HEADER_ENTRY_LEN) {
        return Err(corrupt(format!("sealed header length {header_len} is not 40 + 41 * entries")));
    }
    let needed = header_len + TRAILER_LEN;
    if needed as u64 > pack_len {
        return Err(corrupt(format!("sealed header of {header_len} bytes does not fit in {pack_len} bytes")));
    }
    if tail.len() < needed {
        return Ok(HeaderRead::NeedMore(needed));
    }
    let sealed = &tail[tail.len() - needed..tail.len() - TRAILER_LEN];
    let header = crate::aead::open(&key.data, ObjectType::PackHeader, &Id::default(), sealed)?;
    let data_len = pack_len - needed as u64;
    let mut entries = Vec::with_capacity(header.len() / HEADER_ENTRY_LEN);
    let mut offset = 0u64;
    for raw in header.chunks_exact(HEADER_ENTRY_LEN) {
        let blob_type = BlobType::from_code(raw[0])
            .ok_or_else(|| corrupt(format!("unknown blob type {} in header entry {}", raw[0], entries.len())))?;
        let id = Id(raw[1..33].try_into().expect("32 bytes"));
        let length = u32::from_le_bytes(raw[33..37].try_into().expect("4 bytes"));
        let raw_length = u32::from_le_bytes(raw[37..41].try_into().expect("4 bytes"));
        entries.push(PackEntry { blob_type, id, offset, length, raw_length });
        offset += u64::from(length);
    }
    if offset != data_len {
        return Err(corrupt(format!("header lists {offset} bytes of blobs, but {data_len} bytes precede the header")));
    }
    Ok(HeaderRead::Entries(entries))
}

/// Result of [`read_header`].
#[derive(Debug)]
pub enum HeaderRead {
    /// The header's entries.
    Entries(Vec<PackEntry>),
    /// The tail must be at least this many bytes long.
    NeedMore(usize),
}
