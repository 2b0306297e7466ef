//! The in-memory master index: where every blob lives.

use std::collections::{HashMap, HashSet};

use tidemark_format::objects::{IndexBlob, IndexFile, IndexPack};
use tidemark_format::pack::BlobType;
use tidemark_format::{Id, ObjectType};

use crate::repository::{DATA, INDEX};
use crate::{Repository, Result};

/// A pack known to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Pack id.
    pub id: Id,
    /// Size in bytes.
    pub size: u64,
}

/// Where one blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in [`MasterIndex::packs`].
    pub pack: u32,
    /// Data or tree.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u64,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// All blobs of all live index files.
#[derive(Debug, Default)]
pub struct MasterIndex {
    packs: Vec<PackInfo>,
    blobs: HashMap<Id, BlobLocation>,
    files: Vec<Id>,
}

impl MasterIndex {
    /// Load every index file that no other index file supersedes.
    pub fn load(repo: &Repository) -> Result<MasterIndex> {
        Ok(Self::from_files(load_index_files(repo)?))
    }

    /// Build from already loaded (live) index files.
    pub fn from_files(files: Vec<(Id, IndexFile)>) -> MasterIndex {
        Self::from_files_preferring(files, None)
    }

    /// Build from index files; where a blob is listed in several packs, prefer one that is in
    /// `present` (a blob stored again after its first pack went missing must be read from the copy).
    pub fn from_files_preferring(files: Vec<(Id, IndexFile)>, present: Option<&HashMap<Id, u64>>) -> MasterIndex {
        let mut ix = MasterIndex::default();
        for (id, file) in files {
            ix.files.push(id);
            for pack in &file.packs {
                ix.add_pack(pack, present);
            }
        }
        ix
    }

    fn add_pack(&mut self, pack: &IndexPack, present: Option<&HashMap<Id, u64>>) {
        let n = self.packs.len() as u32;
        self.packs.push(PackInfo { id: pack.id, size: pack.size });
        let here = present.is_none_or(|p| p.contains_key(&pack.id));
        for b in &pack.blobs {
            let loc = BlobLocation {
                pack: n,
                blob_type: b.blob_type,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            };
            match self.blobs.entry(b.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let old_here = present.is_none_or(|p| p.contains_key(&self.packs[o.get().pack as usize].id));
                    if here && !old_here {
                        o.insert(loc);
                    }
                }
            }
        }
    }

    /// Keep only blobs whose pack is in `present` with the recorded size (a pack that vanished from
    /// storage must not be deduplicated against).
    pub fn retain_present(&mut self, present: &HashMap<Id, u64>) {
        let ok: Vec<bool> = self.packs.iter().map(|p| present.get(&p.id) == Some(&p.size)).collect();
        self.blobs.retain(|_, loc| ok[loc.pack as usize]);
    }

    /// Location of a blob.
    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        self.blobs.get(id).copied()
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Pack by position.
    pub fn pack(&self, n: u32) -> PackInfo {
        self.packs[n as usize]
    }

    /// All packs (may repeat when two index files list the same pack).
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// All blobs.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLocation)> {
        self.blobs.iter()
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// No blobs.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Ids of the live index files it was loaded from.
    pub fn files(&self) -> &[Id] {
        &self.files
    }

    /// Ids of the distinct packs it names.
    pub fn pack_ids(&self) -> HashSet<Id> {
        self.packs.iter().map(|p| p.id).collect()
    }
}

/// Load all live index files with their ids (superseded ones dropped).
pub fn load_index_files(repo: &Repository) -> Result<Vec<(Id, IndexFile)>> {
    let mut files = Vec::new();
    for id in repo.list_ids(INDEX)? {
        let file: IndexFile = repo.load_json(ObjectType::Index, INDEX, &id)?;
        files.push((id, file));
    }
    let superseded: HashSet<Id> = files.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
    files.retain(|(id, _)| !superseded.contains(id));
    Ok(files)
}

/// Every pack in storage with its size.
pub fn list_packs(repo: &Repository) -> Result<HashMap<Id, u64>> {
    Ok(repo
        .storage()
        .list(DATA)?
        .into_iter()
        .filter_map(|e| e.key.rsplit('/').next().and_then(|n| n.parse().ok()).map(|id| (id, e.size)))
        .collect())
}

/// Turn pack header entries into an index record.
pub fn index_pack(id: Id, size: u64, entries: &[tidemark_format::pack::PackEntry]) -> IndexPack {
    IndexPack {
        id,
        size,
        blobs: entries
            .iter()
            .map(|e| IndexBlob {
                id: e.id,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            })
            .collect(),
    }
}

/// Write one index file listing `packs`, superseding `supersedes`.
pub fn write_index(repo: &Repository, packs: Vec<IndexPack>, supersedes: Vec<Id>) -> Result<Id> {
    repo.save_json(ObjectType::Index, INDEX, &IndexFile { supersedes, packs })
}
