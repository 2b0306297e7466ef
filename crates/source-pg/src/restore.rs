//! `pg restore`: pick the base backup a recovery target needs, write its files into an empty
//! directory (in parallel), and configure PostgreSQL to replay the archived WAL to the target.
//!
//! Choosing is a pure function, [`plan_restore`], of the source's base backups and the names of
//! its archived WAL files: backups are ordered by their start LSN (then their time), never by name,
//! and only those of the source's recorded cluster count. It refuses, with
//! [`ErrorKind::Target`](crate::ErrorKind::Target), a target before the end of the oldest base
//! backup, after the newest archived WAL, or behind a gap in the archived segments; it never
//! falls back silently to an earlier point.
//!
//! Timelines: the archive is checked for segment numbers regardless of timeline, and recovery
//! follows `recovery_target_timeline = 'latest'` through the archived history files.
//!
//! Before any file is written, every archived segment recovery will fetch (and every history
//! file) is read back and authenticated as `archive-get` will read it: PostgreSQL takes a failing
//! `restore_command` as the end of the archive, so a damaged segment would otherwise end a
//! restore to the latest state early without a word. A damaged file the target needs is an
//! [`ErrorKind::Target`](crate::ErrorKind::Target) naming it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{Node, NodeType, Snapshot};
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{Progress, Repository};

use crate::archive::{self, ClusterRecord, WalFileKind, classify_wal_file};
use crate::backup::{SNAPSHOT_KIND, extra};
use crate::{Lsn, PgError, wal};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived segment (no `recovery_target_*`).
    Latest,
    /// Include every transaction committed at or before this instant.
    Time(Timestamp),
    /// Replay up to this LSN.
    Lsn(Lsn),
    /// Up to and including this transaction (the newest base backup is used).
    Xid(u64),
    /// Up to this restore point (`pg_create_restore_point`; the newest base backup is used).
    Name(String),
}

/// What the server does once it reaches the target (`recovery_target_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetAction {
    /// Pause recovery (hot standby queries can inspect the state; `pg_wal_replay_resume()` ends it).
    #[default]
    Pause,
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Stop the server.
    Shutdown,
}

impl TargetAction {
    fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// What to restore where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRestoreOptions {
    /// The source name.
    pub source: String,
    /// The data directory to create: missing or empty.
    pub target_dir: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// What happens at the target.
    pub target_action: TargetAction,
    /// The `restore_command` PostgreSQL runs (`%f`, `%p` as it expands them), such as
    /// `tidemark -r REPO pg archive-get --source NAME %f %p`.
    pub restore_command: String,
}

/// A base backup of a source, as recorded in its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRef {
    /// Snapshot id.
    pub id: Id,
    /// Start LSN.
    pub start_lsn: Lsn,
    /// Stop LSN.
    pub stop_lsn: Lsn,
    /// Timeline at the start.
    pub timeline: u32,
    /// When the backup started.
    pub time: Timestamp,
    /// When it ended (see [`extra::BACKUP_END`]).
    pub end: Timestamp,
}

impl BackupRef {
    /// Read a base backup's positions from its snapshot; `None` for snapshots that are not
    /// base backups of `cluster`.
    pub fn from_snapshot(id: Id, snapshot: &Snapshot, cluster: &ClusterRecord) -> Option<BackupRef> {
        let get = |k: &str| snapshot.extra.get(k).map(String::as_str);
        if snapshot.kind != SNAPSHOT_KIND || get(extra::SYSTEM_IDENTIFIER)? != cluster.system_identifier.to_string() {
            return None;
        }
        Some(BackupRef {
            id,
            start_lsn: get(extra::START_LSN)?.parse().ok()?,
            stop_lsn: get(extra::STOP_LSN)?.parse().ok()?,
            timeline: get(extra::TIMELINE)?.parse().ok()?,
            time: snapshot.time,
            end: get(extra::BACKUP_END)?.parse().ok()?,
        })
    }
}

/// Where the archived WAL of a source ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveEnd {
    /// The end of the highest archived segment.
    pub lsn: Lsn,
    /// When that segment was stored: the archive holds no WAL written later.
    pub stored_at: Timestamp,
}

/// The base backup to restore and the WAL it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The chosen backup.
    pub backup: BackupRef,
    /// The first and last segment numbers recovery reads.
    pub segments: (u64, u64),
}

/// Choose the base backup for `target` (pure). `backups` in any order; `wal_names` are the
/// archived file names; `end` is where the archive ends.
pub fn plan_restore(
    mut backups: Vec<BackupRef>,
    wal_names: &[String],
    end: Option<ArchiveEnd>,
    segment_size: u64,
    target: &RecoveryTarget,
) -> Result<RestorePlan, PgError> {
    backups.sort_by_key(|b| (b.start_lsn, b.time));
    let Some(oldest) = backups.first().cloned() else {
        return Err(PgError::target("the source has no base backup; hint: take one with `pg backup` first"));
    };
    let candidates: Vec<&BackupRef> = match target {
        RecoveryTarget::Time(t) => backups.iter().filter(|b| b.end <= *t).collect(),
        RecoveryTarget::Lsn(l) => backups.iter().filter(|b| b.stop_lsn <= *l).collect(),
        RecoveryTarget::Latest | RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => backups.iter().collect(),
    };
    let Some(backup) = candidates.last().map(|b| (*b).clone()) else {
        let what = match target {
            RecoveryTarget::Time(t) => format!("time {t}, before the oldest base backup ended ({})", oldest.end),
            RecoveryTarget::Lsn(l) => format!("LSN {l}, before the oldest base backup's stop LSN {}", oldest.stop_lsn),
            _ => "this target".to_owned(),
        };
        return Err(PgError::target(format!("cannot restore to {what}: nothing older is in the repository")));
    };
    let Some(end) = end else {
        return Err(PgError::target("no WAL segment of this source is archived; hint: configure archive_command"));
    };
    match target {
        RecoveryTarget::Time(t) if *t > end.stored_at => {
            return Err(PgError::target(format!(
                "cannot restore to time {t}: the newest archived WAL segment was stored at {}, so the archive ends \
                 before the target; hint: archive more WAL (pg_switch_wal(), archive_timeout) or pick an earlier time",
                end.stored_at
            )));
        }
        RecoveryTarget::Lsn(l) if *l > end.lsn => {
            return Err(PgError::target(format!(
                "cannot restore to LSN {l}: the archived WAL ends at {}; hint: archive more WAL or pick an earlier LSN",
                end.lsn
            )));
        }
        _ => {}
    }
    let first = wal::segment_number(backup.start_lsn, segment_size);
    let stop = wal::segment_number(Lsn(backup.stop_lsn.0.saturating_sub(1)), segment_size);
    let last = match target {
        RecoveryTarget::Lsn(l) => wal::segment_number(Lsn(l.0.saturating_sub(1)), segment_size).max(stop),
        _ => wal::segment_number(Lsn(end.lsn.0.saturating_sub(1)), segment_size).max(stop),
    };
    let mut archived = std::collections::BTreeSet::new();
    for name in wal_names {
        let Ok(class) = classify_wal_file(name) else { continue };
        if let (WalFileKind::Segment | WalFileKind::Partial | WalFileKind::StreamPartial, Some(segment)) =
            (class.kind, &class.segment)
            && class.timeline >= backup.timeline
            && let Ok(parsed) = wal::parse_segment_file_name(segment, segment_size)
        {
            archived.insert(wal::segment_number(parsed.start, segment_size));
        }
    }
    if let Some(missing) = (first..=last).find(|n| !archived.contains(n)) {
        let name = wal::segment_file_name(backup.timeline, Lsn(missing * segment_size), segment_size);
        return Err(PgError::target(format!(
            "the archived WAL has a gap: segment {name} (or its successor on a later timeline) is missing between \
             the base backup at {} and the target; the target cannot be reached",
            backup.start_lsn
        )));
    }
    Ok(RestorePlan { backup, segments: (first, last) })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct PgRestoreOutcome {
    /// The base backup restored.
    pub plan: RestorePlan,
    /// Its snapshot.
    pub snapshot: Snapshot,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The lines appended to `postgresql.auto.conf`.
    pub recovery_settings: Vec<String>,
}

/// Restore the base backup `options.target` needs into `options.target_dir` and configure
/// recovery. Start PostgreSQL on the directory afterwards (as the user that owns it).
pub fn pg_restore(
    repo: &Repository,
    options: &PgRestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<PgRestoreOutcome, PgError> {
    archive::check_source(&options.source)?;
    if options.restore_command.trim().is_empty() {
        return Err(PgError::config("restore_command is empty; hint: `tidemark ... pg archive-get --source S %f %p`"));
    }
    check_target_dir(&options.target_dir)?;
    let cluster = archive::cluster_record(repo, &options.source)?.ok_or_else(|| {
        PgError::target(format!("source {:?} has no base backup or archived WAL in this repository", options.source))
    })?;
    let snapshots = repo.snapshots().map_err(|e| PgError::repository("listing snapshots", e))?;
    let mut backups = Vec::new();
    for (id, snapshot) in &snapshots {
        if snapshot.source.as_deref() != Some(options.source.as_str()) || snapshot.kind != SNAPSHOT_KIND {
            continue;
        }
        match BackupRef::from_snapshot(*id, snapshot, &cluster) {
            Some(b) => backups.push(b),
            None => progress.warn(&format!("snapshot {id} of source {} is not a usable base backup", options.source)),
        }
    }
    let names = archive::list_wal(repo, &options.source)?;
    let end = archive::archive_end(repo, &options.source, &names, cluster.wal_segment_size)?
        .map(|(lsn, stored_at)| ArchiveEnd { lsn, stored_at });
    let plan = plan_restore(backups, &names, end, cluster.wal_segment_size, &options.target)?;
    crate::verify::check_restore_wal(
        repo,
        &options.source,
        &cluster,
        &names,
        &plan,
        &options.target,
        progress.as_ref(),
    )?;
    let snapshot = snapshots
        .iter()
        .find(|(id, _)| *id == plan.backup.id)
        .map(|(_, s)| s.clone())
        .ok_or_else(|| PgError::protocol("the chosen snapshot vanished"))?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&options.target_dir)
        .map_err(|e| PgError::local(format!("creating {}", options.target_dir.display()), e))?;
    set_mode(&options.target_dir, 0o700)?;
    let mut files = Vec::new();
    let root = repo.load_tree(&snapshot.tree).map_err(|e| PgError::repository("loading the backup's tree", e))?;
    let mut tablespaces = false;
    let mut dirs = Vec::new();
    lay_out(repo, &root.nodes, &options.target_dir, &mut files, &mut dirs)?;
    if let Some(pg_tblspc) = root.nodes.iter().find(|n| n.name == "pg_tblspc" && n.node_type == NodeType::Dir) {
        tablespaces = tidemark_repo::tree::children(repo, pg_tblspc)
            .map_err(|e| PgError::repository("loading pg_tblspc", e))?
            .iter()
            .any(|n| n.node_type == NodeType::Dir);
    }
    progress.set_total(files.iter().map(|(_, n)| n.size).sum(), files.len() as u64);
    let bytes = write_files(repo, &files, progress.as_ref())?;
    // Directory modes last: a 0500 directory would refuse its own files.
    for (path, mode) in dirs.iter().rev() {
        set_mode(path, *mode)?;
    }
    for dir in ["pg_wal", "pg_wal/archive_status"] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(options.target_dir.join(dir))
            .map_err(|e| PgError::local(format!("creating {dir}"), e))?;
    }
    if tablespaces {
        // Tablespaces were restored in place under pg_tblspc/OID; the map would have the server
        // replace those directories with links to the original locations.
        let _ = fs::remove_file(options.target_dir.join("tablespace_map"));
    }
    // A base backup taken from a standby holds its standby.signal; restored with it, the cluster
    // would wait for a primary forever instead of recovering to the target and opening.
    let standby_signal = options.target_dir.join("standby.signal");
    if standby_signal.exists() {
        fs::remove_file(&standby_signal).map_err(|e| PgError::local("removing standby.signal", e))?;
        progress.warn(
            "the base backup was taken from a standby: removed its standby.signal so that the restored \
             cluster recovers to the target instead of waiting for a primary",
        );
    }
    let recovery_settings = recovery_settings(options);
    let mut conf = String::from("\n# Recovery settings written by tidemark pg restore\n");
    for line in &recovery_settings {
        conf.push_str(line);
        conf.push('\n');
    }
    append_synced(&options.target_dir.join("postgresql.auto.conf"), conf.as_bytes())?;
    append_synced(&options.target_dir.join("recovery.signal"), b"")?;
    Ok(PgRestoreOutcome { plan, snapshot, files: files.len() as u64, bytes, recovery_settings })
}

/// The `postgresql.auto.conf` lines for `options`.
pub fn recovery_settings(options: &PgRestoreOptions) -> Vec<String> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut lines = vec![
        format!("restore_command = {}", quote(&options.restore_command)),
        "recovery_target_timeline = 'latest'".to_owned(),
    ];
    let target = match &options.target {
        RecoveryTarget::Latest => None,
        RecoveryTarget::Time(t) => {
            Some(format!("recovery_target_time = {}", quote(&t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string())))
        }
        RecoveryTarget::Lsn(l) => Some(format!("recovery_target_lsn = {}", quote(&l.to_string()))),
        RecoveryTarget::Xid(x) => Some(format!("recovery_target_xid = {}", quote(&x.to_string()))),
        RecoveryTarget::Name(n) => Some(format!("recovery_target_name = {}", quote(n))),
    };
    if let Some(target) = target {
        lines.push(target);
        lines.push("recovery_target_inclusive = on".to_owned());
        lines.push(format!("recovery_target_action = {}", quote(options.target_action.as_str())));
    }
    lines
}

fn check_target_dir(dir: &Path) -> Result<(), PgError> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::local(format!("target directory {}", dir.display()), e)),
        Ok(mut entries) => {
            if dir.join("postmaster.pid").exists() {
                return Err(PgError::local_msg(format!(
                    "refusing to restore into {}: a PostgreSQL server runs there (postmaster.pid); stop it and \
                     restore into an empty directory",
                    dir.display()
                )));
            }
            if entries.next().is_some() {
                return Err(PgError::local_msg(format!(
                    "refusing to restore into {}: the directory is not empty; hint: give a new or empty directory",
                    dir.display()
                )));
            }
            Ok(())
        }
    }
}

fn safe_name(node: &Node) -> Result<&str, PgError> {
    let name = node.name.as_str();
    if node.name_bytes.is_some() || name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(PgError::protocol(format!("unsafe file name {name:?} in the base backup")));
    }
    Ok(name)
}

/// Create directories and links; collect files to write.
fn lay_out(
    repo: &Repository,
    nodes: &[Node],
    dir: &Path,
    files: &mut Vec<(PathBuf, Node)>,
    dirs: &mut Vec<(PathBuf, u32)>,
) -> Result<(), PgError> {
    for node in nodes {
        let path = dir.join(safe_name(node)?);
        match node.node_type {
            NodeType::Dir => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| PgError::local(format!("creating {}", path.display()), e))?;
                dirs.push((path.clone(), node.mode & 0o7777));
                let children =
                    tidemark_repo::tree::children(repo, node).map_err(|e| PgError::repository("loading a tree", e))?;
                lay_out(repo, &children, &path, files, dirs)?;
            }
            NodeType::Symlink => {
                let target = node.link_target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &path)
                    .map_err(|e| PgError::local(format!("creating link {}", path.display()), e))?;
            }
            NodeType::File => files.push((path, node.clone())),
            NodeType::Other => {}
        }
    }
    Ok(())
}

fn write_files(repo: &Repository, files: &[(PathBuf, Node)], progress: &dyn Progress) -> Result<u64, PgError> {
    let next = AtomicUsize::new(0);
    let total = std::sync::atomic::AtomicU64::new(0);
    let failure: Mutex<Option<PgError>> = Mutex::new(None);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, node)) = files.get(i) else { return };
                    match write_file(repo, path, node) {
                        Ok(n) => {
                            total.fetch_add(n, Ordering::Relaxed);
                            progress.inc(n, 1);
                        }
                        Err(e) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(err) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    Ok(total.into_inner())
}

fn write_file(repo: &Repository, path: &Path, node: &Node) -> Result<u64, PgError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| PgError::local(format!("creating {}", path.display()), e))?;
    let mut written = 0u64;
    for id in &node.content {
        let data = repo
            .read_blob(BlobType::Data, id)
            .map_err(|e| PgError::repository(&format!("reading {}", path.display()), e))?;
        file.write_all(&data).map_err(|e| PgError::local(format!("writing {}", path.display()), e))?;
        written += data.len() as u64;
    }
    if written != node.size {
        return Err(PgError::protocol(format!(
            "{}: the repository holds {written} bytes, the backup recorded {}",
            path.display(),
            node.size
        )));
    }
    file.sync_all().map_err(|e| PgError::local(format!("syncing {}", path.display()), e))?;
    set_mode(path, node.mode & 0o7777)?;
    Ok(written)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::local(format!("setting the mode of {}", path.display()), e))
}

fn append_synced(path: &Path, bytes: &[u8]) -> Result<(), PgError> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| PgError::local(format!("opening {}", path.display()), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| PgError::local(format!("writing {}", path.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn backup(n: u8, start: u64, stop: u64, end: i64) -> BackupRef {
        BackupRef {
            id: Id([n; 32]),
            start_lsn: Lsn(start),
            stop_lsn: Lsn(stop),
            timeline: 1,
            time: Timestamp::from_second(end - 1).unwrap(),
            end: Timestamp::from_second(end).unwrap(),
        }
    }

    fn names(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|n| wal::segment_file_name(1, Lsn(n * SEG), SEG)).collect()
    }

    #[test]
    fn picks_the_newest_backup_before_the_target_by_position() {
        // Listed out of order: the order comes from the start LSN.
        let backups = vec![backup(2, 5 * SEG + 40, 5 * SEG + 400, 2000), backup(1, 2 * SEG + 40, 2 * SEG + 400, 1000)];
        let wal = names(2..=9);
        let end = Some(ArchiveEnd { lsn: Lsn(10 * SEG), stored_at: Timestamp::from_second(3000).unwrap() });
        let at = |t: i64| RecoveryTarget::Time(Timestamp::from_second(t).unwrap());
        let plan = plan_restore(backups.clone(), &wal, end, SEG, &at(1500)).unwrap();
        assert_eq!(plan.backup.id, Id([1; 32]));
        assert_eq!(plan.segments, (2, 9));
        assert_eq!(plan_restore(backups.clone(), &wal, end, SEG, &at(2000)).unwrap().backup.id, Id([2; 32]));
        assert_eq!(
            plan_restore(backups.clone(), &wal, end, SEG, &RecoveryTarget::Latest).unwrap().backup.id,
            Id([2; 32])
        );
        let lsn = RecoveryTarget::Lsn(Lsn(4 * SEG));
        let plan = plan_restore(backups.clone(), &wal, end, SEG, &lsn).unwrap();
        assert_eq!((plan.backup.id, plan.segments), (Id([1; 32]), (2, 3)));
        // Before the oldest backup, after the archive: clear errors.
        for target in
            [at(999), at(3001), RecoveryTarget::Lsn(Lsn(2 * SEG + 399)), RecoveryTarget::Lsn(Lsn(10 * SEG + 1))]
        {
            let err = plan_restore(backups.clone(), &wal, end, SEG, &target).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Target, "{target:?}: {err}");
        }
        // A gap between the backup and the target.
        let mut gappy = wal.clone();
        gappy.retain(|n| !n.ends_with("07"));
        let err = plan_restore(backups.clone(), &gappy, end, SEG, &at(2500)).unwrap_err();
        assert!(err.message().contains("000000010000000000000007"), "{err}");
        // No backups at all.
        assert_eq!(plan_restore(vec![], &wal, end, SEG, &at(2500)).unwrap_err().kind(), crate::ErrorKind::Target);
    }

    #[test]
    fn settings() {
        let options = PgRestoreOptions {
            source: "main".into(),
            target_dir: "/x".into(),
            target: RecoveryTarget::Time("2024-03-01T10:11:12.345Z".parse().unwrap()),
            target_action: TargetAction::Promote,
            restore_command: "cp '/a/%f' %p".into(),
        };
        assert_eq!(
            recovery_settings(&options),
            vec![
                "restore_command = 'cp ''/a/%f'' %p'",
                "recovery_target_timeline = 'latest'",
                "recovery_target_time = '2024-03-01 10:11:12.345000+00'",
                "recovery_target_inclusive = on",
                "recovery_target_action = 'promote'",
            ]
        );
        let latest = PgRestoreOptions { target: RecoveryTarget::Latest, ..options };
        assert_eq!(recovery_settings(&latest).len(), 2);
    }
}
