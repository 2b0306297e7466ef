//! `tidemark demo`: the main job on an embedded default, with nothing to set up.
//!
//! Generates a deterministic sample tree (text, CSV, incompressible binaries, a large file,
//! nested directories, a symlink, an empty directory, unusual modes), creates a local repository
//! with a generated password, backs up, changes a few files, backs up again (the second backup
//! adds little: deduplication), restores the latest snapshot, verifies the restore byte for byte
//! against the source, runs `check --read-data`, and prints the snapshots, the statistics and where
//! everything is.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tidemark_repo::SnapshotFilter;

use crate::args::{BackupArgs, DemoArgs, FilterArgs, Global, InitArgs, RestoreArgs};
use crate::exit::{Status, UserError};
use crate::output::{Out, bytes};
use crate::{backup, maintenance, open, restore, snapshots};

/// splitmix64: a tiny deterministic generator, so every demo makes the same sample.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "tide",
    "harbour",
    "ledger",
    "invoice",
    "backup",
    "restore",
    "snapshot",
    "river",
    "granite",
    "copper",
    "lantern",
    "quarterly",
    "report",
    "customer",
    "storage",
    "encrypted",
    "window",
    "shipment",
    "north",
    "signal",
    "archive",
    "meadow",
    "compass",
    "balance",
    "forecast",
    "orchard",
    "voyage",
    "summit",
];

fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        let words = 6 + rng.below(12);
        for i in 0..words {
            let w = WORDS[rng.below(WORDS.len() as u64) as usize];
            if i > 0 {
                s.push(' ');
            }
            s.push_str(w);
        }
        s.push_str(".\n");
    }
    s
}

fn csv(rng: &mut Rng, rows: usize) -> String {
    let mut s = String::from("id,date,customer,amount,currency,status\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{i},2026-{:02}-{:02},{},{}.{:02},EUR,{}\n",
            1 + rng.below(12),
            1 + rng.below(28),
            WORDS[rng.below(WORDS.len() as u64) as usize],
            rng.below(10_000),
            rng.below(100),
            if rng.below(5) == 0 { "open" } else { "paid" }
        ));
    }
    s
}

fn binary(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Write the sample below `root`; returns (files, bytes).
fn generate(root: &Path) -> Result<(u64, u64)> {
    let mut rng = Rng(0x7469_6465_6d61_726b);
    let (mut files, mut total) = (0u64, 0u64);
    let mut put = |path: PathBuf, data: &[u8]| -> Result<()> {
        files += 1;
        total += data.len() as u64;
        write(&path, data)
    };
    for i in 0..120 {
        let len = 512 + rng.below(20 * 1024) as usize;
        put(root.join(format!("docs/notes-{i:03}.txt")), text(&mut rng, len).as_bytes())?;
    }
    for i in 0..40 {
        let rows = 200 + rng.below(1500) as usize;
        put(root.join(format!("data/table-{i:03}.csv")), csv(&mut rng, rows).as_bytes())?;
    }
    for i in 0..8 {
        let len = 64 * 1024 + rng.below(1536 * 1024) as usize;
        put(root.join(format!("media/blob-{i}.bin")), &binary(&mut rng, len))?;
    }
    put(root.join("media/big.bin"), &binary(&mut rng, 6 * 1024 * 1024))?;
    for i in 0..100 {
        let dir = format!("src/module-{}/part-{}", i % 5, i % 3);
        let len = 200 + rng.below(4000) as usize;
        put(root.join(format!("{dir}/file-{i:03}.rs")), text(&mut rng, len).as_bytes())?;
    }
    put(root.join("secret.key"), &binary(&mut rng, 64))?;
    fs::set_permissions(root.join("secret.key"), fs::Permissions::from_mode(0o600))?;
    put(root.join("run.sh"), b"#!/bin/sh\necho hello from the tidemark demo\n")?;
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755))?;
    fs::create_dir_all(root.join("empty/nested-empty"))?;
    fs::create_dir_all(root.join("links"))?;
    std::os::unix::fs::symlink("../docs/notes-000.txt", root.join("links/first-note"))?;
    Ok((files, total))
}

/// A few realistic edits: append, overwrite in place, add, delete.
fn modify(root: &Path) -> Result<()> {
    let mut rng = Rng(42);
    let mut f = fs::OpenOptions::new().append(true).open(root.join("docs/notes-007.txt"))?;
    f.write_all(text(&mut rng, 2000).as_bytes())?;
    let big = root.join("media/big.bin");
    let mut data = fs::read(&big)?;
    let patch = binary(&mut rng, 4096);
    data[3 * 1024 * 1024..3 * 1024 * 1024 + 4096].copy_from_slice(&patch);
    fs::write(&big, &data)?;
    write(&root.join("docs/new-notes.txt"), text(&mut rng, 5000).as_bytes())?;
    fs::remove_file(root.join("data/table-003.csv"))?;
    Ok(())
}

/// Compare `a` (source) with `b` (restored): types, contents, link targets, permission bits, and
/// no extra entries. Returns how many entries were compared.
fn compare(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    let mut names_a: Vec<_> = fs::read_dir(a)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    let mut names_b: Vec<_> = fs::read_dir(b)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names_a.sort();
    names_b.sort();
    if names_a != names_b {
        bail!("{} and {} hold different names: {names_a:?} vs {names_b:?}", a.display(), b.display());
    }
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (fs::symlink_metadata(&pa)?, fs::symlink_metadata(&pb)?);
        if ma.file_type() != mb.file_type() {
            bail!("{} is a different kind of file after restore", pb.display());
        }
        if !ma.file_type().is_symlink() && ma.permissions().mode() & 0o7777 != mb.permissions().mode() & 0o7777 {
            bail!("{}: mode {:o} restored as {:o}", pb.display(), ma.permissions().mode(), mb.permissions().mode());
        }
        if ma.is_dir() {
            n += compare(&pa, &pb)?;
        } else if ma.file_type().is_symlink() {
            if fs::read_link(&pa)? != fs::read_link(&pb)? {
                bail!("{}: symlink target differs", pb.display());
            }
        } else if fs::read(&pa)? != fs::read(&pb)? {
            bail!("{}: content differs", pb.display());
        }
        n += 1;
    }
    Ok(n)
}

fn step(out: &Out, text: &str) -> Result<()> {
    out.info(format!("\n==> {text}"))
}

/// Run `demo`.
pub fn run(global: &Global, args: &DemoArgs, out: &Out) -> Result<Status> {
    let out = Out { json: false, ..*out };
    let dir = match &args.dir {
        Some(d) => {
            let d = std::path::absolute(d)?;
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => tempfile::Builder::new().prefix("tidemark-demo-").tempdir()?.keep(),
    };
    let (source, repo_dir, password, target) =
        (dir.join("source"), dir.join("repo"), dir.join("password"), dir.join("restore"));
    if source.exists() || repo_dir.exists() || target.exists() {
        return Err(UserError::new(
            format!("{} already holds a demo", dir.display()),
            "pick another --dir, or leave --dir out to use a new temporary directory",
        )
        .into());
    }

    step(&out, &format!("1. generating a sample tree in {}", source.display()))?;
    let (files, total) = generate(&source)?;
    out.info(format!("{files} files, {}, with nested and empty directories and a symlink", bytes(total)))?;

    step(&out, &format!("2. creating an encrypted repository in {}", repo_dir.display()))?;
    let secret: [u8; 24] = rand::random();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(&password, format!("{secret}\n"))?;
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600))?;
    let g = Global {
        repo: Some(repo_dir.to_string_lossy().into_owned()),
        password_file: Some(password.clone()),
        key_file: None,
        ..global.clone()
    };
    let init = InitArgs {
        pack_size_mib: 16,
        compression_level: 1,
        from_repo: None,
        from_password_file: None,
        from_key_file: None,
        copy_chunker_params: false,
    };
    open::init(&g, &init, &out)?;

    let backup_args = BackupArgs {
        paths: vec![source.clone()],
        tags: vec!["demo".into()],
        host: None,
        excludes: Vec::new(),
        parent: None,
        force: false,
        all_versions: false,
        concurrency: None,
    };
    step(&out, "3. first backup")?;
    let (first, secs) = backup::backup(&open::open(&g)?, &backup_args, &out)?;
    backup::report(&first, secs, &out)?;

    step(
        &out,
        "4. changing a few files (append, overwrite 4 KiB inside a 6 MiB file, add, delete) and backing up again",
    )?;
    modify(&source)?;
    let (second, secs) = backup::backup(&open::open(&g)?, &backup_args, &out)?;
    backup::report(&second, secs, &out)?;
    let added = |o: &tidemark_source_fs::BackupOutcome| o.snapshot.summary.as_ref().map_or(0, |s| s.data_added);
    out.info(format!(
        "the second backup added {} of new data for a {} tree: unchanged files were skipped, \
         and only the changed chunks of changed files were stored",
        bytes(added(&second)),
        bytes(second.snapshot.summary.as_ref().map_or(0, |s| s.total_bytes))
    ))?;

    step(&out, &format!("5. restoring the latest snapshot into {}", target.display()))?;
    let repo = open::open(&g)?;
    let (_, latest) = repo.find_snapshot("latest", &SnapshotFilter::default())?;
    let restore_args = RestoreArgs {
        snapshot: Some("latest".into()),
        target: target.clone(),
        includes: Vec::new(),
        overwrite: false,
        at: None,
        source: None,
        include_deleted: false,
        concurrency: None,
        filter: FilterArgs::default(),
    };
    let restored = restore::restore(&repo, &latest, &restore_args, &out)?;
    if !restored.errors.is_empty() {
        bail!("{} file(s) could not be restored", restored.errors.len());
    }
    let relative = source.strip_prefix("/").unwrap_or(&source);
    let restored_root = target.join(relative);
    let compared = compare(&source, &restored_root)
        .with_context(|| format!("verifying {} against {}", restored_root.display(), source.display()))?;
    out.info(format!(
        "restored {} files ({}); all {compared} entries match the source byte for byte",
        restored.files,
        bytes(restored.bytes)
    ))?;

    step(&out, "6. check --read-data: every pack read, every chunk decrypted and verified")?;
    let status = maintenance::check(&open::open(&g)?, true, &out)?;
    if status != Status::Ok {
        bail!("check found errors in a repository the demo just wrote");
    }

    step(&out, "7. snapshots and statistics")?;
    let repo = open::open(&g)?;
    out.line(snapshots::snapshot_table(&repo.snapshots()?))?;
    out.line("")?;
    maintenance::print_stats(&repo.stats()?, &out)?;

    let exe = std::env::current_exe().map_or_else(|_| "tidemark".into(), |p| p.display().to_string());
    let flags = format!("-r {} --password-file {}", repo_dir.display(), password.display());
    out.line(format!(
        "\nEverything is in {dir}:\n  source/    the generated sample (changed after the first backup)\n  \
         repo/      the encrypted repository\n  password   its password\n  restore/   the restored copy, \
         verified identical to source/\n\nTry:\n  {exe} {flags} snapshots\n  {exe} {flags} diff {} {}\n  \
         {exe} {flags} ls latest {}\n  {exe} {flags} stats --json",
        first.id.short(),
        second.id.short(),
        source.join("docs").display(),
        dir = dir.display(),
    ))?;
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_deterministic_and_compare_detects_differences() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (files, total) = generate(a.path()).unwrap();
        generate(b.path()).unwrap();
        assert!(files > 250, "{files}");
        assert!(total > 8 * 1024 * 1024, "{total}");
        assert!(compare(a.path(), b.path()).unwrap() > 250);
        modify(b.path()).unwrap();
        assert!(compare(a.path(), b.path()).is_err());
    }
}
