//! Exit codes, and the one place that turns an error into a message and a code.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also: stdout was closed early, e.g. `tidemark dump ... \| head`) |
//! | 1 | fatal error; also `check` found damage, `restore` could not restore some files |
//! | 2 | usage error: unknown command or flag, bad value, options that do not go together |
//! | 3 | `backup` saved a snapshot, but some files could not be read (they are not in it) |
//! | 10 | there is no repository at the location |
//! | 11 | the repository is locked by another process; `serve`: its embedded state is in use |
//! | 12 | wrong password or key file |
//!
//! `pg archive-push` and `pg archive-get` run under PostgreSQL (`archive_command`,
//! `restore_command`), which restarts its archiver or aborts recovery on a code above 125, so they
//! have their own table and map every error, including a wrong password, a missing repository or
//! unreachable storage, into it ([`Status::WalPushFailed`], [`Status::WalNotFound`],
//! [`Status::WalGetFailed`]):
//!
//! | command | 0 | 1 | 2 | 126 |
//! |---|---|---|---|---|
//! | `pg archive-push` | stored, or already stored with identical bytes | any error (PostgreSQL retries) | usage error | never |
//! | `pg archive-get` | found and written | not in the repository | usage error | any other error |
//!
//! archive-push stays below 126 so that PostgreSQL keeps its archiver running and retries.
//! archive-get goes above 125 on purpose: PostgreSQL takes any code up to 125 as "no such file",
//! the end of the archive, and would finish recovery early and open the cluster at an earlier
//! point than asked, silently. Code 126 makes it abort recovery instead; started again once the
//! repository is reachable, it resumes where it stopped.
//!
//! Errors print as `Fatal: <message>` on stderr, followed by `hint: <what to do>` when there is a
//! hint; never a panic or a backtrace. The same table is in docs/CLI.md.

use std::io;
use std::process::ExitCode;

use tidemark_repo::RepoError;
use tidemark_service_core::CatalogError;
use tidemark_source_fs::FsError;
use tidemark_source_objects::ObjectsError;
use tidemark_storage::StorageError;

/// Success.
pub const OK: u8 = 0;
/// Fatal error.
pub const FATAL: u8 = 1;
/// Usage error (clap exits with it by itself).
pub const USAGE: u8 = 2;
/// Backup saved a snapshot, but some files could not be read.
pub const INCOMPLETE_BACKUP: u8 = 3;
/// No repository at the location.
pub const NO_REPOSITORY: u8 = 10;
/// Could not lock the repository; or `serve` found its embedded state held by another daemon.
pub const LOCKED: u8 = 11;
/// Wrong password or key file.
pub const WRONG_PASSWORD: u8 = 12;
/// `pg archive-get` failed for a reason other than the file's absence: above 125, so that
/// PostgreSQL aborts recovery rather than ending it early at an earlier point than asked.
pub const WAL_GET_ERROR: u8 = 126;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything went well.
    Ok,
    /// Backup saved a snapshot but skipped unreadable files.
    Incomplete,
    /// The command ran to its end but found or caused damage (check errors, restore errors); the
    /// details were printed.
    Failed,
    /// `pg archive-push` failed (the error was printed): 1, whatever the error.
    WalPushFailed,
    /// `pg archive-get`: the repository does not hold the file.
    WalNotFound,
    /// `pg archive-get` failed (the error was printed): 2, whatever the error.
    WalGetFailed,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => OK,
            Status::Incomplete => INCOMPLETE_BACKUP,
            Status::Failed | Status::WalPushFailed | Status::WalNotFound => FATAL,
            Status::WalGetFailed => WAL_GET_ERROR,
        }
    }
}

/// An error of the command line itself (bad combination of options, missing password), with the
/// fix.
#[derive(Debug)]
pub struct UserError {
    message: String,
    hint: Option<String>,
    usage: bool,
}

impl UserError {
    /// An error with a hint.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        UserError { message: message.into(), hint: Some(hint.into()), usage: false }
    }

    /// An error without a hint.
    pub fn plain(message: impl Into<String>) -> Self {
        UserError { message: message.into(), hint: None, usage: false }
    }

    /// Arguments that do not go together (exit code 2, like the argument parser's errors).
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        UserError { message: message.into(), hint: Some(hint.into()), usage: true }
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// The repository error this error is or wraps (directly, or inside a source's error).
fn as_repo_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RepoError> {
    e.downcast_ref::<RepoError>()
        .or_else(|| match e.downcast_ref::<FsError>() {
            Some(FsError::Repo(r)) => Some(r),
            _ => None,
        })
        .or_else(|| match e.downcast_ref::<ObjectsError>() {
            Some(ObjectsError::Repo(r)) => Some(r),
            _ => None,
        })
}

/// The repository error somewhere in the chain, if any.
fn repo_error(err: &anyhow::Error) -> Option<&RepoError> {
    err.chain().find_map(as_repo_error)
}

/// Whether the error is (caused by) writing to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

/// The exit code for an error.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if is_broken_pipe(err) {
        return OK;
    }
    if err.chain().any(|e| e.downcast_ref::<UserError>().is_some_and(|u| u.usage)) {
        return USAGE;
    }
    if err.chain().any(|e| matches!(e.downcast_ref::<CatalogError>(), Some(CatalogError::Locked { .. }))) {
        return LOCKED;
    }
    match repo_error(err) {
        Some(RepoError::NoRepository(_)) => NO_REPOSITORY,
        Some(RepoError::Locked { .. }) => LOCKED,
        Some(RepoError::WrongPassword(_)) => WRONG_PASSWORD,
        _ => FATAL,
    }
}

/// Hints the engine leaves to the front end: they name commands.
fn cli_hint(err: &RepoError) -> Option<String> {
    match err {
        RepoError::SnapshotNotFound(_) => Some("`tidemark snapshots` lists the snapshots and their ids".into()),
        RepoError::AmbiguousSnapshot(_) => Some("give more digits of the snapshot id".into()),
        _ => None,
    }
}

/// The hint for an error, if any.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    for e in err.chain() {
        if let Some(u) = e.downcast_ref::<UserError>() {
            return u.hint.clone();
        }
        if let Some(r) = as_repo_error(e) {
            return r.hint().or_else(|| cli_hint(r));
        }
        if let Some(o) = e.downcast_ref::<ObjectsError>() {
            return o.hint();
        }
        if let Some(s) = e.downcast_ref::<StorageError>() {
            return RepoError::Storage(StorageError::new(s.kind(), String::new())).hint();
        }
    }
    None
}

/// The error and its causes on one line, leaving out causes whose text is already shown (wrapping
/// errors often repeat their source's message). A storage error's message is complete: the
/// backend's own error chain below it (HTTP client internals) is left out.
pub fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        if cause.downcast_ref::<StorageError>().is_some()
            || matches!(cause.downcast_ref::<ObjectsError>(), Some(ObjectsError::Bucket(_)))
        {
            break;
        }
    }
    text
}

/// Print `err` for the user and return the exit code. The only place errors become codes.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = code_for(err);
    if code == OK {
        // stdout went away (`| head`): the reader had what it wanted.
        return ExitCode::from(OK);
    }
    print(err);
    ExitCode::from(code)
}

/// Print `err` as `Fatal: ...` and its hint on stderr.
pub fn print(err: &anyhow::Error) {
    eprintln!("Fatal: {}", message(err));
    if let Some(hint) = hint_for(err) {
        eprintln!("hint: {hint}");
    }
}

/// The status of `pg archive-push` (`get == false`) or `pg archive-get` after `err`, printed:
/// never 10-12; above 125 only for archive-get (see the table above).
pub fn wal_failure(err: &anyhow::Error, get: bool) -> Status {
    print(err);
    if get { Status::WalGetFailed } else { Status::WalPushFailed }
}

/// Replace the panic message by a short one without a backtrace: a panic is a bug, and the user
/// needs to know what to report, not the stack.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("Fatal: internal error (a bug in tidemark): {what}{place}");
        eprintln!("hint: please report it, with the command you ran; RUST_BACKTRACE=1 shows more");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_repository_error() {
        let e = anyhow::Error::new(RepoError::WrongPassword("/r".into()));
        assert_eq!(code_for(&e), WRONG_PASSWORD);
        let e = anyhow::Error::new(FsError::Repo(RepoError::NoRepository("/r".into()))).context("opening");
        assert_eq!(code_for(&e), NO_REPOSITORY);
        let e = anyhow::Error::new(RepoError::Locked { holder: "x".into() });
        assert_eq!(code_for(&e), LOCKED);
        let state = CatalogError::Locked { path: "/var/lib/tidemark".into(), holder: "pid 7".into() };
        assert_eq!(code_for(&anyhow::Error::new(state)), LOCKED);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), FATAL);
        let pipe = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert_eq!(code_for(&pipe), OK);
    }

    #[test]
    fn message_skips_repeated_causes_and_hint_is_found() {
        let storage = StorageError::new(tidemark_storage::ErrorKind::Unreachable, "connection refused");
        let e = anyhow::Error::new(RepoError::Storage(storage)).context("opening s3://b");
        assert_eq!(message(&e), "opening s3://b: storage: connection refused");
        let inner = StorageError::new(tidemark_storage::ErrorKind::Unreachable, "refused")
            .with_source(io::Error::other("client internals"));
        let e = anyhow::Error::new(RepoError::Storage(inner));
        assert_eq!(message(&e), "storage: refused");
        assert!(hint_for(&e).is_some_and(|h| h.contains("endpoint")));
        let u = anyhow::Error::new(UserError::new("no policy", "give --keep-last"));
        assert_eq!(hint_for(&u).as_deref(), Some("give --keep-last"));
    }

    #[test]
    fn archive_push_stays_below_126_and_archive_get_aborts_recovery_on_errors() {
        let wrong = anyhow::Error::new(RepoError::WrongPassword("/r".into()));
        assert_eq!(wal_failure(&wrong, false).code(), 1);
        assert!(wal_failure(&wrong, true).code() > 125, "PostgreSQL must abort recovery, not end it");
        let none = anyhow::Error::new(RepoError::NoRepository("/r".into()));
        assert_eq!(wal_failure(&none, false).code(), 1);
        assert_eq!(Status::WalNotFound.code(), 1);
    }

    #[test]
    fn bucket_errors_get_codes_and_hints() {
        let e = anyhow::Error::new(ObjectsError::Repo(RepoError::WrongPassword("/r".into()))).context("backup");
        assert_eq!(code_for(&e), WRONG_PASSWORD);
        let denied = StorageError::new(tidemark_storage::ErrorKind::PermissionDenied, "403 on list")
            .with_source(io::Error::other("client internals"));
        let e = anyhow::Error::new(ObjectsError::Bucket(denied)).context("bucket s3://b");
        assert_eq!(code_for(&e), FATAL);
        assert_eq!(message(&e), "bucket s3://b: 403 on list");
        assert!(hint_for(&e).is_some_and(|h| h.contains("AWS_ACCESS_KEY_ID")), "{:?}", hint_for(&e));
        let u = anyhow::Error::new(UserError::usage("mixed", "one kind per backup"));
        assert_eq!(code_for(&u), USAGE);
    }
}
