//! Tidemark service core: the pure policies of the daemon, as functions of (data, now).
//!
//! Everything here computes a decision and does no I/O except [`Config::load`] reading the one
//! file it is given: no network, no global clock, no global random number generator. The daemon
//! (a later crate) owns the listener, the clock, the state database and the executor, and asks
//! this crate what to do.
//!
//! - [`config`]: the `tidemark.toml` of the issue's contract, parsed with every problem reported
//!   as `file:line:column: what; the fix`, all of them at once, before anything starts.
//! - [`schedule`]: cron expression plus IANA time zone to run instants, correct across DST;
//!   window verdicts and catching up after downtime.
//! - [`links`]: time-limited HMAC-signed download links.
//! - [`auth`]: bearer tokens (stored hashed) and roles.
//! - [`access`]: the IP allowlist and the X-Forwarded-For rule for trusted proxies.
//! - [`api`]: the records the daemon keeps and the [`Catalog`] and [`Control`] seams between its
//!   parts (state, daemon, HTTP layer).
//! - [`audit`]: the hash-chained, append-only audit log lines and their verification.
//!
//! ```
//! use jiff::Timestamp;
//! use tidemark_service_core::{Config, Verdict, window_verdict};
//!
//! let text = r#"
//! [server]
//! state_dir = "/var/lib/tidemark"
//!
//! [repositories.primary]
//! url = "/srv/backup/repo"
//! password_file = "/etc/tidemark/repo.pass"
//!
//! [sources.uploads]
//! kind = "directory"
//! paths = ["/srv/uploads"]
//! repository = "primary"
//! schedule = "0 1 * * *"
//! timezone = "Asia/Kolkata"
//! window = "1h"
//! "#;
//! let config = Config::parse(text, "tidemark.toml").unwrap();
//! let uploads = &config.sources["uploads"];
//!
//! // 01:00 in Kolkata is 19:30 UTC the day before.
//! let now: Timestamp = "2026-01-10T12:00:00Z".parse().unwrap();
//! let next = uploads.schedule.next_after(now).unwrap();
//! assert_eq!(next.to_string(), "2026-01-10T19:30:00Z");
//!
//! // At 20:45 UTC the one-hour window of that run has closed: the run is missed.
//! let late: Timestamp = "2026-01-10T20:45:00Z".parse().unwrap();
//! let window = uploads.window.unwrap();
//! assert!(matches!(window_verdict(next, window, late), Verdict::Missed { .. }));
//! ```
#![deny(missing_docs)]

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
mod duration;
pub mod links;
pub mod schedule;

use std::fmt;
use std::path::PathBuf;

use jiff::SignedDuration;

pub use access::AccessPolicy;
pub use api::{
    Catalog, CatalogError, Claim, Control, ControlError, DrillResult, FileStream, JobFilter, JobKind, JobLogLine,
    JobRecord, JobRequest, JobStatus, PolicyRow, RunKey, SnapshotInfo, SourceStatus, Trigger,
};
pub use audit::{AuditChain, AuditEntry, ChainBreak, verify_chain, verify_chain_to};
pub use auth::{Role, TokenRecord, TokenStore, generate_token};
pub use config::{Config, Retention, Source, SourceKind};
pub use duration::{format_duration, parse_duration};
pub use links::{LinkClaims, LinkError, LinkSigner};
pub use schedule::{CatchUp, Schedule, Verdict, window_verdict};

/// Result of this crate's fallible operations.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// One problem in a configuration file, located to the character.
///
/// Displays as `file:line:column: message`, the form editors and terminals turn into links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to [`Config::parse`] or the path given to [`Config::load`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// The error of every fallible operation in this crate.
///
/// Each message says what happened, where, and the fix. Match on the variant, or ask the
/// predicates, never on the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The configuration has one or more problems, in file order; each is its own line.
    #[error("{}", display_lines(.0))]
    Config(Vec<Diagnostic>),
    /// A file could not be read.
    #[error("cannot read {}: {source}; check that the file exists and is readable", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A cron expression does not parse.
    #[error(
        "invalid cron expression {expression:?}: {reason}; expected five fields \
         \"minute hour day-of-month month day-of-week\", e.g. \"0 1 * * *\" for daily at 01:00"
    )]
    InvalidCron {
        /// The expression.
        expression: String,
        /// Why the cron parser refused it.
        reason: String,
    },
    /// A time zone name is not in the time zone database.
    #[error("unknown time zone {name:?}; {}", match .suggestion {
        Some(s) => format!("did you mean {s:?}?"),
        None => "use an IANA name such as \"Europe/Berlin\" or \"UTC\"".to_string(),
    })]
    UnknownTimeZone {
        /// The name given.
        name: String,
        /// The nearest known name, if one is close.
        suggestion: Option<String>,
    },
    /// A duration such as `"1h"` does not parse.
    #[error(
        "invalid duration {text:?}: {reason}; write a number and a unit (s, m, h, d, w), \
         e.g. \"1h\", \"90m\" or \"1h30m\""
    )]
    InvalidDuration {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested link lifetime is above the configured maximum.
    #[error(
        "link lifetime {} is longer than the maximum {}; ask for at most {} or raise \
         server.link_max_ttl", format_duration(*.requested), format_duration(*.max),
        format_duration(*.max)
    )]
    TtlTooLong {
        /// The lifetime asked for.
        requested: SignedDuration,
        /// The configured maximum.
        max: SignedDuration,
    },
    /// A role name is not one of `viewer`, `operator`, `admin`.
    #[error("unknown role {0:?}; expected viewer, operator or admin")]
    UnknownRole(String),
    /// A signed link was refused.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The audit log's hash chain is broken.
    #[error(transparent)]
    AuditChain(#[from] ChainBreak),
}

impl ServiceError {
    /// The configuration problems, if this is a configuration error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ServiceError::Config(list) => list,
            _ => &[],
        }
    }

    /// Whether a user's input is at fault (as opposed to the machine): fixing the input, not
    /// retrying, is what helps.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, ServiceError::Read { .. })
    }

    /// Whether this is a refused link (expired, tampered or malformed): the HTTP layer answers 403
    /// and audits it.
    pub fn is_link_refusal(&self) -> bool {
        matches!(self, ServiceError::Link(_))
    }
}

fn display_lines(list: &[Diagnostic]) -> String {
    let lines: Vec<String> = list.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// The edit distance between two strings, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `given`, if it is close enough to be a likely typo.
pub(crate) fn nearest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let given_lower = given.to_ascii_lowercase();
    let limit = (given.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&given_lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("schedule", "schedule"), 0);
        assert_eq!(edit_distance("scheduel", "schedule"), 2);
        assert_eq!(edit_distance("primry", "primary"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn nearest_ignores_far_candidates() {
        let keys = ["schedule", "timezone", "window"];
        assert_eq!(nearest("scheduel", keys), Some("schedule"));
        assert_eq!(nearest("xyzzy", keys), None);
    }
}
