//! Storing new data: chunk, deduplicate, compress, seal, verify, pack, upload, index, commit.
//!
//! The calling threads chunk and hash; a pool of workers compresses, seals, verifies and packs.
//! Write order is packs, then index, then snapshot, each acknowledged by storage before the next.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use tidemark_format::chunker::StreamChunker;
use tidemark_format::objects::{IndexPack, Snapshot, Tree};
use tidemark_format::pack::{BlobType, PackWriter};
use tidemark_format::{Id, ObjectType, object};

use crate::index::{MasterIndex, index_pack, list_packs, load_index_files, write_index};
use crate::lock::LockGuard;
use crate::progress::Progress;
use crate::repository::{SNAPSHOTS, pack_key, random_bytes};
use crate::{RepoError, Repository, Result};

/// Blobs per index file before it is written out mid-backup.
const INDEX_FLUSH_BLOBS: usize = 20_000;

/// Content of a stored stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedContent {
    /// Data blob ids, in order.
    pub content: Vec<Id>,
    /// Total bytes read.
    pub size: u64,
}

/// Counters of what a backup added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    /// New blobs.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub data_added: u64,
    /// Their bytes in packs.
    pub data_added_packed: u64,
}

struct Job {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

struct Shared {
    repo: Repository,
    /// What the repository held when the archiver started (present packs only); shared with
    /// [`Archiver::reader`] handles, so a backup holds one copy of it.
    index: Arc<MasterIndex>,
    added: Mutex<HashSet<Id>>,
    /// Set when the archiver commits: workers then upload their partly filled packs.
    committing: AtomicBool,
    pending: Mutex<Vec<IndexPack>>,
    written_index: Mutex<Vec<Id>>,
    error: Mutex<Option<RepoError>>,
    blobs_added: AtomicU64,
    data_added: AtomicU64,
    data_added_packed: AtomicU64,
    /// Held from the start; taken out only by [`Archiver::finish_keeping_lock`].
    lock: Option<LockGuard>,
    spare: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    /// Chunker buffers for reuse: [`ChunkerBuffers`].
    chunker_buffers: Mutex<ChunkerBuffers>,
    progress: Arc<dyn Progress>,
    /// When the archiver started: objects it writes are retained from then on, at least.
    started: std::time::SystemTime,
}

/// Chunker buffers kept between [`Archiver::save_reader`] calls, so that chunking many objects
/// neither allocates nor page-faults a fresh buffer each time.
///
/// A buffer grows with the object it chunks, up to the largest chunk plus read-ahead (9 MiB with
/// the default parameters). Sources call `save_reader` from many threads (a bucket backup from one
/// per concurrent fetch), so keeping every grown buffer would let memory creep up to
/// `concurrency x 9 MiB` as large objects come by, one thread at a time. The pool keeps at most
/// as many large buffers as the archiver has pack workers (those are what chunking can keep
/// busy at once) and frees the others; small ones cost little and are all kept.
struct ChunkerBuffers {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    max_large: usize,
}

impl ChunkerBuffers {
    /// Buffers above this capacity count as large.
    const SMALL: usize = 1024 * 1024;

    fn new(max_large: usize) -> Self {
        ChunkerBuffers { small: Vec::new(), large: Vec::new(), max_large: max_large.max(1) }
    }

    /// A buffer to chunk with: a large one first (it will not need to grow), else a small one.
    fn take(&mut self) -> Vec<u8> {
        self.large.pop().or_else(|| self.small.pop()).unwrap_or_default()
    }

    fn give_back(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= Self::SMALL {
            self.small.push(buffer);
        } else if self.large.len() < self.max_large {
            self.large.push(buffer);
        }
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.small.iter().chain(&self.large).map(Vec::capacity).sum()
    }
}

/// A backup in progress: holds a shared lock until [`Archiver::commit`] or drop.
pub struct Archiver {
    shared: Arc<Shared>,
    tx: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver").finish_non_exhaustive()
    }
}

fn lock_or<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Repository {
    /// Start a backup: take a shared lock and load the index, keeping only blobs whose packs are
    /// present in storage (never deduplicate against data that went missing).
    pub fn archiver(&self, operation: &str, progress: Arc<dyn Progress>) -> Result<Archiver> {
        let lock = self.lock(operation, false)?;
        // Where a blob is in several packs, the copy in a present pack is the one to count on.
        let present = list_packs(self)?;
        let mut index = MasterIndex::from_files_preferring(load_index_files(self)?, Some(&present));
        index.retain_present(&present);
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8);
        self.start_archiver(lock, index, threads, progress)
    }

    /// Start an archiver that deduplicates only against what it stores itself, not against the
    /// repository: it takes the shared lock but loads no index file and lists no pack, so it
    /// starts in the same time however large the repository has grown.
    ///
    /// For data that almost never shares chunks with anything stored before, written by a process
    /// per item: PostgreSQL's `archive_command` runs once per WAL segment, and a segment's chunks
    /// are new WAL. A chunk that does exist already is stored again in the new pack; that costs
    /// space, never correctness (the index prefers a copy in a present pack, and prune keeps one
    /// copy of a blob and treats the others as garbage). Callers that may store the same bytes
    /// twice compare first with [`Repository::content_ids`].
    ///
    /// It packs with one worker thread while the calling thread chunks and hashes: an input that
    /// compresses to less than the pack size lands in one pack (one upload), and a 16 MiB WAL
    /// segment was stored as fast as with two workers, leaving the other core to the database.
    pub fn archiver_without_index(&self, operation: &str, progress: Arc<dyn Progress>) -> Result<Archiver> {
        let lock = self.lock(operation, false)?;
        self.start_archiver(lock, MasterIndex::default(), 1, progress)
    }

    /// What [`Archiver::save_reader`] would return for `reader` (the same chunks, the same ids),
    /// computed without storing or locking anything: to compare bytes with content stored before.
    pub fn content_ids(&self, reader: impl Read) -> Result<SavedContent> {
        let mut chunker = StreamChunker::new(reader, self.config().chunker);
        let mut buf = Vec::new();
        let mut saved = SavedContent::default();
        while chunker.next_chunk(&mut buf).map_err(RepoError::SourceRead)? {
            saved.size += buf.len() as u64;
            saved.content.push(self.master_key().chunk_id(&buf));
        }
        Ok(saved)
    }

    fn start_archiver(
        &self,
        lock: LockGuard,
        index: MasterIndex,
        threads: usize,
        progress: Arc<dyn Progress>,
    ) -> Result<Archiver> {
        let (tx, rx) = bounded::<Job>(threads * 2);
        let spare = bounded(threads * 2 + 2);
        let shared = Arc::new(Shared {
            repo: self.clone(),
            index: Arc::new(index),
            added: Mutex::new(HashSet::new()),
            committing: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            written_index: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            blobs_added: AtomicU64::new(0),
            data_added: AtomicU64::new(0),
            data_added_packed: AtomicU64::new(0),
            lock: Some(lock),
            spare,
            chunker_buffers: Mutex::new(ChunkerBuffers::new(threads)),
            progress,
            started: std::time::SystemTime::now(),
        });
        let mut workers = Vec::new();
        for n in 0..threads {
            let (s, rx) = (shared.clone(), rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("tidemark-pack-{n}"))
                .spawn(move || worker(&s, &rx))
                .map_err(|e| RepoError::Invalid(format!("cannot start worker thread: {e}")))?;
            workers.push(t);
        }
        Ok(Archiver { shared, tx: Some(tx), workers })
    }
}

/// A worker's own packs: blobs are sealed straight into them, so workers never contend for a pack
/// and no blob is copied after sealing.
struct WorkerPacks {
    data: PackWriter,
    tree: PackWriter,
}

fn worker(s: &Shared, rx: &Receiver<Job>) {
    let pack_size = s.repo.config().pack_size as usize;
    let mut packs =
        WorkerPacks { data: PackWriter::with_capacity(pack_size + pack_size / 8), tree: PackWriter::default() };
    for job in rx {
        if lock_or(&s.error).is_some() {
            continue;
        }
        if let Err(e) = s.store(&mut packs, job.blob_type, &job.id, &job.data) {
            s.fail(e);
        }
        s.recycle(job.data);
    }
    // The channel closed: on commit, upload what this worker still holds.
    if s.committing.load(Ordering::SeqCst) && lock_or(&s.error).is_none() {
        for pack in [packs.data, packs.tree] {
            if let Err(e) = s.upload(pack).map(drop) {
                s.fail(e);
                break;
            }
        }
    }
}

impl Shared {
    fn check_lock(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.check(),
            None => Err(RepoError::LockLost("the archiver handed its lock on".into())),
        }
    }

    fn fail(&self, e: RepoError) {
        let mut slot = lock_or(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take_error(&self) -> Result<()> {
        match lock_or(&self.error).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Compress, verify, seal into this worker's pack; upload it when full.
    fn store(&self, packs: &mut WorkerPacks, blob_type: BlobType, id: &Id, data: &[u8]) -> Result<()> {
        let key = self.repo.master_key();
        let level = self.repo.config().compression_level;
        let ty = blob_type.object_type();
        let packer = match blob_type {
            BlobType::Data => &mut packs.data,
            BlobType::Tree => &mut packs.tree,
        };
        // Compressed payloads are decompressed and compared before sealing (see encode_verified).
        let sealed_len = packer
            .add_with(blob_type, *id, data.len() as u32, |buf| {
                object::encode_verified_into(key, ty, id, data, &random_bytes(), level, buf)
            })
            .map_err(|e| RepoError::format(format!("verifying new {ty} {id} before upload"), e))?;
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.data_added.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.data_added_packed.fetch_add(u64::from(sealed_len), Ordering::Relaxed);
        if packer.len() as u64 >= self.repo.config().pack_size {
            let full = std::mem::take(packer);
            *packer = PackWriter::reuse(self.upload(full)?);
        }
        Ok(())
    }

    /// Upload a pack and queue its index entry; returns the pack's buffer for reuse.
    fn upload(&self, pack: PackWriter) -> Result<Vec<u8>> {
        if pack.is_empty() {
            return Ok(Vec::new());
        }
        let (id, packed, entries) = pack.finish_aligned(self.repo.master_key(), &random_bytes());
        let bytes = packed.as_slice();
        self.check_lock()?;
        self.repo.storage().put(&pack_key(&id), bytes)?;
        let flush = {
            let mut pending = lock_or(&self.pending);
            pending.push(index_pack(id, bytes.len() as u64, &entries));
            pending.iter().map(|p| p.blobs.len()).sum::<usize>() >= INDEX_FLUSH_BLOBS
        };
        if flush {
            self.flush_index()?;
        }
        Ok(packed.into_buffer())
    }

    fn flush_index(&self) -> Result<()> {
        let packs = std::mem::take(&mut *lock_or(&self.pending));
        if packs.is_empty() {
            return Ok(());
        }
        self.check_lock()?;
        let id = write_index(&self.repo, packs, Vec::new())?;
        lock_or(&self.written_index).push(id);
        Ok(())
    }

    /// Keep a chunk buffer for reuse (saves page faults), unless it grew large (bounded memory).
    fn recycle(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= 2 * 1024 * 1024 {
            buf.clear();
            let _ = self.spare.0.try_send(buf);
        }
    }

    fn is_new(&self, id: &Id) -> bool {
        !self.index.contains(id) && lock_or(&self.added).insert(*id)
    }
}

impl Archiver {
    /// Chunk and store everything `reader` yields; returns the content list. Safe to call from
    /// several threads at once.
    pub fn save_reader(&self, reader: impl Read) -> Result<SavedContent> {
        let s = &self.shared;
        let buffer = lock_or(&s.chunker_buffers).take();
        let mut chunker = StreamChunker::with_buffer(reader, s.repo.config().chunker, buffer);
        let mut buf = s.spare.1.try_recv().unwrap_or_default();
        let mut saved = SavedContent::default();
        loop {
            let more = chunker.next_chunk(&mut buf).map_err(RepoError::SourceRead)?;
            if !more {
                break;
            }
            let id = s.repo.master_key().chunk_id(&buf);
            saved.size += buf.len() as u64;
            saved.content.push(id);
            s.progress.inc(buf.len() as u64, 0);
            if s.is_new(&id) {
                let data = std::mem::replace(&mut buf, s.spare.1.try_recv().unwrap_or_default());
                self.send(Job { blob_type: BlobType::Data, id, data })?;
            }
        }
        s.recycle(buf);
        lock_or(&s.chunker_buffers).give_back(chunker.into_buffer());
        s.take_error_peek()?;
        Ok(saved)
    }

    /// Store a tree; returns its id.
    pub fn save_tree(&self, tree: &Tree) -> Result<Id> {
        let s = &self.shared;
        let json = serde_json::to_vec(tree).expect("trees serialize");
        let id = s.repo.master_key().chunk_id(&json);
        if s.is_new(&id) {
            self.send(Job { blob_type: BlobType::Tree, id, data: json })?;
        }
        Ok(id)
    }

    /// Whether a blob is available for deduplication (indexed in a present pack, or added now).
    /// Sources reuse a parent's unchanged content only when every blob passes this.
    pub fn has_blob(&self, id: &Id) -> bool {
        self.shared.index.contains(id) || lock_or(&self.shared.added).contains(id)
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.shared.repo
    }

    /// A handle that reads what the repository held when this archiver started (a parent
    /// snapshot's trees, say) through the archiver's own index: one copy of the index in memory
    /// instead of two. It does not see what this archiver adds.
    pub fn reader(&self) -> Repository {
        self.shared.repo.fresh().with_cached_index(self.shared.index.clone())
    }

    /// Fails when the lock was lost; sources may call it between files.
    pub fn check_lock(&self) -> Result<()> {
        self.shared.check_lock()
    }

    /// What was added so far (complete after the workers drained, i.e. in `commit`).
    pub fn stats(&self) -> ArchiverStats {
        let s = &self.shared;
        ArchiverStats {
            blobs_added: s.blobs_added.load(Ordering::Relaxed),
            data_added: s.data_added.load(Ordering::Relaxed),
            data_added_packed: s.data_added_packed.load(Ordering::Relaxed),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.shared.take_error_peek()?;
        let tx = self.tx.as_ref().ok_or(RepoError::Interrupted)?;
        tx.send(job).map_err(|_| RepoError::Interrupted)
    }

    fn drain(&mut self) -> Result<()> {
        self.tx.take();
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                return Err(RepoError::Invalid("a pack worker panicked".into()));
            }
        }
        self.shared.take_error()
    }

    /// Finish: upload the last packs, write the index, then (lock still held) the snapshot.
    /// The snapshot's summary gets the blob counters filled in.
    pub fn commit(mut self, mut snapshot: Snapshot) -> Result<(Id, Snapshot)> {
        self.finish()?;
        let stats = self.stats();
        let summary = snapshot.summary.get_or_insert_with(Default::default);
        summary.blobs_added = stats.blobs_added;
        summary.data_added = stats.data_added;
        summary.data_added_packed = stats.data_added_packed;
        summary.backup_end = Some(jiff::Timestamp::now());
        self.save_snapshot(&snapshot).map(|id| (id, snapshot))
    }

    /// Like [`Archiver::commit`] but stores the snapshot exactly as given (copies between
    /// repositories keep the original summary).
    pub fn commit_unchanged(mut self, snapshot: &Snapshot) -> Result<Id> {
        self.finish()?;
        self.save_snapshot(snapshot)
    }

    /// Finish without a snapshot: every blob stored so far is in packs and indexed when this
    /// returns (for sources that record their data in named objects, such as WAL segments).
    pub fn finish_without_snapshot(mut self) -> Result<ArchiverStats> {
        self.finish()?;
        self.shared.check_lock()?;
        self.shared.repo.refresh_index();
        Ok(self.stats())
    }

    /// [`Archiver::finish_without_snapshot`], handing over the shared lock instead of releasing
    /// it: the caller records what it stored (a named object listing the blobs) while prune
    /// still cannot start, then drops or releases the lock. Without this, a prune starting between
    /// the index and the record would see the new blobs as unused.
    pub fn finish_keeping_lock(mut self) -> Result<(ArchiverStats, LockGuard)> {
        self.finish()?;
        self.shared.check_lock()?;
        self.shared.repo.refresh_index();
        let stats = self.stats();
        // The workers are joined: this archiver holds the only reference to the shared state.
        let shared = Arc::get_mut(&mut self.shared)
            .ok_or_else(|| RepoError::Invalid("archiver state still shared after its workers ended".into()))?;
        let lock = shared.lock.take().ok_or_else(|| RepoError::LockLost("the archiver has no lock".into()))?;
        Ok((stats, lock))
    }

    /// Store a blob whose plaintext is already known (copy, repair); returns its id.
    pub fn save_blob(&self, blob_type: BlobType, data: Vec<u8>) -> Result<Id> {
        let id = self.shared.repo.master_key().chunk_id(&data);
        if self.shared.is_new(&id) {
            self.send(Job { blob_type, id, data })?;
        }
        Ok(id)
    }

    /// Drain the workers, upload the last packs, write the index.
    fn finish(&mut self) -> Result<()> {
        self.shared.committing.store(true, Ordering::SeqCst);
        self.drain()?;
        self.shared.flush_index()
    }

    fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        // Every object the snapshot needs is acknowledged; make sure nobody pruned under us.
        self.shared.check_lock()?;
        self.verify_tree_reachable(&snapshot.tree)?;
        let id = self.shared.repo.save_json(ObjectType::Snapshot, SNAPSHOTS, snapshot)?;
        self.shared.repo.refresh_index();
        // Object Lock: data the new snapshot reuses stays retained as long as fresh data.
        if self.shared.repo.storage().retention().is_some() {
            self.shared.progress.status("extending retention (Object Lock) on the data in use");
            // Whatever this archiver wrote is retained from its start on already.
            let report = self.shared.repo.extend_retention(&[snapshot.tree], self.shared.started)?;
            self.shared
                .progress
                .status(&format!("retention: {} object(s) checked, {} extended", report.checked, report.extended));
        }
        Ok(id)
    }

    fn verify_tree_reachable(&self, root: &Id) -> Result<()> {
        if self.has_blob(root) { Ok(()) } else { Err(RepoError::MissingBlob(*root)) }
    }
}

impl Shared {
    /// Hand the first worker error to the caller, leaving `Interrupted` behind for later calls.
    fn take_error_peek(&self) -> Result<()> {
        let mut slot = lock_or(&self.error);
        match slot.take() {
            Some(e) => {
                *slot = Some(RepoError::Interrupted);
                Err(e)
            }
            None => Ok(()),
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkerBuffers;

    #[test]
    fn the_chunker_buffer_pool_keeps_few_large_buffers_and_every_small_one() {
        let mut pool = ChunkerBuffers::new(2);
        // Eight threads each chunked a 6 MiB object and give their grown buffers back.
        for _ in 0..8 {
            pool.give_back(Vec::with_capacity(8 << 20));
        }
        for _ in 0..8 {
            pool.give_back(Vec::with_capacity(256 << 10));
        }
        assert_eq!(pool.held_bytes(), 2 * (8 << 20) + 8 * (256 << 10));
        // Large buffers are handed out first, then the small ones, then fresh ones.
        assert_eq!(pool.take().capacity(), 8 << 20);
        assert_eq!(pool.take().capacity(), 8 << 20);
        for _ in 0..8 {
            assert_eq!(pool.take().capacity(), 256 << 10);
        }
        assert_eq!(pool.take().capacity(), 0);
    }
}
