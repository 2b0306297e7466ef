//! `check`: structure (config, keys, index, packs present, every tree readable, every blob indexed)
//! and, with `read_data`, every pack read, hashed and every blob decrypted and verified.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tidemark_format::objects::{IndexFile, NodeType};
use tidemark_format::{Id, ObjectType, object};

use crate::index::{BlobLocation, MasterIndex, list_packs};
use crate::progress::Progress;
use crate::repository::{INDEX, LOCKS, pack_key};
use crate::{Repository, Result};

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read and verify every pack's content.
    pub read_data: bool,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckProblem {
    /// `missing-pack`, `corrupt-pack`, `pack-size`, `missing-blob`, `corrupt-tree`, `unreadable-snapshot`,
    /// `unreadable-index`.
    pub kind: String,
    /// The object concerned (`data/ab/ab12...`, `snapshots/...`, a blob id).
    pub object: String,
    /// What is wrong.
    pub detail: String,
    /// Snapshots that cannot be fully restored because of it.
    pub snapshots: Vec<Id>,
}

/// Result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Errors: data is damaged or missing.
    pub errors: Vec<CheckProblem>,
    /// Warnings: nothing lost (e.g. unreferenced packs that prune will remove).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs checked.
    pub packs: usize,
    /// Blobs checked.
    pub blobs: usize,
    /// Whether pack contents were read.
    pub read_data: bool,
}

impl CheckReport {
    /// No errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn problem(&mut self, kind: &str, object: String, detail: String) -> usize {
        self.errors.push(CheckProblem { kind: kind.into(), object, detail, snapshots: Vec::new() });
        self.errors.len() - 1
    }
}

/// A pack to read: id, size and the blobs the index places in it.
type PackToRead = (Id, u64, Vec<(Id, BlobLocation)>);
/// A damaged pack: id, what is wrong, the blobs that failed.
type DamagedPack = (Id, String, Vec<Id>);

/// Shared state of the tree walk: which blobs are bad and which problem explains them.
struct Walk<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    bad: HashMap<Id, usize>,
    tree_damage: HashMap<Id, Vec<usize>>,
    report: CheckReport,
}

impl Walk<'_> {
    /// Problems reachable from `tree`, memoized per tree id.
    fn tree(&mut self, tree: Id) -> Vec<usize> {
        if let Some(d) = self.tree_damage.get(&tree) {
            return d.clone();
        }
        let mut damage = Vec::new();
        if let Some(&p) = self.bad.get(&tree) {
            damage.push(p);
        } else if !self.index.contains(&tree) {
            let p = self.report.problem("missing-blob", tree.to_hex(), "tree blob is not in the index".into());
            self.bad.insert(tree, p);
            damage.push(p);
        } else {
            match self.repo.load_tree(&tree) {
                Err(e) => {
                    let p = self.report.problem("corrupt-tree", tree.to_hex(), e.to_string());
                    self.bad.insert(tree, p);
                    damage.push(p);
                }
                Ok(t) => {
                    for node in &t.nodes {
                        self.report.blobs += node.content.len();
                        for blob in &node.content {
                            if let Some(&p) = self.bad.get(blob) {
                                damage.push(p);
                            } else if !self.index.contains(blob) {
                                let p = self.report.problem(
                                    "missing-blob",
                                    blob.to_hex(),
                                    format!("data blob of {:?} is not in the index", node.name),
                                );
                                self.bad.insert(*blob, p);
                                damage.push(p);
                            }
                        }
                        if node.node_type == NodeType::Dir
                            && let Some(sub) = node.subtree
                        {
                            damage.extend(self.tree(sub));
                        }
                    }
                }
            }
        }
        damage.sort_unstable();
        damage.dedup();
        self.tree_damage.insert(tree, damage.clone());
        damage
    }
}

impl Repository {
    /// Check the repository. Takes a shared lock.
    pub fn check(&self, opts: CheckOptions, progress: Arc<dyn Progress>) -> Result<CheckReport> {
        let _lock = self.lock("check", false)?;
        let mut report = CheckReport { read_data: opts.read_data, ..Default::default() };

        // Index files, each on its own so one damaged file does not hide the rest.
        let mut files: Vec<(Id, IndexFile)> = Vec::new();
        for id in self.list_ids(INDEX)? {
            progress.status(&format!("index {}", id.short()));
            match self.load_json::<IndexFile>(ObjectType::Index, INDEX, &id) {
                Ok(f) => files.push((id, f)),
                Err(e) => {
                    report.problem("unreadable-index", format!("{INDEX}{id}"), e.to_string());
                }
            }
        }
        let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        files.retain(|(id, _)| !superseded.contains(id));
        // Packs: indexed vs present. A blob listed in several packs is judged by a present copy.
        let present = list_packs(self)?;
        let index = MasterIndex::from_files_preferring(files, Some(&present));
        let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for (id, loc) in index.blobs() {
            by_pack.entry(index.pack(loc.pack).id).or_default().push((*id, *loc));
        }
        let mut bad: HashMap<Id, usize> = HashMap::new();
        let mut readable = Vec::new();
        let mut seen = HashSet::new();
        for pack in index.packs() {
            if !seen.insert(pack.id) {
                continue;
            }
            let blobs = by_pack.remove(&pack.id).unwrap_or_default();
            match present.get(&pack.id) {
                None => {
                    let p = report.problem(
                        "missing-pack",
                        pack_key(&pack.id),
                        format!("pack holding {} blobs is missing from storage", blobs.len()),
                    );
                    bad.extend(blobs.iter().map(|(id, _)| (*id, p)));
                }
                Some(&size) if size != pack.size => {
                    let p = report.problem(
                        "pack-size",
                        pack_key(&pack.id),
                        format!("pack is {size} bytes in storage, the index says {}", pack.size),
                    );
                    bad.extend(blobs.iter().map(|(id, _)| (*id, p)));
                }
                Some(_) => readable.push((pack.id, pack.size, blobs)),
            }
        }
        report.packs = seen.len();
        for id in present.keys().filter(|id| !seen.contains(id)) {
            report.warnings.push(format!(
                "pack {} is not referenced by any index (left by an interrupted backup?); prune removes it",
                pack_key(id)
            ));
        }

        if opts.read_data {
            progress.set_total(readable.iter().map(|p| p.1).sum(), readable.len() as u64);
            for (pack, detail, blobs) in self.read_packs(readable, progress.as_ref()) {
                let p = report.problem("corrupt-pack", pack_key(&pack), detail);
                bad.extend(blobs.into_iter().map(|id| (id, p)));
            }
        }

        // Snapshots and trees.
        let mut walk = Walk { repo: self, index: &index, bad, tree_damage: HashMap::new(), report };
        for id in self.list_ids(crate::repository::SNAPSHOTS)? {
            match self.load_snapshot(&id) {
                Err(e) => {
                    walk.report.problem("unreadable-snapshot", format!("snapshots/{id}"), e.to_string());
                }
                Ok(s) => {
                    walk.report.snapshots += 1;
                    progress.status(&format!("snapshot {}", id.short()));
                    for p in walk.tree(s.tree) {
                        walk.report.errors[p].snapshots.push(id);
                    }
                }
            }
        }
        let mut report = walk.report;
        // Named records (WAL segments...): each must open, and every blob it lists must be indexed.
        for entry in self.storage().list(crate::named::NAMED)? {
            let Some((namespace, name)) =
                entry.key.strip_prefix(crate::named::NAMED).and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            match self.get_named::<serde_json::Value>(namespace, name) {
                Err(e) => {
                    report.problem("unreadable-named", entry.key.clone(), e.to_string());
                }
                Ok(record) => {
                    let ids: Vec<Id> = record
                        .as_ref()
                        .and_then(|r| r.get("content"))
                        .and_then(|c| c.as_array())
                        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                        .unwrap_or_default();
                    let missing = ids.iter().filter(|id| !index.contains(id) || walk.bad.contains_key(id)).count();
                    if missing > 0 {
                        report.problem(
                            "missing-blob",
                            entry.key.clone(),
                            format!("{missing} of {} data blobs of this record are missing or damaged", ids.len()),
                        );
                    }
                }
            }
        }
        for (id, lock) in self.list_locks()? {
            if let Ok(l) = lock
                && crate::is_stale(
                    &l,
                    jiff::Timestamp::now(),
                    self.lock_options().lifetime,
                    &crate::repository::whoami().0,
                )
            {
                report
                    .warnings
                    .push(format!("stale lock {LOCKS}{id} ({} pid {}); `unlock` removes it", l.operation, l.pid));
            }
        }
        for e in &mut report.errors {
            e.snapshots.sort();
            e.snapshots.dedup();
        }
        Ok(report)
    }

    /// Read packs on all cores; returns the damaged ones with the blobs that failed.
    fn read_packs(&self, packs: Vec<PackToRead>, progress: &dyn Progress) -> Vec<DamagedPack> {
        let queue = Mutex::new(packs.into_iter());
        let damaged = Mutex::new(Vec::new());
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let Some((pack, size, blobs)) = next else { break };
                        if let Some(d) = self.verify_pack(&pack, &blobs) {
                            damaged.lock().unwrap_or_else(|e| e.into_inner()).push(d);
                        }
                        progress.inc(size, 1);
                    }
                });
            }
        });
        damaged.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn verify_pack(&self, pack: &Id, blobs: &[(Id, BlobLocation)]) -> Option<DamagedPack> {
        let all = || blobs.iter().map(|b| b.0).collect::<Vec<_>>();
        let bytes = match self.storage().get(&pack_key(pack)) {
            Ok(b) => b,
            Err(e) => return Some((*pack, format!("cannot read: {e}"), all())),
        };
        let hash_ok = Id::hash(&bytes) == *pack;
        let header_error = match tidemark_format::pack::read_header(self.master_key(), &bytes, bytes.len() as u64) {
            Ok(tidemark_format::pack::HeaderRead::Entries(_)) => None,
            Ok(tidemark_format::pack::HeaderRead::NeedMore(n)) => Some(format!("header needs {n} bytes")),
            Err(e) => Some(e.to_string()),
        };
        let mut failed = Vec::new();
        let mut first_error = None;
        for (id, loc) in blobs {
            let range = loc.offset as usize..loc.offset as usize + loc.length as usize;
            let result = match bytes.get(range) {
                None => Err("blob lies beyond the end of the pack".to_string()),
                Some(sealed) => object::decode_blob(self.master_key(), loc.blob_type.object_type(), id, sealed)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
                failed.push(*id);
            }
        }
        if hash_ok && failed.is_empty() && header_error.is_none() {
            return None;
        }
        let detail = match (first_error, header_error) {
            (Some(e), _) => format!("{} of {} blobs fail verification (first: {e})", failed.len(), blobs.len()),
            (None, Some(h)) => format!("pack header unreadable ({h}); all indexed blobs still verify"),
            (None, None) => "content does not match its name (hash mismatch), all blobs still verify".into(),
        };
        Some((*pack, detail, failed))
    }
}
