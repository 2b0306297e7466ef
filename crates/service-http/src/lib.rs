//! Tidemark service HTTP layer: the versioned JSON API, Prometheus metrics, signed download
//! links and the dashboard, served over HTTP or TLS in front of the daemon's [`Control`].
//!
//! The daemon builds its [`Control`] and hands it to [`serve`] with the listener and a shutdown
//! future; tests build an [`Api`] with their own clock and call [`serve_with`] (or [`router`]).
//!
//! | route | who |
//! | --- | --- |
//! | `GET /`, `GET /healthz`, `GET /api/v1/openapi.json`, `GET /links/{token}` | anyone on the allowlist (a link is its own credential) |
//! | `GET /metrics`, `GET /api/v1/{sources,sources/{name},snapshots,jobs,jobs/{id},policy,drills}` | viewer |
//! | `POST /api/v1/sources/{name}/{backup,drill,restore}`, `POST /api/v1/links` | operator |
//! | `GET /api/v1/audit` | admin |
//!
//! Every request first passes the IP allowlist (`server.allow`, with X-Forwarded-For believed
//! only from `server.trusted_proxies`): 403 otherwise, before authentication and before a 404.
//! Then a route that needs a role wants `Authorization: Bearer <token>`: 401 without a valid
//! token, 403 when its role is too low. Refusals, data reads (snapshots, a job's log, links, the
//! audit log), triggered jobs and link creations are appended to `state_dir/audit.log`.
//!
//! ```no_run
//! # async fn run(config: tidemark_service_core::Config, control: std::sync::Arc<dyn tidemark_service_core::Control>) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
//! // The daemon sends on `stop` on SIGTERM.
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! tidemark_service_http::serve(Arc::new(config), control, listener, async {
//!     let _ = stopped.await;
//! })
//! .await
//! # }
//! ```
#![deny(missing_docs)]

mod audit_log;
mod dashboard;
mod error;
mod gate;
mod links;
mod metrics;
mod routes;
mod server;
pub mod tokens;

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use jiff::Timestamp;
use tidemark_service_core::audit::{AuditEntry, Outcome};
use tidemark_service_core::{Config, Control, LinkSigner, Role};

pub use audit_log::{AUDIT_FILE, AuditLog, AuditView};
pub use links::{LINK_SECRET_FILE, link_secret};
pub use server::{SHUTDOWN_GRACE, serve, serve_with};

use error::ApiError;
use gate::Ctx;
use tokens::TokenCache;

/// The clock the API reads: the system clock in the daemon, a controlled one in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything the handlers share: the config, the daemon's [`Control`], the tokens, the audit
/// log, the link signer and the clock.
pub struct Api {
    config: Arc<Config>,
    control: Arc<dyn Control>,
    tokens: TokenCache,
    audit: AuditLog,
    signer: LinkSigner,
    clock: Clock,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("state_dir", &self.config.server.state_dir).finish_non_exhaustive()
    }
}

impl Api {
    /// The API of `config` over `control`: opens the audit log and reads the link secret (or
    /// creates one, see [`link_secret`]), both under `server.state_dir`.
    pub fn new(config: Arc<Config>, control: Arc<dyn Control>) -> anyhow::Result<Api> {
        let server = &config.server;
        let audit = AuditLog::open(&server.state_dir)?;
        let signer = LinkSigner::new(&link_secret(server)?).with_ttl(server.link_ttl, server.link_max_ttl);
        let tokens = TokenCache::new(&server.state_dir);
        Ok(Api { config, control, tokens, audit, signer, clock: Arc::new(Timestamp::now) })
    }

    /// The same API reading `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Api {
        self.clock = clock;
        self
    }

    /// The audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }
}

/// The routes (see the crate docs), behind the allowlist. Serve it with connect info
/// ([`serve_with`] does), or every request is answered 500.
pub fn router(api: Arc<Api>) -> Router {
    let gate = |role: Role| from_fn_with_state((api.clone(), role), gate::authorize);
    let public = Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(routes::healthz))
        .route("/api/v1/openapi.json", get(routes::openapi))
        .route("/links/{token}", get(links::download));
    let viewer = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/sources", get(routes::sources))
        .route("/api/v1/sources/{name}", get(routes::source))
        .route("/api/v1/snapshots", get(routes::snapshots))
        .route("/api/v1/jobs", get(routes::jobs))
        .route("/api/v1/jobs/{id}", get(routes::job))
        .route("/api/v1/policy", get(routes::policy))
        .route("/api/v1/drills", get(routes::drills))
        .route_layer(gate(Role::Viewer));
    let operator = Router::new()
        .route("/api/v1/sources/{name}/backup", post(routes::backup))
        .route("/api/v1/sources/{name}/drill", post(routes::drill))
        .route("/api/v1/sources/{name}/restore", post(routes::restore))
        .route("/api/v1/links", post(links::create))
        .route_layer(gate(Role::Operator));
    let admin = Router::new().route("/api/v1/audit", get(routes::audit)).route_layer(gate(Role::Admin));
    Router::new()
        .merge(public)
        .merge(viewer)
        .merge(operator)
        .merge(admin)
        .fallback(routes::not_found)
        .layer(from_fn_with_state(api.clone(), gate::admit))
        .with_state(api)
}

/// Runs a blocking [`Control`] call on the blocking pool.
async fn call<T, F>(api: &Arc<Api>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Control) -> Result<T, tidemark_service_core::ControlError> + Send + 'static,
{
    let control = api.control.clone();
    tokio::task::spawn_blocking(move || f(control.as_ref())).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

/// Appends one entry to the audit log (on the blocking pool); a failure is a 500.
async fn record(
    api: &Arc<Api>,
    ctx: &Ctx,
    target: String,
    outcome: Outcome,
    detail: Option<String>,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        time: api.now(),
        actor: ctx.caller.as_ref().map(|c| c.name.clone()),
        role: ctx.caller.as_ref().map(|c| c.role),
        ip: ctx.ip,
        action: ctx.action.clone(),
        target,
        outcome,
        detail,
    };
    let api = api.clone();
    tokio::task::spawn_blocking(move || api.audit.append(&entry))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Audits the outcome of an allowed call: `ok`, or `failed` with the error; a failed audit
/// turns the answer into a 500.
async fn record_result<T>(
    api: &Arc<Api>,
    ctx: &Ctx,
    target: String,
    result: &Result<T, ApiError>,
) -> Result<(), ApiError> {
    match result {
        Ok(_) => record(api, ctx, target, Outcome::Ok, None).await,
        Err(e) => {
            record(api, ctx, target, Outcome::Failed, Some(format!("{}: {}", e.status.as_u16(), e.message))).await
        }
    }
}
