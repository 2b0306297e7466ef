//! Real PostgreSQL 15 clusters in temporary directories on free loopback ports.
//!
//! [`PgCluster::start`] runs `initdb` once per test process into a template data directory, copies
//! the template for each cluster, configures it for replication and archiving, starts it with
//! `pg_ctl` and waits until it answers. Dropping the cluster stops it (`-m immediate`) and removes
//! its directory.
//!
//! initdb and postgres refuse to run as root: when the tests run as root, every server command runs
//! as the `postgres` user (`runuser -u postgres --`) and the directories are owned by it. Each test
//! process works under `/tmp/tidemark-pg-PID/` (short, for the Unix socket path); directories of
//! dead test processes are stopped and removed when the next process creates its template.
//! Clusters copied from the template share its system identifier; set [`PgOptions::own_initdb`]
//! for a cluster that must be "another cluster".
//!
//! Binaries come from `$TIDEMARK_PG_BIN` or `/usr/lib/postgresql/15/bin`. Where they are missing,
//! [`PgCluster::start_or_skip`] skips loudly, unless `CI` or `TIDEMARK_REQUIRE_PG=1` is set: then
//! the test fails with the fix (`scripts/install-test-deps postgres`).
//!
//! ```no_run
//! use tidemark_testkit::postgres::{PgCluster, PgOptions};
//!
//! let Some(pg) = PgCluster::start_or_skip("my_test", &PgOptions::default()) else { return };
//! pg.psql("CREATE TABLE t (x int)").unwrap();
//! let conn = pg.connstr(); // host=127.0.0.1 port=... user=tidemark_repl password=... dbname=postgres
//! # let _ = conn;
//! ```

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::TestkitError;

const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
const INSTALL_HINT: &str = "run scripts/install-test-deps postgres (it installs postgresql-15)";
const ROOT_PREFIX: &str = "tidemark-pg-";
const START_TIMEOUT_SECS: u32 = 60;

/// The replication user every cluster has (with the `REPLICATION` attribute).
pub const REPLICATION_USER: &str = "tidemark_repl";
/// Its password (checked only with [`Auth::Scram`]).
pub const REPLICATION_PASSWORD: &str = "tidemark-secret";

static TEMPLATE: OnceLock<Result<Template, TestkitError>> = OnceLock::new();
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// How TCP clients authenticate (Unix-socket connections are always trusted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Auth {
    /// No password asked.
    #[default]
    Trust,
    /// SCRAM-SHA-256 password authentication.
    Scram,
}

/// How to configure a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgOptions {
    /// Authentication for TCP connections.
    pub auth: Auth,
    /// `archive_mode = on` with this `archive_command` (`%p`, `%f` as PostgreSQL expands them).
    pub archive_command: Option<String>,
    /// Start as a standby (a `standby.signal` file, no primary): it waits for WAL until
    /// [`PgCluster::promote`], which moves it to a new timeline.
    pub standby: bool,
    /// Extra `postgresql.conf` lines, such as `"archive_timeout = 1"`.
    pub extra_conf: Vec<String>,
    /// Run initdb for this cluster (about a second) instead of copying the process's template:
    /// clusters copied from the template share one system identifier, so a test that needs
    /// "another cluster" sets this.
    pub own_initdb: bool,
}

/// A running PostgreSQL cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    as_postgres: bool,
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    auth: Auth,
}

#[derive(Debug)]
struct Template {
    bin: PathBuf,
    as_postgres: bool,
    process_root: PathBuf,
    data: PathBuf,
}

impl PgCluster {
    /// Start a fresh cluster (a copy of this process's initdb template) on a free port.
    pub fn start(options: &PgOptions) -> Result<PgCluster, TestkitError> {
        let template = template()?;
        let root = template.new_cluster_root()?;
        let data = root.join("data");
        if options.own_initdb {
            initdb(&template.bin, template.as_postgres, &data)?;
        } else {
            run(Command::new("cp").arg("-a").arg(&template.data).arg(&data))
                .map_err(|e| TestkitError::new(format!("cannot copy the template cluster: {e}")))?;
        }
        let mut conf = String::from(
            "\n# tidemark testkit\nwal_level = replica\nmax_wal_senders = 10\n\
             max_replication_slots = 10\nfsync = off\n",
        );
        if let Some(command) = &options.archive_command {
            let _ = writeln!(conf, "archive_mode = on\narchive_command = '{}'", command.replace('\'', "''"));
        }
        for line in &options.extra_conf {
            let _ = writeln!(conf, "{line}");
        }
        append(&data.join("postgresql.conf"), &conf)?;
        write_file(&data.join("pg_hba.conf"), &hba(options.auth))?;
        if options.standby {
            write_file(&data.join("standby.signal"), "")?;
        }
        let cluster = Self::start_in(template, root, data, options.auth)?;
        if !options.standby {
            cluster.create_replication_user()?;
        }
        Ok(cluster)
    }

    /// [`start`](Self::start), or `None` after a loud skip message when the PostgreSQL binaries
    /// are missing.
    ///
    /// # Panics
    ///
    /// When they are missing and [`pg_required`] (a test must not pass without having run), or
    /// when a cluster cannot start although the binaries are there.
    pub fn start_or_skip(test: &str, options: &PgOptions) -> Option<PgCluster> {
        if let Err(err) = binaries() {
            skip_or_fail_pg(test, &err);
            return None;
        }
        match Self::start(options) {
            Ok(cluster) => Some(cluster),
            Err(err) => panic!("{test}: {err}"),
        }
    }

    /// Start a server on an existing data directory, such as a restored base backup: `dir` is
    /// moved under this process's test root, made owned by `postgres` with mode 0700, given the
    /// testkit's `pg_hba.conf`, and started on a free port. It is removed on drop like any other.
    ///
    /// Recovery settings (`recovery.signal`, `restore_command`) are the caller's to write first.
    pub fn start_existing(dir: &Path, auth: Auth) -> Result<PgCluster, TestkitError> {
        let template = template()?;
        let root = template.new_cluster_root()?;
        let data = root.join("data");
        run(Command::new("cp").arg("-a").arg(dir).arg(&data))
            .map_err(|e| TestkitError::new(format!("cannot copy {}: {e}", dir.display())))?;
        if template.as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&data))?;
        }
        run(Command::new("chmod").arg("0700").arg(&data))?;
        write_file(&data.join("pg_hba.conf"), &hba(auth))?;
        // A restored directory may hold its source's pid file (never from a base backup, but from
        // a copied data directory).
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        Self::start_in(template, root, data, auth)
    }

    fn start_in(template: &Template, root: PathBuf, data: PathBuf, auth: Auth) -> Result<PgCluster, TestkitError> {
        let socket_dir = root.join("s");
        std::fs::create_dir_all(&socket_dir)
            .map_err(|e| TestkitError::new(format!("cannot create {}: {e}", socket_dir.display())))?;
        template.chown(&root)?;
        let mut cluster = PgCluster {
            bin: template.bin.clone(),
            as_postgres: template.as_postgres,
            log: root.join("server.log"),
            root,
            data,
            socket_dir,
            port: 0,
            auth,
        };
        let mut last = None;
        // Another process may take the free port between our probe and the server's bind.
        for _ in 0..3 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::new("postgres did not start")))
    }

    fn server_options(&self) -> String {
        format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.socket_dir.display())
    }

    fn pg_ctl_start(&self) -> Result<(), TestkitError> {
        let out = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            &START_TIMEOUT_SECS.to_string(),
            "-l",
            &self.log.to_string_lossy(),
            "-o",
            &self.server_options(),
        ])?;
        if !out.status.success() {
            return Err(TestkitError::new(format!(
                "pg_ctl start failed ({}): {} {}; {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
                log_tail(&self.log)
            )));
        }
        self.wait_ready()
    }

    /// Wait until the server accepts TCP connections and answers queries (standbys answer too).
    fn wait_ready(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(START_TIMEOUT_SECS));
        loop {
            let tcp = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, self.port).into(), Duration::from_millis(200))
                .is_ok();
            if tcp && self.psql("SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TestkitError::new(format!(
                    "postgres on port {} did not answer: {}",
                    self.port,
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, TestkitError> {
        let mut command = self.server_command("pg_ctl");
        command.arg("-D").arg(&self.data).args(args);
        command.output().map_err(|e| TestkitError::new(format!("cannot run pg_ctl: {e}; {INSTALL_HINT}")))
    }

    fn server_command(&self, program: &str) -> Command {
        command_for(&self.bin, self.as_postgres, program)
    }

    /// Run SQL as the `postgres` superuser over the Unix socket and return psql's unaligned,
    /// tuples-only output, trimmed (rows on lines, columns separated by `|`).
    pub fn psql(&self, sql: &str) -> Result<String, TestkitError> {
        let out = self
            .server_command("psql")
            .arg("-X")
            .args(["-h", &self.socket_dir.to_string_lossy()])
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            .args(["-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| TestkitError::new(format!("cannot run psql: {e}")))?;
        if !out.status.success() {
            return Err(TestkitError::new(format!(
                "psql failed ({}) for {sql:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A libpq key/value connection string for [`REPLICATION_USER`] over TCP.
    pub fn connstr(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={REPLICATION_USER} password={REPLICATION_PASSWORD} dbname=postgres",
            self.port
        )
    }

    /// A connection string for the `postgres` superuser over the Unix socket.
    pub fn superuser_connstr(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.socket_dir.display(), self.port)
    }

    /// The data directory (owned by `postgres`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The TCP port on 127.0.0.1 (and the socket's port number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How TCP clients authenticate.
    pub fn auth(&self) -> Auth {
        self.auth
    }

    /// The directory of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A directory owned by `postgres` inside this cluster's test directory (created if missing,
    /// removed with the cluster): a place for archives or restored data directories.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf, TestkitError> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| TestkitError::new(format!("cannot create {}: {e}", dir.display())))?;
        if self.as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        }
        Ok(dir)
    }

    fn create_replication_user(&self) -> Result<(), TestkitError> {
        self.psql(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{REPLICATION_USER}') \
             THEN CREATE ROLE {REPLICATION_USER} WITH LOGIN REPLICATION PASSWORD '{REPLICATION_PASSWORD}'; \
             END IF; END $$"
        ))
        .map(drop)
    }

    /// Promote a standby (`pg_ctl promote -w`): it ends recovery and moves to a new timeline.
    /// The replication user is created then if the cluster started as a standby.
    pub fn promote(&self) -> Result<(), TestkitError> {
        let out = self.pg_ctl(&["promote", "-w", "-t", &START_TIMEOUT_SECS.to_string()])?;
        if !out.status.success() {
            return Err(TestkitError::new(format!(
                "pg_ctl promote failed: {}; {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log_tail(&self.log)
            )));
        }
        self.create_replication_user()
    }

    /// Stop (fast) and start again on the same port.
    pub fn restart(&self) -> Result<(), TestkitError> {
        self.stop()?;
        self.pg_ctl_start()
    }

    /// Stop the server (`-m fast`, waiting); [`start_again`](Self::start_again) brings it back.
    pub fn stop(&self) -> Result<(), TestkitError> {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w"])?;
        if !out.status.success() {
            return Err(TestkitError::new(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Start a stopped server again on the same port.
    pub fn start_again(&self) -> Result<(), TestkitError> {
        self.pg_ctl_start()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Template {
    fn new_cluster_root(&self) -> Result<PathBuf, TestkitError> {
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let root = self.process_root.join(format!("c{n}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .map_err(|e| TestkitError::new(format!("cannot create {}: {e}", root.display())))?;
        self.chown(&root)?;
        Ok(root)
    }

    fn chown(&self, path: &Path) -> Result<(), TestkitError> {
        if self.as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(path))?;
        }
        Ok(())
    }
}

fn template() -> Result<&'static Template, TestkitError> {
    TEMPLATE.get_or_init(make_template).as_ref().map_err(Clone::clone)
}

fn make_template() -> Result<Template, TestkitError> {
    let bin = binaries()?;
    let as_postgres = running_as_root();
    let tmp = PathBuf::from("/tmp");
    remove_stale_roots(&tmp, &bin, as_postgres);
    let process_root = tmp.join(format!("{ROOT_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&process_root);
    std::fs::create_dir_all(&process_root)
        .map_err(|e| TestkitError::new(format!("cannot create {}: {e}", process_root.display())))?;
    let template = Template { bin, as_postgres, data: process_root.join("template"), process_root };
    template.chown(&template.process_root)?;
    initdb(&template.bin, as_postgres, &template.data)?;
    Ok(template)
}

/// initdb into `data` (its parent must be owned by postgres when `as_postgres`).
fn initdb(bin: &Path, as_postgres: bool, data: &Path) -> Result<(), TestkitError> {
    let out = command_for(bin, as_postgres, "initdb")
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N"])
        .output()
        .map_err(|e| TestkitError::new(format!("cannot run initdb: {e}; {INSTALL_HINT}")))?;
    if !out.status.success() {
        return Err(TestkitError::new(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Stop and remove the test directories of test processes that are gone.
fn remove_stale_roots(tmp: &Path, bin: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(ROOT_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let root = entry.path();
        if let Ok(clusters) = std::fs::read_dir(&root) {
            for cluster in clusters.flatten() {
                let data = cluster.path().join("data");
                if data.join("postmaster.pid").exists() {
                    let _ = command_for(bin, as_postgres, "pg_ctl")
                        .arg("-D")
                        .arg(&data)
                        .args(["stop", "-m", "immediate", "-w"])
                        .output();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The binary directory, or the error with the fix.
fn binaries() -> Result<PathBuf, TestkitError> {
    let bin = std::env::var_os("TIDEMARK_PG_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
    for program in ["initdb", "pg_ctl", "postgres", "psql"] {
        if !bin.join(program).is_file() {
            return Err(TestkitError::new(format!(
                "PostgreSQL 15 is not installed: {} is missing; {INSTALL_HINT}",
                bin.join(program).display()
            )));
        }
    }
    Ok(bin)
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn command_for(bin: &Path, as_postgres: bool, program: &str) -> Command {
    let path = bin.join(program);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    };
    // The server inherits the working directory, which must be readable by postgres.
    command.current_dir("/tmp");
    command
}

fn hba(auth: Auth) -> String {
    let method = match auth {
        Auth::Trust => "trust",
        Auth::Scram => "scram-sha-256",
    };
    format!(
        "local all all trust\nlocal replication all trust\n\
         host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 {method}\nhost replication all 127.0.0.1/32 {method}\n"
    )
}

fn run(command: &mut Command) -> Result<(), TestkitError> {
    let out = command.output().map_err(|e| TestkitError::new(format!("cannot run {command:?}: {e}")))?;
    if !out.status.success() {
        return Err(TestkitError::new(format!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), TestkitError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| TestkitError::new(format!("cannot append to {}: {e}", path.display())))
}

/// Write a file inside a data directory; files created by root there are handed to postgres.
fn write_file(path: &Path, text: &str) -> Result<(), TestkitError> {
    std::fs::write(path, text).map_err(|e| TestkitError::new(format!("cannot write {}: {e}", path.display())))?;
    if running_as_root() {
        run(Command::new("chown").arg("postgres:postgres").arg(path))?;
    }
    Ok(())
}

fn free_port() -> Result<u16, TestkitError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| TestkitError::new(format!("no free port on 127.0.0.1: {e}")))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
    if tail.is_empty() { "no server log output".to_owned() } else { format!("server log: {tail}") }
}

/// Whether PostgreSQL tests must not skip: `CI` is set (and not `false` or `0`), or
/// `TIDEMARK_REQUIRE_PG=1` (or `TIDEMARK_REQUIRE_S3=1`, as for every service).
pub fn pg_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    crate::services_required() || set("TIDEMARK_REQUIRE_PG")
}

/// Skip (loudly) or, when [`pg_required`], panic with `err`.
///
/// # Panics
///
/// When PostgreSQL is required: a test must not pass without having run.
pub fn skip_or_fail_pg(test: &str, err: &dyn std::fmt::Display) {
    use std::io::Write;
    if pg_required() {
        panic!("{test}: {err}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {err} (set TIDEMARK_REQUIRE_PG=1 to make this a failure)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_answers_restarts_and_is_removed() {
        let Some(pg) = PgCluster::start_or_skip("cluster_starts", &PgOptions::default()) else {
            return;
        };
        assert_eq!(pg.psql("SELECT 1 + 1").unwrap(), "2");
        assert_eq!(pg.psql("SHOW wal_level").unwrap(), "replica");
        assert_eq!(pg.psql("SHOW port").unwrap(), pg.port().to_string());
        pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (7)").unwrap();
        let roles =
            pg.psql(&format!("SELECT rolreplication FROM pg_roles WHERE rolname = '{REPLICATION_USER}'")).unwrap();
        assert_eq!(roles, "t");
        pg.restart().unwrap();
        assert_eq!(pg.psql("SELECT x FROM t").unwrap(), "7");
        assert!(pg.psql("SELEC nonsense").is_err());
        let root = pg.root.clone();
        drop(pg);
        assert!(!root.exists());
    }

    #[test]
    fn clusters_are_independent_and_standby_promotes() {
        let Some(a) = PgCluster::start_or_skip("standby_promotes", &PgOptions::default()) else {
            return;
        };
        let options = PgOptions {
            standby: true,
            auth: Auth::Scram,
            archive_command: Some("/bin/true %p".into()),
            ..PgOptions::default()
        };
        let b = PgCluster::start(&options).unwrap();
        assert_ne!(a.port(), b.port());
        let own = PgCluster::start(&PgOptions { own_initdb: true, ..PgOptions::default() }).unwrap();
        let sysid = "SELECT system_identifier FROM pg_control_system()";
        assert_ne!(a.psql(sysid).unwrap(), own.psql(sysid).unwrap());
        assert_eq!(b.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
        assert_eq!(b.psql("SHOW archive_mode").unwrap(), "on");
        b.promote().unwrap();
        assert_eq!(b.psql("SELECT pg_is_in_recovery()").unwrap(), "f");
        let tli = b.psql("SELECT timeline_id FROM pg_control_checkpoint()").unwrap();
        assert!(tli == "2" || tli == "1", "timeline {tli}");
        assert_eq!(b.psql("SELECT count(*) FROM pg_ls_waldir() WHERE name = '00000002.history'").unwrap(), "1");
    }
}
