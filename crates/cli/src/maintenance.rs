//! Keeping a repository healthy: `check`, `forget`, `prune`, `stats`, `unlock`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Result;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span};
use tidemark_format::Id;
use tidemark_format::objects::Snapshot;
use tidemark_repo::check::{CheckOptions, CheckReport};
use tidemark_repo::forget::{self, Group, KeepPolicy};
use tidemark_repo::prune::{PruneOptions, PruneReport};
use tidemark_repo::{Repository, stats};

use crate::args::{CheckArgs, ForgetArgs, Global, PruneArgs, UnlockArgs};
use crate::exit::{Status, UserError};
use crate::open;
use crate::output::{Out, bytes, local_time, table};
use crate::progress::Bar;
use crate::restore::filter;

/// Parse `--keep-within`: `36h`, `14d`, `2w`, `6mo`, `1y`, `1y6mo`, `14 days` (jiff's friendly
/// format). Days are 24 hours; months and years count from today.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let span: Span =
        text.trim().parse().map_err(|e| format!("{text:?} is not a duration like 36h, 14d, 2w, 6mo, 1y: {e}"))?;
    if span.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    span.to_duration(jiff::ZonedDateTime::now().date()).map_err(|e| format!("{text:?}: {e}"))
}

/// Run `check`.
pub fn run_check(global: &Global, args: &CheckArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    check(&repo, args.read_data, out)
}

/// Check `repo`, print the report, and say whether it found errors (also used by `demo`).
pub fn check(repo: &Repository, read_data: bool, out: &Out) -> Result<Status> {
    out.info(format!(
        "checking repository at {}{}",
        repo.storage().location(),
        if read_data { ", reading all data" } else { "" }
    ))?;
    let bar = Arc::new(Bar::new(out, "check"));
    let report = repo.check(CheckOptions { read_data }, bar.clone())?;
    bar.finish();
    // Best effort: name affected snapshots with their time and paths.
    let snapshots: HashMap<Id, Snapshot> = repo.snapshots().map(|l| l.into_iter().collect()).unwrap_or_default();
    print_check(&report, &snapshots, out)?;
    if report.is_ok() {
        Ok(Status::Ok)
    } else {
        eprintln!("Fatal: the repository has {} error(s); see above", report.errors.len());
        Ok(Status::Failed)
    }
}

fn describe_snapshot(id: &Id, snapshots: &HashMap<Id, Snapshot>) -> String {
    match snapshots.get(id) {
        Some(s) => format!("{} ({} {})", id.short(), local_time(s.time), s.paths.join(",")),
        None => id.short(),
    }
}

fn print_check(report: &CheckReport, snapshots: &HashMap<Id, Snapshot>, out: &Out) -> Result<()> {
    if out.json {
        return out.json_value(report);
    }
    for w in &report.warnings {
        out.warn(w);
    }
    for p in &report.errors {
        out.line(format!("error: {} {}: {}", p.kind, p.object, p.detail))?;
        if p.snapshots.is_empty() {
            out.line("  no snapshot is affected")?;
        } else {
            let names: Vec<String> = p.snapshots.iter().map(|id| describe_snapshot(id, snapshots)).collect();
            out.line(format!("  affected snapshots: {}", names.join(", ")))?;
        }
    }
    out.info(format!(
        "checked {} snapshots, {} packs, {} blobs{}",
        report.snapshots,
        report.packs,
        report.blobs,
        if report.read_data { " (all data read)" } else { "" }
    ))?;
    if report.is_ok() {
        out.info("no errors were found")?;
    }
    Ok(())
}

fn policy(args: &ForgetArgs) -> KeepPolicy {
    KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
        tags: args.keep_tags.clone(),
    }
}

fn print_plan(groups: &[Group], out: &Out) -> Result<()> {
    for g in groups {
        out.line(format!(
            "snapshots of host {:?}, paths [{}]{}:",
            g.host,
            g.paths.join(", "),
            g.source.as_ref().map(|s| format!(", source {s}")).unwrap_or_default()
        ))?;
        let rows: Vec<Vec<String>> = g
            .decisions
            .iter()
            .map(|d| {
                vec![
                    d.id.short(),
                    local_time(d.time),
                    if d.keep { "keep".into() } else { "remove".into() },
                    d.reasons.join(","),
                ]
            })
            .collect();
        out.line(table(&["ID", "Time", "Verdict", "Reasons"], &rows))?;
        out.line("")?;
    }
    Ok(())
}

/// Run `forget`.
pub fn run_forget(global: &Global, args: &ForgetArgs, out: &Out) -> Result<Status> {
    let policy = policy(args);
    if policy.is_empty() {
        return Err(UserError::new(
            "refusing to forget without a keep option: that would remove every snapshot",
            "give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, \
             --keep-yearly, --keep-within, --keep-tag",
        )
        .into());
    }
    let repo = open::open(global)?;
    let f = filter(&args.filter);
    let list = crate::snapshots::matching(&repo, &f, args.source.as_deref())?;
    // PostgreSQL base backups follow their source's retention, which also deletes the WAL no
    // retained backup needs and keeps --keep-within's promise.
    let (base_backups, list): (Vec<_>, Vec<_>) = list.into_iter().partition(|(_, s)| crate::pg::is_base_backup(s));
    let pg_sources: BTreeSet<String> = base_backups.iter().filter_map(|(_, s)| s.source.clone()).collect();
    let mut pg_outcomes = Vec::new();
    for pg_source in &pg_sources {
        pg_outcomes.push(crate::pg::forget_source(&repo, pg_source, &policy, &f, args.dry_run, out)?);
    }
    let groups = forget::plan(&list, &policy, &TimeZone::system());
    let pg_doomed: usize = pg_outcomes.iter().map(|o| o.plan.doomed().count()).sum();
    let doomed = groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep).count() + pg_doomed;
    if !out.json && !out.quiet {
        print_plan(&groups, out)?;
    }
    let mut removed = if args.dry_run || doomed == pg_doomed { Vec::new() } else { repo.forget(&groups)? };
    if !args.dry_run && removed.len() < doomed - pg_doomed {
        out.warn(format!(
            "{} snapshot(s) are kept for now: still under Object Lock retention; a later forget removes them",
            doomed - pg_doomed - removed.len()
        ));
    }
    removed.extend(pg_outcomes.iter().flat_map(|o| o.removed.iter().copied()));
    let prune_report = if args.prune && !args.dry_run { Some(prune(&repo, false, out)?) } else { None };
    if out.json {
        out.json_value(&serde_json::json!({
            "dry_run": args.dry_run,
            "groups": groups,
            "postgres": pg_sources.iter().zip(&pg_outcomes).map(|(s, o)| crate::pg::forget_json(s, o)).collect::<Vec<_>>(),
            "removed": removed,
            "prune": prune_report,
        }))?;
    } else if args.dry_run {
        out.line(format!("would remove {doomed} snapshot(s) (dry run: nothing was changed)"))?;
        if args.prune {
            out.info("--prune is skipped in a dry run; run `tidemark prune --dry-run` after forgetting")?;
        }
    } else {
        out.line(format!("removed {} snapshot(s)", removed.len()))?;
        if let Some(report) = &prune_report {
            print_prune(report, out)?;
        }
    }
    Ok(Status::Ok)
}

fn prune(repo: &Repository, dry_run: bool, out: &Out) -> Result<PruneReport> {
    let bar = Arc::new(Bar::new(out, "prune"));
    let report = repo.prune(PruneOptions { dry_run, ..Default::default() }, bar.clone())?;
    bar.finish();
    Ok(report)
}

fn print_prune(r: &PruneReport, out: &Out) -> Result<()> {
    let verb = if r.dry_run { "would" } else { "did" };
    out.line(format!(
        "prune {verb}: delete {} pack(s), repack {}, keep {}; remove {} unused blob(s) of {} in use; free {}",
        r.packs_deleted.len(),
        r.packs_repacked.len(),
        r.packs_kept,
        r.blobs_removed,
        r.blobs_used,
        bytes(r.bytes_freed)
    ))?;
    if !r.packs_spared.is_empty() {
        out.line(format!("{} pack(s) were spared: a backup written meanwhile uses them", r.packs_spared.len()))?;
    }
    if !r.packs_retained.is_empty() || r.index_files_retained > 0 {
        out.line(format!(
            "{} pack(s) and {} old index file(s) are kept: still under Object Lock retention; a later prune removes them",
            r.packs_retained.len(),
            r.index_files_retained
        ))?;
    }
    if r.stale_locks_removed > 0 {
        out.line(format!("removed {} stale lock(s)", r.stale_locks_removed))?;
    }
    Ok(())
}

/// Run `prune`.
pub fn run_prune(global: &Global, args: &PruneArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let report = prune(&repo, args.dry_run, out)?;
    if out.json {
        out.json_value(&report)?
    } else {
        print_prune(&report, out)?
    }
    Ok(Status::Ok)
}

/// Print `stats` of `repo` (also used by `demo`).
pub fn print_stats(st: &stats::RepoStats, out: &Out) -> Result<()> {
    if out.json {
        return out.json_value(st);
    }
    out.line(format!("Snapshots:            {}", st.snapshots))?;
    out.line(format!("Files in snapshots:   {}", st.total_files))?;
    out.line(format!("Restore size:         {}", bytes(st.total_size)))?;
    out.line(format!("Unique data:          {} in {} blobs", bytes(st.raw_size), st.blobs))?;
    out.line(format!("Packed (compressed):  {} in {} packs", bytes(st.packed_size), st.packs))?;
    out.line(format!("Repository size:      {}", bytes(st.storage_size)))?;
    out.line(format!("Compression ratio:    {:.2}x", st.compression_ratio))?;
    out.line(format!("Space saving ratio:   {:.2}x (restore size / repository size)", st.space_saving_ratio))?;
    Ok(())
}

/// Run `stats`.
pub fn run_stats(global: &Global, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    print_stats(&repo.stats()?, out)?;
    Ok(Status::Ok)
}

/// Run `unlock`.
pub fn run_unlock(global: &Global, args: &UnlockArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let removed = if args.remove_all { repo.remove_all_locks()? } else { repo.unlock_stale()? };
    if out.json {
        out.json_value(&serde_json::json!({ "removed": removed }))?;
    } else {
        out.line(format!("removed {removed} lock(s)"))?;
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h").unwrap(), SignedDuration::from_hours(36));
        assert_eq!(parse_duration("14d").unwrap(), SignedDuration::from_hours(14 * 24));
        assert_eq!(parse_duration("2w").unwrap(), SignedDuration::from_hours(14 * 24));
        assert_eq!(parse_duration("14 days").unwrap(), SignedDuration::from_hours(14 * 24));
        let year = parse_duration("1y").unwrap();
        assert!(year >= SignedDuration::from_hours(365 * 24) && year <= SignedDuration::from_hours(366 * 24));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3d").is_err());
    }
}
