//! `tidemark find`: every snapshot and captured version in which a matching file exists, so that a
//! user can find the photo deleted last Tuesday and the snapshot to restore it from.

use anyhow::Result;
use jiff::Timestamp;
use tidemark_source_objects::Found;

use crate::args::{FindArgs, Global};
use crate::exit::Status;
use crate::open;
use crate::output::{Out, bytes, local_time, table};
use crate::restore::normalize_source;

/// Run `find`.
pub fn run(global: &Global, args: &FindArgs, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    let source = args.source.as_deref().map(normalize_source);
    let found = tidemark_source_objects::find(&repo, &args.pattern, source.as_deref())?;
    if out.json {
        out.json_value(&found.iter().map(found_json).collect::<Vec<_>>())?;
        return Ok(Status::Ok);
    }
    if found.is_empty() {
        let of = source.map(|s| format!(" of {s}")).unwrap_or_default();
        out.info(format!("no file matching {:?} in any snapshot{of}", args.pattern))?;
        return Ok(Status::Ok);
    }
    out.line(found_table(&found))?;
    Ok(Status::Ok)
}

fn version(f: &Found) -> String {
    match (f.current, &f.version_id) {
        (true, _) => "current".into(),
        (false, Some(v)) => format!("version {v}"),
        (false, None) => "non-current".into(),
    }
}

fn found_json(f: &Found) -> serde_json::Value {
    serde_json::json!({
        "snapshot_id": f.snapshot,
        "short_id": f.snapshot.short(),
        "time": f.time,
        "kind": f.kind,
        "path": f.path,
        "size": f.size,
        "mtime": Timestamp::from_nanosecond(i128::from(f.mtime_ns)).ok(),
        "etag": f.etag,
        "version_id": f.version_id,
        "current": f.current,
    })
}

fn found_table(found: &[Found]) -> String {
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|f| vec![f.snapshot.short(), local_time(f.time), f.path.clone(), bytes(f.size), version(f)])
        .collect();
    table(&["ID", "Time", "Path", "Size", "Version"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_format::Id;

    #[test]
    fn table_names_snapshot_path_size_and_version() {
        let f = |current: bool, version_id: Option<&str>| Found {
            snapshot: Id::from_bytes([0xab; 32]),
            time: Timestamp::from_second(1_772_373_600).unwrap(),
            kind: "bucket".into(),
            path: "photos/party.jpg".into(),
            size: 2048,
            mtime_ns: 0,
            etag: None,
            version_id: version_id.map(str::to_string),
            current,
        };
        let text = found_table(&[f(true, None), f(false, Some("v7")), f(false, None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].starts_with("abababab") && lines[2].contains("photos/party.jpg"), "{text}");
        assert!(lines[2].contains("2.00 KiB") && lines[2].ends_with("current"), "{text}");
        assert!(lines[3].ends_with("version v7") && lines[4].ends_with("non-current"), "{text}");
        assert_eq!(found_json(&f(false, Some("v7")))["short_id"], "abababab");
    }
}
