//! The state crate's one integration-test binary: one conformance suite run against every
//! catalog, then what is particular to each (persistence and the lock of the embedded one; the
//! shared PostgreSQL catalog raced by two daemons).

mod conformance;
mod embedded;
mod pg;

use jiff::Timestamp;
use tidemark_service_state::MemoryCatalog;

/// An instant from RFC 3339 text.
pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("bad test instant {text:?}: {e}"))
}

#[test]
fn memory_catalog_conforms() {
    conformance::run_all("memory", &mut |_| Box::new(MemoryCatalog::new()));
}
