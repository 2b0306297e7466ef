//! `GET /metrics`: the Prometheus text exposition (format 0.0.4), built from the daemon's
//! sources, policy and jobs on each scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use tidemark_service_core::{JobFilter, JobKind, JobRecord, JobStatus, PolicyRow, SourceStatus};

use crate::error::ApiError;
use crate::{Api, call};

pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let (sources, policy, jobs) =
        call(&api, |c| Ok((c.sources()?, c.policy()?, c.jobs(&JobFilter::default())?))).await?;
    let text = render(&sources, &policy, &jobs, api.now());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// One metric family being written.
struct Family<'o> {
    out: &'o mut String,
}

impl<'o> Family<'o> {
    fn new(out: &'o mut String, name: &str, kind: &str, help: &str) -> Family<'o> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(text));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The exposition text for these records at `now`.
pub(crate) fn render(sources: &[SourceStatus], policy: &[PolicyRow], jobs: &[JobRecord], now: Timestamp) -> String {
    let mut out = String::new();
    Family::new(&mut out, "tidemark_up", "gauge", "1 while the daemon answers.").sample("tidemark_up", &[], 1.0);

    let mut f = Family::new(&mut out, "tidemark_source_health", "gauge", "1 for the source's current health.");
    for s in sources {
        f.sample("tidemark_source_health", &[("source", &s.name), ("health", &s.health)], 1.0);
    }

    let mut last_success: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.kind == JobKind::Backup && j.status == JobStatus::Succeeded) {
        if let Some(finished) = job.finished {
            let entry = last_success.entry(&job.source).or_insert(finished);
            *entry = (*entry).max(finished);
        }
    }
    let name = "tidemark_last_backup_success_timestamp_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Unix time the newest successful backup of the source finished.");
    for (source, time) in &last_success {
        f.sample(name, &[("source", source)], seconds(*time));
    }

    let name = "tidemark_newest_snapshot_timestamp_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Unix time the source's newest snapshot was taken.");
    for s in sources {
        if let Some(t) = s.newest_snapshot {
            f.sample(name, &[("source", &s.name)], seconds(t));
        }
    }
    let name = "tidemark_newest_snapshot_age_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Seconds since the source's newest snapshot was taken.");
    for s in sources {
        if let Some(t) = s.newest_snapshot {
            f.sample(name, &[("source", &s.name)], now.duration_since(t).as_secs_f64());
        }
    }
    let name = "tidemark_next_backup_timestamp_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Unix time of the source's next scheduled backup.");
    for s in sources {
        if let Some(t) = s.next_backup {
            f.sample(name, &[("source", &s.name)], seconds(t));
        }
    }

    let mut counts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for job in jobs {
        *counts.entry((&job.source, job.kind.as_str(), status_name(job.status))).or_default() += 1;
    }
    let name = "tidemark_jobs";
    let mut f = Family::new(&mut out, name, "gauge", "Jobs in the catalog by source, kind and status.");
    for ((source, kind, status), count) in &counts {
        f.sample(name, &[("source", source), ("kind", kind), ("status", status)], *count as f64);
    }

    let drills: Vec<_> =
        policy.iter().filter_map(|row| Some((row.source.as_str(), row.last_drill.as_ref()?))).collect();
    let name = "tidemark_drill_duration_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Restore time measured by the source's last drill.");
    for (source, drill) in &drills {
        f.sample(name, &[("source", source)], drill.restore_seconds);
    }
    let name = "tidemark_drill_success";
    let mut f = Family::new(&mut out, name, "gauge", "1 if the source's last drill restored and verified, else 0.");
    for (source, drill) in &drills {
        f.sample(name, &[("source", source)], if drill.ok { 1.0 } else { 0.0 });
    }
    let name = "tidemark_drill_timestamp_seconds";
    let mut f = Family::new(&mut out, name, "gauge", "Unix time the source's last drill finished.");
    for (source, drill) in &drills {
        f.sample(name, &[("source", source)], seconds(drill.time));
    }
    out
}

fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Interrupted => "interrupted",
        JobStatus::Missed => "missed",
        JobStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        Family::new(&mut out, "m", "gauge", "h").sample("m", &[("source", "a\"b\\c\nd")], 1.5);
        assert_eq!(out, "# HELP m h\n# TYPE m gauge\nm{source=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
