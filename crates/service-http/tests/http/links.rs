//! Signed links: download, expiry, tampering, reuse of a single-use link, lifetimes above the
//! maximum; every refusal audited.

use serde_json::json;
use tidemark_service_core::audit::Outcome;

use crate::util::fixture::{HELD, REPORT, UPLOADS_SNAPSHOT, report_bytes};
use crate::util::{ALLOWED, DENIED, Options, TestServer, denied, make_link};

async fn fetch(server: &TestServer, url: &str) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let response = server.client(ALLOWED).get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.bytes().await.unwrap().to_vec(), headers)
}

#[tokio::test]
async fn a_link_downloads_its_file_until_it_expires() {
    let server = TestServer::start(Options::default()).await;
    let (status, link) = make_link(&server, json!({"snapshot": "aa11", "path": REPORT, "ttl": "30m"})).await;
    assert_eq!(status, 200, "{link}");
    assert_eq!(link["expires"], "2026-01-10T12:30:00Z");
    assert_eq!(link["snapshot"], UPLOADS_SNAPSHOT, "scoped to the full id");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("http://{}/links/", server.addr)), "{url}");

    // No bearer token needed; the body streams whole.
    let (status, body, headers) = fetch(&server, &url).await;
    assert_eq!(status, 200);
    assert!(body == report_bytes(), "the downloaded bytes differ");
    assert_eq!(headers["content-length"], report_bytes().len().to_string().as_str());
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"report Q1.pdf\"; filename*=UTF-8''report%20Q1.pdf"
    );
    // A multi-use link works again.
    assert_eq!(fetch(&server, &url).await.0, 200);
    // The allowlist still applies to links.
    assert_eq!(server.client(DENIED).get(&url).send().await.unwrap().status().as_u16(), 403);

    server.advance(29 * 60 + 59);
    assert_eq!(fetch(&server, &url).await.0, 200);
    server.advance(1);
    let (status, body, _) = fetch(&server, &url).await;
    assert_eq!(status, 403);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("expired"), "{error}");

    let entries = server.audit();
    let refusals = denied(&entries);
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[1].detail.as_deref().unwrap().contains("expired"));
    assert_eq!(refusals[1].action, "GET /links/…");
    let downloads = entries.iter().filter(|(_, e)| e.outcome == Outcome::Ok && e.action == "GET /links/…").count();
    assert_eq!(downloads, 3);
    let created = entries.iter().find(|(_, e)| e.action == "POST /api/v1/links").unwrap();
    assert_eq!(created.1.actor.as_deref(), Some("bob-operator"));
    assert_eq!(created.1.target, format!("aa11:{REPORT}"));
}

#[tokio::test]
async fn a_tampered_link_is_refused() {
    let server = TestServer::start(Options::default()).await;
    let (_, link) = make_link(&server, json!({"snapshot": UPLOADS_SNAPSHOT, "path": REPORT})).await;
    let url = link["url"].as_str().unwrap();
    let (head, signature) = url.rsplit_once('.').unwrap();
    // Another claim under the old signature: a different path.
    let token = head.rsplit_once('/').unwrap().1;
    let claims = String::from_utf8(base64_decode(token)).unwrap().replace("report Q1", "secrets!!");
    let forged = format!("{}/links/{}.{signature}", server.url(""), base64_encode(claims.as_bytes()));
    // A flipped signature character.
    let flipped_char = if signature.ends_with('A') { 'B' } else { 'A' };
    let flipped = format!("{head}.{}{flipped_char}", &signature[..signature.len() - 1]);
    for bad in [forged, flipped, server.url("/links/garbage")] {
        let (status, body, _) = fetch(&server, &bad).await;
        assert_eq!(status, 403, "{bad}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    let entries = server.audit();
    let refusals = denied(&entries);
    assert_eq!(refusals.len(), 3);
    assert!(refusals[0].detail.as_deref().unwrap().contains("signature"), "{:?}", refusals[0]);
    assert!(refusals[2].detail.as_deref().unwrap().contains("malformed"), "{:?}", refusals[2]);
}

#[tokio::test]
async fn a_single_use_link_works_once() {
    let server = TestServer::start(Options::default()).await;
    let (status, link) = make_link(&server, json!({"snapshot": "aa11", "path": REPORT, "single_use": true})).await;
    assert_eq!(status, 200);
    assert_eq!(link["single_use"], true);
    let url = link["url"].as_str().unwrap();
    assert_eq!(fetch(&server, url).await.0, 200);
    let (status, body, _) = fetch(&server, url).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("used already"));
    let entries = server.audit();
    let refusals = denied(&entries);
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].target, format!("{UPLOADS_SNAPSHOT}:{REPORT}"));
    assert_eq!(refusals[0].detail.as_deref(), Some("single-use link reused"));
}

#[tokio::test]
async fn link_requests_are_checked() {
    let server = TestServer::start(Options { link_max_ttl: "2h", ..Options::default() }).await;
    let cases = [
        (json!({"snapshot": "aa11", "path": REPORT, "ttl": "3h"}), 400, "server.link_max_ttl"),
        (json!({"snapshot": "aa11", "path": REPORT, "ttl": "0s"}), 400, "positive"),
        (json!({"snapshot": "aa11", "path": REPORT, "ttl": "soon"}), 400, "invalid duration"),
        (json!({"snapshot": "ffff", "path": REPORT}), 404, "no snapshot"),
        (json!({"snapshot": "a", "path": REPORT}), 400, "ambiguous"),
        (json!({"snapshot": "aa11", "path": "/etc/shadow"}), 404, "no file"),
        (json!({"snapshot": "aa11"}), 400, "missing field `path`"),
        (json!({"snapshot": "aa11", "path": REPORT, "tll": "1h"}), 400, "unknown field `tll`"),
    ];
    for (body, want, words) in cases {
        let (status, answer) = make_link(&server, body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["error"].as_str().unwrap().contains(words), "{body} -> {answer}");
    }
    // Up to the maximum is fine.
    let (status, answer) = make_link(&server, json!({"snapshot": "aa11", "path": REPORT, "ttl": "2h"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expires"], "2026-01-10T14:00:00Z");
    // Each attempt is audited, the failures as failed.
    let entries = server.audit();
    let failed = entries.iter().filter(|(_, e)| e.outcome == Outcome::Failed).count();
    assert_eq!(failed, 8);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn shutdown_lets_a_download_in_flight_finish() {
    let mut server = TestServer::start(Options::default()).await;
    let (status, link) = make_link(&server, json!({"snapshot": "aa11", "path": HELD})).await;
    assert_eq!(status, 200, "{link}");
    // The headers arrive; the body waits for the fixture's release.
    let response = server.client(ALLOWED).get(link["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    server.signal_stop();
    // Wait until the server stopped listening, so that the shutdown is under way.
    let mut closed = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(server.addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(closed, "the server still accepts connections after shutdown");

    server.fixture.release();
    let body = response.bytes().await.unwrap();
    assert!(body.as_ref() == report_bytes().as_slice(), "the download in flight was cut short");
    server.stop().await;
}
