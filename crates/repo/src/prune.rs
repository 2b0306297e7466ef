//! `prune`: remove data no snapshot needs. Takes the exclusive lock.
//!
//! Plan: walk every snapshot to find the blobs in use; classify packs as used (keep), unused
//! (delete), partly used (repack when the unused share exceeds the threshold) and unindexed (left by
//! an interrupted backup: delete). Execute: copy the used blobs of repacked packs into new packs, write
//! new index files, delete the old index files, re-check right before deleting that no snapshot or
//! index file written meanwhile references a doomed pack, then delete packs.
//!
//! Anything that makes the picture uncertain aborts before the first delete: a listing error, an
//! unreadable snapshot or tree, a pack the index names but storage lacks.
//!
//! On storage with retention (S3 Object Lock), objects cannot be deleted before their retention
//! ends, so the plan asks first: a pack to delete or repack that is still retained is kept as it
//! is (and stays indexed), and reported in `packs_retained`; nothing is half-deleted. New index
//! files supersede every index file present, so an old one still retained stays harmlessly in
//! storage until a later prune can delete it. Deleting needs more than backing up: run prune with
//! its own credential (s3:DeleteObject and s3:DeleteObjectVersion), never given to backup clients.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tidemark_format::objects::{IndexPack, NodeType};
use tidemark_format::pack::PackWriter;
use tidemark_format::{Id, object};

use crate::index::{index_pack, list_packs, load_index_files, write_index};
use crate::lock::LockGuard;
use crate::progress::Progress;
use crate::repository::{INDEX, pack_key, random_bytes};
use crate::{RepoError, Repository, Result};

/// Prune settings.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Only compute and return the plan.
    pub dry_run: bool,
    /// Repack a partly used pack when more than this share of its bytes is unused.
    pub repack_threshold: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions { dry_run: false, repack_threshold: 0.2 }
    }
}

/// What prune will do or did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Packs deleted (wholly unused or unindexed).
    pub packs_deleted: Vec<Id>,
    /// Packs whose used blobs were copied into new packs, then deleted.
    pub packs_repacked: Vec<Id>,
    /// Packs kept.
    pub packs_kept: usize,
    /// Blobs in use.
    pub blobs_used: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes freed in storage.
    pub bytes_freed: u64,
    /// Index files replaced.
    pub index_files_replaced: usize,
    /// Stale locks removed.
    pub stale_locks_removed: usize,
    /// Packs kept back at the last re-check because something new referenced them.
    pub packs_spared: Vec<Id>,
    /// Packs prune would delete or repack but kept because storage still retains them (S3
    /// Object Lock); a later prune deletes them once their retention has ended.
    pub packs_retained: Vec<Id>,
    /// Old index files superseded but kept because storage still retains them.
    pub index_files_retained: usize,
}

/// Blobs reachable from some snapshots' trees.
pub fn used_blobs(repo: &Repository, trees: impl IntoIterator<Item = Id>) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = trees.into_iter().collect();
    while let Some(tree) = stack.pop() {
        if !used.insert(tree) {
            continue;
        }
        for node in repo.load_tree(&tree)?.nodes {
            used.extend(node.content);
            if node.node_type == NodeType::Dir
                && let Some(sub) = node.subtree
            {
                stack.push(sub);
            }
        }
    }
    Ok(used)
}

/// Blobs reachable from `trees`, reading trees through the index or, when the index no longer
/// lists them, straight from the doomed packs that hold them. A tree that cannot be read spares
/// every doomed pack (when in doubt, keep the data).
fn used_blobs_lenient(
    repo: &Repository,
    trees: Vec<Id>,
    doomed: &HashMap<Id, IndexPack>,
    spared_all: &mut Vec<Id>,
) -> HashSet<Id> {
    match used_blobs(&repo.fresh(), trees) {
        Ok(used) => used,
        Err(_) => {
            spared_all.extend(doomed.keys().copied());
            doomed.values().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect()
        }
    }
}

/// Every named object (`named/<namespace>/<name>`) with the data blobs its record lists in a
/// top-level `content` array. A record that cannot be read aborts: its data must not be pruned.
pub fn named_content(repo: &Repository) -> Result<Vec<(String, Vec<Id>)>> {
    let mut out = Vec::new();
    for entry in repo.storage().list(crate::named::NAMED)? {
        let Some(rest) = entry.key.strip_prefix(crate::named::NAMED) else { continue };
        let Some((namespace, name)) = rest.split_once('/') else { continue };
        let record: serde_json::Value = repo.get_named(namespace, name)?.ok_or_else(|| {
            RepoError::Invalid(format!("named object {rest} vanished while being read; run prune again"))
        })?;
        let ids = record
            .get("content")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        out.push((entry.key, ids));
    }
    Ok(out)
}

struct Plan {
    keep: Vec<IndexPack>,
    repack: Vec<(IndexPack, Vec<usize>)>,
    delete: Vec<(Id, u64)>,
    delete_index: HashMap<Id, IndexPack>,
    old_index: Vec<Id>,
    /// With retention: every index file present, superseded by the new ones.
    supersede: Vec<Id>,
    snapshots: HashSet<Id>,
    named: HashSet<String>,
}

impl Repository {
    /// Prune (or with `dry_run`, plan).
    pub fn prune(&self, opts: PruneOptions, progress: Arc<dyn Progress>) -> Result<PruneReport> {
        let lock = self.lock("prune", true)?;
        let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
        if !opts.dry_run {
            report.stale_locks_removed = self.unlock_stale()?;
        }
        let plan = self.plan_prune(&opts, &mut report, progress.as_ref())?;
        if opts.dry_run {
            return Ok(report);
        }
        let executed = self.execute_prune(plan, &lock, &mut report, progress.as_ref());
        // Packs and index files changed under this handle: whatever it cached is stale now,
        // whether prune finished or stopped halfway (a long-running daemon keeps the handle).
        self.refresh_index();
        executed?;
        lock.release()?;
        Ok(report)
    }

    fn plan_prune(&self, opts: &PruneOptions, report: &mut PruneReport, progress: &dyn Progress) -> Result<Plan> {
        progress.status("loading index");
        let files = load_index_files(self)?;
        let present = list_packs(self)?;
        progress.status("finding data in use");
        let snapshots = self.snapshots()?;
        let mut used = used_blobs(self, snapshots.iter().map(|(_, s)| s.tree))?;
        let named = named_content(self)?;
        used.extend(named.iter().flat_map(|(_, ids)| ids.iter().copied()));
        report.blobs_used = used.len() as u64;

        let missing: Vec<String> = files
            .iter()
            .flat_map(|(_, f)| &f.packs)
            .filter(|p| !present.contains_key(&p.id))
            .map(|p| pack_key(&p.id))
            .collect();
        if !missing.is_empty() {
            return Err(RepoError::Invalid(format!(
                "{} pack(s) named by the index are missing from storage (first: {}); run `tidemark check` — prune will not guess",
                missing.len(),
                missing[0]
            )));
        }

        let mut plan = Plan {
            keep: Vec::new(),
            repack: Vec::new(),
            delete: Vec::new(),
            delete_index: HashMap::new(),
            old_index: files.iter().map(|(id, _)| *id).collect(),
            supersede: Vec::new(),
            snapshots: snapshots.iter().map(|(id, _)| *id).collect(),
            named: named.into_iter().map(|(key, _)| key).collect(),
        };
        if self.storage().retention().is_some() {
            plan.supersede = self.list_ids(INDEX)?;
        }
        let now = SystemTime::now();
        // Whether storage still retains a pack: then it cannot be deleted, so it is kept whole.
        let retained = |id: &Id| -> Result<bool> {
            match self.storage().retention() {
                Some(r) => Ok(r.retained_until(&pack_key(id))?.is_some_and(|until| until > now)),
                None => Ok(false),
            }
        };
        let mut claimed: HashSet<Id> = HashSet::new();
        let mut indexed: HashSet<Id> = HashSet::new();
        for (_, file) in files {
            for pack in file.packs {
                if !indexed.insert(pack.id) {
                    continue;
                }
                // A blob counts as used in the first pack that holds it; later copies are garbage.
                let keep_idx: Vec<usize> = (0..pack.blobs.len())
                    .filter(|&i| used.contains(&pack.blobs[i].id) && claimed.insert(pack.blobs[i].id))
                    .collect();
                let total: u64 = pack.blobs.iter().map(|b| u64::from(b.length)).sum();
                let kept: u64 = keep_idx.iter().map(|&i| u64::from(pack.blobs[i].length)).sum();
                let whole = keep_idx.len() == pack.blobs.len()
                    || (!keep_idx.is_empty() && ((total - kept) as f64) <= opts.repack_threshold * total as f64);
                if !whole && retained(&pack.id)? {
                    report.packs_retained.push(pack.id);
                    report.packs_kept += 1;
                    plan.keep.push(pack);
                } else if keep_idx.is_empty() {
                    report.blobs_removed += pack.blobs.len() as u64;
                    report.packs_deleted.push(pack.id);
                    plan.delete.push((pack.id, pack.size));
                    plan.delete_index.insert(pack.id, pack);
                } else if keep_idx.len() == pack.blobs.len()
                    || ((total - kept) as f64) <= opts.repack_threshold * total as f64
                {
                    report.packs_kept += 1;
                    plan.keep.push(pack);
                } else {
                    report.blobs_removed += (pack.blobs.len() - keep_idx.len()) as u64;
                    report.packs_repacked.push(pack.id);
                    plan.repack.push((pack, keep_idx));
                }
            }
        }
        for (id, size) in &present {
            if !indexed.contains(id) && retained(id)? {
                report.packs_retained.push(*id);
            } else if !indexed.contains(id) {
                report.packs_deleted.push(*id);
                plan.delete.push((*id, *size));
            }
        }
        report.bytes_freed = plan.delete.iter().map(|p| p.1).sum::<u64>()
            + plan
                .repack
                .iter()
                .map(|(p, keep)| p.size - keep.iter().map(|&i| u64::from(p.blobs[i].length)).sum::<u64>())
                .sum::<u64>();
        report.index_files_replaced = plan.old_index.len();
        report.packs_retained.sort();
        Ok(plan)
    }

    fn execute_prune(
        &self,
        plan: Plan,
        lock: &LockGuard,
        report: &mut PruneReport,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut new_packs = plan.keep;
        // 1. Copy used blobs out of partly used packs (sealed bytes are bound to blob id and type,
        //    not to the pack, so they move as they are after verification).
        progress.set_total(plan.repack.iter().map(|(p, _)| p.size).sum(), plan.repack.len() as u64);
        let pack_size = self.config().pack_size as usize;
        let mut writer = PackWriter::with_capacity(pack_size);
        for (pack, keep) in &plan.repack {
            let bytes = self.storage().get(&pack_key(&pack.id))?;
            for &i in keep {
                let b = &pack.blobs[i];
                let sealed = bytes
                    .get(b.offset as usize..b.offset as usize + b.length as usize)
                    .ok_or_else(|| RepoError::Invalid(format!("pack {} is shorter than its index says", pack.id)))?;
                object::decode_blob(self.master_key(), b.blob_type.object_type(), &b.id, sealed)
                    .map_err(|e| RepoError::format(format!("repacking blob {} of pack {}", b.id, pack.id), e))?;
                writer.add(b.blob_type, b.id, sealed, b.raw_length);
                if writer.len() >= pack_size {
                    new_packs.push(self.upload_pack(std::mem::take(&mut writer), lock)?);
                }
            }
            progress.inc(pack.size, 1);
        }
        if !writer.is_empty() {
            new_packs.push(self.upload_pack(writer, lock)?);
        }

        // 2. New index files, then drop the old ones.
        let mut new_index = HashSet::new();
        // With retention, the first new index file supersedes every one present (some of which
        // may be retained and stay); without, the old ones are simply deleted below.
        let mut supersede = plan.supersede.clone();
        // Index files stay far below the format's 64 MiB object cap: at most ~50k blobs each.
        let mut batch: Vec<IndexPack> = Vec::new();
        let mut blobs = 0;
        for pack in new_packs {
            blobs += pack.blobs.len();
            batch.push(pack);
            if blobs >= 50_000 {
                lock.check()?;
                new_index.insert(write_index(self, std::mem::take(&mut batch), std::mem::take(&mut supersede))?);
                blobs = 0;
            }
        }
        if !batch.is_empty() || !supersede.is_empty() {
            lock.check()?;
            new_index.insert(write_index(self, batch, std::mem::take(&mut supersede))?);
        }
        // 3. Re-check, right before anything is deleted: an index file or snapshot written since the
        //    plan that needs a doomed pack spares it (and keeps it indexed).
        let mut doomed: HashMap<Id, u64> = plan.delete.iter().copied().collect();
        doomed.extend(plan.repack.iter().map(|(p, _)| (p.id, p.size)));
        let mut doomed_index: HashMap<Id, IndexPack> = plan.delete_index;
        doomed_index.extend(plan.repack.into_iter().map(|(p, _)| (p.id, p)));
        let mut spared: HashSet<Id> = HashSet::new();
        for (id, file) in load_index_files(self)? {
            if !new_index.contains(&id) && !plan.old_index.contains(&id) && !plan.supersede.contains(&id) {
                spared.extend(file.packs.iter().map(|p| p.id));
            }
        }
        let newer: Vec<Id> =
            self.snapshots()?.into_iter().filter(|(id, _)| !plan.snapshots.contains(id)).map(|(_, s)| s.tree).collect();
        let newer_named: HashSet<Id> = named_content(self)?
            .into_iter()
            .filter(|(key, _)| !plan.named.contains(key))
            .flat_map(|(_, ids)| ids)
            .collect();
        for (id, pack) in &doomed_index {
            if pack.blobs.iter().any(|b| newer_named.contains(&b.id)) {
                spared.insert(*id);
            }
        }
        if !newer.is_empty() {
            let needed = used_blobs_lenient(self, newer, &doomed_index, &mut report.packs_spared);
            for (id, pack) in &doomed_index {
                if pack.blobs.iter().any(|b| needed.contains(&b.id)) {
                    spared.insert(*id);
                }
            }
        }
        let keep_indexed: Vec<IndexPack> = spared.iter().filter_map(|id| doomed_index.get(id).cloned()).collect();
        if !keep_indexed.is_empty() {
            lock.check()?;
            write_index(self, keep_indexed, Vec::new())?;
        }
        doomed.retain(|id, _| {
            let keep = spared.contains(id);
            if keep {
                report.packs_spared.push(*id);
            }
            !keep
        });
        report.packs_spared.sort();
        report.packs_spared.dedup();
        let now = SystemTime::now();
        let old_index = if plan.supersede.is_empty() { &plan.old_index } else { &plan.supersede };
        for id in old_index {
            let key = format!("{INDEX}{id}");
            if let Some(r) = self.storage().retention()
                && r.retained_until(&key)?.is_some_and(|until| until > now)
            {
                report.index_files_retained += 1;
                continue;
            }
            lock.check()?;
            self.storage().delete(&key)?;
        }

        // 4. Delete.
        progress.set_total(doomed.values().sum(), doomed.len() as u64);
        for (id, size) in doomed {
            lock.check()?;
            self.storage().delete(&pack_key(&id))?;
            progress.inc(size, 1);
        }
        Ok(())
    }

    fn upload_pack(&self, writer: PackWriter, lock: &LockGuard) -> Result<IndexPack> {
        let (id, bytes, entries) = writer.finish(self.master_key(), &random_bytes());
        lock.check()?;
        self.storage().put(&pack_key(&id), &bytes)?;
        Ok(index_pack(id, bytes.len() as u64, &entries))
    }
}
