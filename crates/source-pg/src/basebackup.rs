//! `BASE_BACKUP` (PostgreSQL 15+ grammar): a consistent copy of a running cluster, streamed.
//!
//! The server answers with a result set (start LSN and timeline), a result set of tablespaces,
//! then one COPY OUT whose CopyData payloads are typed: `n` (a new archive: name and tablespace
//! location), `d` (archive or manifest bytes), `p` (progress: bytes done), `m` (the backup
//! manifest follows), and, after CopyDone, a result set with the end LSN and timeline. Each
//! archive is a ustar stream (`base.tar` for the data directory, `OID.tar` per tablespace); this
//! module parses it with the `tar` crate, member by member, straight from the socket, and hands
//! each member to a [`BaseBackupSink`] as a reader. Nothing is buffered but the manifest.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;

use crate::conn::{Backend, Conn, ResultCollector, ResultSet, server_error};
use crate::{ErrorKind, Lsn, PgError, ReplicationClient};

/// The largest backup manifest accepted (it is held in memory).
const MAX_MANIFEST_LEN: usize = 1 << 30;

/// How to take a base backup. [`Default`]: label `tidemark`, fast checkpoint, manifest with
/// CRC32C checksums, wait for WAL archiving, tablespace map, no WAL, no progress estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// `LABEL` (stored in `backup_label`; at most 1024 bytes).
    pub label: String,
    /// `CHECKPOINT 'fast'` (else `'spread'`: the backup starts after a throttled checkpoint).
    pub fast_checkpoint: bool,
    /// `MANIFEST 'yes'`: the server's backup manifest (JSON) comes with the backup.
    pub manifest: bool,
    /// `MANIFEST_CHECKSUMS`: `NONE`, `CRC32C`, `SHA224`, `SHA256`, `SHA384` or `SHA512`.
    pub manifest_checksums: String,
    /// `WAIT`: the server waits until the WAL the backup needs is archived (only where
    /// `archive_mode` is on).
    pub wait_for_archive: bool,
    /// `WAL`: include the WAL the backup needs in `base.tar` (`pg_wal/`).
    pub include_wal: bool,
    /// `TABLESPACE_MAP`: a `tablespace_map` file in `base.tar` instead of `pg_tblspc` symlinks.
    pub tablespace_map: bool,
    /// `PROGRESS`: the server first estimates the total size (another pass over the files).
    pub progress: bool,
    /// `VERIFY_CHECKSUMS`: the server verifies data checksums while reading (where enabled).
    pub verify_checksums: bool,
    /// `MAX_RATE` in kB/s (32 to 1048576).
    pub max_rate_kbps: Option<u32>,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "tidemark".to_owned(),
            fast_checkpoint: true,
            manifest: true,
            manifest_checksums: "CRC32C".to_owned(),
            wait_for_archive: true,
            include_wal: false,
            tablespace_map: true,
            progress: false,
            verify_checksums: true,
            max_rate_kbps: None,
        }
    }
}

impl BaseBackupOptions {
    /// The `BASE_BACKUP (...)` command.
    pub fn command(&self) -> Result<String, PgError> {
        if self.label.len() > 1024 || self.label.contains('\0') {
            return Err(PgError::config("backup label too long (at most 1024 bytes) or contains NUL"));
        }
        let checksums = self.manifest_checksums.to_ascii_uppercase();
        if !matches!(checksums.as_str(), "NONE" | "CRC32C" | "SHA224" | "SHA256" | "SHA384" | "SHA512") {
            return Err(PgError::config(format!(
                "invalid manifest checksum algorithm {:?} (NONE, CRC32C, SHA224, SHA256, SHA384, SHA512)",
                self.manifest_checksums
            )));
        }
        let mut options = vec![
            format!("LABEL '{}'", self.label.replace('\'', "''")),
            format!("CHECKPOINT '{}'", if self.fast_checkpoint { "fast" } else { "spread" }),
            format!("WAIT {}", self.wait_for_archive),
            format!("WAL {}", self.include_wal),
            format!("TABLESPACE_MAP {}", self.tablespace_map),
            format!("PROGRESS {}", self.progress),
            format!("VERIFY_CHECKSUMS {}", self.verify_checksums),
        ];
        if self.manifest {
            options.push("MANIFEST 'yes'".to_owned());
            options.push(format!("MANIFEST_CHECKSUMS '{checksums}'"));
        } else {
            options.push("MANIFEST 'no'".to_owned());
        }
        if let Some(rate) = self.max_rate_kbps {
            if !(32..=1_048_576).contains(&rate) {
                return Err(PgError::config(format!("MAX_RATE {rate} kB/s out of range (32 to 1048576)")));
            }
            options.push(format!("MAX_RATE {rate}"));
        }
        Ok(format!("BASE_BACKUP ({})", options.join(", ")))
    }
}

/// A tablespace of the backup, as the server listed it before sending data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    /// Its OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Its directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// Estimated size in kB (with [`BaseBackupOptions::progress`]).
    pub size_kb: Option<u64>,
}

/// Where the backup starts, given to [`BaseBackupSink::start`] before any data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStart {
    /// The backup's start LSN (its checkpoint's redo point): WAL from here is needed.
    pub lsn: Lsn,
    /// The timeline at the start.
    pub timeline: u32,
    /// The tablespaces, the main data directory last.
    pub tablespaces: Vec<Tablespace>,
}

/// One archive of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Its name: `base.tar`, or `OID.tar` for a tablespace.
    pub name: String,
    /// The tablespace's directory on the server (empty for `base.tar`).
    pub tablespace_location: String,
}

/// What a tar member is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberKind {
    /// A regular file: read its bytes from the [`Member`].
    File,
    /// A directory.
    Directory,
    /// A symbolic link (such as `pg_tblspc/OID` or a linked `pg_wal` without a tablespace
    /// map).
    Symlink {
        /// Where it points.
        target: PathBuf,
    },
    /// Any other tar type flag (never sent by PostgreSQL 15).
    Other(u8),
}

/// One file, directory or link of an archive; reading it yields a file's bytes.
pub struct Member<'a> {
    /// Its relative path inside the archive (`PG_VERSION`, `base/5/16384`, `global/pg_control`),
    /// checked to be relative with no `..` component.
    pub path: PathBuf,
    /// What it is.
    pub kind: MemberKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time in seconds since the Unix epoch.
    pub mtime: u64,
    /// Size in bytes (0 for directories and links).
    pub size: u64,
    reader: &'a mut dyn Read,
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("mtime", &self.mtime)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Read for Member<'_> {
    /// A file's bytes, straight from the connection. An error in the stream surfaces here as an
    /// `io::Error` wrapping the [`PgError`].
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Where a base backup goes, member by member. Errors abort the backup (and leave the client
/// unusable); wrap foreign errors with [`PgError::sink`].
pub trait BaseBackupSink {
    /// The backup started at `start` (before any archive).
    fn start(&mut self, start: &BackupStart) -> Result<(), PgError> {
        let _ = start;
        Ok(())
    }

    /// A new archive begins.
    fn archive(&mut self, archive: &ArchiveInfo) -> Result<(), PgError> {
        let _ = archive;
        Ok(())
    }

    /// One member of `archive`. A file's bytes not read here are skipped.
    fn member(&mut self, archive: &ArchiveInfo, member: &mut Member<'_>) -> Result<(), PgError>;

    /// The server has sent `bytes_done` bytes of archive data so far.
    fn progress(&mut self, bytes_done: u64) {
        let _ = bytes_done;
    }
}

/// What a finished base backup is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupInfo {
    /// The label it was taken with.
    pub label: String,
    /// Start LSN: restoring needs WAL from here.
    pub start_lsn: Lsn,
    /// Timeline at the start.
    pub start_timeline: u32,
    /// End LSN: recovery must replay at least to here to be consistent.
    pub end_lsn: Lsn,
    /// Timeline at the end.
    pub end_timeline: u32,
    /// Tablespaces, the main data directory last.
    pub tablespaces: Vec<Tablespace>,
    /// The archives received, in order.
    pub archives: Vec<ArchiveInfo>,
    /// The server's backup manifest (JSON), when requested.
    pub manifest: Option<Vec<u8>>,
    /// Archive bytes received.
    pub bytes: u64,
}

/// A typed CopyData payload of the backup stream.
enum Record {
    NewArchive(ArchiveInfo),
    Data(Bytes),
    Progress(u64),
    ManifestStart,
    Done,
}

struct CopyOut<'c> {
    conn: &'c mut Conn,
    pending: Option<Record>,
    current: Bytes,
    progress: Option<u64>,
    bytes: u64,
}

impl CopyOut<'_> {
    fn next_record(&mut self) -> Result<Record, PgError> {
        if let Some(record) = self.pending.take() {
            return Ok(record);
        }
        loop {
            match self.conn.recv()? {
                Backend::Message(Message::CopyData(body)) => {
                    return parse_record(body.into_bytes());
                }
                Backend::Message(Message::CopyDone) => return Ok(Record::Done),
                Backend::Message(Message::ErrorResponse(body)) => {
                    let err = server_error(body.fields());
                    self.conn.drain_to_ready()?;
                    return Err(err.with_context("base backup"));
                }
                Backend::Message(Message::NoticeResponse(body)) => self.conn.notice(body.fields()),
                Backend::Message(Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(PgError::protocol("unexpected message in the base backup stream"));
                }
            }
        }
    }
}

fn parse_record(mut data: Bytes) -> Result<Record, PgError> {
    let Some(&kind) = data.first() else {
        return Err(PgError::protocol("empty CopyData message in the base backup stream"));
    };
    data.advance(1);
    match kind {
        b'n' => {
            let mut strings = data.split(|b| *b == 0);
            let mut next = |what: &str| {
                strings
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .map(str::to_owned)
                    .ok_or_else(|| PgError::protocol(format!("malformed new-archive message: {what}")))
            };
            let name = next("name")?;
            let tablespace_location = next("tablespace location")?;
            if name.is_empty() || name.contains('/') {
                return Err(PgError::protocol(format!("invalid archive name {name:?}")));
            }
            Ok(Record::NewArchive(ArchiveInfo { name, tablespace_location }))
        }
        b'd' => Ok(Record::Data(data)),
        b'p' => {
            if data.len() != 8 {
                return Err(PgError::protocol("malformed progress message"));
            }
            Ok(Record::Progress(data.get_u64()))
        }
        b'm' => Ok(Record::ManifestStart),
        other => Err(PgError::protocol(format!("unknown base backup message type {:?}", char::from(other)))),
    }
}

/// The bytes of the current archive: ends (returns 0) at the next non-data record.
struct ArchiveReader<'a, 'c> {
    copy: &'a mut CopyOut<'c>,
}

impl Read for ArchiveReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.copy.current.is_empty() {
                let n = buf.len().min(self.copy.current.len());
                self.copy.current.copy_to_slice(&mut buf[..n]);
                self.copy.bytes += n as u64;
                return Ok(n);
            }
            if self.copy.pending.is_some() {
                return Ok(0);
            }
            match self.copy.next_record() {
                Ok(Record::Data(data)) => self.copy.current = data,
                Ok(Record::Progress(done)) => self.copy.progress = Some(done),
                Ok(other) => {
                    self.copy.pending = Some(other);
                    return Ok(0);
                }
                Err(err) => return Err(err.into_io()),
            }
        }
    }
}

impl ReplicationClient {
    /// Take a base backup, handing each archive member to `sink` as it arrives.
    ///
    /// Needs PostgreSQL 15 or later (the typed COPY stream); older servers are refused before
    /// the backup starts.
    pub fn base_backup(
        &mut self,
        options: &BaseBackupOptions,
        sink: &mut dyn BaseBackupSink,
    ) -> Result<BaseBackupInfo, PgError> {
        if let Some(version) = self.server_version_num()
            && version < 150_000
        {
            return Err(PgError::new(
                ErrorKind::Config,
                format!(
                    "base backups need PostgreSQL 15 or later; the server runs {}",
                    self.server_version().unwrap_or("an older version")
                ),
            ));
        }
        let command = options.command()?;
        let conn = &mut self.conn;
        conn.send_query(&command)?;
        let result = run_backup(conn, options, sink);
        if let Err(err) = &result
            && err.kind() != ErrorKind::Server
        {
            conn.broken = true;
        }
        result
    }
}

fn run_backup(
    conn: &mut Conn,
    options: &BaseBackupOptions,
    sink: &mut dyn BaseBackupSink,
) -> Result<BaseBackupInfo, PgError> {
    // Result sets up to the COPY: start position, tablespaces.
    let mut collector = ResultCollector::default();
    loop {
        match conn.recv()? {
            Backend::Message(Message::CopyOutResponse(_)) => break,
            Backend::Message(Message::ErrorResponse(body)) => {
                let err = server_error(body.fields());
                conn.drain_to_ready()?;
                return Err(err.with_context("starting the base backup"));
            }
            Backend::Message(message) => {
                if !collector.accept(conn, message)? {
                    return Err(PgError::protocol("unexpected message before the backup data"));
                }
            }
            Backend::CopyBoth => return Err(PgError::protocol("unexpected COPY BOTH")),
        }
    }
    let [start_set, tablespace_set, ..] = collector.sets.as_slice() else {
        return Err(PgError::protocol("the server sent no start position or tablespace list before the backup data"));
    };
    let start = BackupStart {
        lsn: start_set.parse(0, 0, "backup start LSN")?,
        timeline: start_set.parse(0, 1, "backup start timeline")?,
        tablespaces: parse_tablespaces(tablespace_set)?,
    };
    sink.start(&start)?;

    let mut copy = CopyOut { conn, pending: None, current: Bytes::new(), progress: None, bytes: 0 };
    let mut archives = Vec::new();
    let mut manifest = None;
    loop {
        match copy.next_record()? {
            Record::NewArchive(archive) => {
                sink.archive(&archive)?;
                read_archive(&mut copy, &archive, sink)?;
                archives.push(archive);
            }
            Record::Data(_) => {
                return Err(PgError::protocol("archive data before any archive began"));
            }
            Record::Progress(done) => sink.progress(done),
            Record::ManifestStart => {
                let mut bytes = Vec::new();
                loop {
                    match copy.next_record()? {
                        Record::Data(data) => {
                            if bytes.len() + data.len() > MAX_MANIFEST_LEN {
                                return Err(PgError::protocol("backup manifest larger than 1 GiB"));
                            }
                            bytes.extend_from_slice(&data);
                        }
                        Record::Progress(done) => sink.progress(done),
                        other => {
                            copy.pending = Some(other);
                            break;
                        }
                    }
                }
                manifest = Some(bytes);
            }
            Record::Done => break,
        }
    }
    let bytes = copy.bytes;

    // After CopyDone: the end position, CommandComplete, ReadyForQuery.
    let mut collector = ResultCollector::default();
    let mut error = None;
    loop {
        match conn.recv()? {
            Backend::Message(Message::ReadyForQuery(_)) => break,
            Backend::Message(Message::ErrorResponse(body)) => {
                error = Some(server_error(body.fields()));
            }
            Backend::Message(message) => {
                if !collector.accept(conn, message)? {
                    return Err(PgError::protocol("unexpected message after the backup data"));
                }
            }
            Backend::CopyBoth => return Err(PgError::protocol("unexpected COPY BOTH")),
        }
    }
    if let Some(err) = error {
        return Err(err.with_context("finishing the base backup"));
    }
    let end_set =
        collector.sets.first().ok_or_else(|| PgError::protocol("the server sent no end position for the backup"))?;
    if options.manifest && manifest.is_none() {
        return Err(PgError::protocol("a manifest was requested but none came"));
    }
    Ok(BaseBackupInfo {
        label: options.label.clone(),
        start_lsn: start.lsn,
        start_timeline: start.timeline,
        end_lsn: end_set.parse(0, 0, "backup end LSN")?,
        end_timeline: end_set.parse(0, 1, "backup end timeline")?,
        tablespaces: start.tablespaces,
        archives,
        manifest,
        bytes,
    })
}

fn parse_tablespaces(set: &ResultSet) -> Result<Vec<Tablespace>, PgError> {
    (0..set.rows.len())
        .map(|row| {
            Ok(Tablespace {
                oid: set
                    .opt_text(row, 0, "tablespace OID")?
                    .map(|t| t.parse().map_err(|_| PgError::protocol(format!("invalid tablespace OID {t:?}"))))
                    .transpose()?,
                location: set.opt_text(row, 1, "tablespace location")?.map(str::to_owned),
                size_kb: set
                    .opt_text(row, 2, "tablespace size")?
                    .map(|t| t.parse().map_err(|_| PgError::protocol(format!("invalid tablespace size {t:?}"))))
                    .transpose()?,
            })
        })
        .collect()
}

fn read_archive(copy: &mut CopyOut<'_>, archive: &ArchiveInfo, sink: &mut dyn BaseBackupSink) -> Result<(), PgError> {
    let context = format!("reading archive {}", archive.name);
    let mut tar = tar::Archive::new(ArchiveReader { copy });
    {
        let entries = tar.entries().map_err(|e| PgError::from_io(e, &context))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| PgError::from_io(e, &context))?;
            let mut member = member_of(&mut entry, &context)?;
            sink.member(archive, &mut member)?;
        }
    }
    // The two zero blocks that end a tar archive (the iterator stops at the first), and nothing
    // else, may remain.
    let mut rest = tar.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(|e| PgError::from_io(e, &context))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(PgError::protocol(format!("{context}: data after the end of the tar archive")));
        }
    }
    if let Some(done) = rest.copy.progress.take() {
        sink.progress(done);
    }
    Ok(())
}

fn member_of<'a, R: Read>(entry: &'a mut tar::Entry<'_, R>, context: &str) -> Result<Member<'a>, PgError> {
    let bad = |what: &str, e: io::Error| PgError::protocol(format!("{context}: bad {what}: {e}"));
    let raw_path = entry.path().map_err(|e| bad("member path", e))?.into_owned();
    let path = safe_relative(&raw_path).ok_or_else(|| {
        PgError::protocol(format!("{context}: member path {} is absolute or leaves the archive", raw_path.display()))
    })?;
    let header = entry.header();
    let mode = header.mode().map_err(|e| bad("mode", e))?;
    let mtime = header.mtime().map_err(|e| bad("mtime", e))?;
    let entry_type = header.entry_type();
    let kind = if entry_type.is_file() {
        MemberKind::File
    } else if entry_type.is_dir() {
        MemberKind::Directory
    } else if entry_type.is_symlink() {
        let target = entry
            .link_name()
            .map_err(|e| bad("link target", e))?
            .ok_or_else(|| PgError::protocol(format!("{context}: symlink without a target")))?
            .into_owned();
        MemberKind::Symlink { target }
    } else {
        MemberKind::Other(entry_type.as_byte())
    };
    let size = if kind == MemberKind::File { entry.size() } else { 0 };
    Ok(Member { path, kind, mode, mtime, size, reader: entry })
}

/// `path` without `.` components, if it is relative, has no `..` and is not empty.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_text() {
        let command =
            BaseBackupOptions { label: "it's".into(), max_rate_kbps: Some(1024), ..BaseBackupOptions::default() }
                .command()
                .unwrap();
        assert_eq!(
            command,
            "BASE_BACKUP (LABEL 'it''s', CHECKPOINT 'fast', WAIT true, WAL false, TABLESPACE_MAP true, \
             PROGRESS false, VERIFY_CHECKSUMS true, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', MAX_RATE 1024)"
        );
        let bad = BaseBackupOptions { manifest_checksums: "MD5".into(), ..BaseBackupOptions::default() };
        assert!(bad.command().is_err());
        let bad = BaseBackupOptions { max_rate_kbps: Some(1), ..BaseBackupOptions::default() };
        assert!(bad.command().is_err());
    }

    #[test]
    fn records() {
        let Record::NewArchive(a) = parse_record(Bytes::from_static(b"n16385.tar\0/srv/ts\0")).unwrap() else {
            panic!("not an archive");
        };
        assert_eq!((a.name.as_str(), a.tablespace_location.as_str()), ("16385.tar", "/srv/ts"));
        assert!(matches!(parse_record(Bytes::from_static(b"p\0\0\0\0\0\0\x01\0")).unwrap(), Record::Progress(256)));
        for bad in [&b""[..], b"p\0", b"x", b"n", b"n../x\0\0", b"n\xff\0\0"] {
            assert!(parse_record(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn member_paths() {
        assert_eq!(safe_relative(Path::new("./base/1/")), Some(PathBuf::from("base/1")));
        assert_eq!(safe_relative(Path::new("global/pg_control")), Some(PathBuf::from("global/pg_control")));
        assert_eq!(safe_relative(Path::new("/etc/passwd")), None);
        assert_eq!(safe_relative(Path::new("base/../../x")), None);
        assert_eq!(safe_relative(Path::new(".")), None);
    }
}
