//! The audit log file, `state_dir/audit.log`: hash-chained JSON lines (see
//! [`tidemark_service_core::audit`]), each line flushed to disk before the call it records is
//! answered. Writers in one process take a mutex; writers in several processes (the daemon and
//! `tidemark token create`) also take an exclusive lock on the file, and a writer that finds the
//! file grown since its last line continues the chain from the line another process appended.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use serde::Serialize;
use tidemark_service_core::audit::{AuditChain, AuditEntry, ChainBreak, parse_line};

/// The audit log's name in the state directory.
pub const AUDIT_FILE: &str = "audit.log";

/// How far from the end [`AuditLog::open`] looks for the last line.
const TAIL: u64 = 1 << 20;

/// The open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    file: File,
    chain: AuditChain,
    /// The file's size after this writer's last line: a different size means another process
    /// appended, and the chain continues from its line.
    end: u64,
}

/// What [`AuditLog::read`] returns: the log's last entries and whether the whole chain verifies.
#[derive(Debug, Clone, Serialize)]
pub struct AuditView {
    /// Whether every line chains to the one before it.
    pub verified: bool,
    /// Where the chain breaks, when it does.
    pub problem: Option<String>,
    /// The hash of the last line (record it elsewhere to detect a cut tail).
    pub head: String,
    /// How many lines the log holds.
    pub total: usize,
    /// The newest entries, oldest first, each with its `seq`.
    pub entries: Vec<serde_json::Value>,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) `state_dir/audit.log` and continues its chain from the last
    /// line.
    pub fn open(state_dir: &Path) -> anyhow::Result<AuditLog> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
        let path = state_dir.join(AUDIT_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open the audit log {}; check the state directory", path.display()))?;
        let chain =
            match last_line(&mut file).with_context(|| format!("cannot read the audit log {}", path.display()))? {
                None => AuditChain::new(),
                Some(line) => AuditChain::resume(&line).map_err(|e| {
                    anyhow::anyhow!(
                        "the audit log {} ends in a line that is not an audit entry ({}); move the file aside \
                     (it is evidence) and start again",
                        path.display(),
                        e.reason
                    )
                })?,
            };
        let end = file.seek(SeekFrom::End(0)).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(AuditLog { path, writer: Mutex::new(Writer { file, chain, end }) })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` and flushes it to disk. Blocking: call it from a blocking thread.
    pub fn append(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.path.display();
        writer.file.lock().with_context(|| format!("cannot lock the audit log {path}"))?;
        let appended = append_locked(&mut writer, entry);
        let unlocked = writer.file.unlock();
        appended.with_context(|| format!("cannot append to the audit log {path}; check the disk"))?;
        unlocked.with_context(|| format!("cannot unlock the audit log {path}"))?;
        Ok(())
    }

    /// Reads the whole log, verifies its chain and returns its last `limit` entries. Blocking.
    pub fn read(&self, limit: usize) -> anyhow::Result<AuditView> {
        // Holding the writer's lock keeps a half-written line out of the read.
        let writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read the audit log {}", self.path.display()))?;
        drop(writer);
        let lines: Vec<&str> = text.lines().collect();
        let (verified, problem, head) = match AuditChain::new().verify(lines.iter().copied()) {
            Ok(chain) => (true, None, chain.head().to_string()),
            Err(ChainBreak { line, reason }) => (false, Some(format!("line {line}: {reason}")), String::new()),
        };
        let entries = lines[lines.len().saturating_sub(limit)..]
            .iter()
            .map(|line| match parse_line(line) {
                Some((seq, entry)) => {
                    let mut value = serde_json::to_value(entry).unwrap_or_default();
                    value["seq"] = seq.into();
                    value
                }
                None => serde_json::json!({ "unreadable": line }),
            })
            .collect();
        Ok(AuditView { verified, problem, head, total: lines.len(), entries })
    }
}

/// Appends under the file lock, first catching up with lines other processes appended.
fn append_locked(writer: &mut Writer, entry: &AuditEntry) -> anyhow::Result<()> {
    let size = writer.file.seek(SeekFrom::End(0))?;
    if size != writer.end {
        writer.chain = match last_line(&mut writer.file)? {
            None => AuditChain::new(),
            Some(line) => AuditChain::resume(&line).map_err(|e| anyhow::anyhow!("its last line: {}", e.reason))?,
        };
    }
    let mut chain = writer.chain.clone();
    let mut line = chain.append(entry);
    line.push('\n');
    writer.file.write_all(line.as_bytes())?;
    writer.file.sync_data()?;
    writer.chain = chain;
    writer.end = size + line.len() as u64;
    Ok(())
}

/// The last complete line of the file, if any. A torn last line (a crash in the middle of a
/// write, which was never acknowledged) is an error for the operator to look at.
fn last_line(file: &mut File) -> anyhow::Result<Option<String>> {
    let size = file.seek(SeekFrom::End(0))?;
    if size == 0 {
        return Ok(None);
    }
    let start = size.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() != Some(&b'\n') {
        bail!(
            "its last line is incomplete (a crash while writing?); move the file aside (it is evidence) and start again"
        );
    }
    let body = &tail[..tail.len() - 1];
    let begin = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        None => bail!("its last line is longer than {TAIL} bytes"),
    };
    let line = std::str::from_utf8(&body[begin..]).context("its last line is not UTF-8")?;
    Ok(Some(line.to_string()))
}
