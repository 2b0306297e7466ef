//! `tidemark serve-repo`: a repository directory over HTTP, optionally append-only, for clients
//! that use `-r http://host:port/`.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tidemark_storage::LocalStorage;
use tidemark_storage_http::{HttpServer, ServerPolicy, Shutdown};

use crate::args::ServeRepoArgs;
use crate::exit::{Status, UserError};
use crate::open::read_password_file;
use crate::output::Out;

/// A token file's contents (one trailing newline stripped), refusing an empty token.
fn read_token(path: &Path, flag: &str) -> Result<String> {
    let bytes = read_password_file(path)?;
    let token = String::from_utf8(bytes)
        .map_err(|_| UserError::plain(format!("{flag} {}: the token is not UTF-8", path.display())))?;
    if token.trim().is_empty() {
        return Err(UserError::new(
            format!("{flag} {}: the token is empty", path.display()),
            "put a long random string in it, for example `head -c 32 /dev/urandom | base64`",
        )
        .into());
    }
    Ok(token.trim().to_string())
}

/// Run the server until the process is stopped.
pub fn run(args: &ServeRepoArgs, out: &Out) -> Result<Status> {
    if !args.path.is_dir() {
        return Err(UserError::new(
            format!("{} is not a directory", args.path.display()),
            "create it first (`mkdir -p`), then `tidemark -r http://HOST:PORT/ init` through the server",
        )
        .into());
    }
    let token = args.token_file.as_deref().map(|p| read_token(p, "--token-file")).transpose()?;
    let admin_token = args.admin_token_file.as_deref().map(|p| read_token(p, "--admin-token-file")).transpose()?;
    if token.is_some() && token == admin_token {
        return Err(UserError::new(
            "--token-file and --admin-token-file hold the same token",
            "the admin token must be a separate, stronger credential",
        )
        .into());
    }
    let listener = TcpListener::bind(&args.listen).map_err(|e| {
        UserError::new(format!("cannot listen on {}: {e}", args.listen), "choose another --listen address")
    })?;
    let addr = listener.local_addr().context("reading the listening address")?;
    let root = std::path::absolute(&args.path).with_context(|| format!("repository path {}", args.path.display()))?;
    let policy = ServerPolicy { append_only: args.append_only, token, admin_token };
    let mode = match (policy.append_only, policy.admin_token.is_some()) {
        (true, true) => " (append-only; the admin token may delete)",
        (true, false) => " (append-only)",
        _ => "",
    };
    let auth = if policy.token.is_some() { ", bearer token required" } else { "" };
    if out.json {
        out.json_value(&serde_json::json!({
            "message_type": "listening",
            "url": format!("http://{addr}/"),
            "path": root,
            "append_only": policy.append_only,
            "token": policy.token.is_some(),
        }))?;
    } else {
        out.line(format!("serving {} on http://{addr}/{mode}{auth}", root.display()))?;
    }
    let log = if out.quiet { None } else { Some(Arc::new(|m: &str| eprintln!("serve-repo: {m}"))) };
    let mut server = HttpServer::new(Arc::new(LocalStorage::new(root)), policy);
    if let Some(log) = log {
        server = server.with_log(log);
    }
    // Stopped by a signal: every write is atomic on disk, so an interrupted request leaves nothing.
    server.serve(listener, &Shutdown::new()).context("serving the repository")?;
    Ok(Status::Ok)
}
