//! The daemon's clock: the real one, and a manual one that tests move by hand.
//!
//! The scheduler never reads the system time itself; it asks its [`Clock`], so the whole of its
//! behaviour (time zones, DST, windows, downtime) is tested by setting a [`ManualClock`].

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// Tells the daemon what time it is.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until it is set or advanced (tests).
///
/// ```
/// use jiff::SignedDuration;
/// use tidemark_service::{Clock, ManualClock};
/// let clock = ManualClock::new("2026-01-10T19:30:00Z".parse().unwrap());
/// clock.advance(SignedDuration::from_mins(5));
/// assert_eq!(clock.now().to_string(), "2026-01-10T19:35:00Z");
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: Timestamp) -> ManualClock {
        ManualClock { now: Mutex::new(now) }
    }

    /// Shows `now` from here on.
    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Moves the clock by `by` (saturating at the ends of time).
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).unwrap_or(if by.is_negative() { Timestamp::MIN } else { Timestamp::MAX });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
