//! Retention of a real PostgreSQL 15 cluster's backups and WAL (`pg_forget`), and a WAL segment
//! damaged in the repository (`pg_verify_with --read-data`, `pg_restore`). Skipped loudly without
//! PostgreSQL (a failure with TIDEMARK_REQUIRE_PG=1).

mod util;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use jiff::tz::TimeZone;
use tidemark_repo::forget::KeepPolicy;
use tidemark_repo::prune::PruneOptions;
use tidemark_repo::{Credential, NoProgress, Repository, SnapshotFilter};
use tidemark_source_pg::archive::{self, WalFileKind, classify_wal_file};
use tidemark_source_pg::retention::WINDOW_REASON;
use tidemark_source_pg::verify::{VerifyOptions, pg_verify_with};
use tidemark_source_pg::{
    ErrorKind, PgBackupOptions, PgForgetOptions, PushOutcome, RecoveryTarget, archive_get, archive_push, pg_backup,
    pg_forget, pg_restore, pg_verify,
};
use tidemark_storage::ErrorKind as StorageErrorKind;
use tidemark_storage::fault::{Action, Fault, FaultStorage, Op};
use tidemark_testkit::postgres::{Auth, PgCluster};
use util::{
    SOURCE, archiving_cluster, backup_options, fetch_all, ids, insert, now_in_server, push_all, range, repo,
    restore_options, segment_files, switch_and_wait, wait_promoted,
};

/// A base backup of `pg` (untagged); its snapshot id.
fn backup(repo: &Repository, pg: &PgCluster) -> tidemark_repo::format::Id {
    let options = PgBackupOptions { tags: vec![], ..backup_options(pg) };
    pg_backup(repo, &options, Arc::new(NoProgress)).unwrap().id
}

/// The segment numbers of the archived complete segments.
fn segments(repo: &Repository) -> Vec<String> {
    archive::list_wal(repo, SOURCE)
        .unwrap()
        .into_iter()
        .filter(|n| classify_wal_file(n).is_ok_and(|c| c.kind == WalFileKind::Segment))
        .collect()
}

#[test]
fn keep_within_keeps_every_instant_of_the_window_restorable_and_drops_the_rest() {
    let Some((pg, archive_dir)) = archiving_cluster("retention_window") else {
        return;
    };
    let (mem, repo) = repo();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    insert(&pg, 1, 10);
    let a = backup(&repo, &pg);
    insert(&pg, 11, 15);
    let after_a = now_in_server(&pg);
    // A is older than the window by far, B and C are more than the window apart.
    std::thread::sleep(Duration::from_secs(3));
    let b = backup(&repo, &pg);
    insert(&pg, 16, 25);
    let window_start = now_in_server(&pg);
    std::thread::sleep(Duration::from_secs(3));
    insert(&pg, 26, 30);
    let c = backup(&repo, &pg);
    insert(&pg, 31, 40);
    switch_and_wait(&pg);
    push_all(&repo, &archive_dir);
    let verify = pg_verify(&repo, SOURCE).unwrap();
    assert!(verify.ok(), "{verify:?}");
    let a_first = verify.backups[0].first_segment.clone();
    let b_first = verify.backups[1].first_segment.clone();
    assert_eq!(verify.backups[0].backup.id, a);
    assert!(a_first < b_first);
    let before = segments(&repo);

    // `now` is passed in: a window of 2 s ending 2 s after `window_start`.
    let within = SignedDuration::from_secs(2);
    let options = PgForgetOptions {
        source: SOURCE.into(),
        policy: KeepPolicy { within: Some(within), ..Default::default() },
        filter: SnapshotFilter::default(),
        tz: TimeZone::UTC,
        now: window_start + within,
        dry_run: true,
    };
    let dry = pg_forget(&repo, &options, Arc::new(NoProgress)).unwrap();
    assert_eq!(dry.plan.doomed().collect::<Vec<_>>(), vec![a], "{:?}", dry.plan);
    assert!(dry.removed.is_empty() && dry.wal_deleted.is_empty());
    assert_eq!(segments(&repo), before, "a dry run deletes nothing");
    // B is kept by the promise alone: restic's rule (2 s of the newest) keeps only C.
    let b_decision = dry.plan.decisions.iter().find(|d| d.id == b).unwrap();
    assert_eq!(b_decision.reasons, vec![WINDOW_REASON.to_owned()]);
    assert!(dry.plan.decisions.iter().any(|d| d.id == c && d.keep));

    // A listing that fails or breaks off (WAL records, snapshots) stops it before any delete.
    let snapshot_count = repo.snapshots().unwrap().len();
    let objects: Vec<String> = mem.keys().into_iter().filter(|k| !k.starts_with("locks/")).collect();
    for fault in [
        Fault {
            prefix: Some(format!("named/{}/", archive::wal_namespace(SOURCE))),
            ..Fault::new(Op::List, Action::Fail(StorageErrorKind::Unreachable))
        },
        Fault { prefix: Some("snapshots/".into()), ..Fault::new(Op::List, Action::Fail(StorageErrorKind::Transient)) },
        Fault::new(Op::List, Action::BreakListAfter { entries: 3, kind: StorageErrorKind::Transient }),
        Fault { prefix: Some("snapshots/".into()), ..Fault::new(Op::Get, Action::Fail(StorageErrorKind::Permanent)) },
    ] {
        let faulty = FaultStorage::new(mem.clone());
        let flaky = Repository::open(Arc::new(faulty.clone()), &Credential::Password(b"pw".to_vec())).unwrap();
        faulty.add(fault.clone());
        let options = PgForgetOptions { dry_run: false, ..options.clone() };
        let err = pg_forget(&flaky, &options, Arc::new(NoProgress)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Repository, "{fault:?}: {err}");
        let kept: Vec<String> = mem.keys().into_iter().filter(|k| !k.starts_with("locks/")).collect();
        assert_eq!(kept, objects, "{fault:?}: nothing may be deleted");
    }
    assert_eq!(segments(&repo), before);
    assert_eq!(repo.snapshots().unwrap().len(), snapshot_count);

    let done = pg_forget(&repo, &PgForgetOptions { dry_run: false, ..options.clone() }, Arc::new(NoProgress)).unwrap();
    assert_eq!(done.removed, vec![a]);
    assert!(!done.wal_deleted.is_empty());
    assert!(done.wal_deleted.iter().all(|n| n.as_str() < b_first.as_str()), "{:?}", done.wal_deleted);
    let after = segments(&repo);
    assert!(!after.contains(&a_first) && after.contains(&b_first), "{after:?}");
    assert!(after.iter().all(|n| n.as_str() >= b_first.as_str()), "{after:?}");
    assert!(repo.snapshots().unwrap().iter().all(|(id, _)| *id != a));
    // Again: nothing more to do.
    let again = pg_forget(&repo, &PgForgetOptions { dry_run: false, ..options }, Arc::new(NoProgress)).unwrap();
    assert!(again.removed.is_empty() && again.wal_deleted.is_empty(), "{:?}", again.plan);

    let pruned = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(pruned.bytes_freed > 0, "{pruned:?}");
    let repo = Repository::open(Arc::new(mem.clone()), &Credential::Password(b"pw".to_vec())).unwrap();
    let check = repo.check(tidemark_repo::check::CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(check.is_ok(), "{check:?}");
    let report = pg_verify_with(&repo, SOURCE, &VerifyOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.backups.len(), 2);

    // The instant the window opens: rows 1-25 exactly, from B and the WAL after it.
    let fetched = pg.scratch_dir("fetched").unwrap();
    fetch_all(&repo, &fetched);
    let dir = pg.scratch_dir("restore-window").unwrap().join("data");
    let outcome =
        pg_restore(&repo, &restore_options(&dir, RecoveryTarget::Time(window_start), &fetched), Arc::new(NoProgress))
            .unwrap();
    assert_eq!(outcome.plan.backup.id, b);
    let restored = PgCluster::start_existing(&dir, Auth::Trust).unwrap();
    wait_promoted(&restored);
    assert_eq!(ids(&restored), range(1, 25));
    drop(restored);

    // Before the oldest kept backup (A's time): a clear error, nothing written.
    let nowhere = pg.scratch_dir("nowhere").unwrap().join("data");
    let err =
        pg_restore(&repo, &restore_options(&nowhere, RecoveryTarget::Time(after_a), &fetched), Arc::new(NoProgress))
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Target, "{err}");
    assert!(err.message().contains("before the oldest base backup"), "{err}");
    assert!(!nowhere.exists());
}

#[test]
fn a_damaged_segment_is_found_by_verify_and_stops_a_restore_before_it_starts() {
    let Some((pg, archive_dir)) = archiving_cluster("retention_damaged") else {
        return;
    };
    let (mem, repo) = repo();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    insert(&pg, 1, 10);
    backup(&repo, &pg);
    insert(&pg, 11, 20);
    switch_and_wait(&pg);
    push_all(&repo, &archive_dir);
    insert(&pg, 21, 30);
    switch_and_wait(&pg);
    // The last segment alone in its pack: the new data keys are its pack.
    let victim = segment_files(&archive_dir).pop().unwrap();
    let victim_name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    let packs_before: Vec<String> = mem.keys().into_iter().filter(|k| k.starts_with("data/")).collect();
    assert_eq!(archive_push(&repo, SOURCE, &victim).unwrap(), PushOutcome::Stored);
    push_all(&repo, &archive_dir);
    let new_packs: Vec<String> =
        mem.keys().into_iter().filter(|k| k.starts_with("data/") && !packs_before.contains(k)).collect();
    assert_eq!(new_packs.len(), 1, "{new_packs:?}");
    // More WAL after it: the damaged segment is in the middle of the archive.
    insert(&pg, 31, 40);
    switch_and_wait(&pg);
    push_all(&repo, &archive_dir);
    assert!(pg_verify(&repo, SOURCE).unwrap().ok());

    // One byte flipped in the middle of the pack.
    mem.corrupt(&new_packs[0], |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
    let repo = Repository::open(Arc::new(mem.clone()), &Credential::Password(b"pw".to_vec())).unwrap();
    // Names alone look fine; reading the data finds it and names it.
    assert!(pg_verify(&repo, SOURCE).unwrap().ok());
    let report = pg_verify_with(&repo, SOURCE, &VerifyOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(!report.ok());
    assert!(report.damaged.iter().any(|d| d.name == victim_name), "{report:?}");
    assert!(!report.backups[0].ok(), "{report:?}");
    assert!(report.backups[0].gaps.iter().any(|(from, to)| *from <= victim_name && victim_name <= *to), "{report:?}");

    // A restore to the latest state refuses before writing anything, naming the segment.
    let dir = pg.scratch_dir("restore").unwrap().join("data");
    let options = restore_options(&dir, RecoveryTarget::Latest, Path::new("/nonexistent"));
    let err = pg_restore(&repo, &options, Arc::new(NoProgress)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Target, "{err}");
    assert!(err.message().contains(&victim_name) && err.message().contains("damaged"), "{err}");
    assert!(!dir.exists());
    // archive-get of it fails loudly and leaves nothing behind.
    let scratch = pg.scratch_dir("scratch").unwrap();
    let err = archive_get(&repo, SOURCE, &victim_name, &scratch.join("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Repository, "{err}");
    assert!(fs::read_dir(&scratch).unwrap().next().is_none());

    // A damaged record (not the data) is found the same way.
    let (mem, repo) = self::repo();
    push_all(&repo, &archive_dir);
    backup(&repo, &pg);
    let key = format!("named/{}/{victim_name}", archive::wal_namespace(SOURCE));
    mem.corrupt(&key, |b| {
        let at = b.len() - 5;
        b[at] ^= 0x80;
    });
    let report = pg_verify_with(&repo, SOURCE, &VerifyOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].name, victim_name);
}
