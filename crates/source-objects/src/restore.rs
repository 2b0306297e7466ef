//! Restore: plan from the snapshot tree on the calling thread, write objects or files on
//! `concurrency` threads.
//!
//! Into a bucket, each object is written under its key below the target prefix with its content
//! type and user metadata; without `overwrite`, an existing key is skipped (a HEAD first, and a
//! conditional `If-None-Match: *` write against races); keys the OpenDAL operator would normalize
//! (`a//b`, `/lead`, `x/../y`) go through the exact-key client, whole in memory. Keys with an empty,
//! `.` or `..` segment are refused (reported) by a restore into a directory, where they would
//! escape the target or collide with another key's path. Into a directory, each key becomes a path
//! built only from node names that are single safe components; every parent is checked to be a
//! real directory (never a symlink) before anything is created below it, and files are created
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` (replaced, with `overwrite`, by renaming a temporary file).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::bounded;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot};
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{Progress, RepoError, Repository};
use tidemark_source_fs::Patterns;
use tidemark_storage_s3::S3Config;

use crate::backup::KIND;
use crate::client::Bucket;
use crate::names::{self, original, unaddressable};
use crate::{BucketRestoreOptions, BucketRestoreOutcome, ObjectWarning, ObjectsError, Target};

/// Parts of a multipart upload.
const PART: usize = 8 << 20;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

struct Item {
    key: String,
    rel: PathBuf,
    node: Node,
    marker: bool,
}

/// Whether `name` is one safe path component.
fn safe_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn is_data_error(e: &RepoError) -> bool {
    match e {
        RepoError::Format { .. } | RepoError::MissingBlob(_) => true,
        RepoError::Storage(s) => s.is_not_found(),
        _ => false,
    }
}

struct Planner<'a> {
    repo: &'a Repository,
    includes: &'a Patterns,
    include_deleted: bool,
    errors: Vec<ObjectWarning>,
}

impl Planner<'_> {
    fn matches(&self, key: &str, is_dir: bool) -> bool {
        self.includes.matches(Path::new(&format!("/{}", key.trim_end_matches('/'))), is_dir)
    }

    /// Send the items below `tree` in depth-first order; `false` when the receiver is gone.
    fn plan(
        &mut self,
        tree: &Id,
        prefix: &str,
        rel: &Path,
        inherited: bool,
        send: &mut dyn FnMut(Item) -> bool,
    ) -> Result<bool, RepoError> {
        let nodes = match self.repo.load_tree(tree) {
            Ok(t) => t.nodes,
            Err(e) if is_data_error(&e) => {
                self.errors.push(ObjectWarning { key: prefix.into(), message: format!("cannot load directory: {e}") });
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let mut current = HashSet::new();
        let mut versions = None;
        for node in nodes {
            if names::is_versions_dir(&node) {
                versions = node.subtree;
                continue;
            }
            let key = format!("{prefix}{}", original(&node));
            if !safe_component(&node.name) {
                self.errors.push(ObjectWarning { key, message: format!("refused unsafe name {:?}", node.name) });
                continue;
            }
            let child_rel = rel.join(&node.name);
            match node.node_type {
                NodeType::Dir => {
                    let dir_key = format!("{key}/");
                    let matched = inherited || self.matches(&dir_key, true);
                    let marker = node.attrs.contains_key("marker");
                    if let Some(sub) = node.subtree {
                        if matched && marker {
                            let item =
                                Item { key: dir_key.clone(), rel: child_rel.clone(), node: node.clone(), marker: true };
                            if !send(item) {
                                return Ok(false);
                            }
                        }
                        if !self.plan(&sub, &dir_key, &child_rel, matched, send)? {
                            return Ok(false);
                        }
                    }
                }
                NodeType::File => {
                    current.insert(original(&node).to_string());
                    if (inherited || self.matches(&key, false))
                        && !send(Item { key, rel: child_rel, node, marker: false })
                    {
                        return Ok(false);
                    }
                }
                _ => {}
            }
        }
        match versions {
            Some(v) if self.include_deleted => self.plan_deleted(&v, prefix, rel, inherited, &current, send),
            _ => Ok(true),
        }
    }

    /// The newest captured version of each object that has no current version here.
    fn plan_deleted(
        &mut self,
        tree: &Id,
        prefix: &str,
        rel: &Path,
        inherited: bool,
        current: &HashSet<String>,
        send: &mut dyn FnMut(Item) -> bool,
    ) -> Result<bool, RepoError> {
        let mut newest: BTreeMap<String, Node> = BTreeMap::new();
        for node in self.repo.load_tree(tree)?.nodes {
            let component = original(&node).to_string();
            if node.node_type != NodeType::File || current.contains(&component) {
                continue;
            }
            match newest.get(&component) {
                Some(n) if n.mtime_ns >= node.mtime_ns => {}
                _ => {
                    newest.insert(component, node);
                }
            }
        }
        for (component, node) in newest {
            let key = format!("{prefix}{component}");
            let name = names::node_name(&component);
            if (inherited || self.matches(&key, false)) && !send(Item { key, rel: rel.join(name), node, marker: false })
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Counters of one writer thread.
#[derive(Default)]
struct Tally {
    out: BucketRestoreOutcome,
}

impl Tally {
    fn error(&mut self, key: &str, message: String) {
        self.out.errors.push(ObjectWarning { key: key.to_string(), message });
    }
}

enum Sink {
    Bucket(Box<Bucket>),
    Dir(PathBuf),
}

impl Sink {
    /// Write one item; `Err` only for a fatal repository error.
    fn write(&self, repo: &Repository, item: &Item, overwrite: bool, tally: &mut Tally) -> Result<(), RepoError> {
        match self {
            Sink::Bucket(b) => write_object(b, repo, item, overwrite, tally),
            Sink::Dir(root) => match write_file(root, repo, item, overwrite, tally) {
                Ok(()) => Ok(()),
                Err(Failure::Item(m)) => {
                    tally.error(&item.key, m);
                    Ok(())
                }
                Err(Failure::Fatal(e)) => Err(e),
            },
        }
    }
}

enum Failure {
    Item(String),
    Fatal(RepoError),
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        if is_data_error(&e) { Failure::Item(format!("damaged data: {e}")) } else { Failure::Fatal(e) }
    }
}

fn write_object(
    bucket: &Bucket,
    repo: &Repository,
    item: &Item,
    overwrite: bool,
    tally: &mut Tally,
) -> Result<(), RepoError> {
    if unaddressable(&item.key).is_some() {
        return write_object_exact(bucket, repo, item, overwrite, tally);
    }
    let op = bucket.op();
    if !overwrite && !item.marker {
        match bucket.block_on(op.stat(&item.key)) {
            Ok(_) => {
                tally.out.skipped += 1;
                return Ok(());
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(e) => {
                tally.error(&item.key, bucket.error("stat", &item.key, e).to_string());
                return Ok(());
            }
        }
    }
    if item.marker {
        match bucket.block_on(op.create_dir(&item.key)) {
            Ok(()) => tally.out.markers += 1,
            Err(e) => tally.error(&item.key, bucket.error("create directory marker", &item.key, e).to_string()),
        }
        return Ok(());
    }
    let user_metadata =
        item.node.attrs.get("user_metadata").and_then(|j| serde_json::from_str::<HashMap<String, String>>(j).ok());
    let options = opendal::options::WriteOptions {
        content_type: item.node.attrs.get("content_type").cloned(),
        user_metadata,
        if_not_exists: !overwrite,
        chunk: Some(PART),
        ..Default::default()
    };
    let mut writer = match bucket.block_on(op.writer_options(&item.key, options)) {
        Ok(w) => w,
        Err(e) => {
            tally.error(&item.key, bucket.error("write", &item.key, e).to_string());
            return Ok(());
        }
    };
    let mut written = 0u64;
    let mut failed = None;
    for id in &item.node.content {
        let data = match repo.read_blob(BlobType::Data, id) {
            Ok(d) => d,
            Err(e) if is_data_error(&e) => {
                failed = Some(format!("damaged data: {e}"));
                break;
            }
            Err(e) => {
                let _ = bucket.block_on(writer.abort());
                return Err(e);
            }
        };
        written += data.len() as u64;
        if let Err(e) = bucket.block_on(writer.write(data)) {
            failed = Some(bucket.error("write", &item.key, e).to_string());
            break;
        }
    }
    if failed.is_none() && written != item.node.size {
        failed = Some(format!("size mismatch: {written} bytes, the snapshot records {}", item.node.size));
    }
    if let Some(message) = failed {
        let _ = bucket.block_on(writer.abort());
        tally.error(&item.key, message);
        return Ok(());
    }
    match bucket.block_on(writer.close()) {
        Ok(_) => {
            tally.out.objects += 1;
            tally.out.bytes += written;
        }
        Err(e) if matches!(e.kind(), opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists) => {
            tally.out.skipped += 1;
        }
        Err(e) => tally.error(&item.key, bucket.error("write", &item.key, e).to_string()),
    }
    Ok(())
}

/// [`write_object`] for a key the operator would normalize (`a//b`, `/lead`, `x/../y`): one
/// exact-key `PutObject` of the whole object (held in memory), create-only unless `overwrite`.
fn write_object_exact(
    bucket: &Bucket,
    repo: &Repository,
    item: &Item,
    overwrite: bool,
    tally: &mut Tally,
) -> Result<(), RepoError> {
    let raw = bucket.raw();
    if !overwrite && !item.marker {
        match bucket.block_on_raw(raw.head(&item.key)) {
            Ok(Some(_)) => {
                tally.out.skipped += 1;
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => {
                tally.error(&item.key, e.to_string());
                return Ok(());
            }
        }
    }
    let mut data = Vec::with_capacity(usize::try_from(item.node.size).unwrap_or(0));
    for id in &item.node.content {
        match repo.read_blob(BlobType::Data, id) {
            Ok(d) => data.extend_from_slice(&d),
            Err(e) if is_data_error(&e) => {
                tally.error(&item.key, format!("damaged data: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    let written = data.len() as u64;
    if !item.marker && written != item.node.size {
        let message = format!("size mismatch: {written} bytes, the snapshot records {}", item.node.size);
        tally.error(&item.key, message);
        return Ok(());
    }
    let user_metadata: BTreeMap<String, String> =
        item.node.attrs.get("user_metadata").and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    let content_type = item.node.attrs.get("content_type").map(String::as_str);
    let (content_type, user_metadata) =
        if item.marker { (None, BTreeMap::new()) } else { (content_type, user_metadata) };
    let create_only = !overwrite && !item.marker;
    match bucket.block_on_raw(raw.put(&item.key, data, content_type, &user_metadata, create_only)) {
        Ok(()) if item.marker => tally.out.markers += 1,
        Ok(()) => {
            tally.out.objects += 1;
            tally.out.bytes += written;
        }
        Err(e) if e.kind() == tidemark_storage::ErrorKind::AlreadyExists => tally.out.skipped += 1,
        Err(e) => tally.error(&item.key, e.to_string()),
    }
    Ok(())
}

/// Create the directories of `rel` below `root`, refusing anything that is not a real directory.
fn ensure_dirs(root: &Path, rel: &Path) -> Result<(), Failure> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => return Err(Failure::Item(format!("refused: {} is not a real directory", cur.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure::Item(format!("cannot inspect {}: {e}", cur.display()))),
        }
        match std::fs::create_dir(&cur) {
            Ok(()) => {}
            // Another writer made it: check it like any existing one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
                    return Err(Failure::Item(format!("refused: {} is not a real directory", cur.display())));
                }
            }
            Err(e) => return Err(Failure::Item(format!("cannot create {}: {e}", cur.display()))),
        }
    }
    Ok(())
}

fn write_file(root: &Path, repo: &Repository, item: &Item, overwrite: bool, tally: &mut Tally) -> Result<(), Failure> {
    if let Some(why) = names::not_a_path(&item.key) {
        return Err(Failure::Item(format!(
            "not restored to a directory: {why}, so it cannot become a path below the target without escaping it or \
             colliding with another key; restore it to a bucket, where it is kept exactly"
        )));
    }
    if item.marker {
        ensure_dirs(root, &item.rel)?;
        tally.out.markers += 1;
        return Ok(());
    }
    ensure_dirs(root, item.rel.parent().unwrap_or(Path::new("")))?;
    let abs = root.join(&item.rel);
    let existing = match std::fs::symlink_metadata(&abs) {
        Ok(md) => Some(md),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Failure::Item(format!("cannot inspect: {e}"))),
    };
    match &existing {
        Some(_) if !overwrite => {
            tally.out.skipped += 1;
            return Ok(());
        }
        Some(md) if md.is_dir() => return Err(Failure::Item("refused: a directory exists at this path".into())),
        _ => {}
    }
    let write_path = if existing.is_some() {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        abs.with_file_name(format!(".tidemark-restore-{}-{n}", std::process::id()))
    } else {
        abs.clone()
    };
    let opened =
        OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(&write_path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && existing.is_none() => {
            tally.out.skipped += 1;
            return Ok(());
        }
        Err(e) => return Err(Failure::Item(format!("cannot create: {e}"))),
    };
    let result = (|| -> Result<u64, Failure> {
        let mut written = 0u64;
        for id in &item.node.content {
            let data = repo.read_blob(BlobType::Data, id)?;
            file.write_all(&data).map_err(|e| Failure::Item(format!("write error: {e}")))?;
            written += data.len() as u64;
        }
        if written != item.node.size {
            return Err(Failure::Item(format!(
                "size mismatch: {written} bytes, the snapshot records {}",
                item.node.size
            )));
        }
        let ns = item.node.mtime_ns;
        let time =
            filetime::FileTime::from_unix_time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
        filetime::set_file_handle_times(&file, Some(time), Some(time))
            .map_err(|e| Failure::Item(format!("cannot set the modification time: {e}")))?;
        Ok(written)
    })();
    drop(file);
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&write_path);
            return Err(e);
        }
    };
    if write_path != abs
        && let Err(e) = std::fs::rename(&write_path, &abs)
    {
        let _ = std::fs::remove_file(&write_path);
        return Err(Failure::Item(format!("cannot replace: {e}")));
    }
    tally.out.objects += 1;
    tally.out.bytes += written;
    Ok(())
}

/// Restore a bucket snapshot (or the keys matching `opts.includes`) into a bucket or directory.
///
/// Takes a shared repository lock. Objects with damaged data, unsafe names and existing keys that
/// must not be replaced are reported in the outcome while everything else is restored; only
/// repository failures stop the restore with an error.
pub fn restore_bucket(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &BucketRestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<BucketRestoreOutcome, ObjectsError> {
    if snapshot.kind != KIND {
        return Err(ObjectsError::Invalid(format!(
            "this is a {:?} snapshot; restore it with the restore for its kind, not as a bucket",
            snapshot.kind
        )));
    }
    let includes = Patterns::new(&opts.includes)?;
    let sink = match &opts.target {
        Target::Bucket(url) => {
            let mut config = S3Config::from_url(url)?;
            if let Some((id, secret)) = &opts.credentials {
                config = config.with_credentials(id, secret);
            }
            Sink::Bucket(Box::new(Bucket::connect(&config)?))
        }
        Target::Dir(path) => {
            let target_error = |message: String| ObjectsError::Target { path: path.display().to_string(), message };
            std::fs::create_dir_all(path).map_err(|e| target_error(format!("cannot create restore target: {e}")))?;
            if !std::fs::metadata(path).map_err(|e| target_error(e.to_string()))?.is_dir() {
                return Err(target_error("restore target is not a directory".into()));
            }
            Sink::Dir(path.clone())
        }
    };
    let _lock = repo.lock("restore", false)?;
    let mut planner = Planner { repo, includes: &includes, include_deleted: opts.include_deleted, errors: Vec::new() };
    let fatal = std::sync::Mutex::new(None::<RepoError>);
    let (planned, tallies) = std::thread::scope(|scope| {
        let (tx, rx) = bounded::<Item>(opts.concurrency.max(1) * 2);
        let handles: Vec<_> = (0..opts.concurrency.max(1))
            .map(|_| {
                let (rx, sink, fatal, progress) = (rx.clone(), &sink, &fatal, progress.as_ref());
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    for item in rx {
                        let stop = fatal.lock().map(|f| f.is_some()).unwrap_or(true);
                        if stop {
                            continue;
                        }
                        if let Err(e) = sink.write(repo, &item, opts.overwrite, &mut tally) {
                            fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        }
                        progress.inc(item.node.size, 1);
                    }
                    tally
                })
            })
            .collect();
        drop(rx);
        let planned =
            planner.plan(&snapshot.tree, "", Path::new(""), includes.is_empty(), &mut |item| tx.send(item).is_ok());
        drop(tx);
        let tallies: Vec<Tally> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect();
        (planned, tallies)
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    planned?;
    let mut outcome = BucketRestoreOutcome { errors: planner.errors, ..Default::default() };
    for t in tallies {
        outcome.objects += t.out.objects;
        outcome.markers += t.out.markers;
        outcome.bytes += t.out.bytes;
        outcome.skipped += t.out.skipped;
        outcome.errors.extend(t.out.errors);
    }
    outcome.errors.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(outcome)
}
