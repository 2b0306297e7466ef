//! The S3 client: an OpenDAL operator on a private runtime, used from plain threads.
//!
//! Listing, reads and writes are async in OpenDAL; the walker and the worker threads call
//! [`Bucket::block_on`], which runs one future on the bucket's own runtime with the configured
//! request timeout. Object bodies stream through [`BodyReader`] (a `std::io::Read`), so an object
//! is never held in memory whole.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::time::Duration;

use bytes::Buf;
use futures::StreamExt;
use opendal::{Buffer, Metadata, Operator};
use tidemark_storage::{ErrorKind, StorageError};
use tidemark_storage_s3::{RawBucket, S3Config};

use crate::ObjectsError;

/// A connection to one bucket below a prefix.
pub(crate) struct Bucket {
    op: Operator,
    /// Exact-key requests, for the keys the operator would normalize, and listings.
    raw: RawBucket,
    runtime: Option<tokio::runtime::Runtime>,
    location: String,
    timeout: Duration,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("location", &self.location).finish_non_exhaustive()
    }
}

impl Bucket {
    /// Set up the client (nothing is sent yet). Mirrors `S3Storage::new` (which does not expose
    /// its operator): endpoint, region, path style, explicit or ambient credentials.
    pub(crate) fn connect(config: &S3Config) -> Result<Bucket, ObjectsError> {
        let location = match &config.endpoint {
            Some(e) => format!("s3://{}/{} (endpoint {e})", config.bucket, config.prefix),
            None => format!("s3://{}/{}", config.bucket, config.prefix),
        };
        let setup = |what: &str, err: &dyn fmt::Display| {
            ObjectsError::Invalid(format!("cannot set up the S3 client for {location}: {what}: {err}"))
        };
        let op = tidemark_storage_s3::operator(config).map_err(|e| ObjectsError::Invalid(e.to_string()))?;
        let raw = RawBucket::new(config).map_err(|e| ObjectsError::Invalid(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidemark-objects")
            .enable_all()
            .build()
            .map_err(|e| setup("runtime", &e))?;
        Ok(Bucket { op, raw, runtime: Some(runtime), location, timeout: config.request_timeout })
    }

    /// The operator (paths are keys relative to the prefix).
    pub(crate) fn op(&self) -> &Operator {
        &self.op
    }

    /// Run one request to completion, failing as temporary after the request timeout.
    pub(crate) fn block_on<T>(&self, fut: impl Future<Output = opendal::Result<T>>) -> opendal::Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(opendal::Error::new(opendal::ErrorKind::Unexpected, "S3 client is shut down"));
        };
        match runtime.block_on(async { tokio::time::timeout(self.timeout, fut).await }) {
            Ok(result) => result,
            Err(_) => Err(opendal::Error::new(opendal::ErrorKind::Unexpected, "request timed out").set_temporary()),
        }
    }

    /// The exact-key client (keys relative to the prefix, never normalized).
    pub(crate) fn raw(&self) -> &RawBucket {
        &self.raw
    }

    /// Run one exact-key request to completion (it has its own request timeout).
    pub(crate) fn block_on_raw<T>(
        &self,
        fut: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let Some(runtime) = &self.runtime else {
            return Err(StorageError::new(ErrorKind::Permanent, "S3 client is shut down"));
        };
        runtime.block_on(fut)
    }

    /// A storage error for a failed `action` on `key`.
    pub(crate) fn error(&self, action: &str, key: &str, err: opendal::Error) -> StorageError {
        let kind = kind_of(&err);
        let what = match err.message() {
            "" => err.kind().to_string(),
            m => format!("{}: {}", err.kind(), m.chars().take(300).collect::<String>()),
        };
        StorageError::new(kind, format!("S3 {action} at {} failed: {what}", self.location)).with_key(key)
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Classify an OpenDAL error like the S3 storage backend does.
pub(crate) fn kind_of(err: &opendal::Error) -> ErrorKind {
    use opendal::ErrorKind as Dal;
    match err.kind() {
        Dal::NotFound => ErrorKind::NotFound,
        Dal::AlreadyExists | Dal::ConditionNotMatch => ErrorKind::AlreadyExists,
        Dal::PermissionDenied => ErrorKind::PermissionDenied,
        Dal::RateLimited => ErrorKind::Transient,
        _ if err.is_temporary() => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Whether an I/O error from a [`BodyReader`] is a temporary S3 failure worth a retry.
pub(crate) fn io_is_temporary(err: &io::Error) -> bool {
    err.get_ref().and_then(|e| e.downcast_ref::<opendal::Error>()).is_some_and(opendal::Error::is_temporary)
}

/// The object metadata tidemark keeps: content-type and user metadata (as JSON).
pub(crate) fn metadata_attrs(meta: &Metadata, attrs: &mut BTreeMap<String, String>) {
    if let Some(ct) = meta.content_type() {
        attrs.insert("content_type".into(), ct.to_string());
    }
    if let Some(user) = meta.user_metadata().filter(|u| !u.is_empty()) {
        let map: BTreeMap<&str, &str> = user.into_iter().collect();
        attrs.insert("user_metadata".into(), serde_json::to_string(&map).unwrap_or_default());
    }
}

/// An object body as a blocking reader.
pub(crate) struct BodyReader<'a> {
    bucket: &'a Bucket,
    stream: opendal::BufferStream,
    current: Buffer,
    /// Bytes handed out so far.
    pub(crate) read: u64,
}

impl<'a> BodyReader<'a> {
    /// Open `key` (a given version when `version` is set); returns the reader and a handle whose
    /// metadata is filled in by the GET response.
    pub(crate) fn open(
        bucket: &'a Bucket,
        key: &str,
        version: Option<&str>,
    ) -> opendal::Result<(BodyReader<'a>, opendal::Reader)> {
        let options = opendal::options::ReaderOptions { version: version.map(str::to_string), ..Default::default() };
        let reader = bucket.block_on(bucket.op.reader_options(key, options))?;
        let handle = reader.clone();
        let stream = bucket.block_on(reader.into_stream(..))?;
        Ok((BodyReader { bucket, stream, current: Buffer::new(), read: 0 }, handle))
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            let next = self.bucket.block_on(async { self.stream.next().await.transpose() });
            match next {
                Ok(Some(b)) => self.current = b,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}
