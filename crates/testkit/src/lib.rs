//! Tidemark test kit: real servers on loopback ports, and helpers for other crates' tests.
//!
//! Dev-only: depend on it under `[dev-dependencies]`. It starts real services, never mocks:
//!
//! - [`S3Server`]: a [moto](https://github.com/getmoto/moto) S3 server on a free `127.0.0.1`
//!   port, with helpers to create buckets (optionally versioned or with Object Lock) and the
//!   `s3://` URL and credentials for them.
//!
//! Servers that are not installed make tests skip loudly, except where they must run: with `CI`
//! set (to anything but `false` or `0`) or `TIDEMARK_REQUIRE_S3=1`, a missing server fails the
//! test with the fix (`scripts/install-test-deps`). [`S3Server::shared_or_skip`] applies that
//! policy:
//!
//! ```no_run
//! use tidemark_testkit::S3Server;
//!
//! let Some(server) = S3Server::shared_or_skip("my_test") else { return };
//! let bucket = server.new_bucket().unwrap();
//! let url = server.url(&bucket, "repo");
//! let (access_key_id, secret_access_key) = S3Server::credentials();
//! # let _ = (url, access_key_id, secret_access_key);
//! ```
#![deny(missing_docs)]

mod http;
pub mod postgres;
mod s3;
mod s3s;

use std::fmt;
use std::io::Write;

pub use s3::{BucketOptions, Retention, RetentionMode, S3Server};
pub use s3s::S3sServer;

/// A test service that could not be started or used; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestkitError {
    message: String,
}

impl TestkitError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        TestkitError { message: message.into() }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TestkitError {}

/// Whether tests must not skip for want of a service: `CI` is set (and not `false` or `0`), or
/// `TIDEMARK_REQUIRE_S3=1`.
pub fn services_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    set("CI") || set("TIDEMARK_REQUIRE_S3")
}

/// Skip (loudly) or, when [`services_required`], panic with `err`.
///
/// # Panics
///
/// When services are required: a test must not pass without having run.
pub fn skip_or_fail(test: &str, err: &dyn fmt::Display) {
    if services_required() {
        panic!("{test}: {err}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and a skip
    // must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {err} (set TIDEMARK_REQUIRE_S3=1 to make this a failure)");
}
