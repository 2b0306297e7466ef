//! PostgreSQL safety rules end to end, with a real PostgreSQL 15 cluster whose `archive_command`
//! is this binary: a restore across a timeline switch after a promote (the promoted copy
//! archiving into the same source, as a failover's new primary does), retention of a PostgreSQL source through `forget`, a damaged
//! WAL segment found by `pg verify --read-data` and refused by `pg restore`, and archive-push
//! while the repository server is down. Skipped loudly without PostgreSQL.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tidemark_testkit::postgres::{Auth, PgCluster};

use crate::pg::{PgEnv, ids, range, wait_promoted};
use crate::util::{Env, Run};

const SOURCE: &str = "db";

/// `pg restore` of [`SOURCE`] into `pg/<dir>`, with the `target` options.
fn restore(pge: &PgEnv, dir: &str, target: &[&str]) -> Run {
    let target_dir = pge.env.arg(&format!("pg/{dir}"));
    let mut args = vec!["pg", "restore", "--source", SOURCE, "--target-dir", &target_dir];
    args.extend(target);
    pge.run(&args)
}

/// The archiver's (last archived file, failed count).
fn archiver(pg: &PgCluster) -> (String, u64) {
    let row = pg.psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").unwrap();
    let (last, failed) = row.split_once('|').unwrap();
    (last.to_owned(), failed.parse().unwrap())
}

/// Switch to a new segment and wait until it is archived; returns its name.
fn switch_and_wait(pg: &PgCluster) -> String {
    let name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while archiver(pg).0 < name {
        assert!(
            Instant::now() < deadline,
            "{name} was not archived: {}",
            fs::read_to_string(pg.log_path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    name
}

fn utc_now(pg: &PgCluster) -> String {
    pg.psql(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#).unwrap()
}

/// Start the restored directory `pg/<dir>` and wait for the end of recovery. Unless `archive`, its
/// archiving is switched off first: a restore inherits the primary's archive_command, and a
/// throwaway copy promoted to a timeline of its own must not archive into the source.
fn start_restored(pge: &PgEnv, dir: &str, archive: bool) -> PgCluster {
    let path = pge.env.path(&format!("pg/{dir}"));
    if !archive {
        let conf = path.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text.push_str("archive_mode = off\n");
        fs::write(&conf, text).unwrap();
    }
    let server = PgCluster::start_existing(&path, Auth::Trust).unwrap();
    wait_promoted(&server);
    server
}

#[test]
fn restore_across_a_promote_then_forget_and_a_damaged_segment() {
    let pge = PgEnv::new();
    let Some(primary) = pge.archiving_cluster("pg_safety_timelines") else {
        return;
    };
    primary.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)").unwrap();
    let first = pge.ok(&["pg", "backup", "--source", SOURCE, "--connect", &primary.connstr(), "--json"]).json();
    let first_id = first["snapshot_id"].as_str().unwrap().to_owned();
    primary.psql("INSERT INTO t SELECT generate_series(11, 20)").unwrap();
    let fork_point = utc_now(&primary);
    std::thread::sleep(Duration::from_millis(20));
    primary.psql("INSERT INTO t SELECT generate_series(21, 30)").unwrap();
    switch_and_wait(&primary);
    // The failover: the primary is gone, a copy restored to the fork point takes over.
    primary.stop().unwrap();

    restore(&pge, "copy", &["--time", &fork_point, "--target-action", "promote"]).expect(0);
    // The copy keeps the primary's archive_command: it archives into the same source, timeline 2
    // (its history file, the old timeline's last segment as .partial, then its own segments).
    let copy = start_restored(&pge, "copy", true);
    assert_eq!(ids(&copy), range(1, 20));
    assert_eq!(copy.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").unwrap(), "00000002");
    copy.psql("INSERT INTO t SELECT generate_series(1001, 1010)").unwrap();
    let on_timeline_2 = utc_now(&copy);
    std::thread::sleep(Duration::from_millis(20));
    copy.psql("INSERT INTO t SELECT generate_series(1011, 1020)").unwrap();
    switch_and_wait(&copy);
    let wal = fs::read_dir(pge.env.path("pg/repo/named").join(format!("wal.{SOURCE}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(wal.iter().any(|n| n == "00000002.history"), "{wal:?}");
    // (No .partial here: the fork segment was restored from the archive, and PostgreSQL archives
    // the old timeline's last segment as .partial only when it was not.)
    assert!(wal.iter().any(|n| n.starts_with("00000002") && n.len() == 24), "{wal:?}");

    let verified = pge.ok(&["pg", "verify", "--source", SOURCE, "--read-data", "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["backups"][0]["timelines"], serde_json::json!([1, 2]), "{verified}");

    // From the repository alone: the latest state is timeline 2's, and so is a time on it.
    pge.ok(&["pg", "restore", "--source", SOURCE, "--target-dir", &pge.env.arg("pg/latest")]);
    let latest = start_restored(&pge, "latest", false);
    assert_eq!(ids(&latest), format!("{},{}", range(1, 20), range(1001, 1020)));
    drop(latest);
    restore(&pge, "at2", &["--time", &on_timeline_2, "--target-action", "promote"]).expect(0);
    let at2 = start_restored(&pge, "at2", false);
    assert_eq!(ids(&at2), format!("{},{}", range(1, 20), range(1001, 1010)));
    drop(at2);

    // A base backup on timeline 2, then retention: keep the newest only. The timeline 1 backup
    // and the WAL before the new backup go; the history file stays.
    let second = pge.ok(&["pg", "backup", "--source", SOURCE, "--connect", &copy.connstr(), "--json"]).json();
    assert_eq!(second["timeline"], 2, "{second}");
    copy.psql("INSERT INTO t SELECT generate_series(1021, 1030)").unwrap();
    switch_and_wait(&copy);
    copy.psql("INSERT INTO t SELECT generate_series(1031, 1040)").unwrap();
    let newest = switch_and_wait(&copy);
    let dry = pge.ok(&["forget", "--source", SOURCE, "--keep-last", "1", "--dry-run", "--json"]).json();
    let plan = &dry["postgres"][0]["plan"];
    assert!(!plan["wal_delete"].as_array().unwrap().is_empty(), "{dry}");
    let forgot = pge.ok(&["forget", "--keep-last", "1", "--prune", "--json"]).json();
    assert_eq!(forgot["removed"], serde_json::json!([first_id]), "{forgot}");
    let pg = &forgot["postgres"][0];
    assert_eq!(pg["source"], SOURCE, "{forgot}");
    assert_eq!(pg["wal_deleted"], plan["wal_delete"], "{forgot}");
    let keep_from = pg["plan"]["keep_wal_from"].as_str().unwrap().to_owned();
    assert!(keep_from.starts_with("00000002"), "{forgot}");
    let wal_dir = pge.env.path("pg/repo/named").join(format!("wal.{SOURCE}"));
    let left: Vec<String> =
        fs::read_dir(&wal_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().any(|n| n == "00000002.history"), "{left:?}");
    assert!(left.iter().filter(|n| n.len() == 24).all(|n| n[8..] >= keep_from[8..]), "{left:?}");
    let verified = pge.ok(&["pg", "verify", "--source", SOURCE, "--read-data", "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["backups"].as_array().unwrap().len(), 1, "{verified}");
    pge.ok(&["check", "--read-data"]);
    let run = restore(&pge, "too-early", &["--time", &on_timeline_2]).expect(1);
    assert!(run.stderr.contains("before the oldest base backup"), "{}", run.stderr);

    // One flipped byte in the record of the segment the kept backup starts in.
    let record = wal_dir.join(&keep_from);
    let mut bytes = fs::read(&record).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&record, &bytes).unwrap();
    pge.ok(&["pg", "verify", "--source", SOURCE]);
    let run = pge.run(&["pg", "verify", "--source", SOURCE, "--read-data"]).expect(1);
    assert!(run.stdout.contains(&format!("damaged: {keep_from}")), "{}", run.stdout);
    assert!(run.stderr.contains("are damaged"), "{}", run.stderr);
    let run = restore(&pge, "damaged", &[]).expect(1);
    assert!(run.stderr.contains(&keep_from) && run.stderr.contains("damaged"), "{}", run.stderr);
    assert!(!pge.env.path("pg/damaged").exists());
    let dest = pge.env.arg("pg/fetched");
    // Above 125: PostgreSQL aborts recovery instead of ending it early at an earlier point.
    let run = pge.run(&["pg", "archive-get", "--source", SOURCE, &keep_from, &dest]).expect(126);
    assert!(run.stderr.starts_with("Fatal: "), "{}", run.stderr);
    assert!(newest > keep_from);
}

/// A running `tidemark serve-repo`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(env: &Env, dir: &str, port: u16) -> Server {
        let listen = format!("127.0.0.1:{port}");
        let log = fs::File::options().create(true).append(true).open(env.path("serve-repo.log")).unwrap();
        let mut child = env
            .command(["serve-repo", "--listen", &listen, "--path", dir])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start serve-repo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| {
            panic!("no URL in {line:?}: {}", fs::read_to_string(env.path("serve-repo.log")).unwrap())
        });
        let port = url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn archive_push_while_the_repository_server_is_down_loses_nothing() {
    let mut pge = PgEnv::new();
    let served = pge.env.arg("served");
    fs::create_dir_all(&served).unwrap();
    let server = Server::start(&pge.env, &served, 0);
    let port = server.port;
    pge.repo = format!("http://127.0.0.1:{port}/");
    let Some(pg) = pge.archiving_cluster("pg_safety_unreachable") else {
        return;
    };
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)").unwrap();
    pge.ok(&["pg", "backup", "--source", SOURCE, "--connect", &pg.connstr()]);
    switch_and_wait(&pg);
    assert_eq!(archiver(&pg).1, 0);

    drop(server);
    pg.psql("INSERT INTO t SELECT generate_series(11, 20)").unwrap();
    let stuck = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    // PostgreSQL retries and keeps the segment meanwhile.
    let deadline = Instant::now() + Duration::from_secs(120);
    while archiver(&pg).1 < 2 {
        assert!(Instant::now() < deadline, "no failed attempt: {}", fs::read_to_string(pg.log_path()).unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(archiver(&pg).0 < stuck);
    let wal_dir = pg.data_dir().join("pg_wal");
    assert!(wal_dir.join(format!("archive_status/{stuck}.ready")).exists());
    let log = fs::read_to_string(pg.log_path()).unwrap();
    assert!(log.contains("archive command failed with exit code 1"), "{log}");
    assert!(!log.contains("terminated by signal") && !log.contains("exit code 12"), "{log}");
    // The command itself: an ordinary error, exit 1, saying why.
    let path = wal_dir.join(&stuck).to_string_lossy().into_owned();
    let run = pge.run(&["pg", "archive-push", "--source", SOURCE, &path]).expect(1);
    assert!(run.stderr.contains("unreachable") || run.stderr.contains("onnect"), "{}", run.stderr);
    pg.psql("INSERT INTO t SELECT generate_series(21, 30)").unwrap();
    let also_stuck = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();

    // Back on the same port: the backlog drains, in order, nothing skipped.
    let _server = Server::start(&pge.env, &served, port);
    pg.psql("INSERT INTO t SELECT generate_series(31, 40)").unwrap();
    let last = switch_and_wait(&pg);
    assert!(last > also_stuck && also_stuck > stuck);
    assert!(!wal_dir.join(format!("archive_status/{stuck}.ready")).exists());
    let verified = pge.ok(&["pg", "verify", "--source", SOURCE, "--read-data", "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["backups"][0]["last_segment"].as_str(), Some(last.as_str()), "{verified}");
    pge.ok(&["pg", "restore", "--source", SOURCE, "--target-dir", &pge.env.arg("pg/restored")]);
    let restored = start_restored(&pge, "restored", false);
    assert_eq!(ids(&restored), range(1, 40));
    drop(restored);

    // Damage that appears after pg restore checked the WAL: the newest segment's record is
    // altered while the restored cluster has not started yet. archive-get must make PostgreSQL
    // abort recovery (exit 126), never let it take the damage for the end of the archive and
    // open at an earlier point (rows 1-30) as if all were well.
    pge.ok(&["pg", "restore", "--source", SOURCE, "--target-dir", &pge.env.arg("pg/aborted")]);
    let record = std::path::Path::new(&served).join("named").join(format!("wal.{SOURCE}")).join(&last);
    let mut bytes = fs::read(&record).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&record, &bytes).unwrap();
    let aborted = pge.env.path("pg/aborted");
    let conf = aborted.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    // No connections before the end of recovery: the server must not look started before it dies.
    text.push_str("archive_mode = off\nhot_standby = off\n");
    fs::write(&conf, text).unwrap();
    match PgCluster::start_existing(&aborted, Auth::Trust) {
        // PostgreSQL names a code above 125 "command not executable" and stops the startup process.
        Err(e) => assert!(
            e.to_string().contains("could not restore file") && e.to_string().contains("command not executable"),
            "{e}"
        ),
        Ok(opened) => panic!("recovery opened the cluster despite a damaged segment: rows {}", ids(&opened)),
    }
}
