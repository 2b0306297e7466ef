//! `tidemark key list|add|remove|passwd`: the user keys that wrap the repository's master key.
//!
//! Every key opens the same repository; removing a key does not re-encrypt anything (the master key
//! stays), so someone who copied an old key file and knows its password can still open a copy of
//! the repository made while that key existed.

use anyhow::Result;
use tidemark_repo::{KeyInfo, Repository};

use crate::args::{Global, KeyCommand, NewKeyArgs};
use crate::exit::Status;
use crate::open;
use crate::output::{Out, local_time, table};

/// Run `key ...`.
pub fn run(global: &Global, command: &KeyCommand, out: &Out) -> Result<Status> {
    let repo = open::open(global)?;
    match command {
        KeyCommand::List => list(&repo, out),
        KeyCommand::Add(args) => add(&repo, args, out),
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(id)?;
            if out.json {
                out.json_value(&serde_json::json!({ "removed": removed }))?;
            } else {
                out.line(format!("removed key {}", removed.short()))?;
            }
            Ok(Status::Ok)
        }
        KeyCommand::Passwd(args) => passwd(&repo, args, out),
    }
}

fn key_table(keys: &[KeyInfo]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                format!("{}{}", if k.current { "*" } else { " " }, k.id.short()),
                k.username.clone(),
                k.host.clone(),
                local_time(k.created),
                k.kind.clone(),
            ]
        })
        .collect();
    table(&[" ID", "User", "Host", "Created", "Kind"], &rows)
}

fn list(repo: &Repository, out: &Out) -> Result<Status> {
    let keys = repo.list_keys()?;
    if out.json {
        out.json_value(&keys)?;
    } else {
        out.line(key_table(&keys))?;
        out.info("(* = the key in use)")?;
    }
    Ok(Status::Ok)
}

fn add(repo: &Repository, args: &NewKeyArgs, out: &Out) -> Result<Status> {
    let cred = open::new_credential(args.new_password_file.as_deref(), args.new_key_file.as_deref())?;
    let id = repo.add_key(&cred, open::kdf_params())?;
    if out.json {
        out.json_value(&serde_json::json!({ "added": id }))?;
    } else {
        out.line(format!("added key {}", id.short()))?;
    }
    Ok(Status::Ok)
}

fn passwd(repo: &Repository, args: &NewKeyArgs, out: &Out) -> Result<Status> {
    let cred = open::new_credential(args.new_password_file.as_deref(), args.new_key_file.as_deref())?;
    let old = repo.key_id();
    let id = repo.change_key(&cred, open::kdf_params())?;
    if out.json {
        out.json_value(&serde_json::json!({ "added": id, "removed": old }))?;
    } else {
        out.line(format!(
            "replaced key {} by {}: the old password no longer opens the repository",
            old.short(),
            id.short()
        ))?;
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_format::Id;

    #[test]
    fn table_marks_the_current_key() {
        let key = |n: u8, current: bool| KeyInfo {
            id: Id::from_bytes([n; 32]),
            current,
            username: "u".into(),
            host: "h".into(),
            created: jiff::Timestamp::UNIX_EPOCH,
            kind: "argon2id".into(),
        };
        let text = key_table(&[key(1, true), key(2, false)]);
        assert!(text.contains("*01010101"), "{text}");
        assert!(text.contains(" 02020202"), "{text}");
    }
}
