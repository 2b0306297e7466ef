//! A second, independent S3 implementation: s3s-fs, a filesystem-backed server, on a loopback port.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::s3::{find_on_path, free_port, log_tail};
use crate::{TestkitError, http, skip_or_fail};

const INSTALL_HINT: &str = "run scripts/install-test-deps s3s (it installs s3s-fs 0.14.1 with cargo install)";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ACCESS_KEY_ID: &str = "tidemark-s3s";
const SECRET_ACCESS_KEY: &str = "tidemark-s3s-secret";
const REGION: &str = "us-east-1";

/// Runs the server command and, when our end of its stdin closes, kills it and removes its log and
/// root directory: on drop, and also when the test process exits without running destructors (as
/// it does for [`S3sServer::shared`]) or dies (its file descriptors close all the same).
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
{ read -r _ <&3; kill -KILL "$pid" 2>/dev/null; rm -rf "${TIDEMARK_S3S_ROOT:?}"; rm -f "${TIDEMARK_S3S_LOG:?}"; } &
wait "$pid""#;

/// An [s3s-fs](https://crates.io/crates/s3s-fs) server on `127.0.0.1`, serving a fresh temporary
/// directory, killed (and its directory removed) on drop.
///
/// It is a second S3 implementation, independent of moto: it checks SigV4 signatures against
/// [`credentials`](Self::credentials), and has no versioning and no Object Lock. Each bucket is a
/// directory under its root.
///
/// The server command is `$TIDEMARK_S3S_FS`, or `s3s-fs` on `PATH`.
#[derive(Debug)]
pub struct S3sServer {
    addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    root: PathBuf,
    log: PathBuf,
}

static SHARED: OnceLock<Result<S3sServer, TestkitError>> = OnceLock::new();
static BUCKETS: AtomicU64 = AtomicU64::new(0);

impl S3sServer {
    /// Start a server on a free port with an empty root directory, and wait until it answers (at
    /// most 30 s).
    ///
    /// The error says what is missing, with the fix, when s3s-fs is not installed.
    pub fn start() -> Result<S3sServer, TestkitError> {
        let command = server_command()?;
        let mut last = None;
        // Another process may take the free port between our probe and the server's bind.
        for _ in 0..3 {
            match Self::start_with(&command) {
                Ok(server) => return Ok(server),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::new("s3s-fs did not start")))
    }

    /// One server for the whole test process, started on first use. The process's exit stops it.
    pub fn shared() -> Result<&'static S3sServer, TestkitError> {
        SHARED.get_or_init(S3sServer::start).as_ref().map_err(Clone::clone)
    }

    /// [`shared`](Self::shared), or `None` after a loud skip message when s3s-fs is missing.
    ///
    /// # Panics
    ///
    /// When s3s-fs is missing and [`services_required`](crate::services_required).
    pub fn shared_or_skip(test: &str) -> Option<&'static S3sServer> {
        match Self::shared() {
            Ok(server) => Some(server),
            Err(err) => {
                skip_or_fail(test, &err);
                None
            }
        }
    }

    fn start_with(command: &Path) -> Result<S3sServer, TestkitError> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let name = format!("tidemark-s3s-{}-{port}", std::process::id());
        let root = std::env::temp_dir().join(&name);
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .map_err(|e| TestkitError::new(format!("cannot create {}: {e}", root.display())))?;
        let log_file =
            File::create(&log).map_err(|e| TestkitError::new(format!("cannot create {}: {e}", log.display())))?;
        let log_err =
            log_file.try_clone().map_err(|e| TestkitError::new(format!("cannot open {}: {e}", log.display())))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(command)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY_ID, "--secret-key", SECRET_ACCESS_KEY])
            .arg(&root)
            .env("TIDEMARK_S3S_ROOT", &root)
            .env("TIDEMARK_S3S_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| TestkitError::new(format!("cannot run sh to start {}: {e}", command.display())))?;
        let stdin = child.stdin.take();
        let mut server = S3sServer { addr, child, stdin, root, log };
        server.wait_ready(command)?;
        Ok(server)
    }

    fn wait_ready(&mut self, command: &Path) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::new(format!(
                    "{} exited ({status}) before answering on {}: {}; {INSTALL_HINT}",
                    command.display(),
                    self.addr,
                    log_tail(&self.log)
                )));
            }
            // Any HTTP answer will do: an unsigned request is refused (403) once it serves.
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && http::request(self.addr, "GET", "/", &[], b"").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::new(format!(
                    "{} did not answer on {} within {READY_TIMEOUT:?}: {}",
                    command.display(),
                    self.addr,
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
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

    /// The access key id and secret key to sign with (s3s-fs checks signatures; others are refused).
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
        crate::s3::s3_url(&self.endpoint(), REGION, bucket, prefix)
    }

    /// Create a bucket: s3s-fs serves each directory under its root as a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<(), TestkitError> {
        let valid = (3..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(TestkitError::new(format!("invalid bucket name {name:?}")));
        }
        let dir = self.root.join(name);
        std::fs::create_dir(&dir).map_err(|e| TestkitError::new(format!("create bucket {}: {e}", dir.display())))
    }

    /// Create a bucket with a name no other test in this process uses, and return the name.
    pub fn new_bucket(&self) -> Result<String, TestkitError> {
        let name = format!("tm-{}-{}", std::process::id(), BUCKETS.fetch_add(1, Ordering::Relaxed));
        self.create_bucket(&name)?;
        Ok(name)
    }

    /// The directory it serves (one subdirectory per bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's log file (stdout and stderr), for diagnosing failed tests.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        // Closing its stdin makes the watchdog kill the server and clean up; then reap the watchdog.
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `$TIDEMARK_S3S_FS`, or `s3s-fs` on `PATH`.
fn server_command() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("TIDEMARK_S3S_FS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    find_on_path("s3s-fs")
        .ok_or_else(|| TestkitError::new(format!("s3s-fs is not installed (not on PATH); {INSTALL_HINT}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_buckets_and_cleans_up_on_drop() {
        let server = match S3sServer::start() {
            Ok(server) => server,
            Err(err) => return skip_or_fail("s3s::starts_serves_buckets_and_cleans_up_on_drop", &err),
        };
        let bucket = server.new_bucket().unwrap();
        assert!(server.root().join(&bucket).is_dir());
        assert!(server.create_bucket(&bucket).is_err(), "exists already");
        assert!(server.create_bucket("No_Such").is_err());
        assert_eq!(
            server.url(&bucket, "/a/b/"),
            format!("s3://{bucket}/a/b?endpoint=http://127.0.0.1:{}&region=us-east-1&path_style=true", server.port())
        );
        // An unsigned request is refused: it checks credentials.
        let response = http::request(server.addr, "GET", &format!("/{bucket}"), &[], b"").unwrap();
        assert_eq!(response.status, 403, "{}", response.body);
        let (root, addr) = (server.root().to_owned(), server.addr);
        drop(server);
        assert!(!root.exists(), "root directory left behind");
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(), "server still listening");
    }
}
