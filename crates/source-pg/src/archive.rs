//! The WAL archive in the repository: `archive-push` and `archive-get` for PostgreSQL's
//! `archive_command` and `restore_command`, and the per-source cluster record.
//!
//! # Layout
//!
//! - `named/pg/<source>`: a [`ClusterRecord`] (system identifier, major version, WAL segment size),
//!   created once by the first base backup or the first pushed segment of that source. Every later
//!   segment and base backup of the source must match it: a segment of another cluster is refused.
//! - `named/wal.<source>/<file name>`: one [`WalRecord`] per archived file (segments, `.partial`
//!   segments, `.history` and `.backup` files). Its `content` lists the data blobs that hold the
//!   bytes, stored through an [`Archiver`](tidemark_repo::Archiver) like any file (chunked,
//!   compressed, encrypted), so prune keeps them as long as the record exists. A new file is
//!   deduplicated within itself only, never against the rest of the repository
//!   ([`Repository::archiver_without_index`]): WAL is new data, and loading the whole index for
//!   every segment made each push slower than the one before.
//!
//! Records are create-only: pushing the same bytes again is success
//! ([`PushOutcome::AlreadyIdentical`]), other bytes under an existing name are an
//! [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) and nothing is overwritten (history files
//! included).
//!
//! # Exit codes for the command line
//!
//! PostgreSQL restarts its archiver, or aborts recovery, when `archive_command` or
//! `restore_command` exits above 125 (the shell's "command not found" codes and signals), so the
//! front end must never exit above 125 on an ordinary error. Suggested mapping:
//!
//! | command | 0 | 1 | 2 |
//! | --- | --- | --- | --- |
//! | `archive-push` | stored ([`PushOutcome::Stored`]) or already identical: durable | any error (PostgreSQL retries the segment later) | usage errors |
//! | `archive-get` | found and written to `%p` ([`archive_get`] returned `Ok(true)`) | not in the repository (`Ok(false)`: PostgreSQL takes it as the end of the archive) | any error (repository unreachable, corrupted blob, wrong cluster): PostgreSQL also takes it as "not available", so the message on stderr must be loud |

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_repo::format::Id;
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::named::PutNamed;
use tidemark_repo::{NoProgress, Repository};

use crate::wal::{self, ExpectedCluster, WalSegmentHeader};
use crate::{Lsn, PgError};

/// Namespace of the per-source [`ClusterRecord`]s.
pub const CLUSTER_NAMESPACE: &str = "pg";

/// The largest WAL file accepted (the largest segment size PostgreSQL allows).
const MAX_WAL_FILE: u64 = 1 << 30;

/// The identity of the cluster a source protects, recorded once (`named/pg/<source>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// `pg_control`'s system identifier.
    pub system_identifier: u64,
    /// The PostgreSQL major version (15 for 15.x).
    pub pg_major: u32,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
}

impl ClusterRecord {
    /// What a segment's header must match.
    pub fn expected(&self) -> Result<ExpectedCluster, PgError> {
        let page_magic = wal::page_magic_for_major(self.pg_major).ok_or_else(|| {
            PgError::wal(format!("PostgreSQL {} is not supported (no known WAL page magic)", self.pg_major))
        })?;
        Ok(ExpectedCluster {
            system_identifier: self.system_identifier,
            page_magic,
            segment_size: self.wal_segment_size,
        })
    }
}

/// One archived WAL file (`named/wal.<source>/<name>`). Prune keeps the blobs of `content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    /// The file name PostgreSQL gave it (`%f`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The data blobs holding its bytes, in order.
    pub content: Vec<Id>,
    /// The system identifier in the segment's header; for history and backup files, the
    /// source's recorded one when it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<u64>,
    /// The timeline its name carries.
    pub timeline: u32,
    /// When it was stored (the pushing host's clock). A segment stored at `t` holds no WAL
    /// written after `t`.
    pub stored_at: Timestamp,
}

/// What [`archive_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is now durable in the repository.
    Stored,
    /// The repository already held identical bytes under this name (success).
    AlreadyIdentical,
}

/// The kinds of files PostgreSQL archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFileKind {
    /// A complete segment (`000000010000000000000003`).
    Segment,
    /// The last, incomplete segment of a timeline (`000000010000000000000003.partial`).
    Partial,
    /// A timeline history file (`00000002.history`).
    History,
    /// A backup history file (`000000010000000000000003.00000028.backup`).
    BackupHistory,
    /// The in-progress segment as `pg stream` stored it, up to an offset
    /// (`000000010000000000000003.00A3F000.partial`, see [`crate::partial`]).
    StreamPartial,
}

/// A WAL file name, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileName {
    /// What it is.
    pub kind: WalFileKind,
    /// The timeline in its name.
    pub timeline: u32,
    /// For segments, `.partial` and `.backup` files: the 24-digit segment name.
    pub segment: Option<String>,
}

fn upper_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// Classify a file name PostgreSQL archives; anything else is refused (it also guards the
/// repository's naming: no `/`, no `..`).
pub fn classify_wal_file(name: &str) -> Result<WalFileName, PgError> {
    let bad = || {
        PgError::wal(format!(
            "{name:?} is not a WAL file name (a segment, .partial, .history or .backup file as PostgreSQL names them)"
        ))
    };
    let timeline_of = |s: &str| u32::from_str_radix(&s[..8], 16).ok().filter(|t| *t != 0).ok_or_else(bad);
    let segment = |s: &str| s.len() == 24 && upper_hex(s);
    if segment(name) {
        return Ok(WalFileName {
            kind: WalFileKind::Segment,
            timeline: timeline_of(name)?,
            segment: Some(name.into()),
        });
    }
    if let Some(base) = name.strip_suffix(".partial")
        && segment(base)
    {
        return Ok(WalFileName {
            kind: WalFileKind::Partial,
            timeline: timeline_of(base)?,
            segment: Some(base.into()),
        });
    }
    if let Some(tli) = name.strip_suffix(".history")
        && tli.len() == 8
        && upper_hex(tli)
    {
        return Ok(WalFileName { kind: WalFileKind::History, timeline: timeline_of(tli)?, segment: None });
    }
    if let Some((base, offset)) = crate::partial::parse_partial_name(name)
        && offset > 0
    {
        return Ok(WalFileName {
            kind: WalFileKind::StreamPartial,
            timeline: timeline_of(base)?,
            segment: Some(base.into()),
        });
    }
    if let Some(rest) = name.strip_suffix(".backup")
        && let Some((base, offset)) = rest.split_once('.')
        && segment(base)
        && offset.len() == 8
        && upper_hex(offset)
    {
        return Ok(WalFileName {
            kind: WalFileKind::BackupHistory,
            timeline: timeline_of(base)?,
            segment: Some(base.into()),
        });
    }
    Err(bad())
}

/// Check a source name: it becomes one path component of the repository's named objects.
pub fn check_source(source: &str) -> Result<(), PgError> {
    if source.is_empty()
        || source.len() > 200
        || source.starts_with('.')
        || !source.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(PgError::config(format!(
            "invalid source name {source:?}: use 1 to 200 of A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'"
        )));
    }
    Ok(())
}

/// The namespace of a source's WAL records: `wal.<source>`.
pub fn wal_namespace(source: &str) -> String {
    format!("wal.{source}")
}

/// The cluster record of a source, if one was created.
pub fn cluster_record(repo: &Repository, source: &str) -> Result<Option<ClusterRecord>, PgError> {
    check_source(source)?;
    repo.get_named(CLUSTER_NAMESPACE, source)
        .map_err(|e| PgError::repository(&format!("reading the cluster record of source {source:?}"), e))
}

/// The source's cluster record, created as `found` when there is none yet; an existing record
/// of another cluster, version or segment size is a [`Conflict`](crate::ErrorKind::Conflict).
pub fn ensure_cluster_record(repo: &Repository, source: &str, found: &ClusterRecord) -> Result<(), PgError> {
    let existing = match cluster_record(repo, source)? {
        Some(existing) => existing,
        None => match repo.put_named(CLUSTER_NAMESPACE, source, found) {
            Ok(PutNamed::Created | PutNamed::AlreadyIdentical) => return Ok(()),
            Err(err) => match cluster_record(repo, source)? {
                Some(existing) => existing,
                None => return Err(PgError::repository("recording the cluster identity", err)),
            },
        },
    };
    if existing != *found {
        return Err(PgError::conflict(format!(
            "source {source:?} protects cluster {} (PostgreSQL {}, WAL segments of {} bytes), but this is cluster {} \
             (PostgreSQL {}, {} bytes); hint: use another --source name for another cluster or a new major version",
            existing.system_identifier,
            existing.pg_major,
            existing.wal_segment_size,
            found.system_identifier,
            found.pg_major,
            found.wal_segment_size
        )));
    }
    Ok(())
}

/// Store one WAL file (`%p`) in the repository under its file name; durable when this returns.
///
/// Segments (and `.partial` segments) are checked first: a long page header, the source's
/// cluster (system identifier, version, segment size; the first segment of a source records
/// them), the position its name says, and the full segment size. History and backup files are
/// stored as they are. Identical bytes already stored are success; different bytes under the same
/// name are an [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) and change nothing.
pub fn archive_push(repo: &Repository, source: &str, wal_path: &Path) -> Result<PushOutcome, PgError> {
    check_source(source)?;
    let name = wal_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PgError::local_msg(format!("{}: no file name", wal_path.display())))?
        .to_owned();
    classify_wal_file(&name)?;
    let bytes = read_limited(wal_path)?;
    store_wal_file(repo, source, &name, &bytes)
}

/// [`archive_push`] of bytes in memory (what `pg stream` stores for each complete segment and
/// history file): the same checks, the same record, the same chunking, so that the two agree.
pub(crate) fn store_wal_file(
    repo: &Repository,
    source: &str,
    name: &str,
    bytes: &[u8],
) -> Result<PushOutcome, PgError> {
    let name = name.to_owned();
    let class = classify_wal_file(&name)?;
    if class.kind == WalFileKind::StreamPartial {
        return Err(PgError::wal(format!("{name}: streamed partial segments are stored by `pg stream` only")));
    }
    let mut system_identifier = None;
    if let (WalFileKind::Segment | WalFileKind::Partial, Some(segment)) = (class.kind, &class.segment) {
        let header = WalSegmentHeader::parse(bytes).map_err(|e| e.with_context(&format!("WAL file {name}")))?;
        let major = header
            .pg_major()
            .ok_or_else(|| PgError::wal(format!("WAL file {name}: unknown WAL page magic {:#06X}", header.magic)))?;
        let found = ClusterRecord {
            system_identifier: header.system_identifier,
            pg_major: major,
            wal_segment_size: u64::from(header.segment_size),
        };
        let recorded = cluster_record(repo, source)?;
        let record = recorded.unwrap_or(found);
        header
            .check_named(&record.expected()?, segment)
            .map_err(|e| e.with_context(&format!("refusing WAL file {name} for source {source:?}")))?;
        if bytes.len() as u64 != record.wal_segment_size {
            return Err(PgError::wal(format!(
                "WAL file {name} holds {} bytes, a segment holds {}: refusing a truncated or padded segment",
                bytes.len(),
                record.wal_segment_size
            )));
        }
        if recorded.is_none() {
            // The source's first segment records its cluster (only once it passed the checks).
            ensure_cluster_record(repo, source, &found)?;
        }
        system_identifier = Some(header.system_identifier);
    } else if let Some(record) = cluster_record(repo, source)? {
        system_identifier = Some(record.system_identifier);
    }

    // Already archived (PostgreSQL retrying after a crash, or `pg stream` and archive_command
    // both storing it): compare the chunk ids, and write nothing either way.
    if let Some(existing) = get_record(repo, source, &name)? {
        let saved =
            repo.content_ids(bytes).map_err(|e| PgError::repository(&format!("chunking {name} to compare"), e))?;
        return compare(&existing, source, &name, saved.size, &saved.content);
    }

    // A new file. WAL shares no chunks with what is stored already, so the archiver neither loads
    // the index nor lists the packs (that cost grew with every segment archived): it writes one
    // pack (more only past the pack size) and one index file, each acknowledged by storage (fsynced
    // on disk). It keeps the shared lock until the record exists, so that no prune can take the
    // new blobs for garbage in between.
    let archiver = repo
        .archiver_without_index("pg archive-push", Arc::new(NoProgress))
        .map_err(|e| PgError::repository("starting archive-push", e))?;
    let saved = archiver.save_reader(bytes).map_err(|e| PgError::repository(&format!("storing {name}"), e))?;
    let (_, lock) = archiver.finish_keeping_lock().map_err(|e| PgError::repository(&format!("storing {name}"), e))?;
    let record = WalRecord {
        name: name.clone(),
        size: saved.size,
        content: saved.content,
        system_identifier,
        timeline: class.timeline,
        stored_at: Timestamp::now(),
    };
    lock.check().map_err(|e| PgError::repository(&format!("recording {name}"), e))?;
    let outcome = match repo.put_named(&wal_namespace(source), &name, &record) {
        Ok(PutNamed::Created) => Ok(PushOutcome::Stored),
        Ok(PutNamed::AlreadyIdentical) => Ok(PushOutcome::AlreadyIdentical),
        // Another push of the same name won the race: compare with what it stored (this push's
        // pack is then unreferenced, and prune removes it).
        Err(err) => match get_record(repo, source, &name)? {
            Some(existing) => compare(&existing, source, &name, record.size, &record.content),
            None => Err(PgError::repository(&format!("recording {name}"), err)),
        },
    };
    // The record is stored (or the push failed); a lock left behind by a failed delete is stale
    // as soon as this process exits.
    drop(lock);
    outcome
}

/// An identical file already archived is success; anything else is a conflict.
fn compare(existing: &WalRecord, source: &str, name: &str, size: u64, content: &[Id]) -> Result<PushOutcome, PgError> {
    if existing.size == size && existing.content == content {
        Ok(PushOutcome::AlreadyIdentical)
    } else {
        Err(PgError::conflict(format!(
            "the repository already holds {name} for source {source:?} with different content ({} bytes stored at {}, \
             this one {size} bytes); nothing was overwritten; hint: another cluster archiving under the same source name?",
            existing.size, existing.stored_at
        )))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, PgError> {
    let file = File::open(path).map_err(|e| PgError::local(format!("opening {}", path.display()), e))?;
    // Sized up front: growing the buffer while reading copies it again at every doubling and
    // touches twice the pages. A file that grows while it is read still reads correctly.
    let len = file.metadata().map_err(|e| PgError::local(format!("reading {}", path.display()), e))?.len();
    let mut bytes = Vec::with_capacity(len.min(MAX_WAL_FILE + 1) as usize);
    file.take(MAX_WAL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PgError::local(format!("reading {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_WAL_FILE {
        return Err(PgError::local_msg(format!("{} is larger than 1 GiB: not a WAL file", path.display())));
    }
    Ok(bytes)
}

/// The record of one archived file, if any.
pub fn get_record(repo: &Repository, source: &str, file_name: &str) -> Result<Option<WalRecord>, PgError> {
    check_source(source)?;
    classify_wal_file(file_name)?;
    let record: Option<WalRecord> = repo
        .get_named(&wal_namespace(source), file_name)
        .map_err(|e| PgError::repository(&format!("reading the record of {file_name}"), e))?;
    if let Some(record) = &record
        && record.name != file_name
    {
        return Err(PgError::protocol(format!("the record of {file_name} names {:?}", record.name)));
    }
    Ok(record)
}

/// The names of every archived file of a source, sorted.
pub fn list_wal(repo: &Repository, source: &str) -> Result<Vec<String>, PgError> {
    check_source(source)?;
    repo.list_named(&wal_namespace(source)).map_err(|e| PgError::repository("listing archived WAL", e))
}

/// Write an archived file to `dest` (`%p`): into a temporary file in its directory, verified
/// (every blob authenticated, the total size, a segment's header against the source's cluster),
/// fsynced, then renamed over `dest`. `Ok(false)` when the repository does not hold it.
pub fn archive_get(repo: &Repository, source: &str, file_name: &str, dest: &Path) -> Result<bool, PgError> {
    Ok(archive_fetch(repo, source, file_name, dest)?.is_some())
}

/// What [`archive_fetch`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The archived file itself.
    File,
    /// No complete segment is archived under this name: the newest partial segment `pg stream`
    /// stored, holding WAL up to `end` and zeros after it (see [`crate::partial`] for when
    /// this is served). Recovery ends at `end` unless more WAL arrives.
    StreamPartial {
        /// Where its WAL ends.
        end: Lsn,
    },
}

/// [`archive_get`], saying what it wrote: `Ok(None)` when the repository holds nothing for
/// `file_name`.
pub fn archive_fetch(
    repo: &Repository,
    source: &str,
    file_name: &str,
    dest: &Path,
) -> Result<Option<Fetched>, PgError> {
    let class = classify_wal_file(file_name)?;
    let Some(record) = get_record(repo, source, file_name)? else {
        if class.kind != WalFileKind::Segment {
            return Ok(None);
        }
        let Some(partial) = crate::partial::servable_partial(repo, source, file_name)? else {
            return Ok(None);
        };
        let end = partial.end_lsn()?;
        install(dest, file_name, |temp| crate::partial::write_partial(repo, source, &partial, temp))?;
        return Ok(Some(Fetched::StreamPartial { end }));
    };
    install(dest, file_name, |temp| write_record(repo, &record, &class, source, temp))?;
    Ok(Some(Fetched::File))
}

/// Write a file through `write` into a temporary file beside `dest`, then rename it over `dest`
/// and sync the directory; the temporary file is removed on failure.
fn install(dest: &Path, file_name: &str, write: impl FnOnce(&Path) -> Result<(), PgError>) -> Result<(), PgError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(".{file_name}.tidemark-{}.tmp", std::process::id()));
    let result = write(&temp).and_then(|()| {
        fs::rename(&temp, dest).map_err(|e| PgError::local(format!("renaming into {}", dest.display()), e))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| PgError::local(format!("syncing {}", dir.display()), e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_record(
    repo: &Repository,
    record: &WalRecord,
    class: &WalFileName,
    source: &str,
    temp: &Path,
) -> Result<(), PgError> {
    let name = &record.name;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| PgError::local(format!("creating {}", temp.display()), e))?;
    let mut written = 0u64;
    let mut first = Vec::new();
    for id in &record.content {
        let data = repo
            .read_blob(BlobType::Data, id)
            .map_err(|e| PgError::repository(&format!("reading {name} from the repository"), e))?;
        if first.len() < wal::LONG_PAGE_HEADER_LEN {
            first.extend_from_slice(&data[..data.len().min(wal::LONG_PAGE_HEADER_LEN)]);
        }
        file.write_all(&data).map_err(|e| PgError::local(format!("writing {}", temp.display()), e))?;
        written += data.len() as u64;
    }
    if written != record.size {
        return Err(PgError::protocol(format!(
            "{name}: the repository's blobs hold {written} bytes but its record says {}",
            record.size
        )));
    }
    if let (WalFileKind::Segment | WalFileKind::Partial, Some(segment)) = (class.kind, &class.segment)
        && let Some(cluster) = cluster_record(repo, source)?
    {
        WalSegmentHeader::parse(&first)
            .and_then(|h| h.check_named(&cluster.expected()?, segment))
            .map_err(|e| e.with_context(&format!("{name} in the repository")))?;
    }
    file.sync_all().map_err(|e| PgError::local(format!("syncing {}", temp.display()), e))
}

/// Where the archived segments of a source end: the end LSN of the highest archived segment (or
/// `.partial`; for a partial segment `pg stream` stored above every complete one, where its WAL
/// ends) and the `stored_at` of that record, if any.
pub(crate) fn archive_end(
    repo: &Repository,
    source: &str,
    names: &[String],
    segment_size: u64,
) -> Result<Option<(Lsn, Timestamp)>, PgError> {
    let mut ends: Vec<(Lsn, &String, bool)> = Vec::new();
    for name in names {
        let Ok(class) = classify_wal_file(name) else { continue };
        let (WalFileKind::Segment | WalFileKind::Partial | WalFileKind::StreamPartial, Some(segment)) =
            (class.kind, &class.segment)
        else {
            continue;
        };
        let Ok(parsed) = wal::parse_segment_file_name(segment, segment_size) else { continue };
        let streamed = class.kind == WalFileKind::StreamPartial;
        let end = match crate::partial::parse_partial_name(name) {
            Some((_, offset)) if streamed => Lsn(parsed.start.0 + offset),
            _ => Lsn(parsed.start.0 + segment_size),
        };
        ends.push((end, name, streamed));
    }
    // Newest first; the last listed of equal ends (`.partial` after its segment) first.
    ends.reverse();
    ends.sort_by_key(|(end, _, _)| std::cmp::Reverse(*end));
    for (end, name, streamed) in ends {
        if streamed {
            // A running `pg stream` replaces its partial records: one listed a moment ago may be
            // gone (a newer one, not in `names`, replaced it); the next older end is then a safe
            // answer.
            if let Some(record) = crate::partial::get_partial(repo, source, name)? {
                return Ok(Some((end, record.stored_at)));
            }
            continue;
        }
        let record = get_record(repo, source, name)?
            .ok_or_else(|| PgError::protocol(format!("{name} was listed but has no record")))?;
        return Ok(Some((end, record.stored_at)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let seg = classify_wal_file("000000020000000100000003").unwrap();
        assert_eq!((seg.kind, seg.timeline), (WalFileKind::Segment, 2));
        assert_eq!(classify_wal_file("000000010000000000000003.partial").unwrap().kind, WalFileKind::Partial);
        let history = classify_wal_file("0000000A.history").unwrap();
        assert_eq!((history.kind, history.timeline), (WalFileKind::History, 10));
        let backup = classify_wal_file("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(backup.kind, WalFileKind::BackupHistory);
        assert_eq!(backup.segment.as_deref(), Some("000000010000000000000002"));
        for bad in [
            "",
            "..",
            "x/000000010000000000000003",
            "00000001000000000000000a",
            "00000000.history",
            "000000000000000000000003",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000003.partial.partial",
            "backup_label",
        ] {
            assert!(classify_wal_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_names() {
        for good in ["main", "db-1.prod", "A_b"] {
            check_source(good).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é"] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
    }
}
