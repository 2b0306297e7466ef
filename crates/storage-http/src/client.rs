//! The client: [`Storage`] on a repository server.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use tidemark_storage::{Entry, ErrorKind, Result, Storage, StorageError, check_key};
use ureq::Agent;
use ureq::http::Response;

use crate::protocol::{CONTENT_DIGEST, ListEntry, content_digest, encode};

/// A repository on a `tidemark serve-repo` server, at `http://host:port/[base/]` or `https://...`.
///
/// - Every object is `<base URL><key>`; a listing is `GET <base URL>?list=<prefix>`.
/// - `put` sends `If-None-Match: *` (create-only; `412`/`409` is [`ErrorKind::AlreadyExists`])
///   and a `Content-Digest` the server verifies before storing; `put_overwrite` sends no
///   precondition.
/// - Statuses map to kinds: `404` not found, `409`/`412` already exists, `401`/`403` permission
///   denied (an append-only server refusing a delete), `507` storage full, `408`, `429`, `502`,
///   `503`, `504` and connection failures transient; `500` (the server's own storage failed
///   permanently) and other statuses permanent. Wrap it in a `RetryStorage` for retries.
/// - The bearer token, when given, goes in `Authorization: Bearer` on every request.
///
/// ```no_run
/// use tidemark_storage::Storage;
/// use tidemark_storage_http::HttpStorage;
/// let s = HttpStorage::new("http://127.0.0.1:8000/", None).unwrap();
/// s.put("snapshots/1", b"{}").unwrap();
/// ```
pub struct HttpStorage {
    base: String,
    token: Option<String>,
    agent: Agent,
}

impl fmt::Debug for HttpStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStorage").field("base", &self.base).field("token", &self.token.is_some()).finish()
    }
}

impl HttpStorage {
    /// A client for the server at `url` (`http://` or `https://`, a trailing `/` is added when
    /// missing; no query or fragment), sending `token` as a bearer token when given.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let permanent =
            |why: &str| StorageError::new(ErrorKind::Permanent, format!("invalid server URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| permanent("it must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(permanent("it has no host"));
        }
        if url.contains(['?', '#']) {
            return Err(permanent("it may not have a query or fragment"));
        }
        let mut base = url.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpStorage { base, token, agent: config.into() })
    }

    fn url(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{}", self.base, encode(key, true)))
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// A transport failure (connection refused, reset, timeout): transient unless it is a
    /// configuration problem.
    fn transport(&self, op: &str, key: Option<&str>, err: ureq::Error) -> StorageError {
        let kind = match err {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_) => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let what = key.map_or_else(String::new, |k| format!(" {k}"));
        let e = StorageError::new(kind, format!("{op}{what} on {}: {err}", self.base)).with_source(err);
        match key {
            Some(k) => e.with_key(k),
            None => e,
        }
    }

    /// The error for a non-success status, with the server's own explanation.
    fn status(&self, op: &str, key: Option<&str>, mut response: Response<ureq::Body>) -> StorageError {
        let status = response.status().as_u16();
        let kind = match status {
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::AlreadyExists,
            401 | 403 => ErrorKind::PermissionDenied,
            507 => ErrorKind::StorageFull,
            408 | 429 | 502..=504 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
        let reason = response.status().canonical_reason().unwrap_or("");
        let what = key.map_or_else(String::new, |k| format!(" {k}"));
        let mut message = format!("{op}{what} on {}: {status} {reason}", self.base);
        // A HEAD answer has no body to explain itself.
        let explanation = match (body.trim(), status) {
            ("", 401) => "missing or wrong bearer token",
            ("", 403) => "refused by the server",
            (body, _) => body,
        };
        if !explanation.is_empty() {
            message.push_str(": ");
            message.push_str(explanation);
        }
        let e = StorageError::new(kind, message);
        match key {
            Some(k) => e.with_key(k),
            None => e,
        }
    }

    fn read_body(&self, op: &str, key: &str, mut response: Response<ureq::Body>) -> Result<Vec<u8>> {
        response.body_mut().with_config().read_to_vec().map_err(|e| self.transport(op, Some(key), e))
    }

    fn put_inner(&self, key: &str, data: &[u8], create_only: bool) -> Result<()> {
        let op = if create_only { "PUT" } else { "PUT (overwrite)" };
        let url = self.url(key)?;
        let mut request = self.auth(self.agent.put(&url)).header(CONTENT_DIGEST, content_digest(data));
        if create_only {
            request = request.header("If-None-Match", "*");
        }
        let response = request.send(data).map_err(|e| self.transport(op, Some(key), e))?;
        if response.status().is_success() { Ok(()) } else { Err(self.status(op, Some(key), response)) }
    }
}

impl Storage for HttpStorage {
    fn location(&self) -> String {
        self.base.clone()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let url = format!("{}?list={}", self.base, encode(prefix, false));
        let response = self.auth(self.agent.get(&url)).call().map_err(|e| self.transport("list", Some(prefix), e))?;
        if !response.status().is_success() {
            return Err(self.status("list", Some(prefix), response));
        }
        // A cut-off body is a read error or invalid JSON: never a short list.
        let body = self.read_body("list", prefix, response)?;
        let entries: Vec<ListEntry> = serde_json::from_slice(&body).map_err(|e| {
            StorageError::new(ErrorKind::Transient, format!("list {prefix} on {}: malformed listing: {e}", self.base))
        })?;
        Ok(entries.into_iter().map(|e| Entry { key: e.key, size: e.size }).collect())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let url = self.url(key)?;
        let response = self.auth(self.agent.get(&url)).call().map_err(|e| self.transport("GET", Some(key), e))?;
        if response.status().as_u16() != 200 {
            return Err(self.status("GET", Some(key), response));
        }
        self.read_body("GET", key, response)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let url = self.url(key)?;
        if range.start > range.end {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                format!("byte range {}..{} is invalid", range.start, range.end),
            )
            .with_key(key));
        }
        if range.start == range.end {
            // HTTP has no empty range; an empty read only needs the object to be long enough.
            return match self.stat(key)? {
                Some(size) if size >= range.end => Ok(Vec::new()),
                Some(size) => Err(StorageError::new(
                    ErrorKind::Permanent,
                    format!("byte range {}..{} is invalid for an object of {size} bytes", range.start, range.end),
                )
                .with_key(key)),
                None => Err(StorageError::new(ErrorKind::NotFound, "no such object").with_key(key)),
            };
        }
        let request =
            self.auth(self.agent.get(&url)).header("Range", format!("bytes={}-{}", range.start, range.end - 1));
        let response = request.call().map_err(|e| self.transport("GET (range)", Some(key), e))?;
        if response.status().as_u16() != 206 {
            return Err(self.status("GET (range)", Some(key), response));
        }
        let data = self.read_body("GET (range)", key, response)?;
        if data.len() as u64 != range.end - range.start {
            return Err(StorageError::new(
                ErrorKind::Transient,
                format!(
                    "GET (range) {key} on {}: got {} bytes instead of {}",
                    self.base,
                    data.len(),
                    range.end - range.start
                ),
            )
            .with_key(key));
        }
        Ok(data)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        let url = self.url(key)?;
        let response = self.auth(self.agent.head(&url)).call().map_err(|e| self.transport("HEAD", Some(key), e))?;
        match response.status().as_u16() {
            200 => {
                let len = response.headers().get("Content-Length").and_then(|v| v.to_str().ok()?.parse().ok());
                len.map(Some).ok_or_else(|| {
                    StorageError::new(ErrorKind::Permanent, format!("HEAD {key} on {}: no Content-Length", self.base))
                        .with_key(key)
                })
            }
            404 => Ok(None),
            _ => Err(self.status("HEAD", Some(key), response)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_inner(key, data, true)
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_inner(key, data, false)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let url = self.url(key)?;
        let response = self.auth(self.agent.delete(&url)).call().map_err(|e| self.transport("DELETE", Some(key), e))?;
        if response.status().is_success() || response.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(self.status("DELETE", Some(key), response))
        }
    }
}
