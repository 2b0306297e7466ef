//! The archiver that does not deduplicate against the repository (`archiver_without_index`, for
//! WAL segments pushed one process each): what it reads from storage, what it stores, and how its
//! lock keeps prune out until the caller has recorded what it stored.

mod harness;

use std::sync::Arc;

use harness::*;
use tidemark_repo::check::CheckOptions;
use tidemark_repo::format::Id;
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::index::load_index_files;
use tidemark_repo::prune::PruneOptions;
use tidemark_repo::{NoProgress, RepoError, Repository};
use tidemark_storage::MemoryStorage;
use tidemark_storage::fault::FaultStorage;

/// Memory storage whose every call is logged as `"<op> <key or prefix>"` ([`FaultStorage::take_log`]).
type Recording = FaultStorage<MemoryStorage>;

fn recording() -> Recording {
    FaultStorage::new(MemoryStorage::new())
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

/// `len` bytes of mixed data (compressible runs and noise), so that it spans several chunks.
fn segment_like(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 4096) % 3 == 0 { b"INSERT INTO t VALUES "[i % 21] } else { x as u8 }
        })
        .collect()
}

fn read_content(repo: &Repository, content: &[Id]) -> Vec<u8> {
    content.iter().flat_map(|id| repo.read_blob(BlobType::Data, id).unwrap()).collect()
}

#[test]
fn it_reads_no_index_file_and_lists_no_pack_however_many_there_are() {
    let rec = recording();
    let repo = init_on(Arc::new(rec.clone()));
    for seed in 0..5 {
        backup_files(&repo, &sample_files(seed, 3));
    }
    let repo = reopen(&repo);

    // The recorder sees what the ordinary archiver reads: every index file and the pack listing.
    rec.take_log();
    drop(repo.archiver("backup", Arc::new(NoProgress)).unwrap());
    let ordinary = rec.take_log();
    assert!(count(&ordinary, "get index/") >= 5, "{ordinary:?}");
    assert_eq!(count(&ordinary, "list data/"), 1, "{ordinary:?}");

    let data = segment_like(1, 3 << 20);
    let archiver = repo.archiver_without_index("wal", Arc::new(NoProgress)).unwrap();
    let saved = archiver.save_reader(&data[..]).unwrap();
    let (stats, lock) = archiver.finish_keeping_lock().unwrap();
    drop(lock);
    let calls = rec.take_log();
    assert_eq!(
        count(&calls, "get index/") + count(&calls, "list index/") + count(&calls, "list data/"),
        0,
        "{calls:?}"
    );
    assert!(count(&calls, "put data/") >= 1, "{calls:?}");
    assert_eq!(count(&calls, "put index/"), 1, "one index file for the new packs: {calls:?}");
    assert!(stats.blobs_added >= 2, "{stats:?}");
    assert_eq!(read_content(&reopen(&repo), &saved.content), data);
}

#[test]
fn content_ids_are_what_save_reader_stores_and_write_nothing() {
    let rec = recording();
    let repo = init_on(Arc::new(rec.clone()));
    for (seed, len) in [(2, 0), (3, 100), (4, 5 << 20)] {
        let data = segment_like(seed, len);
        rec.take_log();
        let ids = repo.content_ids(&data[..]).unwrap();
        assert!(rec.take_log().is_empty(), "content_ids touched storage");
        let archiver = repo.archiver_without_index("wal", Arc::new(NoProgress)).unwrap();
        let saved = archiver.save_reader(&data[..]).unwrap();
        archiver.finish_without_snapshot().unwrap();
        assert_eq!(ids, saved);
        assert_eq!(ids.size, len as u64);
    }
    assert!(repo.content_ids(&segment_like(5, 5 << 20)[..]).unwrap().content.len() >= 2, "several chunks");
}

#[test]
fn blobs_stored_again_are_harmless_duplicates_for_check_and_prune() {
    let (_mem, repo) = new_repo();
    let files = vec![("seg".to_string(), segment_like(6, 2 << 20)), ("other".to_string(), segment_like(7, 200_000))];
    let snapshot = backup_files(&repo, &files);

    // The same bytes again, not deduplicated against the snapshot's blobs: stored a second time.
    let archiver = repo.archiver_without_index("wal", Arc::new(NoProgress)).unwrap();
    let saved = archiver.save_reader(&files[0].1[..]).unwrap();
    let stats = archiver.finish_without_snapshot().unwrap();
    assert_eq!(stats.blobs_added as usize, saved.content.len(), "{stats:?}");
    repo.put_named("wal.db", "000000010000000000000001", &serde_json::json!({ "content": saved.content })).unwrap();

    let report = reopen(&repo).check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap();
    assert!(report.is_ok(), "{report:?}");
    // Repacking every partly used pack: afterwards each blob is stored exactly once.
    let all = PruneOptions { repack_threshold: 0.0, ..PruneOptions::default() };
    let pruned = reopen(&repo).prune(all, Arc::new(NoProgress)).unwrap();
    assert_eq!(pruned.blobs_removed, saved.content.len() as u64, "the second copies are garbage: {pruned:?}");
    let mut copies = std::collections::HashMap::<Id, usize>::new();
    for (_, file) in load_index_files(&reopen(&repo)).unwrap() {
        for blob in file.packs.iter().flat_map(|p| &p.blobs) {
            *copies.entry(blob.id).or_default() += 1;
        }
    }
    assert!(copies.values().all(|&n| n == 1), "{copies:?}");
    let repo = reopen(&repo);
    assert!(repo.check(CheckOptions { read_data: true }, Arc::new(NoProgress)).unwrap().is_ok());
    assert_eq!(read_files(&repo, &snapshot), files);
    assert_eq!(read_content(&repo, &saved.content), files[0].1);

    // Without the snapshot, the named record alone keeps the blobs.
    repo.remove_snapshot(&snapshot).unwrap();
    let pruned = repo.prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(pruned.blobs_removed >= 1, "the other file's blobs go: {pruned:?}");
    assert_eq!(read_content(&reopen(&repo), &saved.content), files[0].1);
}

#[test]
fn the_lock_handed_over_keeps_prune_out_until_it_is_dropped() {
    let (_mem, repo) = new_repo();
    let data = segment_like(8, 1 << 20);
    let archiver = repo.archiver_without_index("wal", Arc::new(NoProgress)).unwrap();
    let saved = archiver.save_reader(&data[..]).unwrap();
    let (_, lock) = archiver.finish_keeping_lock().unwrap();

    // Packs and index are stored, the record not yet: prune must not run now.
    let err = reopen(&repo).prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap_err();
    assert!(matches!(err, RepoError::Locked { .. }), "{err}");
    lock.check().unwrap();
    repo.put_named("wal.db", "000000010000000000000002", &serde_json::json!({ "content": saved.content })).unwrap();
    lock.release().unwrap();

    let pruned = reopen(&repo).prune(PruneOptions::default(), Arc::new(NoProgress)).unwrap();
    assert!(pruned.packs_deleted.is_empty() && pruned.packs_repacked.is_empty(), "{pruned:?}");
    assert_eq!(read_content(&reopen(&repo), &saved.content), data);
}
