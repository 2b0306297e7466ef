//! `S3Storage` against a real S3 server (moto, started by the test kit), one bucket per test.
//!
//! Without moto these tests skip loudly, unless `CI` or `TIDEMARK_REQUIRE_S3=1` is set: then they
//! fail and say to run `scripts/install-test-deps`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_storage::{Entry, ErrorKind, RetryStorage, Storage};
use tidemark_storage_s3::{S3Config, S3Storage};
use tidemark_testkit::{BucketOptions, Retention, RetentionMode, S3Server};

/// A storage on a fresh bucket of the shared server, or `None` when the test is skipped.
fn storage(test: &str, prefix: &str) -> Option<(&'static S3Server, String, S3Storage)> {
    let server = S3Server::shared_or_skip(test)?;
    let bucket = server.new_bucket().unwrap();
    let s3 = open(server, &bucket, prefix);
    Some((server, bucket, s3))
}

fn open(server: &S3Server, bucket: &str, prefix: &str) -> S3Storage {
    let (id, secret) = S3Server::credentials();
    let config = S3Config::from_url(&server.url(bucket, prefix)).unwrap().with_credentials(id, secret);
    S3Storage::new(config).unwrap()
}

fn keys(entries: Vec<Entry>) -> Vec<String> {
    entries.into_iter().map(|e| e.key).collect()
}

#[test]
fn objects_round_trip() {
    let Some((_, bucket, s)) = storage("objects_round_trip", "repo/one") else {
        return;
    };
    assert!(s.location().starts_with(&format!("s3://{bucket}/repo/one (endpoint http://127.0.0.1:")));

    s.put("data/ab/ab01", b"0123456789").unwrap();
    s.put("data/ac/ac02", b"xy").unwrap();
    s.put("index/01", b"i").unwrap();
    s.put("config", b"{}").unwrap();

    assert_eq!(s.get("data/ab/ab01").unwrap(), b"0123456789");
    assert_eq!(s.get_range("data/ab/ab01", 2..5).unwrap(), b"234");
    assert_eq!(s.get_range("data/ab/ab01", 9..10).unwrap(), b"9");
    assert_eq!(s.get_range("data/ab/ab01", 10..10).unwrap(), b"");
    for bad in [5..11, 10..12, 20..30] {
        let err = s.get_range("data/ab/ab01", bad.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent, "{bad:?}: {err}");
        assert!(err.to_string().contains("10 bytes"), "{bad:?}: {err}");
    }

    assert_eq!(s.stat("data/ac/ac02").unwrap(), Some(2));
    assert_eq!(s.stat("data/ac/missing").unwrap(), None);
    // A "directory" is not an object.
    assert_eq!(s.stat("data/ab").unwrap(), None);

    assert_eq!(keys(s.list("data/").unwrap()), ["data/ab/ab01", "data/ac/ac02"]);
    assert_eq!(keys(s.list("data/ab").unwrap()), ["data/ab/ab01"]);
    assert_eq!(keys(s.list("").unwrap()), ["config", "data/ab/ab01", "data/ac/ac02", "index/01"]);
    assert_eq!(s.list("index/").unwrap(), [Entry { key: "index/01".into(), size: 1 }]);
    assert_eq!(s.list("nothing/").unwrap(), []);

    let missing = s.get("data/zz").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert_eq!(missing.key(), Some("data/zz"));
    assert!(s.get_range("data/zz", 0..1).unwrap_err().is_not_found());

    s.delete("data/ac/ac02").unwrap();
    s.delete("data/ac/ac02").unwrap();
    assert_eq!(s.stat("data/ac/ac02").unwrap(), None);
    assert_eq!(keys(s.list("data/").unwrap()), ["data/ab/ab01"]);
}

#[test]
fn put_is_create_only_and_put_overwrite_replaces() {
    let Some((_, _, s)) = storage("put_is_create_only", "") else {
        return;
    };
    s.put("snapshots/1", b"first").unwrap();
    let err = s.put("snapshots/1", b"second").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.key(), Some("snapshots/1"));
    assert_eq!(s.get("snapshots/1").unwrap(), b"first");

    s.put_overwrite("locks/1", b"a").unwrap();
    s.put_overwrite("locks/1", b"bb").unwrap();
    assert_eq!(s.get("locks/1").unwrap(), b"bb");

    // Identical bytes do not make a first attempt succeed: only a retry after a transient failure
    // compares (see RetryStorage).
    let retrying = RetryStorage::new(s);
    assert_eq!(retrying.put("snapshots/1", b"first").unwrap_err().kind(), ErrorKind::AlreadyExists);
}

#[test]
fn concurrent_creates_of_one_key_have_one_winner() {
    let Some((_, _, s)) = storage("concurrent_creates", "p") else {
        return;
    };
    let s = Arc::new(s);
    let results: Vec<_> = (0..6u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || s.put("keys/k", &[i; 64]).map(|()| i))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winners: Vec<u8> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    }
    assert_eq!(s.get("keys/k").unwrap(), [winners[0]; 64]);
}

#[test]
fn listing_pages_past_1000_keys() {
    let Some((_, _, s)) = storage("listing_pages_past_1000_keys", "big") else {
        return;
    };
    let s = Arc::new(s);
    let threads = 8;
    let total = 1100;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in (t..total).step_by(threads) {
                    s.put(&format!("data/{:02x}/{i:05}", i % 256), b"x").unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    s.put("index/1", b"").unwrap();
    let listed = s.list("data/").unwrap();
    assert_eq!(listed.len(), total);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
    assert!(listed.iter().all(|e| e.size == 1));
    assert_eq!(s.list("").unwrap().len(), total + 1);
    assert_eq!(s.list("data/07/").unwrap().len(), 5); // 7, 263, 519, 775, 1031
}

#[test]
fn prefixes_isolate_repositories_in_one_bucket() {
    let Some((server, bucket, a)) = storage("prefixes_isolate", "a") else {
        return;
    };
    let ab = open(server, &bucket, "ab");
    let whole = open(server, &bucket, "");
    a.put("config", b"a").unwrap();
    ab.put("config", b"ab").unwrap();
    assert_eq!(keys(a.list("").unwrap()), ["config"]);
    assert_eq!(a.get("config").unwrap(), b"a");
    assert_eq!(ab.get("config").unwrap(), b"ab");
    assert_eq!(keys(whole.list("").unwrap()), ["a/config", "ab/config"]);
}

#[test]
fn missing_bucket_is_a_clear_permanent_error() {
    let Some(server) = S3Server::shared_or_skip("missing_bucket") else {
        return;
    };
    let s = open(server, "no-such-bucket-here", "");
    let err = s.put("config", b"{}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("bucket exists"), "{err}");
    let err = s.list("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
}

#[test]
fn uploads_carry_a_checksum_that_object_lock_buckets_accept() {
    // S3 refuses PutObject into an Object Lock bucket without Content-MD5 or x-amz-checksum-*.
    let Some(server) = S3Server::shared_or_skip("object_lock_upload") else {
        return;
    };
    let options = BucketOptions {
        object_lock: true,
        default_retention: Some(Retention { mode: RetentionMode::Governance, days: 1 }),
        ..BucketOptions::default()
    };
    let bucket = server.new_bucket_with(&options).unwrap();
    let s = open(server, &bucket, "repo");
    s.put("data/00/locked", b"locked bytes").unwrap();
    assert_eq!(s.get("data/00/locked").unwrap(), b"locked bytes");
    assert_eq!(s.put("data/00/locked", b"other").unwrap_err().kind(), ErrorKind::AlreadyExists);
}

#[test]
fn large_objects_go_up_in_one_piece() {
    let Some((_, _, s)) = storage("large_objects", "") else {
        return;
    };
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    s.put("data/big", &data).unwrap();
    assert_eq!(s.stat("data/big").unwrap(), Some(data.len() as u64));
    assert_eq!(s.get("data/big").unwrap(), data);
    let start = 5 * 1024 * 1024 + 3;
    assert_eq!(s.get_range("data/big", start as u64..start as u64 + 100).unwrap(), data[start..start + 100]);
}

#[test]
fn nothing_listening_becomes_unreachable_after_retries() {
    // Needs no server: a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = S3Config::from_url(&format!("s3://bkt/p?endpoint={endpoint}&path_style=true"))
        .unwrap()
        .with_credentials("testing", "testing");
    let s3 = S3Storage::new(config).unwrap();
    let direct = s3.get("config").unwrap_err();
    assert_eq!(direct.kind(), ErrorKind::Transient, "{direct}");

    let s = RetryStorage::new(s3).with_attempts(3).with_delays(Duration::from_millis(5), Duration::from_millis(20));
    let start = Instant::now();
    for err in [s.get("config").unwrap_err(), s.put("config", b"x").unwrap_err(), s.list("").unwrap_err()] {
        assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
        let text = err.to_string();
        let expected = format!("storage at s3://bkt/p (endpoint {endpoint}) unreachable after 3 attempts");
        assert!(text.starts_with(&expected), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_keys_are_refused_before_any_request() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = S3Storage::from_url(&format!("s3://bkt?endpoint=http://127.0.0.1:{port}&allow_anonymous=true")).unwrap();
    for key in ["", "/abs", "a/../b", " padded"] {
        assert_eq!(s.put(key, b"").unwrap_err().kind(), ErrorKind::Permanent, "{key:?}");
    }
    assert_eq!(s.list("../").unwrap_err().kind(), ErrorKind::Permanent);
}

/// Accept one HTTP request on `listener`, answer `status`, and return the request's head.
fn capture_one_request(listener: TcpListener, status: &'static str) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let response = format!("HTTP/1.1 {status}\r\nETag: \"e\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        reader.get_mut().write_all(response.as_bytes()).unwrap();
        head
    })
}

#[test]
fn put_sends_if_none_match_and_content_md5() {
    // Checked on the wire, since a server that ignores the headers would accept the upload anyway.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let request = capture_one_request(listener, "200 OK");
    let s = S3Storage::new(
        S3Config::from_url(&format!("s3://bkt/p?endpoint={endpoint}&path_style=true"))
            .unwrap()
            .with_credentials("testing", "testing"),
    )
    .unwrap();
    s.put("data/1", b"hello").unwrap();
    let head = request.join().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("put /bkt/p/data/1 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nif-none-match: *\r\n"), "{head}");
    // base64(md5("hello"))
    assert!(head.contains("\r\ncontent-md5: xufakrxlkna5cz2rebfFkg==\r\n".to_ascii_lowercase().as_str()), "{head}");
}

#[test]
fn precondition_failed_is_already_exists() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let request = capture_one_request(listener, "412 Precondition Failed");
    let s = S3Storage::new(
        S3Config::from_url(&format!("s3://bkt?endpoint={endpoint}&path_style=true"))
            .unwrap()
            .with_credentials("testing", "testing"),
    )
    .unwrap();
    let err = s.put("data/1", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    request.join().unwrap();
}

#[test]
fn usable_and_droppable_inside_an_async_runtime() {
    let Some((_, _, s)) = storage("inside_async_runtime", "") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        s.put("config", b"{}").unwrap();
        assert_eq!(s.get("config").unwrap(), b"{}");
        drop(s);
    });
}

#[test]
fn aws_without_region_is_a_setup_error_with_the_fix() {
    let config = S3Config { region: None, endpoint: None, ..S3Config::new("bkt") };
    let err = S3Storage::new(config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("AWS_REGION"), "{err}");
}
