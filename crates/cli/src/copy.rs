//! `tidemark copy`: snapshots and the data they need into a second repository (off-site copies).

use std::sync::Arc;

use anyhow::Result;
use tidemark_repo::format::Id;
use tidemark_repo::format::objects::Snapshot;

use crate::args::{CopyArgs, Global};
use crate::exit::Status;
use crate::open;
use crate::output::{Out, bytes};
use crate::progress::Bar;
use crate::restore::filter;

/// Run `copy`.
pub fn run(global: &Global, args: &CopyArgs, out: &Out) -> Result<Status> {
    let source = open::open(global)?;
    let target = open::open_other(
        global,
        &args.to_repo,
        open::Role::To,
        args.to_password_file.as_deref(),
        args.to_key_file.as_deref(),
    )?;
    let filter = filter(&args.filter);
    let selected: Vec<(Id, Snapshot)> = if args.snapshots.is_empty() {
        source.snapshots()?.into_iter().filter(|(_, s)| filter.matches(s)).collect()
    } else {
        args.snapshots.iter().map(|r| source.find_snapshot(r, &filter)).collect::<Result<_, _>>()?
    };
    out.info(format!(
        "copying {} snapshot(s) from {} to {}",
        selected.len(),
        source.storage().location(),
        target.storage().location()
    ))?;
    let bar = Arc::new(Bar::new(out, "copy"));
    let report = source.copy_to(&target, &selected, bar.clone())?;
    bar.finish();
    if out.json {
        out.json_value(&report)?;
    } else {
        for (from, to) in &report.copied {
            out.line(format!("snapshot {} copied as {}", from.short(), to.short()))?;
        }
        out.line(format!(
            "{} copied, {} already present; {} blobs, {} sent and verified",
            report.copied.len(),
            report.already_present.len(),
            report.blobs_copied,
            bytes(report.bytes_copied)
        ))?;
    }
    Ok(Status::Ok)
}
