//! The service's commands: `config check` on the issue's contract example and on a broken file,
//! `token create`, `policy`, and `serve` taking a backup through its API and stopping on SIGTERM.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use crate::util::{Env, PASSWORD};

/// The contract example of issue 5, as written there, with its paths moved into `env`'s
/// directory and its listen port given.
fn contract_config(env: &Env, listen: &str) -> String {
    let root = env.dir.path().display().to_string();
    format!(
        r#"[server]
listen = "{listen}"
state_dir = "{root}/state"
allow = ["127.0.0.1/32", "10.0.0.0/8"]   # IP allowlist; absent means loopback only
link_secret_file = "{root}/link.key"

[repositories.primary]
url = "{repo}"
password_file = "{root}/repo.pass"

[sources.uploads]
kind = "directory"                        # also "bucket" and "postgres" as those land
paths = ["{root}/uploads"]
repository = "primary"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
window = "1h"
retention = {{ keep_daily = 14, keep_weekly = 8, keep_monthly = 6, keep_yearly = 1 }}
"#,
        repo = env.repo
    )
}

#[test]
fn config_check_accepts_the_contract_example() {
    let env = Env::new();
    env.write("repo.pass", format!("{PASSWORD}\n"));
    let config = env.write("tidemark.toml", contract_config(&env, "127.0.0.1:8470"));
    let run = env.ok(["config", "check", "--config", &config.to_string_lossy()]);
    assert!(run.stdout.contains("ok (1 repositories, 1 sources, 0 webhooks)"), "{}", run.stdout);
    assert!(run.stdout.contains("uploads: daily at 01:00 Asia/Kolkata (0 1 * * *), window 1h"), "{}", run.stdout);
    let json = env.ok(["config", "check", "--config", &config.to_string_lossy(), "--json"]).json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["sources"][0], "uploads");
}

#[test]
fn config_check_reports_every_problem_with_file_and_line_and_exits_2() {
    let env = Env::new();
    let broken = contract_config(&env, "127.0.0.1:8470")
        .replace("schedule = \"0 1 * * *\"", "schedule = \"0 1 * *\"")
        .replace("repository = \"primary\"", "repository = \"primry\"")
        .replace("timezone = \"Asia/Kolkata\"", "timezone = \"Asia/Kolkatta\"");
    let config = env.write("tidemark.toml", &broken);
    let file = config.to_string_lossy().into_owned();
    let run = env.run(["config", "check", "--config", &file]).expect(2);
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, what) in [
        ("primry", "did you mean \"primary\""),
        ("0 1 * *\"", "invalid cron expression"),
        ("Kolkatta", "did you mean \"Asia/Kolkata\""),
    ] {
        let prefix = format!("{file}:{}:", line_of(needle));
        let line =
            run.stderr.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix}\n{}", run.stderr));
        assert!(line.contains(what), "{line}");
    }
    assert!(run.stderr.contains("has 3 problem(s)"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    // A missing file is an error too, but not a usage error.
    env.run(["config", "check", "--config", &env.arg("nope.toml")]).expect(1);
}

/// A running `tidemark serve`, killed on drop.
struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(env: &Env, config: &str) -> Daemon {
        let log = fs::File::create(env.path("serve.log")).unwrap();
        let mut child =
            env.command(["serve", "--config", config]).stdout(Stdio::piped()).stderr(log).spawn().expect("serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}: {}", fs::read_to_string(env.path("serve.log")).unwrap()))
            .trim_end_matches('/')
            .to_string();
        Daemon { child, base }
    }

    /// One HTTP/1.1 request; the status and body.
    fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.base).unwrap();
        let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n",
            self.base
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_runs_a_backup_through_the_api_and_policy_measures_it() {
    let env = Env::with_repo();
    env.write("repo.pass", format!("{PASSWORD}\n"));
    env.write("uploads/photo.jpg", "not really a photo");
    env.write("link.key", "a link-signing secret of more than thirty-two bytes\n");
    let config = env.write("tidemark.toml", contract_config(&env, "127.0.0.1:0"));
    let config = config.to_string_lossy().into_owned();
    let token = env.ok(["token", "create", "--config", &config, "--name", "ops", "--role", "operator"]);
    let token = token.stdout.lines().next().unwrap().trim().to_string();
    assert!(token.len() >= 32, "{token}");
    env.run(["token", "create", "--config", &config, "--name", "x", "--role", "king"]).expect(2);

    let daemon = Daemon::start(&env, &config);
    assert_eq!(daemon.request("GET", "/healthz", None).0, 200);
    assert_eq!(daemon.request("POST", "/api/v1/sources/uploads/backup", None).0, 401);
    let (status, body) = daemon.request("POST", "/api/v1/sources/uploads/backup", Some(&token));
    assert!((200..300).contains(&status), "{status} {body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let mut finished = serde_json::Value::Null;
    for _ in 0..600 {
        let (status, body) = daemon.request("GET", &format!("/api/v1/jobs/{id}"), Some(&token));
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let job = if value.get("job").is_some() { value["job"].clone() } else { value };
        if job["status"] != "running" && job["status"] != "queued" {
            finished = job;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(finished["status"], "succeeded", "{finished}");

    // SIGTERM stops the daemon cleanly.
    let mut daemon = daemon;
    let pid = daemon.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", fs::read_to_string(env.path("serve.log")).unwrap());

    // With the daemon stopped, `policy` reads the catalog and the repository itself.
    let rows = env.ok(["policy", "--config", &config, "--json"]).json();
    let row = &rows[0];
    assert_eq!(row["source"], "uploads");
    assert_eq!(row["method"], "directory snapshots");
    assert_eq!(row["retention"], "14 daily, 8 weekly, 6 monthly, 1 yearly");
    assert_eq!(row["recovery_precision"], "per snapshot");
    assert!(row["oldest_restorable"].is_string(), "{row}");
    assert!(row["newest_backup_age_seconds"].as_i64().unwrap() >= 0, "{row}");
    let table = env.ok(["policy", "--config", &config]);
    assert!(table.stdout.contains("daily at 01:00 Asia/Kolkata"), "{}", table.stdout);
}

#[test]
fn a_daemon_killed_mid_backup_marks_the_job_interrupted_and_reruns_it_at_restart() {
    let env = Env::with_repo();
    env.write("repo.pass", format!("{PASSWORD}\n"));
    env.write("link.key", "a link-signing secret of more than thirty-two bytes\n");
    // Enough incompressible data that the backup is still running when the daemon is killed.
    for i in 0..16 {
        env.write(&format!("uploads/part-{i}.bin"), crate::util::noise(i, 4 << 20));
    }
    let config = env.write("tidemark.toml", contract_config(&env, "127.0.0.1:0"));
    let config = config.to_string_lossy().into_owned();
    let token = env.ok(["token", "create", "--config", &config, "--name", "ops", "--role", "operator"]);
    let token = token.stdout.lines().next().unwrap().trim().to_string();

    let mut first = Daemon::start(&env, &config);
    let (status, body) = first.request("POST", "/api/v1/sources/uploads/backup", Some(&token));
    assert!((200..300).contains(&status), "{status} {body}");
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["status"], "running");
    let id = job["id"].as_str().unwrap().to_string();
    // A crash: SIGKILL, no chance to record anything.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Daemon::start(&env, &config);
    let (status, body) = second.request("GET", &format!("/api/v1/jobs/{id}"), Some(&token));
    assert_eq!(status, 200, "{body}");
    let crashed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(crashed["job"]["status"], "interrupted", "{crashed}");
    let message = crashed["job"]["message"].as_str().unwrap().to_string();
    let rerun = message.rsplit("rerun as job ").next().unwrap().trim().to_string();
    assert!(message.contains("rerun as job") && rerun.len() >= 16, "{message}");
    let mut finished = serde_json::Value::Null;
    for _ in 0..1200 {
        let (_, body) = second.request("GET", &format!("/api/v1/jobs/{rerun}"), Some(&token));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        if value["job"]["status"] != "running" {
            finished = value["job"].clone();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["trigger"]["type"], "rerun");
    assert_eq!(finished["trigger"]["of"], id.as_str());
    drop(second);
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn serve_backs_up_a_bucket_and_drills_it() {
    let Some(server) = tidemark_testkit::S3Server::shared_or_skip("serve_backs_up_a_bucket_and_drills_it") else {
        return;
    };
    let mut env = Env::with_repo();
    let (key, secret) = tidemark_testkit::S3Server::credentials();
    env.vars.push(("AWS_ACCESS_KEY_ID".into(), key.into()));
    env.vars.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
    let bucket = crate::util::s3::TestBucket::new(server, &tidemark_testkit::BucketOptions::default());
    bucket.put("photos/beach.jpg", b"sand and sea", Some("image/jpeg"), &[]);
    bucket.put("docs/report.pdf", &crate::util::noise(9, 300_000), Some("application/pdf"), &[]);
    env.write("repo.pass", format!("{PASSWORD}\n"));
    env.write("link.key", "a link-signing secret of more than thirty-two bytes\n");
    let root = env.dir.path().display().to_string();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
state_dir = "{root}/state"
link_secret_file = "{root}/link.key"

[repositories.primary]
url = "{repo}"
password_file = "{root}/repo.pass"

[sources.media]
kind = "bucket"
url = "{url}"
repository = "primary"
schedule = "0 1 * * *"
drill = {{ schedule = "0 3 * * 0", scratch_dir = "{root}/scratch" }}
"#,
        repo = env.repo,
        url = bucket.url
    );
    let config = env.write("tidemark.toml", text).to_string_lossy().into_owned();
    let token = env.ok(["token", "create", "--config", &config, "--name", "ops", "--role", "operator"]);
    let token = token.stdout.lines().next().unwrap().trim().to_string();
    let daemon = Daemon::start(&env, &config);
    for (what, check) in [("backup", "snapshot"), ("drill", "verified 2 object(s)")] {
        let (status, body) = daemon.request("POST", &format!("/api/v1/sources/media/{what}"), Some(&token));
        assert!((200..300).contains(&status), "{what}: {status} {body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
        let mut finished = serde_json::Value::Null;
        for _ in 0..1200 {
            let (_, body) = daemon.request("GET", &format!("/api/v1/jobs/{id}"), Some(&token));
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            if value["job"]["status"] != "running" {
                finished = value;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(finished["job"]["status"], "succeeded", "{what}: {finished}");
        assert!(finished["job"]["message"].as_str().unwrap().contains(check), "{what}: {finished}");
    }
    assert_eq!(files_below(&env.path("scratch")), 0, "the drill cleans up");
}

fn files_below(dir: &std::path::Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_below(&e.path()) } else { 1 }).sum()
}
