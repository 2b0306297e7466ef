//! The `tidemark` binary end to end: every test runs the real command against a real repository
//! (local, or S3 on a moto or s3s-fs server on 127.0.0.1) in its own temporary directory.
//!
//! Here: errors every user meets first (password, location, format version, URLs) and S3. The
//! submodules cover backup and restore, buckets as a source (backup, restore --at, find, watch),
//! maintenance (forget, prune, keys, locks), corruption, the append-only repository server
//! (`serve-repo`), and PostgreSQL (`pg`, against a real
//! cluster whose archive_command is this binary).

mod util;

#[path = "cli/buckets.rs"]
mod buckets;
#[path = "cli/corruption.rs"]
mod corruption;
#[path = "cli/maintenance.rs"]
mod maintenance;
#[path = "cli/offsite.rs"]
mod offsite;
#[path = "cli/pg.rs"]
mod pg;
#[path = "cli/pg_safety.rs"]
mod pg_safety;
#[path = "cli/pg_stream.rs"]
mod pg_stream;
#[path = "cli/round_trip.rs"]
mod round_trip;
#[path = "cli/serve.rs"]
mod serve;
#[path = "cli/service.rs"]
mod service;
#[path = "cli/service_shared.rs"]
mod service_shared;

use std::fs;
use std::path::Path;

use util::{Env, PASSWORD, noise};

/// The 8-digit short id of a full snapshot id.
pub fn short(id: &str) -> &str {
    &id[..8]
}

#[test]
fn wrong_password_exits_12_with_a_hint() {
    let mut env = Env::with_repo();
    env.password = Some("not the password".into());
    let run = env.run(["snapshots"]).expect(12);
    assert!(run.stderr.contains("Fatal: wrong password"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:") && run.stderr.contains("--password-file"), "{}", run.stderr);
}

#[test]
fn password_file_with_trailing_newline_opens_the_repository() {
    let mut env = Env::with_repo();
    env.password = None;
    let file = env.write("pw", format!("{PASSWORD}\n"));
    env.ok(["snapshots", "--password-file", &file.to_string_lossy()]);
    env.vars.push(("TIDEMARK_PASSWORD_FILE".into(), file.to_string_lossy().into_owned()));
    env.ok(["snapshots"]);
}

#[test]
fn no_password_source_is_a_clear_error() {
    let mut env = Env::with_repo();
    env.password = None;
    let run = env.run(["snapshots"]).expect(1);
    assert!(
        run.stderr.contains("no password given: use --password-file, TIDEMARK_PASSWORD_FILE or TIDEMARK_PASSWORD"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    let run = env.run(["snapshots"]).expect(10);
    assert!(run.stderr.contains("no repository at"), "{}", run.stderr);
    assert!(run.stderr.contains("tidemark init"), "{}", run.stderr);
}

#[test]
fn newer_format_version_is_refused_clearly() {
    let env = Env::with_repo();
    let config = Path::new(&env.repo).join("config");
    let mut marker: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    marker["version"] = 99.into();
    fs::write(&config, serde_json::to_vec(&marker).unwrap()).unwrap();
    let run = env.run(["snapshots"]).expect(1);
    assert!(run.stderr.contains("version 99 is newer"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: upgrade tidemark"), "{}", run.stderr);
}

#[test]
fn unknown_url_scheme_and_usage_errors() {
    let mut env = Env::new();
    env.repo = "ftp://example.invalid/repo".into();
    let run = env.run(["snapshots"]).expect(1);
    assert!(run.stderr.contains("unsupported repository URL scheme \"ftp\""), "{}", run.stderr);
    env.run(["backup"]).expect(2);
    env.run(["no-such-command"]).expect(2);
    let v = env.ok(["--version"]);
    assert!(v.stdout.starts_with("tidemark "), "{}", v.stdout);
}

#[test]
fn s3_round_trip_against_moto() {
    let Some(server) = tidemark_testkit::S3Server::shared_or_skip("s3_round_trip_against_moto") else {
        return;
    };
    let bucket = server.new_bucket().unwrap();
    let mut env = Env::new();
    env.repo = server.url(&bucket, "team/repo");
    let (key, secret) = tidemark_testkit::S3Server::credentials();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    env.ok(["init"]);
    env.write("src/notes.txt", "to the bucket and back");
    env.write("src/data.bin", noise(5, 2 * 1024 * 1024));
    let id = env.backup("src", &[]);
    assert_eq!(env.snapshot_ids(), vec![id.clone()]);
    env.ok(["restore", &id, "--target", &env.arg("out")]);
    let out = env.restored("out", &env.path("src"));
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "to the bucket and back");
    assert_eq!(fs::read(out.join("data.bin")).unwrap(), noise(5, 2 * 1024 * 1024));
    env.ok(["check", "--read-data"]);
    env.run(["init"]).expect(1);
}

#[test]
fn unreachable_s3_endpoint_is_a_clear_error() {
    let mut env = Env::new();
    env.repo = "s3://bucket/repo?endpoint=http://127.0.0.1:1&region=us-east-1&path_style=true".into();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), "testing".into()));
    let run = env.run(["snapshots"]);
    assert_ne!(run.code, 0);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.starts_with("Fatal: "), "{}", run.stderr);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: check the endpoint"), "{}", run.stderr);
}

/// 3-2-1 across two independent S3 implementations: the primary on disk copies incrementally to
/// moto, to s3s-fs and to a second disk; every copy restores and passes `check --read-data`.
#[test]
fn three_two_one_copies_to_two_s3_providers_and_a_second_disk_incrementally() {
    let test = "three_two_one_copies_to_two_s3_providers";
    let Some(moto) = tidemark_testkit::S3Server::shared_or_skip(test) else {
        return;
    };
    let Some(s3s) = tidemark_testkit::S3sServer::shared_or_skip(test) else {
        return;
    };
    let mut env = Env::with_repo();
    // s3s-fs checks signatures against its own key pair; moto accepts any, so one pair serves both.
    let (key, secret) = tidemark_testkit::S3sServer::credentials();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    let offsite = moto.url(&moto.new_bucket().unwrap(), "offsite");
    let s3s_bucket = s3s.new_bucket().unwrap();
    let offsite2 = s3s.url(&s3s_bucket, "offsite");
    let disk2 = env.arg("second-disk");
    let offsite_pw = env.write("offsite.pass", "another password\n");
    let offsite_pw = offsite_pw.to_string_lossy().into_owned();
    let primary = env.repo.clone();
    let primary_pw = env.write("primary.pass", format!("{PASSWORD}\n")).to_string_lossy().into_owned();
    for target in [&offsite, &offsite2] {
        env.ok([
            "-r",
            target,
            "--password-file",
            &offsite_pw,
            "init",
            "--from-repo",
            &primary,
            "--from-password-file",
            &primary_pw,
            "--copy-chunker-params",
        ]);
    }
    env.ok(["-r", &disk2, "init", "--from-repo", &primary, "--copy-chunker-params"]);

    env.write("src/big.bin", noise(7, 3 * 1024 * 1024));
    env.write("src/notes.txt", "first");
    env.backup("src", &[]);
    for target in [&offsite, &offsite2] {
        let first = env.ok(["copy", "--to-repo", target, "--to-password-file", &offsite_pw, "--json"]).json();
        assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{target}: {first}");
    }
    env.ok(["copy", "--to-repo", &disk2]);

    env.write("src/notes.txt", "second");
    env.backup("src", &[]);
    for target in [&offsite, &offsite2] {
        let second = env.ok(["copy", "--to-repo", target, "--to-password-file", &offsite_pw, "--json"]).json();
        assert_eq!(second["copied"].as_array().unwrap().len(), 1, "only the new snapshot, {target}: {second}");
        assert_eq!(second["already_present"].as_array().unwrap().len(), 1, "{target}: {second}");
        assert!(second["bytes_copied"].as_u64().unwrap() < 1024 * 1024, "incremental, {target}: {second}");
    }
    env.ok(["copy", "--to-repo", &disk2]);

    let copies = [
        ("moto", offsite.as_str(), Some(offsite_pw.as_str())),
        ("s3s", offsite2.as_str(), Some(offsite_pw.as_str())),
        ("disk2", disk2.as_str(), None),
    ];
    for (name, repo, pw) in copies {
        let mut args = vec!["-r", repo];
        if let Some(pw) = pw {
            args.extend(["--password-file", pw]);
        }
        let dir = format!("restore-{name}");
        let target = env.arg(&dir);
        let mut restore = args.clone();
        restore.extend(["restore", "latest", "--target", &target]);
        env.ok(restore);
        let out = env.restored(&dir, &env.path("src"));
        assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "second", "{name}");
        assert_eq!(fs::read(out.join("big.bin")).unwrap(), noise(7, 3 * 1024 * 1024), "{name}");
        let mut snapshots = args.clone();
        snapshots.extend(["snapshots", "--json"]);
        assert_eq!(env.ok(snapshots).json().as_array().unwrap().len(), 2, "{name}");
        let mut check = args.clone();
        check.extend(["check", "--read-data"]);
        env.ok(check);
    }
    // The s3s-fs copy really is in its bucket, and s3s-fs (unlike moto) refuses a wrong signature.
    assert!(s3s.root().join(&s3s_bucket).join("offsite/config").is_file());
    let mut wrong_key = Env::new();
    wrong_key.repo = offsite2.clone();
    wrong_key.password = Some("another password".into());
    wrong_key.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    wrong_key.vars.push(("AWS_SECRET_ACCESS_KEY".into(), "not the secret".into()));
    let run = wrong_key.run(["snapshots"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    // A target that does not share chunking is refused with the fix.
    let stranger = env.arg("stranger");
    env.ok(["-r", &stranger, "init"]);
    let run = env.run(["copy", "--to-repo", &stranger]).expect(1);
    assert!(run.stderr.contains("--copy-chunker-params"), "{}", run.stderr);
}
