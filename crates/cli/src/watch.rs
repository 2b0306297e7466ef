//! `tidemark watch`: continuous mode. Backs up a directory or bucket every DURATION, each run
//! against the previous run's snapshot, so that a run where little changed reads little (unchanged
//! files by size and times, unchanged objects by ETag, size and last-modified) and stores almost
//! nothing.
//!
//! Runs start on a fixed grid (start, start + every, ...): a run that takes longer than the
//! interval delays the next one to the next free slot instead of piling up. A failed run is
//! reported and the loop goes on; the repository is opened again for the next run. Only a wrong
//! password stops it, since no later run could succeed. Ctrl-C ends the process: a run in progress
//! commits nothing, and the lock it leaves is stale (`tidemark unlock` removes it, and other
//! commands ignore it once it expires).

use std::time::{Duration, Instant};

use anyhow::Result;
use tidemark_format::Id;
use tidemark_repo::Repository;

use crate::args::{Global, WatchArgs};
use crate::exit::{self, Status};
use crate::output::{Out, local_time};
use crate::{backup, bucket, open};

/// `--every`: a positive duration such as `30s`, `5m`, `1h30m` or `1d`.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration = crate::maintenance::parse_duration(text)?;
    let duration = Duration::try_from(duration).map_err(|e| format!("{text:?}: {e}"))?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?} is too short: the interval is at least 1s"));
    }
    Ok(duration)
}

/// How long to wait after `elapsed` (since the first run started) for the next slot of the grid.
fn until_next_slot(elapsed: Duration, every: Duration) -> Duration {
    let slots = elapsed.as_nanos() / every.as_nanos().max(1) + 1;
    let next = every.saturating_mul(u32::try_from(slots).unwrap_or(u32::MAX));
    next.saturating_sub(elapsed)
}

/// Run `watch`.
pub fn run(global: &Global, args: &WatchArgs, out: &Out) -> Result<Status> {
    // Usage errors before the first run.
    let url = bucket::backup_url(&args.backup)?;
    let what = url
        .clone()
        .unwrap_or_else(|| args.backup.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    let mut backup_args = args.backup.clone();
    let mut repo: Option<Repository> = None;
    let started = Instant::now();
    let mut runs = 0u64;
    loop {
        runs += 1;
        out.info(format!("run {runs}: backing up {what} at {}", local_time(jiff::Timestamp::now())))?;
        let last_run = args.count.is_some_and(|count| runs >= count);
        match one_run(global, &mut repo, url.as_deref(), &backup_args, out) {
            // The last run's status (or error, which `main` prints) is the exit code.
            result if last_run => return result.map(|(status, _)| status),
            // The next run compares against this one.
            Ok((_, id)) => backup_args.parent = Some(id.to_string()),
            Err(err) if exit::is_broken_pipe(&err) || exit::code_for(&err) == exit::WRONG_PASSWORD => {
                return Err(err);
            }
            Err(err) => {
                eprintln!("error: run {runs} failed: {}", exit::message(&err));
                if let Some(hint) = exit::hint_for(&err) {
                    eprintln!("hint: {hint}");
                }
                repo = None;
            }
        }
        let wait = until_next_slot(started.elapsed(), args.every);
        if out.verbose {
            eprintln!("next run in {:.0}s", wait.as_secs_f64());
        }
        std::thread::sleep(wait);
    }
}

/// One backup, on the open repository (a fresh handle: it sees what others wrote meanwhile, such
/// as a prune) or on a newly opened one.
fn one_run(
    global: &Global,
    repo: &mut Option<Repository>,
    url: Option<&str>,
    args: &crate::args::BackupArgs,
    out: &Out,
) -> Result<(Status, Id)> {
    let handle = match repo {
        Some(open) => open.fresh(),
        None => {
            let opened = open::open(global)?;
            *repo = Some(opened.clone());
            opened
        }
    };
    backup::once(&handle, url, args, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_friendly_and_positive() {
        assert_eq!(parse_interval("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_interval("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_interval("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_interval("0s").unwrap_err().contains("too short"));
        assert!(parse_interval("-5m").is_err());
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn runs_start_on_a_grid_and_late_runs_skip_slots() {
        let every = Duration::from_secs(10);
        assert_eq!(until_next_slot(Duration::from_secs(3), every), Duration::from_secs(7));
        assert_eq!(until_next_slot(Duration::from_secs(10), every), Duration::from_secs(10));
        // A run that overran two slots waits for the third, not for the ones it missed.
        assert_eq!(until_next_slot(Duration::from_secs(25), every), Duration::from_secs(5));
    }
}
