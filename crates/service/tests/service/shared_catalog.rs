//! Two daemons, as two regions would run them, sharing one catalog in a real PostgreSQL 15: each
//! has its own owner, its own connection and its own (manual) clock, and both read the same
//! config. Every scheduled run executes exactly once across the two, whether they tick one after
//! the other or at the same moment from two threads; and when one dies in the middle of a run,
//! the other takes the run over once the dead one's lease ends, marking its job interrupted.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tidemark_service::{Daemon, DaemonOptions, JobHook, ManualClock};
use tidemark_service_core::{Catalog, Claim, Config, JobFilter, JobKind, JobRecord, JobStatus, RunKey, Trigger};
use tidemark_service_state::PgCatalog;
use tidemark_testkit::postgres::{PgCluster, PgOptions};

use crate::support::World;

/// A directory backed up every minute (UTC, no window).
const EVERY_MINUTE: &str = r#"
[sources.uploads]
kind = "directory"
paths = ["{ROOT}/src"]
repository = "primary"
schedule = "* * * * *"
"#;

/// The lease both daemons take on a run: shorter than the schedule's minute, so that a run whose
/// holder died can be taken over before the next one is due.
const LEASE: SignedDuration = SignedDuration::from_secs(30);

/// The instant the daemons start at, 30 s before the first scheduled run.
const START: &str = "2026-03-02T12:00:30Z";

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("bad test instant {text:?}: {e}"))
}

/// A new, empty database on `pg` for the catalog; its connection string (TCP, trusted).
fn catalog_database(pg: &PgCluster, name: &str) -> String {
    pg.psql(&format!("CREATE DATABASE {name}")).unwrap();
    format!("host=127.0.0.1 port={} user=postgres dbname={name}", pg.port())
}

/// One region's daemon: its own PostgreSQL connection to the shared catalog and its own clock.
struct Region {
    daemon: Daemon,
    clock: Arc<ManualClock>,
    catalog: Arc<PgCatalog>,
}

impl Region {
    fn new(config: &Arc<Config>, connection: &str, owner: &str, hook: Option<Arc<dyn JobHook>>) -> Region {
        let catalog = Arc::new(PgCatalog::connect(connection, None, owner).unwrap());
        let clock = Arc::new(ManualClock::new(ts(START)));
        let options =
            DaemonOptions { owner: owner.into(), clock: clock.clone(), lease: LEASE, hook, ..DaemonOptions::default() };
        let daemon = Daemon::new(config.clone(), catalog.clone() as Arc<dyn Catalog>, options);
        Region { daemon, clock, catalog }
    }

    /// One tick at `now` on this region's clock; the jobs it started.
    fn tick_at(&self, now: Timestamp) -> Vec<JobRecord> {
        self.clock.set(now);
        self.daemon.tick().unwrap().started
    }

    fn jobs(&self) -> Vec<JobRecord> {
        self.catalog.jobs(&JobFilter::default()).unwrap()
    }
}

/// Both regions tick at the same moment, each from its own thread; the jobs started.
fn tick_together(a: &Region, b: &Region, at_a: Timestamp, at_b: Timestamp) -> Vec<JobRecord> {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            a.clock.set(at_a);
            barrier.wait();
            a.daemon.tick().unwrap().started
        });
        let second = s.spawn(|| {
            b.clock.set(at_b);
            barrier.wait();
            b.daemon.tick().unwrap().started
        });
        let mut started = first.join().unwrap();
        started.extend(second.join().unwrap());
        started
    })
}

fn run_key(scheduled_for: Timestamp) -> RunKey {
    RunKey { source: "uploads".into(), kind: JobKind::Backup, scheduled_for }
}

#[test]
fn two_regions_on_one_postgres_catalog_run_every_scheduled_backup_exactly_once() {
    let Some(pg) = PgCluster::start_or_skip("service_two_regions_run_every_run_once", &PgOptions::default()) else {
        return;
    };
    let connection = catalog_database(&pg, "tidemark_shared");
    let world = World::new(START);
    let config = world.config(EVERY_MINUTE);
    let a = Region::new(&config, &connection, "eu-west", None);
    let b = Region::new(&config, &connection, "ap-south", None);
    assert!(a.daemon.recover().unwrap().is_empty());
    assert!(b.daemon.recover().unwrap().is_empty());

    let first = ts("2026-03-02T12:01:00Z");
    let instants: Vec<Timestamp> = (0..6).map(|m| first + SignedDuration::from_mins(m)).collect();
    for (round, &instant) in instants.iter().enumerate() {
        std::fs::write(world.path("src/notes.txt"), format!("round {round}")).unwrap();
        // The two hosts' clocks differ by a couple of seconds, as real ones do.
        let (at_a, at_b) = (instant, instant + SignedDuration::from_secs(2));
        let started = match round % 4 {
            0 => [a.tick_at(at_a), b.tick_at(at_b)].concat(),
            2 => [b.tick_at(at_b), a.tick_at(at_a)].concat(),
            _ => tick_together(&a, &b, at_a, at_b),
        };
        assert_eq!(started.len(), 1, "round {round} ({instant}): {started:?}");
        assert_eq!(started[0].scheduled_for, Some(instant), "round {round}");
        assert_eq!(started[0].trigger, Trigger::Schedule, "round {round}");
        match round % 4 {
            0 => assert_eq!(started[0].owner, "eu-west", "the region that asked first runs it"),
            2 => assert_eq!(started[0].owner, "ap-south", "the region that asked first runs it"),
            _ => {}
        }
        // Asked again while it runs and after it finished, neither region starts it again.
        let later = SignedDuration::from_secs(20);
        assert!(tick_together(&a, &b, at_a + later, at_b + later).is_empty(), "round {round}");
        a.daemon.wait_idle();
        b.daemon.wait_idle();
        let later = SignedDuration::from_secs(40);
        assert!(b.tick_at(at_b + later).is_empty() && a.tick_at(at_a + later).is_empty(), "round {round}");
    }

    // The catalog, read through either connection: one succeeded job per scheduled instant.
    let jobs = a.jobs();
    assert_eq!(jobs, b.jobs(), "one catalog");
    assert_eq!(jobs.len(), instants.len(), "{jobs:#?}");
    for job in &jobs {
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        assert_eq!(job.kind, JobKind::Backup);
        assert!(job.snapshot.is_some(), "{job:?}");
    }
    let scheduled: BTreeSet<Timestamp> = jobs.iter().filter_map(|j| j.scheduled_for).collect();
    assert_eq!(scheduled, instants.iter().copied().collect::<BTreeSet<_>>());
    let owners: BTreeSet<&str> = jobs.iter().map(|j| j.owner.as_str()).collect();
    assert_eq!(owners, BTreeSet::from(["ap-south", "eu-west"]), "both regions took runs");
    // Every run is complete for any daemon, and the repository holds one snapshot per run: the
    // very snapshots the jobs recorded.
    let now = ts("2026-03-02T13:00:00Z");
    for &instant in &instants {
        let claim = a.catalog.claim(&run_key(instant), "a-third-region", now + LEASE, now).unwrap();
        assert_eq!(claim, Claim::Done, "{instant}");
    }
    let snapshots = world.open("primary").snapshots().unwrap();
    assert_eq!(snapshots.len(), instants.len());
    let in_repo: BTreeSet<String> = snapshots.iter().map(|(id, _)| id.to_string()).collect();
    let recorded: BTreeSet<String> = jobs.iter().filter_map(|j| j.snapshot.clone()).collect();
    assert_eq!(in_repo, recorded);
    assert!(world.hooks.events().is_empty(), "{:?}", world.hooks.all());
}

/// A daemon that stalls in the middle of a backup (a paused VM, a cut network): its job thread
/// stops before the backup step until the test lets it go, and then carries on as if nothing
/// happened.
struct Freeze {
    /// (a job reached the step, the test let it go)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Freeze {
    fn new() -> Arc<Freeze> {
        Arc::new(Freeze { state: Mutex::new((false, false)), changed: Condvar::new() })
    }

    fn wait_frozen(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.0 {
            let (s, timeout) = self.changed.wait_timeout(state, Duration::from_secs(120)).unwrap();
            assert!(!timeout.timed_out(), "no job reached its backup step");
            state = s;
        }
    }

    fn thaw(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl JobHook for Freeze {
    fn before_step(&self, _job: &JobRecord, step: &str) -> Result<(), String> {
        if step != "backup" {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
        Ok(())
    }
}

#[test]
fn when_a_region_dies_mid_run_the_other_takes_the_run_over_after_the_lease_ends() {
    let Some(pg) = PgCluster::start_or_skip("service_region_dies_mid_run", &PgOptions::default()) else {
        return;
    };
    let connection = catalog_database(&pg, "tidemark_takeover");
    let world = World::new(START);
    let config = world.config(EVERY_MINUTE);
    let freeze = Freeze::new();
    let a = Region::new(&config, &connection, "eu-west", Some(freeze.clone()));
    let b = Region::new(&config, &connection, "ap-south", None);
    a.daemon.recover().unwrap();
    b.daemon.recover().unwrap();

    let instant = ts("2026-03-02T12:01:00Z");
    let started = a.tick_at(instant);
    assert_eq!(started.len(), 1, "{started:?}");
    let dead = started[0].clone();
    freeze.wait_frozen();
    // From here on A is dead: it never ticks again, so nobody renews its lease (until 12:01:30).
    for now in ["2026-03-02T12:01:01Z", "2026-03-02T12:01:15Z", "2026-03-02T12:01:29.999Z"] {
        assert!(b.tick_at(ts(now)).is_empty(), "{now}: the lease of eu-west still runs");
    }
    let mut during = b.catalog.job(&dead.id).unwrap().unwrap();
    assert_eq!((during.status, during.owner.as_str()), (JobStatus::Running, "eu-west"));

    let took = b.tick_at(ts("2026-03-02T12:01:30Z"));
    assert_eq!(took.len(), 1, "the lease ended: ap-south takes the run over: {took:?}");
    let taken = &took[0];
    assert_eq!(
        (taken.owner.as_str(), taken.scheduled_for, &taken.trigger),
        ("ap-south", Some(instant), &Trigger::Schedule)
    );
    b.daemon.wait_idle();

    during = b.catalog.job(&dead.id).unwrap().unwrap();
    assert_eq!(during.status, JobStatus::Interrupted, "{during:?}");
    let message = during.message.clone().unwrap_or_default();
    assert!(message.contains("eu-west lost its lease") && message.contains("ap-south runs it again"), "{message}");
    assert!(during.finished.is_some());
    let (done, log) = tidemark_service_core::Control::job(&b.daemon, &taken.id).unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{:?} {log:?}", done.message);
    let jobs = b.jobs();
    assert_eq!(jobs.len(), 2, "the interrupted job and the one that took over: {jobs:#?}");
    assert!(jobs.iter().all(|j| j.scheduled_for == Some(instant)));
    let snapshots = world.open("primary").snapshots().unwrap();
    assert_eq!(snapshots.len(), 1, "the run executed once");
    assert_eq!(Some(snapshots[0].0.to_string()), done.snapshot);
    let now = ts("2026-03-02T12:01:45Z");
    assert_eq!(b.catalog.claim(&run_key(instant), "eu-west", now + LEASE, now).unwrap(), Claim::Done);
    // The next minute's run goes on as usual, once.
    let next = instant + SignedDuration::from_mins(1);
    let started = b.tick_at(next);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].scheduled_for, Some(next));
    b.daemon.wait_idle();
    assert_eq!(world.open("primary").snapshots().unwrap().len(), 2);

    // The stalled daemon comes back. Its next tick finds its lease gone: its job stops at its next
    // step instead of backing the source up a second time, stays interrupted, and the run stays
    // complete (ap-south's).
    assert!(a.tick_at(ts("2026-03-02T12:02:10Z")).is_empty());
    freeze.thaw();
    a.daemon.wait_idle();
    assert_eq!(world.open("primary").snapshots().unwrap().len(), 2, "the stalled daemon backed up again");
    let back = b.catalog.job(&dead.id).unwrap().unwrap();
    assert_eq!(back.status, JobStatus::Interrupted, "{back:?}");
    let now = ts("2026-03-02T12:02:15Z");
    assert_eq!(b.catalog.claim(&run_key(instant), "ap-south", now + LEASE, now).unwrap(), Claim::Done);
}
