//! Signed download links: `POST /api/v1/links` hands one out, `GET /links/{token}` streams the
//! file it names. The link is its own credential (no bearer token); the allowlist still applies.
//! Expired, tampered and reused links are refused with 403 and audited.

use std::io::{ErrorKind, Read};
use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tidemark_service_core::audit::Outcome;
use tidemark_service_core::config::Server;
use tidemark_service_core::{ControlError, FileStream, LinkClaims};

use crate::error::ApiError;
use crate::gate::{Ctx, refuse};
use crate::routes::body;
use crate::{Api, call, record, record_result};

/// The generated link secret's name in the state directory, used when the config names no
/// `link_secret_file`.
pub const LINK_SECRET_FILE: &str = "link.key";

/// The fewest bytes a link secret may have.
const MIN_SECRET: usize = 16;
/// Bytes per chunk streamed to the client.
const CHUNK: usize = 256 * 1024;

/// The link-signing secret: the contents of `server.link_secret_file` (surrounding whitespace
/// ignored), or of `state_dir/link.key`, which is created with 32 random bytes (mode 0600) when
/// the config names no file and it does not exist yet.
pub fn link_secret(server: &Server) -> anyhow::Result<Vec<u8>> {
    let path = match &server.link_secret_file {
        Some(path) => path.clone(),
        None => {
            let path = server.state_dir.join(LINK_SECRET_FILE);
            create_secret(&path)?;
            path
        }
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the link secret {}; check server.link_secret_file", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_SECRET {
        bail!(
            "the link secret {} holds {} bytes, fewer than {MIN_SECRET}; write 32 random bytes to it, e.g. \
             `head -c 32 /dev/urandom > {}`",
            path.display(),
            secret.len(),
            path.display()
        );
    }
    Ok(secret.to_vec())
}

fn create_secret(path: &FsPath) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot create the link secret {}", path.display())),
    };
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    file.write_all(&secret)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the link secret {}", path.display()))
}

/// The body of `POST /api/v1/links`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    snapshot: String,
    path: String,
    ttl: Option<String>,
    #[serde(default)]
    single_use: bool,
}

/// The answer of `POST /api/v1/links`.
#[derive(Serialize)]
struct LinkAnswer {
    url: String,
    expires: Timestamp,
    snapshot: String,
    path: String,
    single_use: bool,
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request = body::<LinkRequest>(&bytes, r#"{"snapshot": "3f2a9c1b", "path": "/srv/uploads/a.pdf", "ttl": "1h"}"#);
    let target = match &request {
        Ok(r) => format!("{}:{}", r.snapshot, r.path),
        Err(_) => "invalid request".to_string(),
    };
    let result = match request {
        Ok(request) => sign(&api, &headers, request).await,
        Err(e) => Err(e),
    };
    record_result(&api, &ctx, target, &result).await?;
    Ok(Json(result?).into_response())
}

async fn sign(api: &Arc<Api>, headers: &HeaderMap, request: LinkRequest) -> Result<LinkAnswer, ApiError> {
    let now = api.now();
    let expires = api.signer.expiry(request.ttl.as_deref(), now).map_err(|e| ApiError::invalid(e.to_string()))?;
    // Scope the link to the snapshot's full id, so that it never names another one later.
    let wanted = request.snapshot.clone();
    let snapshots = call(api, |c| c.snapshots(None)).await?;
    let mut matching = snapshots.iter().filter(|s| s.id.starts_with(&wanted));
    let snapshot = match (matching.next(), matching.next()) {
        (Some(one), None) => one.id.clone(),
        (None, _) => {
            return Err(ApiError::not_found(format!("no snapshot {wanted:?}; GET /api/v1/snapshots lists them")));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(format!("the snapshot prefix {wanted:?} is ambiguous; give more of its id")));
        }
    };
    let (id, path) = (snapshot.clone(), request.path.clone());
    drop(call(api, move |c| c.open_file(&id, &path)).await?);
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let claims = LinkClaims { snapshot, path: request.path, expires, single_use: request.single_use, nonce };
    let token = api.signer.sign(&claims);
    let scheme = if api.config.server.tls.is_some() { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .map_or_else(|| api.config.server.listen.to_string(), str::to_string);
    Ok(LinkAnswer {
        url: format!("{scheme}://{host}/links/{token}"),
        expires,
        snapshot: claims.snapshot,
        path: claims.path,
        single_use: claims.single_use,
    })
}

pub(crate) async fn download(State(api): State<Arc<Api>>, ctx: Ctx, Path(token): Path<String>) -> Response {
    let now = api.now();
    let claims = match api.signer.verify(&token, now) {
        Ok(claims) => claims,
        Err(e) => return refuse(&api, &ctx, ApiError::forbidden(e.to_string()), None, e.to_string()).await,
    };
    let target = format!("{}:{}", claims.snapshot, claims.path);
    let (id, path) = (claims.snapshot.clone(), claims.path.clone());
    let opened = call(&api, move |c| c.open_file(&id, &path)).await;
    let file = match opened {
        Ok(file) => file,
        Err(e) => return failed(&api, &ctx, target, e).await,
    };
    if claims.single_use {
        let nonce = hex::encode(claims.nonce);
        match call(&api, move |c| c.catalog().use_link(&nonce, now).map_err(ControlError::from)).await {
            Ok(true) => {}
            Ok(false) => {
                let error = ApiError::forbidden("this single-use link was used already; ask for a new link");
                return refuse(&api, &ctx, error, Some(target), "single-use link reused".to_string()).await;
            }
            Err(e) => return failed(&api, &ctx, target, e).await,
        }
    }
    if let Err(e) = record(&api, &ctx, target, Outcome::Ok, None).await {
        return e.into_response();
    }
    stream(file)
}

async fn failed(api: &Arc<Api>, ctx: &Ctx, target: String, error: ApiError) -> Response {
    let result: Result<(), ApiError> = Err(error.clone());
    match record_result(api, ctx, target, &result).await {
        Ok(()) => error.into_response(),
        Err(audit) => audit.into_response(),
    }
}

/// Streams `file` from a blocking thread, a chunk at a time.
fn stream(file: FileStream) -> Response {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let FileStream { size, name, mut reader } = file;
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.blocking_send(Ok(Bytes::copy_from_slice(&buffer[..n]))).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("reading a linked file failed mid-stream: {e}");
                    let _ = sender.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `attachment` with an ASCII `filename` and the exact name as RFC 8187 `filename*`.
fn content_disposition(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_quotes_safely() {
        assert_eq!(
            content_disposition("a \"b\"ä.txt"),
            "attachment; filename=\"a _b__.txt\"; filename*=UTF-8''a%20%22b%22%C3%A4.txt"
        );
    }
}
