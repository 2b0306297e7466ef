//! `copy`: snapshots and everything they need into a second repository (off-site copies).
//!
//! Both repositories must share the chunk-id key and chunker parameters (the target is created with
//! `init --copy-chunker-params-from`), so blob ids agree and only what the target lacks is sent.
//! Each snapshot is copied under its own archiver: packs, then index, then the snapshot, so an
//! interrupted copy resumes by skipping snapshots already present and blobs already indexed. After
//! each snapshot the newly written blobs are read back from the target and verified.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use tidemark_format::Id;
use tidemark_format::objects::{NodeType, Snapshot};
use tidemark_format::pack::BlobType;

use crate::progress::Progress;
use crate::{RepoError, Repository, Result};

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots copied: (source id, target id).
    pub copied: Vec<(Id, Id)>,
    /// Source snapshots the target already had.
    pub already_present: Vec<Id>,
    /// Blobs written to the target.
    pub blobs_copied: u64,
    /// Their plaintext bytes.
    pub bytes_copied: u64,
}

/// Whether two snapshots are the same backup (a copy keeps time, tree, host and paths).
fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    a.time == b.time && a.tree == b.tree && a.hostname == b.hostname && a.paths == b.paths
}

impl Repository {
    /// Copy `snapshots` (of this repository) into `target`.
    pub fn copy_to(
        &self,
        target: &Repository,
        snapshots: &[(Id, Snapshot)],
        progress: Arc<dyn Progress>,
    ) -> Result<CopyReport> {
        if self.master_key().id != target.master_key().id || self.config().chunker != target.config().chunker {
            return Err(RepoError::Invalid(format!(
                "{} does not share chunker parameters with {}; create it with `tidemark -r TARGET init --from-repo {} --copy-chunker-params`",
                target.storage().location(),
                self.storage().location(),
                self.storage().location()
            )));
        }
        let _lock = self.lock("copy", false)?;
        let existing = target.snapshots()?;
        let mut report = CopyReport::default();
        for (src_id, snap) in snapshots {
            if existing.iter().any(|(_, t)| same_snapshot(t, snap)) {
                report.already_present.push(*src_id);
                continue;
            }
            progress.status(&format!("copying snapshot {}", src_id.short()));
            let archiver = target.archiver("copy", progress.clone())?;
            let mut written = Vec::new();
            let mut seen = HashSet::new();
            let mut stack = vec![snap.tree];
            while let Some(tree_id) = stack.pop() {
                if !seen.insert(tree_id) {
                    continue;
                }
                let raw = self.read_blob(BlobType::Tree, &tree_id)?;
                let tree: tidemark_format::objects::Tree = serde_json::from_slice(&raw).map_err(|e| {
                    RepoError::format(
                        format!("tree {tree_id}"),
                        tidemark_format::FormatError::Json { what: "tree", source: e },
                    )
                })?;
                if !archiver.has_blob(&tree_id) {
                    report.bytes_copied += raw.len() as u64;
                    archiver.save_blob(BlobType::Tree, raw)?;
                    written.push((BlobType::Tree, tree_id));
                }
                for node in tree.nodes {
                    for blob in node.content {
                        if seen.insert(blob) && !archiver.has_blob(&blob) {
                            let data = self.read_blob(BlobType::Data, &blob)?;
                            report.bytes_copied += data.len() as u64;
                            progress.inc(data.len() as u64, 0);
                            archiver.save_blob(BlobType::Data, data)?;
                            written.push((BlobType::Data, blob));
                        }
                    }
                    if node.node_type == NodeType::Dir
                        && let Some(sub) = node.subtree
                    {
                        stack.push(sub);
                    }
                }
            }
            let mut copy = snap.clone();
            copy.extra.insert("copied_from".into(), src_id.to_hex());
            let new_id = archiver.commit_unchanged(&copy)?;
            // Verify after writing: a fresh handle reads every new blob back from the target.
            let fresh = target.fresh();
            for (ty, id) in &written {
                fresh.read_blob(*ty, id)?;
            }
            report.blobs_copied += written.len() as u64;
            report.copied.push((*src_id, new_id));
            progress.inc(0, 1);
        }
        Ok(report)
    }
}
