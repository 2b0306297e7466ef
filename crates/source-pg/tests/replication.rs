//! The replication client against real PostgreSQL 15 clusters (tidemark-testkit's harness).

mod util;

use std::time::{Duration, Instant};

use tidemark_source_pg::wal::{self, ExpectedCluster, WalSegmentHeader};
use tidemark_source_pg::{BaseBackupOptions, ErrorKind, Lsn, MemberKind, ReplicationClient, WalMessage};
use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};
use util::{Collect, DirSink, SegmentWriter, cluster, sysid};

#[test]
fn identify_system_matches_pg_control() {
    let Some(pg) = cluster("identify_system", &PgOptions::default()) else {
        return;
    };
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    assert_eq!(client.server_version_num().map(|v| v / 10_000), Some(15));
    let id = client.identify_system().unwrap();
    assert_eq!(id.system_identifier, sysid(&pg));
    assert_eq!(id.timeline, 1);
    let current: Lsn = pg.psql("SELECT pg_current_wal_flush_lsn()").unwrap().parse().unwrap();
    assert!(id.xlog_position <= current && id.xlog_position > Lsn(0));
    assert_eq!(client.wal_segment_size().unwrap(), wal::DEFAULT_SEGMENT_SIZE);
    // The connection stays usable after a server error.
    let err = client.simple_query("TIMELINE_HISTORY 1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert!(!err.is_transient());
    assert_eq!(client.identify_system().unwrap().system_identifier, id.system_identifier);
    // Over the Unix socket as the superuser too.
    let mut local = ReplicationClient::connect_str(&pg.superuser_connstr()).unwrap();
    assert_eq!(local.identify_system().unwrap().system_identifier, id.system_identifier);
}

#[test]
fn scram_authentication() {
    let options = PgOptions { auth: Auth::Scram, ..PgOptions::default() };
    let Some(pg) = cluster("scram_authentication", &options) else {
        return;
    };
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    assert_eq!(client.identify_system().unwrap().system_identifier, sysid(&pg));
    let wrong = pg.connstr().replace("password=", "password=wrong");
    let err = ReplicationClient::connect_str(&wrong).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_transient());
    let none = pg.connstr().replace("password=", "application_name=");
    let err = ReplicationClient::connect_str(&none).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.message().contains("password"), "{err}");
}

#[test]
fn connection_refused_is_transient() {
    let err = ReplicationClient::connect_str("host=127.0.0.1 port=1 connect_timeout=2").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.is_transient());
}

#[test]
fn slots_are_idempotent() {
    let Some(pg) = cluster("slots", &PgOptions::default()) else {
        return;
    };
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    assert_eq!(client.read_replication_slot("tm_slot").unwrap(), None);
    let first = client.create_physical_slot("tm_slot").unwrap();
    assert!(first.created);
    let reserved = first.restart_lsn.expect("RESERVE_WAL gives a position");
    let again = client.create_physical_slot("tm_slot").unwrap();
    assert!(!again.created);
    let info = client.read_replication_slot("tm_slot").unwrap().unwrap();
    assert_eq!(again.restart_lsn, info.restart_lsn);
    assert_eq!(info.restart_lsn, Some(reserved));
    assert!(reserved > Lsn(0));
    assert_eq!(info.restart_timeline, Some(1));
    assert_eq!(pg.psql("SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'tm_slot'").unwrap(), "physical");
    client.drop_replication_slot("tm_slot").unwrap();
    assert_eq!(client.read_replication_slot("tm_slot").unwrap(), None);
    assert_eq!(client.create_physical_slot("Bad-Name").unwrap_err().kind(), ErrorKind::Config);
}

#[test]
fn base_backup_streams_tar_members_and_manifest() {
    let Some(pg) = cluster("base_backup", &PgOptions::default()) else {
        return;
    };
    pg.psql("CREATE TABLE items (id int, body text); INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g; CHECKPOINT")
        .unwrap();
    let relation = pg.psql("SELECT pg_relation_filepath('items')").unwrap();
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    let mut sink = Collect::default();
    let options = BaseBackupOptions { label: "test backup".into(), ..BaseBackupOptions::default() };
    let info = client.base_backup(&options, &mut sink).unwrap();

    assert_eq!(sink.started.as_ref().unwrap().lsn, info.start_lsn);
    assert!(info.start_lsn <= info.end_lsn, "{} > {}", info.start_lsn, info.end_lsn);
    assert_eq!((info.start_timeline, info.end_timeline), (1, 1));
    assert_eq!(info.archives.len(), 1);
    assert_eq!(info.archives[0].name, "base.tar");
    assert_eq!(info.tablespaces.last().unwrap().oid, None);
    let files = &sink.members["base.tar"];
    assert_eq!(files["PG_VERSION"].content.as_deref(), Some(&b"15\n"[..]));
    assert_eq!(files["global/pg_control"].size, 8192);
    let rel = &files[relation.as_str()];
    assert!(rel.size >= 8192 * 10, "{relation}: {} bytes", rel.size);
    assert_eq!(files["base"].kind, MemberKind::Directory);
    let label = String::from_utf8(files["backup_label"].content.clone().unwrap()).unwrap();
    assert!(label.contains("LABEL: test backup"), "{label}");
    assert!(label.contains(&format!("START WAL LOCATION: {}", info.start_lsn)), "{label}");
    let total: u64 = files.values().map(|m| m.size).sum();
    assert!(info.bytes > total);

    // The manifest is JSON and lists every file with the size we received.
    let manifest: serde_json::Value = serde_json::from_slice(info.manifest.as_ref().unwrap()).unwrap();
    let listed = manifest["Files"].as_array().unwrap();
    assert!(listed.len() > 100);
    for file in listed {
        let path = file["Path"].as_str().unwrap();
        let member = files.get(path).unwrap_or_else(|| panic!("{path} in manifest, not in tar"));
        assert_eq!(file["Size"].as_u64(), Some(member.size), "{path}");
    }
    let wal = &manifest["WAL-Ranges"][0];
    assert_eq!(wal["Start-LSN"].as_str().unwrap(), info.start_lsn.to_string());
    assert_eq!(wal["End-LSN"].as_str().unwrap(), info.end_lsn.to_string());

    // The connection is usable afterwards.
    assert_eq!(client.identify_system().unwrap().system_identifier, sysid(&pg));
}

#[test]
fn sink_errors_abort_the_backup() {
    let Some(pg) = cluster("sink_errors", &PgOptions::default()) else {
        return;
    };
    struct Fail;
    impl tidemark_source_pg::BaseBackupSink for Fail {
        fn member(
            &mut self,
            _: &tidemark_source_pg::ArchiveInfo,
            _: &mut tidemark_source_pg::Member<'_>,
        ) -> Result<(), tidemark_source_pg::PgError> {
            Err(tidemark_source_pg::PgError::sink("disk full"))
        }
    }
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    let err = client.base_backup(&BaseBackupOptions::default(), &mut Fail).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Sink);
    assert!(client.identify_system().is_err(), "a half-read connection must not be reused");
    // The server is fine and takes the next backup.
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    client.base_backup(&BaseBackupOptions::default(), &mut Collect::default()).unwrap();
}

#[test]
fn streamed_wal_carries_the_cluster_identity() {
    let Some(pg) = cluster("streamed_wal", &PgOptions::default()) else {
        return;
    };
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    client.create_physical_slot("tm_stream").unwrap();
    pg.psql("SELECT pg_switch_wal()").unwrap();
    pg.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)").unwrap();
    let id = client.identify_system().unwrap();
    let start = id.xlog_position.segment_start(wal::DEFAULT_SEGMENT_SIZE);
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut stream = client.start_replication(Some("tm_stream"), start, id.timeline).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = Vec::new();
    while received.len() < wal::LONG_PAGE_HEADER_LEN {
        assert!(Instant::now() < deadline, "no WAL within 30 s");
        match stream.next_message().unwrap() {
            WalMessage::XLogData { start: at, data, .. } => {
                assert_eq!(at, Lsn(start.0 + received.len() as u64));
                received.extend_from_slice(&data);
            }
            WalMessage::Keepalive { .. } | WalMessage::Idle => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let end = Lsn(start.0 + received.len() as u64);
    stream.confirm(end, end);
    stream.send_status(false).unwrap();
    stream.finish().unwrap();

    let header = WalSegmentHeader::parse(&received).unwrap();
    assert_eq!(header.system_identifier, id.system_identifier);
    assert_eq!(header.page_address, start);
    assert_eq!(header.pg_major(), Some(15));
    let expected = ExpectedCluster {
        system_identifier: id.system_identifier,
        page_magic: wal::XLOG_PAGE_MAGIC_PG15,
        segment_size: wal::DEFAULT_SEGMENT_SIZE,
    };
    header.check_named(&expected, &wal::segment_file_name(id.timeline, start, wal::DEFAULT_SEGMENT_SIZE)).unwrap();

    // The slot moved to what we confirmed; the client is usable again.
    let slot = client.read_replication_slot("tm_stream").unwrap().unwrap();
    assert!(slot.restart_lsn.unwrap() >= start, "{:?}", slot.restart_lsn);

    // A segment of another cluster (its own initdb) is refused.
    let other = PgCluster::start(&PgOptions { own_initdb: true, ..PgOptions::default() }).unwrap();
    let other_segment = std::fs::read(util::first_wal_segment(&other)).unwrap();
    let other_header = WalSegmentHeader::parse(&other_segment).unwrap();
    assert_eq!(other_header.system_identifier, sysid(&other));
    let err = other_header.check(&expected).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Wal);
    assert!(err.message().contains("another cluster"), "{err}");
}

#[test]
fn timeline_switch_ends_the_old_timeline_stream() {
    let options = PgOptions { standby: true, ..PgOptions::default() };
    let Some(pg) = cluster("timeline_switch", &options) else {
        return;
    };
    pg.promote().unwrap();
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    let id = client.identify_system().unwrap();
    assert_eq!(id.timeline, 2);
    let history = client.timeline_history(2).unwrap();
    assert_eq!(history.file_name, "00000002.history");
    let text = String::from_utf8(history.content).unwrap();
    let switch: Lsn = text.split('\t').nth(1).unwrap().parse().unwrap();
    assert!(text.starts_with("1\t"), "{text}");
    assert_eq!(std::fs::read_to_string(pg.data_dir().join("pg_wal/00000002.history")).unwrap(), text);

    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let start = switch.segment_start(wal::DEFAULT_SEGMENT_SIZE);
    let mut stream = client.start_replication(None, start, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut end = start;
    loop {
        assert!(Instant::now() < deadline, "timeline 1 did not end");
        match stream.next_message().unwrap() {
            WalMessage::XLogData { start: at, data, .. } => {
                assert_eq!(at, end);
                end = Lsn(at.0 + data.len() as u64);
            }
            WalMessage::TimelineEnd { next_timeline, next_start } => {
                assert_eq!((next_timeline, next_start), (2, switch));
                break;
            }
            _ => {}
        }
    }
    assert!(end >= switch, "streamed to {end}, switch at {switch}");
    drop(stream);
    // Usable again after the end of a timeline.
    assert_eq!(client.identify_system().unwrap().timeline, 2);
}

/// Base backup + streamed WAL restore into a new data directory that PostgreSQL recovers from
/// and serves: the rows written after the backup are there.
#[test]
fn restore_base_backup_with_streamed_wal() {
    let Some(pg) = cluster("restore_end_to_end", &PgOptions::default()) else {
        return;
    };
    pg.psql("CREATE TABLE rows (id int primary key, note text); INSERT INTO rows SELECT g, 'before' FROM generate_series(1, 1000) g")
        .unwrap();
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    client.create_physical_slot("tm_e2e").unwrap();
    let restore_dir = pg.scratch_dir("restored").unwrap();
    let wal_dir = pg.scratch_dir("wal").unwrap();
    let mut sink = DirSink::new(restore_dir.clone());
    let options = BaseBackupOptions { wait_for_archive: false, ..BaseBackupOptions::default() };
    let info = client.base_backup(&options, &mut sink).unwrap();
    std::fs::write(restore_dir.join("backup_manifest"), info.manifest.as_ref().unwrap()).unwrap();

    pg.psql("INSERT INTO rows SELECT g, 'after' FROM generate_series(1001, 1500) g").unwrap();
    let switch: Lsn = pg.psql("SELECT pg_switch_wal()").unwrap().parse().unwrap();
    // Stream every segment from the backup's start through the one the switch completed.
    let need_until = Lsn(switch.segment_start(wal::DEFAULT_SEGMENT_SIZE).0 + wal::DEFAULT_SEGMENT_SIZE);
    let start = info.start_lsn.segment_start(wal::DEFAULT_SEGMENT_SIZE);
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut writer = SegmentWriter::new(wal_dir.clone(), info.start_timeline, start);
    let mut stream = client.start_replication(Some("tm_e2e"), start, info.start_timeline).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.position() < need_until {
        assert!(Instant::now() < deadline, "WAL stopped at {}", writer.position());
        if let WalMessage::XLogData { start: at, data, .. } = stream.next_message().unwrap() {
            writer.write(at, &data);
            stream.confirm(writer.position(), writer.durable());
        }
    }
    stream.finish().unwrap();
    assert!(writer.completed() >= 1);

    // pg_verifybackup checks every file against the server's manifest.
    let verify = std::process::Command::new(pg.bin_dir().join("pg_verifybackup"))
        .args(["-n", "-q"])
        .arg(&restore_dir)
        .output()
        .unwrap();
    assert!(verify.status.success(), "pg_verifybackup: {}", String::from_utf8_lossy(&verify.stderr));
    std::fs::remove_file(restore_dir.join("backup_manifest")).unwrap();

    std::fs::write(restore_dir.join("recovery.signal"), "").unwrap();
    let mut auto = std::fs::read_to_string(restore_dir.join("postgresql.auto.conf")).unwrap_or_default();
    auto.push_str(&format!("restore_command = 'cp {}/%f %p'\n", wal_dir.display()));
    std::fs::write(restore_dir.join("postgresql.auto.conf"), auto).unwrap();
    let restored = PgCluster::start_existing(&restore_dir, Auth::Trust).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while restored.psql("SELECT pg_is_in_recovery()").unwrap() != "f" {
        assert!(Instant::now() < deadline, "recovery did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        restored.psql("SELECT note, count(*) FROM rows GROUP BY note ORDER BY note").unwrap(),
        "after|500\nbefore|1000"
    );
    assert_eq!(sysid(&restored), sysid(&pg));
}

/// Throughput of a base backup into a sink that reads and drops every byte, next to
/// pg_basebackup writing a tar to /dev/null. `cargo test --release -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn base_backup_throughput() {
    let Some(pg) = cluster("base_backup_throughput", &PgOptions::default()) else {
        return;
    };
    let pgbench = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg.bin_dir().join("pgbench"))
        .args(["-i", "-s", "20", "-q", "-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port().to_string(), "-U", "postgres", "postgres"])
        .current_dir("/tmp")
        .output()
        .unwrap();
    assert!(pgbench.status.success(), "{}", String::from_utf8_lossy(&pgbench.stderr));
    pg.psql("CHECKPOINT").unwrap();
    let options = BaseBackupOptions { wait_for_archive: false, ..BaseBackupOptions::default() };
    let mut client = ReplicationClient::connect_str(&pg.connstr()).unwrap();
    let started = Instant::now();
    let info = client.base_backup(&options, &mut util::Discard).unwrap();
    let ours = started.elapsed();
    let started = Instant::now();
    let out = std::process::Command::new(pg.bin_dir().join("pg_basebackup"))
        .args(["-d", &pg.connstr(), "-Ft", "-D", "-", "-X", "none", "-c", "fast"])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let theirs = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mib = info.bytes as f64 / (1 << 20) as f64;
    println!(
        "base backup of {mib:.0} MiB: tidemark-source-pg {:.0} MiB/s ({ours:?}), pg_basebackup -Ft {:.0} MiB/s ({theirs:?})",
        mib / ours.as_secs_f64(),
        mib / theirs.as_secs_f64()
    );
}

mod malformed {
    //! A fake server answers with damaged messages: the client returns errors, never panics.

    use super::util::{Collect, fake_server, frame, result_set};
    use proptest::prelude::*;
    use tidemark_source_pg::{BaseBackupOptions, ErrorKind, Lsn, ReplicationClient, WalMessage};

    fn client(answer: Vec<u8>) -> ReplicationClient {
        let port = fake_server(answer);
        let mut client = ReplicationClient::connect_str(&format!("host=127.0.0.1 port={port} user=u")).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        client
    }

    /// The start of a valid BASE_BACKUP answer, up to CopyOutResponse.
    fn backup_prefix() -> Vec<u8> {
        let mut out = result_set(&["recptr", "tli"], &[Some("0/2000028"), Some("1")]);
        out.extend(result_set(&["spcoid", "spclocation", "size"], &[None, None, None]));
        out.extend(frame(b'H', &[0, 0, 0]));
        out
    }

    #[test]
    fn well_formed_identify_system_parses() {
        let answer = [
            result_set(
                &["systemid", "timeline", "xlogpos", "dbname"],
                &[Some("7301234567890123456"), Some("3"), Some("0/16B3748"), None],
            ),
            frame(b'Z', b"I"),
        ]
        .concat();
        let id = client(answer).identify_system().unwrap();
        assert_eq!(id.system_identifier, 7_301_234_567_890_123_456);
        assert_eq!(id.timeline, 3);
        assert_eq!(id.xlog_position, Lsn(0x16B_3748));
    }

    #[test]
    fn specific_damage_is_an_error() {
        let bad_row =
            [result_set(&["systemid", "timeline", "xlogpos"], &[Some("x"), Some("1"), Some("0/0")]), frame(b'Z', b"I")]
                .concat();
        let huge = vec![b'D', 0xff, 0xff, 0xff, 0xff];
        let short = vec![b'D', 0, 0, 0, 2];
        for answer in [bad_row, huge, short, frame(b'?', b""), Vec::new()] {
            let err = client(answer).identify_system().unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Protocol | ErrorKind::Io), "{err}");
        }
        // A tar stream with a broken header checksum.
        let mut tar = vec![0u8; 512];
        tar[..4].copy_from_slice(b"junk");
        tar[100..108].copy_from_slice(b"0000644\0");
        let mut answer = backup_prefix();
        answer.extend(frame(b'd', b"nbase.tar\0\0"));
        answer.extend(frame(b'd', &[&b"d"[..], &tar].concat()));
        answer.extend(frame(b'c', b""));
        let err = client(answer).base_backup(&BaseBackupOptions::default(), &mut Collect::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_answers_never_panic(junk in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = client(junk.clone()).identify_system();
            let _ = client(junk.clone()).timeline_history(2);
            let mut answer = backup_prefix();
            answer.extend(frame(b'd', b"nbase.tar\0\0"));
            answer.extend(frame(b'd', &[&b"d"[..], &junk].concat()));
            answer.extend(junk.clone());
            let _ = client(answer).base_backup(&BaseBackupOptions::default(), &mut Collect::default());
            let answer = [frame(b'W', &[0, 0, 0]), frame(b'd', &[&b"w"[..], &junk].concat()), junk].concat();
            let mut c = client(answer);
            if let Ok(mut stream) = c.start_replication(None, Lsn(0), 1) {
                for _ in 0..4 {
                    match stream.next_message() {
                        Ok(WalMessage::Idle) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}
