//! The daemon's configuration file, `tidemark.toml`.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8470"                 # default 127.0.0.1:8470
//! state_dir = "/var/lib/tidemark"           # required
//! allow = ["127.0.0.1/32", "10.0.0.0/8"]    # IP allowlist; absent means loopback only
//! trusted_proxies = ["10.0.0.5"]            # X-Forwarded-For is read only from these
//! link_secret_file = "/etc/tidemark/link.key"
//! link_ttl = "1h"                           # default lifetime of a link (default 1h)
//! link_max_ttl = "1h"                       # longest lifetime a caller may ask for (default 1h)
//! tls_cert = "/etc/tidemark/cert.pem"       # both or neither
//! tls_key = "/etc/tidemark/key.pem"
//! name = "eu-1"                             # this daemon's name in a shared catalog (default:
//!                                           # the host name)
//! catalog = "postgres://tidemark@db.example.com/tidemark"  # absent: embedded, in state_dir;
//!                                           # a URL or "host=... user=... dbname=..."
//! catalog_password_file = "/etc/tidemark/catalog.pass"     # the catalog user's password
//!
//! [repositories.primary]
//! url = "/srv/backup/repo"
//! password_file = "/etc/tidemark/repo.pass"
//!
//! [sources.uploads]
//! kind = "directory"                        # "directory" (paths, exclude), "bucket" (url),
//!                                           # "postgres" (connection)
//! paths = ["/srv/uploads"]
//! repository = "primary"
//! schedule = "0 1 * * *"                    # five-field cron
//! timezone = "Asia/Kolkata"                 # IANA name, default "UTC"
//! window = "1h"                             # absent: no window
//! overrun = "continue"                      # at the window's end: "continue" or "cancel"
//! retention = { keep_daily = 14, keep_weekly = 8, keep_monthly = 6, keep_yearly = 1 }
//! copy_to = ["offsite"]                     # repositories to copy each snapshot to
//! drill = { schedule = "0 3 * * 0", max_duration = "4h" }
//! stale_after = "26h"                       # alert when the newest backup is older
//!
//! [[notify]]
//! url = "https://hooks.example.com/tidemark"
//! events = ["job_failed", "window_missed", "backup_stale", "drill_failed"]  # default: all
//! ```
//!
//! [`Config::parse`] reports every problem at once, each as `file:line:column: what; the fix`,
//! and returns a config only when there are none.

mod reader;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use jiff::SignedDuration;
use toml::Spanned;

use crate::access::AccessPolicy;
use crate::{ServiceError, parse_duration};
use reader::{Doc, Table, parse_document};
pub use source::{Drill, Event, Notify, Overrun, Retention, Source, SourceKind};

/// The default `listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from, as named in diagnostics.
    pub file: String,
    /// `[server]`.
    pub server: Server,
    /// `[repositories.NAME]`, by name.
    pub repositories: BTreeMap<String, Repository>,
    /// `[sources.NAME]`, by name.
    pub sources: BTreeMap<String, Source>,
    /// `[[notify]]` webhooks, in file order.
    pub notify: Vec<Notify>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Where the daemon keeps its state (job history, tokens, audit log).
    pub state_dir: PathBuf,
    /// The IP allowlist (loopback only when `allow` is absent) and the trusted proxies.
    pub access: AccessPolicy,
    /// The file holding the link-signing secret; `None`: the daemon keeps a generated one in
    /// `state_dir`.
    pub link_secret_file: Option<PathBuf>,
    /// The lifetime of a link that asks for none.
    pub link_ttl: SignedDuration,
    /// The longest lifetime a link may ask for.
    pub link_max_ttl: SignedDuration,
    /// Certificate and key files for TLS; `None`: plain HTTP.
    pub tls: Option<Tls>,
    /// This daemon's name, its owner id in leases and job records; `None`: the host name.
    pub name: Option<String>,
    /// The PostgreSQL catalog several daemons share (a `postgres://` URL or a libpq
    /// `key=value` string); `None`: the embedded catalog in `state_dir`.
    pub catalog: Option<String>,
    /// The file holding the catalog user's password, when the connection names none.
    pub catalog_password_file: Option<PathBuf>,
}

/// TLS certificate and private key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its name in the config.
    pub name: String,
    /// Where it is: a local path or an `s3://` URL.
    pub url: String,
    /// The file holding its password.
    pub password_file: PathBuf,
}

/// A line and column in the config file, for messages about a part of it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Config {
    /// Read and validate the config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ServiceError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ServiceError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Validate config `text`; `file_name` is how diagnostics name the file.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ServiceError> {
        let mut doc = Doc::new(file_name, text);
        let config = parse_document(&mut doc, text).and_then(|root| {
            let root = Table::open(
                &mut doc,
                root.get_ref(),
                "the top level".to_string(),
                0..0,
                &["server", "repositories", "sources", "notify"],
            );
            read_config(&mut doc, &root, file_name)
        });
        match config {
            Some(config) if !doc.has_problems() => Ok(config),
            _ => Err(ServiceError::Config(doc.into_problems())),
        }
    }
}

fn read_config(doc: &mut Doc<'_>, root: &Table<'_, '_>, file: &str) -> Option<Config> {
    let server = read_server(doc, root);
    let mut repositories = BTreeMap::new();
    // Every repository named, complete or not, so that references to an incomplete one are not
    // reported as well.
    let mut defined = BTreeSet::new();
    if let Some((table, span)) = root.table(doc, "repositories") {
        let table = Table::names(table, "[repositories]".into(), span);
        for (name, entries) in table.sub_tables_checked(doc) {
            defined.insert(name.get_ref().clone());
            let t = Table::open(
                doc,
                entries,
                format!("[repositories.{}]", name.get_ref()),
                name.span(),
                &["url", "password_file"],
            );
            let url = t.required_string(doc, "url", "/srv/backup/repo");
            let password_file = t.required_string(doc, "password_file", "/etc/tidemark/repo.pass");
            if let (Some(url), Some(password_file)) = (url, password_file) {
                let name = name.into_inner();
                let repository = Repository {
                    name: name.clone(),
                    url: url.into_inner(),
                    password_file: password_file.into_inner().into(),
                };
                repositories.insert(name, repository);
            }
        }
    }
    let mut sources = BTreeMap::new();
    if let Some((table, span)) = root.table(doc, "sources") {
        let table = Table::names(table, "[sources]".into(), span);
        for (name, entries) in table.sub_tables_checked(doc) {
            if let Some(source) = source::read_source(doc, &name, entries, &defined) {
                sources.insert(name.into_inner(), source);
            }
        }
    }
    let notify = root
        .array_of_tables(doc, "notify")
        .into_iter()
        .filter_map(|(span, entries)| source::read_notify(doc, span, entries))
        .collect();
    Some(Config { file: file.to_string(), server: server?, repositories, sources, notify })
}

impl<'a, 'i> Table<'a, 'i> {
    /// [`Table::sub_tables`], refusing names that cannot appear in an API path.
    fn sub_tables_checked(&self, doc: &mut Doc<'_>) -> Vec<(Spanned<String>, &'a toml::de::DeTable<'i>)> {
        let mut out = self.sub_tables(doc);
        out.retain(|(name, _)| {
            let ok = is_valid_name(name.get_ref());
            if !ok {
                doc.error(
                    &name.span(),
                    format!(
                        "name {:?} in {} is not allowed; use letters, digits, '_', '-' and '.', \
                         starting with a letter or digit, at most 64 characters",
                        name.get_ref(),
                        self.name
                    ),
                );
            }
            ok
        });
        out
    }
}

fn is_valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn read_server(doc: &mut Doc<'_>, root: &Table<'_, '_>) -> Option<Server> {
    let Some((entries, span)) = root.table(doc, "server") else {
        if root.entry("server").is_none() {
            doc.error(&(0..0), "missing table [server]; add [server] with state_dir = \"/var/lib/tidemark\"");
        }
        return None;
    };
    let t = Table::open(
        doc,
        entries,
        "[server]".into(),
        span,
        &[
            "listen",
            "state_dir",
            "allow",
            "trusted_proxies",
            "link_secret_file",
            "link_ttl",
            "link_max_ttl",
            "tls_cert",
            "tls_key",
            "name",
            "catalog",
            "catalog_password_file",
        ],
    );
    let listen = match t.string(doc, "listen") {
        None => DEFAULT_LISTEN.parse().ok(),
        Some(text) => text.get_ref().parse::<SocketAddr>().ok().or_else(|| {
            doc.error(
                &text.span(),
                format!(
                    "listen {:?} in [server] is not an IP address and port; write e.g. \
                     \"127.0.0.1:8470\" or \"[::1]:8470\"",
                    text.get_ref()
                ),
            );
            None
        }),
    };
    let state_dir =
        t.required_string(doc, "state_dir", "/var/lib/tidemark").and_then(|s| absolute_path(doc, &t, "state_dir", s));
    let allow = t.strings(doc, "allow").map(|list| {
        if let (true, Some((key_span, _))) = (list.is_empty(), t.entry("allow")) {
            doc.error(
                &key_span,
                "allow in [server] is empty, so no address could reach the API; list the \
                 networks to allow, or remove it to allow loopback only",
            );
        }
        networks(doc, "allow", list)
    });
    let trusted_proxies =
        t.strings(doc, "trusted_proxies").map(|list| networks(doc, "trusted_proxies", list)).unwrap_or_default();
    let link_secret_file =
        t.string(doc, "link_secret_file").and_then(|s| absolute_path(doc, &t, "link_secret_file", s));
    let hour = SignedDuration::from_hours(1);
    let link_ttl = duration(doc, &t, "link_ttl");
    let link_max_ttl = duration(doc, &t, "link_max_ttl");
    let (ttl, max) =
        (link_ttl.as_ref().map_or(hour, |d| *d.get_ref()), link_max_ttl.as_ref().map_or(hour, |d| *d.get_ref()));
    if ttl > max {
        let span = link_ttl.or(link_max_ttl).map_or(t.span.clone(), |d| d.span());
        doc.error(
            &span,
            format!(
                "link_ttl ({}) in [server] is longer than link_max_ttl ({}); shorten link_ttl or \
                 raise link_max_ttl",
                crate::format_duration(ttl),
                crate::format_duration(max)
            ),
        );
    }
    let tls = match (t.string(doc, "tls_cert"), t.string(doc, "tls_key")) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => Some(Some(Tls { cert: cert.into_inner().into(), key: key.into_inner().into() })),
        (Some(one), None) | (None, Some(one)) => {
            doc.error(
                &one.span(),
                "TLS needs both tls_cert and tls_key in [server]; add the missing one, or \
                 remove both for plain HTTP",
            );
            None
        }
    };
    let name = t.string(doc, "name").filter(|name| {
        let ok = is_valid_name(name.get_ref());
        if !ok {
            doc.error(
                &name.span(),
                format!(
                    "name {:?} in [server] is not allowed; use letters, digits, '_', '-' and '.', \
                     starting with a letter or digit, at most 64 characters, e.g. \"eu-1\"",
                    name.get_ref()
                ),
            );
        }
        ok
    });
    let catalog = t.string(doc, "catalog").filter(|text| {
        let value = text.get_ref().trim();
        let ok = value.starts_with("postgres://") || value.starts_with("postgresql://") || value.contains('=');
        if !ok {
            doc.error(
                &text.span(),
                format!(
                    "catalog {:?} in [server] is not a PostgreSQL connection; write a URL such as \
                     \"postgres://tidemark@db.example.com/tidemark\" or \"host=db.example.com \
                     user=tidemark dbname=tidemark\", or remove it to keep the state in state_dir",
                    text.get_ref()
                ),
            );
        }
        ok
    });
    let catalog_password_file =
        t.string(doc, "catalog_password_file").and_then(|s| absolute_path(doc, &t, "catalog_password_file", s));
    if let (None, Some((span, _))) = (t.entry("catalog"), t.entry("catalog_password_file")) {
        doc.error(
            &span,
            "catalog_password_file in [server] has no catalog to log in to; add catalog = \
             \"postgres://...\", or remove catalog_password_file",
        );
    }
    Some(Server {
        listen: listen?,
        state_dir: state_dir?,
        access: AccessPolicy::new(allow, trusted_proxies),
        link_secret_file,
        link_ttl: ttl,
        link_max_ttl: max,
        tls: tls?,
        name: name.map(Spanned::into_inner),
        catalog: catalog.map(|c| c.into_inner().trim().to_string()),
        catalog_password_file,
    })
}

/// CIDR networks; a bare address stands for itself (`/32` or `/128`).
fn networks(doc: &mut Doc<'_>, key: &str, list: Vec<Spanned<String>>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for item in list {
        let text = item.get_ref().trim();
        let parsed = text
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .or_else(|e| text.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| e));
        match parsed {
            Ok(net) => out.push(net),
            Err(_) => doc.error(
                &item.span(),
                format!(
                    "invalid CIDR {:?} in {key}: expected an address with an optional prefix \
                     length, e.g. \"10.0.0.0/8\", \"192.168.1.5\" or \"fd00::/8\"",
                    item.get_ref()
                ),
            ),
        }
    }
    out
}

/// An optional duration value.
pub(crate) fn duration(doc: &mut Doc<'_>, t: &Table<'_, '_>, key: &str) -> Option<Spanned<SignedDuration>> {
    let text = t.string(doc, key)?;
    match parse_duration(text.get_ref()) {
        Ok(d) => Some(Spanned::new(text.span(), d)),
        Err(e) => {
            doc.error(&text.span(), format!("{key} in {}: {e}", t.name));
            None
        }
    }
}

/// A path that must be absolute, since the daemon's working directory means nothing.
pub(crate) fn absolute_path(doc: &mut Doc<'_>, t: &Table<'_, '_>, key: &str, text: Spanned<String>) -> Option<PathBuf> {
    let path = PathBuf::from(text.get_ref());
    if path.is_absolute() {
        Some(path)
    } else {
        doc.error(
            &text.span(),
            format!(
                "{key} {:?} in {} must be an absolute path, e.g. \"/{}\"",
                text.get_ref(),
                t.name,
                text.get_ref().trim_start_matches("./")
            ),
        );
        None
    }
}
