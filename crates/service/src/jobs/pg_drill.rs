//! PostgreSQL drills: the base backup restored with `pg_restore` into a scratch data directory,
//! the WAL it needs fetched from the archive beside it, recovery to the backup's stop LSN, then a
//! real server started on it (PostgreSQL's own binaries, as the `postgres` user when the daemon
//! runs as root) that must answer `SELECT 1`, and stopped.
//!
//! The binaries are found in `TIDEMARK_PG_BIN` (default `/usr/lib/postgresql/15/bin`). The
//! server listens on a Unix socket in a private directory only (no TCP), with its own
//! `hba_file` trusting local connections, and without archiving, so that a drill never touches
//! the production cluster or its archive.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidemark_repo::Repository;
use tidemark_repo::format::objects::Snapshot;
use tidemark_source_pg::backup::extra;
use tidemark_source_pg::wal::{DEFAULT_SEGMENT_SIZE, segment_file_name};
use tidemark_source_pg::{Lsn, PgRestoreOptions, RecoveryTarget, TargetAction};

use super::Ctx;

/// The default location of the PostgreSQL server binaries.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Restores `snapshot` of `source` below `scratch`, starts a server on it and queries it.
pub(super) fn restore_and_query(
    ctx: &Ctx,
    repo: &Repository,
    snapshot: &Snapshot,
    source: &str,
    scratch: &Path,
) -> Result<String, String> {
    let get = |key: &str| snapshot.extra.get(key).map(String::as_str);
    let lsn = |key: &str| -> Result<Lsn, String> {
        get(key).and_then(|v| v.parse().ok()).ok_or_else(|| format!("the base backup does not record its {key}"))
    };
    let (start, stop) = (lsn(extra::START_LSN)?, lsn(extra::STOP_LSN)?);
    let timeline: u32 = get(extra::TIMELINE).and_then(|v| v.parse().ok()).unwrap_or(1);
    let stop_timeline: u32 = get(extra::STOP_TIMELINE).and_then(|v| v.parse().ok()).unwrap_or(timeline);
    let segment_size = get(extra::WAL_SEGMENT_SIZE).and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let first = segment_file_name(timeline, start, segment_size);
    let last = segment_file_name(stop_timeline, stop, segment_size);

    // The WAL from the backup's start to its stop (and the timeline histories), fetched once.
    let wal_dir = scratch.join("wal");
    std::fs::create_dir_all(&wal_dir).map_err(|e| format!("cannot create {}: {e}", wal_dir.display()))?;
    let names = tidemark_source_pg::archive::list_wal(repo, source).map_err(|e| format!("listing the WAL: {e}"))?;
    let needed: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.ends_with(".history") || (n.len() == 24 && n.as_str() >= first.as_str() && n.as_str() <= last.as_str())
        })
        .collect();
    if !names.contains(&last) {
        return Err(format!(
            "the WAL archive of {source} lacks {last}, which the base backup needs to become consistent: it cannot \
             be started; archive WAL into the repository (`tidemark pg archive-push` as archive_command, or `tidemark \
             pg stream`)"
        ));
    }
    for name in &needed {
        tidemark_source_pg::archive_get(repo, source, name, &wal_dir.join(name.as_str()))
            .map_err(|e| format!("fetching WAL {name}: {e}"))?;
    }

    let data = scratch.join("data");
    let options = PgRestoreOptions {
        source: source.to_string(),
        target_dir: data.clone(),
        target: RecoveryTarget::Lsn(stop),
        target_action: TargetAction::Promote,
        restore_command: format!("cp '{}/%f' '%p'", wal_dir.display()),
    };
    let restored = tidemark_source_pg::pg_restore(repo, &options, ctx.progress())
        .map_err(|e| format!("pg_restore of the base backup: {e}"))?;
    ctx.log(
        "info",
        format!("restored {} file(s), {} bytes; starting a server on them", restored.files, restored.bytes),
    );
    ctx.step("verify")?;

    let server = Server::new(scratch, &data, &ctx.id())?;
    let answer = server.start().and_then(|()| server.query("SELECT 1"));
    server.stop();
    let answer = answer?;
    if answer.trim() != "1" {
        return Err(format!("the restored server answered {answer:?} to SELECT 1"));
    }
    Ok(format!(
        "{} file(s), {} bytes restored with WAL {first}..{last}; the server started and answered SELECT 1",
        restored.files, restored.bytes
    ))
}

/// A PostgreSQL server on a restored data directory.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    hba: PathBuf,
    as_postgres: bool,
}

impl Server {
    fn new(scratch: &Path, data: &Path, job: &str) -> Result<Server, String> {
        let bin = std::env::var_os("TIDEMARK_PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
        if !bin.join("pg_ctl").is_file() {
            return Err(format!(
                "no PostgreSQL server binaries in {}: install them (Debian: postgresql-15) or set TIDEMARK_PG_BIN",
                bin.display()
            ));
        }
        // A socket path must stay under 107 bytes: a short directory of its own.
        let socket_dir = std::env::temp_dir().join(format!("tidemark-drill-{}", &job[..job.len().min(16)]));
        std::fs::create_dir_all(&socket_dir).map_err(|e| format!("cannot create {}: {e}", socket_dir.display()))?;
        let hba = scratch.join("drill_hba.conf");
        std::fs::write(&hba, "local all all trust\n").map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        let server = Server {
            bin,
            data: data.to_path_buf(),
            socket_dir,
            log: scratch.join("server.log"),
            hba,
            as_postgres: running_as_root(),
        };
        if server.as_postgres {
            // PostgreSQL refuses to run as root: hand the scratch space to `postgres`.
            for dir in [scratch, server.socket_dir.as_path()] {
                run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir))?;
            }
        }
        run(Command::new("chmod").arg("0700").arg(data))?;
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        Ok(server)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start(&self) -> Result<(), String> {
        let settings = format!(
            "-c port=5432 -c listen_addresses='' -c unix_socket_directories='{}' -c hba_file='{}' \
             -c archive_mode=off -c hot_standby=on",
            self.socket_dir.display(),
            self.hba.display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data).args(["-w", "-t", "600", "-l"]).arg(&self.log).arg("-o").arg(settings).arg("start");
        run(&mut c).map(drop).map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "the restored server did not start: {e}; its log ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        let mut c = self.command("psql");
        c.arg("-h").arg(&self.socket_dir).args(["-p", "5432", "-d", "postgres", "-X", "-A", "-t", "-c", sql]);
        run(&mut c).map_err(|e| format!("the restored server did not answer {sql}: {e}"))
    }

    fn stop(&self) {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]);
        let _ = run(&mut c);
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

/// Runs `c`; its stdout, or its stderr as the error.
fn run(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{:?} failed ({}): {}", c.get_program(), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether this process runs as root (uid 0), from /proc/self/status.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
