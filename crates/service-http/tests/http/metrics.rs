//! `/metrics` in the Prometheus text format, from the daemon's sources, policy and jobs.

use crate::util::{ALLOWED, Options, TestServer};

#[tokio::test]
async fn metrics_describe_each_source() {
    let server = TestServer::start(Options::default()).await;
    let response =
        server.client(ALLOWED).get(server.url("/metrics")).bearer_auth(&server.tokens.viewer).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    // 2026-01-09T19:31:00Z; the clock reads 2026-01-10T12:00:00Z.
    for line in [
        "tidemark_up 1",
        "tidemark_source_health{source=\"pgmain\",health=\"failing\"} 1",
        "tidemark_last_backup_success_timestamp_seconds{source=\"uploads\"} 1767987060",
        "tidemark_newest_snapshot_age_seconds{source=\"uploads\"} 59370",
        "tidemark_jobs{source=\"pgmain\",kind=\"backup\",status=\"failed\"} 1",
        "tidemark_jobs{source=\"uploads\",kind=\"drill\",status=\"succeeded\"} 1",
        "tidemark_drill_duration_seconds{source=\"uploads\"} 42.5",
        "tidemark_drill_success{source=\"uploads\"} 1",
        "# TYPE tidemark_jobs gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // pgmain never succeeded: no success timestamp for it.
    assert!(!text.contains("tidemark_last_backup_success_timestamp_seconds{source=\"pgmain\"}"));
    // Every sample line belongs to a family declared with HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
    }
}
