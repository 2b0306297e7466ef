use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::SignedDuration;
use tidemark_service_core::{LinkClaims, LinkError, LinkSigner, ServiceError};

use crate::ts;

const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn claims() -> LinkClaims {
    LinkClaims {
        snapshot: "3f2a9c".into(),
        path: "/srv/uploads/report.pdf".into(),
        expires: ts("2026-01-10T20:30:00Z"),
        single_use: true,
        nonce: *b"nonce-0123456789",
    }
}

/// `token` with the character at `index` replaced by another base64url character.
fn flip(token: &str, index: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_valid_link_gives_back_its_claims() {
    let signer = LinkSigner::new(SECRET);
    let token = signer.sign(&claims());
    assert_eq!(signer.verify(&token, ts("2026-01-10T19:30:00Z")), Ok(claims()));
    // Signing is deterministic: the nonce makes links unique, not the signer.
    assert_eq!(signer.sign(&claims()), token);
}

#[test]
fn expired_by_one_second() {
    let signer = LinkSigner::new(SECRET);
    let token = signer.sign(&claims());
    assert!(signer.verify(&token, ts("2026-01-10T20:29:59Z")).is_ok());
    let expired = LinkError::Expired { expired: ts("2026-01-10T20:30:00Z") };
    assert_eq!(signer.verify(&token, ts("2026-01-10T20:30:00Z")), Err(expired.clone()));
    assert_eq!(signer.verify(&token, ts("2026-01-10T20:30:01Z")), Err(expired));
}

#[test]
fn tampered_claims_are_refused() {
    let signer = LinkSigner::new(SECRET);
    let token = signer.sign(&claims());
    let (payload, signature) = token.split_once('.').unwrap();
    // Re-encode the claims for another path, keeping the signature.
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(json.contains("report.pdf"), "{json}");
    let forged = URL_SAFE_NO_PAD.encode(json.replace("report.pdf", "passwords.txt"));
    let now = ts("2026-01-10T19:30:00Z");
    assert_eq!(signer.verify(&format!("{forged}.{signature}"), now), Err(LinkError::Tampered));
    // A later expiry, too.
    let later = URL_SAFE_NO_PAD.encode(json.replace("2026-01-10T20:30:00Z", "2036-01-10T20:30:00Z"));
    assert_eq!(signer.verify(&format!("{later}.{signature}"), now), Err(LinkError::Tampered));
    // And one changed character anywhere in the claims.
    for index in [0, payload.len() / 2, payload.len() - 2] {
        assert_eq!(signer.verify(&flip(&token, index), now), Err(LinkError::Tampered), "{index}");
    }
}

#[test]
fn tampered_signature_is_refused() {
    let signer = LinkSigner::new(SECRET);
    let token = signer.sign(&claims());
    let dot = token.find('.').unwrap();
    let now = ts("2026-01-10T19:30:00Z");
    assert_eq!(signer.verify(&flip(&token, dot + 5), now), Err(LinkError::Tampered));
    // A truncated signature decodes but does not match.
    assert_eq!(signer.verify(&token[..token.len() - 3], now), Err(LinkError::Tampered));
    // A tampered token is refused as tampered even when it has expired too.
    assert_eq!(signer.verify(&flip(&token, dot + 5), ts("2030-01-01T00:00:00Z")), Err(LinkError::Tampered));
}

#[test]
fn another_secret_is_refused() {
    let token = LinkSigner::new(SECRET).sign(&claims());
    let other = LinkSigner::new(b"another secret, also 32 bytes!!!");
    assert_eq!(other.verify(&token, ts("2026-01-10T19:30:00Z")), Err(LinkError::Tampered));
}

#[test]
fn malformed_tokens_are_refused_as_such() {
    let signer = LinkSigner::new(SECRET);
    let now = ts("2026-01-10T19:30:00Z");
    let token = signer.sign(&claims());
    for bad in ["", "no-dot", "a.b.c", "abc.!!!", &"x".repeat(9000), &format!("{token}.x")] {
        assert!(matches!(signer.verify(bad, now), Err(LinkError::Malformed(_))), "{bad:.40}");
    }
    // An unsigned payload with a made-up signature is refused, not read.
    let payload = URL_SAFE_NO_PAD.encode(b"{\"v\":1}");
    assert_eq!(signer.verify(&format!("{payload}.AAAA"), now), Err(LinkError::Tampered));
}

#[test]
fn ttl_defaults_and_maximum() {
    let now = ts("2026-01-10T19:30:00Z");
    let signer = LinkSigner::new(SECRET);
    assert_eq!(signer.expiry(None, now).unwrap(), ts("2026-01-10T20:30:00Z"));
    assert_eq!(signer.expiry(Some("15m"), now).unwrap(), ts("2026-01-10T19:45:00Z"));
    assert_eq!(signer.expiry(Some("1h"), now).unwrap(), ts("2026-01-10T20:30:00Z"));
    match signer.expiry(Some("2h"), now) {
        Err(ServiceError::TtlTooLong { requested, max }) => {
            assert_eq!((requested, max), (SignedDuration::from_hours(2), SignedDuration::from_hours(1)));
        }
        other => panic!("{other:?}"),
    }
    let err = signer.expiry(Some("61m"), now).unwrap_err().to_string();
    assert_eq!(
        err,
        "link lifetime 1h1m is longer than the maximum 1h; ask for at most 1h or raise server.link_max_ttl"
    );
    assert!(matches!(signer.expiry(Some("0s"), now), Err(ServiceError::InvalidDuration { .. })));
    assert!(matches!(signer.expiry(Some("soon"), now), Err(ServiceError::InvalidDuration { .. })));

    let relaxed = signer.with_ttl(SignedDuration::from_mins(10), SignedDuration::from_hours(24));
    assert_eq!(relaxed.expiry(None, now).unwrap(), ts("2026-01-10T19:40:00Z"));
    assert_eq!(relaxed.expiry(Some("2h"), now).unwrap(), ts("2026-01-10T21:30:00Z"));
    assert!(relaxed.expiry(Some("25h"), now).is_err());
}

#[test]
fn the_nonce_comes_back_for_single_use_bookkeeping() {
    let signer = LinkSigner::new(SECRET);
    let mut first = claims();
    first.nonce = [1; 16];
    let mut second = claims();
    second.nonce = [2; 16];
    let (a, b) = (signer.sign(&first), signer.sign(&second));
    assert_ne!(a, b);
    let now = ts("2026-01-10T19:30:00Z");
    assert_eq!(signer.verify(&a, now).unwrap().nonce, [1; 16]);
    assert_eq!(signer.verify(&b, now).unwrap().nonce, [2; 16]);
    assert!(signer.verify(&b, now).unwrap().single_use);
}
