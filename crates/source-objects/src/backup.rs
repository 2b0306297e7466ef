//! Bucket backup: list on the calling thread (the [`Walker`]), fetch changed objects on
//! `concurrency` threads, commit a snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Snapshot, SnapshotSummary};
use tidemark_repo::{Archiver, Progress, RepoError, Repository, SnapshotFilter};
use tidemark_source_fs::Patterns;
use tidemark_storage_s3::S3Config;

use crate::client::{BodyReader, Bucket, io_is_temporary, metadata_attrs};
use crate::names::unaddressable;
use crate::walker::{FetchJob, Fetched, Listed, Walker};
use crate::{BucketBackupOptions, BucketBackupOutcome, ObjectsError};

/// The snapshot `kind` of bucket backups.
pub const KIND: &str = "bucket";

/// Non-current versions last modified this long before the parent snapshot started (and not in
/// it) are not captured: they were captured by earlier runs. The margin absorbs clock skew
/// between the server and this host.
const VERSION_SKEW: Duration = Duration::from_secs(15 * 60);

/// Attempts per object read or listing page on temporary failures.
const ATTEMPTS: u32 = 3;

/// The first fatal (repository) error of a fetch thread.
#[derive(Default)]
struct Fatal {
    stop: AtomicBool,
    error: Mutex<Option<RepoError>>,
}

impl Fatal {
    fn set(&self, e: RepoError) {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        self.stop.store(true, Ordering::SeqCst);
    }
    fn take(&self) -> Option<RepoError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn find_parent(
    repo: &Repository,
    opts: &BucketBackupOptions,
    host: &str,
    url: &str,
) -> Result<Option<(Id, Snapshot)>, ObjectsError> {
    if let Some(id) = opts.parent {
        return Ok(Some((id, repo.load_snapshot(&id)?)));
    }
    let filter = SnapshotFilter {
        hosts: vec![host.to_string()],
        tags: Vec::new(),
        paths: vec![url.to_string()],
        source: opts.source.clone(),
    };
    Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| s.kind == KIND && filter.matches(s)))
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
}

/// Read one object into the repository. A source problem is `Ok(Failed)`; `Err` is fatal.
fn fetch(bucket: &Bucket, archiver: &Archiver, job: &FetchJob) -> Result<Fetched, RepoError> {
    if unaddressable(&job.key).is_some() {
        return fetch_exact(bucket, archiver, job);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut body, handle) = match BodyReader::open(bucket, &job.key, job.version.as_deref()) {
            Ok(opened) => opened,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                return Ok(Fetched::Failed("deleted while being backed up".into()));
            }
            Err(e) if e.is_temporary() && attempt < ATTEMPTS => {
                backoff(attempt);
                continue;
            }
            Err(e) => return Ok(Fetched::Failed(format!("unreadable: {}", bucket.error("read", &job.key, e)))),
        };
        match archiver.save_reader(&mut body) {
            Ok(saved) => {
                let mut attrs = BTreeMap::new();
                let meta = handle.metadata();
                if let Some(meta) = meta {
                    metadata_attrs(meta, &mut attrs);
                }
                let etag = meta.and_then(|m| m.etag()).map(str::to_string);
                let warning = (meta.is_some_and(|m| m.content_length() != saved.size))
                    .then(|| "changed while being backed up (size differs from the response)".to_string());
                return Ok(Fetched::Saved { saved, etag, attrs, warning });
            }
            Err(RepoError::SourceRead(e)) if io_is_temporary(&e) && attempt < ATTEMPTS => backoff(attempt),
            Err(RepoError::SourceRead(e)) => return Ok(Fetched::Failed(format!("read error: {e}"))),
            Err(e) => return Err(e),
        }
    }
}

/// [`fetch`] for a key the operator would normalize: one exact-key `GetObject`, in memory.
fn fetch_exact(bucket: &Bucket, archiver: &Archiver, job: &FetchJob) -> Result<Fetched, RepoError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match bucket.block_on_raw(bucket.raw().get(&job.key, job.version.as_deref())) {
            Ok((data, meta)) => {
                let saved = archiver.save_reader(&mut data.as_slice())?;
                let mut attrs = BTreeMap::new();
                if let Some(ct) = meta.content_type {
                    attrs.insert("content_type".to_string(), ct);
                }
                if !meta.user_metadata.is_empty() {
                    attrs.insert(
                        "user_metadata".to_string(),
                        serde_json::to_string(&meta.user_metadata).unwrap_or_default(),
                    );
                }
                return Ok(Fetched::Saved { saved, etag: meta.etag, attrs, warning: None });
            }
            Err(e) if e.is_not_found() => return Ok(Fetched::Failed("deleted while being backed up".into())),
            Err(e) if e.is_transient() && attempt < ATTEMPTS => backoff(attempt),
            Err(e) => return Ok(Fetched::Failed(format!("unreadable: {e}"))),
        }
    }
}

fn fetch_loop(
    bucket: &Bucket,
    archiver: &Archiver,
    fatal: &Fatal,
    progress: &dyn Progress,
    rx: Receiver<FetchJob>,
    tx: Sender<(usize, Fetched)>,
) {
    for job in rx {
        let outcome = if fatal.stop.load(Ordering::SeqCst) {
            Fetched::Aborted
        } else {
            fetch(bucket, archiver, &job).unwrap_or_else(|e| {
                fatal.set(e);
                Fetched::Aborted
            })
        };
        progress.inc(0, 1);
        if tx.send((job.id, outcome)).is_err() {
            return;
        }
    }
}

/// Stream the listing (with `versions`, every version but no delete markers) into `visit`,
/// retrying a failed page. The exact-key client lists: the operator's listing drops the leading
/// `/` of keys at the bucket root, so `/lead` would be read as `lead`.
fn list(
    bucket: &Bucket,
    versions: bool,
    visit: &mut dyn FnMut(Listed) -> Result<(), ObjectsError>,
) -> Result<(), ObjectsError> {
    let (mut next, mut next_version): (Option<String>, Option<String>) = (None, None);
    let mut attempt = 0;
    loop {
        let raw = bucket.raw();
        let page = if versions {
            bucket.block_on_raw(raw.list_versions_page(next.as_deref(), next_version.as_deref()))
        } else {
            bucket.block_on_raw(raw.list_page(next.as_deref(), None))
        };
        let page = match page {
            Ok(page) => page,
            Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                backoff(attempt);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for object in page.objects {
            // The prefix's own directory marker.
            if object.key.is_empty() {
                continue;
            }
            let mtime_ns = object.last_modified.map_or(0, |t| i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX));
            visit(Listed {
                key: object.key,
                size: object.size,
                etag: object.etag,
                mtime_ns,
                version: object.version,
                current: object.latest,
            })?;
        }
        match page.next {
            Some(marker) => (next, next_version) = (Some(marker), page.next_version),
            None => return Ok(()),
        }
    }
}

/// Back up the bucket (or prefix) `opts.url` into `repo`.
///
/// Objects that vanish or cannot be read are left out and reported in the warnings (and counted
/// in the summary's `errors`); listing and repository failures stop the backup and commit nothing.
pub fn backup_bucket(
    repo: &Repository,
    opts: &BucketBackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BucketBackupOutcome, ObjectsError> {
    let start = Timestamp::now();
    let mut config = S3Config::from_url(&opts.url)?;
    if let Some((id, secret)) = &opts.credentials {
        config = config.with_credentials(id, secret);
    }
    let url = config.url();
    let bucket = Bucket::connect(&config)?;
    let includes = Patterns::new(&opts.includes)?;
    let excludes = Patterns::new(&opts.excludes)?;
    let host = if opts.host.is_empty() { tidemark_repo::hostname() } else { opts.host.clone() };
    let parent = find_parent(repo, opts, &host, &url)?;
    let archiver = repo.archiver("backup", progress.clone())?;
    progress.set_total(0, 0);
    // Parent trees are read through the archiver's index (one copy of it in memory).
    let trees = archiver.reader();
    let fatal = Fatal::default();
    let concurrency = opts.concurrency.max(1);
    let walked = std::thread::scope(|scope| {
        let (job_tx, job_rx) = bounded::<FetchJob>(concurrency);
        let (res_tx, res_rx) = unbounded();
        for _ in 0..concurrency {
            let (rx, tx, bucket, archiver, fatal, progress) =
                (job_rx.clone(), res_tx.clone(), &bucket, &archiver, &fatal, progress.as_ref());
            scope.spawn(move || fetch_loop(bucket, archiver, fatal, progress, rx, tx));
        }
        drop((job_rx, res_tx));
        let mut walker = Walker::new(&archiver, &trees, job_tx, res_rx, concurrency * 2);
        walker.all_versions = opts.all_versions;
        if opts.all_versions {
            let skew = i64::try_from(VERSION_SKEW.as_nanos()).unwrap_or(0);
            walker.since_ns = parent
                .as_ref()
                .map(|(_, s)| i64::try_from(s.time.as_nanosecond()).unwrap_or(i64::MAX).saturating_sub(skew));
        }
        let filtered = !includes.is_empty() || !excludes.is_empty();
        let walked = walker.start(parent.as_ref().map(|(_, s)| s.tree)).and_then(|()| {
            list(&bucket, opts.all_versions, &mut |entry| {
                if filtered {
                    let path = format!("/{}", entry.key.trim_end_matches('/'));
                    let is_dir = entry.key.ends_with('/');
                    let shown = includes.is_empty() || includes.matches(Path::new(&path), is_dir);
                    if !shown || excludes.matches(Path::new(&path), is_dir) {
                        return Ok(());
                    }
                }
                progress.status(&entry.key);
                walker.add(entry)
            })?;
            walker.finish()
        });
        if walked.is_err() {
            fatal.stop.store(true, Ordering::SeqCst);
        }
        walked.map(|root| {
            (root, std::mem::take(&mut walker.counters), walker.stats, std::mem::take(&mut walker.warnings))
        })
    });
    let (root, c, stats, warnings) = match (walked, fatal.take()) {
        (Err(_), Some(e)) => return Err(e.into()),
        (walked, _) => walked?,
    };
    let summary = SnapshotSummary { backup_start: Some(start), ..c };
    let mut extra = BTreeMap::new();
    extra.insert("bucket".to_string(), config.bucket.clone());
    extra.insert("prefix".to_string(), config.prefix.clone());
    if let Some(endpoint) = &config.endpoint {
        extra.insert("endpoint".to_string(), endpoint.clone());
    }
    if opts.all_versions {
        extra.insert("all_versions".to_string(), "true".to_string());
    }
    let snapshot = Snapshot {
        time: start,
        hostname: host,
        username: tidemark_repo::username(),
        kind: KIND.into(),
        source: opts.source.clone(),
        paths: vec![url],
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        program: format!("tidemark {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        extra,
    };
    let (id, snapshot) = archiver.commit(snapshot)?;
    Ok(BucketBackupOutcome { id, snapshot, warnings, stats })
}
