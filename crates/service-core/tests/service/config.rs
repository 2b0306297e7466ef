use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use jiff::SignedDuration;
use tidemark_service_core::config::{Event, Overrun, Tls};
use tidemark_service_core::{AccessPolicy, Config, Retention, ServiceError, SourceKind};

use crate::ts;

/// The example of the issue's contract, exactly as written there.
const CONTRACT: &str = r#"[server]
listen = "127.0.0.1:8470"
state_dir = "/var/lib/tidemark"
allow = ["127.0.0.1/32", "10.0.0.0/8"]   # IP allowlist; absent means loopback only
link_secret_file = "/etc/tidemark/link.key"

[repositories.primary]
url = "/srv/backup/repo"
password_file = "/etc/tidemark/repo.pass"

[sources.uploads]
kind = "directory"                        # also "bucket" and "postgres" as those land
paths = ["/srv/uploads"]
repository = "primary"
schedule = "0 1 * * *"
timezone = "Asia/Kolkata"
window = "1h"
retention = { keep_daily = 14, keep_weekly = 8, keep_monthly = 6, keep_yearly = 1 }
"#;

/// The problems `text` has, as displayed.
fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, "tidemark.toml") {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ServiceError::Config(list)) => list.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("expected a config error, got {other:?}"),
    }
}

/// The contract example with `from` replaced by `to` (which must occur exactly once).
fn contract_with(from: &str, to: &str) -> String {
    assert_eq!(CONTRACT.matches(from).count(), 1, "{from:?}");
    CONTRACT.replace(from, to)
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[test]
fn the_contract_example_parses_as_written() {
    let config = Config::parse(CONTRACT, "tidemark.toml").unwrap();
    let server = &config.server;
    assert_eq!(server.listen, "127.0.0.1:8470".parse().unwrap());
    assert_eq!(server.state_dir, PathBuf::from("/var/lib/tidemark"));
    assert_eq!(server.access.allow, [net("127.0.0.1/32"), net("10.0.0.0/8")]);
    assert!(server.access.trusted_proxies.is_empty());
    assert_eq!(server.link_secret_file, Some(PathBuf::from("/etc/tidemark/link.key")));
    assert_eq!(server.link_ttl, SignedDuration::from_hours(1));
    assert_eq!(server.link_max_ttl, SignedDuration::from_hours(1));
    assert_eq!(server.tls, None);

    let primary = &config.repositories["primary"];
    assert_eq!(primary.url, "/srv/backup/repo");
    assert_eq!(primary.password_file, PathBuf::from("/etc/tidemark/repo.pass"));

    let uploads = &config.sources["uploads"];
    assert_eq!(uploads.kind, SourceKind::Directory { paths: vec!["/srv/uploads".into()], exclude: vec![] });
    assert_eq!(uploads.repository, "primary");
    assert_eq!(uploads.schedule.expression(), "0 1 * * *");
    assert_eq!(uploads.schedule.time_zone(), "Asia/Kolkata");
    assert_eq!(uploads.schedule.next_after(ts("2026-01-10T00:00:00Z")), Some(ts("2026-01-10T19:30:00Z")));
    assert_eq!(uploads.window, Some(SignedDuration::from_hours(1)));
    assert_eq!(uploads.overrun, Overrun::Continue);
    assert_eq!(
        uploads.retention,
        Some(Retention { daily: Some(14), weekly: Some(8), monthly: Some(6), yearly: Some(1), ..Retention::default() })
    );
    assert!(uploads.copy_to.is_empty() && uploads.drill.is_none() && uploads.stale_after.is_none());
    assert_eq!((uploads.location.line, uploads.location.column), (11, 10));
    assert!(config.notify.is_empty());
}

#[test]
fn absent_allow_means_loopback_only() {
    let config = Config::parse(&contract_with("allow = [\"127.0.0.1/32\", \"10.0.0.0/8\"]", ""), "t.toml").unwrap();
    let access = &config.server.access;
    assert_eq!(access.allow, AccessPolicy::loopback());
    for (ip, allowed) in [("127.0.0.1", true), ("127.8.9.10", true), ("::1", true), ("10.0.0.1", false), ("::2", false)]
    {
        assert_eq!(access.is_allowed(ip.parse::<IpAddr>().unwrap()), allowed, "{ip}");
    }
}

#[test]
fn every_optional_part() {
    let text = r#"
[server]
state_dir = "/var/lib/tidemark"
trusted_proxies = ["10.0.0.5", "fd00::/8"]
link_ttl = "15m"
link_max_ttl = "1d"
tls_cert = "/etc/tidemark/cert.pem"
tls_key = "/etc/tidemark/key.pem"

[repositories.primary]
url = "/srv/backup/repo"
password_file = "/etc/tidemark/repo.pass"

[repositories.offsite]
url = "s3://backups/tidemark"
password_file = "/etc/tidemark/offsite.pass"

[sources.media]
kind = "bucket"
url = "s3://media/prefix"
repository = "primary"
schedule = "@daily"
copy_to = ["offsite"]
overrun = "cancel"
window = "2h"
retention = { keep_last = 3, keep_within = "7d" }
drill = { schedule = "0 3 * * SUN", max_duration = "4h", scratch_dir = "/scratch" }
stale_after = "26h"

[sources.db]
kind = "postgres"
connection = "host=/run/postgresql user=postgres"
repository = "offsite"
schedule = "*/15 * * * *"
timezone = "Europe/Berlin"
drill = { schedule = "0 4 1 * *" }

[[notify]]
url = "https://hooks.example.com/a"

[[notify]]
url = "http://alerts.internal/b"
events = ["drill_failed", "backup_stale"]
"#;
    let config = Config::parse(text, "t.toml").unwrap();
    let server = &config.server;
    assert_eq!(server.listen, tidemark_service_core::config::DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(server.access.allow, AccessPolicy::loopback());
    assert_eq!(server.access.trusted_proxies, [net("10.0.0.5/32"), net("fd00::/8")]);
    assert_eq!((server.link_ttl, server.link_max_ttl), (SignedDuration::from_mins(15), SignedDuration::from_hours(24)));
    assert_eq!(server.tls, Some(Tls { cert: "/etc/tidemark/cert.pem".into(), key: "/etc/tidemark/key.pem".into() }));

    let media = &config.sources["media"];
    assert_eq!(media.kind, SourceKind::Bucket { url: "s3://media/prefix".into() });
    assert_eq!(media.copy_to, ["offsite"]);
    assert_eq!(media.overrun, Overrun::Cancel);
    assert_eq!(media.schedule.time_zone(), "UTC");
    let retention = media.retention.clone().unwrap();
    assert_eq!((retention.last, retention.within), (Some(3), Some(SignedDuration::from_hours(168))));
    let drill = media.drill.clone().unwrap();
    assert_eq!(drill.max_duration, Some(SignedDuration::from_hours(4)));
    assert_eq!(drill.scratch_dir, Some(PathBuf::from("/scratch")));
    // 2026-01-11 is a Sunday.
    assert_eq!(drill.schedule.next_after(ts("2026-01-10T00:00:00Z")), Some(ts("2026-01-11T03:00:00Z")));
    assert_eq!(media.stale_after, Some(SignedDuration::from_hours(26)));

    let db = &config.sources["db"];
    assert_eq!(db.kind, SourceKind::Postgres { connection: "host=/run/postgresql user=postgres".into() });
    // The drill inherits the source's time zone.
    assert_eq!(db.drill.as_ref().unwrap().schedule.time_zone(), "Europe/Berlin");
    assert_eq!(db.retention, None);

    assert_eq!(config.notify.len(), 2);
    assert_eq!(config.notify[0].events, Event::ALL);
    assert_eq!(config.notify[1].events, [Event::DrillFailed, Event::BackupStale]);
}

#[test]
fn unknown_time_zone_names_the_place_and_the_fix() {
    let text = contract_with("Asia/Kolkata", "Asia/Kolkatta");
    assert_eq!(
        problems(&text),
        ["tidemark.toml:16:12: unknown time zone \"Asia/Kolkatta\"; did you mean \"Asia/Kolkata\"?"]
    );
}

#[test]
fn unknown_field_names_its_table_and_the_known_ones() {
    let text = contract_with("schedule = ", "scheduel = ");
    assert_eq!(
        problems(&text),
        [
            "tidemark.toml:11:10: missing field 'schedule' in [sources.uploads]; add e.g. schedule = \"0 1 * * *\"",
            "tidemark.toml:15:1: unknown field 'scheduel' in [sources.uploads]; did you mean 'schedule'? expected \
             one of: kind, paths, exclude, url, connection, repository, schedule, timezone, window, overrun, \
             retention, copy_to, drill, stale_after",
        ]
    );
    let text = contract_with("keep_weekly", "keep_wekly");
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("tidemark.toml:18:32: unknown field 'keep_wekly' in retention in [sources.uploads]; did you mean 'keep_weekly'?"),
        "{found:?}"
    );
}

#[test]
fn undefined_repository_lists_the_defined_ones() {
    let text = contract_with("repository = \"primary\"", "repository = \"primry\"");
    assert_eq!(
        problems(&text),
        [
            "tidemark.toml:14:14: source \"uploads\" names repository \"primry\" which is not defined; did you mean \"primary\"? defined: primary"
        ]
    );
}

#[test]
fn invalid_cron_gives_the_reason() {
    let found = problems(&contract_with("\"0 1 * * *\"", "\"0 25 * * *\""));
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("tidemark.toml:15:12: invalid cron expression \"0 25 * * *\": the hour field \"25\": number out of bounds (allowed: 0-23)"),
        "{found:?}"
    );
}

#[test]
fn invalid_cidr_in_allow() {
    let found = problems(&contract_with("\"10.0.0.0/8\"", "\"10.0.0.0/33\""));
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("tidemark.toml:4:26: invalid CIDR \"10.0.0.0/33\" in allow: "), "{found:?}");
    assert!(found[0].contains("e.g. \"10.0.0.0/8\""), "{found:?}");
}

#[test]
fn window_longer_than_the_schedule_period() {
    let found = problems(&contract_with("window = \"1h\"", "window = \"25h\""));
    assert_eq!(
        found,
        ["tidemark.toml:17:10: window 1d1h in [sources.uploads] is longer than the time between two runs of \
          \"0 1 * * *\" (1d); shorten the window to at most 1d or schedule runs further apart"]
    );
    // Equal to the period is fine; so is any window on a schedule that runs once a year.
    assert!(Config::parse(&contract_with("window = \"1h\"", "window = \"24h\""), "t").is_ok());
    let yearly = contract_with("\"0 1 * * *\"", "\"0 1 1 1 *\"").replace("\"1h\"", "\"30d\"");
    assert!(Config::parse(&yearly, "t").is_ok());
}

#[test]
fn a_shared_postgresql_catalog_and_the_daemon_name() {
    let config = Config::parse(
        &contract_with(
            "link_secret_file = \"/etc/tidemark/link.key\"\n",
            "link_secret_file = \"/etc/tidemark/link.key\"\nname = \"eu-1\"\n\
         catalog = \"postgres://tidemark@db.example.com/tidemark\"\n\
         catalog_password_file = \"/etc/tidemark/catalog.pass\"\n",
        ),
        "t",
    )
    .unwrap();
    assert_eq!(config.server.name.as_deref(), Some("eu-1"));
    assert_eq!(config.server.catalog.as_deref(), Some("postgres://tidemark@db.example.com/tidemark"));
    assert_eq!(config.server.catalog_password_file, Some(PathBuf::from("/etc/tidemark/catalog.pass")));
    // Absent: the embedded catalog, named after the host by the daemon.
    let plain = Config::parse(CONTRACT, "t").unwrap();
    assert_eq!((plain.server.name, plain.server.catalog, plain.server.catalog_password_file), (None, None, None));
    // A libpq key=value string works as well.
    let kv = contract_with("state_dir", "catalog = \"host=db user=tidemark dbname=tidemark\"\nstate_dir");
    assert_eq!(
        Config::parse(&kv, "t").unwrap().server.catalog.as_deref(),
        Some("host=db user=tidemark dbname=tidemark")
    );

    let found = problems(&contract_with(
        "state_dir",
        "name = \"eu 1\"\ncatalog = \"db.example.com\"\ncatalog_password_file = \"catalog.pass\"\nstate_dir",
    ));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("tidemark.toml:3:8: name \"eu 1\" in [server] is not allowed; use letters"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with(
            "tidemark.toml:4:11: catalog \"db.example.com\" in [server] is not a PostgreSQL connection; write a URL"
        ),
        "{found:?}"
    );
    assert!(found[1].ends_with("or remove it to keep the state in state_dir"), "{found:?}");
    assert!(
        found[2].starts_with(
            "tidemark.toml:5:25: catalog_password_file \"catalog.pass\" in [server] must be an absolute path"
        ),
        "{found:?}"
    );

    let found =
        problems(&contract_with("state_dir", "catalog_password_file = \"/etc/tidemark/catalog.pass\"\nstate_dir"));
    assert_eq!(
        found,
        ["tidemark.toml:3:1: catalog_password_file in [server] has no catalog to log in to; add catalog = \
          \"postgres://...\", or remove catalog_password_file"]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = r#"[server]
listen = "localhost:8470"
state_dir = "var/lib/tidemark"
trusted_proxies = ["bogus"]
tls_cert = "/etc/c.pem"

[repositories.primary]
url = "/srv/backup/repo"

[sources.uploads]
kind = "folder"
repository = "primary"
schedule = "0 1 * * *"
window = "0s"
retention = {}
copy_to = ["primary"]
drill = { schedule = "0 3 * *" }

[sources.db]
kind = "postgres"
repository = "primary"
schedule = "0 * * * *"
window = "1hr"
overrun = "kill"

[[notify]]
url = "ftp://x"
events = ["job_fialed"]
"#;
    let found = problems(text);
    let lines: Vec<&str> = found.iter().map(|p| p.split(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "tidemark.toml:2:10",  // listen is not an address
            "tidemark.toml:3:13",  // state_dir is relative
            "tidemark.toml:4:20",  // bogus proxy
            "tidemark.toml:5:12",  // tls_key missing
            "tidemark.toml:7:15",  // password_file missing
            "tidemark.toml:11:8",  // kind unknown
            "tidemark.toml:14:10", // window 0s
            "tidemark.toml:15:1",  // retention without rule
            "tidemark.toml:16:12", // copy_to own repository
            "tidemark.toml:17:22", // drill cron
            "tidemark.toml:19:10", // connection missing
            "tidemark.toml:23:10", // window 1hr
            "tidemark.toml:24:11", // overrun kill
            "tidemark.toml:27:7",  // ftp url
        ],
        "{found:#?}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let found = problems(&contract_with("window = \"1h\"", "window = 1h"));
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("tidemark.toml:17:10: TOML syntax: "), "{found:?}");
    assert!(found[0].contains("quoted"), "{found:?}");
}

#[test]
fn missing_server_and_kind_specific_fields() {
    let found = problems("[repositories.primary]\nurl = \"/r\"\npassword_file = \"/p\"\n");
    assert_eq!(
        found,
        ["tidemark.toml:1:1: missing table [server]; add [server] with state_dir = \"/var/lib/tidemark\""]
    );
    let found = problems(&contract_with("kind = \"directory\"", "kind = \"bucket\""));
    assert_eq!(
        found,
        [
            "tidemark.toml:11:10: missing field 'url' in [sources.uploads]; add e.g. url = \"s3://bucket/prefix\"",
            "tidemark.toml:13:1: 'paths' in [sources.uploads] is for kind = \"directory\"; remove it",
        ]
    );
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidemark.toml");
    std::fs::write(&path, contract_with("Asia/Kolkata", "Mars/Olympus")).unwrap();
    let err = Config::load(&path).unwrap_err();
    let first = &err.diagnostics()[0];
    assert_eq!((first.file.as_str(), first.line, first.column), (path.to_str().unwrap(), 16, 12));
    assert!(err.is_user_error());

    std::fs::write(&path, CONTRACT).unwrap();
    assert_eq!(Config::load(&path).unwrap().file, path.display().to_string());

    let err = Config::load(dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(err, ServiceError::Read { .. }) && !err.is_user_error(), "{err}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn the_error_displays_one_problem_per_line() {
    let text = contract_with("Asia/Kolkata", "Asia/Kolkatta").replace("\"1h\"", "\"1x\"");
    let err = Config::parse(&text, "tidemark.toml").unwrap_err();
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(
        shown
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("tidemark.toml:17:10: window in [sources.uploads]: invalid duration \"1x\""),
        "{shown}"
    );
}
