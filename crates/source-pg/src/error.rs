//! The one error type of this crate.

use std::fmt;
use std::io;

/// What went wrong, for deciding what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The network or the socket failed (refused, reset, closed, timed out).
    Io,
    /// The connection string or the options are wrong.
    Config,
    /// The server refused the credentials, or asked for a method this client does not speak.
    Auth,
    /// The server answered with an error (see [`PgError::sqlstate`]).
    Server,
    /// The server sent something this client cannot understand: a malformed message, an
    /// unexpected message, or a malformed tar stream.
    Protocol,
    /// WAL bytes that are not what they must be: a bad page header, or a segment of another
    /// cluster, version or segment size.
    Wal,
    /// The caller's sink failed.
    Sink,
    /// The repository failed (storage, authentication of stored bytes, locks); the
    /// [`source`](std::error::Error::source) is the engine's error.
    Repository,
    /// The repository already holds something different under this name (a WAL segment or
    /// history file with other content, a source name used by another cluster): nothing was
    /// overwritten.
    Conflict,
    /// A recovery target the repository cannot reach (before the oldest base backup, after the
    /// newest archived WAL, inside a gap), or no base backup at all.
    Target,
    /// A local file or directory (the WAL file to push, the restore target) could not be used.
    Local,
}

/// An error from the PostgreSQL source: what happened, with the context and, where there is one,
/// the fix.
#[derive(Debug)]
pub struct PgError {
    kind: ErrorKind,
    message: String,
    sqlstate: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PgError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PgError { kind, message: message.into(), sqlstate: None, source: None }
    }

    pub(crate) fn io(context: &str, err: io::Error) -> Self {
        PgError {
            kind: ErrorKind::Io,
            message: format!("{context}: {err}"),
            sqlstate: None,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn wal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Wal, message)
    }

    pub(crate) fn server(sqlstate: Option<String>, message: String) -> Self {
        let kind = match sqlstate.as_deref() {
            // invalid_authorization_specification, invalid_password
            Some("28000" | "28P01") => ErrorKind::Auth,
            _ => ErrorKind::Server,
        };
        PgError { kind, message, sqlstate, source: None }
    }

    /// Wrap an error of the caller's sink (for example the repository's archiver failing).
    pub fn sink(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let source = err.into();
        PgError { kind: ErrorKind::Sink, message: source.to_string(), sqlstate: None, source: Some(source) }
    }

    /// A repository error, with what was being done; the engine's hint, if any, is kept.
    pub fn repository(context: &str, err: tidemark_repo::RepoError) -> Self {
        let message = match err.hint() {
            Some(hint) => format!("{context}: {err} (hint: {hint})"),
            None => format!("{context}: {err}"),
        };
        PgError { kind: ErrorKind::Repository, message, sqlstate: None, source: Some(Box::new(err)) }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub(crate) fn target(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Target, message)
    }

    pub(crate) fn local(context: impl std::fmt::Display, err: io::Error) -> Self {
        PgError {
            kind: ErrorKind::Local,
            message: format!("{context}: {err}"),
            sqlstate: None,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn local_msg(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Local, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server's SQLSTATE code, for [`ErrorKind::Server`] and [`ErrorKind::Auth`] errors.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again later (on a new connection) may succeed: network failures, a server
    /// shutting down or starting up, too many connections. Wrong credentials, bad options,
    /// protocol violations and foreign WAL never are.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            ErrorKind::Io => true,
            ErrorKind::Server => self.sqlstate.as_deref().is_some_and(|code| {
                // 08: connection exception; 53: insufficient resources (too many connections);
                // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now; 58030: I/O error.
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(code, "57P01" | "57P02" | "57P03" | "58030")
            }),
            _ => false,
        }
    }

    pub(crate) fn with_context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Into an `io::Error`, to travel through a `Read` implementation; [`from_io`](Self::from_io)
    /// takes it back out.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// An `io::Error` from a reader: ours back out of [`into_io`](Self::into_io), anything else
    /// (the tar parser's complaints) as a protocol error with `context`.
    pub(crate) fn from_io(err: io::Error, context: &str) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<PgError>()) {
            if let Some(inner) = err.into_inner()
                && let Ok(pg) = inner.downcast::<PgError>()
            {
                return *pg;
            }
            return PgError::protocol(context.to_owned());
        }
        PgError::protocol(format!("{context}: {err}"))
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        assert!(PgError::io("read", io::Error::from(io::ErrorKind::ConnectionReset)).is_transient());
        assert!(PgError::server(Some("57P03".into()), "starting up".into()).is_transient());
        assert!(PgError::server(Some("53300".into()), "too many".into()).is_transient());
        assert!(!PgError::server(Some("42710".into()), "exists".into()).is_transient());
        let auth = PgError::server(Some("28P01".into()), "bad password".into());
        assert_eq!(auth.kind(), ErrorKind::Auth);
        assert!(!auth.is_transient());
        assert!(!PgError::protocol("bad").is_transient());
        assert!(!PgError::wal("foreign").is_transient());
    }

    #[test]
    fn io_round_trip_keeps_the_error() {
        let err = PgError::wal("foreign segment").into_io();
        let back = PgError::from_io(err, "reading");
        assert_eq!(back.kind(), ErrorKind::Wal);
        let other = PgError::from_io(io::Error::other("bad header"), "tar");
        assert_eq!(other.kind(), ErrorKind::Protocol);
        assert!(other.message().contains("bad header"));
    }
}
