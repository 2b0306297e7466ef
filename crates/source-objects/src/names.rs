//! From object keys to tree node names and back.
//!
//! A key below the snapshot's prefix is split on `/`: every component but the last becomes a
//! directory, the last a file. Node names must be safe path components (never empty, `.`, `..`,
//! never holding `/` or NUL) and unique in their directory, while keys may be anything. So a
//! component becomes a node name by these rules, and an escaped node records the original
//! component in `attrs["name"]`, which restore and `find` use to rebuild the key exactly:
//!
//! | key component | node name |
//! | --- | --- |
//! | `""` (from `a//b` or a leading `/`) | `%empty` |
//! | `.` / `..` | `%dot` / `%dotdot` |
//! | beginning with `%` | `%` + component (`%x` is `%%x`) |
//! | holding NUL | `%hex-` + hex of the bytes |
//! | a file whose name a directory also has (keys `a` and `a/b`) | `%file-` + name |
//! | anything else | itself |
//!
//! Names beginning with `%` are therefore reserved to tidemark: the only unescaped one is
//! [`VERSIONS_DIR`], the directory holding captured non-current versions of a directory's objects.
//! A key ending in `/` (a "directory marker", as consoles create for folders) is not a file: it is
//! recorded on its directory node (`attrs["marker"] = "true"` with its ETag and metadata).

use tidemark_repo::format::objects::Node;

/// Name of the reserved directory holding the non-current versions captured with
/// `all_versions`, one per directory that has any.
pub const VERSIONS_DIR: &str = "%versions";

/// Attribute holding the original key component of an escaped node.
pub const NAME_ATTR: &str = "name";

/// Attribute marking the [`VERSIONS_DIR`] node (so a real `%versions` key never meets it).
pub const VERSIONS_ATTR: &str = "versions";

/// The node name of one key component; `None` when the component is its own name.
pub fn escape(component: &str) -> Option<String> {
    Some(match component {
        "" => "%empty".into(),
        "." => "%dot".into(),
        ".." => "%dotdot".into(),
        c if c.contains(['\0', '/']) => format!("%hex-{}", hex(c.as_bytes())),
        c if c.starts_with('%') => format!("%{c}"),
        _ => return None,
    })
}

/// The node name of a component (escaped when needed).
pub fn node_name(component: &str) -> String {
    escape(component).unwrap_or_else(|| component.to_string())
}

/// The name a file gets when a directory of its directory has the same name.
pub fn renamed_file(name: &str) -> String {
    format!("%file-{name}")
}

/// Node name of a captured version of the object named `name` (already escaped).
pub fn version_name(name: &str, version_id: &str) -> String {
    let plain = !version_id.is_empty()
        && version_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain { format!("{name};v={version_id}") } else { format!("{name};v=%hex-{}", hex(version_id.as_bytes())) }
}

/// The key component a node stands for.
pub fn original(node: &Node) -> &str {
    node.attrs.get(NAME_ATTR).map_or(node.name.as_str(), String::as_str)
}

/// Whether `node` is a [`VERSIONS_DIR`] node.
pub fn is_versions_dir(node: &Node) -> bool {
    node.attrs.get(VERSIONS_ATTR).is_some_and(|v| v == "true")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a key (relative to the bucket prefix) cannot be read or written exactly through the
/// OpenDAL operator, or `None` when it can. The operator normalizes paths (trims whitespace, drops
/// leading and doubled `/`), and its HTTP client resolves `.` and `..` segments, so such keys
/// would silently address another object: backup and restore to a bucket send them through the
/// exact-key client ([`tidemark_storage_s3::RawBucket`]) instead.
pub fn unaddressable(key: &str) -> Option<&'static str> {
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.is_empty() {
        Some("empty key")
    } else if body.trim() != body {
        Some("key begins or ends with whitespace")
    } else if body.starts_with('/') || body.contains("//") {
        Some("key has an empty path segment ('//' or a leading '/')")
    } else if body.split('/').any(|c| c == "." || c == "..") {
        Some("key has a '.' or '..' segment")
    } else {
        None
    }
}

/// Why a key cannot become a path below a restore directory, or `None` when it can: an empty
/// (`a//b`, `/lead`), `.` or `..` component would resolve to another path (or outside the target),
/// and its escaped node name (`%empty`, `%dot`, `%dotdot`) could be mistaken for a real key.
pub fn not_a_path(key: &str) -> Option<&'static str> {
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.split('/').any(str::is_empty) {
        Some("the key has an empty path segment ('//' or a leading '/')")
    } else if body.split('/').any(|c| c == "." || c == "..") {
        Some("the key has a '.' or '..' segment")
    } else {
        None
    }
}

/// Split a key into its directory components and, unless it is a directory marker (ending in
/// `/`), its file component.
pub fn split_key(key: &str) -> (Vec<&str>, Option<&str>) {
    match key.strip_suffix('/') {
        Some(dir) => (dir.split('/').collect(), None),
        None => {
            let mut parts: Vec<&str> = key.split('/').collect();
            let leaf = parts.pop();
            (parts, leaf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_safe_and_unique() {
        let comps = ["", ".", "..", "%empty", "%", "a\0b", "plain", "%versions", "100%"];
        let names: Vec<String> = comps.iter().map(|c| node_name(c)).collect();
        assert_eq!(names, ["%empty", "%dot", "%dotdot", "%%empty", "%%", "%hex-610062", "plain", "%%versions", "100%"]);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for n in &names {
            assert!(!n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']));
            assert_ne!(n, VERSIONS_DIR);
        }
        assert_eq!(version_name("a.txt", "3HL4kqtJ"), "a.txt;v=3HL4kqtJ");
        assert_eq!(version_name("a", "x;y"), "a;v=%hex-783b79");
    }

    #[test]
    fn keys_split_into_directories_and_a_file() {
        assert_eq!(split_key("a/b/c.txt"), (vec!["a", "b"], Some("c.txt")));
        assert_eq!(split_key("top"), (vec![], Some("top")));
        assert_eq!(split_key("a/b/"), (vec!["a", "b"], None));
        assert_eq!(split_key("a//b"), (vec!["a", ""], Some("b")));
    }

    #[test]
    fn keys_the_client_would_alter_are_flagged() {
        for bad in ["a//b", "/a", " a", "a ", "a/./b", "../x", "a/..", ""] {
            assert!(unaddressable(bad).is_some(), "{bad:?}");
        }
        for good in ["a/b", "a b/c", "dir/", "%x", "a.b/..c"] {
            assert_eq!(unaddressable(good), None, "{good:?}");
            assert_eq!(not_a_path(good), None, "{good:?}");
        }
        for bad in ["a//b", "/a", "a/./b", "../x", "a/..", "a//"] {
            assert!(not_a_path(bad).is_some(), "{bad:?}");
        }
        assert_eq!(not_a_path(" a "), None);
    }
}
