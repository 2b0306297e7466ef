use rand::SeedableRng;
use rand::rngs::StdRng;
use tidemark_service_core::auth::{TOKEN_PREFIX, hash_token};
use tidemark_service_core::{Role, TokenStore, generate_token};

use crate::ts;

#[test]
fn roles_are_ordered() {
    assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    let matrix = [
        (Role::Viewer, [true, false, false]),
        (Role::Operator, [true, true, false]),
        (Role::Admin, [true, true, true]),
    ];
    for (role, allowed) in matrix {
        for (required, expected) in [Role::Viewer, Role::Operator, Role::Admin].into_iter().zip(allowed) {
            assert_eq!(role.allows(required), expected, "{role} for {required}");
        }
    }
}

#[test]
fn a_token_is_shown_once_and_kept_as_a_hash() {
    let mut rng = StdRng::seed_from_u64(7);
    let created = ts("2026-01-10T12:00:00Z");
    let (token, record) = generate_token(&mut rng, "ci", Role::Operator, created);
    assert!(token.starts_with(TOKEN_PREFIX), "{token}");
    assert_eq!(token.len(), TOKEN_PREFIX.len() + 43, "32 bytes in unpadded base64url");
    assert_eq!((record.name.as_str(), record.role, record.created), ("ci", Role::Operator, created));
    assert_eq!(record.hash, hash_token(&token));
    assert!(!record.hash.contains(&token[TOKEN_PREFIX.len()..]));
    // The record is what gets stored: it serializes without the token.
    let stored = serde_json::to_string(&record).unwrap();
    assert!(!stored.contains(&token), "{stored}");
    assert!(stored.contains("\"role\":\"operator\""), "{stored}");
    // Another draw gives another token.
    let (again, _) = generate_token(&mut rng, "ci", Role::Operator, created);
    assert_ne!(again, token);
}

#[test]
fn the_store_finds_the_matching_record_only() {
    let mut rng = StdRng::seed_from_u64(1);
    let now = ts("2026-01-10T12:00:00Z");
    let (viewer, viewer_record) = generate_token(&mut rng, "grafana", Role::Viewer, now);
    let (admin, admin_record) = generate_token(&mut rng, "alice", Role::Admin, now);
    let store = TokenStore::new(vec![viewer_record.clone(), admin_record.clone()]);
    assert_eq!(store.verify(&viewer), Some(&viewer_record));
    assert_eq!(store.verify(&admin), Some(&admin_record));
    // Surrounding whitespace from a header is tolerated.
    assert_eq!(store.verify(&format!(" {admin} ")), Some(&admin_record));
    for wrong in ["", "tdm_", &admin[..admin.len() - 1], &format!("{admin}x"), &admin_record.hash] {
        assert_eq!(store.verify(wrong), None, "{wrong:?}");
    }
}

#[test]
fn creating_under_an_existing_name_rotates_the_token() {
    let mut rng = StdRng::seed_from_u64(2);
    let now = ts("2026-01-10T12:00:00Z");
    let (old, old_record) = generate_token(&mut rng, "ci", Role::Operator, now);
    let (new, new_record) = generate_token(&mut rng, "ci", Role::Viewer, now);
    let mut store = TokenStore::default();
    assert_eq!(store.insert(old_record.clone()), None);
    assert_eq!(store.insert(new_record.clone()), Some(old_record));
    assert_eq!(store.records().len(), 1);
    assert_eq!(store.verify(&old), None);
    assert_eq!(store.verify(&new).map(|r| r.role), Some(Role::Viewer));
    assert_eq!(store.remove("ci"), Some(new_record));
    assert_eq!(store.verify(&new), None);
    assert_eq!(store.remove("ci"), None);
}

#[test]
fn a_corrupt_record_matches_nothing() {
    let mut rng = StdRng::seed_from_u64(3);
    let (token, mut record) = generate_token(&mut rng, "ci", Role::Admin, ts("2026-01-10T12:00:00Z"));
    record.hash.truncate(10);
    assert_eq!(TokenStore::new(vec![record]).verify(&token), None);
}
