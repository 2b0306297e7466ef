//! Off-site copies that hold: S3 Object Lock on a repository (`lock_days`), checked on the server
//! itself; `copy` between two providers with a credential each; and a `copy` killed mid-way, then
//! resumed, verified and checked for tampering.
//!
//! The server is asked directly over plain HTTP (moto does not check signatures), never through
//! tidemark: the tests must not use tidemark to check tidemark.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tidemark_testkit::{BucketOptions, S3Server, S3sServer};

use crate::util::{Env, PASSWORD, execute, noise};

const AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// One request to moto: status, headers (lower-case names) and body.
fn raw(
    server: &S3Server,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let addr = format!("127.0.0.1:{}", server.port());
    let mut stream = TcpStream::connect(&addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {AUTH}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Every `<tag>` value in an XML body.
fn values(xml: &str, tag: &str) -> Vec<String> {
    xml.split(&format!("<{tag}>")).skip(1).filter_map(|p| p.split('<').next()).map(str::to_string).collect()
}

/// The keys under `prefix` in `bucket`.
fn keys(server: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let (status, _, body) = raw(server, "GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    values(&body, "Key")
}

/// The retention of one object as the server reports it: (mode, retain-until).
fn retention(server: &S3Server, bucket: &str, key: &str) -> Option<(String, SystemTime)> {
    let (status, headers, _) = raw(server, "HEAD", &format!("/{bucket}/{key}"), &[], b"");
    assert_eq!(status, 200, "{key}");
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let until: jiff::Timestamp = header("x-amz-object-lock-retain-until-date")?.parse().unwrap();
    Some((header("x-amz-object-lock-mode")?, SystemTime::try_from(until).unwrap()))
}

fn versions(server: &S3Server, bucket: &str, key: &str) -> Vec<String> {
    let (status, _, body) = raw(server, "GET", &format!("/{bucket}?versions&prefix={key}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    values(&body, "VersionId")
}

/// `PutObjectRetention` requests on `bucket` in moto's log.
fn count_retention_puts(server: &S3Server, bucket: &str) -> usize {
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    log.lines().filter(|l| l.contains(&format!("PUT /{bucket}/")) && l.contains("?retention")).count()
}

fn moto_env(repo: String) -> Env {
    let mut env = Env::new();
    env.repo = repo;
    let (key, secret) = S3Server::credentials();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    env
}

#[test]
fn object_lock_retains_every_object_extends_reused_packs_and_prune_plans_around_it() {
    let Some(server) = S3Server::shared_or_skip("object_lock_retains_every_object") else { return };
    let bucket = server.new_bucket_with(&BucketOptions { object_lock: true, ..Default::default() }).unwrap();
    let plain_url = server.url(&bucket, "repo");
    let locked_url = format!("{plain_url}&lock_days=1");
    // The repository starts without retention: its first snapshot's objects are not locked.
    let mut env = moto_env(plain_url);
    let cache = env.arg("cache");
    env.vars.push(("TIDEMARK_CACHE_DIR".into(), cache));
    env.ok(["init", "--pack-size-mib", "1"]);
    env.write("src/old-only.bin", noise(1, 1_500_000));
    env.write("src/shared.bin", noise(2, 1_500_000));
    let first = env.backup("src", &[]);
    let packs_before = keys(server, &bucket, "repo/data/");
    assert!(packs_before.iter().all(|k| retention(server, &bucket, k).is_none()));

    // From now on with lock_days=1: every object it writes is locked, lock files excepted.
    env.repo = locked_url;
    std::fs::remove_file(env.path("src/old-only.bin")).unwrap();
    env.write("src/new.bin", noise(3, 1_500_000));
    let second = env.backup("src", &[]);
    let written_second = SystemTime::now();
    let all = keys(server, &bucket, "repo/");
    assert!(all.iter().all(|k| !k.starts_with("repo/locks/")), "{all:?}");
    let new_packs: Vec<&String> =
        all.iter().filter(|k| k.starts_with("repo/data/") && !packs_before.contains(k)).collect();
    assert!(!new_packs.is_empty());
    let snapshot_keys: Vec<&String> = all.iter().filter(|k| k.starts_with("repo/snapshots/")).collect();
    assert_eq!(snapshot_keys.len(), 2);
    for key in new_packs.iter().copied().chain(all.iter().filter(|k| k.starts_with("repo/index/"))) {
        let (mode, until) = retention(server, &bucket, key).unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(mode, "COMPLIANCE");
        let left = until.duration_since(written_second).unwrap();
        assert!(
            left > Duration::from_secs(86_400 - 300) && left < Duration::from_secs(86_400 + 11_000),
            "{key}: {left:?}"
        );
    }
    // What any restore needs is locked too (config, keys), and so is the new snapshot; the packs
    // of the shared file, written unlocked by the first backup and reused, got retention now.
    for key in all.iter().filter(|k| k.starts_with("repo/keys/") || *k == "repo/config") {
        assert!(retention(server, &bucket, key).is_some(), "{key}");
    }
    let newest_snapshot = snapshot_keys.iter().find(|k| k.ends_with(&second)).unwrap();
    assert!(retention(server, &bucket, newest_snapshot).is_some());
    let oldest_snapshot = snapshot_keys.iter().find(|k| k.ends_with(&first)).unwrap();
    assert!(retention(server, &bucket, oldest_snapshot).is_none());
    let reused: Vec<&String> = packs_before.iter().filter(|k| retention(server, &bucket, k).is_some()).collect();
    assert!(!reused.is_empty() && reused.len() < packs_before.len(), "{reused:?} of {packs_before:?}");

    // The server itself refuses to delete a locked version: no client flag involved.
    let victim = new_packs[0];
    let version = versions(server, &bucket, victim).pop().unwrap();
    let (status, _, body) = raw(server, "DELETE", &format!("/{bucket}/{victim}?versionId={version}"), &[], b"");
    assert_eq!(status, 403, "{body}");
    assert!(keys(server, &bucket, victim).contains(victim));

    // A third backup right after needs no extension, and knows it without asking the server:
    // what the second wrote, learned and extended is remembered (in TIDEMARK_CACHE_DIR).
    let requests = |what: &str| {
        let log = std::fs::read_to_string(server.log_path()).unwrap();
        log.lines().filter(|l| l.contains(&format!("{what} /{bucket}/repo/")) && !l.contains("/locks/")).count()
    };
    let (heads, extensions) = (requests("HEAD"), count_retention_puts(server, &bucket));
    let third = env.ok(["backup", &env.arg("src"), "--verbose"]);
    assert!(third.stderr.contains(", 0 extended"), "{}", third.stderr);
    assert_eq!(requests("HEAD"), heads, "no retention lookups");
    assert_eq!(count_retention_puts(server, &bucket), extensions, "no PutObjectRetention");
    assert!(extensions > 0, "the earlier backups did extend");
    assert_eq!(std::fs::read_dir(env.path("cache/retention")).unwrap().count(), 1);

    // Garbage: the unlocked first snapshot is forgotten, and a locked pack that an interrupted
    // backup left behind (uploaded, never indexed) sits in data/.
    // forget --keep-last 1 removes the first snapshot; the second is still retained, so it
    // stays (said on stderr) until a later forget.
    let forget = env.ok(["forget", "--keep-last", "1", "--json"]);
    assert_eq!(forget.json()["removed"].as_array().unwrap().len(), 1, "{}", forget.stdout);
    assert_eq!(forget.json()["removed"][0].as_str(), Some(first.as_str()));
    assert!(
        forget.stderr.contains("1 snapshot(s) are kept for now: still under Object Lock retention"),
        "{}",
        forget.stderr
    );
    assert_eq!(env.snapshot_ids().len(), 2);
    let orphan = format!("repo/data/ee/{}", "e".repeat(64));
    let until = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
    let until = until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (status, _, body) = raw(
        server,
        "PUT",
        &format!("/{bucket}/{orphan}"),
        &[
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            ("x-amz-object-lock-retain-until-date", &until),
            // MD5 of the body: Object Lock uploads need a checksum.
            ("content-md5", "dYICR3ANdfyG/ifSiWxZFw=="),
        ],
        b"half a pack",
    );
    assert_eq!(status, 200, "{body}");

    // Prune (run with the stronger credential, here the same moto key) deletes the unlocked pack
    // only the forgotten snapshot used, with all its versions, and keeps the retained orphan.
    let plan = env.ok(["prune", "--dry-run", "--json"]).json();
    let report = env.ok(["prune", "--json"]).json();
    assert_eq!(plan["packs_deleted"], report["packs_deleted"], "{plan} / {report}");
    let deleted: Vec<String> =
        report["packs_deleted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let retained: Vec<String> =
        report["packs_retained"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    // Kept: the orphan, and any pack prune would delete or repack that is still retained (a pack
    // of the first backup whose blobs the second still partly uses, extended by it).
    assert!(retained.contains(&"e".repeat(64)), "{report}");
    for id in &retained {
        let key = format!("repo/data/{}/{id}", &id[..2]);
        assert!(retention(server, &bucket, &key).is_some(), "{key} is kept although it is not retained");
    }
    assert!(!deleted.is_empty(), "{report}");
    for id in &deleted {
        let key = format!("repo/data/{}/{id}", &id[..2]);
        assert!(packs_before.contains(&key) && !reused.contains(&&key), "{key} was locked or in use");
        assert!(versions(server, &bucket, &key).is_empty(), "{key}: every version is gone");
    }
    assert!(keys(server, &bucket, &orphan).contains(&orphan));
    let human = env.ok(["prune"]);
    assert!(human.stdout.contains("still under Object Lock retention"), "{}", human.stdout);
    env.ok(["check", "--read-data"]);
    env.ok(["restore", "latest", "--target", &env.arg("out")]);
    let out = env.restored("out", &env.path("src"));
    assert_eq!(std::fs::read(out.join("shared.bin")).unwrap(), noise(2, 1_500_000));
}

/// Copy from moto to s3s-fs, each signed with its own key pair: AWS_* for the source,
/// TIDEMARK_TO_* for the target. s3s-fs refuses moto's key, so a mix-up cannot pass.
#[test]
fn copy_between_two_providers_with_a_credential_each() {
    let test = "copy_between_two_providers_with_a_credential_each";
    let Some(moto) = S3Server::shared_or_skip(test) else { return };
    let Some(s3s) = S3sServer::shared_or_skip(test) else { return };
    let source = moto.url(&moto.new_bucket().unwrap(), "primary");
    let target = s3s.url(&s3s.new_bucket().unwrap(), "offsite");
    let mut env = moto_env(source.clone());
    // moto accepts any key; give it one s3s-fs would refuse.
    env.vars.retain(|(k, _)| !k.starts_with("AWS_"));
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), "moto-only-key".into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), "moto-only-secret".into()));
    let (to_key, to_secret) = S3sServer::credentials();
    let pw = env.write("pw", format!("{PASSWORD}\n")).to_string_lossy().into_owned();
    env.ok(["init"]);
    env.write("src/a.bin", noise(11, 700_000));
    env.backup("src", &[]);

    // Without its own credential the target is refused (s3s-fs checks signatures).
    let run = env.run(["-r", &target, "init", "--from-repo", &source, "--copy-chunker-params"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let run = env.with_var("TIDEMARK_TO_ACCESS_KEY_ID", to_key).run(["copy", "--to-repo", &target]);
    assert!(
        run.stderr.contains("only one of TIDEMARK_TO_ACCESS_KEY_ID and TIDEMARK_TO_SECRET_ACCESS_KEY"),
        "{}",
        run.stderr
    );

    // init of the target signs with TIDEMARK_FROM_* for the source: here the target's keys are
    // AWS_* and the source's TIDEMARK_FROM_*.
    let mut target_env = Env::new();
    target_env.repo = target.clone();
    target_env.vars.push(("AWS_ACCESS_KEY_ID".into(), to_key.into()));
    target_env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), to_secret.into()));
    target_env.vars.push(("TIDEMARK_FROM_ACCESS_KEY_ID".into(), "moto-only-key".into()));
    target_env.vars.push(("TIDEMARK_FROM_SECRET_ACCESS_KEY".into(), "moto-only-secret".into()));
    target_env.ok(["init", "--from-repo", &source, "--from-password-file", &pw, "--copy-chunker-params"]);

    let mut copy_env = Env::new();
    copy_env.repo = source.clone();
    copy_env.vars = env.vars.clone();
    copy_env.vars.push(("TIDEMARK_TO_ACCESS_KEY_ID".into(), to_key.into()));
    copy_env.vars.push(("TIDEMARK_TO_SECRET_ACCESS_KEY".into(), to_secret.into()));
    let report = copy_env.ok(["copy", "--to-repo", &target, "--json"]).json();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    target_env.ok(["check", "--read-data"]);
    target_env.ok(["restore", "latest", "--target", &target_env.arg("out")]);
    let out = target_env.restored("out", &env.path("src"));
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), noise(11, 700_000));
}

/// Number of complete objects in a directory of a local repository (not the `.tmp-` files of
/// writes in progress).
fn complete(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-")).count())
}

/// Number of pack files in a local repository.
fn pack_count(repo: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map_or(0, |entries| entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
    }
    walk(&repo.join("data"))
}

/// `copy` killed (SIGKILL) once some packs arrived, then run again: the snapshots already copied
/// are skipped, the rest arrives, and the copy passes `check --read-data`; a byte flipped in one
/// of its packs afterwards is found by check.
#[test]
fn interrupted_copy_resumes_with_only_the_missing_part_and_check_catches_tampering() {
    let env = Env::new();
    env.ok(["init", "--pack-size-mib", "1"]);
    let sizes = [3_000_000usize; 6];
    for (i, size) in sizes.iter().enumerate() {
        env.write(&format!("src/part{i}.bin"), noise(100 + i as u64, *size));
        env.backup("src", &[]);
    }
    let target = env.arg("offsite");
    env.ok(["-r", &target, "init", "--pack-size-mib", "1", "--from-repo", &env.repo, "--copy-chunker-params"]);

    let mut child =
        env.command(["copy", "--to-repo", &target]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Kill it once the first snapshot is complete in the target (its packs arrived).
    let snapshots_dir = Path::new(&target).join("snapshots");
    loop {
        let done = complete(&snapshots_dir);
        if done >= 1 {
            assert!(pack_count(Path::new(&target)) >= 3);
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "copy finished before it could be interrupted");
        assert!(Instant::now() < deadline, "copy made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let copied_before = complete(&snapshots_dir);
    assert!(copied_before < sizes.len(), "the copy was interrupted before its end");

    let resumed = env.ok(["copy", "--to-repo", &target, "--json"]).json();
    let already = resumed["already_present"].as_array().unwrap().len();
    assert_eq!(already, copied_before, "{resumed}");
    assert_eq!(resumed["copied"].as_array().unwrap().len(), sizes.len() - copied_before, "{resumed}");
    // Only the missing part: the data of the snapshots not yet copied (each added one file), and
    // their small trees.
    let missing: usize = sizes[copied_before..].iter().sum();
    assert!((resumed["bytes_copied"].as_u64().unwrap() as usize) < missing + 100_000, "{resumed}");
    let again = env.ok(["copy", "--to-repo", &target, "--json"]).json();
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");

    let mut copy = Env::new();
    copy.repo = target.clone();
    copy.ok(["check", "--read-data"]);
    // The killed run left packs it never indexed; the copy's own prune removes them.
    copy.ok(["prune"]);
    copy.ok(["check", "--read-data"]);
    copy.ok(["restore", "latest", "--target", &copy.arg("out")]);
    let out = copy.restored("out", &env.path("src"));
    for (i, size) in sizes.iter().enumerate() {
        assert_eq!(std::fs::read(out.join(format!("part{i}.bin"))).unwrap(), noise(100 + i as u64, *size), "part {i}");
    }

    // Tamper with one pack of the copy: check --read-data reports it and fails.
    let pack =
        copy.objects("data").into_iter().map(|(p, _)| p).max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();
    let run = execute(copy.command(["check", "--read-data"]));
    assert_ne!(run.code, 0, "{}", run.stdout);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(run.stdout.contains(&name) || run.stderr.contains(&name), "{}\n{}", run.stdout, run.stderr);
}

/// A pack whose retention runs short (here an administrator shortened it, as governance mode
/// allows with the bypass permission) is extended by the next backup that reuses it, and only it.
#[test]
fn retention_running_short_on_reused_packs_is_extended_by_the_next_backup() {
    let Some(server) = S3Server::shared_or_skip("retention_running_short_is_extended") else { return };
    let bucket = server.new_bucket_with(&BucketOptions { object_lock: true, ..Default::default() }).unwrap();
    let env = moto_env(format!("{}&lock_days=1&lock_mode=governance", server.url(&bucket, "repo")));
    env.ok(["init", "--pack-size-mib", "1"]);
    env.write("src/a.bin", noise(21, 2_500_000));
    env.backup("src", &[]);
    let packs = keys(server, &bucket, "repo/data/");
    assert!(packs.len() >= 2, "{packs:?}");
    let short = SystemTime::now() + Duration::from_secs(7200);
    let date = jiff::Timestamp::try_from(short).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = format!("<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>{date}</RetainUntilDate></Retention>");
    let (status, _, text) = raw(
        server,
        "PUT",
        &format!("/{bucket}/{}?retention", packs[0]),
        &[("x-amz-bypass-governance-retention", "true")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert!(retention(server, &bucket, &packs[0]).unwrap().1 < SystemTime::now() + Duration::from_secs(7300));
    let untouched = retention(server, &bucket, &packs[1]).unwrap().1;

    let run = env.ok(["backup", &env.arg("src"), "--verbose"]);
    assert!(run.stderr.contains(", 1 extended"), "{}", run.stderr);
    let (mode, until) = retention(server, &bucket, &packs[0]).unwrap();
    assert_eq!(mode, "GOVERNANCE");
    assert!(until > SystemTime::now() + Duration::from_secs(86_400), "{until:?}");
    assert_eq!(retention(server, &bucket, &packs[1]).unwrap().1, untouched);
}

/// An off-site copy on a locked bucket: everything `copy` writes there is retained, and the
/// copy's own repository keeps its own retention (the source has none).
#[test]
fn copy_into_an_object_lock_repository_retains_what_it_writes() {
    let Some(server) = S3Server::shared_or_skip("copy_into_an_object_lock_repository") else { return };
    let bucket = server.new_bucket_with(&BucketOptions { object_lock: true, ..Default::default() }).unwrap();
    let target = format!("{}&lock_days=2", server.url(&bucket, "offsite"));
    let mut env = Env::with_repo();
    let (key, secret) = S3Server::credentials();
    env.vars.push(("TIDEMARK_TO_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("TIDEMARK_TO_SECRET_ACCESS_KEY".into(), secret.into()));
    env.vars.push(("TIDEMARK_CACHE_DIR".into(), env.arg("cache")));
    env.write("src/a.bin", noise(31, 1_200_000));
    env.backup("src", &[]);
    let primary = env.repo.clone();
    // The target is this command's main repository: AWS_* sign for it.
    let init_env = moto_env(target.clone());
    let init = init_env.ok(["init", "--from-repo", &primary, "--copy-chunker-params"]);
    assert!(init.stdout.contains("created tidemark repository"), "{}", init.stdout);
    env.ok(["copy", "--to-repo", &target]);
    env.write("src/b.txt", "second");
    env.backup("src", &[]);
    let second = env.ok(["copy", "--to-repo", &target, "--json"]).json();
    assert_eq!(second["copied"].as_array().unwrap().len(), 1, "{second}");
    let all = keys(server, &bucket, "offsite/");
    assert!(all.iter().any(|k| k.starts_with("offsite/data/")));
    for key in all.iter().filter(|k| !k.starts_with("offsite/locks/")) {
        let (mode, until) = retention(server, &bucket, key).unwrap_or_else(|| panic!("{key} is not retained"));
        assert_eq!(mode, "COMPLIANCE");
        assert!(until > SystemTime::now() + Duration::from_secs(2 * 86_400 - 600), "{key}");
    }
}
