//! What client and server agree on: paths, headers, the checksum, the listing body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The checksum header of a `PUT` (RFC 9530): `Content-Digest: sha-256=:<base64>:`.
pub const CONTENT_DIGEST: &str = "Content-Digest";

/// The `Content-Digest` value of `data`.
pub fn content_digest(data: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(data)))
}

/// One entry of a `GET /?list=PREFIX` answer, a JSON array of these.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ListEntry {
    /// The full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Percent-encode a key or prefix for a URL path or query: everything but unreserved characters
/// and (when `keep_slash`) `/`.
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode `%XX` escapes (and nothing else: `+` stays `+`); `None` for a malformed escape or
/// invalid UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `key` is a lock object, the one kind an append-only server lets clients replace and
/// delete.
pub fn is_lock(key: &str) -> bool {
    key.starts_with("locks/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_keeps_slashes_in_paths() {
        for s in ["data/ab/ab12", "a b/c%d", "snapshots/é", "?&=#+"] {
            assert_eq!(decode(&encode(s, true)).as_deref(), Some(s));
            assert_eq!(decode(&encode(s, false)).as_deref(), Some(s));
        }
        assert_eq!(encode("data/a b", true), "data/a%20b");
        assert_eq!(encode("data/", false), "data%2F");
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
    }

    #[test]
    fn digest_is_rfc_9530_sha_256() {
        // sha-256 of the empty string.
        assert_eq!(content_digest(b""), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    }
}
