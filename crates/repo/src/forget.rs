//! `forget`: which snapshots a retention policy keeps. [`plan`] is a pure function of the snapshots,
//! the policy and the time zone; [`Repository::forget`] executes a plan.
//!
//! Semantics follow restic: snapshots are grouped by host, paths and source; within a group, newest
//! first, `--keep-last N` keeps the N newest; `--keep-daily N` keeps the newest snapshot of each of the
//! N most recent days that have one (likewise hourly/weekly/monthly/yearly, in the given time zone);
//! `--keep-within D` keeps every snapshot taken within D of the group's newest; `--keep-tag T` keeps
//! tagged ones. A snapshot is removed only when no rule keeps it. An empty policy removes nothing.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tidemark_format::Id;
use tidemark_format::objects::Snapshot;

use std::collections::BTreeMap;

use crate::{Repository, Result};

/// Retention rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Newest N.
    pub last: Option<u32>,
    /// Newest per hour, N hours.
    pub hourly: Option<u32>,
    /// Newest per day.
    pub daily: Option<u32>,
    /// Newest per ISO week.
    pub weekly: Option<u32>,
    /// Newest per month.
    pub monthly: Option<u32>,
    /// Newest per year.
    pub yearly: Option<u32>,
    /// All within this duration of the newest.
    pub within: Option<SignedDuration>,
    /// All carrying any of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// No rule at all (forget refuses to run such a policy rather than remove everything).
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: Id,
    /// Its time.
    pub time: Timestamp,
    /// Kept?
    pub keep: bool,
    /// Which rules keep it (`last`, `daily`, `within`, ...).
    pub reasons: Vec<String>,
}

/// A group of related snapshots and the verdicts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Host.
    pub host: String,
    /// Paths.
    pub paths: Vec<String>,
    /// Source name, if any.
    pub source: Option<String>,
    /// Verdicts, newest first.
    pub decisions: Vec<Decision>,
}

/// Apply `policy` to `snapshots` (any order).
pub fn plan(snapshots: &[(Id, Snapshot)], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for entry in snapshots {
        let s = &entry.1;
        let mut paths = s.paths.clone();
        paths.sort();
        groups.entry((s.hostname.clone(), paths, s.source.clone())).or_default().push(entry);
    }
    groups
        .into_iter()
        .map(|((host, paths, source), mut list)| {
            list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
            Group { host, paths, source, decisions: decide(&list, policy, tz) }
        })
        .collect()
}

/// Host, sorted paths, source.
type GroupKey = (String, Vec<String>, Option<String>);

type Bucketer = fn(&jiff::ZonedDateTime, usize) -> String;

fn decide(list: &[&(Id, Snapshot)], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Decision> {
    let rules: [(&str, Option<u32>, Bucketer); 6] = [
        ("last", policy.last, |_, n| n.to_string()),
        ("hourly", policy.hourly, |z, _| z.strftime("%Y-%m-%d %H").to_string()),
        ("daily", policy.daily, |z, _| z.strftime("%Y-%m-%d").to_string()),
        ("weekly", policy.weekly, |z, _| {
            let w = z.iso_week_date();
            format!("{}-{}", w.year(), w.week())
        }),
        ("monthly", policy.monthly, |z, _| z.strftime("%Y-%m").to_string()),
        ("yearly", policy.yearly, |z, _| z.strftime("%Y").to_string()),
    ];
    let mut remaining: Vec<u32> = rules.iter().map(|r| r.1.unwrap_or(0)).collect();
    let mut last: Vec<Option<String>> = vec![None; rules.len()];
    let newest = list.first().map(|e| e.1.time);
    list.iter()
        .enumerate()
        .map(|(n, (id, s))| {
            let zoned = s.time.to_zoned_datetime(tz.clone());
            let mut reasons = Vec::new();
            for (i, (name, _, bucket)) in rules.iter().enumerate() {
                if remaining[i] == 0 {
                    continue;
                }
                let key = bucket(&zoned, n);
                if last[i].as_ref() != Some(&key) {
                    remaining[i] -= 1;
                    last[i] = Some(key);
                    reasons.push((*name).to_string());
                }
            }
            if let (Some(within), Some(newest)) = (policy.within, newest)
                && newest.duration_since(s.time) <= within
            {
                reasons.push("within".into());
            }
            if s.tags.iter().any(|t| policy.tags.contains(t)) {
                reasons.push("tag".into());
            }
            Decision { id: *id, time: s.time, keep: !reasons.is_empty(), reasons }
        })
        .collect()
}

impl Repository {
    /// Remove the snapshots a plan does not keep; returns their ids. Refuses an empty policy's plan
    /// only at the caller; here every `keep == false` decision is executed, except for snapshots
    /// the storage still retains (S3 Object Lock), which cannot be deleted yet: they are left out
    /// (and not in the result), and a later `forget` removes them.
    pub fn forget(&self, groups: &[Group]) -> Result<Vec<Id>> {
        let _lock = self.lock("forget", false)?;
        let now = std::time::SystemTime::now();
        let mut removed = Vec::new();
        for d in groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep) {
            if let Some(r) = self.storage().retention()
                && r.retained_until(&format!("{}{}", crate::repository::SNAPSHOTS, d.id))?.is_some_and(|u| u > now)
            {
                continue;
            }
            self.remove_snapshot(&d.id)?;
            removed.push(d.id);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_format::objects::Snapshot;

    fn snap(n: u8, time: &str, tags: &[&str]) -> (Id, Snapshot) {
        (
            Id::from_bytes([n; 32]),
            Snapshot {
                time: time.parse().unwrap(),
                hostname: "h".into(),
                username: "u".into(),
                kind: "directory".into(),
                source: None,
                paths: vec!["/data".into()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                tree: Id::default(),
                program: "t".into(),
                summary: None,
                extra: Default::default(),
            },
        )
    }

    fn kept(groups: &[Group]) -> Vec<u8> {
        let mut v: Vec<u8> =
            groups.iter().flat_map(|g| &g.decisions).filter(|d| d.keep).map(|d| d.id.as_bytes()[0]).collect();
        v.sort();
        v
    }

    fn series() -> Vec<(Id, Snapshot)> {
        vec![
            snap(1, "2026-01-01T01:00:00Z", &[]),
            snap(2, "2026-01-01T13:00:00Z", &[]),
            snap(3, "2026-01-02T01:00:00Z", &[]),
            snap(4, "2026-01-09T01:00:00Z", &["keep"]),
            snap(5, "2026-02-01T01:00:00Z", &[]),
            snap(6, "2026-02-01T02:00:00Z", &[]),
        ]
    }

    #[test]
    fn empty_policy_keeps_nothing_and_is_detected() {
        let p = KeepPolicy::default();
        assert!(p.is_empty());
        assert!(kept(&plan(&series(), &p, &TimeZone::UTC)).is_empty());
    }

    #[test]
    fn keep_last_and_daily() {
        let p = KeepPolicy { last: Some(2), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![5, 6]);
        let p = KeepPolicy { daily: Some(3), ..Default::default() };
        // newest per day: 6 (02-01), 4 (01-09), 3 (01-02)
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![3, 4, 6]);
    }

    #[test]
    fn daily_buckets_follow_the_time_zone() {
        // 01-01T13:00Z and 01-02T01:00Z are the same day in UTC-12 (Etc/GMT+12).
        let tz = TimeZone::get("Etc/GMT+12").unwrap();
        let p = KeepPolicy { daily: Some(10), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &tz)), vec![1, 3, 4, 6]);
    }

    #[test]
    fn monthly_weekly_yearly_within_and_tags() {
        let p = KeepPolicy { monthly: Some(2), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![4, 6]);
        let p = KeepPolicy { yearly: Some(5), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![6]);
        let p = KeepPolicy { weekly: Some(2), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![4, 6]);
        let p = KeepPolicy { within: Some(SignedDuration::from_hours(24 * 24)), ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![4, 5, 6]);
        let p = KeepPolicy { tags: vec!["keep".into()], ..Default::default() };
        assert_eq!(kept(&plan(&series(), &p, &TimeZone::UTC)), vec![4]);
    }

    #[test]
    fn groups_by_host_and_paths() {
        let mut list = series();
        list[0].1.hostname = "other".into();
        let p = KeepPolicy { last: Some(1), ..Default::default() };
        let groups = plan(&list, &p, &TimeZone::UTC);
        assert_eq!(groups.len(), 2);
        assert_eq!(kept(&groups), vec![1, 6]);
    }

    proptest::proptest! {
        #[test]
        fn keep_last_n_keeps_exactly_min_n_len(n in 0u32..10, count in 0usize..12) {
            let list: Vec<_> = (0..count).map(|i| {
                let t = format!("2026-03-{:02}T00:00:00Z", i + 1);
                snap(i as u8, &t, &[])
            }).collect();
            let p = KeepPolicy { last: Some(n), ..Default::default() };
            let k = kept(&plan(&list, &p, &TimeZone::UTC));
            proptest::prop_assert_eq!(k.len(), (n as usize).min(count));
        }
    }
}
