//! The command-line surface. Command and flag names are a contract that users' scripts depend on:
//! extend, never rename.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Encrypted, deduplicated, compressed backups of directories and S3 buckets to local disk or S3.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version = crate::version_string(), propagate_version = true)]
#[command(after_help = "Exit codes: 0 ok, 1 fatal error, 2 usage error, 3 backup incomplete \
(some files unreadable), 10 no repository, 11 repository locked, 12 wrong password; `pg archive-push` 0/1, `pg archive-get` \
0 found/1 not found/2 error. See docs/CLI.md.")]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args, Default)]
pub struct Global {
    /// Repository location: a path, file:///path, s3://bucket/prefix?endpoint=URL&region=R&path_style=true,
    /// or http(s)://host:port/ (a `tidemark serve-repo` server; token from TIDEMARK_REPO_TOKEN_FILE or
    /// TIDEMARK_REPO_TOKEN)
    #[arg(short = 'r', long = "repo", env = "TIDEMARK_REPOSITORY", global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// Read the repository password from this file (one trailing newline is stripped).
    /// TIDEMARK_PASSWORD is also accepted.
    #[arg(long, env = "TIDEMARK_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the repository with a key file (its whole contents are the credential).
    #[arg(long, env = "TIDEMARK_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more about what is being done.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, or a bucket (s3://...), into a new snapshot.
    Backup(BackupArgs),
    /// Back up a directory or bucket again and again, every DURATION (continuous mode).
    Watch(WatchArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot into a directory, or a bucket snapshot into a bucket.
    Restore(RestoreArgs),
    /// List every snapshot and version in which a file matching PATTERN exists.
    Find(FindArgs),
    /// Write one file of a snapshot to stdout.
    Dump(DumpArgs),
    /// Show what changed between two snapshots.
    Diff(DiffArgs),
    /// Verify the repository's structure and, with --read-data, every byte of data.
    Check(CheckArgs),
    /// Remove snapshots according to a retention policy.
    Forget(ForgetArgs),
    /// Remove data that no snapshot needs.
    Prune(PruneArgs),
    /// Copy snapshots and the data they need into another repository (off-site copies).
    Copy(CopyArgs),
    /// Show what the repository holds and how well it deduplicates.
    Stats,
    /// Manage the keys (passwords and key files) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Remove stale locks left by processes that died.
    Unlock(UnlockArgs),
    /// Serve a repository directory over HTTP for `-r http://host:port/` clients, optionally
    /// append-only (clients can add backups but never delete or replace them).
    ServeRepo(ServeRepoArgs),
    /// Show the version of tidemark and of the repository format it writes.
    Version,
    /// Run the whole job on a generated sample: init, backup twice, restore, verify, check.
    Demo(DemoArgs),
    /// PostgreSQL: base backups, the WAL archive (archive_command, restore_command) and
    /// point-in-time restores.
    #[command(subcommand)]
    Pg(PgCommand),
    /// The service's configuration file (tidemark.toml): `config check --config FILE`.
    #[command(subcommand)]
    Config(crate::service::ConfigCommand),
    /// The live policy of every source of a service config, measured from its repositories and
    /// the service's catalog.
    Policy(crate::service::ConfigArgs),
    /// The service API's bearer tokens: `token create --config FILE --name N --role R`.
    #[command(subcommand)]
    Token(crate::service::TokenCommand),
    /// Run the service daemon: scheduled backups, retention, off-site copies, restore drills,
    /// notifications, the HTTP API and the dashboard.
    Serve(crate::service::ServeArgs),
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Target size of pack files in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pack_size_mib: u64,
    /// zstd compression level (0 disables compression).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compression_level: i32,
    /// Another repository to take parameters from (with --copy-chunker-params).
    #[arg(long, value_name = "URL", requires = "copy_chunker_params")]
    pub from_repo: Option<String>,
    /// Password file of --from-repo (default: the same credential as this repository).
    #[arg(long, value_name = "FILE", requires = "from_repo")]
    pub from_password_file: Option<PathBuf>,
    /// Key file of --from-repo.
    #[arg(long, value_name = "FILE", requires = "from_repo")]
    pub from_key_file: Option<PathBuf>,
    /// Share chunk ids and chunking with --from-repo, so `copy` between them sends only new data.
    #[arg(long, requires = "from_repo")]
    pub copy_chunker_params: bool,
}

/// `copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Repository to copy into (created with `init --from-repo SOURCE --copy-chunker-params`).
    #[arg(long, env = "TIDEMARK_TO_REPOSITORY", value_name = "URL")]
    pub to_repo: String,
    /// Password file of the target (default: the same credential as the source).
    #[arg(long, env = "TIDEMARK_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Key file of the target.
    #[arg(long, env = "TIDEMARK_TO_KEY_FILE", value_name = "FILE")]
    pub to_key_file: Option<PathBuf>,
    /// Which snapshots (default: all that pass the filters).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Snapshot filters.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Files and directories to back up, or one bucket:
    /// s3://bucket[/prefix][?endpoint=URL&region=R&path_style=true].
    #[arg(required = true, value_name = "PATH|URL")]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub host: Option<String>,
    /// Leave out paths matching this glob (repeatable): `*.tmp`, `cache/`, `/abs/dir`.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Compare against this snapshot to skip unchanged files (default: the latest of the same
    /// host and paths).
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Re-read every file even if unchanged (directories only).
    #[arg(long)]
    pub force: bool,
    /// Buckets with versioning: also keep every non-current version written since the last run.
    #[arg(long)]
    pub all_versions: bool,
    /// Buckets: objects fetched at once (default 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// What to back up, and how: the arguments of `backup`.
    #[command(flatten)]
    pub backup: BackupArgs,
    /// Time between the starts of two runs: 30s, 5m, 1h, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = crate::watch::parse_interval)]
    pub every: std::time::Duration,
    /// Stop after N runs (default: run until interrupted with Ctrl-C).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// `find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// A name (`IMG_1234.jpg`, at any depth) or glob (`/photos/2024/*.jpg`, anchored).
    pub pattern: String,
    /// Only snapshots of this source: a bucket URL, a backed-up path or a source name.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
}

/// Which snapshots: `--host`, `--tag`, `--path` (each repeatable).
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots carrying this tag (repeatable: all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots of exactly these paths (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source: a bucket URL, a backed-up path or a source name.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only snapshots of these hosts/tags/paths.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    pub snapshot: String,
    /// Directory or file inside the snapshot (default: everything).
    pub path: Option<String>,
    /// Long format: mode, owner, size, modification time.
    #[arg(short, long)]
    pub long: bool,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`; may be left out with --at.
    #[arg(required_unless_present = "at")]
    pub snapshot: Option<String>,
    /// Directory to restore into (created if missing), or, for a bucket snapshot, a bucket URL
    /// s3://bucket[/prefix]?endpoint=...
    #[arg(short, long, value_name = "DIR|URL")]
    pub target: PathBuf,
    /// Only restore paths matching this glob, with their parents and children (repeatable).
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Replace files that already exist in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// The newest snapshot taken at or before this time: RFC 3339 (2026-03-01T14:00:00Z) or a
    /// local date and time (2026-03-01 14:00, 2026-03-01).
    #[arg(long, value_name = "TIME", value_parser = crate::restore::parse_time)]
    pub at: Option<jiff::Timestamp>,
    /// With `latest` or --at: only snapshots of this source (bucket URL, backed-up path or
    /// source name).
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Bucket snapshots taken with --all-versions: also restore the newest captured version of
    /// each object deleted before the snapshot.
    #[arg(long)]
    pub include_deleted: bool,
    /// Bucket snapshots: objects written at once (default 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    /// With `latest` or --at: the latest of these hosts/tags/paths.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    pub snapshot: String,
    /// Path of the file inside the snapshot.
    pub file: String,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot.
    pub snapshot1: String,
    /// The newer snapshot.
    pub snapshot2: String,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob.
    #[arg(long)]
    pub read_data: bool,
}

/// `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this duration of the newest: 36h, 14d, 2w, 6mo, 1y.
    #[arg(long, value_name = "DURATION", value_parser = crate::maintenance::parse_duration)]
    pub keep_within: Option<jiff::SignedDuration>,
    /// Keep snapshots carrying this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Only snapshots of this source: a bucket URL, a backed-up path or a source name. For a
    /// PostgreSQL source, also deletes the archived WAL no retained base backup needs; there
    /// --keep-within D keeps every instant of the last D restorable.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only consider these snapshots.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Run prune afterwards to remove the data no snapshot needs any more.
    #[arg(long)]
    pub prune: bool,
    /// Only show what would be removed.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only show what would be removed.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys.
    List,
    /// Add a key: a new password or a key file.
    Add(NewKeyArgs),
    /// Remove a key by id or unique prefix.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Replace the key in use by one for a new password (or key file).
    Passwd(NewKeyArgs),
}

/// Where the new credential of `key add|passwd` comes from.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new password from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// Use the contents of this file (at least 32 bytes) as the new key.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
}

/// `unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no other tidemark runs).
    #[arg(long)]
    pub remove_all: bool,
}

/// `serve-repo`.
#[derive(Debug, Args)]
pub struct ServeRepoArgs {
    /// Address and port to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// The repository directory to serve (it must exist; `init` may run through the server).
    #[arg(long, value_name = "DIR")]
    pub path: PathBuf,
    /// Refuse every delete and every overwrite, except of lock objects (locks/), which clients
    /// refresh and release.
    #[arg(long)]
    pub append_only: bool,
    /// Require `Authorization: Bearer TOKEN`, TOKEN being this file's contents (one trailing
    /// newline stripped).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A second, stronger token that lifts --append-only (for forget/prune from a trusted machine).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the sample, the repository and the restore (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `pg ...`.
#[derive(Debug, Subcommand)]
pub enum PgCommand {
    /// Take a base backup of a running cluster over a replication connection.
    Backup(PgBackupArgs),
    /// Store one WAL file in the repository (for archive_command: `... pg archive-push --source S %p`).
    /// Exit 0 once it is durable (or already stored, identical), 1 on any error.
    ArchivePush(PgArchivePushArgs),
    /// Write one archived WAL file to DEST (for restore_command: `... pg archive-get --source S %f %p`).
    /// Exit 0 found, 1 not in the repository, 2 error.
    ArchiveGet(PgArchiveGetArgs),
    /// Restore a cluster into an empty directory, to the latest state or to a recovery target.
    Restore(PgRestoreArgs),
    /// Prove the archived WAL is continuous from every base backup to the newest archived segment.
    /// Exit 0 when every backup is continuous, 1 when any gap (each is listed).
    Verify(PgVerifyArgs),
    /// Stream WAL continuously through a replication slot into the repository (runs until
    /// killed; reconnects after network failures and server restarts).
    Stream(PgStreamArgs),
}

/// `pg backup`.
#[derive(Debug, Args)]
pub struct PgBackupArgs {
    /// Source name: which cluster this is in the repository (letters, digits, `.`, `_`, `-`).
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// libpq-style connection string of a role with REPLICATION:
    /// `host=db1 port=5432 user=repl password=secret`.
    #[arg(long, value_name = "CONNSTR")]
    pub connect: String,
    /// The backup label (default `tidemark`).
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    pub host: Option<String>,
}

/// `pg archive-push`.
#[derive(Debug, Args)]
pub struct PgArchivePushArgs {
    /// Source name (the same as for `pg backup`).
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// The WAL file to store (`%p`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `pg stream`.
#[derive(Debug, Args)]
pub struct PgStreamArgs {
    /// Source name (the same as for `pg backup` and `archive-push`).
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// libpq-style connection string of a role with REPLICATION; its application_name (default
    /// `tidemark`) is the standby name for synchronous_standby_names.
    #[arg(long, value_name = "CONNSTR")]
    pub connect: String,
    /// Physical replication slot to stream through (created when missing): the server then keeps
    /// WAL while the stream is down.
    #[arg(long, value_name = "SLOT")]
    pub slot: Option<String>,
    /// Act as a synchronous standby: acknowledge WAL as soon as it is in the repository, so that
    /// with synchronous_standby_names naming this stream a commit returns only once it is stored.
    #[arg(long)]
    pub synchronous: bool,
}

/// `pg archive-get`.
#[derive(Debug, Args)]
pub struct PgArchiveGetArgs {
    /// Source name.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// The archived file's name (`%f`).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Where to write it (`%p`).
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// `pg restore`.
#[derive(Debug, Args)]
pub struct PgRestoreArgs {
    /// Source name.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// The data directory to create (missing or empty).
    #[arg(long, value_name = "DIR")]
    pub target_dir: PathBuf,
    /// Recover every transaction committed at or before TIME: RFC 3339 or a local date and time.
    #[arg(long, value_name = "TIME", value_parser = crate::restore::parse_time, group = "recovery_target")]
    pub time: Option<jiff::Timestamp>,
    /// Recover up to this WAL location (`0/16B3748`).
    #[arg(long, value_name = "LSN", value_parser = crate::pg::parse_lsn, group = "recovery_target")]
    pub lsn: Option<tidemark_source_pg::Lsn>,
    /// Recover up to and including this transaction id.
    #[arg(long, value_name = "XID", group = "recovery_target")]
    pub xid: Option<u64>,
    /// Recover up to this restore point (`pg_create_restore_point`).
    #[arg(long, value_name = "NAME", group = "recovery_target")]
    pub name: Option<String>,
    /// What the server does once it reaches the target (default: pause; needs a target).
    #[arg(long, value_enum, requires = "recovery_target")]
    pub target_action: Option<PgTargetAction>,
}

/// `pg verify`.
#[derive(Debug, Args)]
pub struct PgVerifyArgs {
    /// Source name.
    #[arg(long, value_name = "NAME")]
    pub source: String,
    /// Also read back every archived WAL file and authenticate its content, size and header
    /// (reads the whole archive); a damaged file is listed and counts as missing.
    #[arg(long)]
    pub read_data: bool,
}

/// `--target-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgTargetAction {
    /// Pause recovery: inspect with queries, then `pg_wal_replay_resume()` or promote.
    Pause,
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Stop the server.
    Shutdown,
}
