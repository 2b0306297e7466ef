//! Webhooks (`[[notify]]`): a JSON POST for each event a hook subscribed to.
//!
//! The body is one object:
//!
//! ```json
//! {"event": "job_failed", "source": "uploads", "message": "...", "time": "2026-01-10T19:30:00Z",
//!  "daemon": "host-1", "job": { ...the job record as /api/v1/jobs returns it... }}
//! ```
//!
//! Delivery is best effort with a short timeout: a webhook that is down never stops a job; the
//! failure is returned to the caller, which writes it into the job's log.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tidemark_service_core::JobRecord;
use tidemark_service_core::config::{Event, Notify};
use ureq::Agent;

/// One notification.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `job_failed`, `window_missed`, `backup_stale` or `drill_failed`.
    pub event: &'static str,
    /// The source concerned.
    pub source: String,
    /// What happened, in one line.
    pub message: String,
    /// When it was noticed.
    pub time: Timestamp,
    /// The daemon that noticed it (its owner id).
    pub daemon: String,
    /// The job concerned, if any.
    pub job: Option<JobRecord>,
}

/// Sends notices to the configured webhooks.
#[derive(Clone)]
pub struct Notifier {
    hooks: Vec<Notify>,
    agent: Agent,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("hooks", &self.hooks).finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier for `hooks`.
    pub fn new(hooks: Vec<Notify>) -> Notifier {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build();
        Notifier { hooks, agent: config.into() }
    }

    /// POSTs `notice` to every hook subscribed to `event`; returns one message per hook that
    /// did not accept it (connection failed, or a non-2xx answer).
    pub fn send(&self, event: Event, notice: &Notice) -> Vec<String> {
        let body = match serde_json::to_vec(notice) {
            Ok(b) => b,
            Err(e) => return vec![format!("cannot encode the {} notification: {e}", event.as_str())],
        };
        let mut failures = Vec::new();
        for hook in self.hooks.iter().filter(|h| h.events.contains(&event)) {
            let result = self.agent.post(&hook.url).header("content-type", "application/json").send(&body[..]);
            match result {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => failures.push(format!(
                    "webhook {} answered {} to the {} notification; check the hook's URL and receiver",
                    hook.url,
                    response.status(),
                    event.as_str()
                )),
                Err(e) => failures.push(format!(
                    "webhook {} did not receive the {} notification: {e}; check that it is reachable",
                    hook.url,
                    event.as_str()
                )),
            }
        }
        failures
    }
}
