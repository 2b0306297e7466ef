//! Engine tests on in-memory storage (plus a fault layer): write order, crash safety, locks, prune,
//! forged objects, deduplication against missing data.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::*;
use tidemark_repo::check::CheckOptions;
use tidemark_repo::format::Id;
use tidemark_repo::prune::PruneOptions;
use tidemark_repo::{Credential, LockOptions, NoProgress, RepoError, Repository};
use tidemark_storage::fault::FaultStorage;
use tidemark_storage::{ErrorKind, MemoryStorage, Storage};

#[test]
fn backup_and_read_back() {
    let (_mem, repo) = new_repo();
    let files = sample_files(1, 6);
    let snap = backup_files(&repo, &files);
    assert_eq!(read_files(&repo, &snap), files);
    let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn open_with_wrong_password_or_newer_version_fails_clearly() {
    let (mem, _repo) = new_repo();
    let storage: Arc<dyn Storage> = Arc::new(mem.clone());
    let err = Repository::open(storage.clone(), &Credential::Password(b"nope".to_vec())).unwrap_err();
    assert!(matches!(err, RepoError::WrongPassword(_)), "{err}");
    assert!(err.hint().unwrap().contains("password"));
    let marker = String::from_utf8(mem.raw("config").unwrap()).unwrap().replace("\"version\": 1", "\"version\": 99");
    mem.insert_raw("config", marker);
    let err = Repository::open(storage, &password()).unwrap_err();
    assert!(matches!(err, RepoError::NewerVersion { found: 99, .. }), "{err}");
}

#[test]
fn missing_repository_is_reported_as_such() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let err = Repository::open(storage, &password()).unwrap_err();
    assert!(matches!(err, RepoError::NoRepository(_)), "{err}");
}

#[test]
fn second_backup_of_same_data_adds_no_blobs() {
    let (_mem, repo) = new_repo();
    let files = sample_files(2, 5);
    backup_files(&repo, &files);
    let repo = reopen(&repo);
    let before = repo.storage().list("data/").unwrap().len();
    let (_, snap) = backup_files_with_snapshot(&repo, &files);
    let summary = snap.summary.unwrap();
    // Only the new root tree (the snapshot time differs, trees do not) may be new: no data blobs.
    assert_eq!(summary.blobs_added, 0, "{summary:?}");
    assert_eq!(repo.storage().list("data/").unwrap().len(), before);
}

#[test]
fn a_failed_pack_or_index_upload_commits_no_snapshot_and_check_passes() {
    for prefix in ["data/", "index/"] {
        let mem = MemoryStorage::new();
        let faulty = FaultStorage::new(mem.clone());
        let repo = init_on(Arc::new(faulty.clone()));
        faulty.fail_writes_under(prefix, ErrorKind::Permanent);
        let archiver = repo.archiver("test", Arc::new(NoProgress)).unwrap();
        let result = store_and_commit(archiver, &sample_files(3, 4));
        assert!(result.is_err(), "commit must fail when {prefix} cannot be written");
        faulty.clear();
        let repo = reopen(&repo);
        assert!(repo.snapshots().unwrap().is_empty(), "no snapshot after a failed {prefix} write");
        let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
}

#[test]
fn a_crash_after_any_write_leaves_a_repository_that_check_passes() {
    // Count the writes of one backup, then crash (all later writes fail) after each of them in turn.
    let total = {
        let (mem, repo) = new_repo();
        let before = mem.len();
        backup_files(&repo, &sample_files(4, 8));
        mem.len() - before
    };
    assert!(total >= 4, "expected several packs, an index and a snapshot; got {total} writes");
    for k in 0..total {
        let mem = MemoryStorage::new();
        let crash = CrashAfter::new(mem.clone());
        let repo = init_on(Arc::new(crash.clone()));
        backup_files(&repo, &sample_files(5, 3));
        crash.arm(k);
        let archiver = match repo.archiver("test", Arc::new(NoProgress)) {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = store_and_commit(archiver, &sample_files(4, 8));
        let repo = Repository::open(Arc::new(mem.clone()), &password()).unwrap();
        let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
        assert!(report.is_ok(), "crash after write {k}: {report:?}");
        // The earlier snapshot is intact, and prune cleans whatever the crash left behind.
        // The crashed process's lock is left behind; it goes stale after the (short) lifetime.
        std::thread::sleep(Duration::from_millis(250));
        repo.clone().with_lock_options(short_locks()).prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
        let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
        assert!(report.is_ok() && report.warnings.is_empty(), "after prune, crash {k}: {report:?}");
    }
}

#[test]
fn swapped_or_forged_snapshots_are_detected_and_stop_forget() {
    let (mem, repo) = new_repo();
    let a = backup_files(&repo, &sample_files(6, 2));
    let b = backup_files(&repo, &sample_files(7, 2));
    // Replay snapshot a's bytes under b's name: the AAD binds the id, so it must not open.
    let a_bytes = mem.raw(&format!("snapshots/{a}")).unwrap();
    mem.insert_raw(&format!("snapshots/{b}"), a_bytes);
    let err = repo.load_snapshot(&b).unwrap_err();
    assert!(matches!(err, RepoError::Format { .. }), "{err}");
    // A forged snapshot cannot steer retention: listing snapshots fails instead of trusting it.
    assert!(repo.snapshots().is_err());
    let report = repo.check(CheckOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(report.errors.iter().any(|e| e.kind == "unreadable-snapshot" && e.object.contains(&b.to_hex())));
}

#[test]
fn kdf_parameters_from_the_repository_are_capped() {
    let (mem, _repo) = new_repo();
    let key = mem.keys().into_iter().find(|k| k.starts_with("keys/")).unwrap();
    let json = String::from_utf8(mem.raw(&key).unwrap()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["kdf"]["m_kib"] = serde_json::json!(u32::MAX);
    mem.insert_raw(&key, serde_json::to_vec(&v).unwrap());
    let started = std::time::Instant::now();
    let err = Repository::open(Arc::new(mem.clone()), &password()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "must refuse before deriving");
    assert!(err.to_string().contains("exceed"), "{err}");
}

#[test]
fn a_broken_listing_aborts_prune_without_deleting() {
    let mem = MemoryStorage::new();
    let faulty = FaultStorage::new(mem.clone());
    let repo = init_on(Arc::new(faulty.clone()));
    let a = backup_files(&repo, &sample_files(8, 4));
    backup_files(&repo, &sample_files(9, 4));
    repo.remove_snapshot(&a).unwrap();
    let keys_before = mem.keys();
    faulty.break_list_after(1);
    let err = repo.prune(PruneOptions::default(), Arc::new(NoProgress));
    assert!(err.is_err(), "prune must fail on a broken listing");
    faulty.clear();
    let keys_after: Vec<String> = mem.keys().into_iter().filter(|k| !k.starts_with("locks/")).collect();
    let keys_before: Vec<String> = keys_before.into_iter().filter(|k| !k.starts_with("locks/")).collect();
    assert_eq!(keys_before, keys_after, "nothing may be deleted");
}

#[test]
fn forget_and_prune_free_space_and_keep_the_rest_restorable() {
    let (_mem, repo) = new_repo();
    let old = backup_files(&repo, &sample_files(10, 6));
    let shared = sample_files(10, 2);
    let keep = backup_files(&repo, &shared);
    let before = repo.storage().list("data/").unwrap().iter().map(|e| e.size).sum::<u64>();
    repo.remove_snapshot(&old).unwrap();
    let repo = reopen(&repo);
    let dry = repo.prune(PruneOptions { dry_run: true, ..Default::default() }, Arc::new(NoProgress)).unwrap();
    assert!(!dry.packs_deleted.is_empty() || !dry.packs_repacked.is_empty());
    assert_eq!(before, repo.storage().list("data/").unwrap().iter().map(|e| e.size).sum::<u64>(), "dry run wrote");
    let report = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(report.bytes_freed > 0, "{report:?}");
    let after = repo.storage().list("data/").unwrap().iter().map(|e| e.size).sum::<u64>();
    assert!(after < before, "{after} < {before}");
    let repo = reopen(&repo);
    assert_eq!(read_files(&repo, &keep), shared);
    let check = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(check.is_ok() && check.warnings.is_empty(), "{check:?}");
}

#[test]
fn the_same_handle_reads_and_checks_correctly_after_prune() {
    let (_mem, repo) = new_repo();
    let old = backup_files(&repo, &sample_files(10, 6));
    let shared = sample_files(10, 2);
    let keep = backup_files(&repo, &shared);
    repo.remove_snapshot(&old).unwrap();
    // Load the index into this handle before prune changes the packs under it.
    assert_eq!(read_files(&repo, &keep), shared);
    let report = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(!report.packs_deleted.is_empty() || !report.packs_repacked.is_empty(), "{report:?}");
    assert_eq!(read_files(&repo, &keep), shared);
    let check = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(check.is_ok() && check.warnings.is_empty(), "{check:?}");
}

#[test]
fn prune_waits_for_no_one_it_refuses_while_a_backup_holds_a_lock() {
    let (_mem, repo) = new_repo();
    let archiver = repo.archiver("backup", Arc::new(NoProgress)).unwrap();
    let err = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap_err();
    assert!(matches!(err, RepoError::Locked { .. }), "{err}");
    drop(archiver);
    repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
}

#[test]
fn a_backup_paused_past_its_lock_lifetime_fails_after_a_prune() {
    let (mem, repo) = new_repo();
    let paused = repo
        .clone()
        .with_lock_options(LockOptions { lifetime: Duration::from_millis(300), refresh: Duration::from_secs(3600) });
    let archiver = paused.archiver("backup", Arc::new(NoProgress)).unwrap();
    let files = sample_files(11, 4);
    // Simulate a pause: no refresh happens while we sleep past the lifetime.
    std::thread::sleep(Duration::from_millis(450));
    let pruner = reopen(&repo).with_lock_options(short_locks());
    pruner.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    let err = store_and_commit(archiver, &files).unwrap_err();
    assert!(matches!(err, RepoError::LockLost(_)), "{err}");
    let repo = Repository::open(Arc::new(mem), &password()).unwrap();
    assert!(repo.snapshots().unwrap().is_empty());
}

#[test]
fn a_new_backup_never_deduplicates_against_a_missing_pack() {
    let (mem, repo) = new_repo();
    let files = sample_files(12, 4);
    let first = backup_files(&repo, &files);
    let pack = mem.keys().into_iter().find(|k| k.starts_with("data/")).unwrap();
    mem.remove_raw(&pack);
    let repo = reopen(&repo);
    let (second, snap) = backup_files_with_snapshot(&repo, &files);
    assert!(snap.summary.unwrap().blobs_added > 0, "the lost blobs must be stored again");
    let repo = reopen(&repo);
    assert_eq!(read_files(&repo, &second), files);
    let report = repo.check(CheckOptions::default(), Arc::new(NoProgress)).unwrap();
    let missing: Vec<_> = report.errors.iter().filter(|e| e.kind == "missing-pack").collect();
    assert_eq!(missing.len(), 1, "the lost pack is still reported: {report:?}");
    // The second backup stored the lost blobs again, so the first snapshot reads from the new copy.
    assert!(missing[0].snapshots.is_empty(), "{report:?}");
    assert_eq!(read_files(&repo, &first), files);
}

#[test]
fn concurrent_writers_on_one_repository_are_safe() {
    let (_mem, repo) = new_repo();
    let handles: Vec<_> = (0..3)
        .map(|n| {
            let repo = reopen(&repo);
            std::thread::spawn(move || {
                let files = sample_files(20 + n, 4);
                (backup_files(&repo, &files), files)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let repo = reopen(&repo);
    for (snap, files) in &results {
        assert_eq!(&read_files(&repo, snap), files);
    }
    let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn corrupt_pack_is_named_with_the_affected_snapshot_and_other_data_still_reads() {
    let (mem, repo) = new_repo();
    let a_files = sample_files(30, 3);
    let a = backup_files(&repo, &a_files);
    let packs_a: Vec<String> = mem.keys().into_iter().filter(|k| k.starts_with("data/")).collect();
    let b_files = sample_files(31, 3);
    let b = backup_files(&repo, &b_files);
    // The largest new pack holds file data (tree packs are small).
    let pack_b = mem
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("data/") && !packs_a.contains(k))
        .max_by_key(|k| mem.raw(k).unwrap().len())
        .unwrap();
    mem.corrupt(&pack_b, |bytes| bytes[100] ^= 0x55);
    let repo = reopen(&repo);
    let report = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    let bad: Vec<_> = report.errors.iter().filter(|e| e.kind == "corrupt-pack").collect();
    assert_eq!(bad.len(), 1, "{report:?}");
    assert_eq!(bad[0].object, pack_b);
    assert!(bad[0].snapshots.contains(&b) && !bad[0].snapshots.contains(&a), "{report:?}");
    assert_eq!(read_files(&repo, &a), a_files, "the other snapshot still restores");
}

#[test]
fn a_full_disk_is_reported_with_a_hint_and_loses_nothing() {
    let mem = MemoryStorage::new();
    let faulty = FaultStorage::new(mem.clone());
    let repo = init_on(Arc::new(faulty.clone()));
    let first = sample_files(40, 3);
    let a = backup_files(&repo, &first);
    faulty.fail_writes_under("data/", ErrorKind::StorageFull);
    let archiver = repo.archiver("backup", Arc::new(NoProgress)).unwrap();
    let err = store_and_commit(archiver, &sample_files(41, 3)).unwrap_err();
    assert!(err.hint().unwrap_or_default().contains("free space"), "{err}: {:?}", err.hint());
    faulty.clear();
    let repo = reopen(&repo);
    assert_eq!(read_files(&repo, &a), first);
    assert_eq!(repo.snapshots().unwrap().len(), 1);
}

#[test]
fn copy_sends_only_what_the_target_lacks_resumes_and_verifies() {
    let (_src_mem, src) = new_repo();
    let files_a = sample_files(50, 4);
    let files_b = sample_files(51, 4);
    let a = backup_files(&src, &files_a);
    let b = backup_files(&src, &files_b);
    let dst_mem = MemoryStorage::new();
    let faulty = FaultStorage::new(dst_mem.clone());
    let opts = tidemark_repo::InitOptions { shared_ids: Some(src.shared_ids()), ..fast_options() };
    let dst = Repository::init(Arc::new(faulty.clone()), &password(), &opts).unwrap();

    // Interrupted: the second snapshot object cannot be written.
    let snaps = src.snapshots().unwrap();
    faulty.add(tidemark_storage::fault::Fault {
        op: Some(tidemark_storage::fault::Op::Put),
        prefix: Some("snapshots/".into()),
        times: Some(1),
        action: tidemark_storage::fault::Action::Fail(ErrorKind::Permanent),
    });
    let _ = src.copy_to(&dst, &snaps[..1], Arc::new(NoProgress)).unwrap_err();
    faulty.clear();
    let first = src.copy_to(&dst.fresh(), &snaps, Arc::new(NoProgress)).unwrap();
    assert_eq!(first.copied.len(), 2);
    // The first attempt's packs and index were kept: resuming re-sent none of snapshot a's data.
    let data_a: u64 = files_a.iter().map(|f| f.1.len() as u64).sum();
    let data_b: u64 = files_b.iter().map(|f| f.1.len() as u64).sum();
    assert!(first.bytes_copied < data_a + data_b, "{first:?}");
    let again = src.copy_to(&dst.fresh(), &snaps, Arc::new(NoProgress)).unwrap();
    assert!(again.copied.is_empty() && again.already_present.len() == 2, "{again:?}");

    let dst = Repository::open(Arc::new(dst_mem.clone()), &password()).unwrap();
    let copies = dst.snapshots().unwrap();
    let by_origin = |id: Id| copies.iter().find(|(_, s)| s.extra.get("copied_from") == Some(&id.to_hex())).unwrap().0;
    assert_eq!(read_files(&dst, &by_origin(a)), files_a);
    assert_eq!(read_files(&dst, &by_origin(b)), files_b);
    let report = dst.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");

    // A tampered object in the copy is found by check.
    let pack = dst_mem.keys().into_iter().find(|k| k.starts_with("data/")).unwrap();
    dst_mem.corrupt(&pack, |bytes| bytes[10] ^= 1);
    let report = dst.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.errors.iter().any(|e| e.object == pack), "{report:?}");
}

#[test]
fn copy_refuses_a_target_with_other_chunker_parameters() {
    let (_m1, src) = new_repo();
    let (_m2, dst) = new_repo();
    backup_files(&src, &sample_files(52, 1));
    let err = src.copy_to(&dst, &src.snapshots().unwrap(), Arc::new(NoProgress)).unwrap_err();
    assert!(err.to_string().contains("--copy-chunker-params"), "{err}");
}

/// Storage that runs `hook` once, just before the `nth` listing of `prefix`.
#[derive(Clone)]
struct HookOnList {
    inner: MemoryStorage,
    prefix: &'static str,
    nth: usize,
    seen: Arc<std::sync::atomic::AtomicUsize>,
    hook: Arc<dyn Fn(&MemoryStorage) + Send + Sync>,
}

impl std::fmt::Debug for HookOnList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookOnList")
    }
}

impl Storage for HookOnList {
    fn location(&self) -> String {
        "hook".into()
    }
    fn list(&self, prefix: &str) -> Result<Vec<tidemark_storage::Entry>, tidemark_storage::StorageError> {
        if prefix == self.prefix && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth {
            (self.hook)(&self.inner);
        }
        self.inner.list(prefix)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, tidemark_storage::StorageError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, tidemark_storage::StorageError> {
        self.inner.get_range(key, range)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, tidemark_storage::StorageError> {
        self.inner.stat(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<(), tidemark_storage::StorageError> {
        self.inner.put(key, data)
    }
    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<(), tidemark_storage::StorageError> {
        self.inner.put_overwrite(key, data)
    }
    fn delete(&self, key: &str) -> Result<(), tidemark_storage::StorageError> {
        self.inner.delete(key)
    }
}

#[test]
fn prune_rechecks_right_before_deleting_and_spares_what_a_new_snapshot_needs() {
    let (mem, repo) = new_repo();
    let files = sample_files(60, 4);
    let old = backup_files(&repo, &files);
    backup_files(&repo, &sample_files(61, 2));
    let old_key = format!("snapshots/{old}");
    let old_bytes = mem.raw(&old_key).unwrap();
    repo.remove_snapshot(&old).unwrap();
    // Prune lists snapshots once to plan and once to re-check; between the two, the forgotten
    // snapshot comes back (as if a concurrent writer had committed it).
    let hooked = HookOnList {
        inner: mem.clone(),
        prefix: "snapshots/",
        nth: 2,
        seen: Arc::new(Default::default()),
        hook: Arc::new(move |m: &MemoryStorage| m.insert_raw(&old_key, old_bytes.clone())),
    };
    let repo = Repository::open(Arc::new(hooked), &password()).unwrap();
    let report = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(!report.packs_spared.is_empty(), "{report:?}");
    let repo = Repository::open(Arc::new(mem), &password()).unwrap();
    assert_eq!(read_files(&repo, &old), files, "the returning snapshot is fully restorable");
    let check = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(check.is_ok(), "{check:?}");
}

#[test]
fn a_broken_snapshot_listing_aborts_forget() {
    let mem = MemoryStorage::new();
    let faulty = FaultStorage::new(mem.clone());
    let repo = init_on(Arc::new(faulty.clone()));
    backup_files(&repo, &sample_files(62, 1));
    backup_files(&repo, &sample_files(63, 1));
    faulty.break_list_after(1);
    assert!(repo.snapshots().is_err(), "a broken listing is an error, never a short list");
    faulty.clear();
    assert_eq!(repo.snapshots().unwrap().len(), 2);
}

#[test]
fn prune_keeps_blobs_that_named_records_list() {
    let (_mem, repo) = new_repo();
    let files = sample_files(70, 2);
    let archiver = repo.archiver("wal", Arc::new(NoProgress)).unwrap();
    let saved = archiver.save_reader(&files[0].1[..]).unwrap();
    archiver.finish_without_snapshot().unwrap();
    #[derive(serde::Serialize, serde::Deserialize, PartialEq)]
    struct Record {
        size: u64,
        content: Vec<Id>,
    }
    let record = Record { size: saved.size, content: saved.content.clone() };
    repo.put_named("wal", "000000010000000000000001", &record).unwrap();
    let report = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(report.packs_deleted.is_empty(), "named content is in use: {report:?}");
    let repo = reopen(&repo);
    let back: Record = repo.get_named("wal", "000000010000000000000001").unwrap().unwrap();
    let mut data = Vec::new();
    for id in &back.content {
        data.extend(repo.read_blob(tidemark_repo::format::pack::BlobType::Data, id).unwrap());
    }
    assert_eq!(data, files[0].1);
}

#[test]
fn check_reports_a_named_record_whose_data_is_gone() {
    let (mem, repo) = new_repo();
    let archiver = repo.archiver("wal", Arc::new(NoProgress)).unwrap();
    let saved = archiver.save_reader(&sample_files(71, 1)[0].1[..]).unwrap();
    archiver.finish_without_snapshot().unwrap();
    repo.put_named("wal", "seg", &serde_json::json!({ "content": saved.content })).unwrap();
    let ok = repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    for pack in mem.keys().into_iter().filter(|k| k.starts_with("data/")) {
        mem.remove_raw(&pack);
    }
    let report = reopen(&repo).check(CheckOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(report.errors.iter().any(|e| e.object == "named/wal/seg" && e.kind == "missing-blob"), "{report:?}");
}
