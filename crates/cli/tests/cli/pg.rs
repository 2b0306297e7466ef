//! `tidemark pg ...` against a real PostgreSQL 15 cluster whose `archive_command` is this very
//! binary, and a point-in-time restore whose `restore_command` is the one `pg restore` wrote.
//! Skipped loudly without PostgreSQL (a failure with CI or TIDEMARK_REQUIRE_PG=1).
//!
//! The server runs as `postgres` when the tests run as root, and so does every tidemark command
//! here: the repository must be writable by the archiver.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};

use crate::util::{Env, Run, execute};

const SOURCE: &str = "db";

/// A repository with a key-file credential, in a directory the `postgres` user owns.
pub(crate) struct PgEnv {
    pub(crate) env: Env,
    pub(crate) repo: String,
    pub(crate) key_file: String,
    pub(crate) as_postgres: bool,
}

impl PgEnv {
    pub(crate) fn new() -> PgEnv {
        let env = Env::new();
        let as_postgres = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
            && Command::new("id").arg("postgres").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = env.path("pg");
        fs::create_dir_all(&home).unwrap();
        if as_postgres {
            let status = Command::new("chown").arg("postgres:postgres").arg(&home).status().unwrap();
            assert!(status.success());
        }
        let key_file = env.write("pg/key", [7u8; 64].as_slice()).to_string_lossy().into_owned();
        let repo = env.arg("pg/repo");
        PgEnv { env, repo, key_file, as_postgres }
    }

    /// The command line PostgreSQL runs (and users paste): binary, repository, key file, `args`.
    fn command_line(&self, args: &str) -> String {
        format!("{} -r {} --key-file {} {args}", env!("CARGO_BIN_EXE_tidemark"), self.repo, self.key_file)
    }

    /// Run tidemark as the server's user with `-r REPO --key-file KEY` and `args`.
    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, false)
    }

    /// [`run`](Self::run), with the key file in TIDEMARK_KEY_FILE when `key_in_env`.
    fn run_with(&self, args: &[&str], key_in_env: bool) -> Run {
        let bin = env!("CARGO_BIN_EXE_tidemark");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", bin]);
            c
        } else {
            Command::new(bin)
        };
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TIDEMARK_") {
                cmd.env_remove(key);
            }
        }
        // Dummy S3 keys, for the unreachable-endpoint case.
        cmd.env_remove("RUST_BACKTRACE")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args(["-r", &self.repo]);
        if key_in_env {
            cmd.env("TIDEMARK_KEY_FILE", &self.key_file);
        } else {
            cmd.args(["--key-file", &self.key_file]);
        }
        cmd.args(args).current_dir("/").stdin(Stdio::null());
        execute(cmd)
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Run {
        self.run(args).expect(0)
    }

    /// A cluster whose archive_command is `pg archive-push` into source `db` of this repository,
    /// which is then initialized; `None` after a loud skip without PostgreSQL.
    pub(crate) fn archiving_cluster(&self, test: &str) -> Option<PgCluster> {
        let options = PgOptions {
            archive_command: Some(self.command_line(&format!("pg archive-push --source {SOURCE} %p"))),
            ..PgOptions::default()
        };
        let pg = PgCluster::start_or_skip(test, &options)?;
        self.ok(&["init"]);
        Some(pg)
    }
}

/// Switch to a new segment and wait until the archiver has pushed it through tidemark.
fn switch_and_wait(pg: &PgCluster) {
    let name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = pg.psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").unwrap();
        let (last, failed) = row.split_once('|').unwrap();
        assert_eq!(failed, "0", "archive_command failed: {}", fs::read_to_string(pg.log_path()).unwrap_or_default());
        if last >= name.as_str() {
            return;
        }
        assert!(Instant::now() < deadline, "{name} was not archived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_promoted(pg: &PgCluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("SELECT pg_is_in_recovery()").unwrap() != "f" {
        assert!(Instant::now() < deadline, "recovery did not finish: {}", fs::read_to_string(pg.log_path()).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ids in table `t`, in order, comma-separated.
pub(crate) fn ids(pg: &PgCluster) -> String {
    pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t").unwrap()
}

pub(crate) fn range(a: u32, b: u32) -> String {
    (a..=b).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[test]
fn archive_command_backup_and_restore_to_a_time_with_the_real_binary() {
    let pge = PgEnv::new();
    let Some(pg) = pge.archiving_cluster("pg_cli_round_trip") else {
        return;
    };
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE keep_me (x int); \
         INSERT INTO keep_me SELECT generate_series(1, 10); INSERT INTO t SELECT generate_series(1, 20)",
    )
    .unwrap();

    let backup =
        pge.ok(&["pg", "backup", "--source", SOURCE, "--connect", &pg.connstr(), "--tag", "nightly", "--json"]);
    let summary = backup.json();
    let id = summary["snapshot_id"].as_str().expect("snapshot_id").to_owned();
    assert_eq!(summary["timeline"], 1, "{summary}");
    assert!(summary["start_lsn"].as_str().unwrap().contains('/'), "{summary}");
    assert!(summary["stop_lsn"].as_str().unwrap() >= summary["start_lsn"].as_str().unwrap(), "{summary}");
    assert!(summary["data_added"].as_u64().unwrap() > 1 << 20, "{summary}");
    let snapshots = pge.ok(&["snapshots", "--source", SOURCE, "--json"]).json();
    assert_eq!(snapshots[0]["id"].as_str(), Some(id.as_str()), "{snapshots}");

    pg.psql("INSERT INTO t SELECT generate_series(21, 40)").unwrap();
    let before_drop =
        pg.psql(r#"SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    pg.psql("DROP TABLE keep_me").unwrap();
    pg.psql("INSERT INTO t SELECT generate_series(41, 60)").unwrap();
    switch_and_wait(&pg);

    // Every segment from the backup on is archived.
    let verified = pge.ok(&["pg", "verify", "--source", SOURCE, "--json"]).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["backups"][0]["snapshot_id"].as_str(), Some(id.as_str()), "{verified}");
    let first_segment = verified["backups"][0]["first_segment"].as_str().expect("first_segment").to_owned();

    let target = pge.env.path("pg/restored");
    let target_arg = target.to_string_lossy().into_owned();
    let restored = pge.ok(&[
        "pg",
        "restore",
        "--source",
        SOURCE,
        "--target-dir",
        &target_arg,
        "--time",
        &before_drop,
        "--target-action",
        "promote",
        "--json",
    ]);
    let restored = restored.json();
    assert_eq!(restored["snapshot_id"].as_str(), Some(id.as_str()), "{restored}");
    let auto_conf = fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    let expected = pge.command_line(&format!("pg archive-get --source {SOURCE} %f %p"));
    assert!(auto_conf.contains(&format!("restore_command = '{expected}'")), "{auto_conf}");

    let server = PgCluster::start_existing(&target, Auth::Trust).unwrap();
    wait_promoted(&server);
    assert_eq!(ids(&server), range(1, 40));
    assert_eq!(server.psql("SELECT count(*) FROM keep_me").unwrap(), "10");
    drop(server);

    // A non-empty target directory is refused.
    let run = pge.run(&["pg", "restore", "--source", SOURCE, "--target-dir", &target_arg]).expect(1);
    assert!(run.stderr.contains("Fatal: "), "{}", run.stderr);

    // A segment gone from the repository: verify names it and exits 1.
    fs::remove_file(pge.env.path("pg/repo/named").join(format!("wal.{SOURCE}")).join(&first_segment)).unwrap();
    let run = pge.run(&["pg", "verify", "--source", SOURCE]).expect(1);
    assert!(run.stdout.contains(&first_segment) && run.stdout.contains("unrestorable"), "{}", run.stdout);
    assert!(run.stderr.contains("Fatal: 1 base backup(s)"), "{}", run.stderr);
}

#[test]
fn archive_push_stays_below_126_and_archive_get_aborts_recovery_on_errors() {
    let pge = PgEnv::new();
    pge.ok(&["init"]);
    let home = pge.env.path("pg");
    let not_wal = pge.env.write("pg/notes.txt", "not WAL");
    let garbage = pge.env.write("pg/000000010000000000000003", vec![0u8; 8192]);
    for path in [&not_wal, &garbage] {
        let run = pge.run(&["pg", "archive-push", "--source", SOURCE, &path.to_string_lossy()]).expect(1);
        assert!(run.stderr.starts_with("Fatal: "), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // A missing file is 1 (the end of the archive for PostgreSQL); an error is 126, so that
    // PostgreSQL aborts recovery rather than ending it early.
    let dest = home.join("RECOVERYXLOG").to_string_lossy().into_owned();
    let run = pge.run(&["pg", "archive-get", "--source", SOURCE, "0000000100000000000000FF", &dest]).expect(1);
    assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run:?}");
    pge.run(&["pg", "archive-get", "--source", SOURCE, "../config", &dest]).expect(126);
    // TIDEMARK_KEY_FILE works as --key-file does (the repository opened: "not found").
    pge.run_with(&["pg", "archive-get", "--source", SOURCE, "0000000100000000000000FF", &dest], true).expect(1);

    // A wrong key file or no repository at all: 1 and 126, never 12 or 10.
    let mut pge = pge;
    pge.key_file = pge.env.write("pg/wrong.key", [9u8; 64].as_slice()).to_string_lossy().into_owned();
    let garbage = garbage.to_string_lossy().into_owned();
    let push = ["pg", "archive-push", "--source", SOURCE, garbage.as_str()];
    let get = ["pg", "archive-get", "--source", SOURCE, "000000010000000000000003", dest.as_str()];
    let run = pge.run(&push).expect(1);
    assert!(run.stderr.contains("wrong password"), "{}", run.stderr);
    pge.run(&get).expect(126);
    pge.repo = pge.env.arg("pg/nowhere");
    let run = pge.run(&push).expect(1);
    assert!(run.stderr.contains("no repository"), "{}", run.stderr);
    pge.run(&get).expect(126);
    // Unreachable storage (after the backend's retries): 1.
    pge.repo = "s3://bucket/repo?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true".into();
    let run = pge.run(&push).expect(1);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
}

#[test]
fn restore_refuses_a_password_postgres_cannot_see() {
    let env = Env::with_repo();
    let target = env.arg("restored");
    let run = env.run(["pg", "restore", "--source", SOURCE, "--target-dir", &target]).expect(1);
    assert!(run.stderr.contains("TIDEMARK_PASSWORD"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: give --password-file"), "{}", run.stderr);
    assert!(!env.path("restored").exists());
    // --target-action needs a target.
    env.run(["pg", "restore", "--source", SOURCE, "--target-dir", &target, "--target-action", "promote"]).expect(2);
}
