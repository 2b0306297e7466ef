//! zstd compression, skipped where data does not compress.
//!
//! Framing (the first plaintext byte of every sealed object): `0` = stored as is, `1` = one zstd frame
//! that records its content size. See docs/FORMAT.md.

use std::cell::RefCell;
use std::io::{Cursor, Read};

use crate::FormatError;

/// How a payload inside a sealed object is stored; the first plaintext byte. DO NOT CHANGE codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// zstd frame.
    Zstd = 1,
}

/// Largest plaintext [`decompress`] produces; larger payloads are refused as corrupt (a guard against
/// decompression bombs). Writers must keep every object (trees, index files) below it.
pub const MAX_DECOMPRESSED_LEN: usize = 64 * 1024 * 1024;

/// Inputs above this size are first probed with a sample before being compressed whole.
pub const SAMPLE_THRESHOLD: usize = 64 * 1024;
/// Size of the probe taken from the start of large inputs.
pub const SAMPLE_LEN: usize = 16 * 1024;

thread_local! {
    /// One reusable compression context per level used on this thread.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    /// Reusable decompression context.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Scratch output for probing samples.
    static SAMPLE_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's compressor for `level`; `None` if zstd refuses to create one.
fn with_compressor<T>(level: i32, f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T) -> Option<T> {
    COMPRESSORS.with(|cell| {
        let mut all = cell.borrow_mut();
        let pos = match all.iter().position(|(l, _)| *l == level) {
            Some(pos) => pos,
            None => {
                let compressor = zstd::bulk::Compressor::new(level).ok()?;
                all.push((level, compressor));
                all.len() - 1
            }
        };
        Some(f(&mut all[pos].1))
    })
}

/// Whether compressing `data` whole is worth trying: inputs above [`SAMPLE_THRESHOLD`] must save at
/// least 3 % on their first [`SAMPLE_LEN`] bytes.
fn sample_compresses(data: &[u8], level: i32) -> bool {
    if data.len() <= SAMPLE_THRESHOLD {
        return true;
    }
    let sample = &data[..SAMPLE_LEN];
    SAMPLE_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(SAMPLE_LEN));
        match with_compressor(level, |c| c.compress_to_buffer(sample, &mut *out)) {
            // Saves at least 3 %: compressed * 100 <= sample * 97.
            Some(Ok(n)) => n * 100 <= SAMPLE_LEN * 97,
            _ => false,
        }
    })
}

/// Append `mode byte || payload` for `data` to `out`: zstd at `level` when that saves at least 1/32 of
/// the size, raw otherwise (`level == 0` means never compress).
///
/// Inputs above 64 KiB whose first 16 KiB do not shrink by 3 % are stored raw without compressing them
/// whole. Compresses straight into `out` (no intermediate buffer); uses one zstd context per thread
/// and level.
pub fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> Compression {
    let start = out.len();
    if level != 0 && sample_compresses(data, level) {
        // Keep the compressed form only if compressed + len/32 <= len.
        let limit = data.len() - data.len() / 32;
        out.reserve(1 + limit);
        out.push(Compression::Zstd as u8);
        let payload_start = out.len();
        let written = {
            let mut cursor = Cursor::new(&mut *out);
            cursor.set_position(payload_start as u64);
            with_compressor(level, |c| c.compress_to_buffer(data, &mut cursor))
        };
        match written {
            Some(Ok(n)) if n <= limit => {
                out.truncate(payload_start + n);
                return Compression::Zstd;
            }
            _ => out.truncate(start),
        }
    }
    out.reserve(1 + data.len());
    out.push(Compression::None as u8);
    out.extend_from_slice(data);
    Compression::None
}

fn corrupt(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupt { what: "compressed payload", detail: detail.into() }
}

/// Inverse of [`compress_into`]: `framed` starts with the mode byte. `size_hint` is the expected
/// plaintext length when known (0 otherwise); output is capped to guard against bombs.
///
/// Output is capped at [`MAX_DECOMPRESSED_LEN`]; anything larger, an unknown mode byte or an invalid
/// zstd frame is [`FormatError::Corrupt`].
pub fn decompress(framed: &[u8], size_hint: usize) -> Result<Vec<u8>, FormatError> {
    let Some((&mode, payload)) = framed.split_first() else {
        return Err(corrupt("empty (no mode byte)"));
    };
    match mode {
        0 => Ok(payload.to_vec()),
        1 => decompress_zstd(payload, size_hint),
        other => Err(corrupt(format!("unknown compression mode {other}"))),
    }
}

/// Decompress a mode-stripped zstd payload.
fn decompress_zstd(payload: &[u8], size_hint: usize) -> Result<Vec<u8>, FormatError> {
    // Frames written by `compress_into` record their content size: allocate exactly that.
    if let Some(size) = zstd::bulk::Decompressor::upper_bound(payload) {
        if size > MAX_DECOMPRESSED_LEN {
            return Err(corrupt(format!("claims {size} bytes, more than the {MAX_DECOMPRESSED_LEN}-byte limit")));
        }
        let mut out = Vec::with_capacity(size);
        let result = DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            let decompressor = slot.as_mut().expect("just set");
            decompressor.decompress_to_buffer(payload, &mut out)
        });
        return match result {
            Ok(n) if n == size => Ok(out),
            Ok(n) => Err(corrupt(format!("frame claims {size} bytes but holds {n}"))),
            Err(e) => Err(corrupt(e.to_string())),
        };
    }
    // A frame without a content size (not written by tidemark): stream with a hard cap.
    let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(size_hint.min(MAX_DECOMPRESSED_LEN));
    (&mut decoder).take(MAX_DECOMPRESSED_LEN as u64 + 1).read_to_end(&mut out).map_err(|e| corrupt(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_LEN {
        return Err(corrupt(format!("more than the {MAX_DECOMPRESSED_LEN}-byte limit")));
    }
    Ok(out)
}

/// [`decompress`] taking ownership, so that a raw payload is returned without a new allocation.
pub(crate) fn decompress_vec(mut framed: Vec<u8>, size_hint: usize) -> Result<Vec<u8>, FormatError> {
    if framed.first() == Some(&(Compression::None as u8)) {
        framed.remove(0);
        return Ok(framed);
    }
    decompress(&framed, size_hint)
}
