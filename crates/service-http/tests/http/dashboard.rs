//! The dashboard in headless Chromium: with a token it renders the sources, their status, the
//! timeline and the policy table; with a wrong token it shows the sign-in form and why.
//!
//! Needs Chromium (Debian package `chromium`; `TIDEMARK_CHROMIUM` names another binary). When it
//! is missing the tests are skipped with a message, unless `TIDEMARK_REQUIRE_CHROMIUM=1`.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{Options, TestServer};

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEMARK_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn require_chromium() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("TIDEMARK_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "TIDEMARK_REQUIRE_CHROMIUM=1 but no chromium found: apt-get install -y chromium, or set TIDEMARK_CHROMIUM"
        );
        eprintln!(
            "skipping: no chromium on PATH (apt-get install -y chromium); TIDEMARK_REQUIRE_CHROMIUM=1 makes this fail"
        );
    }
    found
}

/// The DOM after the page's scripts ran, as headless Chromium serializes it.
async fn rendered(browser: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finished within two minutes")
        .expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_sources_status_and_policy() {
    let Some(browser) = require_chromium() else { return };
    let server = TestServer::start(Options::default()).await;
    let dom = rendered(&browser, &server.url(&format!("/#token={}", server.tokens.viewer))).await;

    assert!(dom.contains("<body data-state=\"dashboard\">"), "the page did not load its data:\n{dom}");
    // Sources with their status.
    assert!(dom.contains("<tr data-source=\"uploads\"><td><strong>uploads</strong>"), "{dom}");
    assert!(dom.contains("<tr data-source=\"pgmain\"><td><strong>pgmain</strong>"), "{dom}");
    assert!(dom.contains("<td class=\"health\"><span class=\"badge ok\">ok</span></td>"), "{dom}");
    assert!(dom.contains("<td class=\"health\"><span class=\"badge failing\">failing</span></td>"), "{dom}");
    assert!(dom.contains("0 1 * * * Asia/Kolkata, window 1h"), "{dom}");
    // The policy table, measured.
    let policy = &dom[dom.find("<table id=\"policy\">").unwrap()..];
    let policy = &policy[..policy.find("</table>").unwrap()];
    assert!(policy.contains("14 daily, 8 weekly, 6 monthly, 1 yearly"), "{policy}");
    assert!(policy.contains("base backups + WAL archive"), "{policy}");
    assert!(policy.contains("offsite: 2 min"), "{policy}");
    assert!(policy.contains("restored in 43 s"), "{policy}");
    // The timeline has a point per snapshot; drills and failures are listed.
    assert_eq!(dom.matches("class=\"point\"").count(), 3, "{dom}");
    assert!(dom.contains("3 files verified"), "{dom}");
    assert!(dom.contains("connection refused"), "{dom}");
    // The token left the address bar and the page never shows it.
    assert!(!dom.contains(&server.tokens.viewer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_shows_the_sign_in_form() {
    let Some(browser) = require_chromium() else { return };
    let server = TestServer::start(Options::default()).await;
    let dom = rendered(&browser, &server.url("/#token=tdm_wrong-token")).await;
    assert!(dom.contains("<body data-state=\"login\">"), "{dom}");
    assert!(dom.contains("The server refused this token: the bearer token is not valid"), "{dom}");
    assert!(!dom.contains("<tr data-source="), "no data without a valid token");

    let dom = rendered(&browser, &server.url("/")).await;
    assert!(dom.contains("<body data-state=\"login\">"), "{dom}");
    // The refused token was audited.
    assert_eq!(crate::util::denied(&server.audit()).len(), 2, "sources and policy were refused");
}
