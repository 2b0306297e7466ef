//! The embedded catalog: conformance, persistence across reopening, and the lock that keeps a
//! second daemon (another process) off the same state.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use tidemark_service_core::api::{Catalog, CatalogError, Claim, JobFilter, JobKind, JobLogLine, JobStatus};
use tidemark_service_state::EmbeddedCatalog;

use crate::conformance::{self, job, run};
use crate::ts;

#[test]
fn embedded_catalog_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all("embedded", &mut |case| {
        Box::new(EmbeddedCatalog::open(&dir.path().join(case), "host-1").unwrap())
    });
}

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let r = run("uploads", "2026-01-10T19:30:00Z");
    let done = run("uploads", "2026-01-09T19:30:00Z");
    let until = ts("2026-01-10T19:35:00Z");
    let mut j = job("00000000000000a1", "uploads", JobKind::Backup, "2026-01-10T19:30:00Z");
    {
        let c = EmbeddedCatalog::open(dir.path(), "host-1").unwrap();
        c.insert_job(&j).unwrap();
        j.status = JobStatus::Running;
        c.update_job(&j).unwrap();
        c.append_log(
            &j.id,
            &JobLogLine { time: ts("2026-01-10T19:30:01Z"), level: "info".into(), message: "one".into() },
        )
        .unwrap();
        assert_eq!(c.claim(&r, "host-1", until, ts("2026-01-10T19:30:00Z")).unwrap(), Claim::Granted);
        c.complete(&done, "host-1").unwrap();
        assert!(c.use_link("abcd", ts("2026-01-10T19:30:00Z")).unwrap());
    }
    let c = EmbeddedCatalog::open(dir.path(), "host-1").unwrap();
    assert_eq!(c.job(&j.id).unwrap().as_ref(), Some(&j));
    assert_eq!(c.jobs(&JobFilter::default()).unwrap(), vec![j.clone()]);
    assert_eq!(c.job_log(&j.id).unwrap().len(), 1);
    // The log continues after the lines already there.
    c.append_log(&j.id, &JobLogLine { time: ts("2026-01-10T19:30:02Z"), level: "info".into(), message: "two".into() })
        .unwrap();
    let messages: Vec<String> = c.job_log(&j.id).unwrap().into_iter().map(|l| l.message).collect();
    assert_eq!(messages, ["one", "two"]);
    assert_eq!(
        c.claim(&r, "host-2", until, ts("2026-01-10T19:31:00Z")).unwrap(),
        Claim::HeldBy { owner: "host-1".into(), until }
    );
    assert_eq!(c.claim(&done, "host-2", until, ts("2026-01-10T19:31:00Z")).unwrap(), Claim::Done);
    assert!(!c.use_link("abcd", ts("2026-01-10T19:31:00Z")).unwrap());
}

#[test]
fn a_second_handle_in_one_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedCatalog::open(dir.path(), "host-1").unwrap();
    match EmbeddedCatalog::open(dir.path(), "host-2") {
        Err(CatalogError::Locked { path, holder }) => {
            assert!(path.ends_with("catalog.redb"), "{path}");
            assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}");
            assert!(holder.contains("\"host-1\""), "{holder}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    EmbeddedCatalog::open(dir.path(), "host-2").unwrap();
}

const CHILD_DIR: &str = "TIDEMARK_STATE_TEST_CHILD_DIR";

/// Run by [`a_second_daemon_process_is_refused`] in a child process: holds the catalog until
/// killed (or its stdin closes).
#[test]
#[ignore = "helper process of a_second_daemon_process_is_refused"]
fn child_holds_the_embedded_state() {
    let dir = std::env::var(CHILD_DIR).expect("run by a_second_daemon_process_is_refused");
    let catalog = EmbeddedCatalog::open(dir.as_ref(), "child-daemon").unwrap();
    catalog.insert_job(&job("00000000000000c1", "uploads", JobKind::Backup, "2026-01-10T19:30:00Z")).unwrap();
    println!("CHILD-READY {}", std::process::id());
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}

#[test]
fn a_second_daemon_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "embedded::child_holds_the_embedded_state", "--include-ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child_pid = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended before opening the catalog");
        if let Some(pid) = line.trim().strip_prefix("CHILD-READY ") {
            break pid.to_string();
        }
    };
    assert_eq!(child_pid, child.id().to_string());
    match EmbeddedCatalog::open(dir.path(), "parent-daemon") {
        Err(e @ CatalogError::Locked { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&format!("pid {child_pid} on ")), "{message}");
            assert!(message.contains("\"child-daemon\""), "{message}");
            assert!(message.contains("server.state_dir"), "the fix is named: {message}");
        }
        other => panic!("expected Locked while the child runs, got {other:?}"),
    }
    // The child dies without closing anything (SIGKILL, as in a crash): the lock goes with it,
    // and this daemon opens the state (redb repairs it) and finds what the child committed.
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    let catalog = EmbeddedCatalog::open(dir.path(), "parent-daemon").unwrap();
    assert!(catalog.job("00000000000000c1").unwrap().is_some());
}
