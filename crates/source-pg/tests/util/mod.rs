//! Helpers for the PostgreSQL tests: clusters, sinks that collect or extract a base backup, a WAL
//! segment writer, and (for the archive, retention and restore tests) a repository in memory with
//! an archiving cluster, its WAL pushed and fetched back.

// Each test binary uses a part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, Repository};
use tidemark_source_pg::archive;
use tidemark_source_pg::{
    ArchiveInfo, BackupStart, BaseBackupSink, Lsn, Member, MemberKind, PgBackupOptions, PgError, PgRestoreOptions,
    PushOutcome, RecoveryTarget, TargetAction, archive_get, archive_push, wal,
};
use tidemark_storage::MemoryStorage;
use tidemark_testkit::postgres::{PgCluster, PgOptions};

/// The source name the repository-side tests use.
pub const SOURCE: &str = "main";

/// A repository in memory (password `pw`, a cheap KDF), and its storage for faults and damage.
pub fn repo() -> (MemoryStorage, Repository) {
    let mem = MemoryStorage::new();
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    let repo = Repository::init(Arc::new(mem.clone()), &Credential::Password(b"pw".to_vec()), &opts).unwrap();
    (mem, repo)
}

/// A cluster archiving with `cp` into `../wal-archive` (relative to its data directory).
pub fn archiving_cluster(test: &str) -> Option<(PgCluster, PathBuf)> {
    let options = PgOptions {
        archive_command: Some("mkdir -p ../wal-archive && cp %p ../wal-archive/%f".into()),
        ..PgOptions::default()
    };
    let pg = PgCluster::start_or_skip(test, &options)?;
    let dir = pg.scratch_dir("wal-archive").unwrap();
    Some((pg, dir))
}

/// Base backup options for [`SOURCE`] from `pg`, tagged `pg`.
pub fn backup_options(pg: &PgCluster) -> PgBackupOptions {
    PgBackupOptions {
        source: SOURCE.into(),
        connect: pg.connstr(),
        label: "test".into(),
        host: "db1".into(),
        tags: vec!["pg".into()],
    }
}

/// Restore options for [`SOURCE`] into `dir`, promoting at `target`, fetching WAL from `fetched`.
pub fn restore_options(dir: &Path, target: RecoveryTarget, fetched: &Path) -> PgRestoreOptions {
    PgRestoreOptions {
        source: SOURCE.into(),
        target_dir: dir.to_path_buf(),
        target,
        target_action: TargetAction::Promote,
        restore_command: format!("cp {}/%f %p", fetched.display()),
    }
}

/// Switch to a new segment and wait until PostgreSQL has archived the finished one.
pub fn switch_and_wait(pg: &PgCluster) {
    let name = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").unwrap() < name {
        assert!(Instant::now() < deadline, "{name} was not archived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Push every file PostgreSQL archived so far (again: identical ones are success); how many
/// were new.
pub fn push_all(repo: &Repository, dir: &Path) -> usize {
    let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let mut stored = 0;
    for path in names {
        match archive_push(repo, SOURCE, &path).unwrap() {
            PushOutcome::Stored => stored += 1,
            PushOutcome::AlreadyIdentical => {}
        }
    }
    stored
}

/// Fetch every archived file into `dir` with archive_get (readable by the server's `cp`).
pub fn fetch_all(repo: &Repository, dir: &Path) {
    for name in archive::list_wal(repo, SOURCE).unwrap() {
        let dest = dir.join(&name);
        assert!(archive_get(repo, SOURCE, &name, &dest).unwrap(), "{name}");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The complete WAL segment files (24-character names) in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().len() == 24).collect();
    segments.sort();
    segments
}

/// The server's clock.
pub fn now_in_server(pg: &PgCluster) -> Timestamp {
    let micros: i64 =
        pg.psql("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").unwrap().parse().unwrap();
    Timestamp::from_microsecond(micros).unwrap()
}

/// Waits (up to two minutes) until a restored cluster has finished recovery.
pub fn wait_promoted(pg: &PgCluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("SELECT pg_is_in_recovery()").unwrap() != "f" {
        assert!(Instant::now() < deadline, "recovery did not finish: {}", fs::read_to_string(pg.log_path()).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts the rows `from..=to` into `t (id)`, one statement each.
pub fn insert(pg: &PgCluster, from: u32, to: u32) {
    for i in from..=to {
        pg.psql(&format!("INSERT INTO t (id) VALUES ({i})")).unwrap();
    }
}

/// The ids in table `t`, in order, comma-separated.
pub fn ids(pg: &PgCluster) -> String {
    pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t").unwrap()
}

/// `a,a+1,...,b`, as [`ids`] shows them.
pub fn range(a: u32, b: u32) -> String {
    (a..=b).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A started cluster, or `None` after a loud skip when PostgreSQL is not installed.
pub fn cluster(test: &str, options: &PgOptions) -> Option<PgCluster> {
    PgCluster::start_or_skip(test, options)
}

/// The cluster's system identifier, from SQL.
pub fn sysid(pg: &PgCluster) -> u64 {
    pg.psql("SELECT system_identifier FROM pg_control_system()").unwrap().parse().unwrap()
}

/// The oldest complete WAL segment file in the cluster's pg_wal.
pub fn first_wal_segment(pg: &PgCluster) -> PathBuf {
    let mut names: Vec<String> = fs::read_dir(pg.data_dir().join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    pg.data_dir().join("pg_wal").join(&names[0])
}

/// A member as collected: small files' contents are kept.
#[derive(Debug)]
pub struct Collected {
    pub kind: MemberKind,
    pub size: u64,
    pub content: Option<Vec<u8>>,
}

/// Collects every member of every archive, checking that each file yields its declared size.
#[derive(Default)]
pub struct Collect {
    pub started: Option<BackupStart>,
    pub members: BTreeMap<String, BTreeMap<String, Collected>>,
}

impl BaseBackupSink for Collect {
    fn start(&mut self, start: &BackupStart) -> Result<(), PgError> {
        self.started = Some(start.clone());
        Ok(())
    }

    fn member(&mut self, archive: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError> {
        let mut content = Vec::new();
        member.read_to_end(&mut content).map_err(PgError::sink)?;
        assert_eq!(content.len() as u64, member.size, "{}", member.path.display());
        let path = member.path.to_string_lossy().into_owned();
        self.members.entry(archive.name.clone()).or_default().insert(
            path,
            Collected {
                kind: member.kind.clone(),
                size: member.size,
                content: (content.len() <= 65536).then_some(content),
            },
        );
        Ok(())
    }
}

/// Extracts `base.tar` into a directory.
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    pub fn new(root: PathBuf) -> Self {
        DirSink { root }
    }
}

impl BaseBackupSink for DirSink {
    fn member(&mut self, archive: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError> {
        assert_eq!(archive.name, "base.tar", "tablespaces are not extracted here");
        let path = self.root.join(&member.path);
        match &member.kind {
            MemberKind::Directory => {
                fs::create_dir_all(&path).map_err(PgError::sink)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(PgError::sink)?;
            }
            MemberKind::File => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(PgError::sink)?;
                }
                let mut file = File::create(&path).map_err(PgError::sink)?;
                std::io::copy(member, &mut file).map_err(PgError::sink)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(member.mode & 0o700)).map_err(PgError::sink)?;
            }
            MemberKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(PgError::sink)?;
            }
            other => panic!("unexpected member kind {other:?}"),
        }
        Ok(())
    }
}

/// Writes streamed WAL into segment files, `NAME.partial` until complete, then renamed.
pub struct SegmentWriter {
    dir: PathBuf,
    timeline: u32,
    position: Lsn,
    file: Option<(File, PathBuf)>,
    completed: usize,
}

impl SegmentWriter {
    /// Start at `start`, a segment boundary.
    pub fn new(dir: PathBuf, timeline: u32, start: Lsn) -> Self {
        assert_eq!(start.segment_offset(wal::DEFAULT_SEGMENT_SIZE), 0);
        SegmentWriter { dir, timeline, position: start, file: None, completed: 0 }
    }

    pub fn position(&self) -> Lsn {
        self.position
    }

    /// The end of the last complete (fsynced) segment.
    pub fn durable(&self) -> Lsn {
        self.position.segment_start(wal::DEFAULT_SEGMENT_SIZE)
    }

    pub fn completed(&self) -> usize {
        self.completed
    }

    pub fn write(&mut self, at: Lsn, mut data: &[u8]) {
        assert_eq!(at, self.position, "WAL must arrive in order");
        while !data.is_empty() {
            let size = wal::DEFAULT_SEGMENT_SIZE;
            let offset = self.position.segment_offset(size);
            let n = data.len().min((size - offset) as usize);
            if self.file.is_none() {
                let name = wal::segment_file_name(self.timeline, self.position, size);
                let partial = self.dir.join(format!("{name}.partial"));
                let file = File::create(&partial).unwrap();
                self.file = Some((file, partial));
            }
            let (file, partial) = self.file.as_mut().unwrap();
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&data[..n]).unwrap();
            self.position = Lsn(self.position.0 + n as u64);
            data = &data[n..];
            if self.position.segment_offset(size) == 0 {
                file.sync_all().unwrap();
                let done = partial.with_extension("");
                fs::rename(&*partial, Path::new(&done)).unwrap();
                self.file = None;
                self.completed += 1;
            }
        }
    }
}

/// Reads and drops every member's bytes.
pub struct Discard;

impl BaseBackupSink for Discard {
    fn member(&mut self, _: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError> {
        std::io::copy(member, &mut std::io::sink()).map_err(PgError::sink)?;
        Ok(())
    }
}

/// A fake server on 127.0.0.1 for one connection: accepts the startup message, authenticates
/// (trust), reads one command and answers it with `answer`, then closes. Returns its port.
pub fn fake_server(answer: Vec<u8>) -> u16 {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        let mut len = [0u8; 4];
        if socket.read_exact(&mut len).is_err() {
            return;
        }
        let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        if socket.read_exact(&mut startup).is_err() {
            return;
        }
        let mut hello = frame(b'R', &0u32.to_be_bytes());
        hello.extend(frame(b'S', b"server_version\x0015.0\x00"));
        hello.extend(frame(b'Z', b"I"));
        if socket.write_all(&hello).is_err() {
            return;
        }
        let mut head = [0u8; 5];
        if socket.read_exact(&mut head).is_err() {
            return;
        }
        let mut query = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
        let _ = socket.read_exact(&mut query);
        let _ = socket.write_all(&answer);
    });
    port
}

/// A backend message: tag, length, body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A one-row text result set (RowDescription, DataRow, CommandComplete).
pub fn result_set(columns: &[&str], row: &[Option<&str>]) -> Vec<u8> {
    let mut desc = (columns.len() as u16).to_be_bytes().to_vec();
    for name in columns {
        desc.extend_from_slice(name.as_bytes());
        desc.push(0);
        desc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    }
    let mut data = (row.len() as u16).to_be_bytes().to_vec();
    for cell in row {
        match cell {
            Some(text) => {
                data.extend_from_slice(&(text.len() as u32).to_be_bytes());
                data.extend_from_slice(text.as_bytes());
            }
            None => data.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    let mut out = frame(b'T', &desc);
    out.extend(frame(b'D', &data));
    out.extend(frame(b'C', b"SELECT 1\0"));
    out
}
