//! Restore drills: the newest snapshot restored into a scratch directory, every restored file
//! compared with the snapshot blob by blob, the time measured against `max_duration`, the
//! scratch directory removed whatever happened.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use tidemark_repo::format::Id;
use tidemark_repo::format::objects::{NodeType, Snapshot};
use tidemark_repo::format::pack::BlobType;
use tidemark_repo::{Repository, tree};
use tidemark_service_core::SourceKind;

use super::{Ctx, snapshots_of};

pub(super) fn drill(ctx: &Ctx) -> Result<String, String> {
    let source = ctx.source()?;
    let repo = ctx.repo(&source.repository)?;
    let (id, snapshot) = snapshots_of(&repo, &source.name)?
        .pop()
        .ok_or_else(|| format!("no snapshot of {} to drill; run a backup first", source.name))?;
    ctx.update(|r| r.snapshot = Some(id.to_string()));
    let drill = source.drill.clone();
    let scratch_root = drill
        .as_ref()
        .and_then(|d| d.scratch_dir.clone())
        .unwrap_or_else(|| ctx.inner.config.server.state_dir.join("drills"));
    let scratch = scratch_root.join(format!("{}-{}", source.name, ctx.id()));
    std::fs::create_dir_all(&scratch_root)
        .map_err(|e| format!("cannot create the drill scratch directory {}: {e}", scratch_root.display()))?;
    ctx.step("restore")?;
    let started = Instant::now();
    let outcome = restore_and_verify(ctx, &repo, &snapshot, &source.kind, &scratch);
    let seconds = started.elapsed().as_secs_f64();
    if scratch.exists()
        && let Err(e) = std::fs::remove_dir_all(&scratch)
    {
        ctx.log("warn", format!("could not remove the drill's scratch directory {}: {e}", scratch.display()));
    }
    let verified = outcome.as_ref().map_err(Clone::clone)?;
    ctx.update(|r| r.verified = Some(true));
    let max = drill.as_ref().and_then(|d| d.max_duration);
    if let Some(max) = max
        && seconds > max.as_secs_f64()
    {
        return Err(format!(
            "restore of snapshot {} took {seconds:.1}s, longer than max_duration {}: the promised recovery time \
             was not met",
            id.short(),
            tidemark_service_core::format_duration(max)
        ));
    }
    Ok(format!("restored snapshot {} in {seconds:.1}s and verified {verified}", id.short()))
}

/// Restores `snapshot` into `scratch` and compares it with the snapshot; a description of what
/// was verified, or what failed. Marks the job unverified on failure.
fn restore_and_verify(
    ctx: &Ctx,
    repo: &Repository,
    snapshot: &Snapshot,
    kind: &SourceKind,
    scratch: &Path,
) -> Result<String, String> {
    let failed = |ctx: &Ctx, message: String| {
        ctx.update(|r| r.verified = Some(false));
        message
    };
    match kind {
        SourceKind::Directory { .. } => {
            let opts = tidemark_source_fs::RestoreOptions { target: scratch.to_path_buf(), ..Default::default() };
            let outcome = tidemark_source_fs::restore(repo, snapshot, &opts, ctx.progress())
                .map_err(|e| failed(ctx, format!("restore failed: {e}")))?;
            if let Some(first) = outcome.errors.first() {
                return Err(failed(
                    ctx,
                    format!(
                        "restore reported {} damaged or refused file(s), first {}: {}; run `tidemark check --read-data`",
                        outcome.errors.len(),
                        first.path.display(),
                        first.message
                    ),
                ));
            }
            ctx.step("verify").map_err(|e| failed(ctx, e))?;
            let (files, bytes) = verify_files(repo, snapshot, scratch, true).map_err(|e| failed(ctx, e))?;
            Ok(format!("{files} file(s), {bytes} bytes, against the snapshot"))
        }
        SourceKind::Bucket { .. } => {
            let opts = tidemark_source_objects::BucketRestoreOptions::new(tidemark_source_objects::Target::Dir(
                scratch.to_path_buf(),
            ));
            let outcome = tidemark_source_objects::restore_bucket(repo, snapshot, &opts, ctx.progress())
                .map_err(|e| failed(ctx, format!("restore failed: {e}")))?;
            if let Some(first) = outcome.errors.first() {
                return Err(failed(
                    ctx,
                    format!(
                        "restore reported {} damaged object(s), first {}: {}; run `tidemark check --read-data`",
                        outcome.errors.len(),
                        first.key,
                        first.message
                    ),
                ));
            }
            ctx.step("verify").map_err(|e| failed(ctx, e))?;
            let (files, bytes) = verify_files(repo, snapshot, scratch, false).map_err(|e| failed(ctx, e))?;
            if files != outcome.objects {
                return Err(failed(
                    ctx,
                    format!("restore wrote {} object(s) but {files} match the snapshot's files", outcome.objects),
                ));
            }
            Ok(format!("{files} object(s), {bytes} bytes, against the snapshot"))
        }
        SourceKind::Postgres { .. } => {
            let name = snapshot.source.clone().unwrap_or_default();
            super::pg_drill::restore_and_query(ctx, repo, snapshot, &name, scratch).map_err(|e| failed(ctx, e))
        }
        _ => Err(failed(ctx, "a drill of this kind of source is not supported".into())),
    }
}

/// Compares every regular file of `snapshot` with the restored file below `root`, blob by blob
/// (each blob verified against its id as it is read). `all`: a missing file is an error (directory
/// restores write every file); otherwise files not restored are skipped (bucket restores leave
/// out non-current versions). Returns the files and bytes compared.
fn verify_files(repo: &Repository, snapshot: &Snapshot, root: &Path, all: bool) -> Result<(u64, u64), String> {
    let mut problems: Vec<String> = Vec::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    tree::walk(repo, &snapshot.tree, "/", &mut |path, node| {
        if node.node_type != NodeType::File {
            return Ok(());
        }
        let restored = root.join(path.trim_start_matches('/'));
        let mut file = match File::open(&restored) {
            Ok(f) => f,
            Err(_) if !all => return Ok(()),
            Err(e) => {
                problems.push(format!("{path}: not restored ({e})"));
                return Ok(());
            }
        };
        match compare(repo, &node.content, &mut file) {
            Ok(n) => {
                files += 1;
                bytes += n;
            }
            Err(e) => problems.push(format!("{path}: {e}")),
        }
        Ok(())
    })
    .map_err(|e| format!("reading the snapshot's tree: {e}"))?;
    match problems.first() {
        None => Ok((files, bytes)),
        Some(first) => Err(format!(
            "verification found {} file(s) differing from the snapshot, first {first}; run `tidemark check --read-data`",
            problems.len()
        )),
    }
}

/// Compares `file` with the content blobs; the bytes compared.
fn compare(repo: &Repository, blobs: &[Id], file: &mut File) -> Result<u64, String> {
    let mut total = 0u64;
    let mut buffer = Vec::new();
    for id in blobs {
        let expected = repo.read_blob(BlobType::Data, id).map_err(|e| format!("blob {}: {e}", id.short()))?;
        buffer.resize(expected.len(), 0);
        file.read_exact(&mut buffer).map_err(|e| format!("shorter than in the snapshot ({e})"))?;
        if buffer != expected {
            return Err(format!("content differs at byte {total}"));
        }
        total += expected.len() as u64;
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(|e| e.to_string())? != 0 {
        return Err("longer than in the snapshot".into());
    }
    Ok(total)
}
