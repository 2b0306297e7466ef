//! Helpers for the replication tests: clusters, sinks that collect or extract a base backup, and
//! a WAL segment writer.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tidemark_source_pg::{ArchiveInfo, BackupStart, BaseBackupSink, Lsn, Member, MemberKind, PgError, wal};
use tidemark_testkit::postgres::{PgCluster, PgOptions};

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
