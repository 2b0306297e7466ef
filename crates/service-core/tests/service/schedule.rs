use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use tidemark_service_core::schedule::MAX_REPORTED_MISSES;
use tidemark_service_core::{CatchUp, Schedule, ServiceError, Verdict, window_verdict};

use crate::ts;

fn runs(s: &Schedule, after: &str, until: &str) -> Vec<String> {
    s.runs_between(ts(after), ts(until)).map(|t| t.to_string()).collect()
}

#[test]
fn daily_0100_in_kolkata_is_1930_utc_the_day_before() {
    let s = Schedule::new("0 1 * * *", "Asia/Kolkata").unwrap();
    assert_eq!(s.next_after(ts("2026-01-10T00:00:00Z")), Some(ts("2026-01-10T19:30:00Z")));
    // Strictly after: at the run itself, the next one is a day later.
    assert_eq!(s.next_after(ts("2026-01-10T19:30:00Z")), Some(ts("2026-01-11T19:30:00Z")));
    // No DST in India: every run is 24 hours after the last, all year.
    let year: Vec<Timestamp> = s.runs_between(ts("2026-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z")).collect();
    assert_eq!(year.len(), 365);
    assert!(year.windows(2).all(|w| w[1].duration_since(w[0]) == SignedDuration::from_hours(24)));
}

#[test]
fn spring_forward_runs_a_skipped_time_once_right_after_the_gap() {
    // 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist.
    let s = Schedule::new("30 2 * * *", "America/New_York").unwrap();
    assert_eq!(
        runs(&s, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT: the first instant after the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
}

#[test]
fn fall_back_runs_a_repeated_time_once_at_its_first_occurrence() {
    // 2026-11-01 in New York: 02:00 EDT goes back to 01:00 EST, so 01:30 happens twice.
    let s = Schedule::new("30 1 * * *", "America/New_York").unwrap();
    assert_eq!(
        runs(&s, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
        [
            "2026-10-31T05:30:00Z", // 01:30 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT, the first pass; not 06:30Z (01:30 EST)
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]
    );
    // Asked between the two passes, the next run is the next day's.
    assert_eq!(s.next_after(ts("2026-11-01T06:00:00Z")), Some(ts("2026-11-02T06:30:00Z")));
}

#[test]
fn repeating_jobs_follow_elapsed_time_through_both_changes() {
    let s = Schedule::new("*/30 * * * *", "America/New_York").unwrap();
    // Spring: nothing at 02:xx local; 01:30 EST is followed 30 minutes later by 03:00 EDT.
    assert_eq!(
        runs(&s, "2026-03-08T05:59:00Z", "2026-03-08T07:31:00Z"),
        ["2026-03-08T06:00:00Z", "2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"]
    );
    // Autumn: both passes of the repeated hour run.
    assert_eq!(
        runs(&s, "2026-11-01T04:59:00Z", "2026-11-01T07:01:00Z"),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ]
    );
}

#[test]
fn day_fields_and_names() {
    // Monday to Friday at 18:00 in Berlin (CET, UTC+1 in January).
    let s = Schedule::new("0 18 * * MON-FRI", "Europe/Berlin").unwrap();
    // 2026-01-09 is a Friday: the next run after Friday evening is Monday's.
    assert_eq!(s.next_after(ts("2026-01-09T18:00:00Z")), Some(ts("2026-01-12T17:00:00Z")));
    let daily = Schedule::new("@daily", "UTC").unwrap();
    assert_eq!(daily.next_after(ts("2026-01-09T18:00:00Z")), Some(ts("2026-01-10T00:00:00Z")));
}

#[test]
fn bad_expressions_say_why() {
    for (expression, reason) in [
        ("0 1 * *", ""),
        ("61 * * * *", ""),
        ("0 0 1 * * *", "without a seconds or year field"),
        ("0 0 30 2 *", "never matches a real date"),
        ("", "empty"),
        ("a b c d e", ""),
    ] {
        match Schedule::new(expression, "UTC") {
            Err(e @ ServiceError::InvalidCron { .. }) => {
                let text = e.to_string();
                assert!(text.contains(reason), "{expression:?}: {text}");
                assert!(text.contains("e.g. \"0 1 * * *\""), "{text}");
            }
            other => panic!("{expression:?} gave {other:?}"),
        }
    }
}

#[test]
fn unknown_time_zone_suggests_the_nearest() {
    let err = Schedule::new("0 1 * * *", "Asia/Kolkatta").unwrap_err();
    assert_eq!(err.to_string(), "unknown time zone \"Asia/Kolkatta\"; did you mean \"Asia/Kolkata\"?");
    let err = Schedule::new("0 1 * * *", "Nowhere/Special_Place_X").unwrap_err();
    assert!(matches!(err, ServiceError::UnknownTimeZone { suggestion: None, .. }), "{err}");
}

#[test]
fn a_window_of_one_hour() {
    let at = ts("2026-01-10T19:30:00Z");
    let hour = SignedDuration::from_hours(1);
    assert_eq!(window_verdict(at, hour, ts("2026-01-10T19:00:00Z")), Verdict::Wait(at));
    assert_eq!(window_verdict(at, hour, at), Verdict::StartNow);
    assert_eq!(window_verdict(at, hour, ts("2026-01-10T20:29:59Z")), Verdict::StartNow);
    let missed = Verdict::Missed { scheduled: at, window_end: ts("2026-01-10T20:30:00Z") };
    // A job that could not start before the window ends is missed, at the end exactly too.
    assert_eq!(window_verdict(at, hour, ts("2026-01-10T20:30:00Z")), missed);
    assert_eq!(window_verdict(at, hour, ts("2026-01-11T03:00:00Z")), missed);
    // A huge window saturates instead of overflowing.
    assert_eq!(window_verdict(at, SignedDuration::MAX, ts("2090-01-01T00:00:00Z")), Verdict::StartNow);
}

#[test]
fn after_three_days_down_a_daily_job_runs_once_and_reports_the_misses() {
    let s = Schedule::new("0 1 * * *", "Asia/Kolkata").unwrap();
    let last_run = ts("2026-01-09T19:30:00Z");
    let hour = Some(SignedDuration::from_hours(1));
    // Back up at 01:30 IST on the 13th: the run of 01:00 is still in its window.
    assert_eq!(
        s.missed_runs(last_run, ts("2026-01-12T20:00:00Z"), hour),
        CatchUp {
            run: Some(ts("2026-01-12T19:30:00Z")),
            missed: vec![ts("2026-01-10T19:30:00Z"), ts("2026-01-11T19:30:00Z")],
            missed_count: 2,
        }
    );
    // Back up at 02:30 IST: that window has closed too; nothing runs until the next 01:00.
    let late = s.missed_runs(last_run, ts("2026-01-12T21:00:00Z"), hour);
    assert_eq!(late.run, None);
    assert_eq!(late.missed_count, 3);
    assert_eq!(late.missed.last(), Some(&ts("2026-01-12T19:30:00Z")));
    // Without a window, the latest runs late, once.
    let no_window = s.missed_runs(last_run, ts("2026-01-12T21:00:00Z"), None);
    assert_eq!(no_window.run, Some(ts("2026-01-12T19:30:00Z")));
    assert_eq!(no_window.missed_count, 2);
    // Nothing missed when the daemon was not down.
    let fine = s.missed_runs(last_run, ts("2026-01-10T10:00:00Z"), hour);
    assert_eq!(fine, CatchUp { run: None, missed: vec![], missed_count: 0 });
}

#[test]
fn frequent_jobs_report_a_bounded_list_and_the_full_count() {
    let s = Schedule::new("* * * * *", "UTC").unwrap();
    let c = s.missed_runs(ts("2026-01-10T00:00:00Z"), ts("2026-01-13T00:00:30Z"), Some(SignedDuration::from_mins(1)));
    assert_eq!(c.run, Some(ts("2026-01-13T00:00:00Z")));
    assert_eq!(c.missed_count, 3 * 24 * 60 - 1);
    assert_eq!(c.missed.len(), MAX_REPORTED_MISSES);
    assert_eq!(c.missed.last(), Some(&ts("2026-01-12T23:59:00Z")));
    assert_eq!(c.missed.first(), Some(&ts("2026-01-12T22:20:00Z")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn parsing_never_panics(text in "[0-9a-zA-Z*/,@#?LW -]{0,40}") {
        let _ = Schedule::new(&text, "UTC");
    }

    #[test]
    fn next_run_is_the_first_after_now(second in 1_700_000_000i64..1_900_000_000, zone in prop::sample::select(vec!["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"])) {
        let now = Timestamp::from_second(second).unwrap();
        let s = Schedule::new("30 2 * * *", zone).unwrap();
        let next = s.next_after(now).unwrap();
        prop_assert!(next > now);
        prop_assert!(next.duration_since(now) <= SignedDuration::from_hours(25));
        prop_assert_eq!(s.latest_at_or_before(next), Some(next));
        let previous = s.latest_at_or_before(now).unwrap();
        prop_assert!(previous <= now);
        prop_assert_eq!(s.next_after(previous), Some(next));
    }
}
