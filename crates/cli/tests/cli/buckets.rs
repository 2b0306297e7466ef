//! Buckets as a source, end to end against moto: `backup s3://...`, `restore --at/--source` into a
//! bucket and a directory, `find`, `watch`, `--all-versions` with `--include-deleted`; and the
//! usage errors and `--at` of directory snapshots, which need no server.

use std::fs;
use std::time::Duration;

use tidemark_testkit::{BucketOptions, S3Server};

use crate::util::s3::TestBucket;
use crate::util::{Env, noise};

/// A repository on local disk whose runs see the moto credentials in AWS_*.
fn env_for_buckets() -> Env {
    let mut env = Env::with_repo();
    let (key, secret) = S3Server::credentials();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    env
}

/// Now, as `--at` takes it, after a pause that puts it strictly between two runs.
fn between_runs() -> String {
    std::thread::sleep(Duration::from_millis(1100));
    let now = jiff::Timestamp::now().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    now
}

#[test]
fn bucket_snapshots_restore_at_a_time_find_and_restore_one_object() {
    let Some(server) = S3Server::shared_or_skip("bucket_snapshots_restore_at_a_time") else { return };
    let env = env_for_buckets();
    let src = TestBucket::new(server, &BucketOptions::default());
    src.put("photos/beach.jpg", b"sand and sea", Some("image/jpeg"), &[("camera", "x100")]);
    src.put("photos/party.jpg", b"confetti", Some("image/jpeg"), &[("who", "everyone")]);
    src.put("docs/notes.txt", b"remember the milk", Some("text/plain"), &[]);
    src.put("docs/report.pdf", &noise(3, 300_000), Some("application/pdf"), &[]);
    let before = src.contents();
    assert_eq!(before.len(), 4);

    let first = env.ok(["backup", &src.url, "--json", "--tag", "photos", "--concurrency", "3"]).json();
    assert_eq!(first["kind"], "bucket", "{first}");
    assert_eq!((first["objects_fetched"].as_u64(), first["objects_reused"].as_u64()), (Some(4), Some(0)), "{first}");
    assert_eq!(first["files_new"], 4, "{first}");
    assert!(first["bytes_fetched"].as_u64().unwrap() >= 300_000, "{first}");
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();

    let at = between_runs();
    src.put("docs/notes.txt", b"remember the eggs too", Some("text/markdown"), &[("v", "2")]);
    src.delete("photos/party.jpg");
    let second = env.ok(["backup", &src.url, "--json"]).json();
    assert_eq!((second["objects_fetched"].as_u64(), second["objects_reused"].as_u64()), (Some(1), Some(2)));
    assert_eq!((second["files_changed"].as_u64(), second["total_files"].as_u64()), (Some(1), Some(3)));
    // Nothing changed: the human summary says that everything was reused.
    let third = env.ok(["backup", &src.url]);
    assert!(third.stdout.contains("Fetched:          0 objects"), "{}", third.stdout);
    assert!(third.stdout.contains("3 reused from the parent"), "{}", third.stdout);
    let listed = env.ok(["snapshots", "--source", &src.url, "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[1]["parent"].as_str(), Some(first_id.as_str()), "{listed}");

    // The bucket as it was at `at`, into another bucket: keys, content, content type, metadata.
    let dst = TestBucket::new(server, &BucketOptions::default());
    let restored = env.ok(["restore", "--at", &at, "--source", &src.url, "--target", &dst.url, "--json"]).json();
    assert_eq!(restored["snapshot_id"].as_str(), Some(first_id.as_str()), "{restored}");
    assert_eq!((restored["objects"].as_u64(), restored["skipped"].as_u64()), (Some(4), Some(0)), "{restored}");
    assert_eq!(dst.contents(), before);
    // Again: the objects exist and are not replaced without --overwrite.
    let again = env.ok(["restore", "latest", "--at", &at, "--target", &dst.url]);
    assert!(again.stderr.contains("4 existing object(s) were left as they are"), "{}", again.stderr);
    assert_eq!(dst.get("docs/notes.txt").data, b"remember the milk");

    // One object, deleted since, into a directory: its key becomes a path, nothing else comes.
    let out = env.arg("one");
    env.ok(["restore", &first_id[..8], "--include", "/photos/party.jpg", "--target", &out]);
    assert_eq!(fs::read(env.path("one/photos/party.jpg")).unwrap(), b"confetti");
    assert!(!env.path("one/docs").exists() && !env.path("one/photos/beach.jpg").exists());

    // find: the deleted photo is in the first snapshot only.
    let found = env.ok(["find", "party.jpg", "--source", &src.url, "--json"]).json();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["snapshot_id"].as_str(), Some(first_id.as_str()));
    assert_eq!((found[0]["path"].as_str(), found[0]["size"].as_u64()), (Some("photos/party.jpg"), Some(8)));
    let table = env.ok(["find", "notes.txt"]).stdout;
    assert_eq!(table.lines().filter(|l| l.contains("docs/notes.txt") && l.ends_with("current")).count(), 3, "{table}");
    assert!(table.lines().nth(2).is_some_and(|l| l.starts_with(&first_id[..8])), "{table}");
    let none = env.ok(["find", "nothing-like-this.jpg"]);
    assert!(none.stdout.contains("no file matching"), "{}", none.stdout);
}

#[test]
fn all_versions_keeps_an_object_created_and_deleted_between_runs() {
    let Some(server) = S3Server::shared_or_skip("cli_all_versions_created_and_deleted") else { return };
    let env = env_for_buckets();
    let src = TestBucket::new(server, &BucketOptions { versioning: true, ..Default::default() });
    src.put("keep.txt", b"v1", Some("text/plain"), &[]);
    let first = env.ok(["backup", &src.url, "--all-versions", "--json"]).json();
    assert_eq!(first["objects_fetched"], 1, "{first}");

    src.put("tmp/brief.txt", b"here and gone", Some("text/plain"), &[("k", "v")]);
    src.delete("tmp/brief.txt");
    src.put("keep.txt", b"v2", Some("text/plain"), &[]);
    let second = env.ok(["backup", &src.url, "--all-versions", "--json"]).json();
    assert_eq!(second["warnings"].as_array().map(Vec::len), Some(0), "{second}");
    assert_eq!((second["objects_fetched"].as_u64(), second["versions"].as_u64()), (Some(2), Some(2)), "{second}");

    let found = env.ok(["find", "brief.txt", "--json"]).json();
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(
        (found[0]["current"].as_bool(), found[0]["snapshot_id"].as_str()),
        (Some(false), second["snapshot_id"].as_str())
    );
    let version = found[0]["version_id"].as_str().expect("version id").to_string();
    assert!(env.ok(["find", "brief.txt"]).stdout.contains(&format!("version {version}")));

    // With --include-deleted the brief object comes back under its key, with its metadata.
    let dst = TestBucket::new(server, &BucketOptions::default());
    env.ok(["restore", "latest", "--source", &src.url, "--include-deleted", "--target", &dst.url]);
    assert_eq!(dst.keys(), ["keep.txt", "tmp/brief.txt"]);
    assert_eq!(dst.get("keep.txt").data, b"v2");
    let brief = dst.get("tmp/brief.txt");
    assert_eq!((brief.data.as_slice(), brief.content_type.as_deref()), (&b"here and gone"[..], Some("text/plain")));
    assert_eq!(brief.user_metadata.get("k").map(String::as_str), Some("v"));
    // Without it, only what was current.
    env.ok(["restore", "latest", "--source", &src.url, "--target", &env.arg("current")]);
    assert_eq!(fs::read(env.path("current/keep.txt")).unwrap(), b"v2");
    assert!(!env.path("current/tmp").exists());
}

#[test]
fn watch_snapshots_a_bucket_every_interval_and_survives_failed_runs() {
    let Some(server) = S3Server::shared_or_skip("cli_watch_bucket") else { return };
    let env = env_for_buckets();
    let src = TestBucket::new(server, &BucketOptions::default());
    for i in 0..3 {
        src.put(&format!("logs/{i}.txt"), format!("log {i}").as_bytes(), Some("text/plain"), &[]);
    }
    let started = std::time::Instant::now();
    let runs = env.ok(["watch", &src.url, "--every", "1s", "--count", "2", "--json"]).json_lines();
    assert!(started.elapsed() >= Duration::from_secs(1), "the second run waits for its slot");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0]["objects_fetched"].as_u64(), runs[0]["objects_reused"].as_u64()), (Some(3), Some(0)));
    assert_eq!((runs[1]["objects_fetched"].as_u64(), runs[1]["objects_reused"].as_u64()), (Some(0), Some(3)));
    assert_eq!(runs[1]["data_added"], 0, "{}", runs[1]);
    let listed = env.ok(["snapshots", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["parent"], runs[0]["snapshot_id"]);

    // A bucket that does not exist: every run fails, each is reported, the loop goes on.
    let missing = server.url("no-such-bucket-for-watch", "");
    let run = env.run(["watch", &missing, "--every", "1s", "--count", "2"]).expect(1);
    assert!(run.stderr.contains("error: run 1 failed") && run.stderr.contains("NoSuchBucket"), "{}", run.stderr);
    // The last run's error is the command's: printed once, as Fatal.
    assert!(!run.stderr.contains("run 2 failed"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("Fatal: ").count(), 1, "{}", run.stderr);
}

#[test]
fn watch_and_restore_at_for_directories() {
    let env = Env::with_repo();
    env.write("src/a.txt", "first a");
    env.write("src/b.bin", noise(9, 100_000));
    let runs = env.ok(["watch", &env.arg("src"), "--every", "1s", "--count", "2", "--json"]).json_lines();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[1]["files_unmodified"].as_u64(), runs[1]["data_added"].as_u64()), (Some(2), Some(0)));
    let first_id = runs[0]["snapshot_id"].as_str().unwrap().to_string();

    let at = between_runs();
    env.write("src/a.txt", "second a");
    env.backup("src", &[]);
    env.ok(["restore", "--at", &at, "--source", &env.arg("src"), "--target", &env.arg("old")]);
    let old = env.restored("old", &env.path("src"));
    assert_eq!(fs::read_to_string(old.join("a.txt")).unwrap(), "first a");
    // Without --source too: the repository holds snapshots of one source only.
    let run = env.ok(["restore", "--at", &at, "--target", &env.arg("old2"), "--json"]).json();
    assert_eq!(run["snapshot_id"].as_str(), Some(runs[1]["snapshot_id"].as_str().unwrap()));
    assert_ne!(run["snapshot_id"].as_str(), Some(first_id.as_str()));

    // Before the first snapshot there is nothing.
    let run = env.run(["restore", "--at", "2001-01-01T00:00:00Z", "--target", &env.arg("x")]).expect(1);
    assert!(run.stderr.contains("no snapshot at or before 2001-01-01T00:00:00Z"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
}

#[test]
fn bucket_options_that_do_not_fit_are_usage_errors() {
    let env = Env::with_repo();
    env.write("src/a.txt", "a");
    let src = env.arg("src");
    let run = env.run(["backup", "s3://bucket?region=us-east-1", &src]).expect(2);
    assert!(run.stderr.contains("either paths or one bucket URL, not both"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    let run = env.run(["backup", &src, "--all-versions"]).expect(2);
    assert!(run.stderr.contains("--all-versions only apply to bucket backups"), "{}", run.stderr);
    let run = env.run(["backup", "s3://bucket", "--force"]).expect(2);
    assert!(run.stderr.contains("--force applies to directory backups only"), "{}", run.stderr);

    let id = env.backup("src", &[]);
    let run = env.run(["restore", &id, "--target", "s3://bucket?region=us-east-1"]).expect(2);
    assert!(run.stderr.contains("only bucket snapshots restore into a bucket"), "{}", run.stderr);
    let run = env.run(["restore", &id, "--target", &env.arg("out"), "--include-deleted"]).expect(2);
    assert!(run.stderr.contains("bucket snapshots only"), "{}", run.stderr);
    let run = env.run(["restore", &id, "--at", "2030-01-01T00:00:00Z", "--target", &env.arg("out")]).expect(2);
    assert!(run.stderr.contains("already names one"), "{}", run.stderr);
    let run = env.run(["restore", "--at", "yesterday-ish", "--target", &env.arg("out")]).expect(2);
    assert!(run.stderr.contains("RFC 3339"), "{}", run.stderr);
    env.run(["restore", "--target", &env.arg("out")]).expect(2);
    env.run(["watch", &src, "--every", "0s"]).expect(2);
    let run = env.with_var("TIDEMARK_BUCKET_ACCESS_KEY_ID", "only-one").run(["backup", "s3://bucket"]).expect(1);
    assert!(run.stderr.contains("TIDEMARK_BUCKET_SECRET_ACCESS_KEY"), "{}", run.stderr);
}
