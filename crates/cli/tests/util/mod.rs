//! Harness for the command-line tests: each test gets a temporary directory, a repository location
//! inside it, and runs the real `tidemark` binary with a clean environment (fast key derivation,
//! a known password, no terminal on stdin).

#![allow(dead_code)]

pub mod s3;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// The password every test repository starts with.
pub const PASSWORD: &str = "correct horse battery staple";

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// stdout as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Assert the exit code, showing the output when it differs.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit code {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "the binary panicked:\n{}", self.stderr);
        self
    }
}

/// A temporary directory with a repository location and helpers to run tidemark against it.
pub struct Env {
    /// The temporary directory (removed on drop).
    pub dir: TempDir,
    /// The repository URL (a path by default).
    pub repo: String,
    /// The password given through TIDEMARK_PASSWORD (None: no password in the environment).
    pub password: Option<String>,
    /// Extra environment variables.
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A fresh directory; the repository location is `<dir>/repo` (not created).
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("tidemark-cli-test-").tempdir().expect("temp dir");
        let repo = dir.path().join("repo").to_string_lossy().into_owned();
        Env { dir, repo, password: Some(PASSWORD.into()), vars: Vec::new() }
    }

    /// A fresh directory with an initialized repository.
    pub fn with_repo() -> Env {
        let env = Env::new();
        env.ok(["init"]);
        env
    }

    /// Another handle on the same directory and repository with one more environment variable.
    pub fn with_var(&self, key: &str, value: &str) -> EnvRef<'_> {
        let mut vars = self.vars.clone();
        vars.push((key.into(), value.into()));
        EnvRef { env: self, vars }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A path inside the temporary directory, as a string argument.
    pub fn arg(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    /// Write a file (creating parents) below the temporary directory; returns its path.
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("create parents");
        fs::write(&p, data).expect("write file");
        p
    }

    /// The command with this environment, not yet run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command_with(args, &self.vars)
    }

    fn command_with<I, S>(&self, args: I, vars: &[(String, String)]) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TIDEMARK_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TIDEMARK_REPOSITORY", &self.repo).env("TIDEMARK_TEST_FAST_KDF", "1").env_remove("RUST_BACKTRACE");
        if let Some(pw) = &self.password {
            cmd.env("TIDEMARK_PASSWORD", pw);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// Run tidemark with `args`.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        execute(self.command(args))
    }

    /// Run and expect success.
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).expect(0)
    }

    /// Back up `rel` (a path below the temporary directory) and return the new snapshot's full id.
    pub fn backup(&self, rel: &str, extra: &[&str]) -> String {
        let mut args = vec!["backup".to_string(), self.arg(rel), "--json".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = self.ok(&args);
        run.json()["snapshot_id"].as_str().expect("snapshot_id").to_string()
    }

    /// Ids of the snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let run = self.ok(["snapshots", "--json"]);
        run.json().as_array().expect("array").iter().map(|s| s["id"].as_str().expect("id").to_string()).collect()
    }

    /// Keys of the objects below `prefix` of a local repository, with their sizes.
    pub fn objects(&self, prefix: &str) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        collect(&Path::new(&self.repo).join(prefix), &mut out);
        out.sort();
        out
    }

    /// Where `abs` (an absolute source path) lands when a snapshot is restored into `target`.
    pub fn restored(&self, target: &str, abs: &Path) -> PathBuf {
        self.path(target).join(abs.strip_prefix("/").expect("absolute path"))
    }
}

/// An [`Env`] with extra variables for a few runs.
pub struct EnvRef<'a> {
    env: &'a Env,
    vars: Vec<(String, String)>,
}

impl EnvRef<'_> {
    /// Run tidemark with `args`.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        execute(self.env.command_with(args, &self.vars))
    }

    /// Run and expect success.
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).expect(0)
    }
}

/// Run a prepared command and collect what it gave.
pub fn execute(mut cmd: Command) -> Run {
    let out = cmd.output().expect("run tidemark");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            collect(&p, out);
        } else {
            out.push((p, meta.len()));
        }
    }
}

/// Deterministic pseudo-random (incompressible) bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
