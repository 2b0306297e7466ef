//! Several `tidemark serve` on one state. Two regions' daemons with their own `server.name`s and
//! one PostgreSQL catalog (`server.catalog`) both run and see each other's jobs, and a 500's
//! details reach the daemon's stderr under the request id the client got. Two daemons on one
//! embedded `state_dir` cannot both run: the second exits 11 and says why.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use tidemark_testkit::postgres::{Auth, PgCluster, PgOptions};

use crate::util::{Env, PASSWORD};

const CATALOG_ROLE: &str = "tidemark_catalog";
const CATALOG_PASSWORD: &str = "catalog secret";

/// A daemon's config: its own name and state directory, one repository and source shared by
/// every region, the catalog when given (a connection string; its password in `catalog.pass`).
fn region_config(env: &Env, name: &str, catalog: Option<&str>) -> String {
    let root = env.dir.path().display().to_string();
    let catalog = catalog
        .map(|c| format!("catalog = \"{c}\"\ncatalog_password_file = \"{root}/catalog.pass\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
name = "{name}"
state_dir = "{root}/{name}/state"
link_secret_file = "{root}/link.key"
{catalog}
[repositories.primary]
url = "{repo}"
password_file = "{root}/repo.pass"

[sources.uploads]
kind = "directory"
paths = ["{root}/uploads"]
repository = "primary"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
window = "1h"
"#,
        repo = env.repo
    );
    env.write(&format!("{name}.toml"), text).to_string_lossy().into_owned()
}

/// The repository, a file to back up and the link secret every region shares.
fn shared_files(env: &Env) {
    env.write("repo.pass", format!("{PASSWORD}\n"));
    env.write("uploads/report.txt", "quarterly numbers");
    env.write("link.key", "one link-signing secret shared by every region\n");
}

fn token(env: &Env, config: &str) -> String {
    let run = env.ok(["token", "create", "--config", config, "--name", "ops", "--role", "operator"]);
    run.stdout.lines().next().unwrap().trim().to_string()
}

/// A running `tidemark serve`, its stderr in `LOG`, killed on drop.
struct Serve {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(env: &Env, config: &str, log: &str) -> Serve {
        let log = env.path(log);
        let file = fs::File::create(&log).unwrap();
        let mut child = env
            .command(["serve", "--config", config, "--log-level", "info"])
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .expect("serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}: {}", fs::read_to_string(&log).unwrap()))
            .trim_end_matches('/')
            .to_string();
        Serve { child, base, log }
    }

    /// One HTTP/1.1 request without a body; the status and body.
    fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        self.send(method, path, token, "")
    }

    /// One HTTP/1.1 request with a JSON body; the status and body.
    fn send(&self, method: &str, path: &str, token: Option<&str>, json: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.base).unwrap();
        let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{json}",
            self.base,
            json.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child.wait().unwrap().code()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_regions_serve_from_one_postgres_catalog() {
    let options = PgOptions { auth: Auth::Scram, ..PgOptions::default() };
    let Some(pg) = PgCluster::start_or_skip("cli_two_regions_serve_from_one_postgres_catalog", &options) else {
        return;
    };
    pg.psql(&format!("CREATE ROLE {CATALOG_ROLE} LOGIN PASSWORD '{CATALOG_PASSWORD}'")).unwrap();
    pg.psql(&format!("GRANT CREATE ON SCHEMA public TO {CATALOG_ROLE}")).unwrap();
    let env = Env::with_repo();
    shared_files(&env);
    env.write("catalog.pass", format!("{CATALOG_PASSWORD}\n"));
    // No password in the connection string: it comes from server.catalog_password_file.
    let connection = format!("host=127.0.0.1 port={} user={CATALOG_ROLE} dbname=postgres", pg.port());
    let eu_config = region_config(&env, "eu-west", Some(&connection));
    let ap_config = region_config(&env, "ap-south", Some(&connection));
    let (eu_token, ap_token) = (token(&env, &eu_config), token(&env, &ap_config));

    let eu = Serve::start(&env, &eu_config, "eu-west.log");
    let ap = Serve::start(&env, &ap_config, "ap-south.log");
    assert_eq!(eu.request("GET", "/healthz", None).0, 200, "{}", eu.stderr());
    assert_eq!(ap.request("GET", "/healthz", None).0, 200, "{}", ap.stderr());
    // Both hold a connection to the one catalog, each under its own name.
    let names = pg
        .psql("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'tidemark %' ORDER BY 1")
        .unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["tidemark ap-south", "tidemark eu-west"], "{names}");

    // A backup run by one region is in the other's job list: one catalog.
    let (status, body) = eu.request("POST", "/api/v1/sources/uploads/backup", Some(&eu_token));
    assert!((200..300).contains(&status), "{status} {body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
    let mut seen = serde_json::Value::Null;
    for _ in 0..600 {
        let (status, body) = ap.request("GET", &format!("/api/v1/jobs/{id}"), Some(&ap_token));
        assert_eq!(status, 200, "{body}");
        seen = serde_json::from_str::<serde_json::Value>(&body).unwrap()["job"].clone();
        if seen["status"] != "running" && seen["status"] != "queued" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen["status"], "succeeded", "{seen}\n{}", eu.stderr());
    assert_eq!(seen["owner"], "eu-west", "{seen}");
    let snapshot = seen["snapshot"].as_str().unwrap().to_string();
    assert!(env.snapshot_ids().contains(&snapshot), "{snapshot}");

    // A single-use link signed by one region downloads from the other (one link_secret_file),
    // and its use counts for both (one catalog).
    let request = serde_json::json!({
        "snapshot": snapshot,
        "path": env.path("uploads/report.txt"),
        "single_use": true,
    });
    let (status, body) = eu.send("POST", "/api/v1/links", Some(&eu_token), &request.to_string());
    assert_eq!(status, 200, "{body}");
    let url = serde_json::from_str::<serde_json::Value>(&body).unwrap()["url"].as_str().unwrap().to_string();
    let link = &url[url.find("/links/").unwrap()..];
    assert_eq!(ap.request("GET", link, None), (200, "quarterly numbers".to_string()));
    let (status, body) = eu.request("GET", link, None);
    assert_eq!(status, 403, "used once already, in the other region: {body}");
    assert!(body.contains("used already"), "{body}");

    // A job the catalog cannot decode is a 500 for the client, with only a request id; the
    // details go to the daemon's stderr under that id (the tracing subscriber of `serve`).
    pg.psql(&format!("UPDATE tidemark_jobs SET record = '{{\"not\": \"a job\"}}'::jsonb WHERE id = '{id}'")).unwrap();
    let (status, body) = ap.request("GET", &format!("/api/v1/jobs/{id}"), Some(&ap_token));
    assert_eq!(status, 500, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = answer["error"].as_str().unwrap();
    let request_id = error.split("request id ").nth(1).unwrap().split(')').next().unwrap().to_string();
    assert!(!error.contains("decode"), "the client gets no details: {error}");
    let log = ap.stderr();
    let line = log.lines().find(|l| l.contains(&request_id)).unwrap_or_else(|| panic!("{request_id} not in\n{log}"));
    assert!(line.contains("ERROR") && line.contains("internal error"), "{line}");
    assert!(line.contains(&format!("job {id} does not decode")), "{line}");

    assert_eq!(ap.stop(), Some(0));
    assert_eq!(eu.stop(), Some(0));
}

#[test]
fn a_second_daemon_on_one_embedded_state_exits_11_and_says_why() {
    let env = Env::with_repo();
    shared_files(&env);
    let config = region_config(&env, "eu-west", None);
    env.run(["serve", "--config", &config, "--log-level", "loud"]).expect(2);

    let first = Serve::start(&env, &config, "first.log");
    assert_eq!(first.request("GET", "/healthz", None).0, 200);
    let second = env.run(["serve", "--config", &config]).expect(11);
    let state = env.path("eu-west/state");
    assert!(
        second.stderr.contains(&format!("the state in {}", state.display()))
            && second.stderr.contains("is in use by another tidemark daemon"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("give this daemon its own server.state_dir"), "{}", second.stderr);
    assert!(!second.stdout.contains("listening"), "{}", second.stdout);
    // The first one is unharmed, and once it stopped, the state is free again.
    assert_eq!(first.request("GET", "/healthz", None).0, 200);
    assert_eq!(first.stop(), Some(0));
    let again = Serve::start(&env, &config, "again.log");
    assert_eq!(again.request("GET", "/healthz", None).0, 200);
    assert_eq!(again.stop(), Some(0));
}
