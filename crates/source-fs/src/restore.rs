//! Restore: plan from the snapshot tree, create directories and symlinks on the calling thread,
//! write files on [`WRITERS`] threads, then set directory metadata deepest first.
//!
//! Path-escape guards: every name is checked by [`safe_name`]; a name seen twice in one directory
//! is refused (a symlink `x` and a directory `x` must not meet); before anything is created below
//! the target, every parent component is checked with `symlink_metadata` to be a real directory;
//! files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` and replaced (with `overwrite`) by a
//! rename of a temporary file in the same directory, which replaces a symlink rather than following
//! it. FIFOs, sockets and devices ([`NodeType::Other`]) are not recreated.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, bounded};
use filetime::FileTime;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot};
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::tree::join_path;
use tidemark_repo::{Progress, RepoError, Repository};

use crate::direct::{DIRECT_MIN, DirectSink};
use crate::patterns::Patterns;
use crate::walk::link_target_bytes;
use crate::{Fatal, FileWarning, FsError, RestoreOptions, RestoreOutcome};

/// Threads writing files.
pub const WRITERS: usize = 4;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The name of `node` as one safe path component, or why it is refused: empty, `.`, `..`, or
/// containing `/` or NUL.
pub fn safe_name(node: &Node) -> Result<&OsStr, String> {
    let raw: &[u8] = node.name_bytes.as_deref().unwrap_or(node.name.as_bytes());
    if raw.is_empty() || raw == b"." || raw == b".." || raw.contains(&b'/') || raw.contains(&0) {
        return Err(format!("refused unsafe name {:?}", node.name));
    }
    Ok(OsStr::from_bytes(raw))
}

/// Whether a repository error only affects the file being read (damaged or missing data).
fn is_data_error(e: &RepoError) -> bool {
    match e {
        RepoError::Format { .. } | RepoError::MissingBlob(_) => true,
        RepoError::Storage(s) => s.is_not_found(),
        _ => false,
    }
}

/// One thing to create, relative to the target.
struct Item {
    rel: PathBuf,
    snap: String,
    node: Node,
}

struct Planner<'a> {
    repo: &'a Repository,
    includes: &'a Patterns,
    errors: Vec<FileWarning>,
}

impl Planner<'_> {
    /// Items below the tree `id` in depth-first pre-order; `inherited` when an ancestor matched.
    fn plan_dir(&mut self, id: &Id, snap: &str, rel: &Path, inherited: bool) -> Result<Vec<Item>, FsError> {
        let tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e) if is_data_error(&e) => {
                self.errors.push(FileWarning { path: snap.into(), message: format!("cannot load directory: {e}") });
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for node in tree.nodes {
            let child_snap = join_path(snap, &node.name);
            let name = match safe_name(&node) {
                Ok(n) => n.to_os_string(),
                Err(message) => {
                    self.errors.push(FileWarning { path: child_snap.into(), message });
                    continue;
                }
            };
            if !seen.insert(name.clone()) {
                let message = "refused: name appears twice in its directory".to_string();
                self.errors.push(FileWarning { path: child_snap.into(), message });
                continue;
            }
            let child_rel = rel.join(&name);
            let is_dir = node.node_type == NodeType::Dir;
            let matched = inherited || self.includes.matches(Path::new(&child_snap), is_dir);
            match node.node_type {
                NodeType::Dir => {
                    let below = match node.subtree {
                        Some(sub) => self.plan_dir(&sub, &child_snap, &child_rel, matched)?,
                        None => Vec::new(),
                    };
                    if matched || !below.is_empty() {
                        out.push(Item { rel: child_rel, snap: child_snap, node });
                        out.extend(below);
                    }
                }
                NodeType::File | NodeType::Symlink if matched => {
                    out.push(Item { rel: child_rel, snap: child_snap, node });
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Counters of one thread.
#[derive(Default)]
struct Tally {
    files: u64,
    bytes: u64,
    skipped: u64,
    errors: Vec<FileWarning>,
}

impl Tally {
    fn error(&mut self, snap: &str, message: String) {
        self.errors.push(FileWarning { path: snap.into(), message });
    }
}

/// Check that every parent component of `rel` below `target` is a real directory (not a symlink).
fn check_parents(target: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = target.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            _ => {
                return Err(format!("refused: {} is not a real directory", cur.display()));
            }
        }
    }
    Ok(())
}

fn temp_path(abs: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    abs.with_file_name(format!(".tidemark-restore-{}-{n}", std::process::id()))
}

fn file_time(ns: i64) -> FileTime {
    FileTime::from_unix_time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
}

/// Ownership can only be restored by root: EPERM (and EINVAL for unmapped ids) are expected.
fn owner_result(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL)) => Ok(()),
        other => other,
    }
}

struct Exec<'a> {
    repo: &'a Repository,
    target: &'a Path,
    overwrite: bool,
    progress: &'a dyn Progress,
}

enum WriteError {
    File(String),
    Fatal(RepoError),
}

impl Exec<'_> {
    /// Create (or accept) a directory; `Ok(true)` when its metadata is ours to set.
    fn ensure_dir(&self, item: &Item) -> Result<bool, String> {
        check_parents(self.target, &item.rel)?;
        let abs = self.target.join(&item.rel);
        match std::fs::symlink_metadata(&abs) {
            Ok(md) if md.is_dir() => Ok(self.overwrite),
            Ok(_) if self.overwrite => {
                std::fs::remove_file(&abs).map_err(|e| format!("cannot replace: {e}"))?;
                std::fs::create_dir(&abs).map_err(|e| format!("cannot create directory: {e}"))?;
                Ok(true)
            }
            Ok(_) => Err("refused: exists and is not a directory (overwrite replaces it)".into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&abs).map_err(|e| format!("cannot create directory: {e}"))?;
                Ok(true)
            }
            Err(e) => Err(format!("cannot inspect: {e}")),
        }
    }

    fn restore_symlink(&self, item: &Item, tally: &mut Tally) {
        if let Err(m) = self.symlink(item, tally) {
            tally.error(&item.snap, m);
        }
    }

    fn symlink(&self, item: &Item, tally: &mut Tally) -> Result<(), String> {
        check_parents(self.target, &item.rel)?;
        let abs = self.target.join(&item.rel);
        let link = OsString::from_vec(link_target_bytes(&item.node).ok_or("symlink without a target")?);
        match std::fs::symlink_metadata(&abs) {
            Ok(_) if !self.overwrite => {
                tally.skipped += 1;
                return Ok(());
            }
            Ok(md) if md.is_dir() => return Err("refused: a directory exists at this path".into()),
            Ok(_) => {
                let tmp = temp_path(&abs);
                std::os::unix::fs::symlink(&link, &tmp).map_err(|e| format!("cannot create symlink: {e}"))?;
                if let Err(e) = std::fs::rename(&tmp, &abs) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("cannot replace: {e}"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::os::unix::fs::symlink(&link, &abs) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    tally.skipped += 1;
                    return Ok(());
                }
                Err(e) => return Err(format!("cannot create symlink: {e}")),
            },
            Err(e) => return Err(format!("cannot inspect: {e}")),
        }
        let n = &item.node;
        owner_result(std::os::unix::fs::lchown(&abs, Some(n.uid), Some(n.gid)))
            .and_then(|()| filetime::set_symlink_file_times(&abs, file_time(n.mtime_ns), file_time(n.mtime_ns)))
            .map_err(|e| format!("restored, but cannot set metadata: {e}"))?;
        tally.files += 1;
        Ok(())
    }

    fn write_content(&self, file: &File, path: &Path, node: &Node) -> Result<u64, WriteError> {
        let write_error = |e: io::Error| WriteError::File(format!("write error: {e}"));
        let mut sink =
            if node.size >= DIRECT_MIN { Some(DirectSink::new(path, file).map_err(write_error)?) } else { None };
        let mut written = 0u64;
        for id in &node.content {
            let data = self.repo.read_blob(BlobType::Data, id).map_err(|e| {
                if is_data_error(&e) { WriteError::File(format!("damaged data: {e}")) } else { WriteError::Fatal(e) }
            })?;
            match sink.as_mut() {
                Some(sink) => sink.write(&data).map_err(write_error)?,
                None => {
                    let mut f = file;
                    f.write_all(&data).map_err(write_error)?
                }
            }
            written += data.len() as u64;
            self.progress.inc(data.len() as u64, 0);
        }
        if let Some(sink) = sink {
            sink.finish().map_err(write_error)?;
        }
        if written != node.size {
            return Err(WriteError::File(format!(
                "size mismatch: restored {written} bytes, the snapshot records {}",
                node.size
            )));
        }
        Ok(written)
    }

    /// Restore one file; `Err` only for a fatal repository error.
    fn restore_file(&self, item: &Item, tally: &mut Tally) -> Result<(), RepoError> {
        if let Err(m) = check_parents(self.target, &item.rel) {
            tally.error(&item.snap, m);
            return Ok(());
        }
        let abs = self.target.join(&item.rel);
        let existing = match std::fs::symlink_metadata(&abs) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tally.error(&item.snap, format!("cannot inspect: {e}"));
                return Ok(());
            }
        };
        match &existing {
            Some(_) if !self.overwrite => {
                tally.skipped += 1;
                return Ok(());
            }
            Some(md) if md.is_dir() => {
                tally.error(&item.snap, "refused: a directory exists at this path".into());
                return Ok(());
            }
            _ => {}
        }
        let write_path = if existing.is_some() { temp_path(&abs) } else { abs.clone() };
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&write_path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && existing.is_none() => {
                tally.skipped += 1;
                return Ok(());
            }
            Err(e) => {
                tally.error(&item.snap, format!("cannot create: {e}"));
                return Ok(());
            }
        };
        let result = self.write_content(&file, &write_path, &item.node).and_then(|n| {
            set_file_metadata(&file, &item.node).map_err(|e| WriteError::File(format!("cannot set metadata: {e}")))?;
            Ok(n)
        });
        drop(file);
        let bytes = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&write_path);
                return match e {
                    WriteError::File(m) => {
                        tally.error(&item.snap, m);
                        Ok(())
                    }
                    WriteError::Fatal(e) => Err(e),
                };
            }
        };
        if write_path != abs
            && let Err(e) = std::fs::rename(&write_path, &abs)
        {
            let _ = std::fs::remove_file(&write_path);
            tally.error(&item.snap, format!("cannot replace: {e}"));
            return Ok(());
        }
        tally.files += 1;
        tally.bytes += bytes;
        self.progress.inc(0, 1);
        Ok(())
    }

    fn set_dir_metadata(&self, item: &Item) -> Result<(), String> {
        let abs = self.target.join(&item.rel);
        match std::fs::symlink_metadata(&abs) {
            Ok(md) if md.is_dir() => {}
            _ => return Err("refused: no longer a real directory".into()),
        }
        let n = &item.node;
        owner_result(std::os::unix::fs::lchown(&abs, Some(n.uid), Some(n.gid)))
            .and_then(|()| std::fs::set_permissions(&abs, Permissions::from_mode(n.mode & 0o7777)))
            .and_then(|()| filetime::set_symlink_file_times(&abs, file_time(n.mtime_ns), file_time(n.mtime_ns)))
            .map_err(|e| format!("restored, but cannot set metadata: {e}"))
    }

    fn writer(&self, rx: Receiver<Item>, fatal: &Fatal) -> Tally {
        let mut tally = Tally::default();
        for item in rx {
            if fatal.is_set() {
                continue;
            }
            if let Err(e) = self.restore_file(&item, &mut tally) {
                fatal.set(e);
            }
        }
        tally
    }
}

/// Owner first (chown clears set-id bits), then mode, then times.
fn set_file_metadata(file: &File, node: &Node) -> io::Result<()> {
    owner_result(std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)))?;
    file.set_permissions(Permissions::from_mode(node.mode & 0o7777))?;
    filetime::set_file_handle_times(file, Some(file_time(node.mtime_ns)), Some(file_time(node.mtime_ns)))
}

/// See [`crate::restore`].
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreOutcome, FsError> {
    let includes = Patterns::new(&opts.includes)?;
    let target_error = |message: String| FsError::Path { path: opts.target.clone(), message };
    std::fs::create_dir_all(&opts.target).map_err(|e| target_error(format!("cannot create restore target: {e}")))?;
    if !std::fs::metadata(&opts.target).map_err(|e| target_error(e.to_string()))?.is_dir() {
        return Err(target_error("restore target is not a directory".into()));
    }
    let _lock = repo.lock("restore", false)?;
    let mut planner = Planner { repo, includes: &includes, errors: Vec::new() };
    let items = planner.plan_dir(&snapshot.tree, "/", Path::new(""), includes.is_empty())?;
    let mut outcome = RestoreOutcome { errors: planner.errors, ..Default::default() };
    let files = items.iter().filter(|i| i.node.node_type == NodeType::File);
    progress.set_total(files.clone().map(|i| i.node.size).sum(), files.count() as u64);

    let exec = Exec { repo, target: &opts.target, overwrite: opts.overwrite, progress: progress.as_ref() };
    let fatal = Fatal::default();
    let mut main = Tally::default();
    let mut dirs_to_finish = Vec::new();
    let tallies = std::thread::scope(|scope| {
        let (tx, rx) = bounded::<Item>(64);
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (rx, exec, fatal) = (rx.clone(), &exec, &fatal);
                scope.spawn(move || exec.writer(rx, fatal))
            })
            .collect();
        drop(rx);
        let mut bad: HashSet<PathBuf> = HashSet::new();
        for item in items {
            if fatal.is_set() {
                break;
            }
            if item.rel.parent().is_some_and(|p| bad.contains(p)) {
                if item.node.node_type == NodeType::Dir {
                    bad.insert(item.rel);
                }
                continue;
            }
            match item.node.node_type {
                NodeType::Dir => match exec.ensure_dir(&item) {
                    Ok(ours) => {
                        outcome.dirs += 1;
                        if ours {
                            dirs_to_finish.push(item);
                        }
                    }
                    Err(m) => {
                        main.error(&item.snap, m);
                        bad.insert(item.rel);
                    }
                },
                NodeType::Symlink => exec.restore_symlink(&item, &mut main),
                _ => {
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            }
        }
        drop(tx);
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect::<Vec<_>>()
    });
    if fatal.is_set() {
        return Err(fatal.take().into());
    }
    // Deepest first: a directory's mtime is set after everything inside it was written.
    for item in dirs_to_finish.iter().rev() {
        if let Err(m) = exec.set_dir_metadata(item) {
            main.error(&item.snap, m);
        }
    }
    for t in tallies.into_iter().chain([main]) {
        outcome.files += t.files;
        outcome.bytes += t.bytes;
        outcome.skipped += t.skipped;
        outcome.errors.extend(t.errors);
    }
    outcome.errors.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(outcome)
}
