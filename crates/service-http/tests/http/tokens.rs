//! The token file: only hashes, mode 0600, picked up by a running server, rotation.

use std::os::unix::fs::PermissionsExt;

use tidemark_service_core::Role;
use tidemark_service_http::tokens;

use crate::util::{ALLOWED, Options, TestServer};

#[tokio::test]
async fn tokens_created_on_a_running_server_work_at_once() {
    let server = TestServer::start(Options::default()).await;
    let status = |token: String| {
        let server = &server;
        async move {
            let request = server.client(ALLOWED).post(server.url("/api/v1/sources/uploads/backup"));
            request.bearer_auth(token).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(server.tokens.operator.clone()).await, 202);

    let state = server.state_dir();
    let fresh = tokens::create(&state, "deploy-bot", Role::Operator).unwrap();
    assert!(fresh.starts_with("tdm_"));
    assert_eq!(status(fresh.clone()).await, 202);

    // Creating a token under the same name rotates it.
    let rotated = tokens::create(&state, "deploy-bot", Role::Viewer).unwrap();
    assert_eq!(status(fresh.clone()).await, 401);
    assert_eq!(status(rotated.clone()).await, 403);

    let path = state.join(tokens::TOKENS_FILE);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    for token in [&fresh, &rotated, &server.tokens.admin] {
        assert!(!text.contains(token.as_str()), "the token file holds a plain token");
    }
    let store = tokens::load(&state).unwrap();
    let names: Vec<(&str, Role)> = store.records().iter().map(|r| (r.name.as_str(), r.role)).collect();
    assert_eq!(
        names,
        [
            ("alice-viewer", Role::Viewer),
            ("bob-operator", Role::Operator),
            ("carol-admin", Role::Admin),
            ("deploy-bot", Role::Viewer)
        ]
    );
    assert!(store.verify(&rotated).is_some());

    // Revoking takes effect on the running server.
    assert!(tokens::revoke(&state, "deploy-bot").unwrap());
    assert_eq!(status(rotated.clone()).await, 401);
    assert!(!tokens::revoke(&state, "deploy-bot").unwrap());
    assert_eq!(status(server.tokens.operator.clone()).await, 202, "the others still work");

    // A bad name is refused with the rule.
    let error = tokens::create(&state, "no spaces", Role::Viewer).unwrap_err().to_string();
    assert!(error.contains("letters, digits"), "{error}");
}

#[test]
fn a_damaged_token_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(tokens::TOKENS_FILE), "{not json").unwrap();
    let error = format!("{:#}", tokens::load(dir.path()).unwrap_err());
    assert!(error.contains("damaged") && error.contains("tidemark token create"), "{error}");
    assert!(tokens::load(&dir.path().join("absent")).unwrap().records().is_empty());
}
