//! Listing, finding and removing snapshots.

use tidemark_format::objects::Snapshot;
use tidemark_format::{Id, ObjectType};

use crate::repository::SNAPSHOTS;
use crate::{RepoError, Repository, Result};

/// Which snapshots an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// Only these hosts.
    pub hosts: Vec<String>,
    /// Only snapshots carrying all of these tags.
    pub tags: Vec<String>,
    /// Only snapshots of exactly these paths (any order).
    pub paths: Vec<String>,
    /// Only this source name.
    pub source: Option<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && (self.paths.is_empty() || {
                let mut a = self.paths.clone();
                let mut b = s.paths.clone();
                a.sort();
                b.sort();
                a == b
            })
            && (self.source.is_none() || self.source == s.source)
    }
}

impl Repository {
    /// Every snapshot, oldest first. A snapshot that fails authentication is an error: a forged or
    /// damaged snapshot must never be silently skipped or trusted.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        for id in self.list_ids(SNAPSHOTS)? {
            out.push((id, self.load_snapshot(&id)?));
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// One snapshot by full id.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        self.load_json(ObjectType::Snapshot, SNAPSHOTS, id)
    }

    /// Resolve `latest`, a full id or a unique id prefix, among snapshots passing `filter`.
    pub fn find_snapshot(&self, reference: &str, filter: &SnapshotFilter) -> Result<(Id, Snapshot)> {
        if reference == "latest" {
            return self
                .snapshots()?
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s))
                .ok_or_else(|| RepoError::SnapshotNotFound(reference.into()));
        }
        let reference_lc = reference.to_ascii_lowercase();
        let ids: Vec<Id> =
            self.list_ids(SNAPSHOTS)?.into_iter().filter(|id| id.to_hex().starts_with(&reference_lc)).collect();
        match ids.as_slice() {
            [] => Err(RepoError::SnapshotNotFound(reference.into())),
            [id] => Ok((*id, self.load_snapshot(id)?)),
            _ => Err(RepoError::AmbiguousSnapshot(reference.into())),
        }
    }

    /// Delete a snapshot object (its data stays until prune).
    pub fn remove_snapshot(&self, id: &Id) -> Result<()> {
        self.storage().delete(&format!("{SNAPSHOTS}{id}"))?;
        Ok(())
    }
}
