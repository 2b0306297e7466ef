//! Sealing, tamper detection, key derivation and wrapping.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 24]>(), ty in arb_type(), id in arb_id(),
                            plaintext in prop::collection::vec(any::<u8>(), 0..2000)) {
        let sealed = aead::seal(&key, &nonce, ty, &id, &plaintext);
        prop_assert_eq!(sealed.len(), plaintext.len() + aead::OVERHEAD);
        prop_assert_eq!(&sealed[..24], &nonce[..]);
        prop_assert_eq!(aead::open(&key, ty, &id, &sealed).unwrap(), plaintext);
    }

    #[test]
    fn any_bit_flip_fails(key in any::<[u8; 32]>(), nonce in any::<[u8; 24]>(), ty in arb_type(), id in arb_id(),
                          plaintext in prop::collection::vec(any::<u8>(), 0..300), bit in any::<prop::sample::Index>()) {
        let mut sealed = aead::seal(&key, &nonce, ty, &id, &plaintext);
        let bit = bit.index(sealed.len() * 8);
        sealed[bit / 8] ^= 1 << (bit % 8);
        let is_auth_error = matches!(aead::open(&key, ty, &id, &sealed), Err(FormatError::Authentication { ty: t, id: i }) if t == ty && i == id);
        prop_assert!(is_auth_error);
    }

    #[test]
    fn wrong_type_id_key_or_length_fails(key in any::<[u8; 32]>(), nonce in any::<[u8; 24]>(), ty in arb_type(),
                                         other_ty in arb_type(), id in arb_id(), other_id in arb_id(),
                                         other_key in any::<[u8; 32]>(), plaintext in prop::collection::vec(any::<u8>(), 0..300),
                                         cut in any::<prop::sample::Index>()) {
        let sealed = aead::seal(&key, &nonce, ty, &id, &plaintext);
        if other_ty != ty {
            prop_assert!(aead::open(&key, other_ty, &id, &sealed).is_err());
        }
        if other_id != id {
            prop_assert!(aead::open(&key, ty, &other_id, &sealed).is_err());
        }
        if other_key != key {
            prop_assert!(aead::open(&other_key, ty, &id, &sealed).is_err());
        }
        let truncated = &sealed[..cut.index(sealed.len())];
        prop_assert!(aead::open(&key, ty, &id, truncated).is_err());
        let mut extended = sealed.clone();
        extended.push(0);
        prop_assert!(aead::open(&key, ty, &id, &extended).is_err());
    }
}

#[test]
fn kdf_limits() {
    let salt = [9u8; 16];
    let too_large =
        |p: KdfParams| matches!(derive_from_password(b"pw", &salt, &p), Err(FormatError::KdfParamsTooLarge(_)));
    assert!(too_large(KdfParams { m_kib: KdfParams::MAX.m_kib + 1, t: 1, p: 1 }));
    assert!(too_large(KdfParams { m_kib: 1024, t: KdfParams::MAX.t + 1, p: 1 }));
    assert!(too_large(KdfParams { m_kib: 1024, t: 1, p: KdfParams::MAX.p + 1 }));
    assert!(too_large(KdfParams { m_kib: u32::MAX, t: u32::MAX, p: u32::MAX }));
    let corrupt =
        |salt: &[u8], p: KdfParams| matches!(derive_from_password(b"pw", salt, &p), Err(FormatError::Corrupt { .. }));
    assert!(corrupt(&salt[..15], KdfParams { m_kib: 1024, t: 1, p: 1 }));
    assert!(corrupt(&salt, KdfParams { m_kib: 7, t: 1, p: 1 }));
    assert!(corrupt(&salt, KdfParams { m_kib: 64, t: 1, p: 16 }));
    assert!(corrupt(&salt, KdfParams { m_kib: 1024, t: 0, p: 1 }));
    assert!(corrupt(&salt, KdfParams { m_kib: 1024, t: 1, p: 0 }));
    assert!(derive_from_password(b"pw", &salt, &KdfParams { m_kib: 8, t: 1, p: 1 }).is_ok());
}

#[test]
fn key_wrapping() {
    let key = master(1);
    let id = Id::from_bytes([3; 32]);
    let salt = [1u8; 16];
    let params = KdfParams { m_kib: 256, t: 1, p: 1 };
    let user = derive_from_password(b"secret", &salt, &params).unwrap();
    let wrapped = wrap_master_key(&user, &key, &id, &[5; 24]);
    assert_eq!(wrapped.len(), 24 + 64 + 16);
    assert_eq!(unwrap_master_key(&user, &id, &wrapped).unwrap(), key);
    let wrong = derive_from_password(b"Secret", &salt, &params).unwrap();
    assert!(matches!(unwrap_master_key(&wrong, &id, &wrapped), Err(FormatError::WrongKey)));
    assert!(matches!(unwrap_master_key(&user, &Id::default(), &wrapped), Err(FormatError::WrongKey)));
    // Authentic but not 64 bytes: corrupt, not a wrong key.
    let file_user = derive_from_keyfile(&[1u8; 40]).unwrap();
    let short = aead::seal(
        &blake3::derive_key("tidemark 2026 key file v1", &[1u8; 40]),
        &[0; 24],
        ObjectType::Key,
        &id,
        &[0; 32],
    );
    assert!(matches!(unwrap_master_key(&file_user, &id, &short), Err(FormatError::Corrupt { .. })));
    let err = derive_from_keyfile(&[0u8; 31]).unwrap_err();
    assert!(matches!(err, FormatError::KeyFileTooShort { len: 31 }));
    assert!(err.to_string().contains("at least 32"));
}
