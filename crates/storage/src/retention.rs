//! Retention that the storage itself enforces (S3 Object Lock), seen through one small trait.

use std::time::{Duration, SystemTime};

use crate::Result;

/// Write-once retention enforced by the storage, not by the client: an object written with
/// [`Storage::put`](crate::Storage::put) cannot be deleted or replaced by anyone before its
/// retain-until time (S3 Object Lock in compliance mode; in governance mode only by a credential
/// allowed to bypass it). Retention can be extended, never shortened.
///
/// A [`Storage`](crate::Storage) with retention returns it from
/// [`Storage::retention`](crate::Storage::retention); the repository extends it on data that
/// newer snapshots still use and plans prune around it.
pub trait Retention: Send + Sync + std::fmt::Debug {
    /// How long each object is retained from the moment it is written.
    fn period(&self) -> Duration;

    /// Until when `key` is retained: `None` when it is not (or no longer) retained, or missing.
    fn retained_until(&self, key: &str) -> Result<Option<SystemTime>>;

    /// Extend the retention of `key` to `until`; a retention that already reaches `until` is
    /// left as it is (retention never shortens).
    fn extend(&self, key: &str, until: SystemTime) -> Result<()>;
}

/// How far past `now + period` new and extended retention reaches: a tenth of the period, at
/// least an hour, at most a week. Every object is then retained for between `period` and
/// `period + margin` from the last backup that needed it, and backups within the margin of each
/// other need not touch it again.
pub fn renewal_margin(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_secs(3600), Duration::from_secs(7 * 86_400))
}
