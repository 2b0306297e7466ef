//! The repository server: any [`Storage`] over HTTP, optionally append-only.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpListener;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use subtle::ConstantTimeEq;
use tidemark_storage::{ErrorKind, Storage, StorageError, check_key};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::protocol::{CONTENT_DIGEST, ListEntry, content_digest, decode, is_lock};

/// The largest object a `PUT` may carry (packs are at most 1 GiB plus headers).
pub const MAX_OBJECT_SIZE: u64 = 2 << 30;

/// Who may do what.
///
/// - `append_only`: clients may create objects and read everything, but never delete or replace
///   one, except lock objects under `locks/`, which clients must refresh (replace) and release
///   (delete). Lock objects hold no backup data: tampering with them can at worst make an
///   operation wait or skip its lock check, never remove a snapshot, an index or a pack.
/// - `token`: when set, every request must carry `Authorization: Bearer <token>` (or the admin
///   token); otherwise `401`.
/// - `admin_token`: when set, a request bearing it is served without the append-only restriction:
///   the separate, stronger credential that `forget --prune` and `prune` use. Without it, prune runs
///   directly on the server's storage.
#[derive(Clone, Default)]
pub struct ServerPolicy {
    /// Refuse deletes and overwrites outside `locks/`.
    pub append_only: bool,
    /// The bearer token clients must present, if any.
    pub token: Option<String>,
    /// The bearer token that lifts the append-only restriction, if any.
    pub admin_token: Option<String>,
}

impl fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPolicy")
            .field("append_only", &self.append_only)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Tells a running [`HttpServer`] to stop: it finishes the requests in progress and returns.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the server to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where the server's messages go (refused requests, internal errors); libraries never print.
pub type ServerLog = Arc<dyn Fn(&str) + Send + Sync>;

/// Serve `storage` on `listener` under `policy` until `shutdown` is triggered.
///
/// ```no_run
/// use std::net::TcpListener;
/// use std::sync::Arc;
/// use tidemark_storage::LocalStorage;
/// use tidemark_storage_http::{ServerPolicy, Shutdown, serve};
/// let listener = TcpListener::bind("127.0.0.1:8000").unwrap();
/// let policy = ServerPolicy { append_only: true, ..Default::default() };
/// serve(listener, Arc::new(LocalStorage::new("/srv/repo")), policy, &Shutdown::new()).unwrap();
/// ```
pub fn serve(
    listener: TcpListener,
    storage: Arc<dyn Storage>,
    policy: ServerPolicy,
    shutdown: &Shutdown,
) -> io::Result<()> {
    HttpServer::new(storage, policy).serve(listener, shutdown)
}

/// The server: a [`Storage`], a [`ServerPolicy`] and a log. The protocol is described in the crate
/// documentation.
pub struct HttpServer {
    storage: Arc<dyn Storage>,
    policy: ServerPolicy,
    log: Option<ServerLog>,
    workers: usize,
    request_ids: AtomicU64,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("storage", &self.storage.location())
            .field("policy", &self.policy)
            .field("workers", &self.workers)
            .finish()
    }
}

/// What a request may do, from its bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Subject to the policy's append-only flag.
    Client,
    /// Presented the admin token: full access.
    Admin,
}

/// A response before it is written.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// For `HEAD`: the length to announce without a body.
    head_len: Option<u64>,
    content_range: Option<String>,
}

impl Reply {
    fn ok(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, body, head_len: None, content_range: None }
    }

    fn text(status: u16, message: impl Into<String>) -> Reply {
        Reply::ok(status, message.into().into_bytes())
    }
}

const APPEND_ONLY_HINT: &str = "this repository server is append-only: clients may add objects but not delete or \
replace them (only locks/); run forget/prune with the admin token or directly on the server's storage";

impl HttpServer {
    /// A server for `storage` under `policy`, with 8 worker threads and no log.
    pub fn new(storage: Arc<dyn Storage>, policy: ServerPolicy) -> Self {
        HttpServer { storage, policy, log: None, workers: 8, request_ids: AtomicU64::new(1) }
    }

    /// Send refused requests and internal errors to `log`.
    #[must_use]
    pub fn with_log(mut self, log: ServerLog) -> Self {
        self.log = Some(log);
        self
    }

    /// Requests served at once (at least 1).
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    fn log(&self, message: &str) {
        if let Some(log) = &self.log {
            log(message);
        }
    }

    /// Serve on `listener` until `shutdown` is triggered (checked every 100 ms); requests in
    /// progress finish first, then the listener is closed. Idle connections that clients keep alive
    /// are not cut (tiny_http has no way to): a request on one of them after shutdown gets no answer
    /// until the client's timeout. `tidemark serve-repo` exits its process, which closes them all.
    pub fn serve(&self, listener: TcpListener, shutdown: &Shutdown) -> io::Result<()> {
        let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.workers)
                .map(|_| {
                    scope.spawn(|| -> io::Result<()> {
                        while !shutdown.is_triggered() {
                            if let Some(request) = server.recv_timeout(Duration::from_millis(100))? {
                                self.respond(request);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut result = Ok(());
            for worker in workers {
                let outcome = worker.join().unwrap_or_else(|_| Err(io::Error::other("a server worker panicked")));
                if outcome.is_err() {
                    // One worker failing stops the others too.
                    shutdown.trigger();
                    result = result.and(outcome);
                }
            }
            result
        })
    }

    fn respond(&self, mut request: Request) {
        let reply = self.handle(&mut request);
        let is_head = *request.method() == Method::Head;
        let mut headers = vec![Header::from_bytes("Content-Type", "application/octet-stream").expect("valid header")];
        if let Some(range) = &reply.content_range {
            headers.push(Header::from_bytes("Content-Range", range.as_bytes()).expect("valid header"));
        }
        let response = match reply.head_len {
            Some(len) if is_head => {
                Response::new(StatusCode(reply.status), headers, io::empty(), usize::try_from(len).ok(), None).boxed()
            }
            _ => {
                let len = reply.body.len();
                Response::new(StatusCode(reply.status), headers, io::Cursor::new(reply.body), Some(len), None).boxed()
            }
        };
        // Always a Content-Length, never chunked: a client tells a cut-off body from a whole one.
        let _ = request.respond(response.with_chunked_threshold(usize::MAX));
    }

    fn handle(&self, request: &mut Request) -> Reply {
        let role = match self.authorize(request) {
            Ok(role) => role,
            Err(reply) => return reply,
        };
        let append_only = self.policy.append_only && role == Role::Client;
        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let method = request.method().clone();
        if path == "/" {
            return match (&method, list_prefix(query)) {
                (Method::Get, Some(Some(prefix))) => self.list(&prefix),
                (Method::Get, Some(None)) => Reply::text(400, "malformed percent-escape in the list prefix"),
                _ => Reply::text(400, "the root only answers GET /?list=PREFIX"),
            };
        }
        let Some(key) = path.strip_prefix('/').and_then(decode) else {
            return Reply::text(400, "malformed percent-escape in the object path");
        };
        if let Err(e) = check_key(&key) {
            return Reply::text(400, e.to_string());
        }
        match method {
            Method::Get => self.get(request, &key),
            Method::Head => match self.storage.stat(&key) {
                Ok(Some(size)) => Reply { head_len: Some(size), ..Reply::ok(200, Vec::new()) },
                Ok(None) => Reply::text(404, "no such object"),
                Err(e) => self.error(&e),
            },
            Method::Put => self.put(request, &key, append_only),
            Method::Delete => {
                if append_only && !is_lock(&key) {
                    self.log(&format!("refused DELETE {key}: append-only"));
                    return Reply::text(403, format!("deleting refused: {APPEND_ONLY_HINT}"));
                }
                match self.storage.delete(&key) {
                    Ok(()) => Reply::ok(204, Vec::new()),
                    Err(e) => self.error(&e),
                }
            }
            _ => Reply::text(405, "method not allowed: use GET, HEAD, PUT or DELETE"),
        }
    }

    fn authorize(&self, request: &Request) -> Result<Role, Reply> {
        let authorization = header(request, "Authorization");
        let presented = authorization.as_deref().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        let matches = |expected: &Option<String>| match (expected, presented) {
            (Some(expected), Some(presented)) => bool::from(expected.as_bytes().ct_eq(presented.as_bytes())),
            _ => false,
        };
        if matches(&self.policy.admin_token) {
            return Ok(Role::Admin);
        }
        if self.policy.token.is_none() || matches(&self.policy.token) {
            return Ok(Role::Client);
        }
        self.log(&format!("refused {} {}: missing or wrong bearer token", request.method(), request.url()));
        Err(Reply::text(401, "missing or wrong bearer token: set TIDEMARK_REPO_TOKEN or TIDEMARK_REPO_TOKEN_FILE"))
    }

    fn list(&self, prefix: &str) -> Reply {
        match self.storage.list(prefix) {
            Ok(entries) => {
                let entries: Vec<ListEntry> =
                    entries.into_iter().map(|e| ListEntry { key: e.key, size: e.size }).collect();
                match serde_json::to_vec(&entries) {
                    Ok(body) => Reply::ok(200, body),
                    Err(e) => self.internal(&format!("encoding the listing of {prefix:?}: {e}")),
                }
            }
            Err(e) => self.error(&e),
        }
    }

    fn get(&self, request: &Request, key: &str) -> Reply {
        let range = header(request, "Range");
        let Some(range) = range else {
            return match self.storage.get(key) {
                Ok(data) => Reply::ok(200, data),
                Err(e) => self.error(&e),
            };
        };
        let Some((first, last)) = parse_range(&range) else {
            return Reply::text(416, format!("unsupported range {range:?}: use bytes=FIRST-LAST"));
        };
        let size = match self.storage.stat(key) {
            Ok(Some(size)) => size,
            Ok(None) => return Reply::text(404, "no such object"),
            Err(e) => return self.error(&e),
        };
        if last >= size {
            return Reply {
                content_range: Some(format!("bytes */{size}")),
                ..Reply::text(416, format!("range {first}-{last} is beyond the end of an object of {size} bytes"))
            };
        }
        match self.storage.get_range(key, first..last + 1) {
            Ok(data) => Reply { content_range: Some(format!("bytes {first}-{last}/{size}")), ..Reply::ok(206, data) },
            Err(e) => self.error(&e),
        }
    }

    fn put(&self, request: &mut Request, key: &str, append_only: bool) -> Reply {
        let create_only = header(request, "If-None-Match").is_some_and(|v| v == "*");
        let Some(digest) = header(request, CONTENT_DIGEST) else {
            return Reply::text(400, format!("a PUT needs a {CONTENT_DIGEST}: sha-256=:BASE64: header"));
        };
        if request.body_length().is_some_and(|n| n as u64 > MAX_OBJECT_SIZE) {
            return Reply::text(413, format!("objects are at most {MAX_OBJECT_SIZE} bytes"));
        }
        let mut data = Vec::with_capacity(request.body_length().unwrap_or(0));
        if let Err(e) = request.as_reader().take(MAX_OBJECT_SIZE + 1).read_to_end(&mut data) {
            return Reply::text(400, format!("reading the request body: {e}"));
        }
        if data.len() as u64 > MAX_OBJECT_SIZE {
            return Reply::text(413, format!("objects are at most {MAX_OBJECT_SIZE} bytes"));
        }
        if content_digest(&data) != digest {
            self.log(&format!("refused PUT {key}: {CONTENT_DIGEST} mismatch"));
            return Reply::text(400, format!("{CONTENT_DIGEST} mismatch: the body was damaged in transit"));
        }
        let result = if create_only {
            self.storage.put(key, &data)
        } else if append_only && !is_lock(key) {
            // Replacing is refused; creating a new object this way is still adding.
            match self.storage.put(key, &data) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    self.log(&format!("refused overwriting PUT {key}: append-only"));
                    return Reply::text(403, format!("replacing refused: {APPEND_ONLY_HINT}"));
                }
                other => other,
            }
        } else {
            self.storage.put_overwrite(key, &data)
        };
        match result {
            Ok(()) => Reply::ok(201, Vec::new()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                Reply::text(412, "object already exists and is never overwritten")
            }
            Err(e) => self.error(&e),
        }
    }

    /// The status for a storage error: 4xx name the problem, 5xx are logged and answered with a
    /// request id.
    fn error(&self, e: &StorageError) -> Reply {
        match e.kind() {
            ErrorKind::NotFound => Reply::text(404, "no such object"),
            ErrorKind::AlreadyExists => Reply::text(409, "object already exists"),
            ErrorKind::PermissionDenied => {
                let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
                self.log(&format!("request {id}: {e}"));
                Reply::text(403, format!("the server's storage refused access (request {id}); see the server log"))
            }
            ErrorKind::StorageFull => {
                self.log(&format!("storage full: {e}"));
                Reply::text(507, "the server's storage is full")
            }
            ErrorKind::Transient | ErrorKind::Unreachable => {
                let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
                self.log(&format!("request {id}: {e}"));
                Reply::text(503, format!("temporary storage failure (request {id}); try again"))
            }
            _ => self.internal(&e.to_string()),
        }
    }

    fn internal(&self, detail: &str) -> Reply {
        let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
        self.log(&format!("request {id}: internal error: {detail}"));
        Reply::text(500, format!("internal error (request {id}); see the server log"))
    }
}

/// A request header's value, trimmed.
fn header(request: &Request, name: &str) -> Option<String> {
    let found = request.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))?;
    Some(found.value.as_str().trim().to_string())
}

/// The `list` parameter of a query: `None` when absent, `Some(None)` when malformed.
fn list_prefix(query: &str) -> Option<Option<String>> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == "list").then(|| decode(value))
    })
}

/// `bytes=FIRST-LAST` (both given, inclusive) as the pair; other forms are not used by the client.
fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let range: Range<u64> = first.trim().parse().ok()?..last.trim().parse().ok()?;
    (range.start <= range.end).then_some((range.start, range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_list_queries_parse() {
        assert_eq!(parse_range("bytes=0-9"), Some((0, 9)));
        assert_eq!(parse_range("bytes=5-4"), None);
        assert_eq!(parse_range("bytes=5-"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(list_prefix("list=data%2F"), Some(Some("data/".into())));
        assert_eq!(list_prefix("x=1&list="), Some(Some(String::new())));
        assert_eq!(list_prefix("x=1"), None);
        assert_eq!(list_prefix("list=%zz"), Some(None));
    }

    #[test]
    fn policy_debug_hides_tokens() {
        let p = ServerPolicy { append_only: true, token: Some("s3cret".into()), admin_token: None };
        assert!(!format!("{p:?}").contains("s3cret"));
    }
}
