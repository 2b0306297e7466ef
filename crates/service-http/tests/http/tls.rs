//! TLS from certificate files: a client trusting the self-signed certificate gets answers; one
//! that does not, or that speaks plain HTTP, gets nothing.

use crate::util::{ALLOWED, DENIED, Options, TestServer, json};

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let server = TestServer::start(Options { tls: true, ..Options::default() }).await;
    let url = server.url("/healthz");
    assert!(url.starts_with("https://"));
    let (status, body) = json(server.client(ALLOWED).get(&url).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // Authentication and the allowlist work the same over TLS.
    let sources = server.url("/api/v1/sources");
    let status = server.client(ALLOWED).get(&sources).bearer_auth(&server.tokens.viewer).send().await.unwrap().status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(server.client(ALLOWED).get(&sources).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(server.client(DENIED).get(&url).send().await.unwrap().status().as_u16(), 403);

    // Links handed out over TLS are https links.
    let (status, link) =
        crate::util::make_link(&server, serde_json::json!({"snapshot": "aa11", "path": crate::util::fixture::REPORT}))
            .await;
    assert_eq!(status, 200);
    assert!(link["url"].as_str().unwrap().starts_with("https://"), "{link}");

    // A client that does not trust the certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap().cert.pem();
    let stranger = crate::util::client(ALLOWED, Some(&other));
    assert!(stranger.get(&url).send().await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = crate::util::client(ALLOWED, None);
    assert!(plain.get(url.replace("https://", "http://")).send().await.is_err());
}
