//! Finding files across snapshots, and the snapshot of a source at a time.
//!
//! Both only read snapshots and trees, so they work for every kind of snapshot: in a bucket
//! snapshot, paths are keys (names unescaped, captured versions included); in a directory
//! snapshot, absolute paths.

use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{NodeType, Snapshot};
use tidemark_repo::{RepoError, Repository};
use tidemark_source_fs::Patterns;
use tidemark_storage_s3::S3Config;

use crate::ObjectsError;
use crate::backup::KIND;
use crate::names;

/// A file found in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The snapshot holding it.
    pub snapshot: Id,
    /// When that snapshot was taken.
    pub time: Timestamp,
    /// The snapshot's kind (`bucket`, `directory`, ...).
    pub kind: String,
    /// The key (bucket snapshots) or absolute path (directory snapshots).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The object's ETag (bucket snapshots).
    pub etag: Option<String>,
    /// The object version (bucket snapshots taken with `all_versions`).
    pub version_id: Option<String>,
    /// `false` for a captured non-current version (deleted or overwritten before the snapshot).
    pub current: bool,
}

/// Whether `snapshot` belongs to `source`: its source name, one of its paths, or the same bucket
/// URL once normalized.
pub fn matches_source(snapshot: &Snapshot, source: &str) -> bool {
    snapshot.source.as_deref() == Some(source)
        || snapshot.paths.iter().any(|p| p == source)
        || S3Config::from_url(source).is_ok_and(|c| snapshot.paths.contains(&c.url()))
}

/// Every file matching `pattern` (tidemark-source-fs pattern syntax: `IMG_1234.jpg` matches the
/// name at any depth, `/photos/2024/*.jpg` is anchored, on `/KEY` for buckets), in every snapshot
/// (of `source` when given), oldest snapshot first.
pub fn find(repo: &Repository, pattern: &str, source: Option<&str>) -> Result<Vec<Found>, ObjectsError> {
    let patterns = Patterns::new(&[pattern.to_string()])?;
    let mut out = Vec::new();
    for (id, snapshot) in repo.snapshots()? {
        if source.is_some_and(|s| !matches_source(&snapshot, s)) {
            continue;
        }
        let bucket = snapshot.kind == KIND;
        let mut visit = |path: &str, node: &tidemark_repo::format::objects::Node, current: bool| {
            let shown = if bucket { format!("/{path}") } else { path.to_string() };
            if patterns.matches(Path::new(&shown), false) {
                out.push(Found {
                    snapshot: id,
                    time: snapshot.time,
                    kind: snapshot.kind.clone(),
                    path: path.to_string(),
                    size: node.size,
                    mtime_ns: node.mtime_ns,
                    etag: node.attrs.get("etag").cloned(),
                    version_id: node.attrs.get("version_id").cloned(),
                    current,
                });
            }
        };
        let prefix = if bucket { "" } else { "/" };
        walk(repo, &snapshot.tree, prefix, bucket, true, &mut visit)?;
    }
    Ok(out)
}

type Visit<'a> = dyn FnMut(&str, &tidemark_repo::format::objects::Node, bool) + 'a;

fn walk(
    repo: &Repository,
    tree: &Id,
    prefix: &str,
    bucket: bool,
    current: bool,
    visit: &mut Visit<'_>,
) -> Result<(), RepoError> {
    for node in repo.load_tree(tree)?.nodes {
        if bucket && names::is_versions_dir(&node) {
            if let Some(sub) = node.subtree {
                walk(repo, &sub, prefix, bucket, false, visit)?;
            }
            continue;
        }
        let name = if bucket { names::original(&node) } else { node.name.as_str() };
        let path = format!("{prefix}{name}");
        match node.node_type {
            NodeType::Dir => {
                if let Some(sub) = node.subtree {
                    walk(repo, &sub, &format!("{path}/"), bucket, current, visit)?;
                }
            }
            NodeType::File | NodeType::Symlink => visit(&path, &node, current),
            NodeType::Other => {}
        }
    }
    Ok(())
}

/// The newest snapshot of `source` (a source name, a path or a bucket URL) taken at or before
/// `at`: what `restore --at TIME` restores.
pub fn snapshot_at(repo: &Repository, source: &str, at: Timestamp) -> Result<(Id, Snapshot), ObjectsError> {
    repo.snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.time <= at && matches_source(s, source))
        .ok_or_else(|| ObjectsError::NoSnapshotAt { source_name: source.to_string(), at })
}
