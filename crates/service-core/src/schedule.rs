//! When a source's job runs: a cron expression in an IANA time zone, its window, and catching up
//! after downtime. Every function takes `now` as an argument; nothing reads a clock.
//!
//! # The rules the daemon relies on
//!
//! - **Expressions** have the five classic fields `minute hour day-of-month month day-of-week`,
//!   with names (`MON`, `JAN`), ranges, lists, steps and the nicknames `@daily`, `@weekly`, ...
//!   When both day fields are restricted, a day matching either runs (as in Vixie cron).
//! - **Spring forward** (a wall-clock time that does not exist, e.g. 02:30 on 2026-03-08 in
//!   America/New_York): a job at a fixed time in the skipped hour runs once, at the first
//!   instant after the gap (03:00 local, 07:00 UTC), so that "daily" stays daily. Jobs that
//!   repeat through the day (`*/15 * * * *`) simply have no runs in the skipped hour.
//! - **Fall back** (a wall-clock time that happens twice, e.g. 01:30 on 2026-11-01 in
//!   America/New_York): a job at a fixed time runs once, at the first occurrence (01:30 EDT,
//!   05:30 UTC). Repeating jobs run in both passes of the hour, since time really elapses.
//! - **Windows**: a run scheduled at `t` with window `w` may start in `[t, t + w)`; at `t + w`
//!   or later it is missed ([`window_verdict`]).
//! - **Downtime**: runs once, never N times ([`Schedule::missed_runs`]).
//!
//! Matching is done by the `croner` crate (which implements these DST rules) on jiff's time zone
//! database, through a small adapter in this module.

use std::cmp::Ordering;
use std::fmt;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ZonedDateTime};

use crate::ServiceError;

/// The most missed runs [`Schedule::missed_runs`] lists one by one (the most recent ones); the
/// count covers all of them.
pub const MAX_REPORTED_MISSES: usize = 100;

/// A cron expression in an IANA time zone.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    zone_name: String,
    zone: TimeZone,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.zone_name)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone_name == other.zone_name
    }
}

impl Schedule {
    /// Parse `expression` (five fields) for the time zone named `time_zone` (e.g.
    /// `"Asia/Kolkata"`, `"UTC"`).
    ///
    /// ```
    /// use tidemark_service_core::Schedule;
    /// let daily = Schedule::new("0 1 * * *", "Asia/Kolkata").unwrap();
    /// let now = "2026-01-10T00:00:00Z".parse().unwrap();
    /// assert_eq!(daily.next_after(now).unwrap().to_string(), "2026-01-10T19:30:00Z");
    /// assert!(Schedule::new("0 1 * *", "UTC").is_err());
    /// ```
    pub fn new(expression: &str, time_zone: &str) -> Result<Schedule, ServiceError> {
        let cron = parse_cron(expression)?;
        let zone = time_zone_named(time_zone)?;
        let schedule = Schedule { expression: expression.to_string(), zone_name: time_zone.to_string(), zone, cron };
        // An expression such as "0 0 30 2 *" parses but names no real day.
        let reference = Timestamp::from_second(REFERENCE_SECOND).unwrap_or(Timestamp::UNIX_EPOCH);
        if schedule.next_after(reference).is_none() {
            return Err(ServiceError::InvalidCron {
                expression: expression.to_string(),
                reason: "it never matches a real date".to_string(),
            });
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name as written.
    pub fn time_zone(&self) -> &str {
        &self.zone_name
    }

    /// The first run strictly after `now`, or `None` if there is none (the search gives up after
    /// several years).
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let origin = Wall(now.to_zoned_datetime(self.zone.clone()));
        let next = self.cron.find_next_occurrence(&origin, false).ok()?;
        Some(next.0.timestamp())
    }

    /// The latest run at or before `now`, if any.
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        let origin = Wall(now.to_zoned_datetime(self.zone.clone()));
        let previous = self.cron.find_previous_occurrence(&origin, true).ok()?;
        // The wall-clock search works to the second; a `now` with a fraction of a second lies
        // after the run at its second, never before it.
        Some(previous.0.timestamp()).filter(|t| *t <= now)
    }

    /// The runs `r` with `after < r <= until`, in order.
    pub fn runs_between(&self, after: Timestamp, until: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        let mut cursor = Some(after);
        std::iter::from_fn(move || {
            let next = self.next_after(cursor?).filter(|t| *t <= until);
            cursor = next;
            next
        })
    }

    /// What to do after the daemon was down: the runs since `last_run` (the scheduled instant of
    /// the last run the daemon dealt with) up to `now`.
    ///
    /// The rule is "run once, not N times": only the latest of those runs may start now, and
    /// only while its window is open (`window` `None` means no window: it may start however
    /// late). Every other one is missed, and so is the latest when its window has closed; the
    /// daemon alerts for the misses and waits for the next regular run.
    pub fn missed_runs(&self, last_run: Timestamp, now: Timestamp, window: Option<SignedDuration>) -> CatchUp {
        let mut recent = std::collections::VecDeque::new();
        let mut count = 0usize;
        for run in self.runs_between(last_run, now) {
            count += 1;
            if recent.len() > MAX_REPORTED_MISSES {
                recent.pop_front();
            }
            recent.push_back(run);
        }
        let latest = recent.back().copied();
        let run = latest.filter(|scheduled| match window {
            None => true,
            Some(w) => window_verdict(*scheduled, w, now) == Verdict::StartNow,
        });
        if run.is_some() {
            recent.pop_back();
            count -= 1;
        }
        while recent.len() > MAX_REPORTED_MISSES {
            recent.pop_front();
        }
        CatchUp { run, missed: recent.into(), missed_count: count }
    }

    /// The shortest time between two consecutive runs within a year from `from`, with the
    /// instant of the second of those runs; `None` when fewer than two runs fall in that year.
    ///
    /// The config check evaluates this in UTC, so that the period of `"0 1 * * *"` is 24 hours
    /// whatever the zone's DST rules.
    pub fn shortest_interval(&self, from: Timestamp) -> Option<(SignedDuration, Timestamp)> {
        let until = from.checked_add(SignedDuration::from_hours(366 * 24)).ok()?;
        let mut best: Option<(SignedDuration, Timestamp)> = None;
        let mut previous: Option<Timestamp> = None;
        for run in self.runs_between(from, until).take(10_000) {
            if let Some(p) = previous {
                let gap = run.duration_since(p);
                if best.is_none_or(|(b, _)| gap < b) {
                    best = Some((gap, run));
                }
            }
            previous = Some(run);
        }
        best
    }

    /// The same expression evaluated in UTC.
    pub(crate) fn in_utc(&self) -> Schedule {
        Schedule {
            expression: self.expression.clone(),
            zone_name: "UTC".to_string(),
            zone: TimeZone::UTC,
            cron: self.cron.clone(),
        }
    }
}

/// 2024-01-01T00:00:00Z, the reference instant of the checks that need one.
pub(crate) const REFERENCE_SECOND: i64 = 1_704_067_200;

/// What [`Schedule::missed_runs`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// The scheduled instant of the one run to start now, if any.
    pub run: Option<Timestamp>,
    /// Missed runs, oldest first: the most recent [`MAX_REPORTED_MISSES`] of them.
    pub missed: Vec<Timestamp>,
    /// How many runs were missed in all.
    pub missed_count: usize,
}

/// Whether a run scheduled at some instant may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The window is open: start.
    StartNow,
    /// Too early: wait until this instant (the scheduled one).
    Wait(Timestamp),
    /// The window closed before the run could start: skip it and alert.
    Missed {
        /// When it was scheduled.
        scheduled: Timestamp,
        /// When its window closed.
        window_end: Timestamp,
    },
}

/// The verdict on a run scheduled at `scheduled` with a window of `window`, at `now`: it may
/// start in `[scheduled, scheduled + window)`.
///
/// ```
/// use jiff::{SignedDuration, Timestamp};
/// use tidemark_service_core::{Verdict, window_verdict};
/// let at: Timestamp = "2026-01-10T19:30:00Z".parse().unwrap();
/// let hour = SignedDuration::from_hours(1);
/// let just_before_end: Timestamp = "2026-01-10T20:29:59Z".parse().unwrap();
/// assert_eq!(window_verdict(at, hour, just_before_end), Verdict::StartNow);
/// ```
pub fn window_verdict(scheduled: Timestamp, window: SignedDuration, now: Timestamp) -> Verdict {
    let window_end = scheduled.checked_add(window).unwrap_or(Timestamp::MAX);
    if now < scheduled {
        Verdict::Wait(scheduled)
    } else if now < window_end {
        Verdict::StartNow
    } else {
        Verdict::Missed { scheduled, window_end }
    }
}

fn parse_cron(expression: &str) -> Result<Cron, ServiceError> {
    let invalid = |reason: String| ServiceError::InvalidCron { expression: expression.to_string(), reason };
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let nickname = fields.len() == 1 && fields[0].starts_with('@');
    if fields.len() > 5 {
        return Err(invalid(format!(
            "it has {} fields; Tidemark schedules to the minute, without a seconds or year field",
            fields.len()
        )));
    }
    if !fields.is_empty() && fields.len() < 5 && !nickname {
        return Err(invalid(format!("it has {} fields", fields.len())));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    parser.parse(expression).map_err(|e| {
        // Name the field at fault: parse each one alone, the others being '*'.
        let culprit = (fields.len() == 5).then(|| {
            FIELDS.iter().enumerate().find(|(i, _)| {
                let mut alone = ["*"; 5];
                alone[*i] = fields[*i];
                parser.parse(&alone.join(" ")).is_err()
            })
        });
        match culprit.flatten() {
            Some((i, (name, allowed))) => {
                invalid(format!("the {name} field {:?}: {} (allowed: {allowed})", fields[i], cron_reason(&e)))
            }
            None => invalid(cron_reason(&e)),
        }
    })
}

/// The five fields and their allowed values, for messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

fn cron_reason(error: &CronError) -> String {
    let text = match error {
        CronError::EmptyPattern => "it is empty".to_string(),
        CronError::InvalidPattern(m) | CronError::ComponentError(m) => m.clone(),
        CronError::IllegalCharacters(m) => m.replace("CronPattern contains", "it contains"),
        other => other.to_string(),
    };
    // Croner's messages are sentences; ours continue after a colon.
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Look up an IANA time zone, suggesting the nearest name for a typo.
pub(crate) fn time_zone_named(name: &str) -> Result<TimeZone, ServiceError> {
    // "UTC" is always known, even on a machine without a time zone database.
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| {
        let names: Vec<String> = jiff::tz::db().available().map(|n| n.as_str().to_string()).collect();
        ServiceError::UnknownTimeZone {
            name: name.to_string(),
            suggestion: crate::nearest(name, names.iter().map(String::as_str)).map(str::to_string),
        }
    })
}

/// A zoned instant in the shape croner searches over. Croner walks the wall clock and asks this
/// adapter to resolve wall-clock times in the zone, which is where DST gaps and folds show up.
#[derive(Clone)]
struct Wall(ZonedDateTime);

fn to_civil(dt: DateTime) -> CivilDateTime {
    CivilDateTime::new(
        CivilDate::from_parts_unchecked(
            i32::from(dt.year()),
            dt.month().unsigned_abs().into(),
            dt.day().unsigned_abs().into(),
        ),
        CivilTime::from_parts_unchecked(
            dt.hour().unsigned_abs().into(),
            dt.minute().unsigned_abs().into(),
            dt.second().unsigned_abs().into(),
        ),
    )
}

fn to_jiff(civil: CivilDateTime) -> Result<DateTime, CronError> {
    let part = |v: u32| i8::try_from(v).map_err(|_| CronError::InvalidDate);
    let year = i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?;
    DateTime::new(
        year,
        part(civil.month())?,
        part(civil.day())?,
        part(civil.hour())?,
        part(civil.minute())?,
        part(civil.second())?,
        0,
    )
    .map_err(|_| CronError::InvalidDate)
}

impl CronDateTime for Wall {
    fn to_civil(&self) -> CivilDateTime {
        to_civil(self.0.datetime())
    }

    fn civil_weekday(&self) -> croner::Weekday {
        croner::Weekday::from_days_from_sunday(self.0.weekday().to_sunday_zero_offset().unsigned_abs().into())
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let ambiguous = self.0.time_zone().to_ambiguous_zoned_datetime(to_jiff(civil)?);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } => {
                Resolution::Single(Wall(ambiguous.unambiguous().map_err(|_| CronError::InvalidTime)?))
            }
            AmbiguousOffset::Fold { .. } => {
                let earlier = ambiguous.clone().earlier().map_err(|_| CronError::InvalidTime)?;
                let later = ambiguous.later().map_err(|_| CronError::InvalidTime)?;
                Resolution::Ambiguous(Wall(earlier), Wall(later))
            }
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        self.0.checked_add(SignedDuration::from_secs(seconds)).ok().map(Wall)
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.0.timestamp().cmp(&other.0.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn adapter_round_trips_civil_times() {
        let dt = jiff::civil::date(2026, 3, 8).at(2, 30, 15, 0);
        assert_eq!(to_jiff(to_civil(dt)).unwrap(), dt);
    }

    #[test]
    fn latest_at_or_before_includes_an_exact_hit() {
        let s = Schedule::new("0 1 * * *", "UTC").unwrap();
        assert_eq!(s.latest_at_or_before(ts("2026-01-10T01:00:00Z")), Some(ts("2026-01-10T01:00:00Z")));
        assert_eq!(s.latest_at_or_before(ts("2026-01-10T00:59:59Z")), Some(ts("2026-01-09T01:00:00Z")));
    }

    #[test]
    fn sub_second_now_is_handled_on_both_sides() {
        let s = Schedule::new("0 1 * * *", "UTC").unwrap();
        assert_eq!(s.next_after(ts("2026-01-10T00:59:59.5Z")), Some(ts("2026-01-10T01:00:00Z")));
        assert_eq!(s.next_after(ts("2026-01-10T01:00:00.5Z")), Some(ts("2026-01-11T01:00:00Z")));
    }
}
