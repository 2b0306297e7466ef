//! The harness: a real server on a free loopback port (plain or TLS) over a fixture
//! [`Control`], with a state directory, tokens of each role and a controllable clock.

pub mod fixture;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;
use serde_json::Value;
use tempfile::TempDir;
use tidemark_service_core::audit::{AuditEntry, Outcome, parse_line, verify_chain};
use tidemark_service_core::{Config, Role};
use tidemark_service_http::{Api, serve_with, tokens};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fixture::Fixture;

/// The clock's start: 2026-01-10T12:00:00Z.
pub const START: i64 = 1_768_046_400;

pub const ALLOWED: &str = "127.0.0.1";
/// Linux routes all of 127.0.0.0/8 to the loopback interface: a client bound to this address
/// reaches the server from an address outside `allow = ["127.0.0.1/32"]`.
pub const DENIED: &str = "127.0.0.2";

/// How a test server is configured.
#[derive(Clone)]
pub struct Options {
    pub allow: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub link_max_ttl: &'static str,
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { allow: vec!["127.0.0.1/32".into()], trusted_proxies: vec![], link_max_ttl: "1h", tls: false }
    }
}

pub struct Tokens {
    pub viewer: String,
    pub operator: String,
    pub admin: String,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: Arc<TempDir>,
    pub tokens: Arc<Tokens>,
    pub fixture: Arc<Fixture>,
    /// Seconds since the Unix epoch that the server's clock reads.
    pub clock: Arc<AtomicI64>,
    /// The PEM certificate, with TLS.
    pub cert: Option<String>,
    pub options: Options,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

fn state_dir(dir: &TempDir) -> PathBuf {
    dir.path().join("state")
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl TestServer {
    pub async fn start(options: Options) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let state = state_dir(&dir);
        let tokens = Arc::new(Tokens {
            viewer: tokens::create(&state, "alice-viewer", Role::Viewer).unwrap(),
            operator: tokens::create(&state, "bob-operator", Role::Operator).unwrap(),
            admin: tokens::create(&state, "carol-admin", Role::Admin).unwrap(),
        });
        // Creating tokens is audited; the tests count only what the server records.
        std::fs::remove_file(state.join(tidemark_service_http::AUDIT_FILE)).unwrap();
        let cert = options.tls.then(|| {
            let key =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
            std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
            key.cert.pem()
        });
        TestServer::start_in(dir, tokens, cert, options, Arc::new(AtomicI64::new(START))).await
    }

    async fn start_in(
        dir: Arc<TempDir>,
        tokens: Arc<Tokens>,
        cert: Option<String>,
        options: Options,
        clock: Arc<AtomicI64>,
    ) -> TestServer {
        let tls = if options.tls {
            format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                dir.path().join("cert.pem").display().to_string(),
                dir.path().join("key.pem").display().to_string()
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:8470"
state_dir = {state:?}
allow = {allow}
trusted_proxies = {proxies}
link_max_ttl = "{max}"
{tls}
[repositories.primary]
url = "/srv/backup/repo"
password_file = "/etc/tidemark/repo.pass"

[sources.uploads]
kind = "directory"
paths = ["/srv/uploads"]
repository = "primary"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
window = "1h"
retention = {{ keep_daily = 14, keep_weekly = 8, keep_monthly = 6, keep_yearly = 1 }}
"#,
            state = state_dir(&dir).display().to_string(),
            allow = toml_list(&options.allow),
            proxies = toml_list(&options.trusted_proxies),
            max = options.link_max_ttl,
        );
        let config = Arc::new(Config::parse(&text, "test.toml").unwrap());
        let fixture = Arc::new(Fixture::default());
        let reading = clock.clone();
        let api = Api::new(config, fixture.clone())
            .unwrap()
            .with_clock(Arc::new(move || Timestamp::from_second(reading.load(Ordering::SeqCst)).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(Arc::new(api), listener, async {
            let _ = stop.await;
        }));
        TestServer { addr, dir, tokens, fixture, clock, cert, options, shutdown: Some(shutdown), task: Some(task) }
    }

    /// Stops this server and starts another on the same state directory and tokens.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let (dir, tokens, cert, options, clock) =
            (self.dir.clone(), self.tokens.clone(), self.cert.clone(), self.options.clone(), self.clock.clone());
        TestServer::start_in(dir, tokens, cert, options, clock).await
    }

    /// Asks the server to shut down, without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub async fn stop(&mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.dir)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }

    /// A client connecting from `from` (trusting the server's certificate with TLS).
    pub fn client(&self, from: &str) -> reqwest::Client {
        client(from, self.cert.as_deref())
    }

    /// The audit log's lines, after checking that the whole chain verifies.
    pub fn audit(&self) -> Vec<(u64, AuditEntry)> {
        audit_entries(&self.state_dir())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn audit_entries(state_dir: &Path) -> Vec<(u64, AuditEntry)> {
    let text = std::fs::read_to_string(state_dir.join("audit.log")).unwrap();
    verify_chain(text.lines()).unwrap();
    text.lines().map(|l| parse_line(l).expect("an audit entry")).collect()
}

pub fn denied(entries: &[(u64, AuditEntry)]) -> Vec<&AuditEntry> {
    entries.iter().map(|(_, e)| e).filter(|e| e.outcome == Outcome::Denied).collect()
}

pub fn client(from: &str, cert: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).no_proxy();
    if let Some(pem) = cert {
        builder = builder.tls_backend_preconfigured(trusting(pem));
    }
    builder.build().unwrap()
}

/// A rustls client config trusting only `pem`.
pub fn trusting(pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Status and JSON body (`Null` when the body is not JSON).
pub async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /api/v1/links` as the operator; returns the link's URL.
pub async fn make_link(server: &TestServer, body: Value) -> (u16, Value) {
    let response = server
        .client(ALLOWED)
        .post(server.url("/api/v1/links"))
        .bearer_auth(&server.tokens.operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    json(response).await
}
