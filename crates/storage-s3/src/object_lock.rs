//! S3 Object Lock: the three requests OpenDAL 0.59 cannot make, signed with reqsign.
//!
//! OpenDAL's `WriteOptions` have no Object Lock headers, and a header added after signing is
//! refused by AWS (every `x-amz-*` header must be signed). So `PutObject` with retention,
//! `HeadObject` for the retention of one object and `PutObjectRetention` are built here and signed
//! with `reqsign-aws-v4`, the signer OpenDAL itself uses (already in the build, nothing new to
//! trust), and sent through the same HTTP transport as every other request. Why not a second,
//! complete S3 SDK: aws-sdk-s3 would double the build time for three requests.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use opendal::{Buffer, HttpTransporter};
use reqsign_aws_v4::{Credential, DefaultCredentialProvider, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer};
use reqsign_file_read_tokio::TokioFileRead;
use tidemark_storage::{ErrorKind, Result, StorageError, renewal_margin};

use crate::config::{LockMode, ObjectLock, S3Config};
use crate::error::from_opendal;

/// Signs and sends the Object Lock requests of one bucket and prefix, and remembers lower bounds
/// of the retention of objects it has seen (retention only ever grows).
pub(crate) struct LockClient {
    signer: Signer<Credential>,
    transport: HttpTransporter,
    /// `http://host:port/bucket` (path style) or `https://bucket.host` (virtual host).
    bucket_url: String,
    /// The key prefix with a trailing `/`, or empty.
    root: String,
    pub(crate) lock: ObjectLock,
    location: String,
    known: Mutex<HashMap<String, SystemTime>>,
    /// Where `known` is kept between processes (compliance mode only).
    cache: Option<PathBuf>,
}

/// The SigV4 signer for `config`'s credentials (its static keys, else the AWS default chain:
/// environment, profile, instance role), or `None` when `anonymous` and no keys are given; its
/// credential lookups go out through `transport`.
pub(crate) fn signer(
    config: &S3Config,
    region: &str,
    transport: HttpTransporter,
    anonymous: bool,
) -> Option<Signer<Credential>> {
    let chain = match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            let provider = StaticCredentialProvider::new(id, secret);
            let provider = match &config.session_token {
                Some(token) => provider.with_session_token(token),
                None => provider,
            };
            ProvideCredentialChain::new().push(provider)
        }
        _ if anonymous => return None,
        _ => ProvideCredentialChain::new().push(DefaultCredentialProvider::new()),
    };
    let ctx = Context::new().with_file_read(TokioFileRead).with_env(OsEnv).with_http_send(transport);
    Some(Signer::new(ctx, chain, RequestSigner::new("s3", region)))
}

/// A `PutObject`'s retention headers are part of the signature; so is everything else we send.
impl LockClient {
    pub(crate) fn new(config: &S3Config, lock: ObjectLock, transport: HttpTransporter) -> Result<Self> {
        let location = config.location();
        let region = config.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        let bucket_url = bucket_url(config, &region).map_err(|why| {
            StorageError::new(ErrorKind::Permanent, format!("cannot set up Object Lock for {location}: {why}"))
        })?;
        let signer = signer(config, &region, transport.clone(), false).ok_or_else(|| {
            StorageError::new(ErrorKind::Permanent, format!("Object Lock on {location} needs credentials"))
        })?;
        let root = if config.prefix.is_empty() { String::new() } else { format!("{}/", config.prefix) };
        // Governance retention can be shortened by a privileged credential: then nothing known
        // may outlive the process.
        let cache = config.retention_cache.clone().filter(|_| lock.mode == LockMode::Compliance);
        let known = cache.as_deref().map(load_cache).unwrap_or_default();
        Ok(LockClient { signer, transport, bucket_url, root, lock, location, known: Mutex::new(known), cache })
    }

    /// Write what is known (entries still in the future) to the cache file, atomically; a cache
    /// that cannot be written only costs requests later, so failures are ignored.
    pub(crate) fn save_cache(&self) {
        let Some(path) = &self.cache else { return };
        let now = SystemTime::now();
        let mut text = String::new();
        for (key, until) in self.known.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let (true, Ok(secs)) = (*until > now, until.duration_since(SystemTime::UNIX_EPOCH)) {
                let _ = writeln!(text, "{} {key}", secs.as_secs());
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&tmp, text));
        if written.and_then(|()| std::fs::rename(&tmp, path)).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// How long new objects are retained.
    pub(crate) fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.lock.days) * 86_400)
    }

    /// A known lower bound of `key`'s retention.
    pub(crate) fn known(&self, key: &str) -> Option<SystemTime> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }

    /// Record that `key` is retained at least until `until`.
    pub(crate) fn remember(&self, key: &str, until: SystemTime) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let entry = known.entry(key.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Forget what is known of `key` (it was deleted).
    pub(crate) fn forget(&self, key: &str) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// `PutObject` with `If-None-Match: *`, `Content-MD5` and the retention headers.
    pub(crate) async fn put_locked(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let until = retain_until(SystemTime::now() + self.period() + renewal_margin(self.period()));
        let headers = vec![
            ("content-md5", content_md5(&data)),
            ("if-none-match", "*".to_owned()),
            ("x-amz-object-lock-mode", self.lock.mode.as_s3().to_owned()),
            ("x-amz-object-lock-retain-until-date", format_time(until)),
        ];
        let response = self.send("create", key, http::Method::PUT, "", headers, data).await?;
        match response.status().as_u16() {
            200..=299 => {
                self.remember(key, until);
                Ok(())
            }
            412 => Err(StorageError::new(
                ErrorKind::AlreadyExists,
                format!("S3 create at {} failed: the object already exists", self.location),
            )
            .with_key(key)),
            _ => Err(self.failure("create", key, &response)),
        }
    }

    /// The retention of `key` from `HeadObject` (`None` when it has none, or is missing).
    pub(crate) async fn retained_until(&self, key: &str) -> Result<Option<SystemTime>> {
        let response = self.send("read retention", key, http::Method::HEAD, "", Vec::new(), Vec::new()).await?;
        match response.status().as_u16() {
            200..=299 => {
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                let Some(date) = header("x-amz-object-lock-retain-until-date") else { return Ok(None) };
                let until = parse_time(date).ok_or_else(|| {
                    StorageError::new(
                        ErrorKind::Permanent,
                        format!("S3 at {} sent an unreadable retain-until date {date:?}", self.location),
                    )
                    .with_key(key)
                })?;
                self.remember(key, until);
                Ok((until > SystemTime::now()).then_some(until))
            }
            404 => Ok(None),
            _ => Err(self.failure("read retention", key, &response)),
        }
    }

    /// `PutObjectRetention` to `until` (callers make sure it is an extension).
    pub(crate) async fn put_retention(&self, key: &str, until: SystemTime) -> Result<()> {
        let until = retain_until(until);
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            self.lock.mode.as_s3(),
            format_time(until)
        )
        .into_bytes();
        let headers = vec![("content-md5", content_md5(&body)), ("content-type", "application/xml".to_owned())];
        let response = self.send("extend retention", key, http::Method::PUT, "retention", headers, body).await?;
        if response.status().is_success() {
            self.remember(key, until);
            Ok(())
        } else {
            Err(self.failure("extend retention", key, &response))
        }
    }

    async fn send(
        &self,
        action: &str,
        key: &str,
        method: http::Method,
        query: &str,
        headers: Vec<(&str, String)>,
        body: Vec<u8>,
    ) -> Result<http::Response<Buffer>> {
        let mut url = format!("{}/{}", self.bucket_url, encode_path(&format!("{}{key}", self.root)));
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut builder = http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder.header("content-length", body.len()).body(()).map_err(|e| {
            StorageError::new(ErrorKind::Permanent, format!("S3 {action} at {}: bad request: {e}", self.location))
                .with_key(key)
        })?;
        let (mut parts, ()) = request.into_parts();
        self.signer.sign(&mut parts, None).await.map_err(|e| {
            let kind = if e.is_retryable() { ErrorKind::Transient } else { ErrorKind::PermissionDenied };
            StorageError::new(
                kind,
                format!(
                    "S3 {action} at {}: cannot sign the request: {e}; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
                    self.location
                ),
            )
            .with_key(key)
        })?;
        // reqwest sets Host from the URL itself.
        parts.headers.remove(http::header::HOST);
        let request = http::Request::from_parts(parts, Buffer::from(body));
        self.transport.send(request).await.map_err(|e| from_opendal(e, action, key, &self.location))
    }

    fn failure(&self, action: &str, key: &str, response: &http::Response<Buffer>) -> StorageError {
        let status = response.status().as_u16();
        let body = String::from_utf8_lossy(&response.body().to_vec()).into_owned();
        let field = |name: &str| {
            let start = body.find(&format!("<{name}>"))? + name.len() + 2;
            let len = body[start..].find('<')?;
            Some(body[start..start + len].to_owned())
        };
        let code = field("Code").unwrap_or_else(|| format!("HTTP {status}"));
        let kind = match status {
            404 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::PermissionDenied,
            408 | 429 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let mut message = format!("S3 {action} at {} failed: {code}", self.location);
        if let Some(text) = field("Message") {
            let _ = write!(message, ": {text}");
        }
        if code == "InvalidRequest" || body.contains("Object Lock") {
            message.push_str("; the bucket must be created with Object Lock enabled to use lock_days");
        } else if kind == ErrorKind::PermissionDenied {
            message.push_str(
                "; the credential needs s3:PutObject, s3:PutObjectRetention and s3:GetObjectRetention on the repository",
            );
        }
        StorageError::new(kind, message).with_key(key)
    }
}

/// Lines `UNIX_SECONDS KEY` of a cache file; a missing or damaged file is an empty cache.
fn load_cache(path: &Path) -> HashMap<String, SystemTime> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (secs, key) = line.split_once(' ')?;
            Some((key.to_owned(), SystemTime::UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?)))
        })
        .collect()
}

/// The bucket's base URL: `ENDPOINT/BUCKET` in path style, `SCHEME://BUCKET.HOST` otherwise.
pub(crate) fn bucket_url(config: &S3Config, region: &str) -> std::result::Result<String, String> {
    let endpoint = config.endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    if config.path_style {
        return Ok(format!("{endpoint}/{}", config.bucket));
    }
    let (scheme, host) = endpoint.split_once("://").ok_or_else(|| format!("endpoint {endpoint:?} has no scheme"))?;
    Ok(format!("{scheme}://{}.{host}", config.bucket))
}

/// Percent-encode an object path (everything but unreserved characters and `/`), once.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// Whole seconds, rounded up: S3 keeps retain-until dates to the second.
fn retain_until(time: SystemTime) -> SystemTime {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// `2026-11-23T16:16:11Z`.
fn format_time(time: SystemTime) -> String {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_or_else(|_| "9999-12-31T23:59:59Z".to_owned(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = text.trim().parse().ok()?;
    SystemTime::try_from(ts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_paths() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_250);
        assert_eq!(format_time(retain_until(t)), "2026-11-18T11:06:41Z");
        let parsed = parse_time("2026-11-18T11:06:41.5Z").unwrap();
        assert_eq!(parsed, SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_001_500));
        assert_eq!(parse_time("2026-11-18T11:06:41Z"), Some(retain_until(t)));
        assert_eq!(encode_path("p/data/ab/ab 1+ü"), "p/data/ab/ab%201%2B%C3%BC");
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
