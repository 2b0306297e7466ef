//! `[sources.NAME]` and `[[notify]]`: what is protected, where, when and how long it is kept,
//! and who hears about failures.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;

use jiff::SignedDuration;
use toml::Spanned;
use toml::de::DeTable;

use super::reader::{Doc, Table};
use super::{Location, absolute_path, duration};
use crate::schedule::{REFERENCE_SECOND, Schedule, time_zone_named};
use crate::{format_duration, nearest};

/// `[sources.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Its name in the config (and in the API's paths).
    pub name: String,
    /// What it is and where its data is.
    pub kind: SourceKind,
    /// The repository its snapshots go to (a key of [`super::Config::repositories`]).
    pub repository: String,
    /// When its backup runs.
    pub schedule: Schedule,
    /// How long after the scheduled instant a run may still start; `None`: however late.
    pub window: Option<SignedDuration>,
    /// What happens to a run still going when its window ends.
    pub overrun: Overrun,
    /// What `forget` keeps after each backup; `None`: every snapshot is kept.
    pub retention: Option<Retention>,
    /// Repositories each new snapshot is copied to (off-site copies).
    pub copy_to: Vec<String>,
    /// The restore drill, if any.
    pub drill: Option<Drill>,
    /// Alert when the newest backup is older than this; `None`: the daemon derives it from the
    /// schedule and the window.
    pub stale_after: Option<SignedDuration>,
    /// Where `[sources.NAME]` is in the file.
    pub location: Location,
}

/// The kind of a source and its kind-specific fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// `kind = "directory"`: local directories.
    Directory {
        /// `paths`: absolute directories to back up (at least one).
        paths: Vec<PathBuf>,
        /// `exclude`: glob patterns to leave out.
        exclude: Vec<String>,
    },
    /// `kind = "bucket"`: an object-store bucket.
    Bucket {
        /// `url`, e.g. `"s3://bucket/prefix"`.
        url: String,
    },
    /// `kind = "postgres"`: a PostgreSQL cluster.
    Postgres {
        /// `connection`: a libpq connection string.
        connection: String,
    },
}

/// The retention rules of a source, as `forget` reads them: the `keep_*` keys of `retention`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// `keep_last`: the newest N.
    pub last: Option<u32>,
    /// `keep_hourly`: the newest per hour, N hours.
    pub hourly: Option<u32>,
    /// `keep_daily`: the newest per day, N days.
    pub daily: Option<u32>,
    /// `keep_weekly`: the newest per ISO week, N weeks.
    pub weekly: Option<u32>,
    /// `keep_monthly`: the newest per month, N months.
    pub monthly: Option<u32>,
    /// `keep_yearly`: the newest per year, N years.
    pub yearly: Option<u32>,
    /// `keep_within`: every snapshot within this duration of the newest.
    pub within: Option<SignedDuration>,
}

/// What happens to a run still going at the end of its window (`overrun`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overrun {
    /// `"continue"` (the default): let it finish, and record that it overran.
    #[default]
    Continue,
    /// `"cancel"`: stop it, and record it as failed.
    Cancel,
}

/// A restore drill (`drill = { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    /// When it runs (`schedule`; `timezone` defaults to the source's).
    pub schedule: Schedule,
    /// Where restores go (`scratch_dir`); `None`: under the daemon's state directory.
    pub scratch_dir: Option<PathBuf>,
    /// A restore taking longer fails the drill (`max_duration`): the promised recovery time.
    pub max_duration: Option<SignedDuration>,
}

/// An event that notifications are sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// `"job_failed"`.
    JobFailed,
    /// `"window_missed"`: a run could not start inside its window.
    WindowMissed,
    /// `"backup_stale"`: the newest backup is older than the policy allows.
    BackupStale,
    /// `"drill_failed"`.
    DrillFailed,
}

impl Event {
    /// Every event, in config spelling order.
    pub const ALL: [Event; 4] = [Event::JobFailed, Event::WindowMissed, Event::BackupStale, Event::DrillFailed];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::JobFailed => "job_failed",
            Event::WindowMissed => "window_missed",
            Event::BackupStale => "backup_stale",
            Event::DrillFailed => "drill_failed",
        }
    }
}

/// A webhook (`[[notify]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// `url`: where events are POSTed (http or https).
    pub url: String,
    /// `events`: which events; all of them when absent.
    pub events: Vec<Event>,
}

const SOURCE_KEYS: &[&str] = &[
    "kind",
    "paths",
    "exclude",
    "url",
    "connection",
    "repository",
    "schedule",
    "timezone",
    "window",
    "overrun",
    "retention",
    "copy_to",
    "drill",
    "stale_after",
];

const KINDS: [&str; 3] = ["directory", "bucket", "postgres"];

pub(super) fn read_source(
    doc: &mut Doc<'_>,
    name: &Spanned<String>,
    entries: &DeTable<'_>,
    repositories: &BTreeSet<String>,
) -> Option<Source> {
    let table_name = format!("[sources.{}]", name.get_ref());
    let t = Table::open(doc, entries, table_name, name.span(), SOURCE_KEYS);
    let kind = read_kind(doc, &t);
    let repository = t
        .required_string(doc, "repository", "primary")
        .and_then(|r| repository_reference(doc, &t, r, repositories, "repository"));
    let zone = t.string(doc, "timezone");
    let schedule = read_schedule(doc, &t, zone.as_ref());
    let window =
        duration(doc, &t, "window").and_then(|w| check_window(doc, &t, &w, schedule.as_ref()).then(|| *w.get_ref()));
    let overrun = match t.string(doc, "overrun") {
        None => Some(Overrun::Continue),
        Some(o) => match o.get_ref().as_str() {
            "continue" => Some(Overrun::Continue),
            "cancel" => Some(Overrun::Cancel),
            other => {
                doc.error(
                    &o.span(),
                    format!("overrun {other:?} in {} is not known; expected \"continue\" or \"cancel\"", t.name),
                );
                None
            }
        },
    };
    let retention = read_retention(doc, &t);
    let mut copy_to = Vec::new();
    for target in t.strings(doc, "copy_to").unwrap_or_default() {
        if repository.as_deref() == Some(target.get_ref().as_str()) {
            doc.error(
                &target.span(),
                format!(
                    "copy_to in {} names {:?}, the source's own repository; copy to another one",
                    t.name,
                    target.get_ref()
                ),
            );
        } else if copy_to.contains(target.get_ref()) {
            doc.error(&target.span(), format!("copy_to in {} names {:?} twice", t.name, target.get_ref()));
        } else if let Some(r) = repository_reference(doc, &t, target, repositories, "copy_to") {
            copy_to.push(r);
        }
    }
    let drill = read_drill(doc, &t, zone.as_ref());
    let stale_after = duration(doc, &t, "stale_after").map(Spanned::into_inner);
    let (line, column) = doc.position(name.span().start);
    Some(Source {
        name: name.get_ref().clone(),
        kind: kind?,
        repository: repository?,
        schedule: schedule?,
        window,
        overrun: overrun?,
        retention: retention?,
        copy_to,
        drill: drill?,
        stale_after,
        location: Location { line, column },
    })
}

fn read_kind(doc: &mut Doc<'_>, t: &Table<'_, '_>) -> Option<SourceKind> {
    let kind = t.required_string(doc, "kind", "directory")?;
    let wrong_kind = |doc: &mut Doc<'_>, key: &str, for_kind: &str| {
        if let Some((span, _)) = t.entry(key) {
            doc.error(&span, format!("'{key}' in {} is for kind = {for_kind:?}; remove it", t.name));
        }
    };
    match kind.get_ref().as_str() {
        "directory" => {
            wrong_kind(doc, "url", "bucket");
            wrong_kind(doc, "connection", "postgres");
            let paths = t.strings(doc, "paths");
            if paths.as_ref().is_none_or(Vec::is_empty) {
                doc.error(
                    &t.span,
                    format!("{} of kind \"directory\" needs paths; add e.g. paths = [\"/srv/uploads\"]", t.name),
                );
            }
            let mut absolute = Vec::new();
            for p in paths.unwrap_or_default() {
                absolute.extend(absolute_path(doc, t, "path", p));
            }
            let exclude = t.strings(doc, "exclude").unwrap_or_default();
            Some(SourceKind::Directory {
                paths: absolute,
                exclude: exclude.into_iter().map(Spanned::into_inner).collect(),
            })
        }
        "bucket" => {
            wrong_kind(doc, "paths", "directory");
            wrong_kind(doc, "exclude", "directory");
            wrong_kind(doc, "connection", "postgres");
            let url = t.required_string(doc, "url", "s3://bucket/prefix")?;
            Some(SourceKind::Bucket { url: url.into_inner() })
        }
        "postgres" => {
            wrong_kind(doc, "paths", "directory");
            wrong_kind(doc, "exclude", "directory");
            wrong_kind(doc, "url", "bucket");
            let connection = t.required_string(doc, "connection", "host=/run/postgresql user=postgres")?;
            Some(SourceKind::Postgres { connection: connection.into_inner() })
        }
        other => {
            let hint = nearest(other, KINDS).map(|k| format!("did you mean {k:?}? ")).unwrap_or_default();
            doc.error(
                &kind.span(),
                format!("unknown kind {other:?} in {}; {hint}expected one of: {}", t.name, KINDS.join(", ")),
            );
            None
        }
    }
}

fn repository_reference(
    doc: &mut Doc<'_>,
    t: &Table<'_, '_>,
    name: Spanned<String>,
    repositories: &BTreeSet<String>,
    key: &str,
) -> Option<String> {
    if repositories.contains(name.get_ref()) {
        return Some(name.into_inner());
    }
    let source = t.name.trim_start_matches("[sources.").trim_end_matches(']');
    let defined: Vec<&str> = repositories.iter().map(String::as_str).collect();
    let hint = match nearest(name.get_ref(), defined.iter().copied()) {
        Some(near) => format!("did you mean {near:?}? "),
        None => String::new(),
    };
    let defined =
        if defined.is_empty() { "none; add a [repositories.NAME] table".to_string() } else { defined.join(", ") };
    doc.error(
        &name.span(),
        format!(
            "source {source:?} names {} {:?} which is not defined; {hint}defined: {defined}",
            if key == "repository" { "repository" } else { "copy_to repository" },
            name.get_ref()
        ),
    );
    None
}

/// `schedule` with `timezone` (given, or UTC), each problem reported at its own value.
fn read_schedule(doc: &mut Doc<'_>, t: &Table<'_, '_>, zone: Option<&Spanned<String>>) -> Option<Schedule> {
    let expression = t.required_string(doc, "schedule", "0 1 * * *");
    schedule_at(doc, expression.as_ref(), zone)
}

fn schedule_at(
    doc: &mut Doc<'_>,
    expression: Option<&Spanned<String>>,
    zone: Option<&Spanned<String>>,
) -> Option<Schedule> {
    let zone_ok = match zone {
        None => true,
        Some(z) => match time_zone_named(z.get_ref()) {
            Ok(_) => true,
            Err(e) => {
                doc.error(&z.span(), e.to_string());
                false
            }
        },
    };
    let expression = expression?;
    let zone_name = match zone {
        Some(z) if zone_ok => z.get_ref().as_str(),
        _ => "UTC",
    };
    match Schedule::new(expression.get_ref(), zone_name) {
        Ok(s) => zone_ok.then_some(s),
        Err(e) => {
            doc.error(&expression.span(), e.to_string());
            None
        }
    }
}

/// A window must be positive and no longer than the shortest time between two runs, measured
/// on the wall clock (in UTC), so that one run's window never reaches into the next run.
fn check_window(
    doc: &mut Doc<'_>,
    t: &Table<'_, '_>,
    window: &Spanned<SignedDuration>,
    schedule: Option<&Schedule>,
) -> bool {
    let w = *window.get_ref();
    if w <= SignedDuration::ZERO {
        doc.error(&window.span(), format!("window in {} must be longer than 0s, e.g. \"1h\"", t.name));
        return false;
    }
    let Some(schedule) = schedule else {
        return true;
    };
    let from = jiff::Timestamp::from_second(REFERENCE_SECOND).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    match schedule.in_utc().shortest_interval(from) {
        Some((period, _)) if w > period => {
            doc.error(
                &window.span(),
                format!(
                    "window {} in {} is longer than the time between two runs of {:?} ({}); \
                     shorten the window to at most {} or schedule runs further apart",
                    format_duration(w),
                    t.name,
                    schedule.expression(),
                    format_duration(period),
                    format_duration(period)
                ),
            );
            false
        }
        _ => true,
    }
}

fn read_retention(doc: &mut Doc<'_>, t: &Table<'_, '_>) -> Option<Option<Retention>> {
    let Some((entries, span)) = t.table(doc, "retention") else {
        return Some(None);
    };
    let keys = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within"];
    let r = Table::open(doc, entries, format!("retention in {}", t.name), span.clone(), &keys);
    let count = |doc: &mut Doc<'_>, key| r.count(doc, key).map(Spanned::into_inner);
    let retention = Retention {
        last: count(doc, "keep_last"),
        hourly: count(doc, "keep_hourly"),
        daily: count(doc, "keep_daily"),
        weekly: count(doc, "keep_weekly"),
        monthly: count(doc, "keep_monthly"),
        yearly: count(doc, "keep_yearly"),
        within: duration(doc, &r, "keep_within").map(Spanned::into_inner),
    };
    if entries.is_empty() {
        doc.error(
            &span,
            format!(
                "retention in {} has no rule; add e.g. keep_daily = 14, or remove retention to keep every snapshot",
                t.name
            ),
        );
        return None;
    }
    Some(Some(retention))
}

fn read_drill(doc: &mut Doc<'_>, t: &Table<'_, '_>, source_zone: Option<&Spanned<String>>) -> Option<Option<Drill>> {
    let Some((entries, span)) = t.table(doc, "drill") else {
        return Some(None);
    };
    let d = Table::open(
        doc,
        entries,
        format!("drill in {}", t.name),
        span,
        &["schedule", "timezone", "scratch_dir", "max_duration"],
    );
    let expression = d.required_string(doc, "schedule", "0 3 * * 0");
    let zone = d.string(doc, "timezone");
    let schedule = schedule_at(doc, expression.as_ref(), zone.as_ref().or(source_zone));
    let scratch_dir = d.string(doc, "scratch_dir").map(|s| absolute_path(doc, &d, "scratch_dir", s));
    let max_duration = duration(doc, &d, "max_duration").map(Spanned::into_inner);
    Some(Some(Drill {
        schedule: schedule?,
        scratch_dir: match scratch_dir {
            None => None,
            Some(checked) => Some(checked?),
        },
        max_duration,
    }))
}

pub(super) fn read_notify(doc: &mut Doc<'_>, span: Range<usize>, entries: &DeTable<'_>) -> Option<Notify> {
    let t = Table::open(doc, entries, "[[notify]]".into(), span, &["url", "events"]);
    let url = t.required_string(doc, "url", "https://hooks.example.com/tidemark")?;
    let lower = url.get_ref().to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) || lower.contains(char::is_whitespace) {
        doc.error(
            &url.span(),
            format!(
                "url {:?} in [[notify]] is not an http(s) URL; write e.g. \"https://hooks.example.com/tidemark\"",
                url.get_ref()
            ),
        );
        return None;
    }
    let mut events = Vec::new();
    match t.strings(doc, "events") {
        None => events.extend(Event::ALL),
        Some(list) => {
            for e in list {
                match Event::ALL.iter().find(|k| k.as_str() == e.get_ref()) {
                    Some(k) if !events.contains(k) => events.push(*k),
                    Some(_) => {}
                    None => {
                        let names = Event::ALL.map(Event::as_str);
                        let hint =
                            nearest(e.get_ref(), names).map(|n| format!("did you mean {n:?}? ")).unwrap_or_default();
                        doc.error(
                            &e.span(),
                            format!(
                                "unknown event {:?} in [[notify]]; {hint}expected one of: {}",
                                e.get_ref(),
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    Some(Notify { url: url.into_inner(), events })
}
