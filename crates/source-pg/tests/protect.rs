//! Protecting real PostgreSQL 15 clusters in a repository: base backups, the WAL archive and
//! point-in-time restores (tidemark-testkit's harness; skipped loudly without PostgreSQL).

mod util;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tidemark_repo::{Credential, NoProgress, Repository};
use tidemark_source_pg::archive::{self, ClusterRecord};
use tidemark_source_pg::backup::extra;
use tidemark_source_pg::{ErrorKind, PushOutcome, RecoveryTarget, archive_get, archive_push, pg_backup, pg_restore};
use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};
use util::{
    SOURCE, archiving_cluster, backup_options, fetch_all, ids, insert, now_in_server, push_all, range, repo,
    restore_options, segment_files, switch_and_wait, wait_promoted,
};

/// pg_verifybackup over a restored directory: every file against the server's manifest (CRC32C),
/// WAL not parsed.
fn verify_backup(pg: &PgCluster, dir: &Path) {
    let out = Command::new(pg.bin_dir().join("pg_verifybackup")).arg("-n").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn point_in_time_restore_to_the_instant_before_a_drop() {
    let Some((pg, archive_dir)) = archiving_cluster("pitr") else {
        return;
    };
    let (_mem, repo) = repo();
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE TABLE keep_me (x int); INSERT INTO keep_me SELECT generate_series(1, 10)",
    )
    .unwrap();
    insert(&pg, 1, 20);
    let before_backup = now_in_server(&pg);
    let backup = pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();
    let sysid: u64 = pg.psql("SELECT system_identifier FROM pg_control_system()").unwrap().parse().unwrap();
    assert_eq!(backup.snapshot.extra[extra::SYSTEM_IDENTIFIER], sysid.to_string());
    assert_eq!(backup.snapshot.kind, "postgres");
    assert_eq!(backup.snapshot.source.as_deref(), Some(SOURCE));
    assert!(backup.snapshot.extra[extra::BACKUP_LABEL].contains("LABEL: test"));
    assert_eq!(
        archive::cluster_record(&repo, SOURCE).unwrap(),
        Some(ClusterRecord { system_identifier: sysid, pg_major: 15, wal_segment_size: 16 << 20 })
    );

    insert(&pg, 21, 40);
    let before_drop = now_in_server(&pg);
    std::thread::sleep(Duration::from_millis(20));
    pg.psql("DROP TABLE keep_me").unwrap();
    insert(&pg, 41, 60);
    switch_and_wait(&pg);
    assert!(push_all(&repo, &archive_dir) >= 2);
    // Pushing everything again changes nothing.
    assert_eq!(push_all(&repo, &archive_dir), 0);

    let fetched = pg.scratch_dir("fetched").unwrap();
    fetch_all(&repo, &fetched);
    let restore = |dir: &Path, target: RecoveryTarget| {
        pg_restore(&repo, &restore_options(dir, target, &fetched), Arc::new(NoProgress))
    };

    // Unreachable targets are errors, never an earlier restore.
    let nowhere = pg.scratch_dir("nowhere").unwrap().join("data");
    let err = restore(&nowhere, RecoveryTarget::Time(before_backup)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Target, "{err}");
    let later = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let err = restore(&nowhere, RecoveryTarget::Time(later)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Target, "{err}");
    assert!(!nowhere.exists());
    // A non-empty directory (here: the running cluster's) is refused.
    let err = restore(pg.data_dir(), RecoveryTarget::Latest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Local, "{err}");

    // To the instant before the drop: rows 1-40 and the dropped table, nothing later.
    let at_dir = pg.scratch_dir("restore-at").unwrap().join("data");
    let outcome = restore(&at_dir, RecoveryTarget::Time(before_drop)).unwrap();
    assert_eq!(outcome.plan.backup.id, backup.id);
    verify_backup(&pg, &at_dir);
    let restored = PgCluster::start_existing(&at_dir, Auth::Trust).unwrap();
    wait_promoted(&restored);
    assert_eq!(ids(&restored), range(1, 40));
    assert_eq!(restored.psql("SELECT count(*) FROM keep_me").unwrap(), "10");
    drop(restored);

    // Latest: everything archived.
    let latest_dir = pg.scratch_dir("restore-latest").unwrap().join("data");
    restore(&latest_dir, RecoveryTarget::Latest).unwrap();
    let restored = PgCluster::start_existing(&latest_dir, Auth::Trust).unwrap();
    wait_promoted(&restored);
    assert_eq!(ids(&restored), range(1, 60));
    assert_eq!(restored.psql("SELECT to_regclass('keep_me') IS NULL").unwrap(), "t");
}

#[test]
fn second_base_backup_stores_only_what_changed() {
    let Some(pg) = PgCluster::start_or_skip("dedup", &PgOptions::default()) else {
        return;
    };
    let (_mem, repo) = repo();
    pg.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500000) g").unwrap();
    // Hint bits, visibility map and statistics settled now, so that nothing but the append
    // changes the table's pages between the backups.
    pg.psql("VACUUM (FREEZE, ANALYZE) big").unwrap();
    let first = pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();
    let first_added = first.snapshot.summary.as_ref().unwrap().data_added;
    // 1 % of the rows appended.
    pg.psql("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(500001, 505000) g").unwrap();
    let second = pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();
    let second_added = second.snapshot.summary.as_ref().unwrap().data_added;
    let total = second.snapshot.summary.as_ref().unwrap().total_bytes;
    assert!(first_added > 40 << 20, "first backup added {first_added}");
    assert!(second_added * 10 < first_added, "second backup added {second_added} of {total}; first {first_added}");
    assert!(second.info.start_lsn > first.info.end_lsn);
    // Only the changed files differ: the table (its tail), its free space and visibility maps,
    // pg_control, pg_xact, the label and the manifest.
    let changed = tidemark_repo::tree::diff(&repo, &first.snapshot.tree, &second.snapshot.tree).unwrap();
    assert!(changed.len() < 20, "{changed:?}");
    // The manifest is a file of the snapshot.
    let manifest =
        tidemark_repo::tree::find_node(&repo, &second.snapshot.tree, "backup_manifest").unwrap().expect("manifest");
    assert!(manifest.size > 1000);
}

#[test]
fn wal_archive_safety_rules() {
    let Some((pg, archive_dir)) = archiving_cluster("wal_rules") else {
        return;
    };
    let (mem, repo) = repo();
    pg.psql("CREATE TABLE x AS SELECT generate_series(1, 1000) AS n").unwrap();
    switch_and_wait(&pg);
    let segment = segment_files(&archive_dir).pop().unwrap();
    let name = segment.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(archive_push(&repo, SOURCE, &segment).unwrap(), PushOutcome::Stored);
    assert_eq!(archive_push(&repo, SOURCE, &segment).unwrap(), PushOutcome::AlreadyIdentical);

    // Different bytes under the same name: refused, the stored segment unchanged.
    let scratch = pg.scratch_dir("scratch").unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[100_000] ^= 0xFF;
    let forged = scratch.join(&name);
    fs::write(&forged, &bytes).unwrap();
    let err = archive_push(&repo, SOURCE, &forged).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let got = scratch.join("got");
    assert!(archive_get(&repo, SOURCE, &name, &got).unwrap());
    assert_eq!(fs::read(&got).unwrap(), fs::read(&segment).unwrap());

    // History files are never overwritten either.
    let history = scratch.join("00000002.history");
    fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    assert_eq!(archive_push(&repo, SOURCE, &history).unwrap(), PushOutcome::Stored);
    fs::write(&history, "1\t0/4000000\tno recovery target specified\n").unwrap();
    assert_eq!(archive_push(&repo, SOURCE, &history).unwrap_err().kind(), ErrorKind::Conflict);

    // Not a WAL file name, or a truncated segment: refused.
    let odd = scratch.join("notwal");
    fs::write(&odd, b"x").unwrap();
    assert_eq!(archive_push(&repo, SOURCE, &odd).unwrap_err().kind(), ErrorKind::Wal);
    let truncated = scratch.join("trunc");
    fs::create_dir(&truncated).unwrap();
    fs::write(truncated.join(&name), &bytes[..8192 * 4]).unwrap();
    assert_eq!(archive_push(&repo, "other", &truncated.join(&name)).unwrap_err().kind(), ErrorKind::Wal);

    // A segment of another cluster under this source: refused.
    let other = PgCluster::start_or_skip("wal_rules_other", &PgOptions { own_initdb: true, ..PgOptions::default() })
        .expect("a second cluster");
    let theirs = segment_files(&other.data_dir().join("pg_wal"));
    let err = archive_push(&repo, SOURCE, &theirs[0]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Wal, "{err}");
    assert!(err.message().contains("another cluster"), "{err}");
    // ...and a base backup of it too, before any data moves.
    let err = pg_backup(&repo, &backup_options(&other), Arc::new(NoProgress)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    // Missing: not found, nothing written.
    let missing = scratch.join("missing");
    assert!(!archive_get(&repo, SOURCE, "0000000100000000000000FF", &missing).unwrap());
    assert!(!missing.exists());

    // A corrupted blob in the repository: archive_get fails and leaves no file behind.
    for key in mem.keys().into_iter().filter(|k| k.starts_with("data/")) {
        mem.corrupt(&key, |b| {
            for i in (0..b.len()).step_by(64) {
                b[i] ^= 0x55;
            }
        });
    }
    let reopened = Repository::open(Arc::new(mem.clone()), &Credential::Password(b"pw".to_vec())).unwrap();
    let dest = scratch.join("corrupt");
    let err = archive_get(&reopened, SOURCE, &name, &dest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Repository, "{err}");
    assert!(!dest.exists());
    assert!(fs::read_dir(&scratch).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
}
