//! The configured repositories (`[repositories.NAME]`), opened once and handed out fresh.
//!
//! A repository is opened from its `url` (a path, `file:///path`, `s3://bucket/prefix?...` with
//! the AWS_* variables, or `http(s)://` for `tidemark serve-repo` with TIDEMARK_REPO_TOKEN_FILE or
//! TIDEMARK_REPO_TOKEN) and the password in its `password_file`. Deriving the key costs ~140 ms,
//! so each repository is opened once per daemon; every job gets a [`Repository::fresh`] handle
//! that sees what others wrote since.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tidemark_repo::{Credential, Repository};
use tidemark_service_core::config::Repository as RepositoryConfig;
use tidemark_storage::{LocalStorage, RetryStorage, Storage};
use tidemark_storage_http::HttpStorage;
use tidemark_storage_s3::S3Storage;

use crate::DaemonError;

/// Opened repositories by config name.
#[derive(Default)]
pub struct Repositories {
    open: Mutex<HashMap<String, Repository>>,
}

impl std::fmt::Debug for Repositories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repositories").finish_non_exhaustive()
    }
}

impl Repositories {
    /// A fresh handle on the repository `config` describes, opening it on first use.
    pub fn get(&self, config: &RepositoryConfig) -> Result<Repository, DaemonError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(repo) = open.get(&config.name) {
            return Ok(repo.fresh());
        }
        let repo = open_repository(config)?;
        open.insert(config.name.clone(), repo.clone());
        Ok(repo.fresh())
    }
}

/// Open the repository `config` describes.
pub fn open_repository(config: &RepositoryConfig) -> Result<Repository, DaemonError> {
    let failed = |message: String| DaemonError::Repository { name: config.name.clone(), message };
    let storage = storage_for(&config.url).map_err(failed)?;
    Repository::marker(storage.as_ref()).map_err(|e| {
        failed(format!(
            "{e}; create it with `tidemark -r {} init` or fix url in [repositories.{}]",
            config.url, config.name
        ))
    })?;
    let password = read_password_file(&config.password_file).map_err(failed)?;
    Repository::open(storage, &Credential::Password(password)).map_err(|e| failed(e.to_string()))
}

/// The storage behind a repository URL, wrapped in retries.
pub fn storage_for(url: &str) -> Result<Arc<dyn Storage>, String> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(RetryStorage::new(LocalStorage::new(path))));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let http = HttpStorage::new(url, repo_token()?).map_err(|e| e.to_string())?;
        return Ok(Arc::new(RetryStorage::new(http)));
    }
    if url.starts_with("s3://") {
        let s3 = S3Storage::from_url(url).map_err(|e| e.to_string())?;
        return Ok(Arc::new(RetryStorage::new(s3)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(format!(
            "unsupported repository URL scheme {scheme:?} in {url:?}; use a path, file:///path, s3://... or http(s)://..."
        ));
    }
    Ok(Arc::new(RetryStorage::new(LocalStorage::new(url))))
}

fn repo_token() -> Result<Option<String>, String> {
    if let Some(path) = std::env::var_os("TIDEMARK_REPO_TOKEN_FILE") {
        let bytes = read_password_file(Path::new(&path))?;
        let token = String::from_utf8(bytes).map_err(|_| "TIDEMARK_REPO_TOKEN_FILE is not UTF-8".to_string())?;
        return Ok(Some(token.trim().to_string()));
    }
    Ok(std::env::var("TIDEMARK_REPO_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// A password file's contents without one trailing newline.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read password file {}: {e}; check password_file", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}
