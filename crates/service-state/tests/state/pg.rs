//! The PostgreSQL catalog on a real PostgreSQL 15: conformance, two daemons racing for the same
//! runs, takeover of a lease nobody renews, outages, and `open` from the config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};

use jiff::SignedDuration;
use tidemark_service_core::Config;
use tidemark_service_core::api::{Catalog, CatalogError, Claim, JobFilter, JobKind, RunKey};
use tidemark_service_state::PgCatalog;
use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};

use crate::conformance::{self, job, run};
use crate::ts;

const ROLE: &str = "tidemark_catalog";
const PASSWORD: &str = "catalog-secret ✓";

/// A cluster with password (SCRAM) logins, a catalog role, and its password in a file.
struct Harness {
    pg: PgCluster,
    dir: tempfile::TempDir,
}

impl Harness {
    fn start(test: &str) -> Option<Harness> {
        let pg = PgCluster::start_or_skip(test, &PgOptions { auth: Auth::Scram, ..PgOptions::default() })?;
        pg.psql(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalog.pass"), format!("{PASSWORD}\n")).unwrap();
        Some(Harness { pg, dir })
    }

    /// A new database owned by the catalog role; its connection string names no password.
    fn database(&self, name: &str) -> String {
        self.pg.psql(&format!("CREATE DATABASE {name} OWNER {ROLE}")).unwrap();
        format!("host=127.0.0.1 port={} user={ROLE} dbname={name}", self.pg.port())
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("catalog.pass")
    }

    fn connect(&self, connection: &str, owner: &str) -> PgCatalog {
        PgCatalog::connect(connection, Some(&self.password_file()), owner).unwrap()
    }
}

#[test]
fn pg_catalog_conforms() {
    let Some(h) = Harness::start("pg_catalog_conforms") else { return };
    conformance::run_all("postgres", &mut |case| {
        let connection = h.database(case);
        Box::new(h.connect(&connection, "host-1"))
    });
}

/// Per run index, every (owner, answer) given.
type Answers = BTreeMap<usize, Vec<(String, Claim)>>;

#[test]
fn two_daemons_race_for_the_same_200_runs_and_each_is_granted_once() {
    let Some(h) = Harness::start("two_daemons_race") else { return };
    let connection = h.database("race");
    let daemons = [Arc::new(h.connect(&connection, "daemon-a")), Arc::new(h.connect(&connection, "daemon-b"))];
    let base = ts("2026-01-10T00:00:00Z");
    let runs: Vec<RunKey> = (0..200)
        .map(|i| RunKey {
            source: "uploads".into(),
            kind: JobKind::Backup,
            scheduled_for: base + SignedDuration::from_mins(i),
        })
        .collect();
    let runs = Arc::new(runs);
    let now = ts("2026-01-10T00:00:00Z");
    let until = now + SignedDuration::from_mins(5);
    // Every answer each owner got, per run.
    let answers: Arc<Mutex<Answers>> = Arc::default();
    const THREADS_PER_DAEMON: usize = 3;
    let barrier = Arc::new(Barrier::new(2 * THREADS_PER_DAEMON));
    let mut threads = Vec::new();
    for t in 0..2 * THREADS_PER_DAEMON {
        let (owner, catalog) = (["daemon-a", "daemon-b"][t % 2], daemons[t % 2].clone());
        let (runs, answers, barrier) = (runs.clone(), answers.clone(), barrier.clone());
        threads.push(std::thread::spawn(move || {
            // All threads claim each run at the same moment, as daemons woken by one schedule do.
            for i in 0..runs.len() {
                barrier.wait();
                let claim = catalog.claim(&runs[i], owner, until, now).unwrap();
                if claim == Claim::Granted && i % 2 == 0 {
                    catalog.complete(&runs[i], owner).unwrap();
                }
                answers.lock().unwrap().entry(i).or_default().push((owner.to_string(), claim));
            }
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    let mut won = BTreeMap::<String, usize>::new();
    for (i, list) in answers.iter() {
        assert_eq!(list.len(), 2 * THREADS_PER_DAEMON);
        let winners: BTreeSet<&str> =
            list.iter().filter(|(_, c)| *c == Claim::Granted).map(|(owner, _)| owner.as_str()).collect();
        assert_eq!(winners.len(), 1, "run {i} was granted to {winners:?}: {list:?}");
        let winner = *winners.first().unwrap();
        *won.entry(winner.to_string()).or_default() += 1;
        for (owner, claim) in list {
            match claim {
                Claim::Granted => assert_eq!(owner, winner),
                Claim::HeldBy { owner: holder, until: held_until } => {
                    assert_eq!((holder.as_str(), *held_until), (winner, until), "run {i}: {list:?}");
                    assert_ne!(owner, winner, "run {i}: the holder itself renews, it is never refused");
                }
                Claim::Done => assert_eq!(i % 2, 0, "run {i} was never completed: {list:?}"),
            }
        }
    }
    assert_eq!(answers.len(), 200);
    // (Which daemon wins is up to the scheduler: on a loaded machine one may win all 200, so the
    // test asserts only that every run has exactly one winner.)
    assert!(!won.is_empty(), "{won:?}");
    // A third daemon finds every run held by its winner, or done.
    for (i, r) in runs.iter().enumerate() {
        let claim = daemons[0].claim(r, "daemon-c", until, now).unwrap();
        let winner = answers[&i].iter().find(|(_, c)| *c == Claim::Granted).map(|(o, _)| o.clone()).unwrap();
        if i % 2 == 0 {
            assert_eq!(claim, Claim::Done, "run {i}");
        } else {
            assert_eq!(claim, Claim::HeldBy { owner: winner, until }, "run {i}");
        }
    }
}

#[test]
fn a_holder_that_stops_renewing_is_taken_over_after_its_lease() {
    let Some(h) = Harness::start("lease_takeover") else { return };
    let connection = h.database("takeover");
    let (a, b) = (h.connect(&connection, "daemon-a"), h.connect(&connection, "daemon-b"));
    let r = run("db", "2026-01-10T01:00:00Z");
    let t0 = ts("2026-01-10T01:00:00Z");
    let min = SignedDuration::from_mins;
    // a claims and renews every 4 minutes for 5; b, trying each minute, is refused throughout.
    let mut a_until = t0 + min(5);
    assert_eq!(a.claim(&r, "daemon-a", a_until, t0).unwrap(), Claim::Granted);
    for m in 1..=12 {
        let now = t0 + min(m);
        if m % 4 == 0 {
            a_until = now + min(5);
            assert_eq!(a.claim(&r, "daemon-a", a_until, now).unwrap(), Claim::Granted, "renewal at +{m}m");
        }
        assert_eq!(
            b.claim(&r, "daemon-b", now + min(5), now).unwrap(),
            Claim::HeldBy { owner: "daemon-a".into(), until: a_until },
            "at +{m}m"
        );
    }
    // a stops renewing (it died at +12m; its lease ends at +17m). Until then b waits; at +17m it
    // takes over, and a, come back, finds the run held by b.
    assert_eq!(a_until, t0 + min(17));
    let just_before = a_until - SignedDuration::from_nanos(1);
    assert_eq!(
        b.claim(&r, "daemon-b", just_before + min(5), just_before).unwrap(),
        Claim::HeldBy { owner: "daemon-a".into(), until: a_until }
    );
    let b_until = a_until + min(5);
    assert_eq!(b.claim(&r, "daemon-b", b_until, a_until).unwrap(), Claim::Granted);
    assert_eq!(
        a.claim(&r, "daemon-a", a_until + min(5), a_until + min(1)).unwrap(),
        Claim::HeldBy { owner: "daemon-b".into(), until: b_until }
    );
    b.complete(&r, "daemon-b").unwrap();
    assert_eq!(a.claim(&r, "daemon-a", t0 + min(60), t0 + min(59)).unwrap(), Claim::Done);
}

#[test]
fn an_outage_is_unavailable_and_the_catalog_reconnects_after() {
    let Some(h) = Harness::start("pg_outage") else { return };
    let connection = h.database("outage");
    let c = h.connect(&connection, "daemon-a");
    let first = job("00000000000000a1", "uploads", JobKind::Backup, "2026-01-10T01:00:00Z");
    c.insert_job(&first).unwrap();
    h.pg.stop().unwrap();
    match c.job(&first.id) {
        Err(CatalogError::Unavailable(message)) => {
            assert!(message.contains(&format!("127.0.0.1:{}/outage", h.pg.port())), "{message}");
        }
        other => panic!("expected Unavailable while PostgreSQL is down, got {other:?}"),
    }
    // Still down: the reconnection fails the same way, with the fix.
    match c.use_link("ab", ts("2026-01-10T01:00:00Z")) {
        Err(CatalogError::Unavailable(message)) => assert!(message.contains("check that the server runs"), "{message}"),
        other => panic!("expected Unavailable while PostgreSQL is down, got {other:?}"),
    }
    h.pg.start_again().unwrap();
    assert_eq!(c.job(&first.id).unwrap().as_ref(), Some(&first));
    assert_eq!(c.jobs(&JobFilter::default()).unwrap().len(), 1);
}

#[test]
fn an_unreachable_catalog_names_the_host_and_the_fix() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let connection = format!("postgres://tidemark@127.0.0.1:{port}/tidemark");
    match PgCatalog::connect(&connection, None, "daemon-a") {
        Err(e @ CatalogError::Unavailable(_)) => {
            let message = e.to_string();
            assert!(message.contains(&format!("127.0.0.1:{port}/tidemark")), "{message}");
            assert!(message.contains("check that the server runs"), "{message}");
            assert!(message.contains("server.catalog"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let missing = Path::new("/nonexistent/catalog.pass");
    match PgCatalog::connect(&connection, Some(missing), "daemon-a") {
        Err(CatalogError::Unavailable(message)) => {
            assert!(
                message.contains("/nonexistent/catalog.pass") && message.contains("catalog_password_file"),
                "{message}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn open_follows_the_config_and_daemons_may_start_at_once() {
    let Some(h) = Harness::start("pg_open") else { return };
    let connection = h.database("shared");
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nstate_dir = {:?}\nname = \"eu-1\"\ncatalog = {connection:?}\ncatalog_password_file = {:?}\n",
        state.path().display().to_string(),
        h.password_file().display().to_string()
    );
    let config = Config::parse(&text, "tidemark.toml").unwrap();
    // Four daemons starting at once all create-or-find the schema.
    let barrier = Arc::new(Barrier::new(4));
    let catalogs: Vec<Arc<dyn Catalog>> = (0..4)
        .map(|i| {
            let (server, barrier) = (config.server.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                tidemark_service_state::open(&server, &format!("eu-{i}")).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let r = run("uploads", "2026-01-10T01:00:00Z");
    let (now, until) = (ts("2026-01-10T01:00:00Z"), ts("2026-01-10T01:05:00Z"));
    assert_eq!(catalogs[0].claim(&r, "eu-0", until, now).unwrap(), Claim::Granted);
    for (i, c) in catalogs.iter().enumerate().skip(1) {
        assert_eq!(c.claim(&r, &format!("eu-{i}"), until, now).unwrap(), Claim::HeldBy { owner: "eu-0".into(), until });
    }
    // Nothing was written to the state directory: the catalog is the shared one.
    assert!(!state.path().join("catalog.redb").exists());
    let connections =
        h.pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shared' AND application_name LIKE 'tidemark eu-%'",
        )
        .unwrap();
    assert_eq!(connections, "4");
}
