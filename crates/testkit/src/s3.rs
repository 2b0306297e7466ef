//! A real S3 server (moto) on a loopback port.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{TestkitError, http, skip_or_fail};

const INSTALL_HINT: &str = "run scripts/install-test-deps (it installs moto[server] with pip)";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ACCESS_KEY_ID: &str = "testing";
const SECRET_ACCESS_KEY: &str = "testing";
const REGION: &str = "us-east-1";

/// Runs the server command and, when our end of its stdin closes, kills it and removes its log:
/// on drop, and also when the test process exits without running destructors (as it does for
/// [`S3Server::shared`]) or dies (its file descriptors close all the same). It exits with the
/// server's status when the server exits by itself.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
{ read -r _ <&3; kill -KILL "$pid" 2>/dev/null; rm -f "$TIDEMARK_MOTO_LOG"; } &
wait "$pid""#;

/// A moto S3 server on `127.0.0.1`, killed on drop.
///
/// moto accepts any credentials ([`credentials`](Self::credentials) gives the ones to use),
/// supports conditional writes, versioning and Object Lock, and keeps everything in memory. Use a
/// fresh bucket per test ([`new_bucket`](Self::new_bucket)) rather than resetting a shared server.
///
/// The server command is, in order: `$TIDEMARK_MOTO_SERVER`, `moto_server` on `PATH`, or
/// `python3 -m moto.server`.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

/// How to create a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketOptions {
    /// Enable versioning (implied by `object_lock`).
    pub versioning: bool,
    /// Create the bucket with Object Lock enabled.
    pub object_lock: bool,
    /// Default retention for new objects (needs `object_lock`).
    pub default_retention: Option<Retention>,
}

/// A default Object Lock retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Governance or compliance.
    pub mode: RetentionMode,
    /// Days each new object version stays locked.
    pub days: u32,
}

/// Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Users with a special permission may shorten or remove the lock.
    Governance,
    /// Nobody may shorten or remove the lock.
    Compliance,
}

static SHARED: OnceLock<Result<S3Server, TestkitError>> = OnceLock::new();
static BUCKETS: AtomicU64 = AtomicU64::new(0);

impl S3Server {
    /// Start a server on a free port and wait until it answers (at most 30 s).
    ///
    /// The error says what is missing, with the fix, when moto is not installed.
    pub fn start() -> Result<S3Server, TestkitError> {
        let command = server_command()?;
        let mut last = None;
        // Another process may take the free port between our probe and the server's bind.
        for _ in 0..3 {
            match Self::start_with(&command) {
                Ok(server) => return Ok(server),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::new("moto did not start")))
    }

    /// One server for the whole test process, started on first use. The process's exit stops it.
    pub fn shared() -> Result<&'static S3Server, TestkitError> {
        SHARED.get_or_init(S3Server::start).as_ref().map_err(Clone::clone)
    }

    /// [`shared`](Self::shared), or `None` after a loud skip message when moto is missing.
    ///
    /// # Panics
    ///
    /// When moto is missing and [`services_required`](crate::services_required).
    pub fn shared_or_skip(test: &str) -> Option<&'static S3Server> {
        match Self::shared() {
            Ok(server) => Some(server),
            Err(err) => {
                skip_or_fail(test, &err);
                None
            }
        }
    }

    fn start_with(command: &[String]) -> Result<S3Server, TestkitError> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = std::env::temp_dir().join(format!("tidemark-moto-{}-{port}.log", std::process::id()));
        let log_file =
            File::create(&log).map_err(|e| TestkitError::new(format!("cannot create {}: {e}", log.display())))?;
        let log_err =
            log_file.try_clone().map_err(|e| TestkitError::new(format!("cannot open {}: {e}", log.display())))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .args(command)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("TIDEMARK_MOTO_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| TestkitError::new(format!("cannot run sh to start {}: {e}", command.join(" "))))?;
        let stdin = child.stdin.take();
        let mut server = S3Server { addr, child, stdin, log };
        server.wait_ready(command)?;
        Ok(server)
    }

    fn wait_ready(&mut self, command: &[String]) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::new(format!(
                    "{} exited ({status}) before answering on {}: {}; {INSTALL_HINT}",
                    command.join(" "),
                    self.addr,
                    log_tail(&self.log)
                )));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && http::request(self.addr, "GET", "/", &[], b"").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::new(format!(
                    "{} did not answer on {} within {READY_TIMEOUT:?}: {}",
                    command.join(" "),
                    self.addr,
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The access key id and secret key to sign with (moto accepts any).
    pub fn credentials() -> (&'static str, &'static str) {
        (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    }

    /// The signing region to use.
    pub fn region() -> &'static str {
        REGION
    }

    /// `s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:PORT&region=us-east-1&path_style=true`
    /// (no `/PREFIX` when `prefix` is empty).
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        s3_url(&self.endpoint(), REGION, bucket, prefix)
    }

    /// Create a plain bucket.
    pub fn create_bucket(&self, name: &str) -> Result<(), TestkitError> {
        self.create_bucket_with(name, &BucketOptions::default())
    }

    /// Create a bucket with versioning or Object Lock.
    pub fn create_bucket_with(&self, name: &str, options: &BucketOptions) -> Result<(), TestkitError> {
        let lock_header = [("x-amz-bucket-object-lock-enabled", "true")];
        let headers: &[(&str, &str)] = if options.object_lock { &lock_header } else { &[] };
        self.expect_ok("create bucket", "PUT", &format!("/{name}"), headers, "")?;
        if options.versioning && !options.object_lock {
            let body = format!(
                "<VersioningConfiguration xmlns=\"{XMLNS}\"><Status>Enabled</Status></VersioningConfiguration>"
            );
            self.expect_ok("enable versioning", "PUT", &format!("/{name}?versioning"), &[], &body)?;
        }
        if let Some(retention) = options.default_retention {
            let mode = match retention.mode {
                RetentionMode::Governance => "GOVERNANCE",
                RetentionMode::Compliance => "COMPLIANCE",
            };
            let body = format!(
                "<ObjectLockConfiguration xmlns=\"{XMLNS}\"><ObjectLockEnabled>Enabled</ObjectLockEnabled>\
                 <Rule><DefaultRetention><Mode>{mode}</Mode><Days>{}</Days></DefaultRetention></Rule>\
                 </ObjectLockConfiguration>",
                retention.days
            );
            self.expect_ok("set default retention", "PUT", &format!("/{name}?object-lock"), &[], &body)?;
        }
        Ok(())
    }

    /// Create a plain bucket with a name no other test in this process uses, and return the name.
    pub fn new_bucket(&self) -> Result<String, TestkitError> {
        self.new_bucket_with(&BucketOptions::default())
    }

    /// [`new_bucket`](Self::new_bucket) with options.
    pub fn new_bucket_with(&self, options: &BucketOptions) -> Result<String, TestkitError> {
        let name = format!("tm-{}-{}", std::process::id(), BUCKETS.fetch_add(1, Ordering::Relaxed));
        self.create_bucket_with(&name, options)?;
        Ok(name)
    }

    /// Wipe all buckets and objects (moto's `POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), TestkitError> {
        self.expect_ok("reset", "POST", "/moto-api/reset", &[], "")
    }

    /// The server's log file (stdout and stderr), for diagnosing failed tests.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn expect_ok(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<(), TestkitError> {
        let response = http::request(self.addr, method, path, headers, body.as_bytes())?;
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(TestkitError::new(format!(
                "{what}: {method} {path} on moto answered {}: {}",
                response.status, response.body
            )))
        }
    }
}

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

impl Drop for S3Server {
    fn drop(&mut self) {
        // Closing its stdin makes the watchdog kill the server; then reap the watchdog.
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `s3://BUCKET/PREFIX?endpoint=ENDPOINT&region=REGION&path_style=true` (no `/PREFIX` when empty).
pub(crate) fn s3_url(endpoint: &str, region: &str, bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    let path = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
    format!("s3://{bucket}{path}?endpoint={endpoint}&region={region}&path_style=true")
}

pub(crate) fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| TestkitError::new(format!("no free port on 127.0.0.1: {e}")))
}

/// The command that runs moto's server, without its `-H`/`-p` arguments.
fn server_command() -> Result<Vec<String>, TestkitError> {
    if let Some(path) = std::env::var_os("TIDEMARK_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return Ok(vec![path.to_string_lossy().into_owned()]);
    }
    if let Some(path) = find_on_path("moto_server") {
        return Ok(vec![path.to_string_lossy().into_owned()]);
    }
    let python = find_on_path("python3").ok_or_else(|| {
        TestkitError::new(format!("moto is not installed (no moto_server and no python3 on PATH); {INSTALL_HINT}"))
    })?;
    let probe =
        Command::new(&python).args(["-c", "import moto.server"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !probe.is_ok_and(|status| status.success()) {
        return Err(TestkitError::new(format!(
            "moto is not installed ({} cannot import moto.server); {INSTALL_HINT}",
            python.display()
        )));
    }
    Ok(vec![python.to_string_lossy().into_owned(), "-m".into(), "moto.server".into()])
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() { "no output".to_owned() } else { format!("last output: {tail}") }
}
