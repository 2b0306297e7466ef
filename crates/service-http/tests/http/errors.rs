//! Control errors and bad requests map to statuses with a JSON `{"error": ...}` body; triggered
//! jobs reach the daemon with the caller's name.

use serde_json::{Value, json};
use tidemark_service_core::JobRequest;
use tidemark_service_core::audit::Outcome;

use crate::util::fixture::FAILED_JOB;
use crate::util::{ALLOWED, Options, TestServer, json};

async fn call(server: &TestServer, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let client = server.client(ALLOWED);
    let mut request = match method {
        "GET" => client.get(server.url(path)),
        _ => client.post(server.url(path)),
    };
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    json(request.bearer_auth(&server.tokens.operator).send().await.unwrap()).await
}

#[tokio::test]
async fn control_errors_map_to_statuses() {
    let server = TestServer::start(Options::default()).await;
    let cases: [(&str, &str, Option<&str>, u16, &str); 12] = [
        ("GET", "/api/v1/sources/nope", None, 404, "no source named \"nope\""),
        ("GET", "/api/v1/jobs/0000", None, 404, "no job 0000"),
        ("GET", "/api/v1/snapshots?source=nope", None, 404, "no source named nope"),
        ("POST", "/api/v1/sources/nope/backup", None, 404, "no source named nope"),
        ("POST", "/api/v1/sources/busy/backup", None, 409, "is running"),
        ("POST", "/api/v1/sources/down/drill", None, 503, "unreachable"),
        ("POST", "/api/v1/sources/broken/backup", None, 500, "internal error (request id"),
        ("POST", "/api/v1/sources/uploads/restore", Some(r#"{"target": "relative/dir"}"#), 400, "not absolute"),
        ("POST", "/api/v1/sources/uploads/restore", Some("{not json"), 400, "invalid JSON body"),
        ("GET", "/api/v1/jobs?kind=bakup", None, 400, "unknown job kind \"bakup\""),
        ("GET", "/api/v1/jobs?status=ok", None, 400, "unknown job status"),
        ("GET", "/api/v1/jobs?sauce=uploads", None, 400, "unknown field"),
    ];
    for (method, path, body, want, words) in cases {
        let (status, answer) = call(&server, method, path, body).await;
        assert_eq!(status, want, "{method} {path} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{method} {path} -> {answer}");
        assert!(!error.contains("secret internal detail"), "a 500 hides its details");
    }
}

#[tokio::test]
async fn triggers_reach_the_daemon_with_the_callers_name() {
    let server = TestServer::start(Options::default()).await;
    let (status, job) = call(&server, "POST", "/api/v1/sources/uploads/backup", None).await;
    assert_eq!(status, 202);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["trigger"], json!({"type": "manual", "by": "bob-operator"}));
    let body = r#"{"snapshot": "aa11", "target": "/srv/restore/q1", "include": ["*.pdf"]}"#;
    assert_eq!(call(&server, "POST", "/api/v1/sources/uploads/restore", Some(body)).await.0, 202);
    let started = server.fixture.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0], ("uploads".into(), JobRequest::Backup, "bob-operator".into()));
    assert_eq!(
        started[1].1,
        JobRequest::Restore {
            snapshot: Some("aa11".into()),
            target: "/srv/restore/q1".into(),
            include: vec!["*.pdf".into()]
        }
    );
    let entries = server.audit();
    let restore = entries.iter().find(|(_, e)| e.action == "POST /api/v1/sources/uploads/restore").unwrap();
    assert_eq!(restore.1.outcome, Outcome::Ok);
    assert_eq!(restore.1.target, "uploads snapshot aa11 into /srv/restore/q1");
}

#[tokio::test]
async fn reads_return_the_daemons_records() {
    let server = TestServer::start(Options::default()).await;
    let (status, sources) = call(&server, "GET", "/api/v1/sources", None).await;
    assert_eq!(status, 200);
    assert_eq!(sources[1]["name"], "uploads");
    assert_eq!(sources[1]["health"], "ok");
    let (_, one) = call(&server, "GET", "/api/v1/sources/pgmain", None).await;
    assert_eq!(one["health"], "failing");
    let (_, jobs) = call(&server, "GET", "/api/v1/jobs?source=pgmain&kind=backup&status=failed,missed", None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], FAILED_JOB);
    let (_, jobs) = call(&server, "GET", "/api/v1/jobs?limit=2", None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    let (_, job) = call(&server, "GET", &format!("/api/v1/jobs/{FAILED_JOB}"), None).await;
    assert_eq!(job["job"]["message"], "connection refused");
    assert_eq!(job["log"][0]["message"], "backup started");
    let (_, snapshots) = call(&server, "GET", "/api/v1/snapshots?source=uploads", None).await;
    assert_eq!(snapshots.as_array().unwrap().len(), 2);
    let (_, policy) = call(&server, "GET", "/api/v1/policy", None).await;
    assert_eq!(policy[1]["retention"], "14 daily, 8 weekly, 6 monthly, 1 yearly");
    let (_, drills) = call(&server, "GET", "/api/v1/drills?source=uploads", None).await;
    assert_eq!(drills[0]["restore_seconds"], 42.5);
    let (status, health) = json(server.client(ALLOWED).get(server.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    // The data reads are audited: the job's log and the snapshots; the rest are not.
    let actions: Vec<String> = server.audit().into_iter().map(|(_, e)| e.action).collect();
    assert_eq!(actions, [format!("GET /api/v1/jobs/{FAILED_JOB}"), "GET /api/v1/snapshots".to_string()]);
}
