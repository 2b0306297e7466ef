//! `pg stream`: continuous WAL streaming through a physical replication slot into the
//! repository, so that the recovery point stays about a second behind the primary without
//! `archive_timeout`, or at zero with [`PgStreamOptions::synchronous`] (a synchronous standby
//! whose flush position means "durable in the repository").
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//!
//! use tidemark_repo::{NoProgress, Repository};
//! use tidemark_source_pg::{PgStreamOptions, pg_stream};
//!
//! # fn run(repo: &Repository) -> Result<(), tidemark_source_pg::PgError> {
//! let stop = AtomicBool::new(false); // another thread sets it to stop the stream
//! let options = PgStreamOptions {
//!     slot: Some("tidemark_db".into()),
//!     ..PgStreamOptions::new("db", "host=db1 user=repl password=secret")
//! };
//! let outcome = pg_stream(repo, &options, &stop, Arc::new(NoProgress))?;
//! println!("WAL before {} is in the repository", outcome.durable);
//! # Ok(())
//! # }
//! ```
//!
//! # Where streamed WAL goes
//!
//! Into the same archive as [`archive_push`](crate::archive_push): each complete segment
//! becomes the record `named/wal.<source>/<segment>` with the same checks (page header, cluster),
//! the same chunking and therefore the same content ids, so `archive-get`, `pg verify` and
//! `pg restore` work unchanged, and `archive_command` and `pg stream` may both run for one source
//! (the second store of a segment finds identical content and succeeds). Timeline history files
//! are stored as `archive-push` stores them (create-only).
//!
//! # The segment being written
//!
//! The segment in progress is kept in memory and stored as streamed partial records (see
//! [`crate::partial`] for their layout, and for when `archive-get` serves one to recovery): at most
//! every [`partial_interval`](PgStreamOptions::partial_interval) (1 s) while WAL flows, at once when
//! a commit arrives after a quiet spell, in synchronous mode as soon as the stream has caught up with
//! the server and heard nothing more for 1 ms (so that commits arriving together share one store; at
//! the latest after 200 ms of steady flow), and when the stream stops.
//!
//! # Where streaming starts, and never skipping WAL
//!
//! 1. The newest WAL of the source in the repository (highest timeline, then highest end, over
//!    complete segments and streamed partials): from the start of that segment (the segment is
//!    streamed again from its start; stored chunks deduplicate).
//! 2. Else the newest base backup's start segment, so that it becomes restorable.
//! 3. Else the slot's `restart_lsn` (`READ_REPLICATION_SLOT`), else the server's current position.
//!
//! Within one run, a reconnect resumes at the start of the segment in progress. With a slot the
//! server keeps WAL from the last confirmed flush position; a server that no longer has the WAL
//! asked for (the slot was dropped, no slot was used, or `max_slot_wal_keep_size` was hit)
//! answers with `58P01`, and the stream stops with an error that names the first missing
//! segment: it never jumps ahead (`pg verify` shows the gap, a new base backup closes it).
//! The WAL received must start exactly where the previous message ended, or the stream stops.
//!
//! # Timelines
//!
//! When the repository's newest WAL is on an older timeline than the server's, the server's
//! history file decides: streaming continues on the old timeline up to its switch point (the
//! server ends it there), or, when the repository holds WAL past the switch point (a branch the
//! server does not have), on the timeline that continues the history, from the segment holding
//! the switch point. At the end of a timeline while streaming, the history file of the next
//! one is fetched and stored first, then streaming continues from the segment holding the switch
//! point, as `pg_receivewal` does.
//!
//! # Status updates and synchronous replication
//!
//! The write, flush and apply positions reported are all the durable position: WAL is
//! acknowledged only once it is in the repository, so a synchronous primary (`synchronous_commit`
//! `on` or `remote_write`, with `synchronous_standby_names` naming the connection's
//! `application_name`) returns from a commit only after its record is in the repository. Status
//! updates go out after every store and every 10 s.
//!
//! # Failures
//!
//! Network failures, server restarts (a shutting-down walsender ends the stream after everything
//! is confirmed), a terminated walsender, a slot still held by the previous connection, and
//! transient repository failures reconnect with exponential backoff (0.2 s to 10 s, reset once WAL
//! flows again). Wrong credentials, another cluster, a different segment already stored under a
//! name, and missing WAL stop the stream with the error.
//!
//! # Cost
//!
//! One replication connection; memory of one segment (16 MiB). Each complete segment costs
//! what an `archive-push` costs (an archiver session: lock, index load, pack, index file, record);
//! each partial store costs one record write, plus an archiver session when chunks were finished.
//! Measured on the project's 2-core machine (test cluster, local repository, single-row inserts
//! with pgbench): asynchronous streaming cost the primary little (22.8k against 25.0k
//! transactions/s, both sharing the CPU with the stream); as a synchronous standby about 10 ms per
//! commit with one client (75-100 commits/s, mostly the record's fsync) and 915 commits/s with 8
//! clients, which share stores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use jiff::Timestamp;
use tidemark_repo::format::Id;
use tidemark_repo::format::chunker::chunk_lengths;
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{NoProgress, Progress, RepoError, Repository};

use crate::archive::{self, ClusterRecord, WalFileKind, classify_wal_file, wal_namespace};
use crate::partial::{StreamPartialRecord, get_partial, parse_partial_name, partial_name};
use crate::restore::BackupRef;
use crate::wal::{self, WalSegmentHeader};
use crate::{ConnectConfig, ErrorKind, Lsn, PgError, ReplicationClient, SystemIdentity, WalMessage, WalStream};

/// How long a read waits before the loop checks the stop flag and its timers.
const TICK: Duration = Duration::from_millis(100);
/// Synchronous mode stores pending WAL at the latest after this, even while more keeps coming.
const SYNC_MAX_DELAY: Duration = Duration::from_millis(200);
/// Synchronous mode, caught up with the server: a silence this long means no more WAL is on its
/// way, so the WAL received is stored now (one store for every commit that arrived meanwhile).
const SYNC_QUIET: Duration = Duration::from_millis(1);
/// A partial record carries at most this many bytes beyond its base inline; more, and it
/// becomes a new base holding every byte after the finished chunks.
const DELTA_MAX: u64 = 64 << 10;
/// Unasked status updates.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What to stream where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgStreamOptions {
    /// The source name (the same as for `pg backup` and `archive-push`).
    pub source: String,
    /// A libpq-style connection string for a role with `REPLICATION`; its `application_name`
    /// (default `tidemark`) is what `synchronous_standby_names` must name.
    pub connect: String,
    /// A physical replication slot, created when missing. Without one the server may recycle
    /// WAL while the stream is down, which then stops with a gap error.
    pub slot: Option<String>,
    /// Act as a synchronous standby: store the received WAL as soon as the stream has caught up
    /// with the server, so that a waiting commit returns as soon as it is in the repository.
    pub synchronous: bool,
    /// The longest the in-progress segment waits before it is stored (asynchronous mode).
    pub partial_interval: Duration,
}

impl PgStreamOptions {
    /// Asynchronous streaming of `connect` into `source`, without a slot, storing the
    /// in-progress segment every second.
    pub fn new(source: impl Into<String>, connect: impl Into<String>) -> Self {
        PgStreamOptions {
            source: source.into(),
            connect: connect.into(),
            slot: None,
            synchronous: false,
            partial_interval: Duration::from_secs(1),
        }
    }
}

/// What a stream did until it was stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgStreamOutcome {
    /// The timeline streamed last.
    pub timeline: u32,
    /// WAL before this position (on `timeline`) is in the repository.
    pub durable: Lsn,
    /// WAL bytes received.
    pub received: u64,
    /// Complete segments stored (or found already stored, identical).
    pub segments: u64,
    /// Streamed partial records stored.
    pub partials: u64,
    /// Timeline history files stored (or found identical).
    pub history_files: u64,
    /// Connections opened again after a failure.
    pub reconnects: u64,
}

/// Stream WAL from `options.connect` into `repo` until `stop` is set (checked every 100 ms),
/// reconnecting after transient failures; see the module docs. On stop, the WAL received so far
/// is stored before this returns.
pub fn pg_stream(
    repo: &Repository,
    options: &PgStreamOptions,
    stop: &AtomicBool,
    progress: Arc<dyn Progress>,
) -> Result<PgStreamOutcome, PgError> {
    archive::check_source(&options.source)?;
    if let Some(slot) = &options.slot {
        crate::client::check_slot_name(slot)?;
    }
    let config: ConnectConfig = options.connect.parse()?;
    let mut receiver = Receiver::new(repo, options, progress.clone());
    let mut delays = backoff();
    while !stop.load(Ordering::Relaxed) {
        let before = receiver.outcome.received;
        match receiver.session(&config, stop) {
            Ok(()) => break,
            Err(err) if retryable(&err) => {
                if receiver.outcome.received > before {
                    delays = backoff();
                }
                let delay = delays.next().unwrap_or(BACKOFF_MAX);
                receiver.outcome.reconnects += 1;
                progress.warn(&format!(
                    "WAL stream of source {} interrupted: {err}; connecting again in {:.1}s (WAL before {} is in \
                     the repository)",
                    options.source,
                    delay.as_secs_f64(),
                    receiver.durable
                ));
                let until = Instant::now() + delay;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
                }
            }
            Err(err) => return Err(err),
        }
    }
    receiver.outcome.durable = receiver.durable;
    receiver.outcome.timeline = receiver.timeline;
    Ok(receiver.outcome)
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Worth reconnecting: the network, the server restarting, a slot still held by the connection
/// that just broke, a repository that is briefly unreachable or locked.
fn retryable(err: &PgError) -> bool {
    if err.is_transient() || err.sqlstate() == Some("55006") {
        return true;
    }
    if err.kind() != ErrorKind::Repository {
        return false;
    }
    let repo_err = std::error::Error::source(err).and_then(|e| e.downcast_ref::<RepoError>());
    match repo_err {
        Some(RepoError::Storage(e)) => e.is_transient(),
        Some(RepoError::Locked { .. }) => true,
        _ => false,
    }
}

enum Pumped {
    Stopped,
    TimelineEnd { next_timeline: u32, next_start: Lsn },
}

struct Receiver<'r> {
    repo: &'r Repository,
    options: &'r PgStreamOptions,
    progress: Arc<dyn Progress>,
    cluster: Option<ClusterRecord>,
    /// Where the next session starts (a segment start), once known.
    position: Option<(u32, Lsn)>,
    /// WAL before this on `timeline` is in the repository.
    durable: Lsn,
    timeline: u32,
    /// The segment in progress: `buf` holds its bytes from `seg_start`.
    seg_start: Lsn,
    buf: Vec<u8>,
    /// Stored finished chunks of `buf`, covering `buf[..chunked]`.
    chunks: Vec<Id>,
    chunked: usize,
    /// Offsets of the streamed partial records known per segment.
    partials: BTreeMap<String, Vec<u64>>,
    /// The offset of the newest partial record of the segment in progress that holds all of
    /// `buf[chunked..offset]` inline (the base of smaller increments).
    base: Option<u64>,
    last_store: Instant,
    checked_sync: bool,
    outcome: PgStreamOutcome,
}

impl<'r> Receiver<'r> {
    fn new(repo: &'r Repository, options: &'r PgStreamOptions, progress: Arc<dyn Progress>) -> Self {
        Receiver {
            repo,
            options,
            progress,
            cluster: None,
            position: None,
            durable: Lsn::INVALID,
            timeline: 0,
            seg_start: Lsn::INVALID,
            buf: Vec::new(),
            chunks: Vec::new(),
            chunked: 0,
            partials: BTreeMap::new(),
            base: None,
            last_store: Instant::now(),
            checked_sync: false,
            outcome: PgStreamOutcome::default(),
        }
    }

    fn source(&self) -> &str {
        &self.options.source
    }

    fn segment_size(&self) -> u64 {
        self.cluster.map_or(wal::DEFAULT_SEGMENT_SIZE, |c| c.wal_segment_size)
    }

    fn received(&self) -> Lsn {
        Lsn(self.seg_start.0 + self.buf.len() as u64)
    }

    /// One connection: set up, then stream (across timeline ends) until stopped or failed.
    fn session(&mut self, config: &ConnectConfig, stop: &AtomicBool) -> Result<(), PgError> {
        let mut client = ReplicationClient::connect(config)?;
        let system = client.identify_system()?;
        self.check_cluster(&mut client, &system)?;
        if let Some(slot) = &self.options.slot
            && client.read_replication_slot(slot)?.is_none()
        {
            client.create_physical_slot(slot)?;
            self.progress.status(&format!("created replication slot {slot}"));
        }
        if self.options.synchronous && !self.checked_sync {
            self.checked_sync = true;
            self.check_synchronous(&mut client, &config.application_name)?;
        }
        if system.timeline > 1 {
            let history = client.timeline_history(system.timeline)?;
            self.store_history(&history.file_name, &history.content)?;
        }
        let (timeline, start) = match self.position {
            Some(position) => position,
            None => self.resume_point(&mut client, &system)?,
        };
        let (mut timeline, mut start) = self.follow_history(&mut client, &system, timeline, start)?;
        loop {
            self.begin(timeline, start);
            client.set_read_timeout(Some(TICK))?;
            let slot = self.options.slot.as_deref();
            let mut stream = client.start_replication(slot, start, timeline).map_err(|e| self.explain(e))?;
            stream.set_status_interval(STATUS_INTERVAL);
            stream.confirm(self.durable.max(start), self.durable.max(start));
            self.progress.status(&format!("streaming timeline {timeline} from {start}"));
            match self.pump(&mut stream, stop).map_err(|e| self.explain(e))? {
                Pumped::Stopped => {
                    // Everything received is stored; a failing goodbye loses nothing.
                    let _ = stream.finish();
                    return Ok(());
                }
                Pumped::TimelineEnd { next_timeline, next_start } => {
                    drop(stream);
                    self.store_partial()?;
                    let history = client.timeline_history(next_timeline)?;
                    self.store_history(&history.file_name, &history.content)?;
                    timeline = next_timeline;
                    start = next_start.segment_start(self.segment_size());
                    // Nothing of the new timeline is stored yet.
                    self.durable = start;
                    self.position = Some((timeline, start));
                }
            }
        }
    }

    /// The cluster behind the connection must be the source's (recorded on first contact).
    fn check_cluster(&mut self, client: &mut ReplicationClient, system: &SystemIdentity) -> Result<(), PgError> {
        let version = client.server_version().unwrap_or_default().to_owned();
        let major = client
            .server_version_num()
            .map(|v| v / 10_000)
            .ok_or_else(|| PgError::protocol(format!("cannot read the server version {version:?}")))?;
        let found = ClusterRecord {
            system_identifier: system.system_identifier,
            pg_major: major,
            wal_segment_size: client.wal_segment_size()?,
        };
        match self.cluster {
            Some(known) if known != found => Err(PgError::conflict(format!(
                "the server is now cluster {} (PostgreSQL {}), not cluster {} (PostgreSQL {}) that source {} streams; \
                 hint: check --connect",
                found.system_identifier,
                found.pg_major,
                known.system_identifier,
                known.pg_major,
                self.source()
            ))),
            Some(_) => Ok(()),
            None => {
                archive::ensure_cluster_record(self.repo, self.source(), &found)?;
                self.cluster = Some(found);
                Ok(())
            }
        }
    }

    fn check_synchronous(&self, client: &mut ReplicationClient, application_name: &str) -> Result<(), PgError> {
        let sets = client.simple_query("SHOW synchronous_standby_names")?;
        let names = sets.first().map(|s| s.text(0, 0, "synchronous_standby_names")).transpose()?.unwrap_or_default();
        if !(names.contains(application_name) || names.contains('*')) {
            self.progress.warn(&format!(
                "synchronous mode, but the server's synchronous_standby_names ({names:?}) does not name this \
                 stream's application_name {application_name:?}: commits do not wait for the repository; hint: set \
                 synchronous_standby_names = '{application_name}' on the server"
            ));
        }
        Ok(())
    }

    /// Where the first session starts (see the module docs); also learns the stored partials
    /// and removes those proven redundant.
    fn resume_point(&mut self, client: &mut ReplicationClient, system: &SystemIdentity) -> Result<(u32, Lsn), PgError> {
        let size = self.segment_size();
        let names = archive::list_wal(self.repo, self.source())?;
        let mut newest: Option<(u32, Lsn)> = None;
        for name in &names {
            let Ok(class) = classify_wal_file(name) else { continue };
            let Some(segment) = &class.segment else { continue };
            let Ok(parsed) = wal::parse_segment_file_name(segment, size) else { continue };
            let end = match class.kind {
                WalFileKind::Segment => Lsn(parsed.start.0 + size),
                WalFileKind::StreamPartial => match parse_partial_name(name) {
                    Some((_, offset)) => {
                        self.partials.entry(segment.clone()).or_default().push(offset);
                        Lsn(parsed.start.0 + offset)
                    }
                    None => continue,
                },
                _ => continue,
            };
            if newest.is_none_or(|n| (class.timeline, end) > n) {
                newest = Some((class.timeline, end));
            }
        }
        // Partials under a complete segment are redundant (others go once a newer base is stored).
        let segments: Vec<String> = self.partials.keys().cloned().collect();
        for segment in segments {
            if names.binary_search(&segment).is_ok() {
                self.delete_partials(&segment, u64::MAX);
            }
        }
        if let Some((timeline, end)) = newest {
            self.durable = end;
            return Ok((timeline, end.segment_start(size)));
        }
        let cluster = self.cluster.ok_or_else(|| PgError::protocol("cluster unknown before streaming"))?;
        let snapshots = self.repo.snapshots().map_err(|e| PgError::repository("listing snapshots", e))?;
        let newest_backup = snapshots
            .iter()
            .filter(|(_, s)| s.source.as_deref() == Some(self.source()))
            .filter_map(|(id, s)| BackupRef::from_snapshot(*id, s, &cluster))
            .max_by_key(|b| (b.start_lsn, b.time));
        if let Some(backup) = newest_backup {
            return Ok((backup.timeline, backup.start_lsn.segment_start(size)));
        }
        if let Some(slot) = &self.options.slot
            && let Some(info) = client.read_replication_slot(slot)?
            && let Some(restart) = info.restart_lsn
        {
            return Ok((info.restart_timeline.unwrap_or(system.timeline), restart.segment_start(size)));
        }
        Ok((system.timeline, system.xlog_position.segment_start(size)))
    }

    /// Move `(timeline, start)` onto the server's history (see the module docs).
    fn follow_history(
        &mut self,
        client: &mut ReplicationClient,
        system: &SystemIdentity,
        timeline: u32,
        start: Lsn,
    ) -> Result<(u32, Lsn), PgError> {
        if timeline == system.timeline {
            return Ok((timeline, start));
        }
        let unrelated = || {
            PgError::conflict(format!(
                "the repository's WAL of source {} is on timeline {timeline}, which is not in the history of the \
                 server's timeline {}; hint: is --connect the cluster this source protects (a restored copy on \
                 another branch needs its own source name)?",
                self.source(),
                system.timeline
            ))
        };
        if timeline > system.timeline {
            return Err(unrelated());
        }
        let history = client.timeline_history(system.timeline)?;
        let entries = crate::verify::parse_history(&String::from_utf8_lossy(&history.content))
            .map_err(|e| e.with_context(&history.file_name))?;
        let first = entries.iter().position(|(t, _)| *t == timeline).ok_or_else(unrelated)?;
        let (mut timeline, mut start) = (timeline, start);
        for (i, (_, switch)) in entries.iter().enumerate().skip(first) {
            if start < *switch {
                return Ok((timeline, start));
            }
            // The repository holds WAL of this timeline up to or past its end: continue on the
            // timeline that follows, from the segment holding the switch point.
            timeline = entries.get(i + 1).map_or(system.timeline, |(t, _)| *t);
            start = switch.segment_start(self.segment_size());
            self.durable = start;
        }
        Ok((timeline, start))
    }

    /// A server that no longer has the WAL asked for: name the gap.
    fn explain(&self, err: PgError) -> PgError {
        if err.sqlstate() != Some("58P01") {
            return err;
        }
        let segment = wal::segment_file_name(self.timeline, self.received(), self.segment_size());
        err.with_context(&format!(
            "the server no longer has the WAL that source {} needs next (timeline {}, from {}, segment {segment}): \
             streaming it would leave a gap, so it stops here; `pg verify` shows the gap; hint: push the missing \
             segments with `pg archive-push` if the server's archive has them, else take a new base backup; use a \
             replication slot (--slot) so that the server keeps WAL while the stream is down",
            self.source(),
            self.timeline,
            self.received()
        ))
    }

    fn begin(&mut self, timeline: u32, start: Lsn) {
        self.timeline = timeline;
        self.seg_start = start;
        self.buf.clear();
        self.chunks.clear();
        self.chunked = 0;
        self.base = None;
        self.position = Some((timeline, start));
    }

    /// Receive and store until stopped or the timeline ends. Synchronous mode stores once the
    /// stream has caught up with the server and the socket stayed quiet for [`SYNC_QUIET`] (so
    /// that commits arriving together share one store), or after [`SYNC_MAX_DELAY`] under a
    /// steady flow; asynchronous mode at most every `partial_interval`.
    fn pump(&mut self, stream: &mut WalStream<'_>, stop: &AtomicBool) -> Result<Pumped, PgError> {
        let mut pending_since: Option<Instant> = None;
        let mut quiet_wait = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                self.store_partial()?;
                self.report(stream)?;
                return Ok(Pumped::Stopped);
            }
            let message = stream.next_message()?;
            let idle = matches!(message, WalMessage::Idle);
            let caught_up = match message {
                WalMessage::XLogData { start, server_wal_end, data } => {
                    let segments = self.outcome.segments;
                    self.receive(start, &data)?;
                    if self.outcome.segments != segments {
                        self.report(stream)?;
                    }
                    self.received() >= server_wal_end
                }
                WalMessage::Keepalive { server_wal_end } => self.received() >= server_wal_end,
                WalMessage::Idle => true,
                WalMessage::TimelineEnd { next_timeline, next_start } => {
                    return Ok(Pumped::TimelineEnd { next_timeline, next_start });
                }
            };
            let pending = self.received() > self.durable;
            let since = *pending_since.get_or_insert_with(Instant::now);
            let due = pending
                && if self.options.synchronous {
                    (caught_up && quiet_wait && idle) || since.elapsed() >= SYNC_MAX_DELAY
                } else {
                    self.last_store.elapsed() >= self.options.partial_interval
                };
            if due {
                self.store_partial()?;
                self.report(stream)?;
            }
            if !pending || due {
                pending_since = None;
            }
            // Caught up with WAL still to store: listen briefly for more before storing.
            let want_quiet = self.options.synchronous && caught_up && self.received() > self.durable;
            if want_quiet != quiet_wait {
                stream.set_read_timeout(Some(if want_quiet { SYNC_QUIET } else { TICK }))?;
                quiet_wait = want_quiet;
            }
        }
    }

    /// Acknowledge the durable position: write, flush and apply alike.
    fn report(&self, stream: &mut WalStream<'_>) -> Result<(), PgError> {
        stream.confirm(self.durable, self.durable);
        stream.send_status(false)
    }

    fn receive(&mut self, start: Lsn, mut data: &[u8]) -> Result<(), PgError> {
        let expected = self.received();
        if start != expected {
            return Err(PgError::protocol(format!(
                "the server sent WAL from {start} where {expected} was next: refusing to leave a gap or overlap"
            )));
        }
        let size = self.segment_size() as usize;
        while !data.is_empty() {
            let n = (size - self.buf.len()).min(data.len());
            if self.buf.capacity() < size {
                self.buf.reserve_exact(size - self.buf.len());
            }
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.outcome.received += n as u64;
            self.progress.inc(n as u64, 0);
            if self.buf.len() == size {
                self.store_segment()?;
            }
        }
        Ok(())
    }

    /// The segment is complete: store it as `archive-push` would, then drop its partials.
    fn store_segment(&mut self) -> Result<(), PgError> {
        let size = self.segment_size();
        let name = wal::segment_file_name(self.timeline, self.seg_start, size);
        archive::store_wal_file(self.repo, self.source(), &name, &self.buf)?;
        self.outcome.segments += 1;
        self.progress.inc(0, 1);
        self.delete_partials(&name, u64::MAX);
        let next = Lsn(self.seg_start.0 + size);
        self.begin(self.timeline, next);
        self.durable = self.durable.max(next);
        self.last_store = Instant::now();
        Ok(())
    }

    /// Store the segment in progress up to what was received, if that is more than is stored.
    fn store_partial(&mut self) -> Result<(), PgError> {
        let end = self.received();
        if end <= self.durable || self.buf.len() < wal::LONG_PAGE_HEADER_LEN {
            return Ok(());
        }
        let cluster = self.cluster.ok_or_else(|| PgError::protocol("cluster unknown while streaming"))?;
        let segment = wal::segment_file_name(self.timeline, self.seg_start, cluster.wal_segment_size);
        WalSegmentHeader::parse(&self.buf)
            .and_then(|h| h.check_named(&cluster.expected()?, &segment))
            .map_err(|e| e.with_context(&format!("refusing streamed WAL for source {}", self.source())))?;
        // Finished chunks (every one but the last) are cut where the complete segment will be.
        let lengths = chunk_lengths(&self.repo.config().chunker, &self.buf[self.chunked..]);
        // The archiver's lock is held until the record naming the new blobs is written: until
        // then nothing references them, and a prune in between would delete them.
        let mut held = None;
        if lengths.len() > 1 {
            let archiver = self
                .repo
                .archiver("pg stream", Arc::new(NoProgress))
                .map_err(|e| PgError::repository("starting to store streamed WAL", e))?;
            let mut at = self.chunked;
            for len in &lengths[..lengths.len() - 1] {
                let id = archiver
                    .save_blob(BlobType::Data, self.buf[at..at + len].to_vec())
                    .map_err(|e| PgError::repository(&format!("storing streamed WAL of {segment}"), e))?;
                self.chunks.push(id);
                at += len;
            }
            let (_, lock) = archiver
                .finish_keeping_lock()
                .map_err(|e| PgError::repository(&format!("storing streamed WAL of {segment}"), e))?;
            held = Some(lock);
            self.chunked = at;
            self.base = None;
        }
        let offset = self.buf.len() as u64;
        // A small increment over the base costs a small record; otherwise this becomes the base.
        let (base, inline_from) = match self.base {
            Some(base) if offset - base <= DELTA_MAX => (Some(partial_name(&segment, base)), base as usize),
            _ => (None, self.chunked),
        };
        let record = StreamPartialRecord {
            name: partial_name(&segment, offset),
            segment: segment.clone(),
            segment_size: cluster.wal_segment_size,
            size: offset,
            content: self.chunks.clone(),
            tail: hex::encode(&self.buf[inline_from..]),
            base,
            system_identifier: cluster.system_identifier,
            timeline: self.timeline,
            stored_at: Timestamp::now(),
        };
        let namespace = wal_namespace(self.source());
        let mut is_base = record.base.is_none();
        if let Some(lock) = &held {
            lock.check().map_err(|e| PgError::repository(&format!("recording {}", record.name), e))?;
        }
        if let Err(err) = self.repo.put_named(&namespace, &record.name, &record) {
            // Stored before (by an earlier run that got this far, perhaps split differently into
            // base and increment): the same WAL is fine.
            let existing = match get_partial(self.repo, self.source(), &record.name)? {
                Some(existing) => existing,
                None => return Err(PgError::repository(&format!("storing {}", record.name), err)),
            };
            is_base = existing.base.is_none();
            let same = existing.content == record.content
                && crate::partial::resolve(self.repo, self.source(), existing)?
                    .is_some_and(|e| e.tail == hex::encode(&self.buf[self.chunked..]));
            if !same {
                return Err(PgError::conflict(format!(
                    "the repository already holds {} for source {} with different WAL; nothing was \
                     overwritten; hint: another cluster streaming under the same source name?",
                    record.name,
                    self.source()
                )));
            }
        }
        drop(held);
        self.outcome.partials += 1;
        if is_base {
            // A new base: every older partial record of the segment is superseded.
            self.delete_partials(&segment, offset);
            self.base = Some(offset);
        }
        self.partials.entry(segment).or_default().push(offset);
        self.durable = end;
        self.last_store = Instant::now();
        Ok(())
    }

    fn store_history(&mut self, name: &str, content: &[u8]) -> Result<(), PgError> {
        archive::store_wal_file(self.repo, self.source(), name, content)?;
        self.outcome.history_files += 1;
        Ok(())
    }

    /// Delete the known partial records of `segment` below `offset` (a newer one, or the complete
    /// segment, is stored). A failure leaves a redundant record behind: a warning.
    fn delete_partials(&mut self, segment: &str, offset: u64) {
        let Some(offsets) = self.partials.get_mut(segment) else { return };
        let namespace = wal_namespace(&self.options.source);
        offsets.retain(|o| {
            if *o >= offset {
                return true;
            }
            let name = partial_name(segment, *o);
            if let Err(err) = self.repo.delete_named(&namespace, &name) {
                self.progress.warn(&format!("could not delete the redundant record {name}: {err}"));
            }
            false
        });
        if offsets.is_empty() {
            self.partials.remove(segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_reconnect() {
        let io = PgError::io("read", std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(retryable(&io));
        assert!(retryable(&PgError::server(Some("55006".into()), "slot active".into())));
        assert!(retryable(&PgError::server(Some("57P01".into()), "terminating".into())));
        assert!(!retryable(&PgError::server(Some("58P01".into()), "removed".into())));
        assert!(!retryable(&PgError::conflict("different")));
        let locked = PgError::repository("x", RepoError::Locked { holder: "someone".into() });
        assert!(retryable(&locked));
        assert!(!retryable(&PgError::repository("x", RepoError::Invalid("bad".into()))));
    }
}
