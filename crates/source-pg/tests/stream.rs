//! `pg_stream` against real PostgreSQL 15 clusters: WAL streamed into the repository across a
//! server restart and a dropped connection restores to the latest commit without any segment
//! switch, and in synchronous mode a commit is in the repository the moment it returns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, NoProgress, Progress, Repository};
use tidemark_source_pg::archive::{self, Fetched, WalFileKind, archive_fetch, classify_wal_file};
use tidemark_source_pg::partial::{self, StreamPartialRecord};
use tidemark_source_pg::{
    PgBackupOptions, PgError, PgRestoreOptions, PgStreamOptions, PgStreamOutcome, PushOutcome, RecoveryTarget,
    TargetAction, archive_get, archive_push, pg_backup, pg_restore, pg_stream, pg_verify,
};
use tidemark_storage::MemoryStorage;
use tidemark_storage::fault::{Action, Fault, FaultStorage, Op};
use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};

const SOURCE: &str = "main";

fn repo_on(storage: Arc<dyn tidemark_storage::Storage>) -> Repository {
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    Repository::init(storage, &Credential::Password(b"pw".to_vec()), &opts).unwrap()
}

/// Prints the stream's warnings (reconnects) into the test's output.
struct Log;

impl Progress for Log {
    fn warn(&self, message: &str) {
        eprintln!("stream: {message}");
    }
}

/// `pg_stream` in a thread, stopped through its flag.
struct Streamer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<PgStreamOutcome, PgError>>,
}

impl Streamer {
    fn start(repo: &Repository, options: PgStreamOptions) -> Streamer {
        let stop = Arc::new(AtomicBool::new(false));
        let (repo, flag) = (repo.clone(), stop.clone());
        let handle = std::thread::spawn(move || pg_stream(&repo, &options, &flag, Arc::new(Log)));
        Streamer { stop, handle }
    }

    fn stop(self) -> Result<PgStreamOutcome, PgError> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn backup_options(pg: &PgCluster) -> PgBackupOptions {
    PgBackupOptions {
        source: SOURCE.into(),
        connect: pg.connstr(),
        label: "stream".into(),
        host: "db1".into(),
        tags: vec![],
    }
}

fn wait_for(what: &str, pg: &PgCluster, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; server log: {}", log_tail(pg));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(pg: &PgCluster) -> String {
    let log = fs::read_to_string(pg.log_path()).unwrap_or_default();
    log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Wait until the stream's walsender (by application_name) is streaming.
fn wait_streaming(pg: &PgCluster, application_name: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{application_name}' AND state = 'streaming'"
    );
    wait_for("the stream to connect", pg, || pg.psql(&sql).is_ok_and(|n| n == "1"));
}

/// Wait until the slot's restart_lsn (the flush position the stream confirmed: durable in the
/// repository) has reached the server's current flush position.
fn wait_confirmed(pg: &PgCluster, slot: &str) {
    let target = pg.psql("SELECT pg_current_wal_flush_lsn()").unwrap();
    let sql = format!("SELECT restart_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'");
    wait_for("the stream to confirm the last commit", pg, || pg.psql(&sql).is_ok_and(|t| t == "t"));
}

fn ids(pg: &PgCluster) -> String {
    pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t").unwrap()
}

fn range(a: u32, b: u32) -> String {
    (a..=b).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn insert(pg: &PgCluster, ids: std::ops::RangeInclusive<u32>) {
    for i in ids {
        pg.psql(&format!("INSERT INTO t (id) VALUES ({i})")).unwrap();
    }
}

/// What PostgreSQL's restore_command would get, fetched into `dir` (readable by the server's
/// `cp`): every archived file by its name, and for a segment archived only as streamed
/// partials, the newest partial under the segment's name.
fn fetch_for_recovery(repo: &Repository, dir: &Path) -> Vec<(String, Fetched)> {
    let names = archive::list_wal(repo, SOURCE).unwrap();
    let mut fetched = Vec::new();
    for name in &names {
        let class = classify_wal_file(name).unwrap();
        let wanted = match class.kind {
            WalFileKind::StreamPartial => class.segment.clone().unwrap(),
            _ => name.clone(),
        };
        if fetched.iter().any(|(n, _)| *n == wanted) {
            continue;
        }
        let dest = dir.join(&wanted);
        let Some(what) = archive_fetch(repo, SOURCE, &wanted, &dest).unwrap() else {
            // Only a partial of a timeline that ended is never served.
            assert_eq!(class.kind, WalFileKind::StreamPartial, "{wanted}");
            continue;
        };
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        fetched.push((wanted, what));
    }
    fetched
}

/// Restore the latest state from `repo` and start it; returns the running restored cluster.
fn restore_latest(pg: &PgCluster, repo: &Repository, name: &str) -> (PgCluster, Vec<(String, Fetched)>) {
    restore_to(pg, repo, name, RecoveryTarget::Latest)
}

/// Restore to `target` from `repo` and start it (promoting at the target).
fn restore_to(
    pg: &PgCluster,
    repo: &Repository,
    name: &str,
    target: RecoveryTarget,
) -> (PgCluster, Vec<(String, Fetched)>) {
    let wal_dir = pg.scratch_dir(&format!("{name}-wal")).unwrap();
    let fetched = fetch_for_recovery(repo, &wal_dir);
    let target_dir = pg.scratch_dir(name).unwrap().join("data");
    pg_restore(
        repo,
        &PgRestoreOptions {
            source: SOURCE.into(),
            target_dir: target_dir.clone(),
            target,
            target_action: TargetAction::Promote,
            restore_command: format!("cp {}/%f %p", wal_dir.display()),
        },
        Arc::new(NoProgress),
    )
    .unwrap();
    let restored = PgCluster::start_existing(&target_dir, Auth::Trust).unwrap();
    wait_for("the restored cluster to finish recovery", &restored, || {
        restored.psql("SELECT pg_is_in_recovery()").is_ok_and(|r| r == "f")
    });
    (restored, fetched)
}

fn archived_segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().len() == 24).collect();
    paths.sort();
    paths
}

#[test]
fn streaming_survives_a_restart_and_a_dropped_connection_and_restores_to_the_last_commit() {
    let options = PgOptions {
        archive_command: Some("mkdir -p ../wal-archive && cp %p ../wal-archive/%f".into()),
        ..PgOptions::default()
    };
    let Some(pg) = PgCluster::start_or_skip("stream_restart", &options) else {
        return;
    };
    let archive_dir = pg.scratch_dir("wal-archive").unwrap();
    let repo = repo_on(Arc::new(MemoryStorage::new()));
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, pad text)").unwrap();
    let backup = pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();

    let stream = Streamer::start(
        &repo,
        PgStreamOptions { slot: Some("tm_stream".into()), ..PgStreamOptions::new(SOURCE, pg.connstr()) },
    );
    wait_streaming(&pg, "tidemark");
    insert(&pg, 1..=20);
    // More than a segment of WAL, so that complete segments are streamed too.
    pg.psql("CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 300000) g").unwrap();
    insert(&pg, 21..=40);

    // A server restart in the middle.
    pg.restart().unwrap();
    insert(&pg, 41..=60);
    wait_streaming(&pg, "tidemark");
    insert(&pg, 61..=80);

    // A dropped connection: the walsender is terminated.
    let terminated = pg
        .psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE application_name = 'tidemark'")
        .unwrap();
    assert_eq!(terminated, "1");
    insert(&pg, 81..=100);
    wait_streaming(&pg, "tidemark");
    pg.psql("SELECT pg_switch_wal()").unwrap();
    // The last rows: no segment switch after them, no archive_timeout.
    insert(&pg, 101..=105);
    let after_105 = now_in_server(&pg);
    std::thread::sleep(Duration::from_millis(20));
    insert(&pg, 106..=110);
    wait_confirmed(&pg, "tm_stream");
    let outcome = stream.stop().unwrap();
    assert!(outcome.reconnects >= 2, "{outcome:?}");
    assert!(outcome.segments >= 2, "{outcome:?}");
    assert!(outcome.partials >= 1, "{outcome:?}");

    // No gap from the base backup to the newest complete segment.
    let report = pg_verify(&repo, SOURCE).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.backups[0].backup.id, backup.id);

    // Older partials were replaced: what is left is one base and its increments, of the last
    // segment only.
    let names = archive::list_wal(&repo, SOURCE).unwrap();
    let partials: Vec<StreamPartialRecord> = names
        .iter()
        .filter(|n| classify_wal_file(n).unwrap().kind == WalFileKind::StreamPartial)
        .map(|n| partial::get_partial(&repo, SOURCE, n).unwrap().unwrap())
        .collect();
    let bases: Vec<&StreamPartialRecord> = partials.iter().filter(|p| p.base.is_none()).collect();
    assert_eq!(bases.len(), 1, "{names:?}");
    assert!(partials.iter().all(|p| p.segment == bases[0].segment && p.size >= bases[0].size), "{names:?}");
    assert!(partials.iter().all(|p| p.base.is_none() || p.base.as_ref() == Some(&bases[0].name)), "{names:?}");

    // archive-push of what PostgreSQL archived agrees with what was streamed.
    let mut identical = 0;
    for path in archived_segments(&archive_dir) {
        let name = path.file_name().unwrap().to_str().unwrap();
        if names.iter().any(|n| n == name) {
            assert_eq!(archive_push(&repo, SOURCE, &path).unwrap(), PushOutcome::AlreadyIdentical, "{name}");
            identical += 1;
        }
    }
    assert!(identical >= 2, "{identical}");

    // A restore to the latest state has every committed row, the last ones from the partial.
    let (restored, fetched) = restore_latest(&pg, &repo, "restored");
    assert!(fetched.iter().any(|(_, f)| matches!(f, Fetched::StreamPartial { .. })), "{fetched:?}");
    assert_eq!(ids(&restored), range(1, 110));
    assert_eq!(restored.psql("SELECT count(*) FROM filler").unwrap(), "300000");
    drop(restored);
    // A time inside the streamed partial segment is within reach too.
    let (restored, _) = restore_to(&pg, &repo, "restored-at", RecoveryTarget::Time(after_105));
    assert_eq!(ids(&restored), range(1, 105));
}

fn now_in_server(pg: &PgCluster) -> jiff::Timestamp {
    let micros: i64 =
        pg.psql("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").unwrap().parse().unwrap();
    jiff::Timestamp::from_microsecond(micros).unwrap()
}

#[test]
fn a_synchronous_commit_is_in_the_repository_when_it_returns() {
    let Some(pg) = PgCluster::start_or_skip("stream_sync", &PgOptions::default()) else {
        return;
    };
    let storage = FaultStorage::new(MemoryStorage::new());
    let repo = repo_on(Arc::new(storage.clone()));
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();
    let options = PgStreamOptions {
        slot: Some("tm_sync".into()),
        synchronous: true,
        // Asynchronous stores would come much later: only the synchronous path can pass.
        partial_interval: Duration::from_secs(3600),
        ..PgStreamOptions::new(SOURCE, format!("{} application_name=tm_sync", pg.connstr()))
    };
    let stream = Streamer::start(&repo, options);
    wait_streaming(&pg, "tm_sync");
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'tm_sync'").unwrap();
    pg.psql("SELECT pg_reload_conf()").unwrap();
    wait_for("the stream to be the synchronous standby", &pg, || {
        pg.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'tm_sync'")
            .is_ok_and(|s| s == "sync")
    });

    insert(&pg, 1..=2);
    // Every record store now takes 2 s: a stream that acknowledged WAL before storing it would
    // let the next commit return long before its record lands.
    storage.add(Fault {
        op: Some(Op::Put),
        prefix: Some(format!("named/wal.{SOURCE}/")),
        times: None,
        action: Action::Delay(Duration::from_secs(2)),
    });
    insert(&pg, 3..=3);
    // The commit returned: what the repository holds now is copied as it is.
    let frozen = MemoryStorage::new();
    for key in storage.inner().keys() {
        if let Some(bytes) = storage.inner().raw(&key) {
            frozen.insert_raw(&key, bytes);
        }
    }
    storage.clear();
    let copy = Repository::open(Arc::new(frozen), &Credential::Password(b"pw".to_vec())).unwrap();
    let (restored, fetched) = restore_latest(&pg, &copy, "restored");
    assert!(fetched.iter().any(|(_, f)| matches!(f, Fetched::StreamPartial { .. })), "{fetched:?}");
    assert_eq!(ids(&restored), range(1, 3));

    // Commits wait for the stream: with it stopped they would hang, so release them first.
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = ''").unwrap();
    pg.psql("SELECT pg_reload_conf()").unwrap();
    stream.stop().unwrap();
}

#[test]
fn a_partial_of_a_timeline_that_ended_is_not_served() {
    // The module's safety rule, on a repository: a partial of timeline 1 stands in for its
    // segment until a history file says timeline 1 ended.
    let Some(pg) = PgCluster::start_or_skip("stream_ended", &PgOptions::default()) else {
        return;
    };
    let repo = repo_on(Arc::new(MemoryStorage::new()));
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    pg_backup(&repo, &backup_options(&pg), Arc::new(NoProgress)).unwrap();
    let stream = Streamer::start(&repo, PgStreamOptions::new(SOURCE, pg.connstr()));
    wait_streaming(&pg, "tidemark");
    insert(&pg, 1..=3);
    let segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_flush_lsn())").unwrap();
    let scratch = pg.scratch_dir("scratch").unwrap();
    let dest = scratch.join(&segment);
    wait_for("a streamed partial of the current segment", &pg, || {
        archive_fetch(&repo, SOURCE, &segment, &dest).unwrap().is_some()
    });
    stream.stop().unwrap();
    let bytes = fs::read(&dest).unwrap();
    assert_eq!(bytes.len(), 16 << 20);
    assert!(bytes.ends_with(&[0u8; 8192]), "zero-filled after the streamed WAL");

    let history = scratch.join("00000002.history");
    fs::write(&history, "1\t0/FF000000\tno recovery target specified\n").unwrap();
    assert_eq!(archive_push(&repo, SOURCE, &history).unwrap(), PushOutcome::Stored);
    let again = scratch.join("again");
    assert_eq!(archive_fetch(&repo, SOURCE, &segment, &again).unwrap(), None);
    assert!(!archive_get(&repo, SOURCE, &segment, &again).unwrap());
    assert!(!again.exists());
}

#[test]
fn streaming_follows_a_promotion_onto_the_new_timeline() {
    let Some(primary) = PgCluster::start_or_skip("stream_promote", &PgOptions::default()) else {
        return;
    };
    primary.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    // A streaming standby of it, which the stream follows (cascading) and which is then promoted.
    let copy = primary.scratch_dir("standby").unwrap().join("data");
    let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut basebackup = std::process::Command::new(if root { "runuser" } else { "sh" });
    if root {
        basebackup.args(["-u", "postgres", "--"]);
    } else {
        basebackup.args(["-c", "exec \"$0\" \"$@\""]);
    }
    let status = basebackup
        .arg(primary.bin_dir().join("pg_basebackup"))
        .arg("-D")
        .arg(&copy)
        .args(["-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", &primary.port().to_string()])
        .args(["-U", "tidemark_repl"])
        .status()
        .unwrap();
    assert!(status.success());
    let standby = PgCluster::start_existing(&copy, Auth::Trust).unwrap();
    wait_for("the standby to stream", &primary, || {
        primary.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").is_ok_and(|n| n == "1")
    });

    let repo = repo_on(Arc::new(MemoryStorage::new()));
    // The base backup comes from the standby: it holds standby.signal, which pg restore must drop
    // (or the restored cluster would wait for a primary instead of opening).
    pg_backup(&repo, &backup_options(&standby), Arc::new(NoProgress)).unwrap();
    let stream = Streamer::start(
        &repo,
        PgStreamOptions { slot: Some("tm_promote".into()), ..PgStreamOptions::new(SOURCE, standby.connstr()) },
    );
    wait_streaming(&standby, "tidemark");
    insert(&primary, 1..=10);
    let flushed = primary.psql("SELECT pg_current_wal_flush_lsn()").unwrap();
    let sql =
        format!("SELECT restart_lsn >= '{flushed}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'tm_promote'");
    wait_for("the stream to store the primary's rows through the standby", &standby, || {
        standby.psql(&sql).is_ok_and(|t| t == "t")
    });

    // Promotion: timeline 1 ends at the switch point; the stream carries on with timeline 2.
    drop(primary);
    standby.promote().unwrap();
    insert(&standby, 11..=20);
    wait_confirmed(&standby, "tm_promote");
    let outcome = stream.stop().unwrap();
    assert_eq!(outcome.timeline, 2, "{outcome:?}");
    assert!(outcome.history_files >= 1, "{outcome:?}");
    let names = archive::list_wal(&repo, SOURCE).unwrap();
    assert!(names.iter().any(|n| n == "00000002.history"), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("00000002") && n.ends_with(".partial")), "{names:?}");

    let report = pg_verify(&repo, SOURCE).unwrap();
    assert!(report.ok(), "{report:?}");
    let (restored, _) = restore_latest(&standby, &repo, "restored");
    assert_eq!(ids(&restored), range(1, 20));
}
