//! S3 Object Lock through `S3Storage` (`lock_days` in the URL) against moto, one bucket per test.
//!
//! s3s-fs has no Object Lock (it answers 501 or ignores the headers), so these run on moto only.

use std::time::{Duration, SystemTime};

use tidemark_storage::{ErrorKind, Storage, renewal_margin};
use tidemark_storage_s3::{LockMode, ObjectLock, S3Config, S3Storage};
use tidemark_testkit::{BucketOptions, S3Server};

const DAY: Duration = Duration::from_secs(86_400);

fn locked_bucket(test: &str) -> Option<(&'static S3Server, String)> {
    let server = S3Server::shared_or_skip(test)?;
    let bucket = server.new_bucket_with(&BucketOptions { object_lock: true, ..Default::default() }).unwrap();
    Some((server, bucket))
}

fn open(server: &S3Server, bucket: &str, options: &str) -> S3Storage {
    let (id, secret) = S3Server::credentials();
    let url = format!("{}{options}", server.url(bucket, "repo"));
    S3Storage::new(S3Config::from_url(&url).unwrap().with_credentials(id, secret)).unwrap()
}

fn about(time: SystemTime, expected: SystemTime) -> bool {
    let diff = time.duration_since(expected).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    diff < Duration::from_secs(120)
}

#[test]
fn created_objects_are_locked_and_their_versions_cannot_be_deleted() {
    let Some((server, bucket)) = locked_bucket("created_objects_are_locked") else { return };
    let s = open(server, &bucket, "&lock_days=2");
    assert_eq!(s.object_lock(), Some(ObjectLock { mode: LockMode::Compliance, days: 2 }));
    let retention = s.retention().expect("a locked storage has retention");
    assert_eq!(retention.period(), 2 * DAY);

    s.put("data/ab/ab01", b"pack bytes").unwrap();
    assert_eq!(s.put("data/ab/ab01", b"other").unwrap_err().kind(), ErrorKind::AlreadyExists);
    // A second handle knows nothing: it asks the server, which has the retention of the PUT.
    let fresh = open(server, &bucket, "&lock_days=2");
    let until = fresh.retention().unwrap().retained_until("data/ab/ab01").unwrap().expect("retained");
    // Two days and the renewal margin (a tenth of the period).
    assert!(about(until, SystemTime::now() + 2 * DAY + renewal_margin(2 * DAY)), "{until:?}");
    assert_eq!(renewal_margin(2 * DAY), DAY / 5);

    // The server refuses to delete the locked version; the object is still there, intact.
    let err = fresh.delete("data/ab/ab01").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("Object Lock retention"), "{err}");
    assert_eq!(fresh.get("data/ab/ab01").unwrap(), b"pack bytes");

    // Lock files carry no retention: refreshed in place, then deleted with all their versions.
    s.put("locks/l1", b"a").unwrap();
    s.put_overwrite("locks/l1", b"b").unwrap();
    assert_eq!(fresh.retention().unwrap().retained_until("locks/l1").unwrap(), None);
    s.delete("locks/l1").unwrap();
    assert_eq!(s.stat("locks/l1").unwrap(), None);
    assert!(s.list("locks/").unwrap().is_empty());
    s.delete("locks/l1").unwrap();

    // An object written without retention (before lock_days was set) is deleted for good.
    let plain = open(server, &bucket, "");
    plain.put("index/old", b"i").unwrap();
    assert_eq!(fresh.retention().unwrap().retained_until("index/old").unwrap(), None);
    fresh.delete("index/old").unwrap();
    assert_eq!(fresh.stat("index/old").unwrap(), None);
}

#[test]
fn retention_is_extended_never_shortened() {
    let Some((server, bucket)) = locked_bucket("retention_is_extended_never_shortened") else { return };
    let s = open(server, &bucket, "&lock_days=1&lock_mode=governance");
    s.put("data/cd/cd01", b"x").unwrap();
    let r = s.retention().unwrap();
    let later = SystemTime::now() + 5 * DAY;
    r.extend("data/cd/cd01", later).unwrap();
    let fresh = open(server, &bucket, "&lock_days=1&lock_mode=governance");
    let until = fresh.retention().unwrap().retained_until("data/cd/cd01").unwrap().unwrap();
    assert!(about(until, later), "{until:?}");
    // Asking for less than it has changes nothing (moto would even shorten; we never ask).
    fresh.retention().unwrap().extend("data/cd/cd01", SystemTime::now() + DAY).unwrap();
    let again = open(server, &bucket, "").retention().map(|_| ());
    assert_eq!(again, None, "a storage without lock_days has no retention");
    let reread = open(server, &bucket, "&lock_days=1").retention().unwrap().retained_until("data/cd/cd01").unwrap();
    assert!(about(reread.unwrap(), later), "{reread:?}");
    // Governance mode: still refused without the bypass permission.
    assert_eq!(fresh.delete("data/cd/cd01").unwrap_err().kind(), ErrorKind::PermissionDenied);
    // A missing object has no retention.
    assert_eq!(fresh.retention().unwrap().retained_until("data/cd/none").unwrap(), None);
}

#[test]
fn what_is_known_of_retention_is_kept_between_processes_in_compliance_mode() {
    let Some((server, bucket)) = locked_bucket("what_is_known_of_retention_is_kept") else { return };
    let dir = std::env::temp_dir().join(format!("tidemark-retention-cache-{}", std::process::id()));
    let cache = dir.join("r.txt");
    let with_cache = |options: &str| {
        let (id, secret) = S3Server::credentials();
        let url = format!("{}{options}", server.url(&bucket, "repo"));
        let mut config = S3Config::from_url(&url).unwrap().with_credentials(id, secret);
        config.retention_cache = Some(cache.clone());
        S3Storage::new(config).unwrap()
    };
    let s = with_cache("&lock_days=3");
    s.put("data/ef/ef01", b"x").unwrap();
    drop(s);
    assert!(std::fs::read_to_string(&cache).unwrap().contains(" data/ef/ef01\n"));
    // The next process knows without asking: remove the object behind its back (it is locked,
    // so use a key that is only in the cache) and the cache still answers.
    std::fs::write(
        &cache,
        format!(
            "{} data/ef/only-cached\n",
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 5 * 86_400
        ),
    )
    .unwrap();
    let s = with_cache("&lock_days=3");
    assert!(s.retention().unwrap().retained_until("data/ef/only-cached").unwrap().is_some());
    drop(s);
    // Governance retention can be shortened by a privileged credential: no cache is trusted.
    let s = with_cache("&lock_days=3&lock_mode=governance");
    assert_eq!(s.retention().unwrap().retained_until("data/ef/only-cached").unwrap(), None);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bucket_without_object_lock_is_a_clear_error() {
    let Some(server) = S3Server::shared_or_skip("a_bucket_without_object_lock") else { return };
    let bucket = server.new_bucket().unwrap();
    let s = open(server, &bucket, "&lock_days=1");
    let err = s.put("config", b"{}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("Object Lock enabled"), "{err}");
}
