//! Time-limited signed links: a restored file, a dump or an export is handed out as a URL
//! carrying a token that names that one object, its expiry and a nonce, signed with
//! HMAC-SHA256 under the server's link secret.
//!
//! # Token format (version 1)
//!
//! `base64url(claims JSON) "." base64url(HMAC-SHA256(key, "tidemark-link-v1." + first part))`,
//! both parts without padding. The claims JSON is
//! `{"v":1,"snapshot":"…","path":"…","expires":"2026-01-10T20:30:00Z","single_use":true,"nonce":"<32 hex>"}`.
//! The version prefix in the MAC input keeps these signatures apart from anything else the
//! same key might ever sign.
//!
//! # Checking order
//!
//! [`LinkSigner::verify`] checks the shape, then the signature (in constant time), and only then
//! reads the claims and the expiry, so a forged token is [`LinkError::Tampered`] whatever it
//! claims. Single use is the caller's state: after a successful verify of a `single_use` link,
//! record its [`LinkClaims::nonce`] and refuse the nonce the next time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{ServiceError, format_duration, parse_duration};

/// The longest token [`LinkSigner::verify`] reads; longer ones are malformed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const MAC_CONTEXT: &[u8] = b"tidemark-link-v1.";
const VERSION: u8 = 1;

/// What a link grants: one path of one snapshot until an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    /// The snapshot id.
    pub snapshot: String,
    /// The path inside the snapshot (or the name of the dump or export).
    pub path: String,
    /// The link is valid strictly before this instant.
    pub expires: Timestamp,
    /// Whether the link may be used only once (the caller records [`LinkClaims::nonce`]).
    pub single_use: bool,
    /// 16 random bytes from the caller, unique per link.
    pub nonce: [u8; 16],
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Not a link token at all (wrong shape, bad encoding, too long).
    #[error("the link is malformed ({0}); copy the whole link or ask for a new one")]
    Malformed(&'static str),
    /// The signature does not match: the token was altered, or signed under another secret.
    #[error("the link's signature does not match: it was altered or signed with another key; ask for a new link")]
    Tampered,
    /// The link was valid until `expired`.
    #[error("the link expired at {expired}; ask for a new link")]
    Expired {
        /// When it stopped being valid.
        expired: Timestamp,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u8,
    snapshot: String,
    path: String,
    expires: Timestamp,
    single_use: bool,
    nonce: String,
}

/// Signs and verifies links under one secret, with the lifetime limits of the config.
#[derive(Clone)]
pub struct LinkSigner {
    mac: Hmac<Sha256>,
    default_ttl: SignedDuration,
    max_ttl: SignedDuration,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("default_ttl", &format_duration(self.default_ttl))
            .field("max_ttl", &format_duration(self.max_ttl))
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// A signer for `secret`, which should be at least 32 random bytes (the daemon reads it from
    /// `server.link_secret_file`). Lifetimes default to 1 hour, at most 1 hour.
    pub fn new(secret: &[u8]) -> LinkSigner {
        LinkSigner {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
            default_ttl: SignedDuration::from_hours(1),
            max_ttl: SignedDuration::from_hours(1),
        }
    }

    /// Set the lifetime given to links that ask for none, and the longest one allowed.
    pub fn with_ttl(mut self, default_ttl: SignedDuration, max_ttl: SignedDuration) -> LinkSigner {
        self.default_ttl = default_ttl;
        self.max_ttl = max_ttl;
        self
    }

    /// The lifetime of links that ask for none.
    pub fn default_ttl(&self) -> SignedDuration {
        self.default_ttl
    }

    /// The longest lifetime allowed.
    pub fn max_ttl(&self) -> SignedDuration {
        self.max_ttl
    }

    /// The expiry of a link asked for at `now` with the lifetime `requested` (the API's `"ttl"`,
    /// e.g. `"15m"`; `None` for the default). A lifetime above the maximum is refused with
    /// [`ServiceError::TtlTooLong`], never shortened silently.
    pub fn expiry(&self, requested: Option<&str>, now: Timestamp) -> Result<Timestamp, ServiceError> {
        let ttl = match requested {
            None => self.default_ttl,
            Some(text) => parse_duration(text)?,
        };
        if ttl <= SignedDuration::ZERO {
            return Err(ServiceError::InvalidDuration {
                text: format_duration(ttl),
                reason: "a link lifetime must be positive".to_string(),
            });
        }
        if ttl > self.max_ttl {
            return Err(ServiceError::TtlTooLong { requested: ttl, max: self.max_ttl });
        }
        now.checked_add(ttl).map_err(|_| ServiceError::InvalidDuration {
            text: format_duration(ttl),
            reason: "the expiry would be past the end of time".to_string(),
        })
    }

    /// Sign `claims` into a URL-safe token.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        let wire = Wire {
            v: VERSION,
            snapshot: claims.snapshot.clone(),
            path: claims.path.clone(),
            expires: claims.expires,
            single_use: claims.single_use,
            nonce: hex::encode(claims.nonce),
        };
        // Serializing plain strings, booleans and a timestamp cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = self.tag(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Check `token` at `now` and return what it grants.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<LinkClaims, LinkError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(LinkError::Malformed("too long"));
        }
        let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed("no signature part"))?;
        if signature.contains('.') {
            return Err(LinkError::Malformed("more than two parts"));
        }
        let signature =
            URL_SAFE_NO_PAD.decode(signature).map_err(|_| LinkError::Malformed("the signature is not base64url"))?;
        self.tag(payload).verify_slice(&signature).map_err(|_| LinkError::Tampered)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| LinkError::Malformed("the claims are not base64url"))?;
        let wire: Wire = serde_json::from_slice(&json).map_err(|_| LinkError::Malformed("the claims are not valid"))?;
        if wire.v != VERSION {
            return Err(LinkError::Malformed("unknown version"));
        }
        let mut nonce = [0u8; 16];
        hex::decode_to_slice(&wire.nonce, &mut nonce)
            .map_err(|_| LinkError::Malformed("the nonce is not 16 hex bytes"))?;
        if now >= wire.expires {
            return Err(LinkError::Expired { expired: wire.expires });
        }
        Ok(LinkClaims {
            snapshot: wire.snapshot,
            path: wire.path,
            expires: wire.expires,
            single_use: wire.single_use,
            nonce,
        })
    }

    fn tag(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(payload.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_secret() {
        let shown = format!("{:?}", LinkSigner::new(b"very-secret-key"));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("1h"), "{shown}");
    }

    #[test]
    fn the_token_is_url_safe() {
        let claims = LinkClaims {
            snapshot: "ab/cd?+&=".into(),
            path: "/srv/uploads/ä ö.txt".into(),
            expires: Timestamp::from_second(2_000_000_000).unwrap(),
            single_use: false,
            nonce: [0xfb; 16],
        };
        let token = LinkSigner::new(&[7; 32]).sign(&claims);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{token}");
    }
}
