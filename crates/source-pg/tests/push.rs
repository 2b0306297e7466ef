//! `archive_push` as the repository grows and under concurrency: what each push reads and writes
//! (the same few objects for the first segment and the hundredth: no index load, no pack listing),
//! repeats that write nothing, and pushers racing each other and prune (real PostgreSQL 15
//! segments through tidemark-testkit; skipped loudly without PostgreSQL).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidemark_repo::check::CheckOptions;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::prune::PruneOptions;
use tidemark_repo::{Credential, InitOptions, NoProgress, Repository};
use tidemark_source_pg::{ErrorKind, PushOutcome, archive, archive_get, archive_push};
use tidemark_storage::fault::FaultStorage;
use tidemark_storage::{MemoryStorage, Storage};
use tidemark_testkit::postgres::{PgCluster, PgOptions};

const SOURCE: &str = "db";
const SEGMENT: u64 = 16 << 20;

fn credential() -> Credential {
    Credential::Password(b"pw".to_vec())
}

fn init(storage: Arc<dyn Storage>) -> Repository {
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    Repository::init(storage, &credential(), &opts).unwrap()
}

/// Memory storage whose every call is logged as `"<op> <key or prefix>"` ([`FaultStorage::take_log`]).
type Recording = FaultStorage<MemoryStorage>;

fn recording() -> Recording {
    FaultStorage::new(MemoryStorage::new())
}

/// A real segment of a fresh cluster, or `None` after a loud skip.
fn real_segment(test: &str) -> Option<(PgCluster, Vec<u8>)> {
    let pg = PgCluster::start_or_skip(test, &PgOptions::default())?;
    let mut names: Vec<PathBuf> = fs::read_dir(pg.data_dir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    names.sort();
    let bytes = fs::read(&names[0]).unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT);
    Some((pg, bytes))
}

/// Segment `n` of timeline 1, made from a real one: its page address rewritten to where the name
/// says, and a few bytes per MiB changed so that no two share content.
fn segment(dir: &Path, base: &[u8], n: u64) -> PathBuf {
    let mut bytes = base.to_vec();
    bytes[8..16].copy_from_slice(&(n * SEGMENT).to_le_bytes());
    for (i, off) in (64 * 1024..bytes.len()).step_by(1 << 20).enumerate() {
        bytes[off..off + 8].copy_from_slice(&(n * 1000 + i as u64).to_le_bytes());
    }
    let path = dir.join(format!("00000001{:08X}{:08X}", n >> 8, n & 0xFF));
    fs::write(&path, bytes).unwrap();
    path
}

fn reads_of_what_grows(calls: &[String]) -> Vec<&String> {
    calls
        .iter()
        .filter(|c| c.starts_with("list index/") || c.starts_with("get index/") || c.starts_with("list data/"))
        .collect()
}

#[test]
fn each_push_costs_the_same_few_storage_calls_and_a_repeat_writes_nothing() {
    let Some((pg, base)) = real_segment("push_flat") else { return };
    let dir = pg.scratch_dir("segments").unwrap();
    let rec = recording();
    init(Arc::new(rec.clone()));

    let mut per_push = Vec::new();
    for n in 0x100..0x10C {
        let path = segment(&dir, &base, n);
        // A new process per segment, as under archive_command.
        let repo = Repository::open(Arc::new(rec.clone()), &credential()).unwrap();
        rec.take_log();
        assert_eq!(archive_push(&repo, SOURCE, &path).unwrap(), PushOutcome::Stored);
        let calls = rec.take_log();
        assert!(reads_of_what_grows(&calls).is_empty(), "push {n:#x} read the index or listed packs: {calls:?}");
        let puts: Vec<&String> = calls.iter().filter(|c| c.starts_with("put ")).collect();
        assert!(puts.iter().any(|c| c.starts_with("put index/")), "{calls:?}");
        assert!(puts.iter().any(|c| c.starts_with(&format!("put named/wal.{SOURCE}/"))), "{calls:?}");
        per_push.push(calls.len());
    }
    // The first push also records the cluster; after it, every push makes the same calls.
    assert!(per_push[1..].iter().all(|&n| n == per_push[1]), "storage calls per push: {per_push:?}");

    // Pushing one again: identical is success, different bytes a conflict; neither writes.
    let repo = Repository::open(Arc::new(rec.clone()), &credential()).unwrap();
    let again = segment(&dir, &base, 0x105);
    let keys_before = rec.inner().keys();
    rec.take_log();
    assert_eq!(archive_push(&repo, SOURCE, &again).unwrap(), PushOutcome::AlreadyIdentical);
    let mut forged = fs::read(&again).unwrap();
    forged[SEGMENT as usize - 1] ^= 1;
    fs::write(&again, &forged).unwrap();
    let err = archive_push(&repo, SOURCE, &again).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let calls = rec.take_log();
    assert!(calls.iter().all(|c| c.starts_with("get ") || c.starts_with("list keys/")), "{calls:?}");
    assert_eq!(rec.inner().keys(), keys_before);

    // Everything reads back, and check finds nothing wrong.
    let got = dir.join("got");
    for n in 0x100..0x10C {
        let name = format!("00000001{:08X}{:08X}", n >> 8, n & 0xFF);
        assert!(archive_get(&repo, SOURCE, &name, &got).unwrap());
        let expected = fs::read(segment(&dir, &base, n)).unwrap();
        assert!(fs::read(&got).unwrap() == expected, "{name} differs");
    }
    let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn racing_pushers_and_prune_lose_nothing() {
    let Some((pg, base)) = real_segment("push_race") else { return };
    let dir = pg.scratch_dir("segments").unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    init(storage.clone());
    let names: Vec<PathBuf> = (0x200..0x206).map(|n| segment(&dir, &base, n)).collect();

    // Three pushers push every segment (as `pg stream` and archive_command may), while prune runs
    // over and over. A push that finds prune holding the lock fails, and is retried as PostgreSQL
    // would; a prune that finds a push running is refused.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (storage, stop) = (storage.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut pruned = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let repo = Repository::open(storage.clone(), &credential()).unwrap();
                if repo.prune(PruneOptions::default(), Arc::new(NoProgress)).is_ok() {
                    pruned += 1;
                }
            }
            pruned
        })
    };
    let pushers: Vec<_> = (0..3)
        .map(|p| {
            let (storage, names) = (storage.clone(), names.clone());
            std::thread::spawn(move || {
                let mut stored = Vec::new();
                for i in 0..names.len() {
                    let path = &names[(i + 2 * p) % names.len()];
                    loop {
                        let repo = Repository::open(storage.clone(), &credential()).unwrap();
                        match archive_push(&repo, SOURCE, path) {
                            Ok(PushOutcome::Stored) => stored.push(path.clone()),
                            Ok(PushOutcome::AlreadyIdentical) => {}
                            Err(err) if err.kind() == ErrorKind::Repository => continue,
                            Err(err) => panic!("{}: {err}", path.display()),
                        }
                        break;
                    }
                }
                stored
            })
        })
        .collect();
    let mut stored: Vec<PathBuf> = pushers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let pruned = pruner.join().unwrap();
    eprintln!("prune ran to the end {pruned} time(s) during the pushes");
    stored.sort();
    assert_eq!(stored, names, "each segment stored exactly once, the other pushes found it identical");

    let repo = Repository::open(storage.clone(), &credential()).unwrap();
    repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    let repo = Repository::open(storage, &credential()).unwrap();
    let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(archive::list_wal(&repo, SOURCE).unwrap().len(), names.len());
    let got = dir.join("got");
    for path in &names {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(archive_get(&repo, SOURCE, name, &got).unwrap(), "{name}");
        assert!(fs::read(&got).unwrap() == fs::read(path).unwrap(), "{name} differs");
    }
}
