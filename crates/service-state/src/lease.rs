//! The rules every catalog shares: when a claim is granted, and how job lists are ordered.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_service_core::api::{Claim, JobFilter, JobRecord, RunKey};

/// What a catalog remembers about one scheduled run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// The owner that holds (or completed) the run.
    pub owner: String,
    /// The end of its lease; `None` for a run completed without having been claimed.
    pub until: Option<Timestamp>,
    /// Complete: never granted again.
    pub done: bool,
}

/// Whether a lease ending at `until` has ended at `now`: a lease covers `[claim, until)`.
pub(crate) fn ended(until: Option<Timestamp>, now: Timestamp) -> bool {
    until.is_none_or(|until| until <= now)
}

/// The answer to a claim of a run whose current lease is `existing`, and the lease to store when
/// it is granted.
pub(crate) fn decide(
    existing: Option<&Lease>,
    owner: &str,
    until: Timestamp,
    now: Timestamp,
) -> (Claim, Option<Lease>) {
    let granted = || (Claim::Granted, Some(Lease { owner: owner.to_string(), until: Some(until), done: false }));
    match existing {
        None => granted(),
        Some(lease) if lease.done => (Claim::Done, None),
        Some(lease) if lease.owner == owner || ended(lease.until, now) => granted(),
        Some(lease) => {
            // `ended` is false, so `until` is set.
            let until = lease.until.unwrap_or(now);
            (Claim::HeldBy { owner: lease.owner.clone(), until }, None)
        }
    }
}

/// The lease stored by [`Catalog::complete`](tidemark_service_core::api::Catalog::complete).
pub(crate) fn completed(existing: Option<&Lease>, owner: &str) -> Lease {
    Lease { owner: owner.to_string(), until: existing.and_then(|l| l.until), done: true }
}

/// A run's key as one string: `source`, kind and the RFC 3339 instant, separated by NUL bytes
/// (config names cannot hold one).
pub(crate) fn run_key(run: &RunKey) -> String {
    format!("{}\0{}\0{}", run.source, run.kind.as_str(), run.scheduled_for)
}

/// Sorts `jobs` newest first (by `created`, then id, descending) and applies the filter's limit.
pub(crate) fn newest_first(mut jobs: Vec<JobRecord>, filter: &JobFilter) -> Vec<JobRecord> {
    jobs.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    if let Some(limit) = filter.limit {
        jobs.truncate(limit);
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn claim_rules() {
        let now = ts("2026-01-10T19:30:00Z");
        let until = ts("2026-01-10T19:35:00Z");
        let (claim, lease) = decide(None, "a", until, now);
        assert_eq!(claim, Claim::Granted);
        let lease = lease.unwrap();
        // Another owner while the lease runs: held; at its end: taken over.
        assert_eq!(decide(Some(&lease), "b", until, now).0, Claim::HeldBy { owner: "a".into(), until });
        assert_eq!(decide(Some(&lease), "b", ts("2026-01-10T19:40:00Z"), until).0, Claim::Granted);
        // The holder renews.
        assert_eq!(decide(Some(&lease), "a", ts("2026-01-10T19:40:00Z"), now).0, Claim::Granted);
        // Done is forever, for everyone.
        let done = completed(Some(&lease), "a");
        assert_eq!(decide(Some(&done), "a", until, now).0, Claim::Done);
        assert_eq!(decide(Some(&done), "b", until, ts("2030-01-01T00:00:00Z")).0, Claim::Done);
    }
}
