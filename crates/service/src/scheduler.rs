//! When jobs run: recovery at start, and the tick that starts due runs, records missed ones,
//! renews leases, applies the overrun rule and notices stale backups.
//!
//! Every decision is a function of the catalog and [`crate::Clock::now`]: tests drive the tick
//! with a [`crate::ManualClock`]. The rules (from `tidemark_service_core::schedule`):
//!
//! | situation | what the tick does |
//! | --- | --- |
//! | a run's instant came and its window is open | claim it; if granted, start it |
//! | the window closed before it could start (daemon down, source busy) | record `missed`, notify `window_missed` |
//! | several runs passed while the daemon was down | the latest runs once if its window is open (`catch_up`), the others are missed |
//! | a run still going at its window's end | `overrun = "continue"`: log it; `"cancel"`: record `cancelled`, notify `job_failed` |
//! | another daemon holds the run's lease | skip it: that daemon runs it |
//! | a job of this owner left `running` at start | mark it `interrupted`; rerun backups and drills |
//! | the newest backup is older than `stale_after` | notify `backup_stale` once until a backup succeeds |

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;

use jiff::{SignedDuration, Timestamp};
use tidemark_service_core::config::{Event, Overrun};
use tidemark_service_core::{
    Claim, JobFilter, JobKind, JobRecord, JobStatus, RunKey, Schedule, Source, Trigger, format_duration,
};

use crate::jobs::Work;
use crate::notify::Notice;
use crate::{Daemon, DaemonError, Inner, lock};

/// The scheduler's memory: per source and kind, the scheduled instant of the last run dealt with.
#[derive(Debug, Default)]
pub(crate) struct State {
    last: HashMap<(String, JobKind), Timestamp>,
    started_at: Option<Timestamp>,
    stale_notified: HashSet<String>,
}

/// What one [`Daemon::tick`] did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// Jobs started (scheduled or caught up).
    pub started: Vec<JobRecord>,
    /// Runs recorded as missed.
    pub missed: Vec<JobRecord>,
    /// Jobs cancelled at their window's end.
    pub cancelled: Vec<String>,
    /// Sources found stale (notified this tick).
    pub stale: Vec<String>,
}

impl Daemon {
    /// Recovers from a crash and prepares the scheduler; call once before the first tick.
    ///
    /// Jobs of this owner still `running` or `queued` in the catalog are marked `interrupted`;
    /// backups and drills among them are rerun (trigger `rerun`). Returns the reruns started.
    pub fn recover(&self) -> Result<Vec<JobRecord>, DaemonError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        lock(&inner.sched).started_at = Some(now);
        let filter = JobFilter { status: vec![JobStatus::Running, JobStatus::Queued], ..JobFilter::default() };
        let mut reruns = Vec::new();
        let running_here = lock(&inner.running).keys().cloned().collect::<HashSet<_>>();
        for mut job in inner.catalog.jobs(&filter)? {
            if job.owner != inner.owner || running_here.contains(&job.id) {
                continue;
            }
            let rerun = (matches!(job.kind, JobKind::Backup | JobKind::Drill)
                && inner.config.sources.contains_key(&job.source))
            .then(|| inner.new_job(&job.source, job.kind, Trigger::Rerun { of: job.id.clone() }, job.scheduled_for));
            job.status = JobStatus::Interrupted;
            job.finished = Some(now);
            job.message = Some(match &rerun {
                Some(r) => format!("interrupted: daemon {} stopped while it ran; rerun as job {}", inner.owner, r.id),
                None => format!("interrupted: daemon {} stopped while it ran; not rerun (start it again)", inner.owner),
            });
            inner.catalog.update_job(&job)?;
            inner.log(&job.id, "error", job.message.clone().unwrap_or_default());
            let Some(rerun) = rerun else { continue };
            let key =
                job.scheduled_for.map(|t| RunKey { source: job.source.clone(), kind: job.kind, scheduled_for: t });
            if let Some(key) = &key {
                let until = now.checked_add(inner.lease).unwrap_or(Timestamp::MAX);
                if inner.catalog.claim(key, &inner.owner, until, now)? != Claim::Granted {
                    continue;
                }
            }
            let work = if job.kind == JobKind::Drill { Work::Drill } else { Work::Backup };
            reruns.push(self.launch(rerun, key, work)?);
        }
        // Where each schedule stands: the newest scheduled run the catalog knows. A schedule the
        // catalog has never seen starts just far enough back that a run whose window is still
        // open (or one due this very second) runs, and nothing older is reported missed.
        let mut last = HashMap::new();
        for (name, source) in &inner.config.sources {
            let mut kinds = vec![JobKind::Backup];
            if source.drill.is_some() {
                kinds.push(JobKind::Drill);
            }
            for kind in kinds {
                let filter = JobFilter { source: Some(name.clone()), kind: Some(kind), ..JobFilter::default() };
                let newest = inner.catalog.jobs(&filter)?.iter().filter_map(|j| j.scheduled_for).max();
                let window = if kind == JobKind::Backup { source.window } else { None };
                let back = window.unwrap_or(SignedDuration::from_secs(1));
                let fresh = now.checked_sub(back).unwrap_or(now);
                last.insert((name.clone(), kind), newest.unwrap_or(fresh));
            }
        }
        lock(&inner.sched).last = last;
        Ok(reruns)
    }

    /// One pass of the scheduler at the clock's current time.
    pub fn tick(&self) -> Result<TickReport, DaemonError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut report = TickReport::default();
        let mut notices = Vec::new();
        self.watch_running(now, &mut report, &mut notices)?;
        for (name, source) in &inner.config.sources {
            self.schedule_kind(source, JobKind::Backup, &source.schedule, source.window, now, &mut report)?;
            if let Some(drill) = &source.drill {
                self.schedule_kind(source, JobKind::Drill, &drill.schedule, None, now, &mut report)?;
            }
            if let Some(notice) = self.stale_check(source, now)? {
                report.stale.push(name.clone());
                notices.push((Event::BackupStale, notice));
            }
        }
        for (event, notice) in notices {
            for failure in inner.notifier.send(event, &notice) {
                if let Some(job) = &notice.job {
                    inner.log(&job.id, "warn", failure);
                }
            }
        }
        Ok(report)
    }

    /// Runs [`Daemon::tick`] every `tick_interval` until `stop` receives or is dropped, on its
    /// own thread. Tick errors (a catalog briefly unreachable) are logged as `tracing` warnings
    /// and retried on the next tick.
    pub fn spawn_scheduler(&self, stop: Receiver<()>) -> JoinHandle<()> {
        let daemon = self.clone();
        std::thread::spawn(move || {
            loop {
                if let Err(e) = daemon.tick() {
                    tracing::warn!("scheduler tick failed, retried in {:?}: {e}", daemon.inner.tick_interval);
                }
                match stop.recv_timeout(daemon.inner.tick_interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
    }

    /// Renews the leases of running scheduled jobs and applies the overrun rule.
    fn watch_running(
        &self,
        now: Timestamp,
        report: &mut TickReport,
        notices: &mut Vec<(Event, Notice)>,
    ) -> Result<(), DaemonError> {
        let inner = &self.inner;
        let until = now.checked_add(inner.lease).unwrap_or(Timestamp::MAX);
        let mut running = lock(&inner.running);
        for running in running.values_mut() {
            if let Some(key) = &running.key {
                let answer = inner.catalog.claim(key, &inner.owner, until, now)?;
                if answer != Claim::Granted {
                    // This daemon was paused or cut off past its lease: another daemon may run the
                    // job again (and marks this one interrupted). Stop at the next step and leave
                    // the run to it: the verdict below is final, and the run is not completed here.
                    running.cancel.store(true, Ordering::SeqCst);
                    let mut record = lock(&running.record);
                    if !record.status.is_final() {
                        record.status = JobStatus::Interrupted;
                        record.finished = Some(now);
                        record.message = Some(format!(
                            "interrupted: daemon {} lost its lease on the run ({answer:?}); it stopped at its next step",
                            inner.owner
                        ));
                    }
                    tracing::warn!(
                        "job {} of {}: lost the lease on its scheduled run: {answer:?}",
                        record.id,
                        key.source
                    );
                    inner.log(&record.id, "warn", format!("lost the lease on its scheduled run: {answer:?}; stopping"));
                    continue;
                }
            }
            if running.overran {
                continue;
            }
            let mut record = lock(&running.record);
            let Some(source) = inner.config.sources.get(&record.source) else { continue };
            let (Some(scheduled), Some(window)) = (record.scheduled_for, source.window) else { continue };
            if record.kind != JobKind::Backup || record.status.is_final() {
                continue;
            }
            let window_end = scheduled.checked_add(window).unwrap_or(Timestamp::MAX);
            if now < window_end {
                continue;
            }
            running.overran = true;
            match source.overrun {
                Overrun::Continue => inner.log(
                    &record.id,
                    "warn",
                    format!(
                        "still running at the end of its window ({window_end}); overrun = \"continue\" lets it finish"
                    ),
                ),
                Overrun::Cancel => {
                    running.cancel.store(true, Ordering::SeqCst);
                    record.status = JobStatus::Cancelled;
                    record.finished = Some(now);
                    record.message = Some(format!(
                        "cancelled: still running at the end of its {} window ({window_end}) and overrun = \"cancel\"; \
                         the remaining steps are skipped",
                        format_duration(window)
                    ));
                    inner.catalog.update_job(&record)?;
                    inner.log(&record.id, "error", record.message.clone().unwrap_or_default());
                    report.cancelled.push(record.id.clone());
                    notices.push((Event::JobFailed, inner.notice(Event::JobFailed, &record)));
                }
            }
        }
        Ok(())
    }

    fn schedule_kind(
        &self,
        source: &Source,
        kind: JobKind,
        schedule: &Schedule,
        window: Option<SignedDuration>,
        now: Timestamp,
        report: &mut TickReport,
    ) -> Result<(), DaemonError> {
        let inner = &self.inner;
        let slot = (source.name.clone(), kind);
        let (last, started_at) = {
            let sched = lock(&inner.sched);
            (sched.last.get(&slot).copied().unwrap_or(now), sched.started_at.unwrap_or(now))
        };
        let catch = schedule.missed_runs(last, now, window);
        let mut dealt = last;
        let earlier = catch.missed_count.saturating_sub(catch.missed.len());
        for (i, missed) in catch.missed.iter().enumerate() {
            let extra = if i == 0 { earlier } else { 0 };
            if let Some(job) = self.record_missed(source, kind, *missed, window, extra, now)? {
                report.missed.push(job);
            }
            dealt = dealt.max(*missed);
        }
        if let Some(run) = catch.run {
            if self.busy(&source.name, kind) {
                // Reconsider it next tick: it starts when the source is free, or is missed once
                // its window closes.
                let before = run.checked_sub(SignedDuration::from_secs(1)).unwrap_or(run);
                lock(&inner.sched).last.insert(slot, dealt.max(before));
                return Ok(());
            }
            let key = RunKey { source: source.name.clone(), kind, scheduled_for: run };
            let until = now.checked_add(inner.lease).unwrap_or(Timestamp::MAX);
            match inner.catalog.claim(&key, &inner.owner, until, now)? {
                Claim::Granted => {
                    self.interrupt_dead_holders(&key, now)?;
                    let trigger = if run < started_at { Trigger::CatchUp } else { Trigger::Schedule };
                    let job = inner.new_job(&source.name, kind, trigger, Some(run));
                    let work = if kind == JobKind::Drill { Work::Drill } else { Work::Backup };
                    report.started.push(self.launch(job, Some(key), work)?);
                    dealt = dealt.max(run);
                }
                Claim::Done => dealt = dealt.max(run),
                Claim::HeldBy { .. } => {
                    // Another daemon runs it. Ask again next tick: if that daemon dies, its lease
                    // runs out and this one takes the run over while the window is open.
                    let before = run.checked_sub(SignedDuration::from_secs(1)).unwrap_or(run);
                    dealt = dealt.max(before);
                }
            }
        }
        lock(&inner.sched).last.insert(slot, dealt);
        Ok(())
    }

    /// Records a run that could not start inside its window (once across daemons).
    fn record_missed(
        &self,
        source: &Source,
        kind: JobKind,
        scheduled: Timestamp,
        window: Option<SignedDuration>,
        earlier: usize,
        now: Timestamp,
    ) -> Result<Option<JobRecord>, DaemonError> {
        let inner = &self.inner;
        let key = RunKey { source: source.name.clone(), kind, scheduled_for: scheduled };
        let until = now.checked_add(inner.lease).unwrap_or(Timestamp::MAX);
        if inner.catalog.claim(&key, &inner.owner, until, now)? != Claim::Granted {
            return Ok(None);
        }
        // A daemon that started this run and died leaves its job `running`: it is interrupted.
        self.interrupt_dead_holders(&key, now)?;
        let mut job = inner.new_job(&source.name, kind, Trigger::Schedule, Some(scheduled));
        let zone = source.schedule.time_zone();
        let local = jiff::tz::TimeZone::get(zone)
            .map(|tz| scheduled.to_zoned_datetime(tz).strftime("%Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_else(|_| scheduled.to_string());
        let why = match window {
            Some(w) => format!(
                "could not start inside its {} window (scheduled {local}, closed {}): the daemon was down or the \
                 source busy",
                format_duration(w),
                scheduled.checked_add(w).unwrap_or(Timestamp::MAX)
            ),
            None => format!("skipped (scheduled {local}): a later run replaced it after the daemon was down"),
        };
        let more = if earlier > 0 { format!("; {earlier} earlier run(s) were missed as well") } else { String::new() };
        job.status = JobStatus::Missed;
        job.finished = Some(now);
        job.message = Some(format!("{why}{more}"));
        inner.catalog.insert_job(&job)?;
        inner.catalog.complete(&key, &inner.owner)?;
        inner.log(&job.id, "warn", job.message.clone().unwrap_or_default());
        for failure in inner.notifier.send(Event::WindowMissed, &inner.notice(Event::WindowMissed, &job)) {
            inner.log(&job.id, "warn", failure);
        }
        Ok(Some(job))
    }

    /// A run whose lease this daemon just won may have been started by a daemon that died:
    /// its job, left `running`, is marked interrupted.
    fn interrupt_dead_holders(&self, key: &RunKey, now: Timestamp) -> Result<(), DaemonError> {
        let inner = &self.inner;
        let filter = JobFilter {
            source: Some(key.source.clone()),
            kind: Some(key.kind),
            status: vec![JobStatus::Running],
            limit: None,
        };
        for mut job in inner.catalog.jobs(&filter)? {
            if job.owner != inner.owner && job.scheduled_for == Some(key.scheduled_for) {
                job.status = JobStatus::Interrupted;
                job.finished = Some(now);
                job.message = Some(format!(
                    "interrupted: daemon {} lost its lease; daemon {} runs it again",
                    job.owner, inner.owner
                ));
                inner.catalog.update_job(&job)?;
            }
        }
        Ok(())
    }

    /// Whether a job of `kind` for `source` is running in this daemon.
    pub(crate) fn busy(&self, source: &str, kind: JobKind) -> bool {
        lock(&self.inner.running).values().any(|r| {
            let r = lock(&r.record);
            r.source == source && r.kind == kind && !r.status.is_final()
        })
    }

    /// A `backup_stale` notice when the newest successful backup of `source` is older than its
    /// policy allows (once until a newer backup succeeds).
    fn stale_check(&self, source: &Source, now: Timestamp) -> Result<Option<Notice>, DaemonError> {
        let inner = &self.inner;
        let Some(newest) = self.newest_success(&source.name)? else {
            return Ok(None);
        };
        let finished = newest.finished.unwrap_or(newest.created);
        let limit = stale_limit(source, now);
        let stale = now.duration_since(finished) > limit;
        let mut sched = lock(&inner.sched);
        if !stale {
            sched.stale_notified.remove(&source.name);
            return Ok(None);
        }
        if !sched.stale_notified.insert(source.name.clone()) {
            return Ok(None);
        }
        let mut notice = inner.notice(Event::BackupStale, &newest);
        notice.message = format!(
            "the newest backup of {} finished {finished}, {} ago; the policy allows {}",
            source.name,
            format_duration(now.duration_since(finished).round(jiff::Unit::Second).unwrap_or_default()),
            format_duration(limit)
        );
        Ok(Some(notice))
    }

    /// The newest succeeded backup job of `source`.
    pub(crate) fn newest_success(&self, source: &str) -> Result<Option<JobRecord>, DaemonError> {
        let filter = JobFilter {
            source: Some(source.to_string()),
            kind: Some(JobKind::Backup),
            status: vec![JobStatus::Succeeded],
            limit: Some(1),
        };
        Ok(self.inner.catalog.jobs(&filter)?.into_iter().next())
    }
}

/// How old the newest backup of `source` may be: `stale_after`, else the time between two
/// scheduled runs plus the window (or one hour without a window).
pub(crate) fn stale_limit(source: &Source, now: Timestamp) -> SignedDuration {
    if let Some(limit) = source.stale_after {
        return limit;
    }
    let grace = source.window.unwrap_or(SignedDuration::from_hours(1));
    let schedule = &source.schedule;
    let period = schedule
        .latest_at_or_before(now)
        .and_then(|p| schedule.next_after(p).map(|n| n.duration_since(p)))
        .or_else(|| {
            let n = schedule.next_after(now)?;
            schedule.next_after(n).map(|m| m.duration_since(n))
        })
        .unwrap_or(SignedDuration::from_hours(24));
    period + grace
}

impl Inner {
    /// The notice for `event` about `job`.
    pub(crate) fn notice(&self, event: Event, job: &JobRecord) -> Notice {
        Notice {
            event: event.as_str(),
            source: job.source.clone(),
            message: job.message.clone().unwrap_or_default(),
            time: self.clock.now(),
            daemon: self.owner.clone(),
            job: Some(job.clone()),
        }
    }
}
