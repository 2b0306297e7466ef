//! The append-only audit log: one JSON object per line, each chained to the line before it by
//! that line's SHA-256.
//!
//! # Line format (version 1)
//!
//! ```text
//! {"seq":1,"time":"2026-01-10T19:30:00Z","actor":"ci","role":"operator","ip":"10.0.0.7","action":"POST /api/v1/sources/uploads/backup","target":"uploads","outcome":"ok","prev":"0000…0000"}
//! ```
//!
//! - `seq` counts entries from 1;
//! - `prev` is the lowercase hex SHA-256 of the previous line's exact bytes (without its
//!   newline), and 64 zeros ([`GENESIS`]) on the first line;
//! - `actor` and `role` are `null` when no valid token was presented; `detail` is present only
//!   when there is one.
//!
//! [`verify_chain`] finds a modified line (the next line's `prev` no longer matches), a removed
//! or reordered line (`seq` out of order) and a replaced first line. Removing or changing the
//! *last* line leaves no trace in the chain itself: the daemon records the [`AuditChain::head`]
//! elsewhere (its state database) and checks against it with [`verify_chain_to`]. Rewriting the
//! whole tail after a change is likewise only caught by that recorded head.

use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Role;

/// The `prev` of the first line: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: no or a wrong token, a role or address not allowed, an expired, tampered or
    /// reused link.
    Denied,
    /// Allowed, but it failed.
    Failed,
}

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub time: Timestamp,
    /// The token's name, if a valid token was presented.
    pub actor: Option<String>,
    /// The token's role, if a valid token was presented.
    pub role: Option<Role>,
    /// The client's address (after the X-Forwarded-For rule).
    pub ip: IpAddr,
    /// What was asked, e.g. `POST /api/v1/links` or `GET /links/…`.
    pub action: String,
    /// What it concerned: a source, a snapshot and path, a token name.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, for a refusal or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    #[serde(flatten)]
    entry: AuditEntry,
    prev: String,
}

/// Only what verification needs of a line.
#[derive(Deserialize)]
struct LineHead {
    seq: u64,
    prev: String,
}

/// Where a chain was found broken: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log line {line}: {reason}")]
pub struct ChainBreak {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The state needed to append the next line: its sequence number and the previous line's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChain {
    next_seq: u64,
    prev: String,
}

impl Default for AuditChain {
    fn default() -> Self {
        AuditChain::new()
    }
}

impl AuditChain {
    /// The start of a new log.
    pub fn new() -> AuditChain {
        AuditChain { next_seq: 1, prev: GENESIS.to_string() }
    }

    /// Continue a log whose last line is `last_line` (after a restart). Check the whole file
    /// with [`AuditChain::verify`] instead when there is time to.
    pub fn resume(last_line: &str) -> Result<AuditChain, ChainBreak> {
        let head = read_head(last_line, 1)?;
        Ok(AuditChain { next_seq: head.seq.saturating_add(1), prev: line_hash(last_line) })
    }

    /// The hash of the last line appended (or [`GENESIS`]): record it outside the log to detect
    /// a truncated or rewritten tail.
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// The `seq` the next line will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The line for `entry` (without a newline), chained to the previous one; the caller
    /// appends it to the log file, followed by `\n`.
    pub fn append(&mut self, entry: &AuditEntry) -> String {
        let line = Line { seq: self.next_seq, entry: entry.clone(), prev: std::mem::take(&mut self.prev) };
        // Plain strings, numbers and an address: serializing cannot fail.
        let text = serde_json::to_string(&line).unwrap_or_default();
        self.prev = line_hash(&text);
        self.next_seq = self.next_seq.saturating_add(1);
        text
    }

    /// Check that `lines` continue this chain, and return the chain after them. Line numbers
    /// in the error count from 1 at the first of `lines`.
    pub fn verify<'l>(&self, lines: impl IntoIterator<Item = &'l str>) -> Result<AuditChain, ChainBreak> {
        let mut chain = self.clone();
        for (index, line) in lines.into_iter().enumerate() {
            let number = index + 1;
            let head = read_head(line, number)?;
            let expected = chain.next_seq;
            if head.seq != expected {
                let reason = if head.seq > expected {
                    format!(
                        "entry {} where entry {expected} was expected: {} removed before it",
                        head.seq,
                        if head.seq - expected == 1 {
                            format!("entry {expected} was")
                        } else {
                            format!("entries {expected} to {} were", head.seq - 1)
                        }
                    )
                } else {
                    format!("entry {} where entry {expected} was expected: lines were reordered or repeated", head.seq)
                };
                return Err(ChainBreak { line: number, reason });
            }
            if head.prev != chain.prev {
                let reason = if number == 1 {
                    "its prev does not match where the chain starts: the first lines were replaced".to_string()
                } else {
                    format!("its prev does not match the hash of line {}: that line was modified", number - 1)
                };
                return Err(ChainBreak { line: number, reason });
            }
            chain.prev = line_hash(line);
            chain.next_seq = expected.saturating_add(1);
        }
        Ok(chain)
    }
}

/// Check a whole log, from its first line.
///
/// ```
/// use tidemark_service_core::audit::{AuditChain, AuditEntry, Outcome, verify_chain};
/// let mut chain = AuditChain::new();
/// let entry = AuditEntry {
///     time: "2026-01-10T19:30:00Z".parse().unwrap(),
///     actor: Some("ci".into()),
///     role: Some(tidemark_service_core::Role::Operator),
///     ip: "10.0.0.7".parse().unwrap(),
///     action: "POST /api/v1/sources/uploads/backup".into(),
///     target: "uploads".into(),
///     outcome: Outcome::Ok,
///     detail: None,
/// };
/// let lines = [chain.append(&entry), chain.append(&entry)];
/// assert!(verify_chain(lines.iter().map(String::as_str)).is_ok());
/// let edited = [lines[0].replace("uploads", "secrets"), lines[1].clone()];
/// assert_eq!(verify_chain(edited.iter().map(String::as_str)).unwrap_err().line, 2);
/// ```
pub fn verify_chain<'l>(lines: impl IntoIterator<Item = &'l str>) -> Result<(), ChainBreak> {
    AuditChain::new().verify(lines).map(|_| ())
}

/// [`verify_chain`], and check that the last line is the one whose hash was recorded as
/// `head`: this also finds a removed or modified last line.
pub fn verify_chain_to<'l>(lines: impl IntoIterator<Item = &'l str>, head: &str) -> Result<(), ChainBreak> {
    let mut count = 0;
    let chain = AuditChain::new().verify(lines.into_iter().inspect(|_| count += 1))?;
    if chain.head() == head {
        Ok(())
    } else {
        Err(ChainBreak {
            line: count,
            reason: "the log does not end with the recorded head: its last lines were removed or \
                     the last line was modified"
                .to_string(),
        })
    }
}

/// Read the entry of a line, with its `seq`: for listing the log.
pub fn parse_line(line: &str) -> Option<(u64, AuditEntry)> {
    let line: Line = serde_json::from_str(line).ok()?;
    Some((line.seq, line.entry))
}

fn read_head(line: &str, number: usize) -> Result<LineHead, ChainBreak> {
    let head: LineHead = serde_json::from_str(line)
        .map_err(|e| ChainBreak { line: number, reason: format!("not an audit entry ({e})") })?;
    if head.prev.len() != 64 || !head.prev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChainBreak { line: number, reason: "its prev is not a SHA-256 in hex".to_string() });
    }
    Ok(head)
}

fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}
