//! The JSON handlers of `/api/v1` and `/healthz`: thin calls into [`Control`](tidemark_service_core::Control).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tidemark_service_core::{JobFilter, JobKind, JobRequest, JobStatus, SourceStatus};

use crate::error::ApiError;
use crate::gate::Ctx;
use crate::{Api, call, record_result};

/// The OpenAPI 3.1 description of every route.
const OPENAPI: &str = include_str!("openapi.json");

/// How many audit entries `GET /api/v1/audit` returns unless asked.
const AUDIT_DEFAULT_LIMIT: usize = 100;

type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) async fn not_found(ctx: Ctx) -> ApiError {
    let path = ctx.action.split_once(' ').map_or("", |(_, p)| p).to_string();
    ApiError::not_found(format!("no such route: {path}; GET /api/v1/openapi.json lists the routes"))
}

/// Query parameters, with a 400 naming the problem instead of axum's plain-text rejection.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query.map(|Query(q)| q).map_err(|e| ApiError::invalid(e.body_text()))
}

/// A JSON body, with a 400 naming the problem.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes, example: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}; expected e.g. {example}")))
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceQuery {
    source: Option<String>,
}

pub(crate) async fn sources(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<SourceStatus>>> {
    Ok(Json(call(&api, |c| c.sources()).await?))
}

pub(crate) async fn source(State(api): State<Arc<Api>>, Path(name): Path<String>) -> ApiResult<Json<SourceStatus>> {
    let all = call(&api, |c| c.sources()).await?;
    all.into_iter()
        .find(|s| s.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no source named {name:?}; GET /api/v1/sources lists them")))
}

pub(crate) async fn snapshots(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    q: Result<Query<SourceQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let source = nonempty(query(q)?.source);
    let target = source.clone().unwrap_or_else(|| "*".to_string());
    let result = call(&api, move |c| c.snapshots(source.as_deref())).await;
    record_result(&api, &ctx, target, &result).await?;
    Ok(Json(result?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    source: Option<String>,
    kind: Option<String>,
    /// One status or several separated by commas.
    status: Option<String>,
    limit: Option<usize>,
}

fn parse_enum<T: DeserializeOwned>(text: &str, what: &str, choices: &str) -> ApiResult<T> {
    serde_json::from_value(Value::String(text.trim().to_string()))
        .map_err(|_| ApiError::invalid(format!("unknown {what} {text:?}; expected one of {choices}")))
}

pub(crate) async fn jobs(
    State(api): State<Arc<Api>>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<tidemark_service_core::JobRecord>>> {
    let q = query(q)?;
    let kind = nonempty(q.kind)
        .map(|k| parse_enum::<JobKind>(&k, "job kind", "backup, drill, restore, copy, forget"))
        .transpose()?;
    let status = nonempty(q.status)
        .map(|list| {
            list.split(',')
                .map(|s| {
                    parse_enum::<JobStatus>(
                        s,
                        "job status",
                        "queued, running, succeeded, failed, interrupted, missed, cancelled",
                    )
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let filter = JobFilter { source: nonempty(q.source), kind, status, limit: q.limit };
    Ok(Json(call(&api, move |c| c.jobs(&filter)).await?))
}

pub(crate) async fn job(State(api): State<Arc<Api>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    let target = id.clone();
    let result = call(&api, move |c| c.job(&id)).await;
    record_result(&api, &ctx, target, &result).await?;
    let (job, log) = result?;
    Ok(Json(json!({ "job": job, "log": log })).into_response())
}

pub(crate) async fn policy(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    Ok(Json(call(&api, |c| c.policy()).await?).into_response())
}

pub(crate) async fn drills(
    State(api): State<Arc<Api>>,
    q: Result<Query<SourceQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let source = nonempty(query(q)?.source);
    Ok(Json(call(&api, move |c| c.drills(source.as_deref())).await?).into_response())
}

pub(crate) async fn backup(State(api): State<Arc<Api>>, ctx: Ctx, Path(name): Path<String>) -> ApiResult<Response> {
    start(api, ctx, name, JobRequest::Backup).await
}

pub(crate) async fn drill(State(api): State<Arc<Api>>, ctx: Ctx, Path(name): Path<String>) -> ApiResult<Response> {
    start(api, ctx, name, JobRequest::Drill).await
}

/// The body of `POST /api/v1/sources/{name}/restore`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    snapshot: Option<String>,
    target: String,
    #[serde(default)]
    include: Vec<String>,
}

pub(crate) async fn restore(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let parsed = body::<RestoreBody>(&bytes, r#"{"snapshot": "3f2a9c1b", "target": "/srv/restore", "include": []}"#);
    let request = match parsed {
        Ok(b) => JobRequest::Restore { snapshot: b.snapshot, target: b.target, include: b.include },
        Err(e) => {
            record_result::<()>(&api, &ctx, name, &Err(e.clone())).await?;
            return Err(e);
        }
    };
    start(api, ctx, name, request).await
}

async fn start(api: Arc<Api>, ctx: Ctx, name: String, request: JobRequest) -> ApiResult<Response> {
    let by = ctx.by();
    let target = match &request {
        JobRequest::Restore { snapshot, target, .. } => {
            format!("{name} snapshot {} into {target}", snapshot.as_deref().unwrap_or("latest"))
        }
        _ => name.clone(),
    };
    let result = call(&api, move |c| c.start(&name, &request, &by)).await;
    record_result(&api, &ctx, target, &result).await?;
    Ok((StatusCode::ACCEPTED, Json(result?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    limit: Option<usize>,
}

pub(crate) async fn audit(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let limit = query(q)?.limit.unwrap_or(AUDIT_DEFAULT_LIMIT);
    // Audit the read first, so that the answer includes it.
    record_result::<()>(&api, &ctx, "audit log".to_string(), &Ok(())).await?;
    let reader = api.clone();
    let view = tokio::task::spawn_blocking(move || reader.audit.read(limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(view).into_response())
}
