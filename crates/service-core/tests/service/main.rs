//! The service core's one integration-test binary: each module tests one module of the crate
//! against a controllable clock (instants are always passed in).

mod access;
mod audit;
mod auth;
mod config;
mod links;
mod schedule;

use jiff::Timestamp;

/// An instant from RFC 3339 text.
pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("bad test instant {text:?}: {e}"))
}
