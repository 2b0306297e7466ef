//! The two gates every request passes: the IP allowlist (first, for every path, before
//! authentication and before a 404), then, on the routes that need one, the bearer token and
//! its role. Every refusal is audited.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tidemark_service_core::Role;
use tidemark_service_core::audit::Outcome;

use crate::error::ApiError;
use crate::{Api, record};

/// The client's address after the X-Forwarded-For rule; set by [`admit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub(crate) IpAddr);

/// The holder of the valid token presented; set by [`authorize`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Role,
}

/// Who asked what, for the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) ip: IpAddr,
    pub(crate) caller: Option<Caller>,
    /// `METHOD /path`, with link tokens cut out.
    pub(crate) action: String,
}

impl Ctx {
    fn new(method: &Method, uri: &Uri, extensions: &Extensions) -> Ctx {
        Ctx {
            ip: extensions.get::<Client>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0),
            caller: extensions.get::<Caller>().cloned(),
            action: format!("{method} {}", redact(uri.path())),
        }
    }

    fn of(request: &Request) -> Ctx {
        Ctx::new(request.method(), request.uri(), request.extensions())
    }

    /// The token's name, or `"anonymous"` on a route that needs none.
    pub(crate) fn by(&self) -> String {
        self.caller.as_ref().map_or_else(|| "anonymous".to_string(), |c| c.name.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Ctx, Self::Rejection> {
        Ok(Ctx::new(&parts.method, &parts.uri, &parts.extensions))
    }
}

/// A path fit for the audit log: the credential in `/links/{token}` is left out.
pub(crate) fn redact(path: &str) -> String {
    match path.strip_prefix("/links/") {
        Some(_) => "/links/…".to_string(),
        None => path.to_string(),
    }
}

fn peer(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("unreadable")).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The allowlist: the first layer around every route, the fallback included.
pub(crate) async fn admit(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let Some(peer) = peer(&request) else {
        return ApiError::internal("the router runs without connect info; serve it with serve_with").into_response();
    };
    let forwarded = forwarded_for(request.headers());
    match api.config.server.access.admit(peer.ip(), forwarded.as_deref()) {
        Ok(client) => {
            request.extensions_mut().insert(Client(client));
            next.run(request).await
        }
        Err(client) => {
            request.extensions_mut().insert(Client(client));
            let ctx = Ctx::of(&request);
            let detail = format!("address {client} is not on the allowlist (peer {})", peer.ip());
            let error = ApiError::forbidden(format!("address {client} is not allowed to use this server"));
            refuse(&api, &ctx, error, None, detail).await
        }
    }
}

/// The token gate of routes that need at least `required`.
pub(crate) async fn authorize(
    State((api, required)): State<(Arc<Api>, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let ctx = Ctx::of(&request);
    let Some(presented) = bearer(request.headers()) else {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no bearer token: send `Authorization: Bearer <token>` (create one with `tidemark token create`)",
        );
        return refuse(&api, &ctx, error, None, "no bearer token".to_string()).await;
    };
    let reader = api.clone();
    let store = match tokio::task::spawn_blocking(move || reader.tokens.current()).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return ApiError::internal(e).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let Some(record) = store.verify(&presented) else {
        let error =
            ApiError::new(StatusCode::UNAUTHORIZED, "the bearer token is not valid (revoked, rotated or mistyped)");
        return refuse(&api, &ctx, error, None, "invalid bearer token".to_string()).await;
    };
    let caller = Caller { name: record.name.clone(), role: record.role };
    if !caller.role.allows(required) {
        let ctx = Ctx { caller: Some(caller.clone()), ..ctx };
        let error = ApiError::forbidden(format!(
            "the token {:?} has the role {}; this needs {} or above",
            caller.name, caller.role, required
        ));
        let detail = format!("role {} below {}", caller.role, required);
        return refuse(&api, &ctx, error, None, detail).await;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_string())
}

/// Audits a refusal (of `target`, by default the path) and answers it. The refusal stands even when the audit log cannot be
/// written (that failure goes to the log).
pub(crate) async fn refuse(
    api: &Arc<Api>,
    ctx: &Ctx,
    error: ApiError,
    target: Option<String>,
    detail: String,
) -> Response {
    let target = target.unwrap_or_else(|| ctx.action.split_once(' ').map_or("", |(_, path)| path).to_string());
    if let Err(e) = record(api, ctx, target, Outcome::Denied, Some(detail)).await {
        tracing::error!("refused {} from {} but could not audit it: {}", ctx.action, ctx.ip, e.message);
    }
    let mut response = error.clone().into_response();
    if error.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
