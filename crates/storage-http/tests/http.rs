//! The server and the client together over real loopback HTTP: the `Storage` contract through the
//! wire, the append-only policy, tokens, checksums and error kinds.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tidemark_storage::fault::{FaultStorage, Op};
use tidemark_storage::{Entry, ErrorKind, LocalStorage, MemoryStorage, Storage};
use tidemark_storage_http::{CONTENT_DIGEST, HttpServer, HttpStorage, ServerPolicy, Shutdown, content_digest};

/// A server on a free loopback port, stopped on drop.
struct TestServer {
    url: String,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    fn start(storage: Arc<dyn Storage>, policy: ServerPolicy) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let server = HttpServer::new(storage, policy)
            .with_workers(2)
            .with_log(Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string())));
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || server.serve(listener, &stop).unwrap());
        TestServer { url, shutdown, thread: Some(thread), log }
    }

    fn client(&self) -> HttpStorage {
        HttpStorage::new(&self.url, None).unwrap()
    }

    fn client_with(&self, token: &str) -> HttpStorage {
        HttpStorage::new(&self.url, Some(token.into())).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn append_only() -> ServerPolicy {
    ServerPolicy { append_only: true, ..Default::default() }
}

fn keys(s: &dyn Storage, prefix: &str) -> Vec<String> {
    s.list(prefix).unwrap().into_iter().map(|e| e.key).collect()
}

/// A raw request, for what the client never sends.
fn raw(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut response = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn round_trip_follows_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let backing = Arc::new(LocalStorage::new(dir.path().join("repo")));
    let server = TestServer::start(backing.clone(), ServerPolicy::default());
    let s = server.client();
    assert_eq!(s.location(), server.url);
    assert_eq!(s.list("").unwrap(), []);

    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i * 7 % 251) as u8).collect();
    s.put("data/ab/ab12", &big).unwrap();
    s.put("data/ab/ab34", b"second").unwrap();
    s.put("data/cd/cd56", b"").unwrap();
    s.put("index/1", b"idx").unwrap();
    s.put("config", b"{}").unwrap();
    assert_eq!(backing.get("data/ab/ab12").unwrap(), big, "stored as is on the server's disk");

    assert_eq!(s.get("data/ab/ab12").unwrap(), big);
    assert_eq!(s.get("data/cd/cd56").unwrap(), b"");
    assert_eq!(s.get_range("data/ab/ab12", 1000..2000).unwrap(), big[1000..2000]);
    assert_eq!(s.get_range("data/ab/ab34", 0..6).unwrap(), b"second");
    assert_eq!(s.get_range("data/ab/ab34", 6..6).unwrap(), b"");
    let beyond = s.get_range("data/ab/ab34", 3..7).unwrap_err();
    assert_eq!(beyond.kind(), ErrorKind::Permanent, "{beyond}");
    assert!(beyond.to_string().contains("416"), "{beyond}");
    assert_eq!(s.get_range("data/zz", 0..1).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.stat("data/ab/ab12").unwrap(), Some(big.len() as u64));
    assert_eq!(s.stat("data/cd/cd56").unwrap(), Some(0));
    assert_eq!(s.stat("data/nothing").unwrap(), None);
    let missing = s.get("snapshots/none").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(missing.key(), Some("snapshots/none"));

    assert_eq!(keys(&s, "data/"), ["data/ab/ab12", "data/ab/ab34", "data/cd/cd56"]);
    assert_eq!(keys(&s, "data/ab"), ["data/ab/ab12", "data/ab/ab34"]);
    assert_eq!(keys(&s, "").len(), 5);
    assert_eq!(s.list("index/").unwrap(), [Entry { key: "index/1".into(), size: 3 }]);
    assert_eq!(keys(&s, "snapshots/"), Vec::<String>::new());

    // Create-only: the first write stays.
    let exists = s.put("index/1", b"other").unwrap_err();
    assert_eq!(exists.kind(), ErrorKind::AlreadyExists, "{exists}");
    assert_eq!(s.get("index/1").unwrap(), b"idx");
    s.put_overwrite("locks/l1", b"a").unwrap();
    s.put_overwrite("locks/l1", b"b").unwrap();
    assert_eq!(s.get("locks/l1").unwrap(), b"b");

    s.delete("data/ab/ab34").unwrap();
    s.delete("data/ab/ab34").unwrap();
    assert_eq!(s.stat("data/ab/ab34").unwrap(), None);

    // Keys with characters that need escaping survive the trip.
    s.put("snapshots/a b%c?d#e", b"odd").unwrap();
    assert_eq!(s.get("snapshots/a b%c?d#e").unwrap(), b"odd");
    assert_eq!(keys(&s, "snapshots/a b"), ["snapshots/a b%c?d#e"]);
}

#[test]
fn bad_keys_never_reach_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), b"outside the repository").unwrap();
    let backing = Arc::new(LocalStorage::new(dir.path().join("repo")));
    let server = TestServer::start(backing, ServerPolicy::default());
    assert_eq!(server.client().get("../secret").unwrap_err().kind(), ErrorKind::Permanent);
    for path in ["%2E%2E/secret", "data/%2E%2E/%2E%2E/secret", "data//x", ".tmp-1-2-3", "a%5Cb", "%zz"] {
        let (status, body) = raw("GET", &format!("{}{path}", server.url), &[], b"");
        assert_eq!(status, 400, "{path}: {body}");
    }
    let digest = content_digest(b"x");
    let (status, _) = raw("PUT", &format!("{}%2E%2E/evil", server.url), &[(CONTENT_DIGEST, &digest)], b"x");
    assert_eq!(status, 400);
    assert!(!dir.path().join("evil").exists());
    let (status, body) = raw("POST", &format!("{}data/x", server.url), &[], b"");
    assert_eq!(status, 405, "{body}");
}

#[test]
fn append_only_refuses_deletes_and_overwrites_and_lets_locks_refresh_and_release() {
    let backing = Arc::new(MemoryStorage::new());
    let server = TestServer::start(backing.clone(), append_only());
    let s = server.client();
    s.put("data/ab/ab12", b"pack").unwrap();
    s.put("snapshots/s1", b"snapshot").unwrap();

    let delete = s.delete("data/ab/ab12").unwrap_err();
    assert_eq!(delete.kind(), ErrorKind::PermissionDenied, "{delete}");
    assert!(delete.to_string().contains("append-only"), "{delete}");
    assert!(delete.to_string().contains("403"), "{delete}");
    let overwrite = s.put_overwrite("snapshots/s1", b"forged").unwrap_err();
    assert_eq!(overwrite.kind(), ErrorKind::PermissionDenied, "{overwrite}");
    assert_eq!(s.put("snapshots/s1", b"forged").unwrap_err().kind(), ErrorKind::AlreadyExists);
    // A missing object cannot be deleted either: the refusal does not depend on existence.
    assert_eq!(s.delete("index/none").unwrap_err().kind(), ErrorKind::PermissionDenied);
    assert_eq!(backing.get("data/ab/ab12").unwrap(), b"pack");
    assert_eq!(backing.get("snapshots/s1").unwrap(), b"snapshot");
    assert!(server.log.lock().unwrap().iter().any(|m| m.contains("refused DELETE data/ab/ab12")));

    // Adding stays possible, also through an unconditional PUT of a new key.
    s.put_overwrite("snapshots/s2", b"new").unwrap();
    assert_eq!(backing.get("snapshots/s2").unwrap(), b"new");

    // Locks: created, refreshed in place, released.
    s.put("locks/l1", b"v1").unwrap();
    s.put_overwrite("locks/l1", b"v2").unwrap();
    assert_eq!(s.get("locks/l1").unwrap(), b"v2");
    s.delete("locks/l1").unwrap();
    assert_eq!(backing.stat("locks/l1").unwrap(), None);
}

#[test]
fn tokens_gate_access_and_the_admin_token_lifts_append_only() {
    let backing = Arc::new(MemoryStorage::new());
    let policy =
        ServerPolicy { append_only: true, token: Some("client-token".into()), admin_token: Some("admin-token".into()) };
    let server = TestServer::start(backing.clone(), policy);
    for s in [server.client(), server.client_with("wrong")] {
        let err = s.put("data/1", b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("401") && err.to_string().contains("TIDEMARK_REPO_TOKEN"), "{err}");
        assert_eq!(s.list("").unwrap_err().kind(), ErrorKind::PermissionDenied);
    }
    assert_eq!(backing.list("").unwrap(), []);
    let client = server.client_with("client-token");
    client.put("data/1", b"x").unwrap();
    assert_eq!(client.delete("data/1").unwrap_err().kind(), ErrorKind::PermissionDenied);
    let admin = server.client_with("admin-token");
    assert_eq!(admin.get("data/1").unwrap(), b"x");
    admin.delete("data/1").unwrap();
    assert_eq!(backing.stat("data/1").unwrap(), None);
    assert!(!format!("{client:?}").contains("client-token"));
}

#[test]
fn the_server_verifies_the_content_digest() {
    let backing = Arc::new(MemoryStorage::new());
    let server = TestServer::start(backing.clone(), ServerPolicy::default());
    let url = format!("{}data/1", server.url);
    let (status, body) = raw("PUT", &url, &[(CONTENT_DIGEST, &content_digest(b"other"))], b"body");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mismatch"), "{body}");
    let (status, body) = raw("PUT", &url, &[], b"body");
    assert_eq!(status, 400, "{body}");
    assert_eq!(backing.stat("data/1").unwrap(), None);
    let (status, _) = raw("PUT", &url, &[(CONTENT_DIGEST, &content_digest(b"body")), ("If-None-Match", "*")], b"body");
    assert_eq!(status, 201);
    let (status, _) = raw("PUT", &url, &[(CONTENT_DIGEST, &content_digest(b"body")), ("If-None-Match", "*")], b"body");
    assert_eq!(status, 412);
}

#[test]
fn storage_errors_on_the_server_keep_their_kind_at_the_client() {
    let faults = FaultStorage::new(MemoryStorage::new());
    let server = TestServer::start(Arc::new(faults.clone()), ServerPolicy::default());
    let s = server.client();
    faults.fail_next(Op::Put, 1, ErrorKind::StorageFull);
    assert_eq!(s.put("data/1", b"x").unwrap_err().kind(), ErrorKind::StorageFull);
    faults.fail_next(Op::Get, 1, ErrorKind::Transient);
    s.put("data/1", b"x").unwrap();
    let transient = s.get("data/1").unwrap_err();
    assert!(transient.is_transient(), "{transient}");
    assert_eq!(s.get("data/1").unwrap(), b"x");
    faults.fail_next(Op::List, 1, ErrorKind::Permanent);
    let internal = s.list("data/").unwrap_err();
    assert_eq!(internal.kind(), ErrorKind::Permanent, "{internal}");
    assert!(internal.to_string().contains("internal error (request"), "{internal}");
    assert!(server.log.lock().unwrap().iter().any(|m| m.contains("internal error")));
    // A listing that breaks part way is an error at the client, never a short list.
    faults.break_list_after(0);
    assert!(s.list("data/").is_err());
}

#[test]
fn an_unreachable_server_is_transient_and_bad_urls_are_refused() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = HttpStorage::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    assert_eq!(s.location(), format!("http://127.0.0.1:{port}/"));
    let err = s.get("config").unwrap_err();
    assert!(err.is_transient(), "{err}");
    for bad in ["ftp://x/", "http://", "http:///x", "http://h/?a=1"] {
        assert_eq!(HttpStorage::new(bad, None).unwrap_err().kind(), ErrorKind::Permanent, "{bad}");
    }
}

#[test]
fn shutdown_stops_the_server() {
    let server = TestServer::start(Arc::new(MemoryStorage::new()), ServerPolicy::default());
    server.client().put("config", b"{}").unwrap();
    let url = server.url.clone();
    drop(server);
    // New connections are refused (connections a client keeps alive stay open until the process
    // exits: a limitation of tiny_http, documented on `HttpServer::serve`).
    let err = HttpStorage::new(&url, None).unwrap().get("config").unwrap_err();
    assert!(err.is_transient(), "{err}");
}
