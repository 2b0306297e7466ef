//! The one suite every catalog passes: each case takes a fresh, empty catalog.

use jiff::Timestamp;
use tidemark_service_core::api::{
    Catalog, CatalogError, Claim, JobFilter, JobKind, JobLogLine, JobRecord, JobStatus, RunKey, Trigger,
};

use crate::ts;

/// One case of the suite.
type Case = fn(&dyn Catalog);

/// Every case, by name, for [`run_all`].
pub const CASES: &[(&str, Case)] = &[
    ("jobs_insert_get_update", jobs_insert_get_update),
    ("jobs_filter_order_limit", jobs_filter_order_limit),
    ("logs_keep_their_order_per_job", logs_keep_their_order_per_job),
    ("claim_grant_hold_renew", claim_grant_hold_renew),
    ("claim_takeover_after_the_lease_ends", claim_takeover_after_the_lease_ends),
    ("complete_is_done_forever", complete_is_done_forever),
    ("runs_are_told_apart_by_source_kind_and_instant", runs_are_told_apart_by_source_kind_and_instant),
    ("links_are_single_use", links_are_single_use),
];

/// Runs every case, each on a catalog from `fresh`.
pub fn run_all(name: &str, fresh: &mut dyn FnMut(&str) -> Box<dyn Catalog>) {
    for (case, f) in CASES {
        eprintln!("{name}: {case}");
        let catalog = fresh(case);
        f(catalog.as_ref());
    }
}

pub fn job(id: &str, source: &str, kind: JobKind, created: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        source: source.into(),
        kind,
        trigger: Trigger::Schedule,
        scheduled_for: Some(ts(created)),
        created: ts(created),
        started: None,
        finished: None,
        status: JobStatus::Queued,
        message: None,
        snapshot: None,
        bytes_added: None,
        verified: None,
        owner: "host-1".into(),
    }
}

pub fn run(source: &str, at: &str) -> RunKey {
    RunKey { source: source.into(), kind: JobKind::Backup, scheduled_for: ts(at) }
}

fn ids(jobs: &[JobRecord]) -> Vec<&str> {
    jobs.iter().map(|j| j.id.as_str()).collect()
}

fn jobs_insert_get_update(c: &dyn Catalog) {
    let mut j = job("00000000000000a1", "uploads", JobKind::Backup, "2026-01-10T19:30:00.123456789Z");
    j.trigger = Trigger::Rerun { of: "00000000000000a0".into() };
    assert_eq!(c.job(&j.id).unwrap(), None);
    c.insert_job(&j).unwrap();
    assert_eq!(c.job(&j.id).unwrap().as_ref(), Some(&j), "a job reads back exactly, nanoseconds too");
    match c.insert_job(&j) {
        Err(CatalogError::Conflict(message)) => assert!(message.contains(&j.id), "{message}"),
        other => panic!("a second insert of one id is a conflict, not {other:?}"),
    }
    assert_eq!(c.jobs(&JobFilter::default()).unwrap().len(), 1, "the refused insert added nothing");

    j.status = JobStatus::Succeeded;
    j.started = Some(ts("2026-01-10T19:30:01Z"));
    j.finished = Some(ts("2026-01-10T19:31:01Z"));
    j.message = Some("10 files, 1 MiB".into());
    j.snapshot = Some("ab".repeat(32));
    j.bytes_added = Some(u64::MAX);
    j.verified = Some(true);
    c.update_job(&j).unwrap();
    assert_eq!(c.job(&j.id).unwrap().as_ref(), Some(&j));
    assert_eq!(c.jobs(&JobFilter::default()).unwrap(), vec![j.clone()], "an update adds no job");

    let unknown = job("00000000000000ff", "uploads", JobKind::Backup, "2026-01-10T19:30:00Z");
    match c.update_job(&unknown) {
        Err(CatalogError::Conflict(message)) => assert!(message.contains(&unknown.id), "{message}"),
        other => panic!("an update of an unknown job is a conflict, not {other:?}"),
    }
    assert_eq!(c.job(&unknown.id).unwrap(), None);
}

fn jobs_filter_order_limit(c: &dyn Catalog) {
    let mut all = vec![
        job("01", "uploads", JobKind::Backup, "2026-01-10T01:00:00Z"),
        job("02", "uploads", JobKind::Drill, "2026-01-11T01:00:00Z"),
        job("03", "db", JobKind::Backup, "2026-01-09T01:00:00Z"),
        // Same instant as 02: ties go by id, descending.
        job("04", "db", JobKind::Backup, "2026-01-11T01:00:00Z"),
        job("05", "uploads", JobKind::Backup, "2026-01-12T01:00:00Z"),
    ];
    all[0].status = JobStatus::Failed;
    all[4].status = JobStatus::Running;
    for j in &all {
        c.insert_job(j).unwrap();
    }
    let list = |f: JobFilter| ids(&c.jobs(&f).unwrap()).join(",");
    assert_eq!(list(JobFilter::default()), "05,04,02,01,03");
    assert_eq!(list(JobFilter { limit: Some(2), ..JobFilter::default() }), "05,04");
    assert_eq!(list(JobFilter { limit: Some(0), ..JobFilter::default() }), "");
    assert_eq!(list(JobFilter { source: Some("uploads".into()), ..JobFilter::default() }), "05,02,01");
    assert_eq!(list(JobFilter { kind: Some(JobKind::Backup), ..JobFilter::default() }), "05,04,01,03");
    assert_eq!(
        list(JobFilter { source: Some("uploads".into()), kind: Some(JobKind::Backup), limit: Some(1), status: vec![] }),
        "05"
    );
    assert_eq!(
        list(JobFilter { status: vec![JobStatus::Failed, JobStatus::Running], ..JobFilter::default() }),
        "05,01"
    );
    assert_eq!(list(JobFilter { source: Some("nothing".into()), ..JobFilter::default() }), "");

    // Moving a job in time moves it in the order.
    let mut moved = all[2].clone();
    moved.created = ts("2026-01-13T00:00:00Z");
    c.update_job(&moved).unwrap();
    assert_eq!(list(JobFilter::default()), "03,05,04,02,01");
}

fn line(time: &str, message: &str) -> JobLogLine {
    JobLogLine { time: ts(time), level: "info".into(), message: message.into() }
}

fn logs_keep_their_order_per_job(c: &dyn Catalog) {
    c.insert_job(&job("0a", "uploads", JobKind::Backup, "2026-01-10T01:00:00Z")).unwrap();
    c.insert_job(&job("0b", "uploads", JobKind::Backup, "2026-01-10T02:00:00Z")).unwrap();
    assert_eq!(c.job_log("0a").unwrap(), vec![]);
    // Lines keep the order appended, even when their times do not.
    let lines = [
        line("2026-01-10T01:00:05Z", "second"),
        line("2026-01-10T01:00:01Z", "first?"),
        line("2026-01-10T01:00:09Z", "done"),
    ];
    for (i, l) in lines.iter().enumerate() {
        c.append_log("0a", l).unwrap();
        c.append_log("0b", &line("2026-01-10T02:00:00Z", &format!("b{i}"))).unwrap();
    }
    let mut warn = line("2026-01-10T01:00:10Z", "multi\nline \"quoted\" ✓");
    warn.level = "warn".into();
    c.append_log("0a", &warn).unwrap();
    let mut expected = lines.to_vec();
    expected.push(warn);
    assert_eq!(c.job_log("0a").unwrap(), expected);
    let b: Vec<String> = c.job_log("0b").unwrap().into_iter().map(|l| l.message).collect();
    assert_eq!(b, ["b0", "b1", "b2"]);
    // A job id that is a prefix of another's shares nothing with it.
    assert_eq!(c.job_log("0").unwrap(), vec![]);
}

fn claim_grant_hold_renew(c: &dyn Catalog) {
    let r = run("uploads", "2026-01-10T19:30:00Z");
    let now = ts("2026-01-10T19:30:00Z");
    let until = ts("2026-01-10T19:35:00Z");
    assert_eq!(c.claim(&r, "a", until, now).unwrap(), Claim::Granted);
    assert_eq!(c.claim(&r, "b", ts("2026-01-10T19:40:00Z"), now).unwrap(), Claim::HeldBy { owner: "a".into(), until });
    // Just before the lease ends it is still held.
    let almost = ts("2026-01-10T19:34:59.999999999Z");
    assert_eq!(
        c.claim(&r, "b", ts("2026-01-10T19:40:00Z"), almost).unwrap(),
        Claim::HeldBy { owner: "a".into(), until }
    );
    // The holder renews; the others see the new end.
    let later = ts("2026-01-10T19:45:00Z");
    assert_eq!(c.claim(&r, "a", later, ts("2026-01-10T19:34:00Z")).unwrap(), Claim::Granted);
    assert_eq!(
        c.claim(&r, "b", later, ts("2026-01-10T19:36:00Z")).unwrap(),
        Claim::HeldBy { owner: "a".into(), until: later }
    );
}

fn claim_takeover_after_the_lease_ends(c: &dyn Catalog) {
    let r = run("uploads", "2026-01-10T19:30:00Z");
    let until = ts("2026-01-10T19:35:00Z");
    assert_eq!(c.claim(&r, "a", until, ts("2026-01-10T19:30:00Z")).unwrap(), Claim::Granted);
    // At the lease's end, b takes the run over; now a is the one refused.
    let b_until = ts("2026-01-10T19:40:00Z");
    assert_eq!(c.claim(&r, "b", b_until, until).unwrap(), Claim::Granted);
    assert_eq!(
        c.claim(&r, "a", ts("2026-01-10T19:50:00Z"), until).unwrap(),
        Claim::HeldBy { owner: "b".into(), until: b_until }
    );
    // The passed-in `now` decides, not the wall clock: far in the future everything has ended.
    let future: Timestamp = ts("2099-01-01T00:00:00Z");
    assert_eq!(c.claim(&r, "a", ts("2099-01-01T00:05:00Z"), future).unwrap(), Claim::Granted);
}

fn complete_is_done_forever(c: &dyn Catalog) {
    let r = run("uploads", "2026-01-10T19:30:00Z");
    let now = ts("2026-01-10T19:30:00Z");
    let until = ts("2026-01-10T19:35:00Z");
    assert_eq!(c.claim(&r, "a", until, now).unwrap(), Claim::Granted);
    c.complete(&r, "a").unwrap();
    for (owner, now) in [("a", now), ("b", now), ("b", ts("2030-01-01T00:00:00Z"))] {
        assert_eq!(c.claim(&r, owner, ts("2030-01-01T00:05:00Z"), now).unwrap(), Claim::Done, "{owner} at {now}");
    }
    c.complete(&r, "a").unwrap();
    // A run completed without a claim (e.g. recorded as missed) is done as well.
    let missed = run("uploads", "2026-01-11T19:30:00Z");
    c.complete(&missed, "b").unwrap();
    assert_eq!(c.claim(&missed, "a", until, now).unwrap(), Claim::Done);
}

fn runs_are_told_apart_by_source_kind_and_instant(c: &dyn Catalog) {
    let now = ts("2026-01-10T19:30:00Z");
    let until = ts("2026-01-10T19:35:00Z");
    let base = run("uploads", "2026-01-10T19:30:00Z");
    assert_eq!(c.claim(&base, "a", until, now).unwrap(), Claim::Granted);
    let others = [
        run("db", "2026-01-10T19:30:00Z"),
        RunKey { kind: JobKind::Drill, ..base.clone() },
        run("uploads", "2026-01-10T19:30:00.000000001Z"),
        run("uploads", "2026-01-11T19:30:00Z"),
    ];
    for other in &others {
        assert_eq!(c.claim(other, "b", until, now).unwrap(), Claim::Granted, "{other:?}");
    }
    c.complete(&others[0], "b").unwrap();
    assert_eq!(c.claim(&base, "b", until, now).unwrap(), Claim::HeldBy { owner: "a".into(), until });
}

fn links_are_single_use(c: &dyn Catalog) {
    let at = ts("2026-01-10T19:30:00Z");
    assert!(c.use_link("0123456789abcdef", at).unwrap());
    assert!(!c.use_link("0123456789abcdef", at).unwrap());
    assert!(!c.use_link("0123456789abcdef", ts("2026-01-10T19:31:00Z")).unwrap());
    assert!(c.use_link("0123456789abcdee", at).unwrap());
    assert!(c.use_link("0123456789abcde", at).unwrap(), "a prefix is another nonce");
}
