//! `pg backup`: a base backup over the replication protocol, streamed into the repository as a
//! snapshot whose tree mirrors the data directory.
//!
//! Each tar member becomes a node as it arrives: files are chunked, deduplicated, compressed and
//! encrypted by the [`Archiver`] straight from the socket (nothing is staged on disk), so
//! unchanged relation files cost nothing the second time. Tablespace archives (`OID.tar`) go under
//! `pg_tblspc/OID/`, which is where the server's manifest lists them too; the backup is taken with
//! a `tablespace_map`, so `pg_tblspc` holds no links. The server's manifest is checked against what
//! was received (its own SHA-256, then every file's presence and size, both ways) and stored as the
//! `backup_manifest` file node.
//!
//! The snapshot has kind [`SNAPSHOT_KIND`], `source` and `paths` = the source name, and the
//! [`extra`] keys below.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot, SnapshotSummary};
use tidemark_repo::{Archiver, Progress, RepoError, Repository, tree};

use crate::archive::{ClusterRecord, check_source, ensure_cluster_record};
use crate::{
    ArchiveInfo, BackupStart, BaseBackupInfo, BaseBackupOptions, BaseBackupSink, Member, MemberKind, PgError,
    ReplicationClient,
};

/// `Snapshot::kind` of a PostgreSQL base backup.
pub const SNAPSHOT_KIND: &str = "postgres";

/// Keys of `Snapshot::extra` for a base backup (values are strings).
pub mod extra {
    /// Start LSN (`0/2000028`): WAL from here on is needed.
    pub const START_LSN: &str = "start_lsn";
    /// Stop LSN: recovery is consistent once it has replayed to here.
    pub const STOP_LSN: &str = "stop_lsn";
    /// Timeline at the start.
    pub const TIMELINE: &str = "timeline";
    /// Timeline at the stop.
    pub const STOP_TIMELINE: &str = "stop_timeline";
    /// The cluster's system identifier (decimal).
    pub const SYSTEM_IDENTIFIER: &str = "system_identifier";
    /// `server_version` (`15.14 (Debian ...)`).
    pub const PG_VERSION: &str = "pg_version";
    /// The major version (`15`).
    pub const PG_MAJOR: &str = "pg_major";
    /// `wal_segment_size` in bytes.
    pub const WAL_SEGMENT_SIZE: &str = "wal_segment_size";
    /// The backup's label.
    pub const LABEL: &str = "label";
    /// The `backup_label` file's contents (also a file node).
    pub const BACKUP_LABEL: &str = "backup_label";
    /// When the server had sent the end of the backup (RFC 3339, this host's clock): no commit
    /// before the stop LSN is later than this.
    pub const BACKUP_END: &str = "backup_end";
    /// Tablespaces as `OID=LOCATION` lines.
    pub const TABLESPACES: &str = "tablespaces";
}

/// What to back up and how to label it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgBackupOptions {
    /// The source name (one path component: `[A-Za-z0-9._-]`).
    pub source: String,
    /// A libpq-style connection string for a role with `REPLICATION`.
    pub connect: String,
    /// The backup label (empty: `tidemark`).
    pub label: String,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
}

/// A finished base backup.
#[derive(Debug, Clone)]
pub struct PgBackupOutcome {
    /// The snapshot's id.
    pub id: Id,
    /// The snapshot (its summary holds what was added).
    pub snapshot: Snapshot,
    /// What the server reported.
    pub info: BaseBackupInfo,
}

/// Take a base backup of `options.connect` into `repo` as a snapshot of `options.source`.
///
/// The first backup (or pushed segment) of a source records its cluster; a backup of another
/// cluster under the same source name is refused before any data moves.
pub fn pg_backup(
    repo: &Repository,
    options: &PgBackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<PgBackupOutcome, PgError> {
    check_source(&options.source)?;
    let started = Timestamp::now();
    let mut client = ReplicationClient::connect_str(&options.connect)?;
    let system = client.identify_system()?;
    let version = client.server_version().unwrap_or_default().to_owned();
    let major = client
        .server_version_num()
        .map(|v| v / 10_000)
        .ok_or_else(|| PgError::protocol(format!("cannot read the server version {version:?}")))?;
    let wal_segment_size = client.wal_segment_size()?;
    let cluster = ClusterRecord { system_identifier: system.system_identifier, pg_major: major, wal_segment_size };
    ensure_cluster_record(repo, &options.source, &cluster)?;

    let archiver = repo.archiver("pg backup", progress.clone()).map_err(|e| PgError::repository("pg backup", e))?;
    let label = if options.label.is_empty() { "tidemark".to_owned() } else { options.label.clone() };
    let bb_options = BaseBackupOptions { label: label.clone(), ..BaseBackupOptions::default() };
    let mut sink = RepoSink::new(&archiver, progress);
    let info = client.base_backup(&bb_options, &mut sink)?;
    let backup_end = Timestamp::now();

    let manifest = info.manifest.as_deref().ok_or_else(|| PgError::protocol("the server sent no backup manifest"))?;
    check_manifest(manifest, &sink.files)?;
    let saved = archiver.save_reader(manifest).map_err(|e| PgError::repository("storing backup_manifest", e))?;
    sink.insert(
        "backup_manifest",
        Entry::Leaf(Box::new(file_node(
            "backup_manifest",
            0o600,
            backup_end.as_second().max(0) as u64,
            saved.size,
            saved.content,
        ))),
    )?;
    let backup_label = sink.backup_label.take().unwrap_or_default();
    let root = std::mem::take(&mut sink.root);
    let summary = SnapshotSummary {
        backup_start: Some(started),
        files_new: sink.files.len() as u64 + 1,
        dirs: sink.dirs,
        total_files: sink.files.len() as u64 + 1,
        total_bytes: sink.bytes + manifest.len() as u64,
        ..SnapshotSummary::default()
    };
    drop(sink);
    let tree = save_dir(&archiver, root)?;

    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: String| extra.insert(k.to_owned(), v);
    put(extra::START_LSN, info.start_lsn.to_string());
    put(extra::STOP_LSN, info.end_lsn.to_string());
    put(extra::TIMELINE, info.start_timeline.to_string());
    put(extra::STOP_TIMELINE, info.end_timeline.to_string());
    put(extra::SYSTEM_IDENTIFIER, system.system_identifier.to_string());
    put(extra::PG_VERSION, version);
    put(extra::PG_MAJOR, major.to_string());
    put(extra::WAL_SEGMENT_SIZE, wal_segment_size.to_string());
    put(extra::LABEL, label);
    put(extra::BACKUP_LABEL, String::from_utf8_lossy(&backup_label).into_owned());
    put(extra::BACKUP_END, backup_end.to_string());
    let tablespaces: Vec<String> = info
        .tablespaces
        .iter()
        .filter_map(|t| Some(format!("{}={}", t.oid?, t.location.as_deref().unwrap_or(""))))
        .collect();
    if !tablespaces.is_empty() {
        put(extra::TABLESPACES, tablespaces.join("\n"));
    }
    let snapshot = Snapshot {
        time: started,
        hostname: options.host.clone(),
        username: String::new(),
        kind: SNAPSHOT_KIND.to_owned(),
        source: Some(options.source.clone()),
        paths: vec![options.source.clone()],
        tags: options.tags.clone(),
        parent: None,
        tree,
        program: format!("tidemark {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        extra,
    };
    let (id, snapshot) = archiver.commit(snapshot).map_err(|e| PgError::repository("committing the snapshot", e))?;
    Ok(PgBackupOutcome { id, snapshot, info })
}

/// A directory being built: its own metadata (once its member arrived) and its children.
#[derive(Default)]
struct Dir {
    meta: Option<(u32, u64)>,
    children: BTreeMap<String, Entry>,
}

enum Entry {
    Leaf(Box<Node>),
    Dir(Dir),
}

struct RepoSink<'a> {
    archiver: &'a Archiver,
    progress: Arc<dyn Progress>,
    root: Dir,
    /// Where the current archive's members go (`""` or `pg_tblspc/OID`).
    prefix: String,
    /// Every regular file received, with its size (for the manifest check).
    files: BTreeMap<String, u64>,
    backup_label: Option<Vec<u8>>,
    bytes: u64,
    dirs: u64,
}

impl<'a> RepoSink<'a> {
    fn new(archiver: &'a Archiver, progress: Arc<dyn Progress>) -> Self {
        RepoSink {
            archiver,
            progress,
            root: Dir::default(),
            prefix: String::new(),
            files: BTreeMap::new(),
            backup_label: None,
            bytes: 0,
            dirs: 0,
        }
    }

    /// Put `entry` at `path` (slash-separated), creating missing parents.
    fn insert(&mut self, path: &str, entry: Entry) -> Result<(), PgError> {
        let mut parts: Vec<&str> = tree::path_components(path);
        let last = parts.pop().ok_or_else(|| PgError::protocol("a backup member with an empty path"))?;
        let mut dir = &mut self.root;
        for part in parts {
            let child = dir.children.entry(part.to_owned()).or_insert_with(|| Entry::Dir(Dir::default()));
            dir = match child {
                Entry::Dir(d) => d,
                Entry::Leaf(_) => {
                    return Err(PgError::protocol(format!("backup member {path}: a parent is not a directory")));
                }
            };
        }
        match (dir.children.get_mut(last), entry) {
            (None, entry) => {
                dir.children.insert(last.to_owned(), entry);
                Ok(())
            }
            (Some(Entry::Dir(existing)), Entry::Dir(new)) if existing.meta.is_none() => {
                existing.meta = new.meta;
                Ok(())
            }
            _ => Err(PgError::protocol(format!("backup member {path} sent twice"))),
        }
    }
}

impl BaseBackupSink for RepoSink<'_> {
    fn start(&mut self, start: &BackupStart) -> Result<(), PgError> {
        self.progress.status(&format!("base backup from {} on timeline {}", start.lsn, start.timeline));
        Ok(())
    }

    fn archive(&mut self, archive: &ArchiveInfo) -> Result<(), PgError> {
        if archive.name == "base.tar" {
            self.prefix.clear();
            return Ok(());
        }
        let oid = archive
            .name
            .strip_suffix(".tar")
            .filter(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PgError::protocol(format!("unexpected archive {:?} in the base backup", archive.name)))?;
        self.prefix = format!("pg_tblspc/{oid}");
        let prefix = self.prefix.clone();
        self.insert(&prefix, Entry::Dir(Dir { meta: Some((0o700, 0)), children: BTreeMap::new() }))
    }

    fn member(&mut self, _archive: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError> {
        let relative = member
            .path
            .to_str()
            .ok_or_else(|| PgError::protocol(format!("backup member {} is not UTF-8", member.path.display())))?
            .to_owned();
        let path = if self.prefix.is_empty() { relative.clone() } else { format!("{}/{relative}", self.prefix) };
        let name = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PgError::protocol(format!("backup member {path} has no name")))?
            .to_owned();
        let entry = match &member.kind {
            MemberKind::File => {
                let (mode, mtime, size) = (member.mode, member.mtime, member.size);
                let saved = if path == "backup_label" {
                    // Small and wanted in the snapshot's metadata too.
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::Read::take(&mut *member, 1 << 20), &mut bytes)
                        .map_err(|e| PgError::from_io(e, "reading backup_label"))?;
                    let saved = self.archiver.save_reader(&bytes[..]).map_err(|e| store_error(&path, e))?;
                    self.backup_label = Some(bytes);
                    saved
                } else {
                    self.archiver.save_reader(&mut *member).map_err(|e| store_error(&path, e))?
                };
                if saved.size != size {
                    return Err(PgError::protocol(format!(
                        "backup member {path}: {} bytes received, its header says {size}",
                        saved.size
                    )));
                }
                self.files.insert(path.clone(), size);
                self.bytes += size;
                Entry::Leaf(Box::new(file_node(&name, mode, mtime, size, saved.content)))
            }
            MemberKind::Directory => {
                self.dirs += 1;
                Entry::Dir(Dir { meta: Some((member.mode, member.mtime)), children: BTreeMap::new() })
            }
            MemberKind::Symlink { target } => {
                let mut node = file_node(&name, member.mode, member.mtime, 0, Vec::new());
                node.node_type = NodeType::Symlink;
                node.link_target = Some(target.to_string_lossy().into_owned());
                Entry::Leaf(Box::new(node))
            }
            MemberKind::Other(flag) => {
                return Err(PgError::protocol(format!("backup member {path} has unsupported tar type {flag}")));
            }
        };
        self.insert(&path, entry)?;
        self.archiver.check_lock().map_err(|e| PgError::repository("pg backup", e))
    }
}

/// A repository error while storing a member; a failure of the backup stream itself (the reader
/// the archiver was reading) comes back out as the [`PgError`] it was.
fn store_error(path: &str, err: RepoError) -> PgError {
    match err {
        RepoError::SourceRead(io) => PgError::from_io(io, &format!("reading backup member {path}")),
        other => PgError::repository(&format!("storing backup member {path}"), other),
    }
}

fn file_node(name: &str, mode: u32, mtime: u64, size: u64, content: Vec<Id>) -> Node {
    let mut node = tree::root_node(&Id::default());
    node.name = name.to_owned();
    node.node_type = NodeType::File;
    node.mode = mode & 0o7777;
    node.mtime_ns = i64::try_from(mtime).unwrap_or(0).saturating_mul(1_000_000_000);
    node.size = size;
    node.content = content;
    node.subtree = None;
    node
}

/// Store a directory's children bottom-up; returns its tree id.
fn save_dir(archiver: &Archiver, dir: Dir) -> Result<Id, PgError> {
    let mut nodes = Vec::with_capacity(dir.children.len());
    for (name, entry) in dir.children {
        match entry {
            Entry::Leaf(node) => nodes.push(*node),
            Entry::Dir(child) => {
                let (mode, mtime) = child.meta.unwrap_or((0o700, 0));
                let subtree = save_dir(archiver, child)?;
                let mut node = tree::root_node(&subtree);
                node.name = name;
                node.mode = mode & 0o7777;
                node.mtime_ns = i64::try_from(mtime).unwrap_or(0).saturating_mul(1_000_000_000);
                nodes.push(node);
            }
        }
    }
    archiver.save_tree(&tree::sorted_tree(nodes)).map_err(|e| PgError::repository("storing a tree", e))
}

/// Check the server's backup manifest against the files received: the manifest's own SHA-256,
/// then every listed file received with its size, and no file received that it does not list.
pub fn check_manifest(manifest: &[u8], received: &BTreeMap<String, u64>) -> Result<(), PgError> {
    let bad = |what: String| PgError::protocol(format!("backup manifest: {what}"));
    // The checksum covers everything up to and including the newline before its own line.
    let marker = b"\n\"Manifest-Checksum\"";
    let at =
        manifest.windows(marker.len()).rposition(|w| w == marker).ok_or_else(|| bad("no Manifest-Checksum".into()))?;
    let value: Value = serde_json::from_slice(manifest).map_err(|e| bad(format!("not JSON: {e}")))?;
    let expected = value["Manifest-Checksum"].as_str().ok_or_else(|| bad("no Manifest-Checksum".into()))?;
    let actual = hex::encode(Sha256::digest(&manifest[..=at]));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(bad(format!("its checksum {expected} does not match its content ({actual})")));
    }
    let files = value["Files"].as_array().ok_or_else(|| bad("no Files list".into()))?;
    let mut listed = BTreeMap::new();
    for file in files {
        let path = match (file["Path"].as_str(), file["Encoded-Path"].as_str()) {
            (Some(p), _) => p.to_owned(),
            (None, Some(encoded)) => {
                let bytes = hex::decode(encoded).map_err(|_| bad(format!("bad Encoded-Path {encoded:?}")))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            _ => return Err(bad("a file without a path".into())),
        };
        let size = file["Size"].as_u64().ok_or_else(|| bad(format!("{path}: no size")))?;
        listed.insert(path, size);
    }
    for (path, size) in &listed {
        match received.get(path) {
            None => return Err(bad(format!("{path} is listed but was not received"))),
            Some(got) if got != size => {
                return Err(bad(format!("{path} is listed with {size} bytes but {got} were received")));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = received.keys().find(|p| !listed.contains_key(*p)) {
        return Err(bad(format!("{extra} was received but is not listed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &str) -> Vec<u8> {
        let body =
            format!("{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{files}\n],\n\"WAL-Ranges\": [],\n");
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    #[test]
    fn manifest_checks() {
        let m = manifest("{ \"Path\": \"PG_VERSION\", \"Size\": 3 },\n{ \"Encoded-Path\": \"62617365\", \"Size\": 0 }");
        let mut got = BTreeMap::from([("PG_VERSION".to_owned(), 3), ("base".to_owned(), 0)]);
        check_manifest(&m, &got).unwrap();
        got.insert("extra".into(), 1);
        assert!(check_manifest(&m, &got).unwrap_err().message().contains("extra"));
        got.remove("extra");
        got.insert("PG_VERSION".into(), 4);
        assert!(check_manifest(&m, &got).unwrap_err().message().contains("PG_VERSION"));
        got.insert("PG_VERSION".into(), 3);
        let mut tampered = m.clone();
        let i = tampered.iter().position(|b| *b == b'3').unwrap();
        tampered[i] = b'4';
        assert!(check_manifest(&tampered, &got).unwrap_err().message().contains("checksum"));
    }
}
