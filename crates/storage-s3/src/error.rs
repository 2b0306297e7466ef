//! OpenDAL errors as storage errors.

use opendal::ErrorKind as Dal;
use tidemark_storage::{ErrorKind, StorageError};

/// Classify an OpenDAL error.
///
/// Conditional-write refusals (`ConditionNotMatch`, HTTP 412 to `If-None-Match: *`) mean the key
/// exists. Whatever OpenDAL marks temporary (connection refused or reset, timeouts, 5xx,
/// throttling) is transient, so that [`RetryStorage`](tidemark_storage::RetryStorage) retries it
/// and reports [`ErrorKind::Unreachable`] when it persists.
pub(crate) fn kind_of(err: &opendal::Error) -> ErrorKind {
    match err.kind() {
        Dal::NotFound => ErrorKind::NotFound,
        Dal::AlreadyExists | Dal::ConditionNotMatch => ErrorKind::AlreadyExists,
        Dal::PermissionDenied => ErrorKind::PermissionDenied,
        // OpenDAL reports missing or unloadable credentials as a plain error at signing time.
        _ if missing_credentials(err) => ErrorKind::PermissionDenied,
        Dal::RateLimited => ErrorKind::Transient,
        _ if err.is_temporary() => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// Whether signing failed for lack of credentials (OpenDAL reports that as a plain signing error
/// whose cause says "failed to load signing credential").
fn missing_credentials(err: &opendal::Error) -> bool {
    let mut text = err.message().to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.contains("signing credential")
}

/// A storage error for a failed `action` (`"read"`, `"write"`, ...) on `key` at `location`.
pub(crate) fn from_opendal(err: opendal::Error, action: &str, key: &str, location: &str) -> StorageError {
    let kind = kind_of(&err);
    let hint = match (kind, err.kind()) {
        (ErrorKind::PermissionDenied, _) => {
            "; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket policy"
        }
        (_, Dal::ConfigInvalid) => "; check that the bucket exists and the endpoint and region are right",
        _ => "",
    };
    let message = format!("S3 {action} at {location} failed: {}{hint}", describe(&err));
    let error = StorageError::new(kind, message).with_source(err);
    if key.is_empty() { error } else { error.with_key(key) }
}

/// The essentials of an OpenDAL error in one line: the S3 error code and message when the server
/// sent one, else OpenDAL's message and the chain of causes (`connection refused` and the like).
/// The full error, with request and response details, stays available as the source.
fn describe(err: &opendal::Error) -> String {
    let message = err.message();
    if message.starts_with("S3Error {") {
        let field = |name: &str| {
            let start = message.find(&format!("{name}: \""))? + name.len() + 3;
            let len = message[start..].find('"')?;
            Some(&message[start..start + len]).filter(|v| !v.is_empty())
        };
        match (field("code"), field("message")) {
            (Some(code), Some(text)) => return format!("{code}: {text}"),
            (Some(code), None) => return code.to_owned(),
            _ => {}
        }
    }
    let mut text = if message.is_empty() { err.kind().to_string() } else { message.to_owned() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    // A server that answers with an HTML page instead of S3 XML should not flood the message.
    if let Some((cut, _)) = text.char_indices().nth(400) {
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map() {
        let kind = |k| kind_of(&opendal::Error::new(k, "x"));
        assert_eq!(kind(Dal::NotFound), ErrorKind::NotFound);
        assert_eq!(kind(Dal::ConditionNotMatch), ErrorKind::AlreadyExists);
        assert_eq!(kind(Dal::AlreadyExists), ErrorKind::AlreadyExists);
        assert_eq!(kind(Dal::PermissionDenied), ErrorKind::PermissionDenied);
        assert_eq!(kind(Dal::RateLimited), ErrorKind::Transient);
        assert_eq!(kind(Dal::Unexpected), ErrorKind::Permanent);
        assert_eq!(kind(Dal::ConfigInvalid), ErrorKind::Permanent);
        let unsigned = opendal::Error::new(Dal::Unexpected, "failed to load signing credential");
        assert_eq!(kind_of(&unsigned), ErrorKind::PermissionDenied);
        let temporary = opendal::Error::new(Dal::Unexpected, "send http request").set_temporary();
        assert_eq!(kind_of(&temporary), ErrorKind::Transient);
    }

    #[test]
    fn messages_name_action_key_location_and_hint() {
        let err =
            from_opendal(opendal::Error::new(Dal::PermissionDenied, "AccessDenied"), "write", "data/1", "s3://b/p");
        let text = err.to_string();
        assert!(text.starts_with("S3 write at s3://b/p failed: AccessDenied;"), "{text}");
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        assert_eq!(err.key(), Some("data/1"));
    }

    #[test]
    fn descriptions_are_one_line_essentials() {
        let s3 = opendal::Error::new(
            Dal::NotFound,
            r#"S3Error { code: "NoSuchKey", message: "The specified key does not exist.", resource: "", request_id: "r" }"#,
        );
        assert_eq!(describe(&s3), "NoSuchKey: The specified key does not exist.");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let transport = opendal::Error::new(Dal::Unexpected, "send http request").set_source(io);
        assert_eq!(describe(&transport), "send http request: connection refused");
    }
}
