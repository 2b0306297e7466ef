//! Reading snapshot trees: find a node by path, walk, diff two trees, dump a file's content.
//!
//! Source-independent helpers over a [`Repository`], used by `ls`, `dump` and `diff` and by every
//! source's restore. Paths are snapshot paths: components separated by `/`, a leading `/` optional,
//! and `/` (or the empty string) names the root, represented by the synthetic node of [`root_node`].
//! Nodes whose name is not UTF-8 are addressed by their lossy `name`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use tidemark_format::Id;
use tidemark_format::objects::{Node, NodeType, Tree};
use tidemark_format::pack::BlobType;

use crate::{RepoError, Repository, Result};

/// How a path differs between two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Removed,
    /// Content (file data, symlink target) differs.
    Modified,
    /// Same content; only mode, owner or mtime changed.
    Metadata,
    /// File became a directory, symlink became a file, and so on.
    TypeChanged,
}

/// One difference found by [`diff`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Full snapshot path (`/srv/data/file`).
    pub path: String,
    /// What changed.
    pub kind: ChangeKind,
}

/// The synthetic directory node standing for a snapshot's root tree (name `""`, mode `0o755`).
pub fn root_node(root: &Id) -> Node {
    Node {
        name: String::new(),
        name_bytes: None,
        node_type: NodeType::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        device: 0,
        size: 0,
        content: Vec::new(),
        subtree: Some(*root),
        link_target: None,
        attrs: BTreeMap::new(),
    }
}

/// The components of a snapshot path (empty for the root). `.` and empty components are ignored.
pub fn path_components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// Join a parent snapshot path and a child name (`"/"` + `"srv"` = `"/srv"`).
pub fn join_path(parent: &str, name: &str) -> String {
    if parent.ends_with('/') { format!("{parent}{name}") } else { format!("{parent}/{name}") }
}

/// The node at `path` below the tree `root`, or `None` when no such path exists.
pub fn find_node(repo: &Repository, root: &Id, path: &str) -> Result<Option<Node>> {
    let mut node = root_node(root);
    for component in path_components(path) {
        let Some(subtree) = dir_subtree(&node) else {
            return Ok(None);
        };
        let tree = repo.load_tree(&subtree)?;
        match tree.nodes.into_iter().find(|n| n.name == component) {
            Some(child) => node = child,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

fn dir_subtree(node: &Node) -> Option<Id> {
    if node.node_type == NodeType::Dir { node.subtree } else { None }
}

fn load_children(repo: &Repository, node: &Node) -> Result<Vec<Node>> {
    match dir_subtree(node) {
        Some(id) => {
            let mut nodes = repo.load_tree(&id)?.nodes;
            nodes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.name_bytes.cmp(&b.name_bytes)));
            Ok(nodes)
        }
        None => Ok(Vec::new()),
    }
}

/// Visit every node below `start_path` depth-first in name order, with its full path. When
/// `start_path` names a file, symlink or other non-directory, only that node is visited. A missing
/// `start_path` is an error.
pub fn walk(
    repo: &Repository,
    root: &Id,
    start_path: &str,
    visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    let node = find_node(repo, root, start_path)?
        .ok_or_else(|| RepoError::Invalid(format!("{start_path}: no such file or directory in the snapshot")))?;
    let base = format!("/{}", path_components(start_path).join("/"));
    if node.node_type != NodeType::Dir {
        return visit(&base, &node);
    }
    walk_below(repo, &node, &base, visit)
}

fn walk_below(
    repo: &Repository,
    dir: &Node,
    path: &str,
    visit: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<()> {
    for child in load_children(repo, dir)? {
        let child_path = join_path(path, &child.name);
        visit(&child_path, &child)?;
        if child.node_type == NodeType::Dir {
            walk_below(repo, &child, &child_path, visit)?;
        }
    }
    Ok(())
}

/// Differences between the trees `a` (old) and `b` (new), in path order. Identical subtrees (same
/// tree id) are skipped without loading them. Everything below an added or removed directory is
/// listed too.
pub fn diff(repo: &Repository, a: &Id, b: &Id) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    if a != b {
        diff_dirs(repo, Some(a), Some(b), "/", &mut out)?;
    }
    Ok(out)
}

fn by_name(nodes: Vec<Node>) -> BTreeMap<(String, Option<Vec<u8>>), Node> {
    nodes.into_iter().map(|n| ((n.name.clone(), n.name_bytes.clone()), n)).collect()
}

fn diff_dirs(repo: &Repository, a: Option<&Id>, b: Option<&Id>, path: &str, out: &mut Vec<Change>) -> Result<()> {
    let load = |id: Option<&Id>| -> Result<Vec<Node>> {
        match id {
            Some(id) => Ok(repo.load_tree(id)?.nodes),
            None => Ok(Vec::new()),
        }
    };
    let mut old = by_name(load(a)?);
    let new = by_name(load(b)?);
    let mut names: Vec<(String, Option<Vec<u8>>)> = old.keys().chain(new.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let mut new = new;
    for key in names {
        let child_path = join_path(path, &key.0);
        match (old.remove(&key), new.remove(&key)) {
            (Some(o), None) => list_all(repo, &o, &child_path, ChangeKind::Removed, out)?,
            (None, Some(n)) => list_all(repo, &n, &child_path, ChangeKind::Added, out)?,
            (Some(o), Some(n)) => diff_nodes(repo, &o, &n, &child_path, out)?,
            (None, None) => {}
        }
    }
    Ok(())
}

fn diff_nodes(repo: &Repository, o: &Node, n: &Node, path: &str, out: &mut Vec<Change>) -> Result<()> {
    let mut push = |kind| out.push(Change { path: path.to_string(), kind });
    if o.node_type != n.node_type {
        push(ChangeKind::TypeChanged);
        if o.node_type == NodeType::Dir {
            list_below(repo, o, path, ChangeKind::Removed, out)?;
        }
        if n.node_type == NodeType::Dir {
            list_below(repo, n, path, ChangeKind::Added, out)?;
        }
        return Ok(());
    }
    let owner_or_mode = o.mode != n.mode || o.uid != n.uid || o.gid != n.gid;
    match o.node_type {
        NodeType::Dir => {
            // A directory's mtime follows its entries: only report it when the entries are the same.
            let same = o.subtree == n.subtree;
            if owner_or_mode || (same && o.mtime_ns != n.mtime_ns) {
                push(ChangeKind::Metadata);
            }
            if !same {
                diff_dirs(repo, o.subtree.as_ref(), n.subtree.as_ref(), path, out)?;
            }
        }
        _ => {
            let content = o.content != n.content
                || o.size != n.size
                || o.link_target != n.link_target
                || o.attrs.get("link_target_hex") != n.attrs.get("link_target_hex");
            if content {
                push(ChangeKind::Modified);
            } else if owner_or_mode || o.mtime_ns != n.mtime_ns {
                push(ChangeKind::Metadata);
            }
        }
    }
    Ok(())
}

fn list_all(repo: &Repository, node: &Node, path: &str, kind: ChangeKind, out: &mut Vec<Change>) -> Result<()> {
    out.push(Change { path: path.to_string(), kind });
    list_below(repo, node, path, kind, out)
}

fn list_below(repo: &Repository, node: &Node, path: &str, kind: ChangeKind, out: &mut Vec<Change>) -> Result<()> {
    if node.node_type != NodeType::Dir {
        return Ok(());
    }
    for child in load_children(repo, node)? {
        list_all(repo, &child, &join_path(path, &child.name), kind, out)?;
    }
    Ok(())
}

/// Write the content of the file `node` to `writer`, blob by blob (each verified against its id);
/// returns the bytes written. Fails for a non-file node and when the total differs from
/// `node.size`.
pub fn dump(repo: &Repository, node: &Node, writer: &mut dyn Write) -> Result<u64> {
    if node.node_type != NodeType::File {
        return Err(RepoError::Invalid(format!("{}: not a regular file", node.name)));
    }
    let mut written = 0u64;
    for id in &node.content {
        let data = repo.read_blob(BlobType::Data, id)?;
        writer.write_all(&data).map_err(|e| RepoError::Invalid(format!("writing {}: {e}", node.name)))?;
        written += data.len() as u64;
    }
    if written != node.size {
        return Err(RepoError::Invalid(format!(
            "{}: content holds {written} bytes but the snapshot records {}",
            node.name, node.size
        )));
    }
    Ok(written)
}

/// Load a directory node's children in name order (empty for other nodes).
pub fn children(repo: &Repository, node: &Node) -> Result<Vec<Node>> {
    load_children(repo, node)
}

/// Build a tree from nodes, sorted by name as the format requires.
pub fn sorted_tree(mut nodes: Vec<Node>) -> Tree {
    nodes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.name_bytes.cmp(&b.name_bytes)));
    Tree { nodes }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;
    use tidemark_format::keys::KdfParams;
    use tidemark_format::objects::Snapshot;
    use tidemark_storage::MemoryStorage;

    use super::*;
    use crate::{Archiver, Credential, InitOptions, NoProgress};

    fn new_repo() -> Repository {
        let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
        Repository::init(Arc::new(MemoryStorage::new()), &Credential::Password(b"pw".to_vec()), &opts).unwrap()
    }

    fn node(name: &str, node_type: NodeType) -> Node {
        Node { name: name.into(), node_type, mode: 0o644, mtime_ns: 1_000, ..root_node(&Id::default()) }
    }

    fn file(a: &Archiver, name: &str, data: &[u8]) -> Node {
        let saved = a.save_reader(data).unwrap();
        Node { content: saved.content, size: saved.size, subtree: None, ..node(name, NodeType::File) }
    }

    fn dir(a: &Archiver, name: &str, nodes: Vec<Node>) -> Node {
        let id = a.save_tree(&sorted_tree(nodes)).unwrap();
        Node { subtree: Some(id), ..node(name, NodeType::Dir) }
    }

    fn link(name: &str, target: &str) -> Node {
        Node { link_target: Some(target.into()), subtree: None, ..node(name, NodeType::Symlink) }
    }

    /// Two trees committed in one snapshot (the second kept reachable through a directory).
    fn two_trees() -> (Repository, Id, Id) {
        let repo = new_repo();
        let a = repo.archiver("test", Arc::new(NoProgress)).unwrap();
        let deep = dir(&a, "deep", vec![file(&a, "c", b"three")]);
        let sub = dir(&a, "sub", vec![file(&a, "b.txt", b"two"), deep]);
        let old = vec![file(&a, "a.txt", b"one"), sub, link("link", "a.txt")];
        let sub2 = dir(&a, "sub", vec![Node { mtime_ns: 2_000, ..file(&a, "b.txt", b"two") }]);
        let new_dir = dir(&a, "new", vec![file(&a, "x", b"x")]);
        let new = vec![file(&a, "a.txt", b"ONE"), sub2, new_dir, file(&a, "link", b"now a file")];
        let old_id = a.save_tree(&sorted_tree(old.clone())).unwrap();
        let new_id = a.save_tree(&sorted_tree(new.clone())).unwrap();
        let both = a
            .save_tree(&sorted_tree(vec![
                Node { subtree: Some(old_id), ..node("old", NodeType::Dir) },
                Node { subtree: Some(new_id), ..node("new", NodeType::Dir) },
            ]))
            .unwrap();
        let snapshot = Snapshot {
            time: Timestamp::now(),
            hostname: "h".into(),
            username: "u".into(),
            kind: "test".into(),
            source: None,
            paths: vec!["/".into()],
            tags: Vec::new(),
            parent: None,
            tree: both,
            program: "test".into(),
            summary: None,
            extra: BTreeMap::new(),
        };
        a.commit(snapshot).unwrap();
        let lock_options = repo.lock_options();
        (repo.with_lock_options(lock_options), old_id, new_id)
    }

    #[test]
    fn find_node_resolves_paths_and_the_root() {
        let (repo, old, _) = two_trees();
        let n = find_node(&repo, &old, "/sub/deep/c").unwrap().unwrap();
        assert_eq!((n.name.as_str(), n.size), ("c", 5));
        assert_eq!(find_node(&repo, &old, "sub/b.txt").unwrap().unwrap().name, "b.txt");
        for root in ["/", ""] {
            let r = find_node(&repo, &old, root).unwrap().unwrap();
            assert_eq!((r.node_type, r.subtree), (NodeType::Dir, Some(old)));
        }
        assert_eq!(find_node(&repo, &old, "/nope").unwrap(), None);
        assert_eq!(find_node(&repo, &old, "/a.txt/below-a-file").unwrap(), None);
    }

    #[test]
    fn walk_is_depth_first_in_name_order() {
        let (repo, old, _) = two_trees();
        let mut seen = Vec::new();
        walk(&repo, &old, "/", &mut |p, _| {
            seen.push(p.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["/a.txt", "/link", "/sub", "/sub/b.txt", "/sub/deep", "/sub/deep/c"]);
        seen.clear();
        walk(&repo, &old, "sub/deep/c", &mut |p, _| {
            seen.push(p.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["/sub/deep/c"]);
        assert!(walk(&repo, &old, "/missing", &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn diff_reports_each_kind_of_change() {
        let (repo, old, new) = two_trees();
        let got: Vec<(String, ChangeKind)> =
            diff(&repo, &old, &new).unwrap().into_iter().map(|c| (c.path, c.kind)).collect();
        let want = [
            ("/a.txt", ChangeKind::Modified),
            ("/link", ChangeKind::TypeChanged),
            ("/new", ChangeKind::Added),
            ("/new/x", ChangeKind::Added),
            ("/sub/b.txt", ChangeKind::Metadata),
            ("/sub/deep", ChangeKind::Removed),
            ("/sub/deep/c", ChangeKind::Removed),
        ];
        let want: Vec<(String, ChangeKind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
        assert_eq!(got, want);
        assert!(diff(&repo, &old, &old).unwrap().is_empty());
        let json = serde_json::to_string(&Change { path: "/x".into(), kind: ChangeKind::TypeChanged }).unwrap();
        assert_eq!(json, r#"{"path":"/x","kind":"typechanged"}"#);
    }

    #[test]
    fn dump_streams_content_and_checks_the_size() {
        let (repo, old, _) = two_trees();
        let n = find_node(&repo, &old, "/sub/deep/c").unwrap().unwrap();
        let mut out = Vec::new();
        assert_eq!(dump(&repo, &n, &mut out).unwrap(), 5);
        assert_eq!(out, b"three");
        let wrong = Node { size: 6, ..n };
        assert!(dump(&repo, &wrong, &mut Vec::new()).is_err());
        let d = find_node(&repo, &old, "/sub").unwrap().unwrap();
        assert!(dump(&repo, &d, &mut Vec::new()).is_err());
    }
}
