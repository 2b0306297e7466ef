//! A PostgreSQL source: base backups by the daemon from a real PostgreSQL 15 cluster, its WAL
//! archived into the repository, and a drill that restores the newest base backup, starts a
//! server on it and queries it.

use tidemark_service_core::{Control, JobRequest, JobStatus};
use tidemark_testkit::postgres::{PgCluster, PgOptions};

use crate::support::{World, files_below};

#[test]
fn postgres_base_backup_and_drill() {
    let Some(pg) = PgCluster::start_or_skip("service_postgres_base_backup_and_drill", &PgOptions::default()) else {
        return;
    };
    pg.psql("CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g").unwrap();
    let world = World::new("2026-01-10T12:00:00Z");
    // The drill's server runs as `postgres`, which must reach the scratch directory.
    std::fs::set_permissions(world.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = world.config(&format!(
        r#"
[sources.db]
kind = "postgres"
connection = '{}'
repository = "primary"
schedule = "0 2 * * *"
retention = {{ keep_last = 1 }}
copy_to = ["offsite"]
drill = {{ schedule = "0 4 * * 0", scratch_dir = "{{ROOT}}/scratch" }}
"#,
        pg.connstr()
    ));
    let daemon = world.daemon(&config, "host-a", None);
    daemon.recover().unwrap();
    for _ in 0..2 {
        let job = daemon.start("db", &JobRequest::Backup, "ops").unwrap();
        daemon.wait_idle();
        let (job, log) = Control::job(&daemon, &job.id).unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "{:?} {log:?}", job.message);
        world.clock.advance(jiff::SignedDuration::from_mins(5));
    }
    let primary = world.open("primary").snapshots().unwrap();
    assert_eq!(primary.len(), 1, "keep_last = 1");
    assert_eq!(primary[0].1.kind, "postgres");
    assert_eq!(primary[0].1.source.as_deref(), Some("db"));
    assert_eq!(world.open("offsite").snapshots().unwrap().len(), 1);

    // A drill without the WAL the backup needs fails: the backup alone cannot be started.
    let drill = daemon.start("db", &JobRequest::Drill, "ops").unwrap();
    daemon.wait_idle();
    let (failed, _) = Control::job(&daemon, &drill.id).unwrap();
    assert_eq!(failed.status, JobStatus::Failed, "{:?}", failed.message);
    assert!(failed.message.as_deref().unwrap_or_default().contains("lacks"), "{:?}", failed.message);
    assert_eq!(world.hooks.events(), vec!["drill_failed"]);

    // archive_command's work, done here: every completed segment pushed into the repository.
    pg.psql("SELECT pg_switch_wal()").unwrap();
    let repo = world.open("primary");
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(pg.data_dir().join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 24))
        .collect();
    segments.sort();
    segments.pop(); // the segment being written
    for segment in &segments {
        tidemark_source_pg::archive_push(&repo, "db", segment).unwrap();
    }
    world.clock.advance(jiff::SignedDuration::from_mins(5));
    let drill = daemon.start("db", &JobRequest::Drill, "ops").unwrap();
    daemon.wait_idle();
    let (drill, log) = Control::job(&daemon, &drill.id).unwrap();
    assert_eq!(drill.status, JobStatus::Succeeded, "{:?} {log:?}", drill.message);
    assert_eq!(drill.verified, Some(true));
    let message = drill.message.clone().unwrap_or_default();
    assert!(message.contains("the server started and answered SELECT 1"), "{message}");
    assert_eq!(files_below(&world.path("scratch")), 0, "the drill cleans up");
    let row = &daemon.policy().unwrap()[0];
    assert_eq!(row.method, "base backups + WAL archive");
    assert_eq!(row.recovery_precision, "to the second");
    assert!(row.last_drill.as_ref().is_some_and(|d| d.ok && d.job == drill.id));
    assert_eq!(world.hooks.events(), vec!["drill_failed"], "only the first drill failed");
}
