//! Bucket snapshots against a real S3 server (moto): incremental backup, restore into buckets and
//! directories, versions, find, snapshot_at and bounded memory.

mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_repo::NoProgress;
use tidemark_source_objects::{
    BucketBackupOptions, BucketRestoreOptions, Target, backup_bucket, find, restore_bucket, snapshot_at,
};
use tidemark_testkit::BucketOptions;
use util::{Bucket, credentials, repo, server, url};

fn photos(src: &Bucket) {
    src.put("photos/2024/beach.jpg", b"sand and sea", Some("image/jpeg"), &[("camera", "x100")]);
    src.put("photos/2024/party.jpg", b"confetti", Some("image/jpeg"), &[]);
    src.put("photos/old.png", b"sepia", Some("image/png"), &[("year", "1990"), ("who", "grandma")]);
    src.put("docs/report.pdf", &vec![7u8; 300_000], Some("application/pdf"), &[]);
    src.put("docs/notes.txt", b"remember the milk", Some("text/plain"), &[]);
    src.put("top.txt", b"at the root", None, &[]);
    // A file and a directory of the same name, and a name with the reserved '%'.
    src.put("a", b"file a", None, &[]);
    src.put("a/b", b"file a/b", None, &[]);
    src.put("%odd", b"percent", None, &[]);
    src.mkdir("empty folder/");
}

#[test]
fn incremental_snapshots_restore_find_and_at() {
    let Some(server) = server("incremental_snapshots_restore_find_and_at") else { return };
    let repo = repo();
    let src = Bucket::new(server, &BucketOptions::default());
    photos(&src);
    let before = src.contents();
    let before_keys = src.keys();
    assert_eq!(before.len(), 9);

    let opts =
        BucketBackupOptions { concurrency: 4, credentials: credentials(), ..BucketBackupOptions::new(src.url.clone()) };
    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!((first.stats.objects_fetched, first.stats.objects_reused), (9, 0));
    let s = first.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_new, s.total_files), (9, 9));
    assert_eq!(first.snapshot.kind, "bucket");
    assert_eq!(first.snapshot.extra["bucket"], src.name);

    // Change one object, delete another: only the changed one is fetched again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = jiff::Timestamp::now();
    src.put("docs/notes.txt", b"remember the eggs too", Some("text/markdown"), &[("v", "2")]);
    src.delete("photos/2024/party.jpg");
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!((second.stats.objects_fetched, second.stats.objects_reused), (1, 7));
    let s = second.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_new, s.files_changed, s.files_unmodified, s.total_files), (0, 1, 7, 8));

    // A third run with nothing changed fetches nothing.
    let third = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!((third.stats.objects_fetched, third.stats.objects_reused), (0, 8));
    assert_eq!(third.snapshot.tree, second.snapshot.tree);

    // The first snapshot, restored into another bucket, is the bucket as it was.
    let dst = Bucket::new(server, &BucketOptions::default());
    let to = BucketRestoreOptions {
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(dst.url.clone()))
    };
    let restored = restore_bucket(&repo, &first.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert!(restored.errors.is_empty(), "{:?}", restored.errors);
    assert_eq!(restored.objects, 9);
    assert_eq!(dst.contents(), before);
    assert_eq!(dst.keys(), before_keys);
    assert_eq!(restored.markers, 1);
    // Again: everything exists, nothing is overwritten.
    let again = restore_bucket(&repo, &first.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert_eq!((again.objects, again.skipped), (0, 9));

    // One object only, below a prefix of a third bucket.
    let one = Bucket::new(server, &BucketOptions::default());
    let to_one = BucketRestoreOptions {
        includes: vec!["/photos/2024/party.jpg".into()],
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(url(server, &one.name, "restored")))
    };
    let r = restore_bucket(&repo, &first.snapshot, &to_one, Arc::new(NoProgress)).unwrap();
    assert_eq!(r.objects, 1);
    assert_eq!(one.keys(), ["restored/photos/2024/party.jpg"]);
    assert_eq!(one.get("restored/photos/2024/party.jpg"), before["photos/2024/party.jpg"]);

    // Into a directory: keys become paths, escaped names stay inside the target.
    let dir = tempfile::tempdir().unwrap();
    let to_dir = BucketRestoreOptions::new(Target::Dir(dir.path().to_path_buf()));
    let r = restore_bucket(&repo, &second.snapshot, &to_dir, Arc::new(NoProgress)).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.objects, 8);
    let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
    assert_eq!(read("docs/notes.txt"), b"remember the eggs too");
    assert_eq!(read("a/b"), b"file a/b");
    assert_eq!(read("%file-a"), b"file a");
    assert_eq!(read("%%odd"), b"percent");
    assert!(!dir.path().join("photos/2024/party.jpg").exists());
    assert!(std::fs::symlink_metadata(dir.path().join("empty folder")).unwrap().is_dir());

    // find: the deleted photo is in the first snapshot only; by name, at any depth.
    let found = find(&repo, "party.jpg", Some(&src.url)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].snapshot, found[0].path.as_str()), (first.id, "photos/2024/party.jpg"));
    assert_eq!(found[0].size, 8);
    let all_notes: Vec<_> = find(&repo, "/docs/*.txt", None).unwrap().into_iter().map(|f| f.snapshot).collect();
    assert_eq!(all_notes, [first.id, second.id, third.id]);

    // snapshot_at: the newest at or before the time.
    assert_eq!(snapshot_at(&repo, &src.url, between).unwrap().0, first.id);
    assert_eq!(snapshot_at(&repo, &src.url, jiff::Timestamp::now()).unwrap().0, third.id);
    let long_ago = jiff::Timestamp::from_second(0).unwrap();
    assert!(snapshot_at(&repo, &src.url, long_ago).is_err());
}

#[test]
fn all_versions_keeps_an_object_created_and_deleted_between_runs() {
    let Some(server) = server("all_versions_keeps_an_object_created_and_deleted_between_runs") else { return };
    let repo = repo();
    let src = Bucket::new(server, &BucketOptions { versioning: true, ..Default::default() });
    src.put("keep.txt", b"v1", Some("text/plain"), &[]);
    let opts = BucketBackupOptions {
        all_versions: true,
        credentials: credentials(),
        ..BucketBackupOptions::new(src.url.clone())
    };
    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!(first.stats.objects_fetched, 1);

    src.put("tmp/brief.txt", b"here and gone", Some("text/plain"), &[("k", "v")]);
    src.delete("tmp/brief.txt");
    src.put("keep.txt", b"v2", Some("text/plain"), &[]);
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    // keep.txt v2 and the brief object are new; keep.txt v1 is reused from the parent.
    assert_eq!(second.stats.objects_fetched, 2);
    assert_eq!(second.stats.versions, 2);
    assert_eq!(second.snapshot.summary.as_ref().unwrap().total_files, 1);

    let found = find(&repo, "brief.txt", None).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].snapshot, found[0].current), (second.id, false));
    assert!(found[0].version_id.is_some());

    // Restorable: with include_deleted, the newest captured version comes back under its key.
    let dst = Bucket::new(server, &BucketOptions::default());
    let to = BucketRestoreOptions {
        include_deleted: true,
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(dst.url.clone()))
    };
    let r = restore_bucket(&repo, &second.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let got = dst.contents();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["keep.txt", "tmp/brief.txt"]);
    assert_eq!(got["keep.txt"].data, b"v2");
    assert_eq!(got["tmp/brief.txt"].data, b"here and gone");
    assert_eq!(got["tmp/brief.txt"].user_metadata, BTreeMap::from([("k".to_string(), "v".to_string())]));
    // Without include_deleted only the current objects.
    let dir = tempfile::tempdir().unwrap();
    let r = restore_bucket(
        &repo,
        &second.snapshot,
        &BucketRestoreOptions::new(Target::Dir(dir.path().into())),
        Arc::new(NoProgress),
    )
    .unwrap();
    assert_eq!(r.objects, 1);
    assert!(!dir.path().join("tmp").exists());
}

#[test]
fn the_walker_holds_directories_by_depth_not_by_object_count() {
    let Some(server) = server("the_walker_holds_directories_by_depth_not_by_object_count") else { return };
    let repo = repo();
    let src = Bucket::new(server, &BucketOptions::default());
    let objects: Vec<(String, Vec<u8>)> =
        (0..3000).map(|i| (format!("set/d{:03}/obj-{i:05}", i / 10), format!("object {i}").into_bytes())).collect();
    src.put_many(objects);
    let concurrency = 4;
    let opts =
        BucketBackupOptions { concurrency, credentials: credentials(), ..BucketBackupOptions::new(src.url.clone()) };
    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!(first.stats.objects_fetched, 3000);
    let s = first.snapshot.summary.clone().unwrap();
    assert_eq!((s.total_files, s.dirs), (3000, 302));
    // Fetches in flight never exceed twice the concurrency; directories held never exceed the
    // open path (depth 3 with the root) plus, for each fetch in flight, its directory chain.
    let limit = 2 * concurrency;
    assert!(first.stats.max_pending_fetches <= limit, "{:?}", first.stats);
    assert!(first.stats.max_dirs_held <= 3 + limit * 2, "{:?}", first.stats);
    eprintln!("first run: {:?}", first.stats);
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!((second.stats.objects_fetched, second.stats.objects_reused), (0, 3000));
    assert_eq!(second.stats.max_pending_fetches, 0);
    assert!(second.stats.max_dirs_held <= 3, "{:?}", second.stats);
}
