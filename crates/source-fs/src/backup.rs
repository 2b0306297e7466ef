//! Backup: walk on the calling thread ([`walker`]), read changed files on [`READERS`] threads,
//! assemble trees.
//!
//! The walker lists each directory (sorted), compares every regular file with the parent
//! snapshot's node at the same path and either reuses its content (size, mtime, ctime and inode
//! equal, every blob still present) or queues it for a reader. A directory's tree is saved as soon
//! as all its entries are known; directories still waiting for readers are finished after the
//! walk. Parent trees are loaded once per directory, when the walk enters it.

mod walker;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Snapshot, SnapshotSummary};
use tidemark_repo::{Archiver, Progress, RepoError, Repository, SavedContent, SnapshotFilter};

use walker::Walker;

use crate::patterns::Patterns;
use crate::walk::{self, Opener, Owners, ctime_ns, mtime_ns};
use crate::{BackupOptions, BackupOutcome, Fatal, FsError};

/// Threads reading file content.
pub const READERS: usize = 2;

/// The snapshot `kind` of directory backups.
pub const KIND: &str = "directory";

/// What to walk: the given paths, merged below the root along their ancestors.
enum Top {
    Walk(PathBuf),
    Inter(BTreeMap<OsString, Top>),
}

fn build_top(paths: &[PathBuf]) -> Top {
    let mut sorted = paths.to_vec();
    sorted.sort();
    let mut top = Top::Inter(BTreeMap::new());
    for path in &sorted {
        let comps: Vec<&OsStr> =
            path.components().filter_map(|c| if let Component::Normal(n) = c { Some(n) } else { None }).collect();
        if comps.is_empty() {
            return Top::Walk(path.clone());
        }
        insert_top(&mut top, &comps, path);
    }
    top
}

fn insert_top(top: &mut Top, comps: &[&OsStr], path: &Path) {
    // A `Walk` here means an ancestor of `path` is backed up whole already.
    let Top::Inter(map) = top else { return };
    match comps {
        [] => {}
        [last] => {
            map.insert(last.to_os_string(), Top::Walk(path.to_path_buf()));
        }
        [first, rest @ ..] => {
            let child = map.entry(first.to_os_string()).or_insert_with(|| Top::Inter(BTreeMap::new()));
            insert_top(child, rest, path);
        }
    }
}

/// A file handed to a reader, with what the walk saw.
pub(super) struct Job {
    pub(super) id: usize,
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    pub(super) inode: u64,
    pub(super) device: u64,
}

/// What became of one file.
pub(super) enum ReadOutcome {
    Saved { saved: SavedContent, warning: Option<String> },
    Failed(String),
    Aborted,
}

/// Read queued files until the queue closes; after a fatal error, answer `Aborted`.
pub(super) fn reader_loop(
    archiver: &Archiver,
    opener: &dyn Opener,
    fatal: &Fatal,
    rx: Receiver<Job>,
    tx: Sender<(usize, ReadOutcome)>,
) {
    for job in rx {
        let outcome = if fatal.is_set() {
            ReadOutcome::Aborted
        } else {
            read_file(archiver, opener, &job).unwrap_or_else(|e| {
                fatal.set(e);
                ReadOutcome::Aborted
            })
        };
        if tx.send((job.id, outcome)).is_err() {
            return;
        }
    }
}

/// Read one file into the repository. A source problem is `Ok(Failed)`; `Err` is fatal.
fn read_file(archiver: &Archiver, opener: &dyn Opener, job: &Job) -> Result<ReadOutcome, RepoError> {
    let mut file = match opener.open(&job.path) {
        Ok(f) => f,
        Err(e) => return Ok(ReadOutcome::Failed(format!("unreadable: {e}"))),
    };
    let mut warning = None;
    match file.metadata() {
        Ok(md) if !md.is_file() => {
            return Ok(ReadOutcome::Failed("unreadable: no longer a regular file".into()));
        }
        Ok(md) if md.ino() != job.inode || md.dev() != job.device => {
            warning = Some("replaced while being backed up".to_string());
        }
        Ok(_) => {}
        Err(e) => return Ok(ReadOutcome::Failed(format!("unreadable: {e}"))),
    }
    let saved = match archiver.save_reader(&mut file) {
        Ok(saved) => saved,
        Err(RepoError::SourceRead(e)) => {
            return Ok(ReadOutcome::Failed(format!("read error: {e}")));
        }
        Err(e) => return Err(e),
    };
    if warning.is_none() {
        let changed = match file.metadata() {
            Ok(md) => {
                md.len() != job.size
                    || mtime_ns(&md) != job.mtime_ns
                    || ctime_ns(&md) != job.ctime_ns
                    || saved.size != job.size
            }
            Err(_) => true,
        };
        if changed {
            warning = Some("changed while being read".to_string());
        }
    }
    Ok(ReadOutcome::Saved { saved, warning })
}

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>, FsError> {
    if let Some(id) = opts.parent {
        return Ok(Some((id, repo.load_snapshot(&id)?)));
    }
    let filter = SnapshotFilter {
        hosts: vec![host.to_string()],
        tags: Vec::new(),
        paths: paths.to_vec(),
        source: opts.source.clone(),
    };
    Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| s.kind == KIND && filter.matches(s)))
}

/// [`crate::backup`] with a custom [`Opener`] (fault injection in tests).
pub fn backup_with_opener(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
    opener: &dyn Opener,
) -> Result<BackupOutcome, FsError> {
    let start = Timestamp::now();
    if opts.paths.is_empty() {
        return Err(FsError::Path { path: PathBuf::new(), message: "nothing to back up: no paths given".into() });
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in &opts.paths {
        let abs = walk::absolute(p)?;
        std::fs::symlink_metadata(&abs)
            .map_err(|e| FsError::Path { path: abs.clone(), message: format!("cannot back up: {e}") })?;
        if !paths.contains(&abs) {
            paths.push(abs);
        }
    }
    let excludes = Patterns::new(&opts.excludes)?;
    let host = if opts.host.is_empty() { tidemark_repo::hostname() } else { opts.host.clone() };
    let path_strings: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parent = find_parent(repo, opts, &host, &path_strings)?;
    let archiver = repo.archiver("backup", progress.clone())?;
    progress.set_total(0, 0);
    // Parent trees are read through the archiver's index (one copy of it in memory).
    let trees = archiver.reader();
    let fatal = Fatal::default();
    let top = build_top(&paths);
    let (root, counters, warnings) = std::thread::scope(|scope| {
        let (job_tx, job_rx) = bounded::<Job>(64);
        let (res_tx, res_rx) = unbounded();
        for _ in 0..READERS {
            let (rx, tx, archiver, fatal) = (job_rx.clone(), res_tx.clone(), &archiver, &fatal);
            scope.spawn(move || reader_loop(archiver, opener, fatal, rx, tx));
        }
        drop((job_rx, res_tx));
        let mut walker = Walker {
            archiver: &archiver,
            trees: &trees,
            excludes: &excludes,
            owners: Owners::load(),
            progress: progress.as_ref(),
            fatal: &fatal,
            force: opts.force,
            jobs: Some(job_tx),
            results: res_rx,
            done: HashMap::new(),
            next_job: 0,
            counters: SnapshotSummary::default(),
            warnings: Vec::new(),
        };
        let root = walker.run(&top, parent.as_ref().map(|(_, s)| s.tree));
        if root.is_err() {
            fatal.stop();
        }
        root.map(|r| (r, walker.counters, walker.warnings))
    })?;
    let c = counters;
    let summary = SnapshotSummary { backup_start: Some(start), ..c };
    let snapshot = Snapshot {
        time: start,
        hostname: host,
        username: tidemark_repo::username(),
        kind: KIND.into(),
        source: opts.source.clone(),
        paths: path_strings,
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        program: format!("tidemark {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        extra: BTreeMap::new(),
    };
    let (id, snapshot) = archiver.commit(snapshot)?;
    Ok(BackupOutcome { id, snapshot, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(top: &Top) -> Vec<String> {
        match top {
            Top::Walk(p) => vec![format!("walk {}", p.display())],
            Top::Inter(m) => m
                .iter()
                .flat_map(|(k, v)| names(v).into_iter().map(move |s| format!("{}/{s}", k.to_string_lossy())))
                .collect(),
        }
    }

    #[test]
    fn paths_merge_below_the_root_and_ancestors_win() {
        let p = |s: &str| PathBuf::from(s);
        let top = build_top(&[p("/srv/data/x"), p("/srv/logs"), p("/srv/data"), p("/etc/hosts")]);
        assert_eq!(names(&top), ["etc/hosts/walk /etc/hosts", "srv/data/walk /srv/data", "srv/logs/walk /srv/logs"]);
        assert!(matches!(build_top(&[p("/a"), p("/")]), Top::Walk(ref r) if r == Path::new("/")));
    }
}
