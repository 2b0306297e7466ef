//! The walker: lists directories, reuses unchanged files from the parent snapshot, queues the
//! rest for readers, and saves each directory's tree as soon as its entries are known.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, SnapshotSummary};
use tidemark_repo::tree::sorted_tree;
use tidemark_repo::{Archiver, Progress, RepoError, Repository};

use super::{Job, ReadOutcome, Top};
use crate::patterns::Patterns;
use crate::walk::{Owners, list_dir, node_from_metadata, read_link_into};
use crate::{Fatal, FileWarning, FsError};

/// A directory entry on its way into a tree.
enum Entry {
    Done(Node),
    Pending { node: Node, path: PathBuf, job: usize, changed: bool },
    Dir { node: Node, entries: Vec<Entry> },
}

/// State of one backup's walk.
pub(super) struct Walker<'a> {
    pub(super) archiver: &'a Archiver,
    pub(super) trees: &'a Repository,
    pub(super) excludes: &'a Patterns,
    pub(super) owners: Owners,
    pub(super) progress: &'a dyn Progress,
    pub(super) fatal: &'a Fatal,
    pub(super) force: bool,
    pub(super) jobs: Option<Sender<Job>>,
    pub(super) results: Receiver<(usize, ReadOutcome)>,
    pub(super) done: HashMap<usize, ReadOutcome>,
    pub(super) next_job: usize,
    pub(super) counters: SnapshotSummary,
    pub(super) warnings: Vec<FileWarning>,
}

impl Walker<'_> {
    fn warn(&mut self, path: &Path, message: String) {
        self.progress.warn(&format!("{}: {message}", path.display()));
        self.warnings.push(FileWarning { path: path.to_path_buf(), message });
    }

    /// A file or directory left out of the snapshot.
    fn file_error(&mut self, path: &Path, message: String) {
        self.counters.errors += 1;
        self.warn(path, message);
    }

    fn check(&self) -> Result<(), FsError> {
        if self.fatal.is_set() {
            return Err(self.fatal.take().into());
        }
        Ok(self.archiver.check_lock()?)
    }

    /// The parent snapshot's entries of one directory, by raw name.
    fn parent_children(&mut self, subtree: Option<Id>) -> HashMap<Vec<u8>, Node> {
        let Some(id) = subtree else {
            return HashMap::new();
        };
        match self.trees.load_tree(&id) {
            Ok(tree) => tree
                .nodes
                .into_iter()
                .map(|n| (n.name_bytes.clone().unwrap_or_else(|| n.name.as_bytes().to_vec()), n))
                .collect(),
            Err(e) => {
                self.progress.warn(&format!("parent snapshot: cannot load tree {id} ({e}); reading those files again"));
                HashMap::new()
            }
        }
    }

    fn walk_top(&mut self, dir: &Path, top: &Top, parent: Option<Id>) -> Result<Vec<Entry>, FsError> {
        let map = match top {
            Top::Walk(path) => return self.walk_dir(path, parent),
            Top::Inter(map) => map,
        };
        let mut parent = self.parent_children(parent);
        let mut out = Vec::new();
        for (name, child) in map {
            let path = dir.join(name);
            let pnode = parent.remove(name.as_bytes());
            let entry = match child {
                Top::Walk(_) => match std::fs::symlink_metadata(&path) {
                    Ok(md) => self.walk_item(&path, name, md, pnode)?,
                    Err(e) => {
                        self.file_error(&path, format!("unreadable: {e}"));
                        None
                    }
                },
                Top::Inter(_) => {
                    // Intermediate directories carry the real directory's metadata; a symlinked
                    // ancestor is recorded as the directory it points to.
                    let md = std::fs::symlink_metadata(&path)
                        .and_then(|m| if m.is_dir() { Ok(m) } else { std::fs::metadata(&path) })
                        .map_err(|e| FsError::Path { path: path.clone(), message: e.to_string() })?;
                    let mut node = node_from_metadata(name, &md, &self.owners);
                    node.node_type = NodeType::Dir;
                    let sub = pnode.filter(|p| p.node_type == NodeType::Dir).and_then(|p| p.subtree);
                    let entries = self.walk_top(&path, child, sub)?;
                    Some(self.finish_dir(node, entries)?)
                }
            };
            out.extend(entry);
        }
        Ok(out)
    }

    fn walk_dir(&mut self, path: &Path, parent: Option<Id>) -> Result<Vec<Entry>, FsError> {
        self.check()?;
        self.progress.status(&path.to_string_lossy());
        let (listed, errors) = match list_dir(path) {
            Ok(x) => x,
            Err(e) => {
                self.file_error(path, format!("unreadable directory: {e}"));
                return Ok(Vec::new());
            }
        };
        for e in errors {
            self.file_error(path, format!("unreadable directory entry: {e}"));
        }
        let mut parent = self.parent_children(parent);
        let mut entries = Vec::with_capacity(listed.len());
        for (name, md) in listed {
            let child = path.join(&name);
            let md = match md {
                Ok(md) => md,
                // Deleted since the listing: nothing to back up.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.file_error(&child, format!("unreadable: {e}"));
                    continue;
                }
            };
            let pnode = parent.remove(name.as_bytes());
            entries.extend(self.walk_item(&child, &name, md, pnode)?);
        }
        Ok(entries)
    }

    fn walk_item(
        &mut self,
        path: &Path,
        name: &OsStr,
        md: std::fs::Metadata,
        parent: Option<Node>,
    ) -> Result<Option<Entry>, FsError> {
        if self.excludes.matches(path, md.is_dir()) {
            return Ok(None);
        }
        let mut node = node_from_metadata(name, &md, &self.owners);
        match node.node_type {
            NodeType::Dir => {
                let sub = parent.filter(|p| p.node_type == NodeType::Dir).and_then(|p| p.subtree);
                let entries = self.walk_dir(path, sub)?;
                Ok(Some(self.finish_dir(node, entries)?))
            }
            NodeType::File => Ok(Some(self.file(path, node, parent)?)),
            NodeType::Symlink => match read_link_into(&mut node, path) {
                Ok(()) => Ok(Some(Entry::Done(node))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => {
                    self.file_error(path, format!("unreadable symlink: {e}"));
                    Ok(None)
                }
            },
            NodeType::Other => Ok(Some(Entry::Done(node))),
        }
    }

    fn file(&mut self, path: &Path, mut node: Node, parent: Option<Node>) -> Result<Entry, FsError> {
        let parent = parent.filter(|p| p.node_type == NodeType::File);
        let changed = parent.is_some();
        let reusable =
            |p: &Node| !self.force && unchanged(p, &node) && p.content.iter().all(|id| self.archiver.has_blob(id));
        if let Some(p) = parent.filter(reusable) {
            node.content = p.content;
            self.counters.files_unmodified += 1;
            self.counters.total_files += 1;
            self.counters.total_bytes += node.size;
            self.progress.inc(node.size, 1);
            return Ok(Entry::Done(node));
        }
        let id = self.next_job;
        self.next_job += 1;
        let job = Job {
            id,
            path: path.to_path_buf(),
            size: node.size,
            mtime_ns: node.mtime_ns,
            ctime_ns: node.ctime_ns,
            inode: node.inode,
            device: node.device,
        };
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            return Err(self.fatal.take().into());
        }
        Ok(Entry::Pending { node, path: path.to_path_buf(), job: id, changed })
    }

    fn drain_results(&mut self) {
        while let Ok((id, outcome)) = self.results.try_recv() {
            self.done.insert(id, outcome);
        }
    }

    /// Save the directory's tree now if every entry is known, else keep it for later.
    fn finish_dir(&mut self, node: Node, entries: Vec<Entry>) -> Result<Entry, FsError> {
        self.drain_results();
        let ready = entries.iter().all(|e| match e {
            Entry::Done(_) => true,
            Entry::Pending { job, .. } => self.done.contains_key(job),
            Entry::Dir { .. } => false,
        });
        if ready { Ok(Entry::Done(self.save_dir(node, entries)?)) } else { Ok(Entry::Dir { node, entries }) }
    }

    fn save_dir(&mut self, mut node: Node, entries: Vec<Entry>) -> Result<Node, FsError> {
        let nodes = self.resolve_all(entries)?;
        node.subtree = Some(self.archiver.save_tree(&sorted_tree(nodes))?);
        self.counters.dirs += 1;
        Ok(node)
    }

    fn resolve_all(&mut self, entries: Vec<Entry>) -> Result<Vec<Node>, FsError> {
        let mut nodes = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                Entry::Done(n) => nodes.push(n),
                Entry::Dir { node, entries } => nodes.push(self.save_dir(node, entries)?),
                Entry::Pending { node, path, job, changed } => {
                    nodes.extend(self.resolve_file(node, &path, job, changed)?)
                }
            }
        }
        Ok(nodes)
    }

    fn resolve_file(
        &mut self,
        mut node: Node,
        path: &Path,
        job: usize,
        changed: bool,
    ) -> Result<Option<Node>, FsError> {
        let outcome = self
            .done
            .remove(&job)
            .ok_or_else(|| RepoError::Invalid(format!("internal: no read result for {}", path.display())))?;
        match outcome {
            ReadOutcome::Saved { saved, warning } => {
                node.content = saved.content;
                node.size = saved.size;
                if changed {
                    self.counters.files_changed += 1;
                } else {
                    self.counters.files_new += 1;
                }
                self.counters.total_files += 1;
                self.counters.total_bytes += node.size;
                self.progress.inc(0, 1);
                if let Some(w) = warning {
                    self.warn(path, w);
                }
                Ok(Some(node))
            }
            ReadOutcome::Failed(message) => {
                self.file_error(path, message);
                Ok(None)
            }
            ReadOutcome::Aborted => Err(self.fatal.take().into()),
        }
    }

    /// Walk everything, wait for the readers, and save the root tree.
    pub(super) fn run(&mut self, top: &Top, parent_root: Option<Id>) -> Result<Id, FsError> {
        let entries = self.walk_top(Path::new("/"), top, parent_root)?;
        self.jobs = None;
        while let Ok((id, outcome)) = self.results.recv() {
            self.done.insert(id, outcome);
        }
        let nodes = self.resolve_all(entries)?;
        Ok(self.archiver.save_tree(&sorted_tree(nodes))?)
    }
}

/// Whether the parent's node can stand for the file without reading it.
fn unchanged(parent: &Node, now: &Node) -> bool {
    parent.size == now.size
        && parent.mtime_ns == now.mtime_ns
        && parent.ctime_ns == now.ctime_ns
        && parent.inode == now.inode
        && (parent.size == 0 || !parent.content.is_empty())
}
