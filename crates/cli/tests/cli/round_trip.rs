//! Backup, restore, ls, dump, diff and `--json` round trips.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::short;
use crate::util::{Env, noise};

fn set_mtime(path: &Path, t: SystemTime) {
    let f = fs::File::open(path).expect("open for mtime");
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t)).expect("set mtime");
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).expect("metadata").modified().expect("mtime")
}

fn is_root() -> bool {
    let probe = tempfile::tempfile().expect("probe file");
    probe.metadata().expect("probe metadata").uid() == 0
}

#[test]
fn round_trip_keeps_contents_modes_mtimes_symlinks_and_empty_dirs() {
    let env = Env::with_repo();
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let text = env.write("src/docs/readme.txt", "hello tidemark\n".repeat(1000));
    let big = env.write("src/data/big.bin", noise(1, 3 * 1024 * 1024 + 17));
    let script = env.write("src/run.sh", "#!/bin/sh\necho hi\n");
    let private = env.write("src/private.key", noise(2, 100));
    let empty_file = env.write("src/empty.txt", "");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(env.path("src/empty/nested")).unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", env.path("src/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", env.path("src/dangling")).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&private, Some(1234), Some(5678)).unwrap();
    }
    for p in [&text, &big, &script, &private, &empty_file] {
        set_mtime(p, when);
    }
    fs::set_permissions(env.path("src/docs"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&env.path("src/docs"), when);

    let id = env.backup("src", &["--tag", "first", "--host", "testhost"]);
    let list = env.ok(["snapshots", "--json"]).json();
    let snaps = list.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    assert_eq!(snaps[0]["hostname"], "testhost");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["first"]));
    assert_eq!(snaps[0]["paths"], serde_json::json!([env.arg("src")]));

    env.ok(["restore", "latest", "--target", &env.arg("out")]);
    let src = env.path("src");
    let out = env.restored("out", &src);
    for rel in ["docs/readme.txt", "data/big.bin", "run.sh", "private.key", "empty.txt"] {
        assert_eq!(fs::read(out.join(rel)).unwrap(), fs::read(src.join(rel)).unwrap(), "{rel} content");
        assert_eq!(mtime(&out.join(rel)), when, "{rel} mtime");
    }
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&out.join("run.sh")), 0o755);
    assert_eq!(mode(&out.join("private.key")), 0o600);
    assert_eq!(mode(&out.join("docs")), 0o750);
    assert_eq!(mtime(&out.join("docs")), when, "directory mtime");
    assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("docs/readme.txt"));
    assert_eq!(fs::read_link(out.join("dangling")).unwrap(), Path::new("/nowhere/at/all"));
    assert!(out.join("empty/nested").is_dir());
    assert_eq!(fs::read_dir(out.join("empty/nested")).unwrap().count(), 0);
    if is_root() {
        let meta = fs::metadata(out.join("private.key")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "ownership");
    }
    let check = env.ok(["check", "--read-data"]);
    assert!(check.stdout.contains("no errors were found"), "{}", check.stdout);
}

#[test]
fn restore_keeps_existing_files_unless_overwrite() {
    let env = Env::with_repo();
    env.write("src/a.txt", "original");
    env.backup("src", &[]);
    let target = env.arg("out");
    env.ok(["restore", "latest", "--target", &target]);
    let restored = env.restored("out", &env.path("src")).join("a.txt");
    fs::write(&restored, "edited after restore").unwrap();
    let run = env.ok(["restore", "latest", "--target", &target, "--json"]);
    assert_eq!(run.json()["skipped"], 1, "{}", run.stdout);
    assert_eq!(fs::read_to_string(&restored).unwrap(), "edited after restore");
    env.ok(["restore", "latest", "--target", &target, "--overwrite"]);
    assert_eq!(fs::read_to_string(&restored).unwrap(), "original");
}

#[test]
fn restore_include_selects_paths() {
    let env = Env::with_repo();
    env.write("src/wanted/a.txt", "a");
    env.write("src/wanted/deeper/b.txt", "b");
    env.write("src/other.txt", "o");
    env.backup("src", &[]);
    let pattern = format!("{}/wanted", env.arg("src"));
    env.ok(["restore", "latest", "--target", &env.arg("out"), "--include", &pattern]);
    let out = env.restored("out", &env.path("src"));
    assert_eq!(fs::read_to_string(out.join("wanted/deeper/b.txt")).unwrap(), "b");
    assert!(out.join("wanted/a.txt").exists());
    assert!(!out.join("other.txt").exists(), "not included");
}

#[test]
fn exclude_patterns_leave_files_out() {
    let env = Env::with_repo();
    env.write("src/keep.txt", "k");
    env.write("src/scratch.tmp", "t");
    env.write("src/sub/also.tmp", "t");
    env.write("src/cache/blob", "c");
    env.write("src/sub/kept.rs", "r");
    env.backup("src", &["--exclude", "*.tmp", "--exclude", "cache/"]);
    let ls = env.ok(["ls", "latest"]);
    assert!(ls.stdout.contains("keep.txt") && ls.stdout.contains("sub/kept.rs"), "{}", ls.stdout);
    assert!(!ls.stdout.contains(".tmp"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("cache"), "{}", ls.stdout);
}

#[test]
fn ls_dump_and_diff() {
    let env = Env::with_repo();
    env.write("src/keep.txt", "unchanged");
    env.write("src/change.txt", "before");
    env.write("src/remove.txt", "going away");
    env.write("src/sub/deep.txt", "deep file");
    let first = env.backup("src", &[]);
    env.write("src/change.txt", "after, and longer");
    fs::remove_file(env.path("src/remove.txt")).unwrap();
    env.write("src/added.txt", "new here");
    let second = env.backup("src", &[]);
    let src = env.arg("src");

    let ls = env.ok(["ls", &second]);
    assert!(ls.stdout.lines().any(|l| l == format!("{src}/sub/deep.txt")), "{}", ls.stdout);
    assert!(!ls.stdout.contains("remove.txt"), "{}", ls.stdout);
    let ls = env.ok(["ls", "-l", &first, &format!("{src}/sub")]);
    assert!(ls.stdout.contains("-rw-") && ls.stdout.contains("deep.txt"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("keep.txt"), "ls of a subdirectory lists only it: {}", ls.stdout);
    let lines = env.ok(["ls", "--json", short(&first)]).json_lines();
    assert_eq!(lines[0]["struct_type"], "snapshot");
    assert!(lines.iter().any(|l| l["path"] == format!("{src}/remove.txt") && l["type"] == "file" && l["size"] == 10));

    let dump = env.ok(["dump", &first, &format!("{src}/change.txt")]);
    assert_eq!(dump.stdout, "before");
    let dump = env.ok(["dump", "latest", &format!("{src}/change.txt")]);
    assert_eq!(dump.stdout, "after, and longer");
    let missing = env.run(["dump", "latest", &format!("{src}/remove.txt")]).expect(1);
    assert!(missing.stderr.contains("no such file"), "{}", missing.stderr);

    let diff = env.ok(["diff", &first, &second]);
    assert!(diff.stdout.contains(&format!("+    {src}/added.txt")), "{}", diff.stdout);
    assert!(diff.stdout.contains(&format!("-    {src}/remove.txt")), "{}", diff.stdout);
    assert!(diff.stdout.contains(&format!("M    {src}/change.txt")), "{}", diff.stdout);
    assert!(!diff.stdout.contains("keep.txt"), "{}", diff.stdout);
    let json = env.ok(["diff", "--json", &first, &second]).json();
    assert_eq!((json["added"].as_u64(), json["removed"].as_u64()), (Some(1), Some(1)), "{json}");
}

#[test]
fn dump_into_a_closed_pipe_exits_0() {
    let env = Env::with_repo();
    env.write("src/big.bin", noise(7, 6 * 1024 * 1024));
    env.backup("src", &[]);
    let mut child = env
        .command(["dump", "latest", &format!("{}/big.bin", env.arg("src"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 1000];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("Fatal"), "{stderr}");
    assert_eq!(&head[..], &noise(7, 1000)[..]);
}

#[test]
fn json_outputs_parse() {
    let env = Env::new();
    assert_eq!(env.ok(["init", "--json"]).json()["message_type"], "initialized");
    env.write("src/a.txt", "alpha");
    let backup = env.ok(["backup", &env.arg("src"), "--json"]).json();
    assert_eq!(backup["message_type"], "summary");
    assert_eq!(backup["files_new"], 1);
    let id = backup["snapshot_id"].as_str().unwrap().to_string();
    env.write("src/b.txt", "beta");
    let again = env.ok(["backup", &env.arg("src"), "--json"]).json();
    assert_eq!((again["files_new"].as_u64(), again["files_unmodified"].as_u64()), (Some(1), Some(1)), "{again}");

    assert_eq!(env.ok(["snapshots", "--json"]).json().as_array().unwrap().len(), 2);
    assert!(env.ok(["ls", "--json", &id]).json_lines().len() >= 2);
    assert!(env.ok(["diff", "--json", &id, "latest"]).json()["changes"].is_array());
    let restore = env.ok(["restore", &id, "--target", &env.arg("out"), "--json"]).json();
    assert_eq!(restore["files"], 1);
    let check = env.ok(["check", "--json"]).json();
    assert_eq!(check["errors"], serde_json::json!([]));
    assert!(env.ok(["forget", "--keep-last", "5", "--dry-run", "--json"]).json()["groups"].is_array());
    assert_eq!(env.ok(["prune", "--dry-run", "--json"]).json()["dry_run"], true);
    let stats = env.ok(["stats", "--json"]).json();
    assert_eq!(stats["snapshots"], 2);
    assert!(stats["storage_size"].as_u64().unwrap() > 0);
    assert_eq!(env.ok(["key", "list", "--json"]).json().as_array().unwrap().len(), 1);
    assert_eq!(env.ok(["version", "--json"]).json()["format_version"], 1);
    assert!(env.ok(["unlock", "--json"]).json()["removed"].is_number());
}
