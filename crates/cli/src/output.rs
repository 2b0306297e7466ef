//! Writing results: human text or `--json`, byte sizes, local times and tables.
//!
//! Results go to stdout, everything else (progress, warnings, errors) to stderr. Every write
//! returns its error so that a closed pipe stops the command (and `main` exits 0 for it).

use std::io::Write;

use anyhow::Result;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::args::Global;

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Out {
    /// `--json`: results as JSON on stdout.
    pub json: bool,
    /// `--quiet`: no chatter.
    pub quiet: bool,
    /// `--verbose`: more chatter.
    pub verbose: bool,
}

impl Out {
    /// From the global flags.
    pub fn new(global: &Global) -> Self {
        Out { json: global.json, quiet: global.quiet, verbose: global.verbose }
    }

    /// A line of the result (always printed).
    pub fn line(&self, text: impl AsRef<str>) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_ref().as_bytes())?;
        stdout.write_all(b"\n")?;
        Ok(())
    }

    /// A line of commentary, left out with `--quiet` and `--json`.
    pub fn info(&self, text: impl AsRef<str>) -> Result<()> {
        if self.quiet || self.json { Ok(()) } else { self.line(text) }
    }

    /// One JSON value on one line.
    pub fn json_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, value)?;
        stdout.write_all(b"\n")?;
        Ok(())
    }

    /// A warning on stderr (also with `--quiet`: warnings matter).
    pub fn warn(&self, text: impl AsRef<str>) {
        eprintln!("warning: {}", text.as_ref());
    }
}

/// `1.5 MiB`, `999 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A timestamp in the local time zone, to the second: `2026-03-01 14:02:11`.
pub fn local_time(t: Timestamp) -> String {
    t.to_zoned_datetime(TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// `rwxr-xr-x`-style rendering of a node's type and mode bits.
pub fn mode_string(node_type: tidemark_format::objects::NodeType, mode: u32) -> String {
    use tidemark_format::objects::NodeType;
    let mut s = String::with_capacity(10);
    s.push(match node_type {
        NodeType::Dir => 'd',
        NodeType::Symlink => 'l',
        NodeType::File => '-',
        NodeType::Other => '?',
    });
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: bool, set: bool, lower: char, upper: char| match (exec, set) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(mode & 0o100 != 0, mode & 0o4000 != 0, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(mode & 0o010 != 0, mode & 0o2000 != 0, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(mode & 0o001 != 0, mode & 0o1000 != 0, 't', 'T'));
    s
}

/// A plain text table: a header, a rule, rows; columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> =
            cells.zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = render(&mut header.iter().copied());
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    for row in rows {
        out.push('\n');
        out.push_str(&render(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_format::objects::NodeType;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.00 MiB");
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(NodeType::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(NodeType::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeType::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(NodeType::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeType::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["ID", "Host"], &[vec!["abc".into(), "h".into()], vec!["a".into(), "longhost".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID   Host");
        assert_eq!(lines[2], "abc  h");
        assert_eq!(lines[3], "a    longhost");
    }
}
