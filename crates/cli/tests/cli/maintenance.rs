//! forget, prune, keys and locks.

use std::fs;
use std::time::Duration;

use crate::util::{Env, PASSWORD, noise};

#[test]
fn forget_keep_last_with_prune_removes_old_snapshots_and_their_data() {
    let env = Env::with_repo();
    for i in 0..3 {
        env.write("src/data.bin", noise(100 + i, 512 * 1024));
        env.backup("src", &[]);
    }
    let before: u64 = env.objects("data").iter().map(|o| o.1).sum();
    let ids = env.snapshot_ids();
    assert_eq!(ids.len(), 3);
    let dry = env.ok(["forget", "--keep-last", "1", "--dry-run"]);
    assert!(dry.stdout.contains("would remove 2 snapshot(s)"), "{}", dry.stdout);
    assert_eq!(env.snapshot_ids().len(), 3, "dry run changed nothing");

    let run = env.ok(["forget", "--keep-last", "1", "--prune"]);
    assert!(run.stdout.contains("removed 2 snapshot(s)"), "{}", run.stdout);
    assert_eq!(env.snapshot_ids(), vec![ids[2].clone()]);
    let after: u64 = env.objects("data").iter().map(|o| o.1).sum();
    assert!(after < before - 900 * 1024, "prune freed the data of two 512 KiB files: {before} -> {after}");
    env.ok(["check", "--read-data"]);
    env.ok(["restore", "latest", "--target", &env.arg("out")]);
    let restored = env.restored("out", &env.path("src")).join("data.bin");
    assert_eq!(fs::read(restored).unwrap(), noise(102, 512 * 1024));
}

#[test]
fn forget_without_a_policy_is_refused() {
    let env = Env::with_repo();
    env.write("src/a", "a");
    env.backup("src", &[]);
    let run = env.run(["forget", "--prune"]).expect(1);
    assert!(run.stderr.contains("refusing to forget without a keep option"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:") && run.stderr.contains("--keep-last"), "{}", run.stderr);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn forget_keep_within_and_tag() {
    let env = Env::with_repo();
    env.write("src/a", "a");
    env.backup("src", &["--tag", "precious"]);
    env.backup("src", &[]);
    let plan = env.ok(["forget", "--keep-within", "2w", "--dry-run", "--json"]).json();
    assert_eq!(plan["dry_run"], true);
    let verdicts: Vec<bool> =
        plan["groups"][0]["decisions"].as_array().unwrap().iter().map(|d| d["keep"].as_bool().unwrap()).collect();
    assert_eq!(verdicts, vec![true, true], "both are within two weeks: {plan}");
    let run = env.ok(["forget", "--keep-tag", "precious", "--json"]).json();
    assert_eq!(run["removed"].as_array().unwrap().len(), 1, "{run}");
    env.run(["forget", "--keep-within", "soon"]).expect(2);
}

fn current_key(env: &Env) -> String {
    let keys = env.ok(["key", "list", "--json"]).json();
    let current = keys.as_array().unwrap().iter().find(|k| k["current"] == true).expect("a current key");
    current["id"].as_str().unwrap().to_string()
}

#[test]
fn key_add_list_remove_passwd() {
    let mut env = Env::with_repo();
    let second = env.write("second.pw", "second password\n");
    let third = env.write("third.pw", "third password");
    let first_id = current_key(&env);
    env.ok(["key", "add", "--new-password-file", &second.to_string_lossy()]);
    assert_eq!(env.ok(["key", "list", "--json"]).json().as_array().unwrap().len(), 2);

    env.password = Some("second password".into());
    let second_id = current_key(&env);
    assert_ne!(first_id, second_id);
    let refused = env.run(["key", "remove", &second_id]).expect(1);
    assert!(refused.stderr.contains("refusing to remove the key in use"), "{}", refused.stderr);
    env.ok(["key", "remove", &first_id[..10]]);
    env.password = Some(PASSWORD.into());
    env.run(["snapshots"]).expect(12);

    env.password = Some("second password".into());
    env.ok(["key", "passwd", "--new-password-file", &third.to_string_lossy()]);
    env.run(["snapshots"]).expect(12);
    env.password = Some("third password".into());
    env.ok(["snapshots"]);
    assert_eq!(env.ok(["key", "list", "--json"]).json().as_array().unwrap().len(), 1);
}

#[test]
fn key_file_credential() {
    let mut env = Env::with_repo();
    let key = env.write("my.key", noise(9, 64));
    env.ok(["key", "add", "--new-key-file", &key.to_string_lossy()]);
    env.password = None;
    env.ok(["snapshots", "--key-file", &key.to_string_lossy()]);
    let other = env.write("other.key", noise(10, 64));
    env.run(["snapshots", "--key-file", &other.to_string_lossy()]).expect(12);
    let list = env.ok(["key", "list", "--json", "--key-file", &key.to_string_lossy()]).json();
    assert!(list.as_array().unwrap().iter().any(|k| k["kind"] == "keyfile" && k["current"] == true), "{list}");
}

#[test]
fn locked_repository_exits_11_and_unlock_removes_stale_locks() {
    let env = Env::with_repo();
    env.write("src/a", "a");
    let storage = std::sync::Arc::new(tidemark_storage::LocalStorage::new(&env.repo));
    let cred = tidemark_repo::Credential::Password(PASSWORD.as_bytes().to_vec());
    let repo = tidemark_repo::Repository::open(storage, &cred).unwrap();
    let guard = repo.lock("prune", true).unwrap();
    let run = env.run(["backup", &env.arg("src")]).expect(11);
    assert!(run.stderr.contains("locked") && run.stderr.contains("hint:"), "{}", run.stderr);

    // Not refreshed for 2 s: stale under a 1 s lifetime.
    std::thread::sleep(Duration::from_secs(2));
    let unlock = env.with_var("TIDEMARK_LOCK_LIFETIME_SECS", "1").ok(["unlock"]);
    assert!(unlock.stdout.contains("removed 1 lock(s)"), "{}", unlock.stdout);
    env.ok(["backup", &env.arg("src")]);
    drop(guard);
}
