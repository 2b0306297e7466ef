//! The scheduler against a manual clock.

use std::sync::Arc;

use tidemark_service_core::{Claim, JobKind, JobRecord, JobStatus, RunKey, Trigger};

use crate::support::{Gate, World, uploads};

fn of_status(jobs: &[JobRecord], status: JobStatus) -> Vec<JobRecord> {
    jobs.iter().filter(|j| j.status == status).cloned().collect()
}

#[test]
fn daily_run_in_kolkata_starts_at_its_utc_instant_once() {
    let world = World::new("2026-01-10T12:00:00Z");
    let config = world.config(&uploads(""));
    let daemon = world.daemon(&config, "host-a", None);
    assert!(daemon.recover().unwrap().is_empty());
    assert!(daemon.tick().unwrap().started.is_empty(), "nothing is due at noon UTC");
    world.set("2026-01-10T19:29:59Z");
    assert!(daemon.tick().unwrap().started.is_empty(), "01:00 IST is 19:30 UTC, not before");
    world.set("2026-01-10T19:30:10Z");
    let started = daemon.tick().unwrap().started;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].scheduled_for, Some("2026-01-10T19:30:00Z".parse().unwrap()));
    assert_eq!(started[0].trigger, Trigger::Schedule);
    daemon.wait_idle();
    world.set("2026-01-10T19:31:00Z");
    assert!(daemon.tick().unwrap().started.is_empty(), "a run happens once");
    let jobs = world.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Succeeded, "{:?}", jobs[0].message);
    assert!(jobs[0].snapshot.is_some());
    // The run is complete in the catalog: nobody claims it again.
    let key = RunKey {
        source: "uploads".into(),
        kind: JobKind::Backup,
        scheduled_for: "2026-01-10T19:30:00Z".parse().unwrap(),
    };
    let now = "2026-01-10T19:31:00Z".parse().unwrap();
    assert_eq!(world.catalog.claim(&key, "host-b", now, now).unwrap(), Claim::Done);
    // And the next one is tomorrow at the same UTC instant (India has no DST).
    world.set("2026-01-11T19:30:00Z");
    let next = daemon.tick().unwrap().started;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].scheduled_for, Some("2026-01-11T19:30:00Z".parse().unwrap()));
    daemon.wait_idle();
}

#[test]
fn dst_spring_forward_and_fall_back_run_once_each() {
    let world = World::new("2026-03-07T12:00:00Z");
    let daemon = world.recovered(
        r#"
[sources.nightly]
kind = "directory"
paths = ["{ROOT}/src"]
repository = "primary"
schedule = "30 2 * * *"
timezone = "America/New_York"
window = "2h"

[sources.early]
kind = "directory"
paths = ["{ROOT}/src"]
repository = "primary"
schedule = "30 1 * * *"
timezone = "America/New_York"
window = "2h"
"#,
        None,
    );
    // 2026-03-08 02:30 does not exist in New York: the run is at 03:00 EDT, 07:00 UTC.
    world.set("2026-03-08T06:59:00Z");
    let before: Vec<String> = daemon.tick().unwrap().started.iter().map(|j| j.source.clone()).collect();
    assert!(!before.contains(&"nightly".to_string()), "{before:?}");
    world.set("2026-03-08T07:00:30Z");
    let started = daemon.tick().unwrap().started;
    let nightly: Vec<&JobRecord> = started.iter().filter(|j| j.source == "nightly").collect();
    assert_eq!(nightly.len(), 1);
    assert_eq!(nightly[0].scheduled_for, Some("2026-03-08T07:00:00Z".parse().unwrap()));
    daemon.wait_idle();

    // 2026-11-01 01:30 happens twice in New York: the run is at the first, 05:30 UTC (EDT), only.
    world.set("2026-11-01T05:30:05Z");
    let first = daemon.tick().unwrap();
    let early: Vec<&JobRecord> = first.started.iter().filter(|j| j.source == "early").collect();
    assert_eq!(early.len(), 1, "{:?}", first);
    assert_eq!(early[0].scheduled_for, Some("2026-11-01T05:30:00Z".parse().unwrap()));
    daemon.wait_idle();
    world.set("2026-11-01T06:30:05Z");
    let second = daemon.tick().unwrap();
    assert!(second.started.iter().all(|j| j.source != "early"), "01:30 EST is the same wall time: {second:?}");
    assert!(second.missed.is_empty(), "{second:?}");
}

#[test]
fn a_run_that_cannot_start_in_its_window_is_missed_and_notified() {
    let world = World::new("2026-01-10T19:00:00Z");
    let daemon = world.recovered(&uploads(""), None);
    daemon.tick().unwrap();
    // The daemon was stalled past the window's end (19:30 + 1h).
    world.set("2026-01-10T20:45:00Z");
    let report = daemon.tick().unwrap();
    assert!(report.started.is_empty());
    assert_eq!(report.missed.len(), 1);
    let missed = &report.missed[0];
    assert_eq!(missed.status, JobStatus::Missed);
    assert_eq!(missed.scheduled_for, Some("2026-01-10T19:30:00Z".parse().unwrap()));
    let message = missed.message.clone().unwrap();
    assert!(message.contains("window") && message.contains("IST"), "{message}");
    assert_eq!(world.hooks.events(), vec!["window_missed"]);
    let notice = &world.hooks.all()[0];
    assert_eq!(notice["source"], "uploads");
    assert_eq!(notice["job"]["status"], "missed");
    // Recorded once.
    world.set("2026-01-10T20:50:00Z");
    assert!(daemon.tick().unwrap().missed.is_empty());
    assert_eq!(of_status(&world.jobs(), JobStatus::Missed).len(), 1);
}

#[test]
fn after_downtime_the_latest_run_catches_up_once_and_the_others_are_missed() {
    let world = World::new("2026-01-10T19:30:00Z");
    let config = world.config(&uploads(""));
    let first = world.daemon(&config, "host-a", None);
    first.recover().unwrap();
    world.set("2026-01-10T19:30:05Z");
    assert_eq!(first.tick().unwrap().started.len(), 1);
    first.wait_idle();
    drop(first);
    // Down for three days; back at 19:45 UTC on the 13th, inside that day's window.
    world.set("2026-01-13T19:45:00Z");
    let second = world.daemon(&config, "host-a", None);
    second.recover().unwrap();
    let report = second.tick().unwrap();
    assert_eq!(report.started.len(), 1, "{report:?}");
    assert_eq!(report.started[0].trigger, Trigger::CatchUp);
    assert_eq!(report.started[0].scheduled_for, Some("2026-01-13T19:30:00Z".parse().unwrap()));
    let missed: Vec<String> = report.missed.iter().map(|j| j.scheduled_for.unwrap().to_string()).collect();
    assert_eq!(missed, vec!["2026-01-11T19:30:00Z", "2026-01-12T19:30:00Z"]);
    // The newest backup is three days old, more than a day and the window: stale, said once.
    assert_eq!(report.stale, vec!["uploads"]);
    assert_eq!(world.hooks.events(), vec!["window_missed", "window_missed", "backup_stale"]);
    let stale = &world.hooks.all()[2];
    assert!(stale["message"].as_str().unwrap().contains("the policy allows 1d1h"), "{stale}");
    second.wait_idle();
    world.set("2026-01-13T19:50:00Z");
    let again = second.tick().unwrap();
    assert!(again.started.is_empty() && again.missed.is_empty() && again.stale.is_empty(), "{again:?}");
    assert_eq!(world.hooks.events().len(), 3);
}

#[test]
fn overrun_cancel_stops_the_job_at_its_window_end() {
    let world = World::new("2026-01-10T19:00:00Z");
    let sources = uploads("overrun = \"cancel\"\nretention = { keep_last = 1 }\ncopy_to = [\"offsite\"]\n");
    let gate = Gate::at("retention");
    let daemon = world.recovered(&sources, Some(gate.clone()));
    world.set("2026-01-10T19:30:00Z");
    let id = daemon.tick().unwrap().started[0].id.clone();
    assert_eq!(gate.wait_held(), id);
    world.set("2026-01-10T20:10:00Z");
    assert!(daemon.tick().unwrap().cancelled.is_empty(), "the window is still open");
    world.set("2026-01-10T20:30:00Z");
    assert_eq!(daemon.tick().unwrap().cancelled, vec![id.clone()]);
    gate.release_all();
    daemon.wait_idle();
    let job = world.catalog.job(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
    assert!(job.message.unwrap().contains("overrun = \"cancel\""));
    let log = world.log(&id);
    assert!(log.iter().any(|l| l.contains("cancelled before retention")), "{log:?}");
    // The copy step never ran.
    assert!(world.open("offsite").snapshots().unwrap().is_empty());
    assert_eq!(world.hooks.events(), vec!["job_failed"]);
}

#[test]
fn a_job_left_running_by_a_crash_is_marked_interrupted_and_rerun() {
    let world = World::new("2026-01-10T19:40:00Z");
    let config = world.config(&uploads(""));
    // What a crash leaves behind: a job `running` in the catalog and its lease.
    let scheduled = "2026-01-10T19:30:00Z".parse().unwrap();
    let crashed = JobRecord {
        id: "00c0ffee00c0ffee".into(),
        source: "uploads".into(),
        kind: JobKind::Backup,
        trigger: Trigger::Schedule,
        scheduled_for: Some(scheduled),
        created: scheduled,
        started: Some(scheduled),
        finished: None,
        status: JobStatus::Running,
        message: None,
        snapshot: None,
        bytes_added: None,
        verified: None,
        owner: "host-a".into(),
    };
    world.catalog.insert_job(&crashed).unwrap();
    let key = RunKey { source: "uploads".into(), kind: JobKind::Backup, scheduled_for: scheduled };
    let until = "2026-01-10T19:35:00Z".parse().unwrap();
    assert_eq!(world.catalog.claim(&key, "host-a", until, scheduled).unwrap(), Claim::Granted);

    let daemon = world.daemon(&config, "host-a", None);
    let reruns = daemon.recover().unwrap();
    assert_eq!(reruns.len(), 1);
    assert_eq!(reruns[0].trigger, Trigger::Rerun { of: crashed.id.clone() });
    assert_eq!(reruns[0].scheduled_for, Some(scheduled));
    let old = world.catalog.job(&crashed.id).unwrap().unwrap();
    assert_eq!(old.status, JobStatus::Interrupted);
    assert!(old.message.unwrap().contains(&reruns[0].id));
    daemon.wait_idle();
    let rerun = world.catalog.job(&reruns[0].id).unwrap().unwrap();
    assert_eq!(rerun.status, JobStatus::Succeeded, "{:?}", rerun.message);
    assert_eq!(world.open("primary").snapshots().unwrap().len(), 1);
    // The run is done: the scheduler does not start it a third time.
    assert_eq!(world.catalog.claim(&key, "host-b", until, until).unwrap(), Claim::Done);
    assert!(daemon.tick().unwrap().started.is_empty());
}

#[test]
fn two_daemons_sharing_a_catalog_run_each_scheduled_backup_once() {
    let world = World::new("2026-01-10T19:00:00Z");
    let config = world.config(&uploads(""));
    let gate = Gate::at("backup");
    let a = world.daemon(&config, "host-a", Some(gate.clone()));
    let b = world.daemon(&config, "host-b", Some(gate.clone()));
    a.recover().unwrap();
    b.recover().unwrap();
    world.set("2026-01-10T19:30:00Z");
    let started_a = a.tick().unwrap().started;
    let started_b = b.tick().unwrap().started;
    assert_eq!(started_a.len() + started_b.len(), 1, "{started_a:?} {started_b:?}");
    gate.wait_held();
    // While it runs, the other daemon keeps asking and keeps out of it, tick after tick: the
    // holder renews its five-minute lease on each of its own ticks.
    for minute in (32..=58).step_by(2) {
        world.set(&format!("2026-01-10T19:{minute}:00Z"));
        assert!(a.tick().unwrap().started.is_empty(), "19:{minute}");
        assert!(b.tick().unwrap().started.is_empty(), "19:{minute}");
    }
    gate.release_all();
    a.wait_idle();
    b.wait_idle();
    assert_eq!(world.jobs().len(), 1);
    assert_eq!(world.open("primary").snapshots().unwrap().len(), 1);
    let _ = Arc::clone(&world.catalog);
}

#[test]
fn overrun_continue_lets_the_job_finish_and_logs_it() {
    let world = World::new("2026-01-10T19:00:00Z");
    let gate = Gate::at("backup");
    let daemon = world.recovered(&uploads(""), Some(gate.clone()));
    world.set("2026-01-10T19:30:00Z");
    let id = daemon.tick().unwrap().started[0].id.clone();
    gate.wait_held();
    world.set("2026-01-10T20:31:00Z");
    let report = daemon.tick().unwrap();
    assert!(report.cancelled.is_empty() && report.missed.is_empty(), "{report:?}");
    gate.release_all();
    daemon.wait_idle();
    let job = world.catalog.job(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let log = world.log(&id);
    assert!(log.iter().any(|l| l.contains("overrun = \"continue\" lets it finish")), "{log:?}");
    assert!(world.hooks.events().is_empty());
}
