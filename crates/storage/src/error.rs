use std::fmt;

/// What kind of failure, so callers decide without matching strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such object.
    NotFound,
    /// The key exists and the backend refuses to overwrite it.
    AlreadyExists,
    /// Credentials refused, or an append-only / locked object refused a change.
    PermissionDenied,
    /// No space left on the device or quota exceeded.
    StorageFull,
    /// Network failure, timeout, throttling or 5xx: retrying may help.
    Transient,
    /// The server or backend is not reachable at all after retries.
    Unreachable,
    /// Anything else that retrying will not fix.
    Permanent,
}

/// A storage failure with the key and location it concerns.
#[derive(Debug, thiserror::Error)]
pub struct StorageError {
    kind: ErrorKind,
    key: Option<String>,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StorageError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError { kind, key: None, message: message.into(), source: None }
    }

    /// Attach the key concerned.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Attach an underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The key concerned, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Whether the object is missing.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The message without the key, for wrapping this error in another one's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(key) = &self.key {
            write!(f, " (object {key})")?;
        }
        Ok(())
    }
}
