//! From flags to an open repository: URL -> storage backend, password sources -> credential,
//! `init`, and the hidden test knobs (fast KDF, lock timing).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tidemark_format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, LockOptions, Repository};
use tidemark_storage::{LocalStorage, RetryStorage, Storage};
use tidemark_storage_http::HttpStorage;
use tidemark_storage_s3::{S3Config, S3Storage};

use crate::args::{Global, InitArgs};
use crate::exit::UserError;
use crate::output::Out;

const NO_PASSWORD: &str = "no password given: use --password-file, TIDEMARK_PASSWORD_FILE or TIDEMARK_PASSWORD";

/// Which repository of a command a URL names. Each may need its own S3 credentials: the main
/// repository signs with AWS_*; a copy's target with TIDEMARK_TO_ACCESS_KEY_ID,
/// TIDEMARK_TO_SECRET_ACCESS_KEY and TIDEMARK_TO_SESSION_TOKEN, and `init --from-repo` with
/// TIDEMARK_FROM_*, when those are set (else AWS_* too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `-r/--repo`.
    Main,
    /// `copy --to-repo`.
    To,
    /// `init --from-repo`.
    From,
}

impl Role {
    fn env_prefix(self) -> Option<&'static str> {
        match self {
            Role::Main => None,
            Role::To => Some("TIDEMARK_TO_"),
            Role::From => Some("TIDEMARK_FROM_"),
        }
    }
}

/// The S3 configuration of `url` for `role`: AWS_* from the environment, with the role's own
/// access key, secret and session token in their place when its variables are set.
fn s3_config(url: &str, role: Role) -> Result<S3Config> {
    let mut config = s3_config_from_env(url, role)?;
    if config.object_lock.is_some() {
        config.retention_cache = retention_cache(&config);
    }
    Ok(config)
}

/// Where an Object Lock repository's known retention dates are kept between runs:
/// `TIDEMARK_CACHE_DIR`, else `$XDG_CACHE_HOME/tidemark`, else `~/.cache/tidemark`, one file per
/// bucket, prefix and endpoint.
fn retention_cache(config: &S3Config) -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let dir = var("TIDEMARK_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("tidemark")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("tidemark")))?;
    let place = format!("{}-{}-{}", config.endpoint.as_deref().unwrap_or("aws"), config.bucket, config.prefix);
    let name: String = place.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    Some(dir.join("retention").join(format!("{name}.txt")))
}

fn s3_config_from_env(url: &str, role: Role) -> Result<S3Config> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(prefix) = role.env_prefix() else { return Ok(S3Config::from_url(url)?) };
    let (id_var, secret_var) = (format!("{prefix}ACCESS_KEY_ID"), format!("{prefix}SECRET_ACCESS_KEY"));
    let own = match (env(&id_var), env(&secret_var)) {
        (Some(id), Some(secret)) => Some((id, secret, env(&format!("{prefix}SESSION_TOKEN")))),
        (None, None) => None,
        _ => {
            return Err(UserError::new(
                format!("only one of {id_var} and {secret_var} is set"),
                "set both (or neither, to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            )
            .into());
        }
    };
    Ok(S3Config::from_url_with_env(url, |name| match (&own, name) {
        (Some((id, _, _)), "AWS_ACCESS_KEY_ID") => Some(id.clone()),
        (Some((_, secret, _)), "AWS_SECRET_ACCESS_KEY") => Some(secret.clone()),
        (Some((_, _, token)), "AWS_SESSION_TOKEN") => token.clone(),
        _ => env(name),
    })?)
}

/// The storage backend for a repository URL, wrapped in retries.
pub fn storage_for(url: &str) -> Result<Arc<dyn Storage>> {
    storage_for_role(url, Role::Main)
}

/// [`storage_for`] for one of the command's repositories (its own S3 credentials).
pub fn storage_for_role(url: &str, role: Role) -> Result<Arc<dyn Storage>> {
    if url.trim().is_empty() {
        return Err(
            UserError::new("the repository location is empty", "pass -r/--repo or set TIDEMARK_REPOSITORY").into()
        );
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(UserError::new(
                format!("invalid repository URL {url:?}: a file URL needs an absolute path"),
                "write file:///absolute/path, or give a plain path",
            )
            .into());
        }
        return Ok(Arc::new(RetryStorage::new(LocalStorage::new(path))));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let http = HttpStorage::new(url, repo_token()?).with_context(|| format!("repository {url}"))?;
        return Ok(Arc::new(RetryStorage::new(http)));
    }
    if url.starts_with("s3://") {
        let s3 = S3Storage::new(s3_config(url, role)?).with_context(|| format!("repository {url}"))?;
        return Ok(Arc::new(RetryStorage::new(s3)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(UserError::new(
            format!("unsupported repository URL scheme {scheme:?} in {url:?}"),
            "use a path, file:///path, s3://bucket/prefix?endpoint=URL&region=R&path_style=true or http://host:port/",
        )
        .into());
    }
    let path = std::path::absolute(url).with_context(|| format!("repository path {url:?}"))?;
    Ok(Arc::new(RetryStorage::new(LocalStorage::new(path))))
}

/// The bearer token for http(s):// repositories: the contents of TIDEMARK_REPO_TOKEN_FILE (one
/// trailing newline stripped), else TIDEMARK_REPO_TOKEN, else none.
fn repo_token() -> Result<Option<String>> {
    if let Some(path) = std::env::var_os("TIDEMARK_REPO_TOKEN_FILE") {
        let bytes = read_password_file(Path::new(&path))?;
        let token = String::from_utf8(bytes).map_err(|_| UserError::plain("TIDEMARK_REPO_TOKEN_FILE is not UTF-8"))?;
        return Ok(Some(token.trim().to_string()));
    }
    Ok(std::env::var("TIDEMARK_REPO_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// The repository URL, or the error telling how to give one.
pub fn repo_url(global: &Global) -> Result<&str> {
    global
        .repo
        .as_deref()
        .ok_or_else(|| UserError::new("no repository given", "use -r/--repo or set TIDEMARK_REPOSITORY").into())
}

/// A password file's contents without one trailing newline (`\n` or `\r\n`).
pub fn read_password_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).with_context(|| format!("reading password file {}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))
}

fn prompt(question: &str, twice: bool) -> Result<Vec<u8>> {
    let first = rpassword::prompt_password(question).context("reading the password from the terminal")?;
    if twice {
        let again = rpassword::prompt_password("enter the password again: ")
            .context("reading the password from the terminal")?;
        if again != first {
            return Err(UserError::plain("the passwords do not match").into());
        }
    }
    Ok(first.into_bytes())
}

/// The credential that opens the repository: `--key-file`, else `--password-file`, else
/// TIDEMARK_PASSWORD, else a prompt on a terminal. `new` asks twice and refuses empty passwords.
pub fn credential(global: &Global, new: bool) -> Result<Credential> {
    if let Some(path) = &global.key_file {
        return Ok(Credential::KeyFile(read_key_file(path)?));
    }
    let password = if let Some(path) = &global.password_file {
        read_password_file(path)?
    } else if let Some(pw) = std::env::var_os("TIDEMARK_PASSWORD") {
        pw.into_encoded_bytes()
    } else if std::io::stdin().is_terminal() {
        let question =
            if new { "enter a password for the new repository: " } else { "enter the repository password: " };
        prompt(question, new)?
    } else {
        return Err(UserError::plain(NO_PASSWORD).into());
    };
    if new && password.is_empty() {
        return Err(UserError::new("refusing an empty password", "put a password in the password file").into());
    }
    Ok(Credential::Password(password))
}

/// The new credential of `key add` / `key passwd`.
pub fn new_credential(password_file: Option<&Path>, key_file: Option<&Path>) -> Result<Credential> {
    if let Some(path) = key_file {
        return Ok(Credential::KeyFile(read_key_file(path)?));
    }
    let password = match password_file {
        Some(path) => read_password_file(path)?,
        None if std::io::stdin().is_terminal() => prompt("enter the new password: ", true)?,
        None => {
            return Err(UserError::plain("no new password given: use --new-password-file or --new-key-file").into());
        }
    };
    if password.is_empty() {
        return Err(UserError::plain("refusing an empty password").into());
    }
    Ok(Credential::Password(password))
}

/// KDF cost for new keys: the default, or a cheap one when TIDEMARK_TEST_FAST_KDF=1 (tests only).
pub fn kdf_params() -> KdfParams {
    if std::env::var("TIDEMARK_TEST_FAST_KDF").is_ok_and(|v| v == "1") {
        KdfParams { m_kib: 1024, t: 1, p: 1 }
    } else {
        KdfParams::DEFAULT
    }
}

fn env_secs(name: &str) -> Result<Option<Duration>> {
    match std::env::var(name) {
        Ok(v) => {
            let secs: u64 =
                v.trim().parse().map_err(|_| UserError::plain(format!("{name}={v:?} is not a number of seconds")))?;
            Ok(Some(Duration::from_secs(secs)))
        }
        Err(_) => Ok(None),
    }
}

/// Lock timing from TIDEMARK_LOCK_LIFETIME_SECS / TIDEMARK_LOCK_REFRESH_SECS (tests), else default.
fn lock_options() -> Result<Option<LockOptions>> {
    let lifetime = env_secs("TIDEMARK_LOCK_LIFETIME_SECS")?;
    let refresh = env_secs("TIDEMARK_LOCK_REFRESH_SECS")?;
    if lifetime.is_none() && refresh.is_none() {
        return Ok(None);
    }
    let default = LockOptions::default();
    let lifetime = lifetime.unwrap_or(default.lifetime);
    let refresh = refresh.unwrap_or_else(|| default.refresh.min(lifetime / 3).max(Duration::from_secs(1)));
    Ok(Some(LockOptions { lifetime, refresh }))
}

/// Open the repository the flags name.
pub fn open(global: &Global) -> Result<Repository> {
    let url = repo_url(global)?;
    let storage = storage_for(url)?;
    // Tell a missing or newer repository before asking for a password.
    Repository::marker(storage.as_ref())?;
    let cred = credential(global, false)?;
    let repo = Repository::open(storage, &cred)?;
    Ok(match lock_options()? {
        Some(opts) => repo.with_lock_options(opts),
        None => repo,
    })
}

/// Open a second repository (copy target, init's --from-repo): its own password or key file, else
/// the same credential as the main repository.
pub fn open_other(
    global: &Global,
    url: &str,
    role: Role,
    password_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Repository> {
    let storage = storage_for_role(url, role)?;
    Repository::marker(storage.as_ref()).with_context(|| format!("repository {url}"))?;
    let cred = match (key_file, password_file) {
        (Some(k), _) => Credential::KeyFile(read_key_file(k)?),
        (None, Some(p)) => Credential::Password(read_password_file(p)?),
        (None, None) => credential(global, false)?,
    };
    let repo = Repository::open(storage, &cred).with_context(|| format!("repository {url}"))?;
    Ok(match lock_options()? {
        Some(opts) => repo.with_lock_options(opts),
        None => repo,
    })
}

/// `tidemark init`.
pub fn init(global: &Global, args: &InitArgs, out: &Out) -> Result<Repository> {
    let url = repo_url(global)?;
    let storage = storage_for(url)?;
    let cred = credential(global, true)?;
    let shared_ids = match &args.from_repo {
        Some(from) if args.copy_chunker_params => Some(
            open_other(global, from, Role::From, args.from_password_file.as_deref(), args.from_key_file.as_deref())?
                .shared_ids(),
        ),
        _ => None,
    };
    let opts = InitOptions {
        kdf: kdf_params(),
        pack_size: args.pack_size_mib * 1024 * 1024,
        compression_level: args.compression_level,
        shared_ids,
    };
    let repo = Repository::init(storage, &cred, &opts)?;
    let id = repo.config().id;
    if out.json {
        out.json_value(&serde_json::json!({
            "message_type": "initialized",
            "id": id,
            "repository": repo.storage().location(),
            "format_version": repo.config().version,
        }))?;
    } else {
        out.line(format!("created tidemark repository {} at {}", id.short(), repo.storage().location()))?;
        out.line("Please note that knowledge of your password is required to access the repository.")?;
        out.line("Losing your password means that your data is irrecoverably lost.")?;
    }
    Ok(repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_is_a_clear_error() {
        let err = storage_for("ftp://host/x").unwrap_err();
        assert!(err.to_string().contains("unsupported repository URL scheme \"ftp\""), "{err}");
        assert!(storage_for("file://relative").is_err());
        assert!(storage_for("").is_err());
    }

    #[test]
    fn paths_and_file_urls_are_local() {
        let s = storage_for("file:///tmp/x").unwrap();
        assert!(s.location().contains("/tmp/x"), "{}", s.location());
        let s = storage_for("relative/repo").unwrap();
        assert!(s.location().contains("relative/repo"), "{}", s.location());
    }

    #[test]
    fn password_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\n\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), b"secret\n");
        std::fs::write(&p, "secret\r\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), b"secret");
        std::fs::write(&p, "secret").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), b"secret");
    }
}
