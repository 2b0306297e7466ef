//! Damaged repositories and unreadable sources: each is detected and reported, and what is intact
//! still restores.

use std::fs;
use std::path::{Path, PathBuf};

use crate::short;
use crate::util::{Env, noise};

/// Packs written by the last backup: the new files under data/, largest first.
fn new_packs(env: &Env, before: &[(PathBuf, u64)]) -> Vec<(PathBuf, u64)> {
    let mut packs: Vec<_> = env.objects("data").into_iter().filter(|p| !before.contains(p)).collect();
    packs.sort_by_key(|p| std::cmp::Reverse(p.1));
    packs
}

fn key_of(env: &Env, path: &Path) -> String {
    path.strip_prefix(&env.repo).unwrap().to_string_lossy().into_owned()
}

#[test]
fn flipped_byte_in_a_pack_names_the_pack_and_snapshot_and_other_data_still_restores() {
    let env = Env::new();
    env.ok(["init", "--pack-size-mib", "1"]);
    env.write("a/one.txt", "snapshot A stays intact\n".repeat(100));
    let a = env.backup("a", &[]);
    let before = env.objects("data");
    for i in 0..6 {
        env.write(&format!("b/f{i}.bin"), noise(20 + i, 700 * 1024));
    }
    let b = env.backup("b", &[]);
    let packs = new_packs(&env, &before);
    assert!(packs.len() >= 3, "1 MiB packs for 4 MiB of data: {packs:?}");
    let (victim, size) = packs[0].clone();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[size as usize / 2] ^= 0x40;
    fs::write(&victim, bytes).unwrap();

    let check = env.run(["check", "--read-data"]).expect(1);
    assert!(check.stdout.contains("corrupt-pack"), "{}", check.stdout);
    assert!(check.stdout.contains(&key_of(&env, &victim)), "names the pack: {}", check.stdout);
    assert!(check.stdout.contains(short(&b)), "names snapshot B: {}", check.stdout);
    assert!(!check.stdout.contains(short(&a)), "A is not affected: {}", check.stdout);

    env.ok(["restore", &a, "--target", &env.arg("ra")]);
    let one = env.restored("ra", &env.path("a")).join("one.txt");
    assert_eq!(fs::read(one).unwrap(), fs::read(env.path("a/one.txt")).unwrap());

    let run = env.run(["restore", &b, "--target", &env.arg("rb")]).expect(1);
    let rb = env.restored("rb", &env.path("b"));
    let (mut good, mut bad) = (0, 0);
    for i in 0..6 {
        let name = format!("f{i}.bin");
        if fs::read(rb.join(&name)).ok() == Some(noise(20 + i, 700 * 1024)) {
            good += 1;
        } else {
            bad += 1;
            assert!(run.stderr.contains(&name), "{name} is damaged and must be reported: {}", run.stderr);
        }
    }
    assert!(good >= 1 && bad >= 1, "good {good}, bad {bad}: {}", run.stderr);
}

#[test]
fn deleted_pack_is_named_by_check() {
    let env = Env::with_repo();
    env.write("src/data.bin", noise(3, 300 * 1024));
    let id = env.backup("src", &[]);
    let (victim, _) = new_packs(&env, &[])[0].clone();
    fs::remove_file(&victim).unwrap();
    let check = env.run(["check"]).expect(1);
    assert!(check.stdout.contains("missing-pack"), "{}", check.stdout);
    assert!(check.stdout.contains(&key_of(&env, &victim)), "{}", check.stdout);
    assert!(check.stdout.contains(short(&id)), "{}", check.stdout);
    assert!(check.stderr.contains("Fatal: the repository has"), "{}", check.stderr);
}

#[test]
fn truncated_index_is_reported_by_check() {
    let env = Env::with_repo();
    env.write("src/data.txt", "some data");
    env.backup("src", &[]);
    let index = env.objects("index");
    assert_eq!(index.len(), 1);
    let (file, size) = &index[0];
    let bytes = fs::read(file).unwrap();
    fs::write(file, &bytes[..*size as usize / 2]).unwrap();
    let check = env.run(["check", "--json"]).expect(1);
    let report = check.json();
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["kind"] == "unreadable-index" && e["object"] == key_of(&env, file)), "{report}");
}

/// A file whose read fails makes backup exit 3 while still saving a snapshot of the rest.
///
/// The test runs as root in CI, where `chmod 000` does not stop reads. It backs up
/// `/proc/self/mem` instead: it opens fine, but reading at offset 0 (unmapped in every process)
/// fails with EIO. This proves that a read error (not an open error) is reported, counted and
/// turned into exit code 3 with the snapshot committed; it does not exercise permission errors.
#[test]
fn unreadable_file_gives_exit_3_and_the_snapshot_exists() {
    let env = Env::with_repo();
    env.write("src/fine.txt", "readable");
    let run = env.run(["backup", &env.arg("src"), "/proc/self/mem", "--json"]).expect(3);
    let summary = run.json();
    let warnings = summary["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["path"].as_str().unwrap().ends_with("/mem")), "{summary}");
    assert_eq!(env.snapshot_ids(), vec![summary["snapshot_id"].as_str().unwrap().to_string()]);
    let dump = env.ok(["dump", "latest", &format!("{}/fine.txt", env.arg("src"))]);
    assert_eq!(dump.stdout, "readable");
}
