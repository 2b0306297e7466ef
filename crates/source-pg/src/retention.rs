//! Retention for a PostgreSQL source: which base backups a keep policy removes, and which
//! archived WAL files no retained base backup needs any more.
//!
//! The decision is a pure function, [`plan_retention`], of the source's base backup snapshots,
//! the archived WAL file names, the parsed timeline histories, the policy and `now`;
//! [`pg_forget`] gathers those under the repository's exclusive lock and executes the plan.
//!
//! # Rules
//!
//! - Base backups: restic's keep rules ([`tidemark_repo::forget::plan`]) over every base backup
//!   of the source (one group, whatever host took them). `--keep-within D` is a promise on top:
//!   every instant of the last `D` stays restorable, so the newest base backup that had ended at
//!   or before `now - D` (the one `pg restore --time` would pick for that instant) is kept too,
//!   with the reason `window`.
//! - WAL: a base backup needs the segments from the one holding its start LSN onwards (on its
//!   timeline and the timelines that branch from it later, all of which have higher segment
//!   numbers). So a file is deleted only when its segment number is below the segment of the
//!   oldest retained backup's start LSN: complete segments and `.backup` files below it; a
//!   `.partial` (a timeline's last segment, or one `pg stream` stored up to an offset) below it
//!   only when a complete segment newer than it exists (a partial at the head of the archive is
//!   the newest WAL there is). History files are never deleted: they are
//!   tiny, every later timeline's recovery reads its ancestors', and PostgreSQL picks a new
//!   timeline id by probing the archive for them, so deleting one could let a timeline id be
//!   reused.
//! - No WAL is deleted when no base backup would remain, or when a retained snapshot of the
//!   source is not a usable base backup (its start LSN is unknown).
//! - Before anything is deleted, the plan proves itself: WAL continuity ([`verify_plan`]) of every
//!   retained backup is computed with and without the doomed files and must be identical.
//! - Any listing error (snapshots, WAL records, history files) is an error before the first
//!   delete: a short listing never turns into deletions.

use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use tidemark_repo::forget::{self, Decision, KeepPolicy};
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::Snapshot;
use tidemark_repo::{Progress, Repository, SnapshotFilter};

use crate::archive::{self, ClusterRecord, WalFileKind, classify_wal_file};
use crate::backup::SNAPSHOT_KIND;
use crate::restore::BackupRef;
use crate::verify::{BackupPoint, Histories, load_histories, verify_plan};
use crate::{PgError, wal};

/// The reason given to the base backup kept by the `--keep-within` promise.
pub const WINDOW_REASON: &str = "window";

/// What retention would do to one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPlan {
    /// The verdict on each considered base backup, newest first (restic's reasons plus
    /// [`WINDOW_REASON`]).
    pub decisions: Vec<Decision>,
    /// `now - keep_within`, when a window was asked for.
    pub window_start: Option<Timestamp>,
    /// The segment holding the oldest retained backup's start LSN: the first WAL kept.
    pub keep_wal_from: Option<String>,
    /// WAL files to delete, oldest first.
    pub wal_delete: Vec<String>,
    /// WAL files kept.
    pub wal_kept: usize,
    /// Why no WAL is deleted at all, when that is the case for a reason other than "nothing is old
    /// enough".
    pub wal_held: Option<String>,
}

impl RetentionPlan {
    /// The snapshots to remove.
    pub fn doomed(&self) -> impl Iterator<Item = Id> + '_ {
        self.decisions.iter().filter(|d| !d.keep).map(|d| d.id)
    }
}

/// What [`plan_retention`] works from.
#[derive(Debug, Clone, Copy)]
pub struct RetentionInput<'a> {
    /// Every base backup snapshot of the source (kind `postgres`), any order.
    pub snapshots: &'a [(Id, Snapshot)],
    /// The source's cluster.
    pub cluster: &'a ClusterRecord,
    /// Every archived WAL file name of the source.
    pub wal: &'a [String],
    /// The parsed history files.
    pub histories: &'a Histories,
    /// Which snapshots the keep rules consider; the others are kept (and keep their WAL).
    pub filter: &'a SnapshotFilter,
}

/// Decide what to remove (pure). An empty policy is refused: it would remove every backup.
pub fn plan_retention(
    input: &RetentionInput<'_>,
    policy: &KeepPolicy,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<RetentionPlan, PgError> {
    if policy.is_empty() {
        return Err(PgError::config(
            "refusing to forget without a keep option: that would remove every base backup; hint: give --keep-last, \
             --keep-daily, --keep-within, ...",
        ));
    }
    let size = input.cluster.wal_segment_size;
    // One group per source, whatever host took the backups.
    let considered: Vec<(Id, Snapshot)> = input
        .snapshots
        .iter()
        .filter(|(_, s)| input.filter.matches(s))
        .map(|(id, s)| (*id, Snapshot { hostname: String::new(), ..s.clone() }))
        .collect();
    let mut decisions: Vec<Decision> =
        forget::plan(&considered, policy, tz).into_iter().flat_map(|g| g.decisions).collect();
    decisions.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));

    let refs: Vec<(Id, Option<BackupRef>)> =
        input.snapshots.iter().map(|(id, s)| (*id, BackupRef::from_snapshot(*id, s, input.cluster))).collect();
    let window_start = policy.within.map(|d| now - d);
    if let Some(start) = window_start {
        // What plan_restore picks for a target at `start`: the newest by start LSN that had ended.
        let anchor = refs
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .filter(|b| b.end <= start)
            .max_by_key(|b| (b.start_lsn, b.time))
            .map(|b| b.id);
        if let Some(d) = decisions.iter_mut().find(|d| Some(d.id) == anchor) {
            d.keep = true;
            d.reasons.push(WINDOW_REASON.to_owned());
        }
    }

    let doomed: std::collections::BTreeSet<Id> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    let retained: Vec<&(Id, Option<BackupRef>)> = refs.iter().filter(|(id, _)| !doomed.contains(id)).collect();
    let mut plan = RetentionPlan {
        decisions,
        window_start,
        keep_wal_from: None,
        wal_delete: Vec::new(),
        wal_kept: input.wal.len(),
        wal_held: None,
    };
    if retained.is_empty() {
        plan.wal_held = Some("no base backup of the source would remain, so its WAL is kept".to_owned());
        return Ok(plan);
    }
    if let Some((id, _)) = retained.iter().find(|(_, b)| b.is_none()) {
        plan.wal_held = Some(format!(
            "snapshot {} is kept but is not a usable base backup of this cluster (its start LSN is unknown), so no WAL \
             is deleted",
            id.short()
        ));
        return Ok(plan);
    }
    let backups: Vec<&BackupRef> = retained.iter().filter_map(|(_, b)| b.as_ref()).collect();
    let Some(oldest) = backups.iter().min_by_key(|b| (b.start_lsn, b.time)) else {
        return Ok(plan);
    };
    let cutoff = wal::segment_number(oldest.start_lsn, size);
    plan.keep_wal_from = Some(wal::segment_file_name(oldest.timeline, oldest.start_lsn, size));

    let segno_of =
        |segment: &str| wal::parse_segment_file_name(segment, size).ok().map(|p| wal::segment_number(p.start, size));
    let newest_full = input
        .wal
        .iter()
        .filter_map(|n| classify_wal_file(n).ok())
        .filter(|c| c.kind == WalFileKind::Segment)
        .filter_map(|c| c.segment.as_deref().and_then(segno_of))
        .max();
    let mut delete: Vec<(u64, String)> = Vec::new();
    for name in input.wal {
        let Ok(class) = classify_wal_file(name) else { continue };
        let Some(segno) = class.segment.as_deref().and_then(segno_of) else { continue };
        let doomed = match class.kind {
            WalFileKind::Segment | WalFileKind::BackupHistory => segno < cutoff,
            WalFileKind::Partial | WalFileKind::StreamPartial => {
                segno < cutoff && newest_full.is_some_and(|n| n > segno)
            }
            WalFileKind::History => false,
        };
        if doomed {
            delete.push((segno, name.clone()));
        }
    }
    delete.sort();
    plan.wal_delete = delete.into_iter().map(|(_, n)| n).collect();
    plan.wal_kept = input.wal.len() - plan.wal_delete.len();

    // The proof: no retained backup's continuity changes.
    let points: Vec<BackupPoint> = backups
        .iter()
        .map(|b| BackupPoint {
            id: b.id,
            time: b.time,
            timeline: b.timeline,
            start_lsn: b.start_lsn,
            stop_lsn: b.stop_lsn,
            segment_size: size,
        })
        .collect();
    let doomed_wal: std::collections::BTreeSet<&String> = plan.wal_delete.iter().collect();
    let remaining: Vec<String> = input.wal.iter().filter(|n| !doomed_wal.contains(n)).cloned().collect();
    let before = verify_plan(&points, input.wal, input.histories);
    let after = verify_plan(&points, &remaining, input.histories);
    if before != after {
        return Err(PgError::wal(format!(
            "refusing to delete WAL: the planned deletion of {} file(s) would change the continuity of a retained base \
             backup (an internal inconsistency; nothing was deleted)",
            plan.wal_delete.len()
        )));
    }
    Ok(plan)
}

/// What to forget.
#[derive(Debug, Clone)]
pub struct PgForgetOptions {
    /// The source name.
    pub source: String,
    /// The keep rules.
    pub policy: KeepPolicy,
    /// Only these snapshots are considered for removal (the others are kept).
    pub filter: SnapshotFilter,
    /// The time zone of the hourly/daily/... buckets.
    pub tz: TimeZone,
    /// The present, for `--keep-within`.
    pub now: Timestamp,
    /// Only plan.
    pub dry_run: bool,
}

/// What [`pg_forget`] did.
#[derive(Debug, Clone)]
pub struct PgForgetOutcome {
    /// The plan.
    pub plan: RetentionPlan,
    /// Snapshots removed.
    pub removed: Vec<Id>,
    /// WAL files deleted.
    pub wal_deleted: Vec<String>,
}

/// Apply retention to a PostgreSQL source: remove the base backups the policy does not keep,
/// then the WAL files no retained backup needs (see the module docs). Runs under the
/// repository's exclusive lock (so no base backup or archive-push runs meanwhile); the data of
/// what was removed is freed by a later prune.
pub fn pg_forget(
    repo: &Repository,
    options: &PgForgetOptions,
    progress: Arc<dyn Progress>,
) -> Result<PgForgetOutcome, PgError> {
    archive::check_source(&options.source)?;
    let _lock = if options.dry_run {
        None
    } else {
        Some(repo.lock("pg forget", true).map_err(|e| PgError::repository("locking the repository for forget", e))?)
    };
    let cluster = archive::cluster_record(repo, &options.source)?.ok_or_else(|| {
        PgError::target(format!("source {:?} has no base backup or archived WAL in this repository", options.source))
    })?;
    let snapshots: Vec<(Id, Snapshot)> = repo
        .snapshots()
        .map_err(|e| PgError::repository("listing snapshots (nothing was deleted)", e))?
        .into_iter()
        .filter(|(_, s)| s.kind == SNAPSHOT_KIND && s.source.as_deref() == Some(options.source.as_str()))
        .collect();
    let names = archive::list_wal(repo, &options.source)
        .map_err(|e| PgError::new(e.kind(), format!("{} (nothing was deleted)", e.message())))?;
    let histories = load_histories(repo, &options.source, &names)?;
    let input = RetentionInput {
        snapshots: &snapshots,
        cluster: &cluster,
        wal: &names,
        histories: &histories,
        filter: &options.filter,
    };
    let plan = plan_retention(&input, &options.policy, &options.tz, options.now)?;
    if let Some(why) = &plan.wal_held {
        progress.warn(why);
    }
    if options.dry_run {
        return Ok(PgForgetOutcome { plan, removed: Vec::new(), wal_deleted: Vec::new() });
    }
    let doomed: Vec<Id> = plan.doomed().collect();
    progress.set_total(0, (doomed.len() + plan.wal_delete.len()) as u64);
    let mut removed = Vec::new();
    // Snapshots first: interrupted here, the WAL is still all there.
    for id in doomed {
        repo.remove_snapshot(&id).map_err(|e| PgError::repository(&format!("removing snapshot {id}"), e))?;
        removed.push(id);
        progress.inc(0, 1);
    }
    let namespace = archive::wal_namespace(&options.source);
    let mut wal_deleted = Vec::new();
    for name in &plan.wal_delete {
        repo.delete_named(&namespace, name)
            .map_err(|e| PgError::repository(&format!("deleting WAL file {name}"), e))?;
        wal_deleted.push(name.clone());
        progress.inc(0, 1);
    }
    Ok(PgForgetOutcome { plan, removed, wal_deleted })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::SignedDuration;

    use super::*;
    use crate::Lsn;
    use crate::backup::extra;
    use crate::verify::parse_history;

    const SEG: u64 = wal::DEFAULT_SEGMENT_SIZE;
    const SYSID: u64 = 7_000_000_000_000_000_001;

    fn cluster() -> ClusterRecord {
        ClusterRecord { system_identifier: SYSID, pg_major: 15, wal_segment_size: SEG }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A base backup on `timeline` starting in segment `start_seg` at time `t`, ended 10 s later.
    fn backup(n: u8, timeline: u32, start_seg: u64, t: i64) -> (Id, Snapshot) {
        let mut extra = BTreeMap::new();
        extra.insert(extra::START_LSN.to_owned(), Lsn(start_seg * SEG + 0x28).to_string());
        extra.insert(extra::STOP_LSN.to_owned(), Lsn(start_seg * SEG + 0x1000).to_string());
        extra.insert(extra::TIMELINE.to_owned(), timeline.to_string());
        extra.insert(extra::SYSTEM_IDENTIFIER.to_owned(), SYSID.to_string());
        extra.insert(extra::BACKUP_END.to_owned(), at(t + 10).to_string());
        let snapshot = Snapshot {
            time: at(t),
            hostname: format!("host{n}"),
            username: String::new(),
            kind: SNAPSHOT_KIND.into(),
            source: Some("db".into()),
            paths: vec!["db".into()],
            tags: vec![],
            parent: None,
            tree: Id::default(),
            program: "test".into(),
            summary: None,
            extra,
        };
        (Id([n; 32]), snapshot)
    }

    fn seg(tli: u32, n: u64) -> String {
        wal::segment_file_name(tli, Lsn(n * SEG), SEG)
    }

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|n| seg(tli, n)).collect()
    }

    fn plan(
        snapshots: &[(Id, Snapshot)],
        names: &[String],
        histories: &Histories,
        policy: &KeepPolicy,
        now: i64,
    ) -> Result<RetentionPlan, PgError> {
        let cluster = cluster();
        let filter = SnapshotFilter::default();
        let input = RetentionInput { snapshots, cluster: &cluster, wal: names, histories, filter: &filter };
        plan_retention(&input, policy, &TimeZone::UTC, at(now))
    }

    fn kept(plan: &RetentionPlan) -> Vec<u8> {
        let mut v: Vec<u8> = plan.decisions.iter().filter(|d| d.keep).map(|d| d.id.as_bytes()[0]).collect();
        v.sort();
        v
    }

    fn abc() -> Vec<(Id, Snapshot)> {
        vec![backup(1, 1, 2, 1000), backup(2, 1, 5, 2000), backup(3, 1, 8, 3000)]
    }

    #[test]
    fn keep_last_drops_the_oldest_backup_and_the_wal_only_it_needed() {
        let mut names = segs(1, 1..=10);
        names.push("000000010000000000000002.00000028.backup".into());
        names.push("000000010000000000000005.00000028.backup".into());
        let policy = KeepPolicy { last: Some(2), ..Default::default() };
        let p = plan(&abc(), &names, &Histories::new(), &policy, 4000).unwrap();
        assert_eq!(kept(&p), vec![2, 3]);
        assert_eq!(p.doomed().collect::<Vec<_>>(), vec![Id([1; 32])]);
        assert_eq!(p.keep_wal_from.as_deref(), Some(seg(1, 5).as_str()));
        let mut expected = segs(1, 1..=4);
        expected.insert(2, "000000010000000000000002.00000028.backup".into());
        assert_eq!(p.wal_delete, expected);
        assert_eq!(p.wal_kept, names.len() - 5);
        assert!(p.wal_held.is_none());
    }

    #[test]
    fn keep_within_keeps_the_backup_that_covers_the_start_of_the_window() {
        let names = segs(1, 1..=10);
        // Window 2900..3500: restic's rule (600 s of the newest, 3000) keeps only C, which ended
        // at 3010, after the window opened: B (ended 2010) is what a restore to 2900 needs.
        let policy = KeepPolicy { within: Some(SignedDuration::from_secs(600)), ..Default::default() };
        let p = plan(&abc(), &names, &Histories::new(), &policy, 3500).unwrap();
        assert_eq!(kept(&p), vec![2, 3]);
        let b = p.decisions.iter().find(|d| d.id == Id([2; 32])).unwrap();
        assert_eq!(b.reasons, vec![WINDOW_REASON.to_owned()]);
        assert_eq!(p.window_start, Some(at(2900)));
        assert_eq!(p.wal_delete, segs(1, 1..=4));
        // The window opening exactly when B ended still needs B; a second earlier needs A.
        let p = plan(&abc(), &names, &Histories::new(), &policy, 2610).unwrap();
        assert_eq!(kept(&p), vec![2, 3]);
        let p = plan(&abc(), &names, &Histories::new(), &policy, 2609).unwrap();
        assert_eq!(kept(&p), vec![1, 3]);
        assert_eq!(p.wal_delete, vec![seg(1, 1)]);
        // Hosts do not split a source: keep-last 1 keeps one backup in all.
        let p =
            plan(&abc(), &names, &Histories::new(), &KeepPolicy { last: Some(1), ..Default::default() }, 0).unwrap();
        assert_eq!(kept(&p), vec![3]);
    }

    #[test]
    fn partial_segments_and_history_files() {
        let mut names = segs(1, 1..=10);
        names.push("000000010000000000000003.partial".into());
        names.push("00000002.history".into());
        names.push("00000003.history".into());
        names.push("00000001000000000000000B.partial".into());
        let policy = KeepPolicy { last: Some(1), ..Default::default() };
        let p = plan(&abc(), &names, &Histories::new(), &policy, 4000).unwrap();
        assert!(p.wal_delete.contains(&"000000010000000000000003.partial".to_owned()), "{p:?}");
        assert!(!p.wal_delete.iter().any(|n| n.ends_with(".history")), "{p:?}");
        assert!(!p.wal_delete.contains(&"00000001000000000000000B.partial".to_owned()));
        assert_eq!(p.wal_delete.len(), 8);
        // A .partial below the cutoff with no complete segment after it is the newest WAL: kept.
        let names = vec![seg(1, 1), "000000010000000000000002.partial".to_owned()];
        let snaps = vec![backup(1, 1, 1, 1000), backup(2, 1, 3, 2000)];
        let p = plan(&snaps, &names, &Histories::new(), &policy, 4000).unwrap();
        assert_eq!(p.wal_delete, vec![seg(1, 1)]);
    }

    #[test]
    fn after_a_failover_the_old_timeline_goes_below_the_oldest_backup_only() {
        // Timeline 2 branched off timeline 1 in segment 6; the old primary went on to segment 9.
        let history = parse_history("1\t0/6001234\tno recovery target specified\n").unwrap();
        let histories = Histories::from([(2, history)]);
        let mut names = segs(1, 1..=9);
        names.extend(segs(2, 6..=12));
        names.push("00000002.history".into());
        let snaps = vec![backup(1, 1, 2, 1000), backup(2, 1, 4, 2000), backup(3, 2, 8, 3000)];
        let policy = KeepPolicy { last: Some(2), ..Default::default() };
        let p = plan(&snaps, &names, &histories, &policy, 4000).unwrap();
        assert_eq!(kept(&p), vec![2, 3]);
        assert_eq!(p.wal_delete, segs(1, 1..=3));
        let policy = KeepPolicy { last: Some(1), ..Default::default() };
        let p = plan(&snaps, &names, &histories, &policy, 4000).unwrap();
        let mut expected = vec![seg(1, 1), seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6), seg(2, 6), seg(1, 7)];
        expected.push(seg(2, 7));
        assert_eq!(p.wal_delete, expected);
        assert!(names.contains(&"00000002.history".to_owned()) && !p.wal_delete.iter().any(|n| n.contains("history")));
    }

    #[test]
    fn wal_is_held_when_no_backup_remains_or_a_kept_one_is_unusable() {
        let names = segs(1, 1..=10);
        let policy = KeepPolicy { tags: vec!["none".into()], ..Default::default() };
        let p = plan(&abc(), &names, &Histories::new(), &policy, 4000).unwrap();
        assert!(kept(&p).is_empty());
        assert!(p.wal_delete.is_empty() && p.wal_held.is_some(), "{p:?}");

        let mut snaps = abc();
        snaps[2].1.extra.remove(extra::START_LSN);
        let p =
            plan(&snaps, &names, &Histories::new(), &KeepPolicy { last: Some(1), ..Default::default() }, 4000).unwrap();
        assert_eq!(kept(&p), vec![3]);
        assert!(p.wal_delete.is_empty());
        assert!(p.wal_held.as_deref().is_some_and(|w| w.contains("not a usable base backup")), "{p:?}");

        // A backup of another cluster under the source counts as unusable too.
        let mut snaps = abc();
        snaps[2].1.extra.insert(extra::SYSTEM_IDENTIFIER.into(), "1".into());
        let p =
            plan(&snaps, &names, &Histories::new(), &KeepPolicy { last: Some(1), ..Default::default() }, 4000).unwrap();
        assert!(p.wal_delete.is_empty() && p.wal_held.is_some());
    }

    #[test]
    fn filtered_out_backups_are_kept_with_their_wal_and_empty_policies_are_refused() {
        let names = segs(1, 1..=10);
        let mut snaps = abc();
        snaps[0].1.tags = vec!["monthly".into()];
        let cluster = cluster();
        let filter = SnapshotFilter { tags: vec![], hosts: vec!["host2".into(), "host3".into()], ..Default::default() };
        let input = RetentionInput {
            snapshots: &snaps,
            cluster: &cluster,
            wal: &names,
            histories: &Histories::new(),
            filter: &filter,
        };
        let p = plan_retention(&input, &KeepPolicy { last: Some(1), ..Default::default() }, &TimeZone::UTC, at(4000))
            .unwrap();
        assert_eq!(p.doomed().collect::<Vec<_>>(), vec![Id([2; 32])]);
        assert_eq!(p.wal_delete, vec![seg(1, 1)]);
        let err = plan(&abc(), &names, &Histories::new(), &KeepPolicy::default(), 4000).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }

    proptest::proptest! {
        /// Whatever is kept, every segment from a retained backup's start on survives.
        #[test]
        fn retained_backups_keep_every_segment_from_their_start(
            starts in proptest::collection::vec(1u64..40, 1..8),
            last in 1u32..5,
            head in 40u64..50,
        ) {
            let snaps: Vec<(Id, Snapshot)> = starts
                .iter()
                .enumerate()
                .map(|(i, s)| backup(i as u8 + 1, 1, *s, 1000 + 100 * i as i64))
                .collect();
            let names = segs(1, 0..=head);
            let p = plan(&snaps, &names, &Histories::new(), &KeepPolicy { last: Some(last), ..Default::default() }, 9000)
                .unwrap();
            for d in p.decisions.iter().filter(|d| d.keep) {
                let start = starts[d.id.as_bytes()[0] as usize - 1];
                for n in start..=head {
                    proptest::prop_assert!(!p.wal_delete.contains(&seg(1, n)));
                }
            }
            let min_kept = p.decisions.iter().filter(|d| d.keep).map(|d| starts[d.id.as_bytes()[0] as usize - 1]).min();
            proptest::prop_assert_eq!(p.wal_delete.len() as u64, min_kept.unwrap_or(0));
        }
    }
}
