//! Reading snapshots: `snapshots`, `ls`, `diff`, `dump`.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use jiff::Timestamp;
use tidemark_format::Id;
use tidemark_format::objects::{Node, NodeType, Snapshot};
use tidemark_repo::tree::{self, ChangeKind};
use tidemark_repo::{Repository, SnapshotFilter};

use crate::args::{DiffArgs, DumpArgs, Global, LsArgs, SnapshotsArgs};
use crate::exit::{Status, UserError};
use crate::open;
use crate::output::{Out, bytes, local_time, mode_string, table};
use crate::restore::{filter, normalize_source, source_matches};

/// The snapshots that pass `filter` and, when `source` is given (a path, URL or name as the user
/// wrote it), are of that source; in the repository's order.
pub fn matching(repo: &Repository, filter: &SnapshotFilter, source: Option<&str>) -> Result<Vec<(Id, Snapshot)>> {
    let source = source.map(normalize_source);
    Ok(repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s) && source.as_deref().is_none_or(|src| source_matches(s, src)))
        .collect())
}

/// A snapshot as `--json` shows it: its fields plus `id` and `short_id`.
pub fn snapshot_json(id: &Id, s: &Snapshot) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(s)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("id".into(), serde_json::to_value(id)?);
        map.insert("short_id".into(), id.short().into());
    }
    Ok(value)
}

/// The `snapshots` table.
pub fn snapshot_table(list: &[(Id, Snapshot)]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|(id, s)| {
            vec![
                id.short(),
                local_time(s.time),
                s.hostname.clone(),
                s.tags.join(","),
                s.paths.join(","),
                s.summary.as_ref().map(|sum| bytes(sum.total_bytes)).unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = table(&["ID", "Time", "Host", "Tags", "Paths", "Size"], &rows);
    text.push_str(&format!("\n{} snapshot{}", list.len(), if list.len() == 1 { "" } else { "s" }));
    text
}

/// Run `snapshots`.
pub fn run_snapshots(global: &Global, args: &SnapshotsArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let list = matching(&repo, &filter(&args.filter), args.source.as_deref())?;
    if out.json {
        let values = list.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Result<Vec<_>>>()?;
        out.json_value(&values)?;
    } else {
        out.line(snapshot_table(&list))?;
    }
    Ok(Status::Ok)
}

fn time_of(ns: i64) -> Option<Timestamp> {
    Timestamp::from_nanosecond(i128::from(ns)).ok()
}

fn node_json(path: &str, n: &Node) -> serde_json::Value {
    serde_json::json!({
        "struct_type": "node",
        "path": path,
        "name": n.name,
        "type": n.node_type,
        "mode": n.mode,
        "permissions": mode_string(n.node_type, n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "size": n.size,
        "mtime": time_of(n.mtime_ns),
        "link_target": n.link_target,
    })
}

fn long_line(path: &str, n: &Node) -> String {
    let owner = |name: &str, id: u32| {
        if name.is_empty() { id.to_string() } else { name.to_string() }
    };
    let mtime = time_of(n.mtime_ns).map(local_time).unwrap_or_else(|| "?".into());
    let mut line = format!(
        "{} {:>8} {:>8} {:>12} {mtime} {path}",
        mode_string(n.node_type, n.mode),
        owner(&n.user, n.uid),
        owner(&n.group, n.gid),
        n.size
    );
    if let Some(target) = &n.link_target {
        line.push_str(" -> ");
        line.push_str(target);
    }
    line
}

/// Run `ls`.
pub fn run_ls(global: &Global, args: &LsArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot, &SnapshotFilter::default())?;
    let start = args.path.as_deref().unwrap_or("/");
    if out.json {
        let mut head = snapshot_json(&id, &snapshot)?;
        if let Some(map) = head.as_object_mut() {
            map.insert("struct_type".into(), "snapshot".into());
        }
        out.json_value(&head)?;
    } else {
        out.info(format!(
            "snapshot {} of {} at {}:",
            id.short(),
            snapshot.paths.join(", "),
            local_time(snapshot.time)
        ))?;
    }
    // Output errors (a closed pipe) travel through the walk as a repository error; keep the real one.
    let mut write_error: Option<anyhow::Error> = None;
    let result = tree::walk(&repo, &snapshot.tree, start, &mut |path, node| {
        let written = if out.json {
            out.json_value(&node_json(path, node))
        } else if args.long {
            out.line(long_line(path, node))
        } else {
            out.line(path)
        };
        written.map_err(|e| {
            let message = e.to_string();
            write_error = Some(e);
            tidemark_repo::RepoError::Invalid(message)
        })
    });
    if let Some(e) = write_error {
        return Err(e);
    }
    result?;
    Ok(Status::Ok)
}

/// Run `diff`.
pub fn run_diff(global: &Global, args: &DiffArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let any = SnapshotFilter::default();
    let (id1, s1) = repo.find_snapshot(&args.snapshot1, &any)?;
    let (id2, s2) = repo.find_snapshot(&args.snapshot2, &any)?;
    let changes = tree::diff(&repo, &s1.tree, &s2.tree)?;
    let count = |k: ChangeKind| changes.iter().filter(|c| c.kind == k).count();
    if out.json {
        out.json_value(&serde_json::json!({
            "snapshot1": id1,
            "snapshot2": id2,
            "changes": changes,
            "added": count(ChangeKind::Added),
            "removed": count(ChangeKind::Removed),
            "modified": count(ChangeKind::Modified),
            "metadata": count(ChangeKind::Metadata),
            "type_changed": count(ChangeKind::TypeChanged),
        }))?;
        return Ok(Status::Ok);
    }
    out.info(format!("comparing snapshot {} to {}:\n", id1.short(), id2.short()))?;
    for c in &changes {
        let mark = match c.kind {
            ChangeKind::Added => "+",
            ChangeKind::Removed => "-",
            ChangeKind::Modified => "M",
            ChangeKind::Metadata => "U",
            ChangeKind::TypeChanged => "T",
        };
        out.line(format!("{mark}    {}", c.path))?;
    }
    out.info(format!(
        "\n{} added, {} removed, {} modified, {} metadata only, {} changed type",
        count(ChangeKind::Added),
        count(ChangeKind::Removed),
        count(ChangeKind::Modified),
        count(ChangeKind::Metadata),
        count(ChangeKind::TypeChanged)
    ))?;
    Ok(Status::Ok)
}

/// A writer that remembers the error it failed with, so that the real I/O error (say, a closed
/// pipe) survives being wrapped in a repository error.
struct Remembering<W> {
    inner: W,
    error: Option<io::ErrorKind>,
}

impl<W: Write> Write for Remembering<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.error = Some(e.kind()))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| self.error = Some(e.kind()))
    }
}

/// Run `dump`.
pub fn run_dump(global: &Global, args: &DumpArgs, _out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let (id, snapshot) = repo.find_snapshot(&args.snapshot, &SnapshotFilter::default())?;
    let node = tree::find_node(&repo, &snapshot.tree, &args.file)?.ok_or_else(|| {
        UserError::new(
            format!("{}: no such file in snapshot {}", args.file, id.short()),
            format!("`tidemark ls {} PATH` lists what it holds", id.short()),
        )
    })?;
    if node.node_type != NodeType::File {
        let kind = match node.node_type {
            NodeType::Dir => "a directory",
            NodeType::Symlink => "a symlink",
            _ => "not a regular file",
        };
        return Err(UserError::new(
            format!("{}: is {kind}, not a regular file", args.file),
            "dump writes one file; use `tidemark restore --include` for directories",
        )
        .into());
    }
    let mut writer = Remembering { inner: BufWriter::with_capacity(1 << 20, io::stdout().lock()), error: None };
    let result = tree::dump(&repo, &node, &mut writer).map(|_| ()).map_err(anyhow::Error::from);
    let result = result.and_then(|()| writer.flush().map_err(anyhow::Error::from));
    match (result, writer.error) {
        (Ok(()), _) => Ok(Status::Ok),
        (Err(e), Some(kind)) => Err(anyhow::Error::new(io::Error::from(kind)).context(format!("{e}"))),
        (Err(e), None) => Err(e).with_context(|| format!("dumping {}", args.file)),
    }
}
