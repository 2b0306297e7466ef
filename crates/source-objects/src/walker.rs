//! The streaming tree builder: listing entries in, directory trees out.
//!
//! S3 lists keys in byte order, so all keys below one directory prefix arrive together. The
//! walker keeps a stack of the directories along the current key; when a key leaves a directory,
//! the directory is closed and, once none of its objects is still being fetched, its tree is saved
//! and its node handed to its parent. Memory holds the open directories (depth), the directories
//! waiting for fetches and the fetches themselves (bounded by the concurrency), never the listing.
//! Parent-snapshot trees are loaded one directory at a time as the walk enters it.
//!
//! An object is reused from the parent snapshot, not fetched, when the parent holds a complete
//! file for it (a file node whose content blobs are all in the repository, of the same version
//! when versions are captured) with the same size and last-modified time, and:
//!
//! - the listing carries an ETag: the parent's stored ETag must be equal (a parent without one is
//!   fetched again, so the ETag gets recorded);
//! - the listing carries no ETag (an absent or empty `<ETag>`, as s3s-fs lists): size and
//!   last-modified time decide alone. Such a listing is taken as "no ETag" throughout, so the
//!   ETag of the download is stored and no "changed while being backed up" warning is raised
//!   against an empty one.

use std::collections::{BTreeMap, HashMap};

use crossbeam_channel::{Receiver, Sender};
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, SnapshotSummary};
use tidemark_repo::tree::{root_node, sorted_tree};
use tidemark_repo::{Archiver, RepoError, Repository, SavedContent};

use crate::names::{self, NAME_ATTR, VERSIONS_ATTR, VERSIONS_DIR};
use crate::{BucketStats, ObjectWarning, ObjectsError};

/// One listing entry, as the walker needs it.
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    pub(crate) mtime_ns: i64,
    pub(crate) version: Option<String>,
    pub(crate) current: bool,
}

/// An object to fetch.
pub(crate) struct FetchJob {
    pub(crate) id: usize,
    pub(crate) key: String,
    pub(crate) version: Option<String>,
}

/// What a fetch produced.
pub(crate) enum Fetched {
    Saved { saved: SavedContent, etag: Option<String>, attrs: BTreeMap<String, String>, warning: Option<String> },
    Failed(String),
    Aborted,
}

#[derive(Default)]
struct ParentDir {
    nodes: HashMap<(bool, String), Node>,
    versions: HashMap<(String, String), Node>,
}

struct Dir {
    component: String,
    name: String,
    attrs: BTreeMap<String, String>,
    mtime_ns: i64,
    children: Vec<Option<Node>>,
    versions: Vec<Option<Node>>,
    pending: usize,
    closed: bool,
    up: Option<(usize, usize)>,
    parent: ParentDir,
}

struct PendingFile {
    key: String,
    dir: usize,
    slot: usize,
    version_slot: bool,
    name: String,
    component: String,
    mtime_ns: i64,
    listed_etag: Option<String>,
    version: Option<String>,
    new: bool,
}

pub(crate) struct Walker<'a> {
    pub(crate) archiver: &'a Archiver,
    pub(crate) trees: &'a Repository,
    pub(crate) all_versions: bool,
    /// Non-current versions older than this (ns) and not in the parent are not captured.
    pub(crate) since_ns: Option<i64>,
    pub(crate) limit: usize,
    pub(crate) jobs: Option<Sender<FetchJob>>,
    pub(crate) results: Receiver<(usize, Fetched)>,
    dirs: HashMap<usize, Dir>,
    stack: Vec<usize>,
    next_dir: usize,
    pending: HashMap<usize, PendingFile>,
    next_job: usize,
    last_key: String,
    root: Option<Id>,
    pub(crate) counters: SnapshotSummary,
    pub(crate) stats: BucketStats,
    pub(crate) warnings: Vec<ObjectWarning>,
}

type Result<T> = std::result::Result<T, ObjectsError>;

fn parent_dir(repo: &Repository, subtree: Option<Id>, versions: bool) -> Result<ParentDir> {
    let mut out = ParentDir::default();
    let Some(id) = subtree else { return Ok(out) };
    for node in repo.load_tree(&id)?.nodes {
        if names::is_versions_dir(&node) {
            if versions && let Some(sub) = node.subtree {
                for v in repo.load_tree(&sub)?.nodes {
                    let vid = v.attrs.get("version_id").cloned().unwrap_or_default();
                    out.versions.insert((names::original(&v).to_string(), vid), v);
                }
            }
            continue;
        }
        let key = (node.node_type == NodeType::Dir, names::original(&node).to_string());
        out.nodes.insert(key, node);
    }
    Ok(out)
}

fn named(mut node: Node, name: &str, component: &str) -> Node {
    node.name = name.to_string();
    node.name_bytes = None;
    if name == component {
        node.attrs.remove(NAME_ATTR);
    } else {
        node.attrs.insert(NAME_ATTR.into(), component.to_string());
    }
    node
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        archiver: &'a Archiver,
        trees: &'a Repository,
        jobs: Sender<FetchJob>,
        results: Receiver<(usize, Fetched)>,
        limit: usize,
    ) -> Self {
        Walker {
            archiver,
            trees,
            all_versions: false,
            since_ns: None,
            limit: limit.max(1),
            jobs: Some(jobs),
            results,
            dirs: HashMap::new(),
            stack: Vec::new(),
            next_dir: 0,
            pending: HashMap::new(),
            next_job: 0,
            last_key: String::new(),
            root: None,
            counters: SnapshotSummary::default(),
            stats: BucketStats::default(),
            warnings: Vec::new(),
        }
    }

    /// Open the root, comparing against the parent snapshot's root tree.
    pub(crate) fn start(&mut self, parent_root: Option<Id>) -> Result<()> {
        let parent = parent_dir(self.trees, parent_root, self.all_versions)?;
        self.push_dir(String::new(), String::new(), None, parent);
        Ok(())
    }

    fn push_dir(&mut self, component: String, name: String, up: Option<(usize, usize)>, parent: ParentDir) {
        let id = self.next_dir;
        self.next_dir += 1;
        let dir = Dir {
            component,
            name,
            attrs: BTreeMap::new(),
            mtime_ns: 0,
            children: Vec::new(),
            versions: Vec::new(),
            pending: 0,
            closed: false,
            up,
            parent,
        };
        self.dirs.insert(id, dir);
        self.stack.push(id);
        self.stats.max_dirs_held = self.stats.max_dirs_held.max(self.dirs.len());
    }

    fn dir(&mut self, id: usize) -> Result<&mut Dir> {
        self.dirs.get_mut(&id).ok_or_else(|| ObjectsError::Invalid(format!("internal: directory {id} is gone")))
    }

    fn top(&self) -> usize {
        self.stack.last().copied().unwrap_or_default()
    }

    /// Move the stack to the directory `components` (closing the ones the key left).
    fn position(&mut self, components: &[&str]) -> Result<()> {
        let mut common = 0;
        while common < components.len()
            && common + 1 < self.stack.len()
            && self.dirs.get(&self.stack[common + 1]).is_some_and(|d| d.component == components[common])
        {
            common += 1;
        }
        while self.stack.len() > common + 1 {
            self.close_top()?;
        }
        for component in &components[common..] {
            let top = self.top();
            let dir = self.dir(top)?;
            let prev = dir.parent.nodes.get(&(true, component.to_string())).and_then(|n| n.subtree);
            let slot = dir.children.len();
            dir.children.push(None);
            dir.pending += 1;
            let parent = parent_dir(self.trees, prev, self.all_versions)?;
            self.push_dir(component.to_string(), names::node_name(component), Some((top, slot)), parent);
        }
        Ok(())
    }

    fn close_top(&mut self) -> Result<()> {
        let Some(id) = self.stack.pop() else { return Ok(()) };
        let dir = self.dir(id)?;
        dir.closed = true;
        dir.parent = ParentDir::default();
        if dir.pending == 0 { self.finalize(id) } else { Ok(()) }
    }

    /// Save a finished directory's tree and hand its node up, as far as that finishes parents.
    fn finalize(&mut self, mut id: usize) -> Result<()> {
        loop {
            let dir = self.dirs.remove(&id).ok_or_else(|| ObjectsError::Invalid("internal: lost directory".into()))?;
            let node = self.save_dir(&dir)?;
            let Some((up, slot)) = dir.up else {
                self.root = node.and_then(|n| n.subtree);
                return Ok(());
            };
            let parent = self.dir(up)?;
            parent.children[slot] = node;
            parent.pending -= 1;
            if !(parent.closed && parent.pending == 0) {
                return Ok(());
            }
            id = up;
        }
    }

    fn save_dir(&mut self, dir: &Dir) -> Result<Option<Node>> {
        let mut nodes: Vec<Node> = dir.children.iter().flatten().cloned().collect();
        let versions: Vec<Node> = dir.versions.iter().flatten().cloned().collect();
        if !versions.is_empty() {
            let id = self.archiver.save_tree(&sorted_tree(versions))?;
            let mut attrs = BTreeMap::new();
            attrs.insert(VERSIONS_ATTR.to_string(), "true".to_string());
            nodes.push(Node { name: VERSIONS_DIR.into(), mode: 0o755, attrs, ..root_node(&id) });
        }
        let is_root = dir.up.is_none();
        if !is_root && nodes.is_empty() && !dir.attrs.contains_key("marker") {
            return Ok(None);
        }
        let tree = sorted_tree(nodes);
        let mut nodes = tree.nodes;
        for i in 1..nodes.len() {
            if nodes[i].name != nodes[i - 1].name {
                continue;
            }
            let (a, b) = (nodes[i - 1].node_type, nodes[i].node_type);
            let file = match (a, b) {
                (NodeType::Dir, NodeType::File) => i,
                (NodeType::File, NodeType::Dir) => i - 1,
                _ => {
                    return Err(ObjectsError::Invalid(format!(
                        "the listing named {:?} twice in one directory (keys not sorted?); nothing was committed",
                        nodes[i].name
                    )));
                }
            };
            let component = names::original(&nodes[file]).to_string();
            let renamed = names::renamed_file(&nodes[file].name);
            nodes[file] = named(nodes[file].clone(), &renamed, &component);
        }
        let id = self.archiver.save_tree(&sorted_tree(nodes))?;
        self.counters.dirs += 1;
        let node = Node {
            name: dir.name.clone(),
            mode: 0o755,
            mtime_ns: dir.mtime_ns,
            attrs: dir.attrs.clone(),
            ..root_node(&id)
        };
        Ok(Some(named(node, &dir.name, &dir.component)))
    }

    /// Take one listing entry.
    pub(crate) fn add(&mut self, mut entry: Listed) -> Result<()> {
        entry.etag = entry.etag.filter(|e| !no_etag(e));
        if entry.key < self.last_key {
            return Err(ObjectsError::Invalid(format!(
                "the bucket listing is not in key order ({:?} after {:?}); nothing was committed",
                entry.key, self.last_key
            )));
        }
        self.last_key.clone_from(&entry.key);
        let (dirs, leaf) = names::split_key(&entry.key);
        self.position(&dirs)?;
        match leaf {
            Some(leaf) => self.file(&entry, leaf),
            None if entry.current => {
                let top = self.top();
                let dir = self.dir(top)?;
                dir.attrs.insert("marker".into(), "true".into());
                if let Some(etag) = &entry.etag {
                    dir.attrs.insert("etag".into(), etag.clone());
                }
                dir.mtime_ns = entry.mtime_ns;
                Ok(())
            }
            None => Ok(()),
        }
        .and_then(|()| self.poll())
    }

    fn reusable(&self, prev: Option<&Node>, entry: &Listed) -> bool {
        prev.is_some_and(|n| same_object(n, entry) && n.content.iter().all(|id| self.archiver.has_blob(id)))
    }

    fn file(&mut self, entry: &Listed, component: &str) -> Result<()> {
        let top = self.top();
        let name = names::node_name(component);
        let all_versions = self.all_versions;
        let dir = self.dirs.get(&top).ok_or_else(|| ObjectsError::Invalid("internal: no open directory".into()))?;
        let version = entry.version.clone().filter(|v| all_versions && v != "null");
        let (prev, name) = if entry.current {
            (dir.parent.nodes.get(&(false, component.to_string())), name)
        } else {
            let vid = version.clone().unwrap_or_default();
            let prev = dir.parent.versions.get(&(component.to_string(), vid.clone())).or_else(|| {
                dir.parent
                    .nodes
                    .get(&(false, component.to_string()))
                    .filter(|n| n.attrs.get("version_id") == Some(&vid))
            });
            (prev, names::version_name(&name, &vid))
        };
        if self.reusable(prev, entry) {
            let mut node = named(prev.cloned().unwrap_or_else(|| root_node(&Id::default())), &name, component);
            if let Some(v) = &version {
                node.attrs.insert("version_id".into(), v.clone());
            }
            self.stats.objects_reused += 1;
            if entry.current {
                self.counters.files_unmodified += 1;
            }
            return self.place(top, entry.current, Some(node));
        }
        if !entry.current && self.since_ns.is_some_and(|t| entry.mtime_ns < t) {
            return Ok(());
        }
        let new = prev.is_none();
        while self.pending.len() >= self.limit {
            self.receive()?;
        }
        let id = self.next_job;
        self.next_job += 1;
        let dir = self.dir(top)?;
        let (slot, version_slot) = if entry.current {
            dir.children.push(None);
            (dir.children.len() - 1, false)
        } else {
            dir.versions.push(None);
            (dir.versions.len() - 1, true)
        };
        dir.pending += 1;
        let pending = PendingFile {
            key: entry.key.clone(),
            dir: top,
            slot,
            version_slot,
            name,
            component: component.to_string(),
            mtime_ns: entry.mtime_ns,
            listed_etag: entry.etag.clone(),
            version: version.clone(),
            new,
        };
        self.pending.insert(id, pending);
        self.stats.max_pending_fetches = self.stats.max_pending_fetches.max(self.pending.len());
        let job = FetchJob { id, key: entry.key.clone(), version: entry.version.clone().filter(|v| v != "null") };
        let jobs = self.jobs.as_ref().ok_or(RepoError::Interrupted)?;
        jobs.send(job).map_err(|_| RepoError::Interrupted)?;
        Ok(())
    }

    /// Count a finished file and put it in its directory.
    fn place(&mut self, dir: usize, current: bool, node: Option<Node>) -> Result<()> {
        if let Some(n) = &node {
            if current {
                self.counters.total_files += 1;
                self.counters.total_bytes += n.size;
            } else {
                self.stats.versions += 1;
            }
        }
        let d = self.dir(dir)?;
        if current {
            d.children.push(node)
        } else {
            d.versions.push(node)
        }
        Ok(())
    }

    fn warn(&mut self, key: &str, message: String) {
        self.warnings.push(ObjectWarning { key: key.to_string(), message });
    }

    /// Apply the results that are ready without waiting.
    fn poll(&mut self) -> Result<()> {
        while let Ok((id, fetched)) = self.results.try_recv() {
            self.apply(id, fetched)?;
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<()> {
        let (id, fetched) = self.results.recv().map_err(|_| RepoError::Interrupted)?;
        self.apply(id, fetched)
    }

    fn apply(&mut self, id: usize, fetched: Fetched) -> Result<()> {
        let p =
            self.pending.remove(&id).ok_or_else(|| ObjectsError::Invalid(format!("internal: unknown fetch {id}")))?;
        let key = self.job_key(&p);
        let node = match fetched {
            Fetched::Aborted => return Err(RepoError::Interrupted.into()),
            Fetched::Failed(message) => {
                self.counters.errors += 1;
                self.warn(&key, message);
                None
            }
            Fetched::Saved { saved, etag, mut attrs, warning } => {
                let changed = matches!((&etag, &p.listed_etag), (Some(a), Some(b)) if a != b);
                if let Some(w) = warning.or_else(|| changed.then(|| "changed while being backed up".to_string())) {
                    self.warn(&key, w);
                }
                if let Some(etag) = etag.or(p.listed_etag) {
                    attrs.insert("etag".into(), etag);
                }
                if let Some(v) = &p.version {
                    attrs.insert("version_id".into(), v.clone());
                }
                self.stats.objects_fetched += 1;
                self.stats.bytes_fetched += saved.size;
                if !p.version_slot {
                    if p.new {
                        self.counters.files_new += 1
                    } else {
                        self.counters.files_changed += 1
                    }
                    self.counters.total_files += 1;
                    self.counters.total_bytes += saved.size;
                } else {
                    self.stats.versions += 1;
                }
                let node = Node {
                    node_type: NodeType::File,
                    mode: 0o644,
                    mtime_ns: p.mtime_ns,
                    size: saved.size,
                    content: saved.content,
                    subtree: None,
                    attrs,
                    ..root_node(&Id::default())
                };
                Some(named(node, &p.name, &p.component))
            }
        };
        let dir = self.dir(p.dir)?;
        let slots = if p.version_slot { &mut dir.versions } else { &mut dir.children };
        slots[p.slot] = node;
        dir.pending -= 1;
        if dir.closed && dir.pending == 0 { self.finalize(p.dir) } else { Ok(()) }
    }

    fn job_key(&self, p: &PendingFile) -> String {
        match &p.version {
            Some(v) if p.version_slot => format!("{} (version {v})", p.key),
            _ => p.key.clone(),
        }
    }

    /// Close everything, wait for the fetches, return the root tree.
    pub(crate) fn finish(&mut self) -> Result<Id> {
        while !self.stack.is_empty() {
            self.close_top()?;
        }
        self.jobs = None;
        while !self.pending.is_empty() {
            self.receive()?;
        }
        self.root.ok_or_else(|| ObjectsError::Invalid("internal: the root tree was not saved".into()))
    }
}

/// Whether a listed ETag is really none: empty, blank or `""`.
fn no_etag(etag: &str) -> bool {
    etag.trim().trim_matches('"').is_empty()
}

/// Whether the parent's file node `n` describes the listed object (the module docs give the rule);
/// the caller checks that its content is still in the repository.
fn same_object(n: &Node, entry: &Listed) -> bool {
    let listed_etag = entry.etag.as_deref().filter(|e| !no_etag(e));
    n.node_type == NodeType::File
        && n.size == entry.size
        && n.mtime_ns == entry.mtime_ns
        && listed_etag.is_none_or(|e| n.attrs.get("etag").map(String::as_str) == Some(e))
        && (entry.version.is_none() || n.attrs.get("version_id").is_none_or(|v| Some(v) == entry.version.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(size: u64, mtime_ns: i64, etag: Option<&str>) -> Node {
        let mut n = Node { node_type: NodeType::File, size, mtime_ns, subtree: None, ..root_node(&Id::default()) };
        if let Some(e) = etag {
            n.attrs.insert("etag".into(), e.into());
        }
        n
    }

    fn listed(size: u64, mtime_ns: i64, etag: Option<&str>) -> Listed {
        Listed { key: "k".into(), size, etag: etag.map(str::to_string), mtime_ns, version: None, current: true }
    }

    #[test]
    fn with_etags_on_both_sides_the_etag_must_match() {
        let parent = node(5, 100, Some("\"abc\""));
        assert!(same_object(&parent, &listed(5, 100, Some("\"abc\""))));
        assert!(!same_object(&parent, &listed(5, 100, Some("\"abd\""))));
        assert!(!same_object(&parent, &listed(6, 100, Some("\"abc\""))));
        assert!(!same_object(&parent, &listed(5, 101, Some("\"abc\""))));
        // A listed ETag the parent never recorded: fetch again to record it.
        assert!(!same_object(&node(5, 100, None), &listed(5, 100, Some("\"abc\""))));
    }

    #[test]
    fn without_a_listed_etag_size_and_mtime_decide() {
        let parent = node(5, 100, Some("\"md5-from-the-download\""));
        for missing in [None, Some(""), Some("\"\""), Some(" ")] {
            assert!(same_object(&parent, &listed(5, 100, missing)), "{missing:?}");
            assert!(same_object(&node(5, 100, None), &listed(5, 100, missing)), "{missing:?}");
            assert!(!same_object(&parent, &listed(4, 100, missing)), "{missing:?}");
            assert!(!same_object(&parent, &listed(5, 99, missing)), "{missing:?}");
        }
        let mut dir = parent.clone();
        dir.node_type = NodeType::Dir;
        assert!(!same_object(&dir, &listed(5, 100, None)));
    }
}
