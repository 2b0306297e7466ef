//! `pg verify`: prove that the archived WAL is continuous from every base backup of a source to
//! the newest archived segment, and name every gap.
//!
//! The judgement is a pure function, [`verify_plan`], of the base backups, the archived file
//! names and the parsed timeline history files; [`pg_verify`] gathers them from a repository.
//!
//! For each backup, the timeline followed is the newest one whose history descends from the
//! backup's timeline after the backup started (what `recovery_target_timeline = 'latest'` does),
//! and each segment number is expected on the timeline that covers it: from a switch point on,
//! including the segment holding the switch point, the child timeline's file (as PostgreSQL reads
//! them). Every expected segment from the one holding the start LSN to the newest archived one on
//! that path must be archived (`.partial` files do not count: recovery never fetches them). A
//! backup whose segments up to its stop LSN are not all archived cannot be restored at all.
//!
//! By default only the names and the history files are read (one listing: cheap on any
//! repository). With [`VerifyOptions::read_data`] (`pg verify --read-data`) every archived file is
//! read back as `archive-get` would: its record and every blob authenticated, its size, and a
//! segment's page header against the source's cluster and its own name. A damaged file is listed
//! in [`VerifyReport::damaged`] and counts as missing, so the backups that need it show a gap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{NoProgress, Progress, Repository};

use crate::archive::{self, ClusterRecord, WalFileKind, classify_wal_file};
use crate::backup::{SNAPSHOT_KIND, extra};
use crate::restore::{RecoveryTarget, RestorePlan};
use crate::wal::WalSegmentHeader;
use crate::{Lsn, PgError, wal};

/// Parsed timeline history files: for each timeline, its ancestors oldest first, as
/// `(parent timeline, switch point)` (the parent's WAL ends at the switch point).
pub type Histories = BTreeMap<u32, Vec<(u32, Lsn)>>;

/// A base backup, as far as WAL continuity goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPoint {
    /// Snapshot id.
    pub id: Id,
    /// When the backup started.
    pub time: Timestamp,
    /// Timeline at the start.
    pub timeline: u32,
    /// Start LSN: WAL from here on is needed.
    pub start_lsn: Lsn,
    /// Stop LSN: recovery is consistent once it has replayed to here.
    pub stop_lsn: Lsn,
    /// `wal_segment_size` in bytes.
    pub segment_size: u64,
}

/// The verdict on one base backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVerdict {
    /// The backup.
    pub backup: BackupPoint,
    /// The timelines followed, oldest first (the backup's own first).
    pub timelines: Vec<u32>,
    /// The segment holding the start LSN: the first one recovery needs.
    pub first_segment: String,
    /// The segment holding the stop LSN: the backup is unusable without every segment up to it.
    pub stop_segment: String,
    /// The newest archived segment on the timeline path, if any.
    pub last_segment: Option<String>,
    /// Missing segments as inclusive ranges `(first missing, last missing)` of file names.
    pub gaps: Vec<(String, String)>,
    /// Every segment from the first to the stop segment is archived.
    pub restorable: bool,
}

impl BackupVerdict {
    /// Continuous: restorable and no gap up to the newest archived segment.
    pub fn ok(&self) -> bool {
        self.restorable && self.gaps.is_empty()
    }
}

/// The verdict on every base backup of a source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// One per backup, oldest start LSN first.
    pub backups: Vec<BackupVerdict>,
    /// Snapshots of the source that are not usable base backups (missing or malformed
    /// positions, another cluster).
    pub skipped: Vec<Id>,
    /// Archived files whose stored content failed verification (only with
    /// [`VerifyOptions::read_data`]); they count as missing in [`backups`](Self::backups).
    pub damaged: Vec<DamagedWal>,
    /// Whether every archived file was read back.
    pub read_data: bool,
}

impl VerifyReport {
    /// Every backup is continuous, none was skipped and no archived file is damaged.
    pub fn ok(&self) -> bool {
        self.skipped.is_empty() && self.damaged.is_empty() && self.backups.iter().all(BackupVerdict::ok)
    }
}

/// An archived WAL file whose stored content failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedWal {
    /// Its file name.
    pub name: String,
    /// What is wrong (unreadable record, blob failing authentication, wrong size or header).
    pub problem: String,
}

/// How much [`pg_verify_with`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Read back and authenticate every archived file, not only the names.
    pub read_data: bool,
}

/// Parse a timeline history file (`00000002.history`): lines `parentTLI<TAB>switchpoint<TAB>reason`;
/// blank lines and `#` comments are skipped, as PostgreSQL does. Timeline ids must increase.
pub fn parse_history(text: &str) -> Result<Vec<(u32, Lsn)>, PgError> {
    let mut entries: Vec<(u32, Lsn)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || PgError::wal(format!("invalid timeline history line {line:?}: expected TLI<TAB>LSN<TAB>reason"));
        let mut fields = line.split_whitespace();
        let tli: u32 = fields.next().and_then(|f| f.parse().ok()).filter(|t| *t != 0).ok_or_else(bad)?;
        let lsn: Lsn = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        // Timelines only go up; switch points need not (a timeline that recovery followed but
        // left before it began ends at an earlier point than its own start), as PostgreSQL's
        // readTimeLineHistory accepts.
        if entries.last().is_some_and(|(t, _)| tli <= *t) {
            return Err(PgError::wal(format!("timeline history out of order at line {line:?}")));
        }
        entries.push((tli, lsn));
    }
    Ok(entries)
}

/// Judge every backup against the archived WAL (pure). `segments` are the archived file names
/// (segments, `.partial`, `.history`, `.backup`; others are ignored); `histories` the parsed
/// history files by timeline.
pub fn verify_plan(backups: &[BackupPoint], segments: &[String], histories: &Histories) -> VerifyReport {
    let mut sorted: Vec<&BackupPoint> = backups.iter().collect();
    sorted.sort_by_key(|b| (b.start_lsn, b.time, b.id));
    VerifyReport {
        backups: sorted.into_iter().map(|b| verify_one(b, segments, histories)).collect(),
        ..VerifyReport::default()
    }
}

fn verify_one(backup: &BackupPoint, names: &[String], histories: &Histories) -> BackupVerdict {
    let size = backup.segment_size;
    let segno = |lsn: Lsn| wal::segment_number(lsn, size);
    // The newest timeline descending from the backup's after its start.
    let target = histories
        .iter()
        .filter(|(_, h)| h.iter().any(|(parent, switch)| *parent == backup.timeline && *switch > backup.start_lsn))
        .map(|(t, _)| *t)
        .filter(|t| *t > backup.timeline)
        .max()
        .unwrap_or(backup.timeline);
    // The path: (timeline, first segment number it covers), from the backup's timeline on.
    let mut path: Vec<(u32, u64)> = vec![(backup.timeline, 0)];
    if target != backup.timeline {
        let history = &histories[&target];
        let from = history.iter().position(|(t, _)| *t == backup.timeline).unwrap_or(0);
        for (i, (_, switch)) in history.iter().enumerate().skip(from) {
            let child = history.get(i + 1).map_or(target, |(t, _)| *t);
            path.push((child, segno(*switch)));
        }
    }
    let covering = |s: u64| path.iter().rev().find(|(_, begin)| *begin <= s).map_or(backup.timeline, |(t, _)| *t);
    let name = |s: u64| wal::segment_file_name(covering(s), Lsn(s.saturating_mul(size)), size);

    let mut archived = BTreeSet::new();
    for file in names {
        let Ok(class) = classify_wal_file(file) else { continue };
        if let (WalFileKind::Segment, Some(segment)) = (class.kind, &class.segment)
            && let Ok(parsed) = wal::parse_segment_file_name(segment, size)
        {
            archived.insert((parsed.timeline, segno(parsed.start)));
        }
    }
    let first = segno(backup.start_lsn);
    let stop = segno(Lsn(backup.stop_lsn.0.saturating_sub(1))).max(first);
    let last = archived.iter().filter(|(t, s)| *s >= first && covering(*s) == *t).map(|(_, s)| *s).max();
    let end = last.unwrap_or(stop).max(stop);

    let mut gaps = Vec::new();
    let mut restorable = true;
    let mut open: Option<u64> = None;
    for s in first..=end {
        if archived.contains(&(covering(s), s)) {
            if let Some(from) = open.take() {
                gaps.push((name(from), name(s - 1)));
            }
        } else {
            open.get_or_insert(s);
            if s <= stop {
                restorable = false;
            }
        }
    }
    if let Some(from) = open {
        gaps.push((name(from), name(end)));
    }
    let mut timelines: Vec<u32> = path.iter().map(|(t, _)| *t).collect();
    timelines.dedup();
    BackupVerdict {
        backup: backup.clone(),
        timelines,
        first_segment: name(first),
        stop_segment: name(stop),
        last_segment: last.map(name),
        gaps,
        restorable,
    }
}

/// Verify the WAL continuity of every base backup of `source` in `repo` from the archived names
/// (see [`pg_verify_with`] to read the data too). An error when the source has no base backup;
/// gaps are in the report, not errors.
pub fn pg_verify(repo: &Repository, source: &str) -> Result<VerifyReport, PgError> {
    pg_verify_with(repo, source, &VerifyOptions::default(), Arc::new(NoProgress))
}

/// [`pg_verify`], reading back and authenticating every archived file when
/// `options.read_data` (in parallel; progress counts files).
pub fn pg_verify_with(
    repo: &Repository,
    source: &str,
    options: &VerifyOptions,
    progress: Arc<dyn Progress>,
) -> Result<VerifyReport, PgError> {
    archive::check_source(source)?;
    let cluster = archive::cluster_record(repo, source)?.ok_or_else(|| {
        PgError::target(format!("source {source:?} has no base backup or archived WAL in this repository"))
    })?;
    let snapshots = repo.snapshots().map_err(|e| PgError::repository("listing snapshots", e))?;
    let mut backups = Vec::new();
    let mut skipped = Vec::new();
    for (id, snapshot) in &snapshots {
        if snapshot.source.as_deref() != Some(source) || snapshot.kind != SNAPSHOT_KIND {
            continue;
        }
        let get = |k: &str| snapshot.extra.get(k).map(String::as_str);
        let point = (|| {
            if get(extra::SYSTEM_IDENTIFIER)? != cluster.system_identifier.to_string() {
                return None;
            }
            Some(BackupPoint {
                id: *id,
                time: snapshot.time,
                timeline: get(extra::TIMELINE)?.parse().ok()?,
                start_lsn: get(extra::START_LSN)?.parse().ok()?,
                stop_lsn: get(extra::STOP_LSN)?.parse().ok()?,
                segment_size: match get(extra::WAL_SEGMENT_SIZE) {
                    Some(s) => s.parse().ok()?,
                    None => cluster.wal_segment_size,
                },
            })
        })();
        match point {
            Some(point) => backups.push(point),
            None => skipped.push(*id),
        }
    }
    if backups.is_empty() && skipped.is_empty() {
        return Err(PgError::target(format!(
            "source {source:?} has no base backup; hint: take one with `pg backup` first"
        )));
    }
    let mut names = archive::list_wal(repo, source)?;
    let histories = load_histories(repo, source, &names)?;
    let mut damaged = Vec::new();
    if options.read_data {
        // Streamed partial segments have records of their own (`pg stream`): not read here.
        let wanted: Vec<String> = names
            .iter()
            .filter(|n| classify_wal_file(n).is_ok_and(|c| c.kind != WalFileKind::StreamPartial))
            .cloned()
            .collect();
        damaged = check_wal_files(repo, source, &cluster, &wanted, progress.as_ref())
            .into_iter()
            .filter_map(|c| c.problem.map(|problem| DamagedWal { name: c.name, problem }))
            .collect();
        names.retain(|n| !damaged.iter().any(|d| d.name == *n));
    }
    let mut report = verify_plan(&backups, &names, &histories);
    report.skipped = skipped;
    report.damaged = damaged;
    report.read_data = options.read_data;
    Ok(report)
}

/// Before a restore: read back every archived file recovery will fetch for `plan` (the segments
/// from the backup's start on, on its timeline or later ones, and the history files) and refuse
/// when one it needs is damaged. For a time target, segments after the first one stored after
/// the target are not needed: a damaged one there is only a warning.
pub(crate) fn check_restore_wal(
    repo: &Repository,
    source: &str,
    cluster: &ClusterRecord,
    names: &[String],
    plan: &RestorePlan,
    target: &RecoveryTarget,
    progress: &dyn Progress,
) -> Result<(), PgError> {
    let size = cluster.wal_segment_size;
    let (first, last) = plan.segments;
    let segno = |class: &archive::WalFileName| {
        let parsed = wal::parse_segment_file_name(class.segment.as_deref()?, size).ok()?;
        Some(wal::segment_number(parsed.start, size))
    };
    let mut wanted = Vec::new();
    let mut numbers = Vec::new();
    for name in names {
        let Ok(class) = classify_wal_file(name) else { continue };
        let number = match class.kind {
            WalFileKind::History => None,
            WalFileKind::Segment if class.timeline >= plan.backup.timeline => match segno(&class) {
                Some(n) if (first..=last).contains(&n) => Some(n),
                _ => continue,
            },
            _ => continue,
        };
        wanted.push(name.clone());
        numbers.push(number);
    }
    progress.status(&format!("reading back the {} archived WAL file(s) recovery needs", wanted.len()));
    let checked = check_wal_files(repo, source, cluster, &wanted, &NoProgress);
    let needed_up_to = match target {
        RecoveryTarget::Time(t) => checked
            .iter()
            .zip(&numbers)
            .filter(|(c, _)| c.stored_at.is_some_and(|at| at > *t))
            .filter_map(|(_, n)| *n)
            .min(),
        _ => None,
    };
    for (c, n) in checked.iter().zip(&numbers) {
        let Some(problem) = &c.problem else { continue };
        if n.zip(needed_up_to).is_some_and(|(n, bound)| n > bound) {
            progress
                .warn(&format!("archived WAL file {} is damaged ({problem}); this restore does not need it", c.name));
            continue;
        }
        return Err(PgError::target(format!(
            "archived WAL file {} is damaged: {problem}; recovery would stop there, before the target, so nothing was \
             restored; hint: `tidemark pg verify --source {source} --read-data` lists every damaged file, `tidemark \
             check --read-data` the damaged packs; restore to a point before it (a base backup taken after it needs \
             none of the WAL before it)",
            c.name
        )));
    }
    Ok(())
}

/// Read and parse every history file among `names`.
pub(crate) fn load_histories(repo: &Repository, source: &str, names: &[String]) -> Result<Histories, PgError> {
    let mut histories = Histories::new();
    for name in names {
        let Ok(class) = classify_wal_file(name) else { continue };
        if class.kind != WalFileKind::History {
            continue;
        }
        let bytes = read_archived(repo, source, name, None)?;
        let entries = parse_history(&String::from_utf8_lossy(&bytes)).map_err(|e| e.with_context(name))?;
        histories.insert(class.timeline, entries);
    }
    Ok(histories)
}

/// One archived file read back by [`check_wal_files`].
#[derive(Debug, Clone)]
pub(crate) struct CheckedWal {
    /// The file name.
    pub name: String,
    /// When its record says it was stored (unknown when the record is unreadable).
    pub stored_at: Option<Timestamp>,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// Read back every file of `names` as archive-get would (record and blobs authenticated, size,
/// a segment's header against `cluster` and its name), on several threads; one result per name,
/// in the order given.
pub(crate) fn check_wal_files(
    repo: &Repository,
    source: &str,
    cluster: &ClusterRecord,
    names: &[String],
    progress: &dyn Progress,
) -> Vec<CheckedWal> {
    progress.set_total(0, names.len() as u64);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CheckedWal>>> = Mutex::new(vec![None; names.len()]);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let checked = check_one(repo, source, cluster, name);
                    progress.inc(0, 1);
                    if let Ok(mut slots) = results.lock()
                        && let Some(slot) = slots.get_mut(i)
                    {
                        *slot = Some(checked);
                    }
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|e| e.into_inner());
    slots
        .into_iter()
        .zip(names)
        .map(|(slot, name)| {
            slot.unwrap_or_else(|| CheckedWal {
                name: name.clone(),
                stored_at: None,
                problem: Some("not checked (a worker failed)".to_owned()),
            })
        })
        .collect()
}

fn check_one(repo: &Repository, source: &str, cluster: &ClusterRecord, name: &str) -> CheckedWal {
    let record = match archive::get_record(repo, source, name) {
        Ok(Some(record)) => record,
        Ok(None) => {
            return CheckedWal {
                name: name.to_owned(),
                stored_at: None,
                problem: Some("listed, but its record is gone".to_owned()),
            };
        }
        Err(e) => return CheckedWal { name: name.to_owned(), stored_at: None, problem: Some(e.to_string()) },
    };
    let problem = record_bytes(repo, &record, Some(cluster)).err().map(|e| e.to_string());
    CheckedWal { name: name.to_owned(), stored_at: Some(record.stored_at), problem }
}

/// The bytes of an archived file, authenticated, with its size checked, and for segments (when
/// `cluster` is given) the page header against the cluster and the file name.
fn read_archived(
    repo: &Repository,
    source: &str,
    name: &str,
    cluster: Option<&ClusterRecord>,
) -> Result<Vec<u8>, PgError> {
    let record = archive::get_record(repo, source, name)?
        .ok_or_else(|| PgError::protocol(format!("{name} was listed but has no record")))?;
    record_bytes(repo, &record, cluster)
}

fn record_bytes(
    repo: &Repository,
    record: &archive::WalRecord,
    cluster: Option<&ClusterRecord>,
) -> Result<Vec<u8>, PgError> {
    let name = &record.name;
    let mut bytes = Vec::with_capacity(usize::try_from(record.size).unwrap_or(0).min(1 << 30));
    for id in &record.content {
        let data = repo
            .read_blob(BlobType::Data, id)
            .map_err(|e| PgError::repository(&format!("reading {name} from the repository"), e))?;
        bytes.extend_from_slice(&data);
    }
    if bytes.len() as u64 != record.size {
        return Err(PgError::protocol(format!(
            "{name}: the repository's blobs hold {} bytes but its record says {}",
            bytes.len(),
            record.size
        )));
    }
    if let Some(cluster) = cluster
        && let Ok(class) = classify_wal_file(name)
        && let (WalFileKind::Segment | WalFileKind::Partial, Some(segment)) = (class.kind, &class.segment)
    {
        WalSegmentHeader::parse(&bytes)
            .and_then(|h| h.check_named(&cluster.expected()?, segment))
            .map_err(|e| e.with_context(&format!("{name} in the repository")))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = wal::DEFAULT_SEGMENT_SIZE;

    fn backup(n: u8, timeline: u32, start_seg: u64, stop_seg: u64) -> BackupPoint {
        BackupPoint {
            id: Id([n; 32]),
            time: Timestamp::from_second(1000 + i64::from(n)).unwrap(),
            timeline,
            start_lsn: Lsn(start_seg * SEG + 0x28),
            stop_lsn: Lsn(stop_seg * SEG + 0x100),
            segment_size: SEG,
        }
    }

    fn seg(tli: u32, n: u64) -> String {
        wal::segment_file_name(tli, Lsn(n * SEG), SEG)
    }

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|n| seg(tli, n)).collect()
    }

    #[test]
    fn contiguous_archive_is_ok() {
        let mut names = segs(1, 2..=9);
        names.push("000000010000000000000002.00000028.backup".into());
        names.push("000000010000000000000009.partial".into());
        let report = verify_plan(&[backup(1, 1, 2, 2), backup(2, 1, 5, 6)], &names, &Histories::new());
        assert!(report.ok(), "{report:?}");
        let v = &report.backups[0];
        assert_eq!(v.first_segment, "000000010000000000000002");
        assert_eq!(v.stop_segment, "000000010000000000000002");
        assert_eq!(v.last_segment.as_deref(), Some("000000010000000000000009"));
        assert_eq!(v.timelines, vec![1]);
        assert_eq!(report.backups[1].first_segment, "000000010000000000000005");
    }

    #[test]
    fn a_missing_segment_in_the_middle_is_one_named_gap() {
        let mut names = segs(1, 2..=9);
        names.retain(|n| n != "000000010000000000000006");
        let report =
            verify_plan(&[backup(2, 1, 5, 5), backup(1, 1, 2, 2), backup(3, 1, 7, 8)], &names, &Histories::new());
        assert!(!report.ok());
        // Sorted by start: backups 1 and 2 see the gap, backup 3 starts after it.
        let ids: Vec<Id> = report.backups.iter().map(|v| v.backup.id).collect();
        assert_eq!(ids, vec![Id([1; 32]), Id([2; 32]), Id([3; 32])]);
        for v in &report.backups[..2] {
            assert_eq!(v.gaps, vec![("000000010000000000000006".to_owned(), "000000010000000000000006".to_owned())]);
            assert!(v.restorable && !v.ok());
        }
        assert!(report.backups[2].ok(), "{:?}", report.backups[2]);
        // Several missing in a row: one range.
        names.retain(|n| n != "000000010000000000000007");
        let report = verify_plan(&[backup(1, 1, 2, 2)], &names, &Histories::new());
        assert_eq!(
            report.backups[0].gaps,
            vec![("000000010000000000000006".to_owned(), "000000010000000000000007".to_owned())]
        );
    }

    #[test]
    fn a_timeline_switch_is_followed_through_the_history_file() {
        // Timeline 2 branched off timeline 1 inside segment 5: segment 5 onwards is read from 2.
        let switch = Lsn(5 * SEG + 0x1234);
        let history = parse_history("1\t0/5001234\tno recovery target specified\n\n# comment\n").unwrap();
        assert_eq!(history, vec![(1, switch)]);
        let histories = Histories::from([(2, history)]);
        let mut names = segs(1, 2..=5);
        names.push("000000010000000000000005.partial".into());
        names.extend(segs(2, 5..=8));
        names.push("00000002.history".into());
        let report = verify_plan(&[backup(1, 1, 2, 3)], &names, &histories);
        let v = &report.backups[0];
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.timelines, vec![1, 2]);
        assert_eq!(v.last_segment.as_deref(), Some("000000020000000000000008"));

        // Without timeline 2's copy of the switch segment, timeline 1's does not do.
        names.retain(|n| n != "000000020000000000000005");
        let v = &verify_plan(&[backup(1, 1, 2, 3)], &names, &histories).backups[0];
        assert_eq!(v.gaps, vec![("000000020000000000000005".to_owned(), "000000020000000000000005".to_owned())]);
        // Without the history file, timeline 2 is not followed: timeline 1 ends at segment 5.
        let v = &verify_plan(&[backup(1, 1, 2, 3)], &segs(1, 2..=5), &Histories::new()).backups[0];
        assert!(v.ok() && v.timelines == vec![1], "{v:?}");
        // A backup on timeline 1 after the switch point is not an ancestor of timeline 2.
        let late = verify_plan(&[backup(2, 1, 6, 6)], &segs(1, 6..=7), &histories);
        assert_eq!(late.backups[0].timelines, vec![1]);
        assert!(late.ok());
    }

    #[test]
    fn a_missing_stop_segment_makes_the_backup_unrestorable() {
        let mut names = segs(1, 2..=6);
        names.retain(|n| n != "000000010000000000000003");
        let report = verify_plan(&[backup(1, 1, 2, 3)], &names, &Histories::new());
        let v = &report.backups[0];
        assert!(!v.restorable && !v.ok());
        assert_eq!(v.stop_segment, "000000010000000000000003");
        assert_eq!(v.gaps, vec![("000000010000000000000003".to_owned(), "000000010000000000000003".to_owned())]);
        // Nothing archived after the start at all: the gap runs to the stop segment.
        let v = &verify_plan(&[backup(1, 1, 2, 3)], &[], &Histories::new()).backups[0];
        assert!(!v.restorable && v.last_segment.is_none());
        assert_eq!(v.gaps, vec![(seg(1, 2), seg(1, 3))]);
    }

    #[test]
    fn history_parsing_refuses_garbage() {
        for bad in ["x\t0/1\treason", "1\tnope", "0\t0/1", "2\t0/5\n1\t0/6", "1\t0/5\n1\t0/6"] {
            assert!(parse_history(bad).is_err(), "{bad:?}");
        }
        // Seen from PostgreSQL 15: recovery followed timeline 3 but stopped (and promoted) before
        // timeline 3 began, so timeline 3 ends before its own start.
        let real = "1\t0/3000148\tr\n2\t0/30A0000\tr\n3\t0/3001E90\tbefore 2026-11-23 16:31:09.958942+00\n";
        assert_eq!(parse_history(real).unwrap().len(), 3);
        assert_eq!(parse_history("").unwrap(), vec![]);
        assert_eq!(
            parse_history("1\t0/3000000\tr\n2\t1/20\tr\n").unwrap(),
            vec![(1, Lsn(0x300_0000)), (2, Lsn(0x1_0000_0020))]
        );
    }
}
