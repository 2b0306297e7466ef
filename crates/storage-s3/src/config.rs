//! Where an S3 repository lives and how to sign requests to it.

use std::fmt;
use std::time::Duration;

use tidemark_storage::{ErrorKind, Result, StorageError};

/// What [`S3Storage`](crate::S3Storage) needs to reach a bucket.
///
/// [`S3Config::new`] and [`S3Config::from_url`] take what is not given explicitly from the
/// standard AWS environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`) and `AWS_ENDPOINT_URL`.
/// `Debug` never shows the secret key or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (empty for the whole bucket).
    pub prefix: String,
    /// Endpoint URL such as `http://127.0.0.1:9000`; `None` for AWS S3.
    pub endpoint: Option<String>,
    /// Signing region; `us-east-1` is assumed for a custom endpoint when none is given.
    pub region: Option<String>,
    /// Path-style requests (`http://host/bucket/key`) instead of virtual-hosted
    /// (`http://bucket.host/key`); most self-hosted servers need this.
    pub path_style: bool,
    /// Access key id; with [`secret_access_key`](Self::secret_access_key) it is used as is and
    /// no other credential source is consulted.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Send unsigned requests when no credentials are given (public buckets). When `false` and no
    /// keys are given, the AWS default chain is tried (profiles, web identity, instance metadata).
    pub allow_anonymous: bool,
    /// Time limit of one request, the transfer included; a request that takes longer fails as
    /// transient. Default 10 minutes.
    pub request_timeout: Duration,
    /// Time limit to establish a connection. Default 10 seconds.
    pub connect_timeout: Duration,
    /// S3 Object Lock retention for every object written with `put` (URL options `lock_days`
    /// and `lock_mode`); `None` writes objects without retention.
    pub object_lock: Option<ObjectLock>,
    /// A file where what is known of the retention of objects (a lower bound of each one's
    /// retain-until date) is kept between processes, so that backups do not ask the server about
    /// every pack each time. Used in compliance mode only, where retention can never shrink.
    /// Not part of the URL; `None` keeps it in memory only.
    pub retention_cache: Option<std::path::PathBuf>,
}

/// Object Lock retention that [`S3Storage`](crate::S3Storage) puts on each object it creates.
///
/// The bucket must have been created with Object Lock enabled (which turns on versioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Governance or compliance.
    pub mode: LockMode,
    /// Days each new object stays locked; the repository extends it on data still in use.
    pub days: u32,
}

/// S3 Object Lock retention modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Nobody can delete a locked version or shorten its retention before it ends, not even the
    /// account's root user. The default: it is the only mode a stolen credential with broad
    /// permissions (such as `s3:*`, which includes `s3:BypassGovernanceRetention`) cannot undo.
    #[default]
    Compliance,
    /// A credential with `s3:BypassGovernanceRetention` may delete or shorten: for trials, and
    /// where an administrator must be able to undo a retention set too long.
    Governance,
}

impl LockMode {
    /// `COMPLIANCE` or `GOVERNANCE`, as S3 spells it.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

const URL_FORM: &str =
    "s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION&path_style=true&lock_days=N&lock_mode=compliance|governance]";

impl S3Config {
    /// A configuration for `bucket`, the rest from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self::with_env(bucket.into(), |name| std::env::var(name).ok())
    }

    /// Parse `s3://bucket/prefix?endpoint=http://host:port&region=R&path_style=true`, the rest
    /// from the environment.
    ///
    /// Query parameters: `endpoint` (an `http://` or `https://` URL), `region`, `path_style` and
    /// `allow_anonymous` (`true`/`false`/`1`/`0`), and for S3 Object Lock `lock_days` (1 to 36500)
    /// with an optional `lock_mode` (`compliance`, the default, or `governance`). Anything else
    /// is an error, as are credentials in the URL.
    ///
    /// ```
    /// let c = tidemark_storage_s3::S3Config::from_url(
    ///     "s3://backups/host1?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=true",
    /// )
    /// .unwrap();
    /// assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("backups", "host1"));
    /// assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    /// assert!(c.path_style);
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`from_url`](Self::from_url) with `env` in place of the process environment: it is asked
    /// for `AWS_ACCESS_KEY_ID` and the other standard names, so that a caller can give one
    /// repository its own variables (`TIDEMARK_TO_ACCESS_KEY_ID` for a copy target, say).
    pub fn from_url_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::parse_url(text, env)
    }

    /// Set explicit credentials (replacing any from the environment).
    #[must_use]
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.access_key_id = Some(access_key_id.to_owned());
        self.secret_access_key = Some(secret_access_key.to_owned());
        self.session_token = None;
        self
    }

    /// The configuration as a URL that [`from_url`](Self::from_url) accepts (without credentials).
    pub fn url(&self) -> String {
        let mut url = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            url = format!("{url}/{}", self.prefix);
        }
        let mut query = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            query.push(format!("endpoint={endpoint}"));
        }
        if let Some(region) = &self.region {
            query.push(format!("region={region}"));
        }
        if self.path_style {
            query.push("path_style=true".to_owned());
        }
        if self.allow_anonymous {
            query.push("allow_anonymous=true".to_owned());
        }
        if let Some(lock) = self.object_lock {
            query.push(format!("lock_days={}", lock.days));
            if lock.mode != LockMode::default() {
                query.push(format!("lock_mode={}", lock.mode.as_s3().to_ascii_lowercase()));
            }
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        url
    }

    fn with_env(bucket: String, env: impl Fn(&str) -> Option<String>) -> Self {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        S3Config {
            bucket,
            prefix: String::new(),
            endpoint: env("AWS_ENDPOINT_URL"),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            path_style: false,
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            allow_anonymous: false,
            request_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            object_lock: None,
            retention_cache: None,
        }
    }

    fn parse_url(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |why: &str| {
            StorageError::new(ErrorKind::Permanent, format!("invalid S3 URL {text:?}: {why}; expected {URL_FORM}"))
        };
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "s3" {
            return Err(bad(&format!("the scheme is {:?}, not \"s3\"", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
        }
        if url.port().is_some() {
            return Err(bad("a port belongs in the endpoint parameter, not after the bucket"));
        }
        if url.fragment().is_some() {
            return Err(bad("it has a '#' fragment"));
        }
        let bucket = url.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(bad("the bucket name is missing"));
        }
        let prefix = url.path().trim_matches('/');
        // The URL parser resolves `.` and `..`: look for them in the text as given.
        let raw_path = text.split(['?', '#']).next().unwrap_or_default();
        let dots = raw_path.split('/').skip(3).any(|p| p == "." || p == "..");
        if dots || prefix.contains('%') || (!prefix.is_empty() && prefix.split('/').any(str::is_empty)) {
            return Err(bad("the prefix must be plain '/'-separated names"));
        }
        let mut config = Self::with_env(bucket.to_owned(), env);
        config.prefix = prefix.to_owned();
        let (mut lock_days, mut lock_mode, mut path_style) = (None, None, None);
        for (name, value) in url.query_pairs() {
            let flag = || match value.as_ref() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(&format!("{name} must be true or false, not {value:?}"))),
            };
            match name.as_ref() {
                "endpoint" => {
                    let valid = url::Url::parse(&value)
                        .is_ok_and(|e| matches!(e.scheme(), "http" | "https") && e.host_str().is_some());
                    if !valid {
                        return Err(bad(&format!("endpoint {value:?} is not an http:// or https:// URL")));
                    }
                    config.endpoint = Some(value.trim_end_matches('/').to_owned());
                }
                "region" if !value.is_empty() => config.region = Some(value.into_owned()),
                "path_style" => path_style = Some(flag()?),
                "allow_anonymous" => config.allow_anonymous = flag()?,
                "lock_days" => match value.parse::<u32>() {
                    Ok(days @ 1..=36_500) => lock_days = Some(days),
                    _ => {
                        return Err(bad(&format!("lock_days must be a number of days from 1 to 36500, not {value:?}")));
                    }
                },
                "lock_mode" => match value.to_ascii_lowercase().as_str() {
                    "compliance" => lock_mode = Some(LockMode::Compliance),
                    "governance" => lock_mode = Some(LockMode::Governance),
                    _ => return Err(bad(&format!("lock_mode must be compliance or governance, not {value:?}"))),
                },
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {name:?} (known: endpoint, region, path_style, allow_anonymous, lock_days, lock_mode)"
                    )));
                }
            }
        }
        // An endpoint at an IP address or `localhost` has no `<bucket>.<host>` names to address:
        // path style unless asked otherwise (as minio-go, which restic uses, decides too).
        config.path_style = path_style.unwrap_or_else(|| config.endpoint.as_deref().is_some_and(addressed_by_path));
        config.object_lock = match (lock_days, lock_mode) {
            (Some(days), mode) => Some(ObjectLock { mode: mode.unwrap_or_default(), days }),
            (None, Some(_)) => return Err(bad("lock_mode needs lock_days")),
            (None, None) => None,
        };
        if config.object_lock.is_some() && config.allow_anonymous {
            return Err(bad("Object Lock (lock_days) needs credentials; it cannot be used with allow_anonymous"));
        }
        Ok(config)
    }

    /// `s3://bucket/prefix (endpoint URL)` (without the endpoint for AWS): for messages.
    pub(crate) fn location(&self) -> String {
        let mut location = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            location = format!("{location}/{}", self.prefix);
        }
        match &self.endpoint {
            Some(endpoint) => format!("{location} (endpoint {endpoint})"),
            None => location,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("object_lock", &self.object_lock)
            .field("retention_cache", &self.retention_cache)
            .finish()
    }
}

/// Whether `endpoint`'s host is an IP address or `localhost`, where virtual-hosted-style
/// addressing (`<bucket>.<host>`) cannot resolve.
fn addressed_by_path(endpoint: &str) -> bool {
    match url::Url::parse(endpoint).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn endpoints_at_ip_addresses_and_localhost_are_addressed_by_path() {
        let style = |url: &str| S3Config::from_url_with_env(url, no_env).unwrap().path_style;
        assert!(style("s3://bkt?endpoint=http://127.0.0.1:9000"));
        assert!(style("s3://bkt?endpoint=http://[::1]:9000"));
        assert!(style("s3://bkt?endpoint=https://LOCALHOST:9000"));
        assert!(!style("s3://bkt?endpoint=https://s3.example.net"));
        assert!(!style("s3://bkt"));
        // An explicit choice wins either way.
        assert!(!style("s3://bkt?endpoint=http://127.0.0.1:9000&path_style=false"));
        assert!(style("s3://bkt?endpoint=https://s3.example.net&path_style=true"));
        // So does the endpoint from the environment.
        let env = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "http://10.0.0.5:9000".to_string());
        assert!(S3Config::from_url_with_env("s3://bkt", env).unwrap().path_style);
        // Both spellings name the same repository or source.
        let implied = S3Config::from_url_with_env("s3://bkt?endpoint=http://127.0.0.1:9000", no_env).unwrap();
        assert_eq!(implied.url(), "s3://bkt?endpoint=http://127.0.0.1:9000&path_style=true");
    }

    #[test]
    fn parses_a_full_url() {
        let c = S3Config::from_url_with_env(
            "s3://bkt/a/b/?endpoint=http://127.0.0.1:9000/&region=us-east-1&path_style=true",
            no_env,
        )
        .unwrap();
        assert_eq!(c.bucket, "bkt");
        assert_eq!(c.prefix, "a/b");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        assert!(c.path_style && !c.allow_anonymous);
        assert_eq!(c.access_key_id, None);
        assert_eq!(c.url(), "s3://bkt/a/b?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true");
        assert_eq!(S3Config::from_url_with_env(&c.url(), no_env).unwrap(), c);
    }

    #[test]
    fn object_lock_options_round_trip() {
        let c = S3Config::from_url_with_env("s3://bkt/p?lock_days=30", no_env).unwrap();
        assert_eq!(c.object_lock, Some(ObjectLock { mode: LockMode::Compliance, days: 30 }));
        assert_eq!(c.url(), "s3://bkt/p?lock_days=30");
        let c = S3Config::from_url_with_env("s3://bkt/p?lock_days=7&lock_mode=GOVERNANCE", no_env).unwrap();
        assert_eq!(c.object_lock, Some(ObjectLock { mode: LockMode::Governance, days: 7 }));
        assert_eq!(S3Config::from_url_with_env(&c.url(), no_env).unwrap(), c);
        assert_eq!(S3Config::from_url_with_env("s3://bkt", no_env).unwrap().object_lock, None);
    }

    #[test]
    fn bucket_only_and_env_fallback() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKID".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("SECRET".to_owned()),
            "AWS_DEFAULT_REGION" => Some("eu-central-1".to_owned()),
            "AWS_ENDPOINT_URL" => Some("https://s3.example.net".to_owned()),
            _ => None,
        };
        let c = S3Config::from_url_with_env("s3://bkt", env).unwrap();
        assert_eq!(c.prefix, "");
        assert_eq!(c.region.as_deref(), Some("eu-central-1"));
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.example.net"));
        assert_eq!(c.access_key_id.as_deref(), Some("AKID"));
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID") && !shown.contains("SECRET"), "{shown}");
        let c = S3Config::from_url_with_env("s3://bkt?region=us-west-2", env).unwrap();
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn malformed_urls_are_clear_errors() {
        for (url, needle) in [
            ("http://bkt/x", "scheme"),
            ("s3:///x", "bucket"),
            ("s3://", "bucket"),
            ("bkt/prefix", "relative URL"),
            ("s3://key:secret@bkt/x", "credentials"),
            ("s3://bkt:9000/x", "port"),
            ("s3://bkt/a//b", "prefix"),
            ("s3://bkt/a/../b", "prefix"),
            ("s3://bkt?endpoint=localhost:9000", "endpoint"),
            ("s3://bkt?path_style=yes", "path_style"),
            ("s3://bkt?bucket=x", "unknown parameter"),
            ("s3://bkt?lock_days=0", "lock_days"),
            ("s3://bkt?lock_days=ten", "lock_days"),
            ("s3://bkt?lock_mode=governance", "needs lock_days"),
            ("s3://bkt?lock_days=3&lock_mode=legal", "lock_mode"),
            ("s3://bkt?lock_days=3&allow_anonymous=true", "credentials"),
        ] {
            let err = S3Config::from_url_with_env(url, no_env).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
            let text = err.to_string();
            assert!(text.contains(needle) && text.contains("expected s3://BUCKET"), "{url}: {text}");
        }
    }
}
