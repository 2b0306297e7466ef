//! Keys OpenDAL cannot address (`a//b`, `/lead`, `x/./y`, `x/../y`, `dots/..`) are backed up and
//! restored into a bucket exactly, and refused (reported) by a restore into a directory.
//!
//! The objects are written and read back with boto3 (the AWS SDK for Python, installed with
//! moto), an S3 client independent of tidemark and of OpenDAL, which sends such keys unchanged.

#[allow(dead_code)]
mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tidemark_repo::NoProgress;
use tidemark_source_objects::{BucketBackupOptions, BucketRestoreOptions, Target, backup_bucket, restore_bucket};
use tidemark_testkit::{BucketOptions, S3Server};
use util::{credentials, repo, server, url};

/// The keys only the exact-key path can address.
const ODD: [&str; 5] = ["a//b", "/lead", "x/./y", "x/../y", "dots/.."];

/// Puts objects (`PUT`, stdin: lines `KEY_HEX DATA_HEX CONTENT_TYPE META_JSON`), deletes them
/// (`DEL`, stdin: lines `KEY_HEX`) or dumps every
/// object of the bucket (`DUMP`, stdout: JSON `{key: [data_hex, content_type, metadata]}`).
const BOTO: &str = r#"
import boto3, json, sys
endpoint, bucket, mode = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
if mode == "PUT":
    for line in sys.stdin.read().splitlines():
        key, data, ct, meta = line.split(" ", 3)
        s3.put_object(Bucket=bucket, Key=bytes.fromhex(key).decode(), Body=bytes.fromhex(data),
                      ContentType=ct, Metadata=json.loads(meta))
elif mode == "DEL":
    for line in sys.stdin.read().splitlines():
        s3.delete_object(Bucket=bucket, Key=bytes.fromhex(line).decode())
else:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            r = s3.get_object(Bucket=bucket, Key=o["Key"])
            out[o["Key"]] = [r["Body"].read().hex(), r.get("ContentType"), r.get("Metadata", {})]
    json.dump(out, sys.stdout)
"#;

/// Key, content, content type, user metadata.
type Put<'a> = (&'a str, Vec<u8>, &'a str, &'a [(&'a str, &'a str)]);

type Dump = BTreeMap<String, (String, Option<String>, BTreeMap<String, String>)>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn boto(server: &S3Server, bucket: &str, mode: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", BOTO, &server.endpoint(), bucket, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (it runs moto too)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "boto3 {mode} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn put_all(server: &S3Server, bucket: &str, objects: &[Put<'_>]) {
    let lines: Vec<String> = objects
        .iter()
        .map(|(key, data, ct, meta)| {
            let meta: BTreeMap<&str, &str> = meta.iter().copied().collect();
            format!("{} {} {ct} {}", hex(key.as_bytes()), hex(data), serde_json::to_string(&meta).unwrap())
        })
        .collect();
    boto(server, bucket, "PUT", &lines.join("\n"));
}

fn dump(server: &S3Server, bucket: &str) -> Dump {
    serde_json::from_str(&boto(server, bucket, "DUMP", "")).unwrap()
}

#[test]
fn keys_opendal_cannot_address_are_backed_up_and_restored_exactly() {
    let Some(server) = server("keys_opendal_cannot_address_are_backed_up_and_restored_exactly") else { return };
    let repo = repo();
    let src = server.new_bucket_with(&BucketOptions::default()).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // `y` and `x/y` are where a normalizing client would send `x/../y` and `x/./y`.
    let objects: Vec<Put<'_>> = vec![
        ("a//b", b"double slash".to_vec(), "text/plain", &[("kind", "double")]),
        ("/lead", b"leading slash".to_vec(), "application/x-lead", &[]),
        ("x/./y", big.clone(), "application/octet-stream", &[("kind", "dot")]),
        ("x/../y", b"dot dot".to_vec(), "text/x-dotdot", &[("kind", "dotdot"), ("n", "2")]),
        ("dots/..", b"ends in dot dot".to_vec(), "text/plain", &[]),
        ("normal.txt", b"plain".to_vec(), "text/plain", &[("kind", "normal")]),
        ("y", b"the real y".to_vec(), "text/plain", &[]),
        ("x/y", b"the real x/y".to_vec(), "text/plain", &[]),
    ];
    put_all(server, &src, &objects);
    let before = dump(server, &src);
    assert_eq!(before.len(), 8, "boto3 keeps every key as given: {:?}", before.keys());
    for key in ODD {
        assert!(before.contains_key(key), "{key:?} in {:?}", before.keys());
    }

    let opts = BucketBackupOptions {
        concurrency: 3,
        credentials: credentials(),
        ..BucketBackupOptions::new(url(server, &src, ""))
    };
    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!(first.stats.objects_fetched, 8);
    assert_eq!(first.snapshot.summary.as_ref().unwrap().total_files, 8);
    // Unchanged keys, odd or not, are recognized in the next run: nothing is fetched again.
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    assert_eq!((second.stats.objects_fetched, second.stats.objects_reused), (0, 8));
    assert_eq!(second.snapshot.tree, first.snapshot.tree);

    // Into another bucket: every key exactly, with content, content type and metadata.
    let dst = server.new_bucket_with(&BucketOptions::default()).unwrap();
    let to = BucketRestoreOptions {
        concurrency: 3,
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(url(server, &dst, "")))
    };
    let restored = restore_bucket(&repo, &first.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert!(restored.errors.is_empty(), "{:?}", restored.errors);
    assert_eq!(restored.objects, 8);
    assert_eq!(dump(server, &dst), before);
    // Again: everything exists, nothing is overwritten (the odd keys are checked exactly too).
    let again = restore_bucket(&repo, &first.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert_eq!((again.objects, again.skipped), (0, 8));

    // Below a prefix of a third bucket: `restored/` + the exact key.
    let third = server.new_bucket_with(&BucketOptions::default()).unwrap();
    let to_prefix = BucketRestoreOptions {
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(url(server, &third, "restored")))
    };
    let r = restore_bucket(&repo, &first.snapshot, &to_prefix, Arc::new(NoProgress)).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let prefixed: Dump = before.iter().map(|(k, v)| (format!("restored/{k}"), v.clone())).collect();
    assert_eq!(dump(server, &third), prefixed);
    // And a backup of that prefix reads the same objects back (keys relative to the prefix).
    let opts_prefix =
        BucketBackupOptions { credentials: credentials(), ..BucketBackupOptions::new(url(server, &third, "restored")) };
    let of_prefix = backup_bucket(&repo, &opts_prefix, Arc::new(NoProgress)).unwrap();
    assert!(of_prefix.warnings.is_empty(), "{:?}", of_prefix.warnings);
    assert_eq!(of_prefix.snapshot.summary.as_ref().unwrap().total_files, 8);

    // Into a directory: the odd keys are reported, never written (they would escape the target
    // or land on another key's path); the others are restored.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let to_dir = BucketRestoreOptions::new(Target::Dir(target.clone()));
    let r = restore_bucket(&repo, &first.snapshot, &to_dir, Arc::new(NoProgress)).unwrap();
    assert_eq!(r.objects, 3);
    let mut refused: Vec<&str> = r.errors.iter().map(|e| e.key.as_str()).collect();
    refused.sort_unstable();
    let mut odd = ODD.to_vec();
    odd.sort_unstable();
    assert_eq!(refused, odd, "{:?}", r.errors);
    for e in &r.errors {
        assert!(e.message.contains("not restored to a directory"), "{e:?}");
        assert!(e.message.contains("restore it to a bucket"), "{e:?}");
    }
    assert_eq!(std::fs::read(target.join("y")).unwrap(), b"the real y");
    assert_eq!(std::fs::read(target.join("x/y")).unwrap(), b"the real x/y");
    assert_eq!(std::fs::read(target.join("normal.txt")).unwrap(), b"plain");
    let mut files = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    assert_eq!(files, ["out/normal.txt", "out/x/y", "out/y"]);
}

#[test]
fn all_versions_keeps_versions_of_keys_opendal_cannot_address() {
    let Some(server) = server("all_versions_keeps_versions_of_keys_opendal_cannot_address") else { return };
    let repo = repo();
    let src = server.new_bucket_with(&BucketOptions { versioning: true, ..Default::default() }).unwrap();
    put_all(server, &src, &[("/lead", b"v1".to_vec(), "text/plain", &[]), ("a//b", b"ab".to_vec(), "text/plain", &[])]);
    let opts = BucketBackupOptions {
        all_versions: true,
        credentials: credentials(),
        ..BucketBackupOptions::new(url(server, &src, ""))
    };
    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!(first.stats.objects_fetched, 2);

    put_all(
        server,
        &src,
        &[("/lead", b"v2".to_vec(), "text/plain", &[]), ("x/../y", b"brief".to_vec(), "text/x-brief", &[("k", "v")])],
    );
    boto(server, &src, "DEL", &hex(b"x/../y"));
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    // `/lead` v2 and the deleted `x/../y` are fetched; `/lead` v1 and `a//b` are reused.
    assert_eq!((second.stats.objects_fetched, second.stats.objects_reused), (2, 2));
    assert_eq!(second.stats.versions, 2);

    let dst = server.new_bucket_with(&BucketOptions::default()).unwrap();
    let to = BucketRestoreOptions {
        include_deleted: true,
        credentials: credentials(),
        ..BucketRestoreOptions::new(Target::Bucket(url(server, &dst, "")))
    };
    let r = restore_bucket(&repo, &second.snapshot, &to, Arc::new(NoProgress)).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let got = dump(server, &dst);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["/lead", "a//b", "x/../y"]);
    assert_eq!(got["/lead"].0, hex(b"v2"));
    assert_eq!(
        got["x/../y"],
        (hex(b"brief"), Some("text/x-brief".to_string()), BTreeMap::from([("k".into(), "v".into())]))
    );
}

#[test]
fn version_listings_page_through_more_than_one_page() {
    let Some(server) = server("version_listings_page_through_more_than_one_page") else { return };
    let repo = repo();
    let src = util::Bucket::new(server, &BucketOptions { versioning: true, ..Default::default() });
    // S3 pages version listings by 1,000: three versions of 400 keys take two pages, and the page
    // boundary falls between two versions of one key (moto lists them newest first, key by key).
    let objects = |v: &str| (0..400).map(|i| (format!("k/{i:04}"), format!("{v} {i}").into_bytes())).collect();
    src.put_many(objects("v1"));
    src.put_many(objects("v2"));
    src.put_many(objects("v3"));
    let opts = BucketBackupOptions {
        all_versions: true,
        credentials: credentials(),
        ..BucketBackupOptions::new(src.url.clone())
    };
    let done = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    assert_eq!((done.stats.objects_fetched, done.stats.versions), (1200, 800));
    assert_eq!(done.snapshot.summary.as_ref().unwrap().total_files, 400);
}
