//! Harness for the daemon's tests: a temporary directory with real repositories (a primary and an
//! off-site copy sharing its chunking), a directory to back up, a config written from a template,
//! a manual clock, an in-memory catalog, and a real HTTP listener that receives the webhooks.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tempfile::TempDir;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, Repository};
use tidemark_service::{Daemon, DaemonOptions, JobHook, ManualClock};
use tidemark_service_core::{Catalog, Config, Control, JobFilter, JobLogLine, JobRecord, JobRequest};
use tidemark_service_state::MemoryCatalog;
use tidemark_storage::LocalStorage;

pub const PASSWORD: &str = "daemon test password";

/// `[sources.uploads]`: `{ROOT}/src` into `primary`, daily at 01:00 in Kolkata with a one-hour
/// window, then the `extra` lines (TOML) of the same source.
pub fn uploads(extra: &str) -> String {
    format!(
        r#"
[sources.uploads]
kind = "directory"
paths = ["{{ROOT}}/src"]
repository = "primary"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
window = "1h"
{extra}"#
    )
}

/// A temporary world for one test.
pub struct World {
    pub dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub catalog: Arc<dyn Catalog>,
    pub hooks: Webhooks,
}

impl World {
    /// Repositories `primary` and `offsite` (sharing chunking), `src/` with two files, the clock at `now`.
    pub fn new(now: &str) -> World {
        let dir = tempfile::Builder::new().prefix("tidemark-service-test-").tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::write(root.join("repo.pass"), format!("{PASSWORD}\n")).unwrap();
        let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..InitOptions::default() };
        let cred = Credential::Password(PASSWORD.as_bytes().to_vec());
        let primary = Repository::init(Arc::new(LocalStorage::new(root.join("primary"))), &cred, &opts).unwrap();
        let offsite_opts = InitOptions { shared_ids: Some(primary.shared_ids()), ..opts };
        Repository::init(Arc::new(LocalStorage::new(root.join("offsite"))), &cred, &offsite_opts).unwrap();
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        std::fs::write(root.join("src/notes.txt"), "first version").unwrap();
        std::fs::write(root.join("src/sub/data.bin"), noise(3, 300_000)).unwrap();
        World {
            clock: Arc::new(ManualClock::new(now.parse().unwrap())),
            catalog: Arc::new(MemoryCatalog::new()),
            hooks: Webhooks::start(),
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The config text: `[server]`, both repositories, one webhook, and `sources` (TOML) with
    /// `{ROOT}` replaced by the temporary directory.
    pub fn config_text(&self, sources: &str) -> String {
        let root = self.dir.path().display().to_string();
        format!(
            r#"
[server]
state_dir = "{root}/state"

[repositories.primary]
url = "{root}/primary"
password_file = "{root}/repo.pass"

[repositories.offsite]
url = "{root}/offsite"
password_file = "{root}/repo.pass"

[[notify]]
url = "{hook}"

{sources}
"#,
            hook = self.hooks.url,
            sources = sources.replace("{ROOT}", &root)
        )
    }

    pub fn config(&self, sources: &str) -> Arc<Config> {
        parse_config(&self.config_text(sources))
    }

    /// A daemon owned by `owner` on this world's catalog and clock.
    pub fn daemon(&self, config: &Arc<Config>, owner: &str, hook: Option<Arc<dyn JobHook>>) -> Daemon {
        let options =
            DaemonOptions { owner: owner.into(), clock: self.clock.clone(), hook, ..DaemonOptions::default() };
        Daemon::new(config.clone(), self.catalog.clone(), options)
    }

    /// A daemon owned by `host-a` on the config of `sources`, recovered as at its start.
    pub fn recovered(&self, sources: &str, hook: Option<Arc<dyn JobHook>>) -> Daemon {
        let daemon = self.daemon(&self.config(sources), "host-a", hook);
        daemon.recover().unwrap();
        daemon
    }

    /// The messages of a job's log.
    pub fn log(&self, id: &str) -> Vec<String> {
        self.catalog.job_log(id).unwrap().into_iter().map(|l| l.message).collect()
    }

    pub fn set(&self, now: &str) {
        self.clock.set(now.parse::<Timestamp>().unwrap());
    }

    pub fn jobs(&self) -> Vec<JobRecord> {
        self.catalog.jobs(&JobFilter::default()).unwrap()
    }

    pub fn open(&self, name: &str) -> Repository {
        let cred = Credential::Password(PASSWORD.as_bytes().to_vec());
        Repository::open(Arc::new(LocalStorage::new(self.path(name))), &cred).unwrap()
    }
}

/// A config parsed from `text` (panics with the text if it does not parse).
pub fn parse_config(text: &str) -> Arc<Config> {
    Arc::new(Config::parse(text, "tidemark.toml").unwrap_or_else(|e| panic!("config: {e}\n{text}")))
}

/// Starts a job of `source` by `ops` and waits until the daemon is idle: the job and its log.
pub fn run(daemon: &Daemon, source: &str, request: &JobRequest) -> (JobRecord, Vec<JobLogLine>) {
    let job = daemon.start(source, request, "ops").unwrap();
    daemon.wait_idle();
    Control::job(daemon, &job.id).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A real HTTP listener on 127.0.0.1 that answers 200 to every POST and keeps the JSON bodies.
#[derive(Clone)]
pub struct Webhooks {
    pub url: String,
    received: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)>,
}

impl Webhooks {
    fn start() -> Webhooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)> = Arc::default();
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                // Kept before the answer, so that a notification the daemon saw accepted is here.
                if let Ok(value) = serde_json::from_slice(&body) {
                    let (list, ready) = &*sink;
                    list.lock().unwrap().push(value);
                    ready.notify_all();
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Webhooks { url, received }
    }

    /// Every notification received so far.
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.received.0.lock().unwrap().clone()
    }

    /// The events received so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.all().iter().map(|v| v["event"].as_str().unwrap_or_default().to_string()).collect()
    }
}

/// A hook that holds jobs at one step until released, and tells when a job got there.
pub struct Gate {
    /// Jobs held (false) or released (true); `None` once the gate is open for good.
    state: Mutex<Option<HashMap<String, bool>>>,
    changed: Condvar,
    pub step: String,
}

impl Gate {
    pub fn at(step: &str) -> Arc<Gate> {
        Arc::new(Gate { step: step.into(), state: Mutex::new(Some(HashMap::new())), changed: Condvar::new() })
    }

    /// Waits until a job is held at the step; its id.
    pub fn wait_held(&self) -> String {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some((id, _)) = state.iter().flatten().find(|(_, released)| !**released) {
                return id.clone();
            }
            let (s, timeout) = self.changed.wait_timeout(state, Duration::from_secs(120)).unwrap();
            assert!(!timeout.timed_out(), "no job reached step {}", self.step);
            state = s;
        }
    }

    /// Releases the held jobs and lets every later one through.
    pub fn release_all(&self) {
        *self.state.lock().unwrap() = None;
        self.changed.notify_all();
    }
}

impl JobHook for Gate {
    fn before_step(&self, job: &JobRecord, step: &str) -> Result<(), String> {
        if step != self.step {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap();
        let Some(held) = state.as_mut() else { return Ok(()) };
        held.insert(job.id.clone(), false);
        self.changed.notify_all();
        while state.as_ref().is_some_and(|held| !held.get(&job.id).copied().unwrap_or(true)) {
            state = self.changed.wait(state).unwrap();
        }
        Ok(())
    }
}

/// The files below `dir` (recursively), for checking that scratch space was cleaned up.
pub fn files_below(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_below(&e.path()) } else { 1 }).sum()
}

/// A hook that delays one step: a slow disk or network, injected on top of the real job.
pub struct Delay {
    pub step: &'static str,
    pub by: Duration,
}

impl JobHook for Delay {
    fn before_step(&self, _job: &JobRecord, step: &str) -> Result<(), String> {
        if step == self.step {
            std::thread::sleep(self.by);
        }
        Ok(())
    }
}
