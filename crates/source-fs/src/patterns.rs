//! Gitignore-like glob patterns for backup excludes and restore includes.
//!
//! | pattern | matches |
//! |---|---|
//! | `*.tmp`, `cache` (no `/`) | the basename, at any depth |
//! | `/srv/data/cache` (leading `/`) | the full absolute (snapshot) path |
//! | `logs/*.gz` (inner `/`) | the end of the full path: `**/logs/*.gz` |
//! | `cache/` (trailing `/`) | like `cache`, but directories only |
//!
//! `*` and `?` never match `/`; `**` does. A backslash escapes the next character.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::FsError;

/// A compiled set of patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    full_any: GlobSet,
    base_any: GlobSet,
    full_dir: GlobSet,
    base_dir: GlobSet,
    count: usize,
}

struct Builders {
    full_any: GlobSetBuilder,
    base_any: GlobSetBuilder,
    full_dir: GlobSetBuilder,
    base_dir: GlobSetBuilder,
}

impl Default for Builders {
    fn default() -> Self {
        Builders {
            full_any: GlobSetBuilder::new(),
            base_any: GlobSetBuilder::new(),
            full_dir: GlobSetBuilder::new(),
            base_dir: GlobSetBuilder::new(),
        }
    }
}

fn pattern_error(pattern: &str, message: impl ToString) -> FsError {
    FsError::Pattern { pattern: pattern.to_string(), message: message.to_string() }
}

impl Patterns {
    /// Compile `patterns`; an invalid glob is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Patterns, FsError> {
        let mut b = Builders::default();
        let mut count = 0;
        for pattern in patterns {
            let (body, dir_only) = match pattern.strip_suffix('/') {
                Some(body) => (body, true),
                None => (pattern.as_str(), false),
            };
            if body.is_empty() || body.trim_matches('/').is_empty() {
                return Err(pattern_error(pattern, "empty pattern"));
            }
            let (glob, full) = if body.starts_with('/') {
                (body.to_string(), true)
            } else if body.contains('/') {
                (format!("**/{body}"), true)
            } else {
                (body.to_string(), false)
            };
            let glob = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| pattern_error(pattern, e.kind()))?;
            let set = match (full, dir_only) {
                (true, false) => &mut b.full_any,
                (false, false) => &mut b.base_any,
                (true, true) => &mut b.full_dir,
                (false, true) => &mut b.base_dir,
            };
            set.add(glob);
            count += 1;
        }
        let build = |set: GlobSetBuilder| set.build().map_err(|e| pattern_error(&patterns.join(" "), e));
        Ok(Patterns {
            full_any: build(b.full_any)?,
            base_any: build(b.base_any)?,
            full_dir: build(b.full_dir)?,
            base_dir: build(b.base_dir)?,
            count,
        })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the absolute `path` (a directory when `is_dir`) matches any pattern.
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        if self.count == 0 {
            return false;
        }
        let base = path.file_name().map(Path::new);
        let base_match = |set: &GlobSet| base.is_some_and(|b| set.is_match(b));
        self.full_any.is_match(path)
            || base_match(&self.base_any)
            || (is_dir && (self.full_dir.is_match(path) || base_match(&self.base_dir)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(patterns: &[&str]) -> Patterns {
        Patterns::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn basename_patterns_match_at_any_depth() {
        let x = p(&["*.tmp", "cache"]);
        assert!(x.matches(Path::new("/a/b/c.tmp"), false));
        assert!(x.matches(Path::new("/a/cache"), true));
        assert!(x.matches(Path::new("/cache"), false));
        assert!(!x.matches(Path::new("/a/c.tmp.keep"), false));
        assert!(!x.matches(Path::new("/a/cached"), true));
    }

    #[test]
    fn anchored_and_inner_slash_patterns_match_full_paths() {
        let x = p(&["/srv/data/skip", "logs/*.gz"]);
        assert!(x.matches(Path::new("/srv/data/skip"), true));
        assert!(!x.matches(Path::new("/other/srv/data/skip"), true));
        assert!(x.matches(Path::new("/var/logs/a.gz"), false));
        assert!(!x.matches(Path::new("/var/logs/sub/a.gz"), false));
        let deep = p(&["/srv/**/*.o"]);
        assert!(deep.matches(Path::new("/srv/x/y/z.o"), false));
        assert!(!deep.matches(Path::new("/srv/x/y/z.c"), false));
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        let x = p(&["build/", "/abs/dir/"]);
        assert!(x.matches(Path::new("/p/build"), true));
        assert!(!x.matches(Path::new("/p/build"), false));
        assert!(x.matches(Path::new("/abs/dir"), true));
        assert!(!x.matches(Path::new("/abs/dir"), false));
    }

    #[test]
    fn empty_set_matches_nothing_and_bad_patterns_are_errors() {
        let x = p(&[]);
        assert!(x.is_empty());
        assert!(!x.matches(Path::new("/a"), false));
        assert!(Patterns::new(&["a[".to_string()]).is_err());
        assert!(Patterns::new(&["/".to_string()]).is_err());
        assert!(Patterns::new(&[String::new()]).is_err());
    }
}
