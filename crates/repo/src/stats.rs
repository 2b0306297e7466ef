//! `stats`: what the repository holds and how well it deduplicates and compresses.

use serde::Serialize;
use tidemark_format::objects::NodeType;

use crate::{Repository, Result};

/// Repository statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: usize,
    /// Files over all snapshots (counted per snapshot).
    pub total_files: u64,
    /// Bytes a restore of every snapshot would write.
    pub total_size: u64,
    /// Distinct blobs in the index.
    pub blobs: u64,
    /// Their plaintext bytes (deduplicated).
    pub raw_size: u64,
    /// Their bytes in packs (compressed and sealed).
    pub packed_size: u64,
    /// Packs.
    pub packs: u64,
    /// Bytes of all objects in storage.
    pub storage_size: u64,
    /// raw_size / packed_size.
    pub compression_ratio: f64,
    /// total_size / storage_size.
    pub space_saving_ratio: f64,
}

impl Repository {
    /// Compute statistics. Per-snapshot totals come from the summaries recorded at backup time
    /// (falling back to a tree walk for snapshots without one).
    pub fn stats(&self) -> Result<RepoStats> {
        let mut st = RepoStats::default();
        let snapshots = self.snapshots()?;
        st.snapshots = snapshots.len();
        for (_, s) in &snapshots {
            match &s.summary {
                Some(sum) if sum.total_files > 0 || sum.total_bytes > 0 => {
                    st.total_files += sum.total_files;
                    st.total_size += sum.total_bytes;
                }
                _ => {
                    let mut stack = vec![s.tree];
                    while let Some(t) = stack.pop() {
                        for n in self.load_tree(&t)?.nodes {
                            match n.node_type {
                                NodeType::File => {
                                    st.total_files += 1;
                                    st.total_size += n.size;
                                }
                                NodeType::Dir => stack.extend(n.subtree),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        let index = self.index()?;
        st.blobs = index.len() as u64;
        for (_, loc) in index.blobs() {
            st.raw_size += u64::from(loc.raw_length);
            st.packed_size += u64::from(loc.length);
        }
        st.packs = index.pack_ids().len() as u64;
        st.storage_size = self.storage().list("")?.iter().map(|e| e.size).sum();
        if st.packed_size > 0 {
            st.compression_ratio = st.raw_size as f64 / st.packed_size as f64;
        }
        if st.storage_size > 0 {
            st.space_saving_ratio = st.total_size as f64 / st.storage_size as f64;
        }
        Ok(st)
    }
}
