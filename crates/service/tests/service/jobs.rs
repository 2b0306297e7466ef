//! Real jobs: backups with retention and off-site copies, drills, restores, and what `Control`
//! answers about them.

use std::io::Read;

use tidemark_service_core::{Control, ControlError, JobKind, JobRequest, JobStatus};

use crate::support::{Delay, Gate, World, files_below, noise, parse_config, run, uploads};

/// `uploads` with retention, an off-site copy and weekly drills.
fn uploads_policy() -> String {
    uploads(
        r#"retention = { keep_last = 2 }
copy_to = ["offsite"]
drill = { schedule = "0 3 * * 0", scratch_dir = "{ROOT}/scratch", max_duration = "1h" }
"#,
    )
}

#[test]
fn backup_applies_retention_copies_off_site_and_shows_in_the_policy() {
    let world = World::new("2026-01-10T12:00:00Z");
    let daemon = world.recovered(&uploads_policy(), None);
    for round in 1..=3 {
        std::fs::write(world.path("src/notes.txt"), format!("version {round}")).unwrap();
        let job = daemon.start("uploads", &JobRequest::Backup, "ops").unwrap();
        assert_eq!(job.status, JobStatus::Running);
        daemon.wait_idle();
        let (job, log) = Control::job(&daemon, &job.id).unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "{:?} {log:?}", job.message);
        assert!(job.bytes_added.is_some() && job.snapshot.is_some());
        world.clock.advance(jiff::SignedDuration::from_mins(10));
    }
    // keep_last = 2 held in both repositories, and the newest is the same backup in both.
    let primary = world.open("primary").snapshots().unwrap();
    let offsite = world.open("offsite").snapshots().unwrap();
    assert_eq!(primary.len(), 2);
    assert_eq!(offsite.len(), 2);
    let newest = |list: &[(tidemark_repo::format::Id, tidemark_repo::format::objects::Snapshot)]| {
        list.iter().map(|(_, s)| s.time).max().unwrap()
    };
    assert_eq!(newest(&primary), newest(&offsite));
    assert!(primary.iter().all(|(_, s)| s.source.as_deref() == Some("uploads")));

    let snapshots = daemon.snapshots(Some("uploads")).unwrap();
    assert_eq!(snapshots.len(), 2);
    assert!(snapshots[0].time >= snapshots[1].time, "newest first");
    // A file streamed from the newest snapshot, as a download link would.
    let path = format!("{}/notes.txt", world.path("src").display());
    let mut file = daemon.open_file(&snapshots[0].id[..10], &path).unwrap();
    let mut text = String::new();
    file.reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "version 3");
    assert_eq!(file.size, 9);
    let big = daemon.open_file(&snapshots[0].id, &format!("{}/sub/data.bin", world.path("src").display())).unwrap();
    let mut bytes = Vec::new();
    { big }.reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, noise(3, 300_000));
    assert!(matches!(daemon.open_file(&snapshots[0].id, "/no/such/file"), Err(ControlError::NotFound(_))));

    let rows = daemon.policy().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.method, "directory snapshots");
    assert_eq!(row.frequency, "daily at 01:00 Asia/Kolkata (0 1 * * *), window 1h");
    assert_eq!(row.retention, "2 last");
    assert_eq!(row.recovery_precision, "per snapshot");
    assert_eq!(row.oldest_restorable, Some(snapshots[1].time));
    assert_eq!(row.offsite_lag_seconds, vec![("offsite".to_string(), Some(0))]);
    assert!(row.last_drill.is_none());
    let sources = daemon.sources().unwrap();
    assert_eq!(sources[0].health, "ok");
    assert_eq!(sources[0].next_backup, Some("2026-01-10T19:30:00Z".parse().unwrap()));
    assert!(sources[0].last_backup.as_ref().is_some_and(|j| j.status == JobStatus::Succeeded));
    assert!(world.hooks.events().is_empty());
}

#[test]
fn a_second_backup_of_a_running_source_is_a_conflict() {
    let world = World::new("2026-01-10T12:00:00Z");
    let gate = Gate::at("backup");
    let daemon = world.recovered(&uploads_policy(), Some(gate.clone()));
    daemon.start("uploads", &JobRequest::Backup, "ops").unwrap();
    gate.wait_held();
    let again = daemon.start("uploads", &JobRequest::Backup, "ops");
    assert!(matches!(again, Err(ControlError::Conflict(_))), "{again:?}");
    assert!(matches!(daemon.start("nope", &JobRequest::Backup, "ops"), Err(ControlError::NotFound(_))));
    assert_eq!(daemon.sources().unwrap()[0].health, "running");
    gate.release_all();
    daemon.wait_idle();
    run(&daemon, "uploads", &JobRequest::Backup);
}

#[test]
fn a_drill_restores_verifies_measures_and_cleans_up() {
    let world = World::new("2026-01-10T12:00:00Z");
    let daemon = world.recovered(&uploads_policy(), None);
    run(&daemon, "uploads", &JobRequest::Backup);
    world.clock.advance(jiff::SignedDuration::from_mins(1));
    let (job, log) = run(&daemon, "uploads", &JobRequest::Drill);
    assert_eq!(job.kind, JobKind::Drill);
    assert_eq!(job.status, JobStatus::Succeeded, "{:?} {log:?}", job.message);
    assert_eq!(job.verified, Some(true));
    let message = job.message.unwrap();
    assert!(message.contains("verified 2 file(s), 300013 bytes"), "{message}");
    assert_eq!(files_below(&world.path("scratch")), 0, "the scratch directory is cleaned up");
    let drills = daemon.drills(Some("uploads")).unwrap();
    assert_eq!(drills.len(), 1);
    assert!(drills[0].ok);
    assert_eq!(daemon.policy().unwrap()[0].last_drill.as_ref().map(|d| d.job.clone()), Some(job.id));
    assert!(world.hooks.events().is_empty());
}

#[test]
fn a_drill_on_a_corrupt_pack_fails_and_notifies() {
    let world = World::new("2026-01-10T12:00:00Z");
    let daemon = world.recovered(&uploads_policy(), None);
    run(&daemon, "uploads", &JobRequest::Backup);
    // Damage the data pack: flip bytes in the middle of the largest file under data/.
    let mut packs = Vec::new();
    collect_files(&world.path("primary/data"), &mut packs);
    let pack = packs.into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&pack, bytes).unwrap();
    world.clock.advance(jiff::SignedDuration::from_mins(1));
    let (job, log) = run(&daemon, "uploads", &JobRequest::Drill);
    assert_eq!(job.status, JobStatus::Failed, "{:?} {log:?}", job.message);
    assert_eq!(job.verified, Some(false));
    assert!(job.message.as_deref().unwrap_or_default().contains("check --read-data"), "{:?}", job.message);
    assert_eq!(files_below(&world.path("scratch")), 0, "cleaned up after a failure too");
    assert_eq!(world.hooks.events(), vec!["drill_failed"]);
    let notice = &world.hooks.all()[0];
    assert_eq!(notice["source"], "uploads");
    assert_eq!(notice["job"]["id"], job.id.as_str());
    assert_eq!(notice["job"]["verified"], false);
    assert!(!daemon.drills(None).unwrap()[0].ok);
}

#[test]
fn a_failed_backup_notifies_job_failed_and_the_source_is_failing() {
    let world = World::new("2026-01-10T12:00:00Z");
    std::fs::write(world.path("wrong.pass"), "not the password").unwrap();
    let root = world.dir.path().display();
    let primary = format!("url = \"{root}/primary\"\npassword_file = \"{root}/repo.pass\"");
    let text = world.config_text(&uploads_policy()).replace(&primary, &primary.replace("repo.pass", "wrong.pass"));
    let daemon = world.daemon(&parse_config(&text), "host-a", None);
    daemon.recover().unwrap();
    let (job, _) = run(&daemon, "uploads", &JobRequest::Backup);
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.message.as_deref().unwrap_or_default().contains("primary"), "{:?}", job.message);
    assert_eq!(world.hooks.events(), vec!["job_failed"]);
    assert_eq!(daemon.sources().unwrap()[0].health, "failing");
}

#[test]
fn a_restore_on_request_writes_the_snapshot_into_an_empty_target() {
    let world = World::new("2026-01-10T12:00:00Z");
    let daemon = world.recovered(&uploads_policy(), None);
    run(&daemon, "uploads", &JobRequest::Backup);
    let target = world.path("restored");
    let request = JobRequest::Restore { snapshot: None, target: target.display().to_string(), include: vec![] };
    let (job, log) = run(&daemon, "uploads", &request);
    assert_eq!(job.status, JobStatus::Succeeded, "{:?} {log:?}", job.message);
    let restored = target.join(world.path("src").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(restored.join("notes.txt")).unwrap(), "first version");
    // A non-empty target is refused before anything runs.
    assert!(matches!(daemon.start("uploads", &request, "ops"), Err(ControlError::Conflict(_))));
    let relative = JobRequest::Restore { snapshot: None, target: "relative/dir".into(), include: vec![] };
    assert!(matches!(daemon.start("uploads", &relative, "ops"), Err(ControlError::Invalid(_))));
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            collect_files(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

#[test]
fn a_drill_slower_than_max_duration_fails_and_notifies() {
    let world = World::new("2026-01-10T12:00:00Z");
    let sources = uploads_policy().replace("max_duration = \"1h\"", "max_duration = \"1s\"");
    let slow = std::sync::Arc::new(Delay { step: "verify", by: std::time::Duration::from_millis(1500) });
    let daemon = world.recovered(&sources, Some(slow));
    run(&daemon, "uploads", &JobRequest::Backup);
    let (job, _) = run(&daemon, "uploads", &JobRequest::Drill);
    assert_eq!(job.status, JobStatus::Failed, "{:?}", job.message);
    let message = job.message.unwrap();
    assert!(message.contains("longer than max_duration 1s"), "{message}");
    assert_eq!(job.verified, Some(true), "the data was fine; the recovery time was not");
    assert_eq!(world.hooks.events(), vec!["drill_failed"]);
}
