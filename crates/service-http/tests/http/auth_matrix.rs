//! Every route x {no token, bad token, viewer, operator, admin} x {allowed, denied address}, and
//! the OpenAPI description holding exactly the routed paths.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tidemark_service_core::audit::Outcome;

use crate::util::fixture::{BACKUP_JOB, REPORT, UPLOADS_SNAPSHOT};
use crate::util::{ALLOWED, DENIED, Options, TestServer, denied, json, make_link};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    Public,
    Viewer,
    Operator,
    Admin,
}

struct Route {
    method: &'static str,
    /// As in the OpenAPI description.
    template: &'static str,
    path: String,
    access: Access,
    body: Option<Value>,
    ok: u16,
}

fn routes(link: &str) -> Vec<Route> {
    let r = |method, template, path: &str, access, body, ok| Route {
        method,
        template,
        path: path.into(),
        access,
        body,
        ok,
    };
    vec![
        r("GET", "/", "/", Access::Public, None, 200),
        r("GET", "/healthz", "/healthz", Access::Public, None, 200),
        r("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", Access::Public, None, 200),
        r("GET", "/links/{token}", link, Access::Public, None, 200),
        r("GET", "/metrics", "/metrics", Access::Viewer, None, 200),
        r("GET", "/api/v1/sources", "/api/v1/sources", Access::Viewer, None, 200),
        r("GET", "/api/v1/sources/{name}", "/api/v1/sources/uploads", Access::Viewer, None, 200),
        r("GET", "/api/v1/snapshots", "/api/v1/snapshots?source=uploads", Access::Viewer, None, 200),
        r("GET", "/api/v1/jobs", "/api/v1/jobs?status=failed,succeeded&limit=5", Access::Viewer, None, 200),
        r("GET", "/api/v1/jobs/{id}", &format!("/api/v1/jobs/{BACKUP_JOB}"), Access::Viewer, None, 200),
        r("GET", "/api/v1/policy", "/api/v1/policy", Access::Viewer, None, 200),
        r("GET", "/api/v1/drills", "/api/v1/drills", Access::Viewer, None, 200),
        r("POST", "/api/v1/sources/{name}/backup", "/api/v1/sources/uploads/backup", Access::Operator, None, 202),
        r("POST", "/api/v1/sources/{name}/drill", "/api/v1/sources/uploads/drill", Access::Operator, None, 202),
        r(
            "POST",
            "/api/v1/sources/{name}/restore",
            "/api/v1/sources/uploads/restore",
            Access::Operator,
            Some(json!({"snapshot": "aa11", "target": "/srv/restore/x", "include": ["*.pdf"]})),
            202,
        ),
        r(
            "POST",
            "/api/v1/links",
            "/api/v1/links",
            Access::Operator,
            Some(json!({"snapshot": UPLOADS_SNAPSHOT, "path": REPORT, "ttl": "10m"})),
            200,
        ),
        r("GET", "/api/v1/audit", "/api/v1/audit?limit=5", Access::Admin, None, 200),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Credential {
    None,
    Bad,
    Viewer,
    Operator,
    Admin,
}

fn expected(route: &Route, credential: Credential, address: &str) -> u16 {
    if address == DENIED {
        return 403;
    }
    let required = match route.access {
        Access::Public => return route.ok,
        Access::Viewer => 0,
        Access::Operator => 1,
        Access::Admin => 2,
    };
    let held = match credential {
        Credential::None | Credential::Bad => return 401,
        Credential::Viewer => 0,
        Credential::Operator => 1,
        Credential::Admin => 2,
    };
    if held >= required { route.ok } else { 403 }
}

#[tokio::test]
async fn every_route_role_and_address() {
    let server = TestServer::start(Options::default()).await;
    let (status, link) = make_link(&server, json!({"snapshot": "aa11", "path": REPORT})).await;
    assert_eq!(status, 200, "{link}");
    let link_path = link["url"].as_str().unwrap().split_once("/links/").map(|(_, t)| format!("/links/{t}")).unwrap();
    let before = server.audit().len();

    let mut failures = Vec::new();
    let mut refusals = 0;
    let mut count = 0;
    for route in routes(&link_path) {
        for credential in
            [Credential::None, Credential::Bad, Credential::Viewer, Credential::Operator, Credential::Admin]
        {
            for address in [ALLOWED, DENIED] {
                let client = server.client(address);
                let url = server.url(&route.path);
                let mut request = match route.method {
                    "GET" => client.get(&url),
                    _ => client.post(&url),
                };
                if let Some(body) = &route.body {
                    request = request.json(body);
                }
                request = match credential {
                    Credential::None => request,
                    Credential::Bad => request.bearer_auth("tdm_not-a-real-token-at-all"),
                    Credential::Viewer => request.bearer_auth(&server.tokens.viewer),
                    Credential::Operator => request.bearer_auth(&server.tokens.operator),
                    Credential::Admin => request.bearer_auth(&server.tokens.admin),
                };
                let response = request.send().await.unwrap();
                let want = expected(&route, credential, address);
                let (got, body) = json(response).await;
                count += 1;
                if want == 401 || want == 403 {
                    refusals += 1;
                    if !body["error"].is_string() {
                        failures.push(format!(
                            "{} {} {credential:?} from {address}: no JSON error",
                            route.method, route.path
                        ));
                    }
                }
                if got != want {
                    failures.push(format!(
                        "{} {} {credential:?} from {address}: got {got}, want {want} ({body})",
                        route.method, route.path
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} cases wrong:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(count, 17 * 5 * 2);

    // Every refusal is in the audit log, which still verifies.
    let entries = server.audit();
    let new = &entries[before..];
    assert_eq!(denied(new).len(), refusals, "one denied entry per refusal");
    let from_denied = denied(new).iter().filter(|e| e.ip.to_string() == DENIED).count();
    assert_eq!(from_denied, 17 * 5);
    // The link token never reaches the log.
    let token = link_path.trim_start_matches("/links/");
    assert!(!std::fs::read_to_string(server.state_dir().join("audit.log")).unwrap().contains(token));
    // Role refusals name the caller.
    assert!(new.iter().any(|(_, e)| e.outcome == Outcome::Denied
        && e.actor.as_deref() == Some("alice-viewer")
        && e.action == "POST /api/v1/sources/uploads/backup"));
}

#[tokio::test]
async fn the_allowlist_comes_before_the_404() {
    let server = TestServer::start(Options::default()).await;
    let (status, _) = json(server.client(DENIED).get(server.url("/no/such/route")).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, body) = json(server.client(ALLOWED).get(server.url("/no/such/route")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no such route"), "{body}");
    // An unknown source is a 404 only after the token check.
    let response = server.client(ALLOWED).get(server.url("/api/v1/sources/nope")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(json(response).await.0, 401);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let options = Options {
        allow: vec!["10.9.9.0/24".into()],
        trusted_proxies: vec!["127.0.0.1/32".into()],
        ..Options::default()
    };
    let server = TestServer::start(options).await;
    let get = |from: &'static str, forwarded: Option<&'static str>| {
        let server = &server;
        async move {
            let mut request =
                server.client(from).get(server.url("/api/v1/snapshots")).bearer_auth(&server.tokens.viewer);
            if let Some(f) = forwarded {
                request = request.header("X-Forwarded-For", f);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    // Through the trusted proxy (127.0.0.1) for an allowed client.
    assert_eq!(get(ALLOWED, Some("10.9.9.7")).await, 200);
    // A client prepending an allowed address cannot get past the proxy's own entry.
    assert_eq!(get(ALLOWED, Some("10.9.9.7, 192.0.2.1")).await, 403);
    assert_eq!(get(ALLOWED, Some("192.0.2.1")).await, 403);
    // The proxy itself is not on the allowlist.
    assert_eq!(get(ALLOWED, None).await, 403);
    // From an untrusted peer the header is ignored.
    assert_eq!(get(DENIED, Some("10.9.9.7")).await, 403);

    let entries = server.audit();
    let ips: Vec<String> = entries.iter().map(|(_, e)| format!("{} {:?}", e.ip, e.outcome)).collect();
    assert_eq!(ips, ["10.9.9.7 Ok", "192.0.2.1 Denied", "192.0.2.1 Denied", "127.0.0.1 Denied", "127.0.0.2 Denied"]);
}

#[tokio::test]
async fn openapi_describes_exactly_the_routes() {
    let server = TestServer::start(Options::default()).await;
    let (status, spec) =
        json(server.client(ALLOWED).get(server.url("/api/v1/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    let routed: BTreeSet<(String, String)> =
        routes("/links/x").iter().map(|r| (r.template.to_string(), r.method.to_lowercase())).collect();
    let described: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (path.clone(), m.clone())))
        .collect();
    assert_eq!(routed, described);
    for route in routes("/links/x") {
        let op = &spec["paths"][route.template][route.method.to_lowercase()];
        let needs_token = route.access != Access::Public;
        assert_eq!(op["security"].as_array().unwrap().is_empty(), !needs_token, "{}", route.template);
        assert!(op["responses"][route.ok.to_string()].is_object(), "{} lacks {}", route.template, route.ok);
    }
}
