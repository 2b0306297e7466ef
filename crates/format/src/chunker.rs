//! Content-defined chunking (FastCDC 2020) with a per-repository seeded gear table.
//!
//! Boundaries come from [`fastcdc::v2020`] with normalization level 1 and the gear tables XOR-ed with
//! the repository seed (`gear[i] ^ seed`, `gear_ls[i] ^ (seed << 1)`, as `fastcdc` 5 does). A cut
//! point depends only on the bytes from the chunk start up to `max_size` further, so
//! [`StreamChunker`] and [`chunk_lengths`] find exactly the same boundaries. See docs/FORMAT.md.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Chunking parameters, fixed at `init` and stored in the sealed config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Minimum chunk size in bytes.
    pub min_size: u32,
    /// Average (target) chunk size.
    pub avg_size: u32,
    /// Maximum chunk size.
    pub max_size: u32,
    /// Seed for the gear table, random per repository so chunk boundaries do not leak content.
    pub seed: u64,
}

/// FastCDC normalization level. DO NOT CHANGE: it moves every chunk boundary.
pub const NORMALIZATION: u32 = 1;

impl ChunkerParams {
    /// Defaults: 512 KiB / 1 MiB / 8 MiB with the given seed.
    pub fn with_seed(seed: u64) -> Self {
        ChunkerParams { min_size: 512 * 1024, avg_size: 1024 * 1024, max_size: 8 * 1024 * 1024, seed }
    }

    /// Check the sizes against the limits of FastCDC 2020: all even, `min_size` in 64 B..=1 MiB,
    /// `avg_size` in 256 B..=4 MiB, `max_size` in 1 KiB..=16 MiB, and `min <= avg <= max`.
    ///
    /// Call this on parameters read from a repository. The chunkers never panic on invalid
    /// parameters, but they then clamp them into range, which moves boundaries.
    pub fn validate(&self) -> Result<(), FormatError> {
        let (min, avg, max) = (self.min_size as usize, self.avg_size as usize, self.max_size as usize);
        let bad = |detail: String| Err(FormatError::Corrupt { what: "chunker parameters", detail });
        if !(min.is_multiple_of(2) && avg.is_multiple_of(2) && max.is_multiple_of(2)) {
            return bad(format!("sizes must be even, got {min}/{avg}/{max}"));
        }
        if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min) {
            return bad(format!("min_size {min} outside {}..={}", v2020::MINIMUM_MIN, v2020::MINIMUM_MAX));
        }
        if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg) {
            return bad(format!("avg_size {avg} outside {}..={}", v2020::AVERAGE_MIN, v2020::AVERAGE_MAX));
        }
        if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max) {
            return bad(format!("max_size {max} outside {}..={}", v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX));
        }
        if !(min <= avg && avg <= max) {
            return bad(format!("need min_size <= avg_size <= max_size, got {min}/{avg}/{max}"));
        }
        Ok(())
    }
}

/// Precomputed masks and seeded gear tables: finds one cut point at a time.
#[derive(Debug, Clone)]
struct Cutter {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Cutter {
    fn new(params: &ChunkerParams) -> Self {
        // Clamp into what fastcdc accepts so that invalid parameters cannot panic (see `validate`).
        let even = |v: usize| v & !1;
        let max_size = even((params.max_size as usize).clamp(v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX));
        let avg_size = even((params.avg_size as usize).clamp(v2020::AVERAGE_MIN, v2020::AVERAGE_MAX).min(max_size));
        let min_size = even((params.min_size as usize).clamp(v2020::MINIMUM_MIN, v2020::MINIMUM_MAX).min(avg_size));
        let (mask_s, mask_l) = v2020::select_masks(avg_size, Normalization::Level1);
        let (gear, gear_ls) = v2020::get_gear_with_seed(params.seed);
        Cutter { min_size, avg_size, max_size, mask_s, mask_l, gear, gear_ls }
    }

    /// Length of the chunk starting at `data[0]`. `data` must hold at least `max_size` bytes or all
    /// remaining input. Returns at least 1 for non-empty `data`.
    fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut_gear(
            data,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        // cut_gear returns the whole input when it is at most min_size long, so len > 0 here.
        len.max(1).min(data.len())
    }
}

/// Split a whole slice into chunk lengths (the sum equals `data.len()`).
pub fn chunk_lengths(params: &ChunkerParams, data: &[u8]) -> Vec<usize> {
    let cutter = Cutter::new(params);
    let mut out = Vec::with_capacity(data.len() / cutter.avg_size + 1);
    let mut pos = 0;
    while pos < data.len() {
        let len = cutter.cut(&data[pos..]);
        out.push(len);
        pos += len;
    }
    out
}

/// First buffer size of a [`StreamChunker`]; it doubles up to `max_size + READ_AHEAD` only while
/// input keeps coming, so small files never touch a large buffer.
const INITIAL_BUFFER: usize = 256 * 1024;

/// Bytes read beyond `max_size` per refill (fewer, larger reads; bounded memory).
const READ_AHEAD: usize = 1024 * 1024;

/// Streaming chunker over any reader; reuses one buffer of `max_size` (plus read-ahead).
///
/// The buffer grows to at most `max_size + READ_AHEAD` and is refilled by moving the unconsumed tail to the
/// front. Boundaries are exactly those of [`chunk_lengths`] over the concatenated input: a cut point
/// found inside the buffered bytes is final; otherwise the chunker refills so that `max_size` bytes
/// (or the rest of the input) are in view. The only per-chunk copy is into the caller's `out`.
pub struct StreamChunker<R> {
    reader: R,
    params: ChunkerParams,
    cutter: Cutter,
    /// Buffered bytes are `buf[start..end]`; `buf.len()` is the allocated (initialized) size.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> StreamChunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R, params: ChunkerParams) -> Self {
        Self::with_buffer(reader, params, Vec::new())
    }

    /// A chunker that reuses `buf` (from [`StreamChunker::into_buffer`] of an earlier one), so that
    /// chunking many files neither allocates nor zeroes a fresh buffer per file.
    pub fn with_buffer(reader: R, params: ChunkerParams, buf: Vec<u8>) -> Self {
        StreamChunker { reader, params, cutter: Cutter::new(&params), buf, start: 0, end: 0, eof: false }
    }

    /// The buffer, for reuse by the next chunker.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Start over on another reader, keeping the buffer (saves allocations and page faults when
    /// chunking many files). Returns the previous reader.
    pub fn reset(&mut self, reader: R) -> R {
        self.start = 0;
        self.end = 0;
        self.eof = false;
        std::mem::replace(&mut self.reader, reader)
    }

    /// The parameters in use.
    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Fill `out` with the next chunk; `Ok(false)` at end of input. `out` is cleared first.
    ///
    /// After an I/O error, bytes already buffered are kept, so the call may be retried.
    pub fn next_chunk(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        out.clear();
        loop {
            let available = self.end - self.start;
            if available > 0 {
                let window = &self.buf[self.start..self.end];
                let len = self.cutter.cut(window);
                // A boundary found before the end of the window is final: FastCDC decides each cut
                // point from the bytes before it, with the same masks whatever follows. Otherwise the
                // cut is final only with a full `max_size` window or at the end of input.
                if len < available || available >= self.cutter.max_size || self.eof {
                    out.extend_from_slice(&window[..len]);
                    self.start += len;
                    return Ok(true);
                }
            } else if self.eof {
                return Ok(false);
            }
            self.refill()?;
        }
    }

    /// Move the unconsumed bytes to the front and read until the buffer (`max_size + READ_AHEAD`) is full or
    /// the input ends. Afterwards at least `max_size` bytes are buffered, or all remaining input.
    fn refill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let cap = self.cutter.max_size + READ_AHEAD;
        while !self.eof && self.end < cap {
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER.min(cap), cap);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end = (self.end + n).min(self.buf.len()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// What `StreamChunker` relies on: a cut point found before the end of a truncated window is
        /// the cut point of the whole input.
        #[test]
        fn cut_found_in_a_prefix_is_final(
            data in prop::collection::vec(any::<u8>(), 0..20_000),
            truncate in any::<prop::sample::Index>(),
            seed in any::<u64>(),
            sizes in prop::sample::select(vec![(64u32, 256u32, 1024u32), (256, 1024, 8192), (64, 4096, 16384)]),
        ) {
            let params = ChunkerParams { min_size: sizes.0, avg_size: sizes.1, max_size: sizes.2, seed };
            let cutter = Cutter::new(&params);
            let t = truncate.index(data.len() + 1);
            if t > 0 {
                let prefix_cut = cutter.cut(&data[..t]);
                if prefix_cut < t {
                    prop_assert_eq!(prefix_cut, cutter.cut(&data));
                }
            }
        }
    }
}
