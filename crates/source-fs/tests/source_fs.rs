//! Directory source tests: real temp trees, a real repository on in-memory storage, the real
//! backup and restore functions; faults injected through the `Opener` seam and `MemoryStorage`.

mod harness;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use harness::*;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot};
use tidemark_repo::tree::{root_node, sorted_tree};
use tidemark_repo::{Archiver, NoProgress, Repository};
use tidemark_source_fs::{BackupOptions, Opener, RestoreOptions, SourceFile, SystemOpener};

#[test]
fn backup_and_restore_round_trip_keeps_content_and_metadata() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    t.write("a.txt", b"hello");
    t.write("big.bin", &noise(3 << 20, 1));
    t.write("nested/deeper/c.txt", b"deep");
    t.mkdir("empty");
    t.symlink("link", "a.txt");
    t.symlink("dangling", "/nonexistent/target");
    t.write("secret", b"s");
    t.chmod("secret", 0o750);
    t.write("setuid", b"x");
    t.chmod("setuid", 0o4755);
    fs::write(t.src().join(OsStr::from_bytes(b"bad\xffname")), b"non-utf8").unwrap();
    t.write("old", b"old");
    t.set_mtime("old", 1_000_000_000, 123_456_789);
    t.set_mtime("link", 1_100_000_000, 7);
    t.set_mtime("nested/deeper", 1_200_000_000, 5);
    std::os::unix::fs::symlink(OsStr::from_bytes(b"tar\xffget"), t.path("odd-link")).unwrap();
    let fifo = t.path("fifo");
    let have_fifo = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());

    let out = backup(&repo, &[&t.src()]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let snap = &out.snapshot;
    let s = snap.summary.clone().unwrap();
    assert_eq!((s.files_new, s.files_changed, s.files_unmodified, s.errors), (7, 0, 0, 0), "{s:?}");
    assert_eq!(s.total_files, 7);
    assert_eq!(s.total_bytes, 5 + (3 << 20) + 4 + 1 + 1 + 8 + 3);
    assert!(s.blobs_added >= 8 && s.backup_start.is_some() && s.backup_end.is_some(), "{s:?}");
    assert_eq!((snap.kind.as_str(), snap.hostname.as_str(), snap.parent), ("directory", HOST, None));
    assert_eq!(snap.paths, [t.src().to_string_lossy().to_string()]);

    let secret = node_at(&repo, snap, &t.path("secret")).unwrap();
    assert_eq!((secret.node_type, secret.mode, secret.size), (NodeType::File, 0o750, 1));
    let old = node_at(&repo, snap, &t.path("old")).unwrap();
    assert_eq!(old.mtime_ns, 1_000_000_000_123_456_789);
    let link = node_at(&repo, snap, &t.path("link")).unwrap();
    assert_eq!((link.node_type, link.link_target.as_deref()), (NodeType::Symlink, Some("a.txt")));
    if have_fifo {
        let node = node_at(&repo, snap, &fifo).unwrap();
        assert_eq!((node.node_type, node.attrs.get("kind").map(String::as_str)), (NodeType::Other, Some("fifo")));
        // FIFOs are recorded but not recreated: leave it out of the comparison below.
        fs::remove_file(&fifo).unwrap();
        let ns = node_at(&repo, snap, &t.src()).unwrap().mtime_ns;
        let mtime =
            filetime::FileTime::from_unix_time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
        filetime::set_file_mtime(t.src(), mtime).unwrap();
    }
    let weird = node_at(&repo, snap, &t.path("bad\u{fffd}name")).unwrap();
    assert_eq!(weird.name_bytes.as_deref(), Some(&b"bad\xffname"[..]));
    // Intermediate directories carry the real directories' metadata.
    let parent_dir = node_at(&repo, snap, t.dir.path()).unwrap();
    let real = fs::metadata(t.dir.path()).unwrap();
    assert_eq!(
        (parent_dir.node_type, parent_dir.mode, parent_dir.inode),
        (NodeType::Dir, real.mode() & 0o7777, real.ino())
    );

    let target = t.scratch("restore");
    let o = restore_to(&repo, snap, &target);
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    assert_eq!((o.files, o.bytes, o.skipped), (10, s.total_bytes, 0));
    assert_same_tree(&t.src(), &restored_path(&target, &t.src()));
}

#[test]
fn second_backup_reuses_unchanged_files_and_rereads_changed_ones() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    for name in ["a", "b", "c", "d", "sub/e", "sub/f"] {
        t.write(name, name.as_bytes());
    }
    let first = backup(&repo, &[&t.src()]);
    t.write("b", b"b changed");
    t.set_mtime("b", 1_500_000_000, 0);
    t.write("sub/new", b"new");
    let second = backup(&repo, &[&t.src()]);
    let s = second.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_unmodified, s.files_changed, s.files_new), (5, 1, 1), "{s:?}");
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(s.total_files, 7);
    let b = node_at(&repo, &second.snapshot, &t.path("b")).unwrap();
    assert_ne!(b.content, node_at(&repo, &first.snapshot, &t.path("b")).unwrap().content);
    let target = t.scratch("restore");
    assert!(restore_to(&repo, &second.snapshot, &target).errors.is_empty());
    assert_same_tree(&t.src(), &restored_path(&target, &t.src()));

    let forced = BackupOptions { force: true, ..opts(&[&t.src()]) };
    let third = tidemark_source_fs::backup(&reopen(&repo), &forced, Arc::new(NoProgress)).unwrap();
    let s = third.snapshot.summary.unwrap();
    assert_eq!((s.files_unmodified, s.files_changed, s.files_new), (0, 7, 0), "{s:?}");
}

#[test]
fn unchanged_file_whose_blob_vanished_is_read_again() {
    let (mem, repo) = new_repo();
    let t = Tree::new();
    t.write("keep", &noise(1000, 7));
    let first = backup(&repo, &[&t.src()]);
    let node = node_at(&repo, &first.snapshot, &t.path("keep")).unwrap();
    let (pack, _) = blob_location(&repo, &node.content[0]);
    mem.remove_raw(&pack).unwrap();
    let again = backup(&repo, &[&t.src()]);
    let s = again.snapshot.summary.unwrap();
    assert_eq!((s.files_unmodified, s.files_changed), (0, 1), "{s:?}");
}

#[test]
fn excludes_match_basenames_full_paths_and_directories_only() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    t.write("keep.txt", b"k");
    t.write("skip.tmp", b"s");
    t.write("sub/cache/x", b"x");
    t.write("cache", b"a file named cache stays");
    t.write("anchored/y", b"y");
    let excludes = vec!["*.tmp".into(), "cache/".into(), format!("{}/anchored", t.src().display())];
    let o = BackupOptions { excludes, ..opts(&[&t.src()]) };
    let out = tidemark_source_fs::backup(&reopen(&repo), &o, Arc::new(NoProgress)).unwrap();
    let at = |rel: &str| node_at(&repo, &out.snapshot, &t.path(rel));
    assert!(at("keep.txt").is_some() && at("cache").is_some() && at("sub").is_some());
    assert!(at("skip.tmp").is_none() && at("sub/cache").is_none() && at("anchored").is_none());
}

/// Fails to open one file, fails reading another after 10 bytes, and appends to a third right
/// after opening it: the same code paths a real EACCES, EIO or busy log file take.
struct Faulty {
    fail_open: PathBuf,
    fail_mid: PathBuf,
    grow: PathBuf,
}

struct FailAfter {
    inner: Box<dyn SourceFile>,
    left: usize,
}

impl Read for FailAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("injected I/O error"));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

impl SourceFile for FailAfter {
    fn metadata(&self) -> io::Result<fs::Metadata> {
        self.inner.metadata()
    }
}

impl Opener for Faulty {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SourceFile>> {
        if path == self.fail_open {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "permission denied (injected)"));
        }
        let inner = SystemOpener.open(path)?;
        if path == self.fail_mid {
            return Ok(Box::new(FailAfter { inner, left: 10 }));
        }
        if path == self.grow {
            fs::OpenOptions::new().append(true).open(path)?.write_all(b" and more")?;
        }
        Ok(inner)
    }
}

#[test]
fn unreadable_files_are_reported_and_left_out_and_the_backup_goes_on() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    t.write("ok", b"fine");
    let faulty = Faulty {
        fail_open: t.write("locked", b"cannot open"),
        fail_mid: t.write("sub/broken", &noise(100, 3)),
        grow: t.write("log", b"growing"),
    };
    let progress = Arc::new(Recorder::default());
    let out =
        tidemark_source_fs::backup_with_opener(&reopen(&repo), &opts(&[&t.src()]), progress.clone(), &faulty).unwrap();
    let s = out.snapshot.summary.clone().unwrap();
    assert_eq!((s.errors, s.files_new, s.total_files), (2, 2, 2), "{s:?}");
    let mut got: Vec<(PathBuf, String)> = out.warnings.iter().map(|w| (w.path.clone(), w.message.clone())).collect();
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].0 == t.path("locked") && got[0].1.starts_with("unreadable: permission denied"), "{got:?}");
    assert!(got[1].0 == t.path("log") && got[1].1 == "changed while being read", "{got:?}");
    assert!(got[2].0 == t.path("sub/broken") && got[2].1.contains("injected I/O error"), "{got:?}");
    assert_eq!(progress.warnings.lock().unwrap().len(), 3);
    let at = |rel: &str| node_at(&repo, &out.snapshot, &t.path(rel));
    assert!(at("locked").is_none() && at("sub/broken").is_none());
    assert_eq!(at("log").unwrap().size, "growing and more".len() as u64);
    assert!(at("ok").is_some() && at("sub").is_some());
}

fn blank(name: &str, node_type: NodeType) -> Node {
    Node { name: name.into(), node_type, mode: 0o644, subtree: None, ..root_node(&Default::default()) }
}

fn file_node(a: &Archiver, name: &str, data: &[u8]) -> Node {
    let saved = a.save_reader(data).unwrap();
    Node { content: saved.content, size: saved.size, ..blank(name, NodeType::File) }
}

fn dir_node(a: &Archiver, name: &str, nodes: Vec<Node>) -> Node {
    Node { subtree: Some(a.save_tree(&sorted_tree(nodes)).unwrap()), mode: 0o755, ..blank(name, NodeType::Dir) }
}

fn link_node(name: &str, target: &Path) -> Node {
    Node { link_target: Some(target.to_string_lossy().into()), ..blank(name, NodeType::Symlink) }
}

/// Commit a snapshot whose root tree holds `build`'s nodes, in the order given.
fn crafted(repo: &Repository, build: impl FnOnce(&Archiver) -> Vec<Node>) -> Snapshot {
    let a = repo.archiver("test", Arc::new(NoProgress)).unwrap();
    let nodes = build(&a);
    let tree = a.save_tree(&tidemark_repo::format::objects::Tree { nodes }).unwrap();
    let snapshot = Snapshot {
        time: jiff::Timestamp::now(),
        hostname: HOST.into(),
        username: "test".into(),
        kind: "directory".into(),
        source: None,
        paths: vec!["/".into()],
        tags: Vec::new(),
        parent: None,
        tree,
        program: "test".into(),
        summary: None,
        extra: BTreeMap::new(),
    };
    a.commit(snapshot).unwrap().1
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn restore_refuses_names_and_symlinks_that_would_escape_the_target() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    let outside = t.scratch("outside");
    let snap = crafted(&repo, |a| {
        let mut nul = file_node(a, "nul", b"x");
        nul.name_bytes = Some(b"n\0l".to_vec());
        vec![
            file_node(a, "..", b"up"),
            file_node(a, "x/passwd", b"slash"),
            file_node(a, "", b"empty"),
            file_node(a, ".", b"dot"),
            nul,
            link_node("x", &outside),
            dir_node(a, "x", vec![file_node(a, "passwd", b"owned")]),
            dir_node(a, "y", vec![file_node(a, "passwd", b"inside y")]),
            link_node("y", &outside),
            file_node(a, "ok", b"fine"),
        ]
    });
    let target = t.scratch("restore");
    let o = restore_to(&repo, &snap, &target);
    assert_eq!(o.errors.len(), 7, "{:?}", o.errors);
    assert!(o.errors.iter().all(|e| e.message.starts_with("refused")), "{:?}", o.errors);
    assert!(is_empty_dir(&outside), "nothing may be written outside the target");
    assert_eq!(fs::read(target.join("ok")).unwrap(), b"fine");
    assert!(fs::symlink_metadata(target.join("x")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(target.join("y/passwd")).unwrap(), b"inside y");
    assert!(!t.dir.path().join("passwd").exists() && !t.dir.path().join("up").exists());
}

#[test]
fn restore_never_follows_symlinks_already_in_the_target() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    let outside = t.scratch("outside");
    fs::write(outside.join("victim"), b"original").unwrap();
    let snap = crafted(&repo, |a| {
        vec![dir_node(a, "evil", vec![file_node(a, "f", b"payload")]), file_node(a, "lnk", b"new content")]
    });
    for overwrite in [false, true] {
        let target = t.scratch(&format!("restore-{overwrite}"));
        std::os::unix::fs::symlink(&outside, target.join("evil")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), target.join("lnk")).unwrap();
        let o = restore(&repo, &snap, &RestoreOptions { target: target.clone(), overwrite, ..Default::default() });
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original");
        assert!(!outside.join("f").exists());
        if overwrite {
            assert!(o.errors.is_empty(), "{:?}", o.errors);
            assert_eq!(fs::read(target.join("evil/f")).unwrap(), b"payload");
            assert_eq!(fs::read(target.join("lnk")).unwrap(), b"new content");
            assert!(fs::symlink_metadata(target.join("lnk")).unwrap().is_file());
        } else {
            assert_eq!((o.errors.len(), o.skipped), (1, 1), "{o:?}");
            assert!(fs::symlink_metadata(target.join("lnk")).unwrap().file_type().is_symlink());
        }
    }
}

#[test]
fn existing_files_are_kept_unless_overwrite() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    t.write("f", b"from the snapshot");
    t.write("g", b"other");
    let snap = backup(&repo, &[&t.src()]).snapshot;
    let target = t.scratch("restore");
    let f = restored_path(&target, &t.path("f"));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(&f, b"local edits").unwrap();
    let o = restore_to(&repo, &snap, &target);
    assert_eq!((o.skipped, o.files, o.errors.len()), (1, 1, 0), "{o:?}");
    assert_eq!(fs::read(&f).unwrap(), b"local edits");
    assert_eq!(fs::read(restored_path(&target, &t.path("g"))).unwrap(), b"other");
    let o = restore(&repo, &snap, &RestoreOptions { target: target.clone(), overwrite: true, ..Default::default() });
    assert_eq!((o.skipped, o.files, o.errors.len()), (0, 2, 0), "{o:?}");
    assert_eq!(fs::read(&f).unwrap(), b"from the snapshot");
    assert_same_tree(&t.src(), &restored_path(&target, &t.src()));
    let leftovers: Vec<_> = fs::read_dir(f.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}

#[test]
fn includes_restore_matches_with_their_parents_and_children() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    for name in ["docs/a.txt", "docs/b.md", "code/c.txt", "other/d.bin", "keep/e", "keep/sub/f"] {
        t.write(name, name.as_bytes());
    }
    t.mkdir("keep/empty");
    let snap = backup(&repo, &[&t.src()]).snapshot;
    let target = t.scratch("restore");
    let includes = vec!["*.txt".into(), format!("{}/keep", t.src().display())];
    let o = restore(&repo, &snap, &RestoreOptions { target: target.clone(), includes, ..Default::default() });
    assert!(o.errors.is_empty(), "{:?}", o.errors);
    let got: Vec<PathBuf> = snapshot_fs(&restored_path(&target, &t.src())).into_keys().collect();
    let want: Vec<PathBuf> =
        ["code", "code/c.txt", "docs", "docs/a.txt", "keep", "keep/e", "keep/empty", "keep/sub", "keep/sub/f"]
            .iter()
            .map(PathBuf::from)
            .collect();
    assert_eq!(got, want);
    assert_eq!(o.files, 4);
}

#[test]
fn a_damaged_blob_fails_only_its_file() {
    let (mem, repo) = new_repo();
    let t = Tree::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        t.write(name, &noise(5000, i as u64));
    }
    let snap = backup(&repo, &[&t.src()]).snapshot;
    let b = node_at(&repo, &snap, &t.path("b")).unwrap();
    let (pack, offset) = blob_location(&repo, &b.content[0]);
    assert!(mem.corrupt(&pack, |bytes| bytes[offset as usize + 40] ^= 0x55));
    let target = t.scratch("restore");
    let o = restore_to(&repo, &snap, &target);
    assert_eq!(o.errors.len(), 1, "{:?}", o.errors);
    assert_eq!(o.errors[0].path, t.path("b"));
    assert!(o.errors[0].message.starts_with("damaged data"), "{:?}", o.errors);
    assert_eq!(o.files, 2);
    assert!(!restored_path(&target, &t.path("b")).exists(), "the partial file is removed");
    for name in ["a", "c"] {
        assert_eq!(fs::read(restored_path(&target, &t.path(name))).unwrap(), fs::read(t.path(name)).unwrap());
    }
}

#[test]
fn several_paths_merge_into_one_root() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    let one = t.write("one/x", b"1");
    let two = t.write("two/y", b"2");
    let out = backup(&repo, &[&t.path("one"), &t.path("two"), &one]);
    assert_eq!(out.snapshot.paths.len(), 3);
    assert!(node_at(&repo, &out.snapshot, &one).is_some() && node_at(&repo, &out.snapshot, &two).is_some());
    assert!(node_at(&repo, &out.snapshot, &t.path("one")).unwrap().node_type == NodeType::Dir);
    // The same paths in another order find the first snapshot as parent.
    let again = backup(&repo, &[&one, &t.path("two"), &t.path("one")]);
    assert_eq!(again.snapshot.parent, Some(out.id));
    assert_eq!(again.snapshot.summary.unwrap().files_unmodified, 2);
}

/// `cargo test -p tidemark-source-fs --release -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing_of_20k_small_files() {
    let (_mem, repo) = new_repo();
    let t = Tree::new();
    for d in 0..20 {
        for f in 0..1000 {
            t.write(&format!("d{d:02}/f{f:04}"), format!("file {d} {f}").as_bytes());
        }
    }
    let clock = Instant::now();
    let first = backup(&repo, &[&t.src()]);
    println!("first backup of 20k files: {:?}", clock.elapsed());
    let clock = Instant::now();
    let second = backup(&repo, &[&t.src()]);
    let elapsed = clock.elapsed();
    println!("no-change backup of 20k files: {elapsed:?}");
    assert_eq!(second.snapshot.summary.unwrap().files_unmodified, 20_000);
    let target = t.scratch("restore");
    let clock = Instant::now();
    let o = restore_to(&repo, &first.snapshot, &target);
    println!("restore of 20k files: {:?}", clock.elapsed());
    assert_eq!(o.files, 20_000);
}
