//! Reading the filesystem: metadata into nodes, owner names, sorted directory listings, and the
//! [`Opener`] seam through which backup opens files (wrapped by tests to inject faults).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tidemark_repo::format::objects::{Node, NodeType};

use crate::FsError;

/// Attribute holding the hex bytes of a symlink target that is not UTF-8.
pub const LINK_TARGET_HEX: &str = "link_target_hex";
/// Attribute naming what an [`NodeType::Other`] node was: `fifo`, `socket`, `char-device`,
/// `block-device`.
pub const OTHER_KIND: &str = "kind";
/// Attribute holding the device number of a character or block device.
pub const RDEV: &str = "rdev";

/// A file opened for backup: its content and its metadata as seen through the open handle.
pub trait SourceFile: Read + Send {
    /// Metadata of the open file (`fstat`), used to notice a file changing while it is read.
    fn metadata(&self) -> io::Result<Metadata>;
}

impl SourceFile for File {
    fn metadata(&self) -> io::Result<Metadata> {
        File::metadata(self)
    }
}

/// Opens the regular files that backup reads. [`SystemOpener`] is the real one; tests wrap it to
/// make opening or reading fail.
pub trait Opener: Send + Sync {
    /// Open `path` for reading.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SourceFile>>;
}

/// Opens with `O_NOFOLLOW | O_NONBLOCK`: a file swapped for a symlink or a FIFO after the walk saw
/// it is neither followed nor waited on.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemOpener;

impl Opener for SystemOpener {
    fn open(&self, path: &Path) -> io::Result<Box<dyn SourceFile>> {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
        Ok(Box::new(file))
    }
}

/// User and group names by id, read once from `/etc/passwd` and `/etc/group`.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Owners {
    /// Read this system's databases; missing or unreadable files give no names.
    pub fn load() -> Owners {
        let read = |p: &str| std::fs::read(p).map(|b| parse_id_names(&String::from_utf8_lossy(&b))).unwrap_or_default();
        Owners { users: read("/etc/passwd"), groups: read("/etc/group") }
    }

    /// Name of `uid`, or empty.
    pub fn user(&self, uid: u32) -> &str {
        self.users.get(&uid).map_or("", String::as_str)
    }

    /// Name of `gid`, or empty.
    pub fn group(&self, gid: u32) -> &str {
        self.groups.get(&gid).map_or("", String::as_str)
    }
}

/// Parse `name:password:id:...` lines (passwd and group formats); the first name of an id wins.
pub fn parse_id_names(text: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let (false, Ok(id)) = (name.is_empty() || name.starts_with('#'), id.trim().parse::<u32>()) {
            out.entry(id).or_insert_with(|| name.to_string());
        }
    }
    out
}

/// `name` and `name_bytes` of a node: the UTF-8 name, or a lossy rendering plus the raw bytes.
pub fn name_fields(name: &OsStr) -> (String, Option<Vec<u8>>) {
    match name.to_str() {
        Some(s) => (s.to_string(), None),
        None => (name.to_string_lossy().into_owned(), Some(name.as_bytes().to_vec())),
    }
}

/// Nanoseconds since the epoch (saturating).
pub fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000).saturating_add(md.mtime_nsec())
}

/// Inode change time in nanoseconds since the epoch (saturating).
pub fn ctime_ns(md: &Metadata) -> i64 {
    md.ctime().saturating_mul(1_000_000_000).saturating_add(md.ctime_nsec())
}

/// A node describing `md` (from `symlink_metadata`), without content, subtree or link target.
pub fn node_from_metadata(name: &OsStr, md: &Metadata, owners: &Owners) -> Node {
    let ft = md.file_type();
    let mut attrs = BTreeMap::new();
    let node_type = if ft.is_file() {
        NodeType::File
    } else if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else {
        let kind = if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "char-device"
        } else if ft.is_block_device() {
            "block-device"
        } else {
            "unknown"
        };
        attrs.insert(OTHER_KIND.to_string(), kind.to_string());
        if ft.is_char_device() || ft.is_block_device() {
            attrs.insert(RDEV.to_string(), md.rdev().to_string());
        }
        NodeType::Other
    };
    let (name, name_bytes) = name_fields(name);
    Node {
        name,
        name_bytes,
        node_type,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: owners.user(md.uid()).to_string(),
        group: owners.group(md.gid()).to_string(),
        mtime_ns: mtime_ns(md),
        ctime_ns: ctime_ns(md),
        inode: md.ino(),
        device: md.dev(),
        size: if node_type == NodeType::File { md.len() } else { 0 },
        content: Vec::new(),
        subtree: None,
        link_target: None,
        attrs,
    }
}

/// Fill in a symlink node's target (raw bytes in an attribute when the target is not UTF-8).
pub fn read_link_into(node: &mut Node, path: &Path) -> io::Result<()> {
    let target = std::fs::read_link(path)?;
    let raw = target.as_os_str();
    node.link_target = Some(raw.to_string_lossy().into_owned());
    if raw.to_str().is_none() {
        node.attrs.insert(LINK_TARGET_HEX.to_string(), to_hex(raw.as_bytes()));
    }
    Ok(())
}

/// The raw target of a symlink node (from the hex attribute when present).
pub fn link_target_bytes(node: &Node) -> Option<Vec<u8>> {
    if let Some(raw) = node.attrs.get(LINK_TARGET_HEX).and_then(|h| from_hex(h)) {
        return Some(raw);
    }
    node.link_target.as_ref().map(|t| t.as_bytes().to_vec())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// One directory entry: its name and `lstat` result.
pub type Listed = (OsString, io::Result<Metadata>);

/// The entries of a directory sorted by name bytes, each with its `lstat` metadata (taken relative
/// to the open directory, never following symlinks). Errors reading an entry name are returned
/// as warnings alongside.
pub fn list_dir(path: &Path) -> io::Result<(Vec<Listed>, Vec<io::Error>)> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(path)? {
        match entry {
            Ok(e) => entries.push((e.file_name(), e.metadata())),
            Err(e) => errors.push(e),
        }
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok((entries, errors))
}

/// Make `path` absolute (against the current directory) and lexically clean: no `.`, `..` or
/// repeated separators. Cleaning follows restic: `/a/b/../c` is `/a/c` whatever `b` is.
pub fn absolute(path: &Path) -> Result<PathBuf, FsError> {
    let fail = |message: String| FsError::Path { path: path.to_path_buf(), message };
    if path.as_os_str().is_empty() {
        return Err(fail("empty path".into()));
    }
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| fail(format!("cannot read the current directory: {e}")))?.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_map_ids_to_names() {
        let m =
            parse_id_names("root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nbin:x:1:1::/:\nalias:x:0:0::/:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1).map(String::as_str), Some("bin"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn non_utf8_names_keep_their_bytes() {
        let raw = OsStr::from_bytes(b"a\xffb");
        let (name, bytes) = name_fields(raw);
        assert_eq!(name, "a\u{fffd}b");
        assert_eq!(bytes.as_deref(), Some(&b"a\xffb"[..]));
        assert_eq!(name_fields(OsStr::new("plain")), ("plain".to_string(), None));
        assert_eq!(from_hex(&to_hex(b"\x00\xff/x")).as_deref(), Some(&b"\x00\xff/x"[..]));
        assert_eq!(from_hex("abc"), None);
    }

    #[test]
    fn absolute_paths_are_cleaned() {
        assert_eq!(absolute(Path::new("/a/./b//c/../d")).unwrap(), PathBuf::from("/a/b/d"));
        assert_eq!(absolute(Path::new("/..")).unwrap(), PathBuf::from("/"));
        let rel = absolute(Path::new("x")).unwrap();
        assert!(rel.is_absolute() && rel.ends_with("x"));
        assert!(absolute(Path::new("")).is_err());
    }
}
