//! Tidemark S3 storage: the [`Storage`] trait on Amazon S3 and S3-compatible object stores.
//!
//! [`S3Storage`] speaks S3 through [OpenDAL](https://opendal.apache.org) (its `s3` service) and
//! keeps the trait's promises:
//!
//! - `put` is create-only: it sends `If-None-Match: *`, and the server's `412 Precondition
//!   Failed` becomes [`ErrorKind::AlreadyExists`]. Servers without conditional writes (older
//!   MinIO, some gateways) would overwrite; use one that has them.
//! - Every upload carries a `Content-MD5` header, so the server rejects a body damaged in transit
//!   (and buckets with Object Lock, which demand a checksum, accept it). Uploads are single
//!   `PutObject` requests (up to 5 GiB), never multipart, which OpenDAL cannot combine with MD5.
//! - `list` pages through `ListObjectsV2` and fails as a whole if any page fails.
//! - With `lock_days` in the URL ([`ObjectLock`]), every object written with `put` carries S3
//!   Object Lock retention (`x-amz-object-lock-mode` and `-retain-until-date`, signed with the
//!   request), except lock files (`locks/`, also written with `put_overwrite`), which must stay
//!   deletable. `delete` then removes every version of the key, which the server refuses for a
//!   version still retained. [`S3Storage`] implements [`tidemark_storage::Retention`] so that the
//!   repository can extend retention on data still in use and plan prune around it.
//! - Errors are classified for [`RetryStorage`](tidemark_storage::RetryStorage): connection
//!   failures, timeouts, 5xx and throttling are [`ErrorKind::Transient`]. This crate does not
//!   retry by itself; wrap it in `RetryStorage`.
//!
//! The trait is synchronous: each `S3Storage` owns a small tokio runtime (two worker threads) and
//! every call hands its request to it and waits, so it can be used from any number of threads,
//! and from inside another async runtime's blocking sections.
//!
//! ```no_run
//! use tidemark_storage::{RetryStorage, Storage};
//! use tidemark_storage_s3::{S3Config, S3Storage};
//!
//! let config = S3Config::from_url("s3://backups/host1?endpoint=http://127.0.0.1:9000&path_style=true")?
//!     .with_credentials("access", "secret");
//! let storage = RetryStorage::new(S3Storage::new(config)?);
//! storage.put("config", b"{}")?;
//! assert_eq!(storage.get("config")?, b"{}");
//! # Ok::<(), tidemark_storage::StorageError>(())
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod object_lock;
mod raw;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use opendal::options::{DeleteOptions, ListOptions, ReadOptions, WriteOptions};
use opendal::{Buffer, EntryMode, HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;
use tidemark_storage::{Entry, ErrorKind, Result, Retention, Storage, StorageError, check_key};

pub use config::{LockMode, ObjectLock, S3Config};
use error::from_opendal;
use object_lock::LockClient;
pub use raw::{RawBucket, RawListed, RawMeta, RawPage};

/// A [`Storage`] in an S3 bucket under a key prefix; see the [crate docs](crate).
pub struct S3Storage {
    op: Operator,
    runtime: Option<tokio::runtime::Runtime>,
    location: String,
    request_timeout: Duration,
    lock: Option<Arc<LockClient>>,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage").field("location", &self.location).finish_non_exhaustive()
    }
}

/// An OpenDAL operator for `config`: custom endpoint, region, path style, explicit or ambient
/// credentials, Content-MD5 on every PutObject, and a reqwest transport with the connect timeout.
/// Shared by this backend and by sources that read buckets, so both connect the same way.
pub fn operator(config: &S3Config) -> Result<Operator> {
    operator_and_transport(config).map(|(op, _)| op)
}

fn operator_and_transport(config: &S3Config) -> Result<(Operator, HttpTransporter)> {
    let location = config.location();
    let setup = |what: &str, err: &dyn fmt::Display| {
        StorageError::new(ErrorKind::Permanent, format!("cannot set up S3 storage {location}: {what}: {err}"))
    };
    // reqwest is built without a bundled crypto provider; use ring, which the workspace already
    // has. If the process installed another provider first, that one stays: both are fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .build()
        .map_err(|e| setup("HTTP client", &e))?;

    let mut builder = opendal::services::S3::default()
        .bucket(&config.bucket)
        .root(&format!("/{}", config.prefix))
        // Content-MD5 on every PutObject.
        .checksum_algorithm("md5");
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint(endpoint);
    }
    match (&config.region, &config.endpoint) {
        (Some(region), _) => builder = builder.region(region),
        (None, Some(_)) => builder = builder.region("us-east-1"),
        (None, None) => {
            let fix = "set AWS_REGION or add ?region=REGION to the URL";
            return Err(setup("no region for AWS S3", &fix));
        }
    }
    if !config.path_style {
        builder = builder.enable_virtual_host_style();
    }
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => {
            builder = builder.access_key_id(id).secret_access_key(secret);
            if let Some(token) = &config.session_token {
                builder = builder.session_token(token);
            }
            // Explicit keys only: no profile files, no instance metadata lookups.
            builder = builder.disable_config_load().disable_ec2_metadata();
        }
        _ if config.allow_anonymous => {
            builder = builder.skip_signature().disable_config_load().disable_ec2_metadata();
        }
        _ => {}
    }
    let op = Operator::new(builder).map_err(|e| setup("configuration", &e))?;
    let transport = HttpTransporter::new(ReqwestTransport::new(client));
    let context = op.context().with_http_transport(transport.clone());
    let op = op.with_context(context);
    Ok((op, transport))
}

impl S3Storage {
    /// Connect lazily: nothing is sent until the first operation, so a wrong endpoint or bucket
    /// shows up as that operation's error.
    pub fn new(config: S3Config) -> Result<Self> {
        let location = config.location();
        let (op, transport) = operator_and_transport(&config)?;
        let lock = match config.object_lock {
            Some(lock) => Some(Arc::new(LockClient::new(&config, lock, transport)?)),
            None => None,
        };
        let setup = |what: &str, err: &dyn fmt::Display| {
            StorageError::new(ErrorKind::Permanent, format!("cannot set up S3 storage {location}: {what}: {err}"))
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidemark-s3")
            .enable_all()
            .build()
            .map_err(|e| setup("runtime", &e))?;
        Ok(S3Storage { op, runtime: Some(runtime), location, request_timeout: config.request_timeout, lock })
    }

    /// The Object Lock retention this storage writes, if any.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.lock.as_ref().map(|l| l.lock)
    }

    /// Run a request of the Object Lock client on the private runtime and wait for it.
    fn run_lock<T, F>(&self, action: &str, key: &str, make: impl FnOnce(Arc<LockClient>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let (Some(runtime), Some(lock)) = (self.runtime.as_ref(), self.lock.as_ref()) else {
            return Err(keyed(StorageError::new(ErrorKind::Permanent, "S3 storage is shut down or unlocked"), key));
        };
        let future = make(lock.clone());
        let timeout = self.request_timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, future).await);
        });
        let transient = |what: String| keyed(StorageError::new(ErrorKind::Transient, what), key);
        match rx.recv() {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => {
                Err(transient(format!("S3 {action} at {} timed out after {timeout:?}", self.location)))
            }
            Err(_) => {
                Err(transient(format!("S3 {action} at {}: the request task ended without an answer", self.location)))
            }
        }
    }

    /// A retention request, tried up to three times while it fails transiently (the retry layer
    /// wraps the `Storage` calls, not these).
    fn retry_lock<T, F>(&self, action: &str, key: &str, make: impl Fn(Arc<LockClient>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut attempt = 0;
        loop {
            match self.run_lock(action, key, &make) {
                Err(err) if err.is_transient() && attempt < 2 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                other => return other,
            }
        }
    }

    /// Delete every version of `key` (and its delete markers): what `delete` means on a bucket
    /// with Object Lock, where a plain delete only hides the object. The server refuses versions
    /// that are still retained; nothing else of the key is deleted then.
    fn delete_versions(&self, key: &str) -> Result<()> {
        let path = key.to_owned();
        let listed = self.run("list versions", key, move |op| async move {
            op.list_options(&path, ListOptions { recursive: true, versions: true, deleted: true, ..Default::default() })
                .await
        })?;
        let mut versions: Vec<(bool, String)> = listed
            .iter()
            .filter(|e| e.path() == key)
            .filter_map(|e| e.metadata().version().map(|v| (e.metadata().is_deleted(), v.to_owned())))
            .collect();
        if versions.is_empty() {
            let path = key.to_owned();
            return match self.run("delete", key, move |op| async move { op.delete(&path).await }) {
                Err(err) if err.is_not_found() => Ok(()),
                other => other,
            };
        }
        // Data versions first: when one is refused, the delete markers still hide nothing.
        versions.sort();
        for (_, version) in versions {
            let path = key.to_owned();
            let options = DeleteOptions { version: Some(version.clone()), ..Default::default() };
            let result =
                self.run("delete version", key, move |op| async move { op.delete_options(&path, options).await });
            match result {
                Ok(()) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) if err.kind() == ErrorKind::PermissionDenied => {
                    return Err(StorageError::new(
                        ErrorKind::PermissionDenied,
                        format!(
                            "S3 refused to delete version {version} at {}: it is under Object Lock retention \
                             (or the credential lacks s3:DeleteObjectVersion); prune skips retained objects",
                            self.location
                        ),
                    )
                    .with_key(key)
                    .with_source(err));
                }
                Err(err) => return Err(err),
            }
        }
        if let Some(lock) = &self.lock {
            lock.forget(key);
        }
        Ok(())
    }

    /// [`S3Config::from_url`] then [`new`](Self::new).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(S3Config::from_url(url)?)
    }

    /// Run one OpenDAL request on the private runtime and wait for it, with the request timeout.
    fn run<T, F>(&self, action: &str, key: &str, make: impl FnOnce(Operator) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = opendal::Result<T>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| keyed(StorageError::new(ErrorKind::Permanent, "S3 storage is shut down"), key))?;
        let future = make(self.op.clone());
        let timeout = self.request_timeout;
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, future).await);
        });
        match rx.recv() {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(err))) => Err(from_opendal(err, action, key, &self.location)),
            Ok(Err(_elapsed)) => Err(keyed(
                StorageError::new(
                    ErrorKind::Transient,
                    format!("S3 {action} at {} timed out after {timeout:?}", self.location),
                ),
                key,
            )),
            Err(_) => Err(keyed(
                StorageError::new(
                    ErrorKind::Permanent,
                    format!("S3 {action} at {}: the request task ended without an answer", self.location),
                ),
                key,
            )),
        }
    }

    fn range_error(key: &str, range: &Range<u64>, size: Option<u64>) -> StorageError {
        let size = size.map_or_else(|| "a shorter object".to_owned(), |s| format!("an object of {s} bytes"));
        StorageError::new(
            ErrorKind::Permanent,
            format!("byte range {}..{} is invalid for {size}", range.start, range.end),
        )
        .with_key(key)
    }
}

/// Keys under this prefix are lock files: created, refreshed in place and deleted, never retained.
const LOCKS: &str = "locks/";

fn keyed(err: StorageError, key: &str) -> StorageError {
    if key.is_empty() { err } else { err.with_key(key) }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        if let Some(lock) = &self.lock {
            lock.save_cache();
        }
        // Dropping a runtime blocks, which panics inside another runtime; this does not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        if prefix.starts_with('/') || prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(StorageError::new(ErrorKind::Permanent, format!("invalid listing prefix {prefix:?}")));
        }
        let path = prefix.to_owned();
        let listed = self.run("list", prefix, move |op| async move {
            op.list_options(&path, ListOptions { recursive: true, ..Default::default() }).await
        })?;
        let mut entries: Vec<Entry> = listed
            .into_iter()
            .filter(|e| e.metadata().mode() == EntryMode::FILE && e.path().starts_with(prefix))
            .map(|e| Entry { size: e.metadata().content_length(), key: e.path().to_owned() })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        let path = key.to_owned();
        let buffer = self.run("read", key, move |op| async move { op.read(&path).await })?;
        Ok(buffer.to_vec())
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        check_key(key)?;
        if range.start > range.end {
            return Err(Self::range_error(key, &range, None));
        }
        if range.start == range.end {
            // S3 has no empty range request; check the bounds with a HEAD instead.
            return match self.stat(key)? {
                Some(size) if range.end <= size => Ok(Vec::new()),
                Some(size) => Err(Self::range_error(key, &range, Some(size))),
                None => Err(StorageError::new(ErrorKind::NotFound, format!("no such object at {}", self.location))
                    .with_key(key)),
            };
        }
        let path = key.to_owned();
        let bytes = range.clone();
        let result = self.run("ranged read", key, move |op| async move {
            op.read_options(&path, ReadOptions { range: bytes.into(), ..Default::default() }).await
        });
        match result {
            Ok(buffer) if buffer.len() as u64 == range.end - range.start => Ok(buffer.to_vec()),
            Ok(_) => Err(Self::range_error(key, &range, None)),
            Err(err) if err.kind() == ErrorKind::NotFound || err.is_transient() => Err(err),
            // 416, or a short body that OpenDAL refused: the range reaches past the end.
            Err(err) => match self.stat(key) {
                Ok(Some(size)) if range.end > size => Err(Self::range_error(key, &range, Some(size))),
                _ => Err(err),
            },
        }
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        let path = key.to_owned();
        match self.run("stat", key, move |op| async move { op.stat(&path).await }) {
            Ok(meta) if meta.mode() == EntryMode::FILE => Ok(Some(meta.content_length())),
            Ok(_) => Ok(None),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        // Lock files (`locks/`, the one prefix the trait lets change) must stay deletable.
        if self.lock.is_some() && !key.starts_with(LOCKS) {
            let (path, body) = (key.to_owned(), data.to_vec());
            return self.run_lock("create", key, move |lock| async move { lock.put_locked(&path, body).await });
        }
        let path = key.to_owned();
        let body = Buffer::from(data.to_vec());
        self.run("create", key, move |op| async move {
            op.write_options(&path, body, WriteOptions { if_not_exists: true, ..Default::default() }).await
        })
        .map(drop)
    }

    fn put_overwrite(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        let path = key.to_owned();
        let body = Buffer::from(data.to_vec());
        self.run("write", key, move |op| async move { op.write(&path, body).await }).map(drop)
    }

    fn retention(&self) -> Option<&dyn Retention> {
        if self.lock.is_some() { Some(self) } else { None }
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        if self.lock.is_some() {
            return self.delete_versions(key);
        }
        let path = key.to_owned();
        match self.run("delete", key, move |op| async move { op.delete(&path).await }) {
            Err(err) if err.is_not_found() => Ok(()),
            other => other,
        }
    }
}

impl Retention for S3Storage {
    fn period(&self) -> Duration {
        self.lock.as_ref().map_or(Duration::ZERO, |l| l.period())
    }

    /// What is known of `key` from this process's own writes and reads, else a `HeadObject`.
    fn retained_until(&self, key: &str) -> Result<Option<SystemTime>> {
        check_key(key)?;
        if let Some(known) = self.lock.as_ref().and_then(|l| l.known(key)) {
            return Ok((known > SystemTime::now()).then_some(known));
        }
        let path = key.to_owned();
        self.retry_lock("read retention", key, |lock| {
            let path = path.clone();
            async move { lock.retained_until(&path).await }
        })
    }

    /// A `PutObjectRetention` unless `key` is known to be retained until `until` already. When
    /// the server refuses (another process extended it further meanwhile), the retention is read
    /// back and accepted if it reaches `until`.
    fn extend(&self, key: &str, until: SystemTime) -> Result<()> {
        check_key(key)?;
        let known = match self.lock.as_ref().and_then(|l| l.known(key)) {
            Some(known) => Some(known),
            None => self.retained_until(key)?,
        };
        if known.is_some_and(|k| k >= until) {
            return Ok(());
        }
        let path = key.to_owned();
        let result = self.retry_lock("extend retention", key, |lock| {
            let path = path.clone();
            async move { lock.put_retention(&path, until).await }
        });
        match result {
            Ok(()) => Ok(()),
            Err(err) => {
                let path = key.to_owned();
                let now = self.retry_lock("read retention", key, |lock| {
                    let path = path.clone();
                    async move { lock.retained_until(&path).await }
                })?;
                if now.is_some_and(|n| n >= until) { Ok(()) } else { Err(err) }
            }
        }
    }
}
