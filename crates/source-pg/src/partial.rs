//! Streamed partial segments: how `pg stream` stores the segment PostgreSQL is still writing, and
//! when `archive-get` serves it to recovery.
//!
//! # Layout
//!
//! `pg stream` ([`crate::receive`]) stores the segment the primary is still writing as
//! `named/wal.<source>/<segment>.<end offset, 8 hex digits>.partial` ([`StreamPartialRecord`],
//! kind [`WalFileKind::StreamPartial`]), every second
//! or at every synchronous commit.
//! Records are create-only and keyed by the end offset, so nothing is overwritten. A partial record
//! lists the blobs of the segment's finished content-defined chunks (cut exactly where the
//! complete segment will be cut, so they are stored once and shared with it) and carries the
//! rest, the unfinished chunk, inline (hex in the sealed, compressed record): a pack and an index
//! file are written only when a chunk was finished (about once per MiB of WAL), not per store.
//! The unfinished chunk averages about 1 MiB, too much to rewrite at every synchronous commit, so
//! a record that adds at most 64 KiB to the newest record holding the whole unfinished chunk (its
//! *base*) carries only those bytes and names the base ([`StreamPartialRecord::base`]); readers
//! join the two. Measured on the project's 2-core machine with one pgbench client committing
//! single-row inserts into a local repository: about 20 ms per commit with whole records, 10 ms
//! with increments (most of it the record's fsync).
//!
//! Older partial records of a segment are deleted once a newer base (or the complete segment)
//! was stored, never the base of the newest record, and a failed delete is only a warning:
//! readers take the complete segment first, then the partial with the highest offset (and its
//! base).
//!
//! # Serving a partial segment to recovery
//!
//! PostgreSQL asks `restore_command` for complete segment names only. When the repository holds
//! no complete segment under the name asked for, [`archive_fetch`](crate::archive::archive_fetch)
//! serves the newest streamed partial of that segment, zero-filled to the segment size, and says
//! so ([`Fetched::StreamPartial`](crate::archive::Fetched)). That is what PostgreSQL expects of
//! the last segment of an archive: it is exactly the state of a primary's own current segment
//! after a crash (valid WAL, then zeros), and recovery reads WAL until the first invalid record,
//! so it replays everything the partial holds, ends recovery there and starts a new timeline
//! (a standby in archive recovery asks for the same segment again later and gets the newer one).
//! Barman serves its streamed `.partial` files the same way (`get-wal --partial`). Bytes after
//! the end are never guessed: they are zeros, which no record validates against.
//!
//! The one case where a partial must not be served: a timeline that ended. After a promotion,
//! the old timeline's last segment holds WAL after the switch point that the new timeline does
//! not have (PostgreSQL renames its own copy to `.partial` so that recovery never reads it);
//! if recovery asked for that old-timeline segment (because the new timeline's copy is not
//! archived yet) and got it, it would replay transactions the new timeline lost. So a partial
//! of timeline T is served only while no archived history file names T as a parent.
//!
//! [`pg verify`](crate::pg_verify) counts complete segments only, so the in-progress segment is
//! neither a gap nor proof of continuity; `pg restore` counts a partial as where the archive ends
//! (to its end LSN and `stored_at`), so restores to a time or LSN seconds ago are allowed.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_repo::Repository;
use tidemark_repo::format::Id;
use tidemark_repo::format::pack::BlobType;

use crate::archive::{self, WalFileKind, classify_wal_file, wal_namespace};
use crate::wal::{self, WalSegmentHeader};
use crate::{Lsn, PgError};

/// A streamed partial segment (`named/wal.<source>/<segment>.<end offset>.partial`): the first
/// `size` bytes of a segment that was still being written. Prune keeps the blobs of `content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPartialRecord {
    /// The record's name.
    pub name: String,
    /// The segment's file name.
    pub segment: String,
    /// `wal_segment_size` of the cluster.
    pub segment_size: u64,
    /// Bytes of WAL from the segment's start.
    pub size: u64,
    /// Data blobs holding the first bytes (finished chunks), in order.
    pub content: Vec<Id>,
    /// The bytes after `content` (and after the base's bytes, with a `base`), hex.
    pub tail: String,
    /// A small increment names its base: an older partial record of the same segment with the
    /// same `content` and no base of its own, whose inline bytes come before `tail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The system identifier in the segment's header.
    pub system_identifier: u64,
    /// The timeline in its name.
    pub timeline: u32,
    /// When it was stored (the streaming host's clock).
    pub stored_at: Timestamp,
}

impl StreamPartialRecord {
    /// Where its WAL ends.
    pub fn end_lsn(&self) -> Result<Lsn, PgError> {
        Ok(Lsn(wal::parse_segment_file_name(&self.segment, self.segment_size)?.start.0 + self.size))
    }
}

/// The record name of a streamed partial of `segment` ending at byte `offset` of it.
pub fn partial_name(segment: &str, offset: u64) -> String {
    format!("{segment}.{offset:08X}.partial")
}

/// `(segment, offset)` of a streamed partial's record name (`<24 hex>.<8 hex>.partial`).
pub fn parse_partial_name(name: &str) -> Option<(&str, u64)> {
    let (segment, offset) = name.strip_suffix(".partial")?.split_once('.')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
    if !hex(segment, 24) || !hex(offset, 8) {
        return None;
    }
    Some((segment, u64::from_str_radix(offset, 16).ok()?))
}

/// The streamed partial record `name`, if stored.
pub fn get_partial(repo: &Repository, source: &str, name: &str) -> Result<Option<StreamPartialRecord>, PgError> {
    archive::check_source(source)?;
    let record: Option<StreamPartialRecord> = repo
        .get_named(&wal_namespace(source), name)
        .map_err(|e| PgError::repository(&format!("reading the record of {name}"), e))?;
    if let Some(record) = &record
        && (record.name != name || parse_partial_name(name).map(|(s, _)| s) != Some(record.segment.as_str()))
    {
        return Err(PgError::protocol(format!("the record of {name} names {:?}", record.name)));
    }
    Ok(record)
}

/// The streamed partial that may stand in for the missing segment `segment`: the newest one of
/// that segment, unless an archived history file says its timeline ended (see the module docs).
pub fn servable_partial(
    repo: &Repository,
    source: &str,
    segment: &str,
) -> Result<Option<StreamPartialRecord>, PgError> {
    let class = classify_wal_file(segment)?;
    if class.kind != WalFileKind::Segment {
        return Ok(None);
    }
    // The newest partial may be deleted between the listing and the read (a newer one or the
    // complete segment replaced it): list again.
    for _ in 0..3 {
        let names = archive::list_wal(repo, source)?;
        if timeline_ended(repo, source, &names, class.timeline)? {
            return Ok(None);
        }
        let newest = names.iter().filter_map(|n| parse_partial_name(n)).filter(|(s, _)| *s == segment).max();
        let Some((_, offset)) = newest else { return Ok(None) };
        let Some(record) = get_partial(repo, source, &partial_name(segment, offset))? else { continue };
        if let Some(whole) = resolve(repo, source, record)? {
            return Ok(Some(whole));
        }
    }
    Ok(None)
}

/// `record` with its base's bytes joined in (`base: None`); `None` when the base is gone (a
/// newer base replaced both).
pub(crate) fn resolve(
    repo: &Repository,
    source: &str,
    record: StreamPartialRecord,
) -> Result<Option<StreamPartialRecord>, PgError> {
    let Some(base_name) = &record.base else { return Ok(Some(record)) };
    let Some(base) = get_partial(repo, source, base_name)? else { return Ok(None) };
    if base.base.is_some() || base.segment != record.segment || base.content != record.content {
        return Err(PgError::protocol(format!(
            "{}: its base {base_name} is not an earlier state of the same segment",
            record.name
        )));
    }
    Ok(Some(StreamPartialRecord { tail: base.tail + &record.tail, base: None, ..record }))
}

/// Whether an archived history file of a later timeline names `timeline` as a parent.
fn timeline_ended(repo: &Repository, source: &str, names: &[String], timeline: u32) -> Result<bool, PgError> {
    for name in names {
        let Ok(class) = classify_wal_file(name) else { continue };
        if class.kind != WalFileKind::History || class.timeline <= timeline {
            continue;
        }
        let record = archive::get_record(repo, source, name)?
            .ok_or_else(|| PgError::protocol(format!("{name} was listed but has no record")))?;
        let mut bytes = Vec::new();
        for id in &record.content {
            let data = repo
                .read_blob(BlobType::Data, id)
                .map_err(|e| PgError::repository(&format!("reading {name} from the repository"), e))?;
            bytes.extend_from_slice(&data);
        }
        let history =
            crate::verify::parse_history(&String::from_utf8_lossy(&bytes)).map_err(|e| e.with_context(name))?;
        if history.iter().any(|(parent, _)| *parent == timeline) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Write a streamed partial to `temp` as a whole segment: its bytes, then zeros to the segment
/// size; the header checked against the source's cluster; synced.
pub(crate) fn write_partial(
    repo: &Repository,
    source: &str,
    record: &StreamPartialRecord,
    temp: &Path,
) -> Result<(), PgError> {
    let name = &record.name;
    let cluster = archive::cluster_record(repo, source)?
        .ok_or_else(|| PgError::protocol(format!("{name}: the source {source:?} has no cluster record")))?;
    if record.segment_size != cluster.wal_segment_size || record.size > cluster.wal_segment_size {
        return Err(PgError::protocol(format!(
            "{name}: {} bytes of a {}-byte segment, but the source's segments hold {} bytes",
            record.size, record.segment_size, cluster.wal_segment_size
        )));
    }
    let tail =
        hex::decode(&record.tail).map_err(|e| PgError::protocol(format!("{name}: malformed inline bytes: {e}")))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| PgError::local(format!("creating {}", temp.display()), e))?;
    let mut head = Vec::new();
    let mut written = 0u64;
    let mut put = |data: &[u8]| -> Result<(), PgError> {
        if head.len() < wal::LONG_PAGE_HEADER_LEN {
            head.extend_from_slice(&data[..data.len().min(wal::LONG_PAGE_HEADER_LEN)]);
        }
        file.write_all(data).map_err(|e| PgError::local(format!("writing {}", temp.display()), e))?;
        written += data.len() as u64;
        Ok(())
    };
    for id in &record.content {
        let data = repo
            .read_blob(BlobType::Data, id)
            .map_err(|e| PgError::repository(&format!("reading {name} from the repository"), e))?;
        put(&data)?;
    }
    put(&tail)?;
    if written != record.size {
        return Err(PgError::protocol(format!(
            "{name}: the repository holds {written} bytes but its record says {}",
            record.size
        )));
    }
    WalSegmentHeader::parse(&head)
        .and_then(|h| h.check_named(&cluster.expected()?, &record.segment))
        .map_err(|e| e.with_context(&format!("{name} in the repository")))?;
    file.set_len(cluster.wal_segment_size)
        .and_then(|()| file.sync_all())
        .map_err(|e| PgError::local(format!("writing {}", temp.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        let name = partial_name("000000010000000000000005", 0xA3_F000);
        assert_eq!(name, "000000010000000000000005.00A3F000.partial");
        assert_eq!(parse_partial_name(&name), Some(("000000010000000000000005", 0xA3_F000)));
        for bad in [
            "000000010000000000000005.partial",
            "000000010000000000000005.00a3f000.partial",
            "000000010000000000000005.0A3F000.partial",
            "00000001000000000000005.00A3F000.partial",
            "000000010000000000000005.00A3F000",
            "000000010000000000000005.00000028.backup",
        ] {
            assert_eq!(parse_partial_name(bad), None, "{bad}");
        }
        let class = classify_wal_file(&name).unwrap();
        assert_eq!((class.kind, class.timeline), (WalFileKind::StreamPartial, 1));
        assert_eq!(class.segment.as_deref(), Some("000000010000000000000005"));
        assert!(classify_wal_file("000000010000000000000005.00000000.partial").is_err());
    }
}
