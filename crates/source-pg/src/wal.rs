//! WAL segment and history file names, and the long page header that opens every WAL segment.
//!
//! A segment's name is `TTTTTTTTXXXXXXXXYYYYYYYY`: the timeline, then the segment number split into
//! the "log id" (`segno / segments_per_4GiB`) and the segment within it, each as 8 upper-case hex
//! digits (PostgreSQL's `XLogFileName`). With the default 16 MiB segments, LSN `0/16B3748` on
//! timeline 1 lives in `000000010000000000000001`.
//!
//! The first page of a segment carries `XLogLongPageHeaderData`, in the server's byte order (little
//! endian on every platform this project targets):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | `xlp_magic` (the WAL format version: `0xD110` for PostgreSQL 15) |
//! | 2 | 2 | `xlp_info` (flag `XLP_LONG_HEADER = 0x0002` must be set) |
//! | 4 | 4 | `xlp_tli` |
//! | 8 | 8 | `xlp_pageaddr` (the LSN of the page: the segment's start) |
//! | 16 | 4 | `xlp_rem_len` |
//! | 20 | 4 | padding |
//! | 24 | 8 | `xlp_sysid` (the cluster's system identifier) |
//! | 32 | 4 | `xlp_seg_size` |
//! | 36 | 4 | `xlp_xlog_blcksz` |
//!
//! [`WalSegmentHeader::check`] is what lets `archive-push` refuse a segment of another cluster.

use crate::{Lsn, PgError};

/// PostgreSQL's default WAL segment size, 16 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// `XLOG_PAGE_MAGIC` of PostgreSQL 15.
pub const XLOG_PAGE_MAGIC_PG15: u16 = 0xD110;

/// Bytes of the long page header parsed by [`WalSegmentHeader::parse`].
pub const LONG_PAGE_HEADER_LEN: usize = 40;

const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` per PostgreSQL major version (from each release's `xlog_internal.h`).
const PAGE_MAGICS: &[(u32, u16)] = &[(13, 0xD106), (14, 0xD10D), (15, 0xD110), (16, 0xD113), (17, 0xD116)];

/// The WAL page magic of a PostgreSQL major version, where this crate knows it (13 to 17).
pub fn page_magic_for_major(major: u32) -> Option<u16> {
    PAGE_MAGICS.iter().find(|(m, _)| *m == major).map(|(_, magic)| *magic)
}

/// The PostgreSQL major version that writes WAL with this page magic, where known.
pub fn major_for_page_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS.iter().find(|(_, m)| *m == magic).map(|(major, _)| *major)
}

fn check_segment_size(segment_size: u64) -> Result<(), PgError> {
    // initdb --wal-segsize accepts powers of two from 1 MiB to 1 GiB.
    if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
        return Err(PgError::wal(format!(
            "invalid WAL segment size {segment_size}: must be a power of two from 1 MiB to 1 GiB"
        )));
    }
    Ok(())
}

/// The segment number holding `lsn`.
pub fn segment_number(lsn: Lsn, segment_size: u64) -> u64 {
    lsn.0 / segment_size.max(1)
}

/// The file name of the segment holding `lsn` on `timeline` (`XLogFileName`).
///
/// ```
/// use tidemark_source_pg::{Lsn, wal};
/// let name = wal::segment_file_name(1, "0/16B3748".parse().unwrap(), wal::DEFAULT_SEGMENT_SIZE);
/// assert_eq!(name, "000000010000000000000001");
/// let name = wal::segment_file_name(2, Lsn(0x1_2300_0000), wal::DEFAULT_SEGMENT_SIZE);
/// assert_eq!(name, "000000020000000100000023");
/// ```
pub fn segment_file_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    let segment_size = segment_size.max(1);
    let per_id = (1u64 << 32) / segment_size;
    let segno = lsn.0 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id.max(1), segno % per_id.max(1))
}

/// A parsed segment file name: its timeline and its first LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// The timeline.
    pub timeline: u32,
    /// The LSN of the segment's first byte.
    pub start: Lsn,
}

/// Parse a segment file name (24 upper-case hex digits; no `.partial` or other suffix).
pub fn parse_segment_file_name(name: &str, segment_size: u64) -> Result<SegmentName, PgError> {
    check_segment_size(segment_size)?;
    let bad = || PgError::wal(format!("{name:?} is not a WAL segment file name (24 upper-case hex digits)"));
    if name.len() != 24 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return Err(bad());
    }
    let field = |range: std::ops::Range<usize>| u32::from_str_radix(&name[range], 16).map_err(|_| bad());
    let timeline = field(0..8)?;
    let log_id = u64::from(field(8..16)?);
    let seg = u64::from(field(16..24)?);
    let per_id = (1u64 << 32) / segment_size;
    if seg >= per_id || timeline == 0 {
        return Err(bad());
    }
    Ok(SegmentName { timeline, start: Lsn((log_id * per_id + seg) * segment_size) })
}

/// The name of a timeline's history file, such as `00000002.history`.
pub fn history_file_name(timeline: u32) -> String {
    format!("{timeline:08X}.history")
}

/// The long page header at the start of a WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSegmentHeader {
    /// `xlp_magic`: the WAL format version ([`major_for_page_magic`]).
    pub magic: u16,
    /// `xlp_info` flags.
    pub info: u16,
    /// `xlp_tli`: the timeline of the first page (after a switch, a new timeline's first segment
    /// starts with pages of the old one).
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN of the segment's first byte.
    pub page_address: Lsn,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_identifier: u64,
    /// `xlp_seg_size`.
    pub segment_size: u32,
    /// `xlp_xlog_blcksz`.
    pub block_size: u32,
}

/// What a WAL segment must match to belong to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedCluster {
    /// The cluster's system identifier (`IDENTIFY_SYSTEM`, `pg_control_system()`).
    pub system_identifier: u64,
    /// The WAL page magic of its PostgreSQL version ([`page_magic_for_major`]).
    pub page_magic: u16,
    /// Its WAL segment size.
    pub segment_size: u64,
}

impl WalSegmentHeader {
    /// Parse the long page header from the first bytes of a segment (at least
    /// [`LONG_PAGE_HEADER_LEN`]). An error when the bytes are too short, the long-header flag is
    /// missing, or the sizes are impossible; the magic is not judged here (see [`check`](Self::check)).
    pub fn parse(bytes: &[u8]) -> Result<WalSegmentHeader, PgError> {
        let Some(h) = bytes.get(..LONG_PAGE_HEADER_LEN) else {
            return Err(PgError::wal(format!("WAL segment too short for a page header: {} bytes", bytes.len())));
        };
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| (u64::from(u32_at(o + 4)) << 32) | u64::from(u32_at(o));
        let header = WalSegmentHeader {
            magic: u16_at(0),
            info: u16_at(2),
            timeline: u32_at(4),
            page_address: Lsn(u64_at(8)),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        };
        if header.info & XLP_LONG_HEADER == 0 {
            return Err(PgError::wal(format!(
                "not the start of a WAL segment: the first page has no long header (magic {:#06X}, info {:#06X})",
                header.magic, header.info
            )));
        }
        check_segment_size(u64::from(header.segment_size))?;
        if !header.block_size.is_power_of_two() || !(1024..=65536).contains(&header.block_size) {
            return Err(PgError::wal(format!("invalid WAL block size {} in the segment header", header.block_size)));
        }
        if !header.page_address.0.is_multiple_of(u64::from(header.segment_size)) {
            return Err(PgError::wal(format!(
                "WAL page address {} is not the start of a segment",
                header.page_address
            )));
        }
        Ok(header)
    }

    /// The PostgreSQL major version that wrote this segment, where known.
    pub fn pg_major(&self) -> Option<u32> {
        major_for_page_magic(self.magic)
    }

    /// Refuse a segment of another cluster, another PostgreSQL version or another segment size.
    pub fn check(&self, expected: &ExpectedCluster) -> Result<(), PgError> {
        if self.system_identifier != expected.system_identifier {
            return Err(PgError::wal(format!(
                "WAL segment belongs to another cluster: system identifier {} in its header, expected {}; \
                 check that --source names this cluster",
                self.system_identifier, expected.system_identifier
            )));
        }
        if self.magic != expected.page_magic {
            let version = |magic| {
                major_for_page_magic(magic)
                    .map_or_else(|| format!("unknown version, magic {magic:#06X}"), |m| format!("PostgreSQL {m}"))
            };
            return Err(PgError::wal(format!(
                "WAL segment was written by {}, expected {}",
                version(self.magic),
                version(expected.page_magic)
            )));
        }
        if u64::from(self.segment_size) != expected.segment_size {
            return Err(PgError::wal(format!(
                "WAL segment size {} in the header, expected {}",
                self.segment_size, expected.segment_size
            )));
        }
        Ok(())
    }

    /// [`check`](Self::check), and that the segment is the one its file name says.
    pub fn check_named(&self, expected: &ExpectedCluster, file_name: &str) -> Result<(), PgError> {
        self.check(expected)?;
        let name = parse_segment_file_name(file_name, expected.segment_size)?;
        if name.start != self.page_address {
            return Err(PgError::wal(format!(
                "WAL segment {file_name} holds the segment starting at {}, not {}",
                self.page_address, name.start
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_bytes(sysid: u64, magic: u16, addr: u64) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..2].copy_from_slice(&magic.to_le_bytes());
        b[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    fn expected(sysid: u64) -> ExpectedCluster {
        ExpectedCluster {
            system_identifier: sysid,
            page_magic: XLOG_PAGE_MAGIC_PG15,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }

    #[test]
    fn header_checks() {
        let b = header_bytes(7_300_000_000_000_000_001, XLOG_PAGE_MAGIC_PG15, 0x300_0000);
        let h = WalSegmentHeader::parse(&b).unwrap();
        assert_eq!(h.system_identifier, 7_300_000_000_000_000_001);
        assert_eq!(h.pg_major(), Some(15));
        assert_eq!(h.page_address, Lsn(0x300_0000));
        h.check(&expected(7_300_000_000_000_000_001)).unwrap();
        h.check_named(&expected(7_300_000_000_000_000_001), "000000010000000000000003").unwrap();
        assert!(h.check_named(&expected(7_300_000_000_000_000_001), "000000010000000000000004").is_err());
        let err = h.check(&expected(42)).unwrap_err();
        assert!(err.message().contains("another cluster"), "{err}");
        let pg16 = WalSegmentHeader::parse(&header_bytes(42, 0xD113, 0)).unwrap();
        let err = pg16.check(&expected(42)).unwrap_err();
        assert!(err.message().contains("PostgreSQL 16"), "{err}");
        assert!(WalSegmentHeader::parse(&b[..39]).is_err());
        let mut short = b.clone();
        short[2] = 0; // no long header flag
        assert!(WalSegmentHeader::parse(&short).is_err());
        let mut bad_size = b.clone();
        bad_size[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(WalSegmentHeader::parse(&bad_size).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(segment_file_name(1, Lsn(0xFF00_0000), DEFAULT_SEGMENT_SIZE), "0000000100000000000000FF");
        assert_eq!(segment_file_name(1, Lsn(0x1_0000_0000), 1 << 30), "000000010000000100000000");
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000001000",
            "000000010000000000000100",
            "00000000000000000000000F",
            "000000010000000000000001.partial",
            "00000001000000000000000g",
        ] {
            assert!(parse_segment_file_name(bad, DEFAULT_SEGMENT_SIZE).is_err(), "{bad}");
        }
        assert!(parse_segment_file_name("000000010000000000000001", 3).is_err());
    }

    proptest! {
        #[test]
        fn segment_name_round_trip(tli in 1u32.., lsn in any::<u64>(), shift in 20u32..=30) {
            let size = 1u64 << shift;
            let name = segment_file_name(tli, Lsn(lsn), size);
            let parsed = parse_segment_file_name(&name, size).unwrap();
            prop_assert_eq!(parsed.timeline, tli);
            prop_assert_eq!(parsed.start, Lsn(lsn).segment_start(size));
        }
    }
}
