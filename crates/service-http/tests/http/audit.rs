//! The audit log: hash-chained across restarts, refusals recorded, readable by admins.

use tidemark_service_core::audit::Outcome;
use tidemark_service_core::{Config, verify_chain};
use tidemark_service_http::Api;

use crate::util::fixture::BACKUP_JOB;
use crate::util::{ALLOWED, DENIED, Options, TestServer, json};

#[tokio::test]
async fn the_chain_continues_across_restarts() {
    let server = TestServer::start(Options::default()).await;
    let get = |path: &'static str, token: Option<String>, from: &'static str| {
        let server = &server;
        async move {
            let mut request = server.client(from).get(server.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get("/api/v1/snapshots", Some(server.tokens.viewer.clone()), ALLOWED).await, 200);
    assert_eq!(get("/api/v1/snapshots", None, ALLOWED).await, 401);
    assert_eq!(get("/api/v1/audit", Some(server.tokens.operator.clone()), ALLOWED).await, 403);
    assert_eq!(get("/healthz", None, DENIED).await, 403);
    let first = server.audit();
    assert_eq!(first.len(), 4);

    let server = server.restart().await;
    let response = server
        .client(ALLOWED)
        .get(server.url(&format!("/api/v1/jobs/{BACKUP_JOB}")))
        .bearer_auth(&server.tokens.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let entries = server.audit();
    let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let summary: Vec<(String, Outcome, Option<String>)> =
        entries.iter().map(|(_, e)| (e.action.clone(), e.outcome, e.actor.clone())).collect();
    assert_eq!(
        summary,
        [
            ("GET /api/v1/snapshots".to_string(), Outcome::Ok, Some("alice-viewer".to_string())),
            ("GET /api/v1/snapshots".to_string(), Outcome::Denied, None),
            ("GET /api/v1/audit".to_string(), Outcome::Denied, Some("bob-operator".to_string())),
            ("GET /healthz".to_string(), Outcome::Denied, None),
            (format!("GET /api/v1/jobs/{BACKUP_JOB}"), Outcome::Ok, Some("alice-viewer".to_string())),
        ]
    );
    assert_eq!(entries[3].1.ip.to_string(), DENIED);

    // Admins read the log through the API, with the chain checked.
    let response =
        server.client(ALLOWED).get(server.url("/api/v1/audit?limit=2")).bearer_auth(&server.tokens.admin).send().await;
    let (status, view) = json(response.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(view["verified"], true, "{view}");
    assert_eq!(view["total"], 6, "the read itself is audited first");
    assert_eq!(view["entries"][1]["action"], "GET /api/v1/audit");
    assert_eq!(view["entries"][1]["seq"], 6);
}

#[tokio::test]
async fn a_modified_log_is_detected_and_a_torn_one_refused() {
    let mut server = TestServer::start(Options::default()).await;
    for _ in 0..3 {
        server.client(DENIED).get(server.url("/healthz")).send().await.unwrap();
    }
    server.stop().await;
    let path = server.state_dir().join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("127.0.0.2", "127.0.0.9", 1);
    assert_eq!(verify_chain(edited.lines()).unwrap_err().line, 2);

    // A torn last line (a crash mid-write): the server refuses to start rather than guess.
    std::fs::write(&path, format!("{text}{{\"seq\":4,")).unwrap();
    let config = Config::parse(
        &format!(
            "[server]\nstate_dir = {:?}\n[repositories.r]\nurl = \"/r\"\npassword_file = \"/p\"\n",
            server.state_dir().display().to_string()
        ),
        "t.toml",
    )
    .unwrap();
    let error = format!("{:#}", Api::new(config.into(), server.fixture.clone()).unwrap_err());
    assert!(error.contains("incomplete") && error.contains("move the file aside"), "{error}");
}

#[tokio::test]
async fn token_changes_from_another_process_join_the_running_server_chain() {
    let server = TestServer::start(Options::default()).await;
    let state = server.state_dir();
    let status = |response: reqwest::Response| response.status().as_u16();
    let snapshots = || server.client(ALLOWED).get(server.url("/api/v1/snapshots"));
    assert_eq!(status(snapshots().bearer_auth(&server.tokens.viewer).send().await.unwrap()), 200);
    // `tidemark token create` / `revoke` run beside the daemon and append to the same log (another
    // open file, as another process would have), while the server keeps appending.
    let fresh =
        tidemark_service_http::tokens::create(&state, "deploy-bot", tidemark_service_core::Role::Operator).unwrap();
    assert_eq!(status(snapshots().bearer_auth(&fresh).send().await.unwrap()), 200);
    assert!(tidemark_service_http::tokens::revoke(&state, "deploy-bot").unwrap());
    assert_eq!(status(snapshots().bearer_auth(&fresh).send().await.unwrap()), 401);

    let text = std::fs::read_to_string(state.join(tidemark_service_http::AUDIT_FILE)).unwrap();
    verify_chain(text.lines()).unwrap();
    let entries = server.audit();
    let seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let actions: Vec<(&str, &str)> = entries.iter().map(|(_, e)| (e.action.as_str(), e.target.as_str())).collect();
    assert_eq!(actions[1], ("token create", "token deploy-bot (operator)"));
    assert_eq!(actions[3], ("token revoke", "token deploy-bot"));
    assert_eq!(entries[1].1.actor.as_deref(), Some("cli"));
    assert_eq!(entries[4].1.outcome, Outcome::Denied);
}
