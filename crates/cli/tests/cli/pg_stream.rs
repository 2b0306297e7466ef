//! `tidemark pg stream` as a child process against a real PostgreSQL 15 cluster: killed and
//! started again while the server keeps writing, it resumes from its slot without a gap, and
//! `pg restore` (whose restore_command is `pg archive-get`) brings back the last commit, which
//! exists only in the streamed partial segment. Skipped loudly without PostgreSQL.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};

use crate::pg::{PgEnv, range, wait_promoted};

const SOURCE: &str = "db";
const SLOT: &str = "tm_cli_stream";

/// `tidemark pg stream` in the background, as the server's user (the repository must stay
/// readable by restore_command), its output in `log`.
fn spawn_stream(pge: &PgEnv, pg: &PgCluster, log: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    if pge.as_postgres {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
        };
        cmd.uid(id("-u")).gid(id("-g"));
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TIDEMARK_") {
            cmd.env_remove(key);
        }
    }
    let log = File::create(pge.env.path(log)).unwrap();
    cmd.args(["-r", &pge.repo, "--key-file", &pge.key_file])
        .args(["pg", "stream", "--source", SOURCE, "--connect", &pg.connstr(), "--slot", SLOT])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    cmd.spawn().unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The slot's restart_lsn is the flush position the stream confirmed: WAL durable in the
/// repository. Wait until it covers every commit so far.
fn wait_confirmed(pg: &PgCluster) {
    let target = pg.psql("SELECT pg_current_wal_flush_lsn()").unwrap();
    let sql = format!("SELECT restart_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'");
    wait_for("the stream to confirm the last commit", || pg.psql(&sql).is_ok_and(|t| t == "t"));
}

fn wait_streaming(pg: &PgCluster) {
    let sql = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'tidemark' AND state = 'streaming'";
    wait_for("the stream to connect", || pg.psql(sql).is_ok_and(|n| n == "1"));
}

fn insert(pg: &PgCluster, ids: std::ops::RangeInclusive<u32>) {
    for i in ids {
        pg.psql(&format!("INSERT INTO t (id) VALUES ({i})")).unwrap();
    }
}

#[test]
fn a_killed_stream_resumes_from_its_slot_and_restores_to_the_last_commit() {
    let pge = PgEnv::new();
    let Some(pg) = PgCluster::start_or_skip("pg_cli_stream", &PgOptions::default()) else {
        return;
    };
    pge.ok(&["init"]);
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)").unwrap();
    pge.ok(&["pg", "backup", "--source", SOURCE, "--connect", &pg.connstr()]);

    let mut stream = spawn_stream(&pge, &pg, "stream-1.log");
    wait_streaming(&pg);
    insert(&pg, 1..=20);
    pg.psql("SELECT pg_switch_wal()").unwrap();
    insert(&pg, 21..=30);
    wait_confirmed(&pg);
    // Killed outright: only stored WAL was ever acknowledged, so nothing is lost.
    stream.kill().unwrap();
    stream.wait().unwrap();
    let log = fs::read_to_string(pge.env.path("stream-1.log")).unwrap();
    assert!(log.contains("created replication slot tm_cli_stream"), "{log}");
    assert!(log.contains("streaming timeline 1 from"), "{log}");

    // Written while no stream runs: the slot keeps it for the next one.
    insert(&pg, 31..=40);
    let mut stream = spawn_stream(&pge, &pg, "stream-2.log");
    wait_streaming(&pg);
    insert(&pg, 41..=50);
    wait_confirmed(&pg);
    stream.kill().unwrap();
    stream.wait().unwrap();

    let verified = pge.ok(&["pg", "verify", "--source", SOURCE, "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");

    let target = pge.env.path("pg/restored");
    pge.ok(&["pg", "restore", "--source", SOURCE, "--target-dir", &target.to_string_lossy()]);
    let server = PgCluster::start_existing(&target, Auth::Trust).unwrap();
    wait_promoted(&server);
    assert_eq!(server.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t").unwrap(), range(1, 50));
    // archive-get said, into the server's log, that it served a partial segment.
    let server_log = fs::read_to_string(server.log_path()).unwrap();
    assert!(server_log.contains("wrote the newest partial segment"), "{server_log}");
}
