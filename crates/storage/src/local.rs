//! A backend on a local (or mounted) filesystem directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::memory::{already_exists, range_error};
use crate::{Entry, ErrorKind, Result, Storage, StorageError, check_key};

/// Names of in-flight temporary files start with this; listings skip them and keys may not use it.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Objects as files under a root directory, the key being the relative path.
///
/// - `put` writes a temporary file `.tmp-<pid>-<n>-<nanos>` in the target's directory, fsyncs it,
///   then hard-links it to the final name (`link(2)` fails atomically when the name exists, which
///   gives create-only semantics that `rename(2)` lacks), removes the temporary name and fsyncs the
///   directory. Readers therefore see the whole object or nothing. The filesystem must support
///   hard links (every local POSIX filesystem does; some network or FUSE mounts do not).
/// - `put_overwrite` renames the fsynced temporary file over the target.
/// - The root and missing parent directories are created on first write, never by [`new`](Self::new).
/// - `list` walks the tree recursively, skips `.tmp-` files and fails on any I/O error instead of
///   returning fewer entries.
/// - I/O errors map to [`ErrorKind`]s: not found, already exists, permission denied, storage full
///   (`ENOSPC`, `EDQUOT`), transient (timeouts, interrupted calls), and permanent for the rest; the
///   message names the path.
///
/// ```
/// use tidemark_storage::{LocalStorage, Storage};
/// let dir = tempfile::tempdir().unwrap();
/// let s = LocalStorage::new(dir.path().join("repo"));
/// s.put("config", b"{}").unwrap();
/// assert!(s.put("config", b"[]").is_err());
/// assert_eq!(s.get("config").unwrap(), b"{}");
/// ```
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A store rooted at `root`; nothing is touched until the first operation.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Write `data` to a fresh fsynced temporary file next to `target`; returns its path.
    fn write_temp(&self, key: &str, target: &Path, data: &[u8]) -> Result<PathBuf> {
        let dir = target.parent().unwrap_or(&self.root);
        create_dirs(dir).map_err(|e| io_error(e, "create directory", dir, key))?;
        let (tmp, mut file) = create_temp(dir).map_err(|e| io_error(e, "create a file in", dir, key))?;
        let written = write_data(&tmp, &mut file, data).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(e, "write", &tmp, key));
        }
        Ok(tmp)
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Objects at least this large whose bytes start on a page boundary are written with `O_DIRECT`.
const DIRECT_MIN: usize = 1024 * 1024;
/// Alignment `O_DIRECT` needs for memory, file offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

/// Write `data` into the new file `file` (at `path`). Large page-aligned data (packs built with
/// `PackWriter::with_aligned_capacity`) goes through a second descriptor opened with `O_DIRECT`,
/// which spares the kernel a page-cache copy of every pack byte (the largest CPU cost of a backup
/// in bench/RESULTS.md); the unaligned tail, and any filesystem that refuses direct I/O, take the
/// ordinary path. The caller fsyncs `file` either way.
fn write_data(path: &Path, file: &mut File, data: &[u8]) -> io::Result<()> {
    let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    if data.len() < DIRECT_MIN || !(data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
        return file.write_all(data);
    }
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
    };
    let done = match direct {
        Ok(mut d) => match d.write_all(&data[..aligned]) {
            Ok(()) => aligned,
            // EINVAL: this filesystem or device does not take direct I/O after all.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => 0,
            Err(e) => return Err(e),
        },
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => 0,
        Err(e) => return Err(e),
    };
    file.write_all_at(&data[done..], done as u64)
}

/// Create a new temporary file in `dir` with a name no other process or thread uses.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!("{TEMP_PREFIX}{}-{n}-{nanos}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            // Only possible with a leftover from a crashed process that had our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `create_dir_all` that also fsyncs the parent of every directory it creates, so that a new
/// object's directory entry chain survives a crash.
fn create_dirs(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer created it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Map an I/O error to a storage error whose message names the operation and the path.
pub(crate) fn io_error(err: io::Error, action: &str, path: &Path, key: &str) -> StorageError {
    let kind = match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::StorageFull,
        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => ErrorKind::Transient,
        // ENOSPC and EDQUOT on Linux, in case the standard library maps them to another kind.
        _ if matches!(err.raw_os_error(), Some(28 | 122)) => ErrorKind::StorageFull,
        _ => ErrorKind::Permanent,
    };
    let hint = match kind {
        ErrorKind::PermissionDenied => ": check the ownership and mode of the repository directory",
        ErrorKind::StorageFull => ": free some space or raise the quota",
        _ => "",
    };
    StorageError::new(kind, format!("cannot {action} {}: {err}{hint}", path.display())).with_key(key).with_source(err)
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        // Start at the deepest directory the prefix names; below it, filter on the rest.
        let (dir_key, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if dir_key.split('/').any(|part| part == "..") {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                format!("invalid listing prefix {prefix:?}: it has a '..' component"),
            ));
        }
        let mut entries = Vec::new();
        walk(&self.root.join(dir_key), dir_key, name_prefix, &mut entries)?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        fs::read(&path).map_err(|e| io_error(e, "read", &path, key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path_of(key)?;
        let file = File::open(&path).map_err(|e| io_error(e, "open", &path, key))?;
        let size = file.metadata().map_err(|e| io_error(e, "stat", &path, key))?.len();
        if range.start > range.end || range.end > size {
            return Err(range_error(key, &range, size));
        }
        let len = usize::try_from(range.end - range.start).map_err(|_| range_error(key, &range, size))?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, range.start).map_err(|e| io_error(e, "read", &path, key))?;
        Ok(buf)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path_of(key)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e, "stat", &path, key)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(key, &path, data)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_exists(key)),
            Err(e) => return Err(io_error(e, "link a temporary file to", &path, key)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| io_error(e, "fsync directory", dir, key))
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(key)?;
        let tmp = self.write_temp(key, &path, data)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(e, "rename a temporary file to", &path, key));
        }
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| io_error(e, "fsync directory", dir, key))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e, "delete", &path, key)),
        }
    }
}

/// Collect the files under `dir` (whose key prefix is `dir_key`, empty or ending in `/`) whose
/// names start with `name_prefix`, and everything below matching subdirectories.
fn walk(dir: &Path, dir_key: &str, name_prefix: &str, out: &mut Vec<Entry>) -> Result<()> {
    let read_dir = match fs::read_dir(dir) {
        Ok(read_dir) => read_dir,
        // A directory nobody wrote into yet holds no objects.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e, "list", dir, dir_key)),
    };
    for entry in read_dir {
        let entry = entry.map_err(|e| io_error(e, "list", dir, dir_key))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(StorageError::new(
                ErrorKind::Permanent,
                format!("cannot list {}: {:?} is not UTF-8", dir.display(), entry.file_name()),
            ));
        };
        if name.starts_with(TEMP_PREFIX) || !name.starts_with(name_prefix) {
            continue;
        }
        let key = format!("{dir_key}{name}");
        let file_type = entry.file_type().map_err(|e| io_error(e, "stat", &entry.path(), &key))?;
        if file_type.is_dir() {
            walk(&entry.path(), &format!("{key}/"), "", out)?;
        } else if file_type.is_file() {
            let meta = entry.metadata().map_err(|e| io_error(e, "stat", &entry.path(), &key))?;
            out.push(Entry { key, size: meta.len() });
        }
        // Symlinks, sockets and the like are never written by this backend: not objects.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    fn store() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("repo"));
        (dir, s)
    }

    #[test]
    fn root_is_created_lazily_and_missing_root_lists_empty() {
        let (_dir, s) = store();
        assert!(!s.root().exists());
        assert_eq!(s.list("").unwrap(), []);
        assert_eq!(s.stat("a").unwrap(), None);
        assert!(!s.root().exists());
        s.put("a/b/c", b"x").unwrap();
        assert!(s.root().join("a/b/c").is_file());
    }

    #[test]
    fn large_aligned_and_unaligned_puts_read_back_exactly() {
        let (_dir, s) = store();
        let data: Vec<u8> =
            (0..3 * 1024 * 1024 + 123).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        // An aligned copy (as packs are built) takes the O_DIRECT path; an offset one the normal path.
        let mut buf: Vec<u8> = Vec::with_capacity(data.len() + 2 * DIRECT_ALIGN);
        let pad = buf.as_ptr().align_offset(DIRECT_ALIGN);
        buf.resize(pad, 0);
        buf.extend_from_slice(&data);
        s.put("data/aligned", &buf[pad..]).unwrap();
        buf.insert(pad, 0);
        s.put("data/unaligned", &buf[pad + 1..]).unwrap();
        assert_eq!(s.get("data/aligned").unwrap(), data);
        assert_eq!(s.get("data/unaligned").unwrap(), data);
        assert_eq!(s.stat("data/aligned").unwrap(), Some(data.len() as u64));
    }

    #[test]
    fn put_never_overwrites() {
        let (_dir, s) = store();
        s.put("snapshots/1", b"first").unwrap();
        let err = s.put("snapshots/1", b"second").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(err.key(), Some("snapshots/1"));
        assert_eq!(s.get("snapshots/1").unwrap(), b"first");
        s.put_overwrite("snapshots/1", b"third").unwrap();
        assert_eq!(s.get("snapshots/1").unwrap(), b"third");
        s.put_overwrite("locks/new", b"l").unwrap();
        assert_eq!(s.get("locks/new").unwrap(), b"l");
        assert_eq!(leftover_temp_files(s.root()), 0);
    }

    #[test]
    fn concurrent_puts_of_one_key_have_exactly_one_winner() {
        let (_dir, s) = store();
        let s = Arc::new(s);
        let barrier = Arc::new(Barrier::new(8));
        let results: Vec<_> = (0..8u8)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.put("data/k", &[i; 1000]).map(|()| i)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<u8> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(results.iter().flatten().count() == 1);
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.kind() == ErrorKind::AlreadyExists));
        assert_eq!(s.get("data/k").unwrap(), [winners[0]; 1000]);
        assert_eq!(leftover_temp_files(s.root()), 0);
    }

    fn leftover_temp_files(dir: &Path) -> usize {
        let mut n = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                n += leftover_temp_files(&entry.path());
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn listing_is_recursive_prefixed_sorted_and_hides_temp_files() {
        let (_dir, s) = store();
        for key in ["data/ab/2", "data/ab/1", "data/ac/3", "index/1", "data0", "keys/k"] {
            s.put(key, key.as_bytes()).unwrap();
        }
        // An in-flight write of another process, and a stray directory that is not an object.
        fs::write(s.root().join("data/ab/.tmp-999-0-0"), b"partial").unwrap();
        fs::create_dir_all(s.root().join("data/empty")).unwrap();
        let keys = |p| s.list(p).unwrap().into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(keys("data/"), ["data/ab/1", "data/ab/2", "data/ac/3"]);
        assert_eq!(keys("data/ab"), ["data/ab/1", "data/ab/2"]);
        assert_eq!(keys("data"), ["data/ab/1", "data/ab/2", "data/ac/3", "data0"]);
        assert_eq!(keys("").len(), 6);
        assert_eq!(keys("nothing/"), Vec::<String>::new());
        assert_eq!(s.list("index/").unwrap(), [Entry { key: "index/1".into(), size: 7 }]);
        assert!(s.list("../").is_err());
    }

    #[test]
    fn listing_errors_propagate_instead_of_short_lists() {
        let (_dir, s) = store();
        s.put("data/ab/1", b"x").unwrap();
        // A name that is not UTF-8 cannot be a key: the listing fails rather than skipping it.
        let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff");
        fs::write(s.root().join("data").join(bad), b"").unwrap();
        assert_eq!(s.list("data/").unwrap_err().kind(), ErrorKind::Permanent);
        // A file where a directory should be is an error, not an empty listing.
        let (_dir2, s2) = store();
        fs::create_dir_all(s2.root()).unwrap();
        fs::write(s2.root().join("data"), b"").unwrap();
        assert!(s2.list("data/").is_err());
    }

    #[test]
    fn get_range_stat_delete() {
        let (_dir, s) = store();
        s.put("k", b"0123456789").unwrap();
        assert_eq!(s.get_range("k", 3..7).unwrap(), b"3456");
        assert_eq!(s.get_range("k", 10..10).unwrap(), b"");
        let err = s.get_range("k", 5..11).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("10 bytes"), "{err}");
        assert_eq!(s.stat("k").unwrap(), Some(10));
        s.delete("k").unwrap();
        s.delete("k").unwrap();
        assert_eq!(s.stat("k").unwrap(), None);
        let err = s.get("k").unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains(&s.root().join("k").display().to_string()), "{err}");
        assert!(s.get_range("k", 0..1).unwrap_err().is_not_found());
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let p = Path::new("/repo/data/x");
        let kind = |e: io::Error| io_error(e, "write", p, "data/x").kind();
        assert_eq!(kind(io::Error::from_raw_os_error(28)), ErrorKind::StorageFull); // ENOSPC
        assert_eq!(kind(io::Error::from_raw_os_error(122)), ErrorKind::StorageFull); // EDQUOT
        assert_eq!(kind(io::Error::from_raw_os_error(13)), ErrorKind::PermissionDenied); // EACCES
        assert_eq!(kind(io::Error::from_raw_os_error(2)), ErrorKind::NotFound);
        assert_eq!(kind(io::Error::from_raw_os_error(17)), ErrorKind::AlreadyExists);
        assert_eq!(kind(io::Error::from_raw_os_error(5)), ErrorKind::Permanent); // EIO
        assert_eq!(kind(io::Error::from(io::ErrorKind::TimedOut)), ErrorKind::Transient);
        let err = io_error(io::Error::from_raw_os_error(28), "write", p, "data/x");
        let text = err.to_string();
        assert!(text.contains("/repo/data/x") && text.contains("free some space"), "{text}");
        assert_eq!(err.key(), Some("data/x"));
    }

    #[test]
    fn read_only_directory_is_permission_denied() {
        let (_dir, s) = store();
        s.put("data/a", b"x").unwrap();
        let data = s.root().join("data");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o555)).unwrap();
        let result = s.put("data/b", b"y");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        match result {
            // root (CAP_DAC_OVERRIDE) ignores directory modes, and these tests usually run as root;
            // the mapping itself is covered by io_errors_map_to_kinds.
            Ok(()) => {
                eprintln!("skipped: running with CAP_DAC_OVERRIDE, mode 0555 does not deny writes")
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
                assert!(err.to_string().contains(&data.display().to_string()), "{err}");
            }
        }
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_an_error() {
        let (_dir, s) = store();
        s.put("data", b"x").unwrap();
        let err = s.put("data/a", b"y").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
        assert_eq!(leftover_temp_files(s.root()), 0);
    }
}
