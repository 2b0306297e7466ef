//! The daemon end to end on real repositories: the scheduler against a manual clock (time zones,
//! DST, windows, catch-up after downtime, overrun, leases shared by two daemons), two regions'
//! daemons sharing one real PostgreSQL catalog, crash recovery, real backup jobs with retention
//! and off-site copies, restore drills (and a corrupt pack that fails one), webhooks received by
//! a real HTTP listener, and the `Control` answers.

mod support;

#[path = "service/jobs.rs"]
mod jobs;
#[path = "service/postgres.rs"]
mod postgres;
#[path = "service/scheduler.rs"]
mod scheduler;
#[path = "service/shared_catalog.rs"]
mod shared_catalog;
