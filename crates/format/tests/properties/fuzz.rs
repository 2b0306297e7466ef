//! Decoders never panic on arbitrary or damaged bytes.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn open_never_panics(key in any::<[u8; 32]>(), ty in arb_type(), id in arb_id(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        prop_assert!(aead::open(&key, ty, &id, &bytes).is_err());
        let master = MasterKey::from_bytes([key, key].concat().try_into().unwrap());
        prop_assert!(object::decode(&master, ty, &id, &bytes).is_err());
        prop_assert!(object::decode_json::<Snapshot>(&master, ty, &id, &bytes).is_err());
    }

    #[test]
    fn decompress_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), hint in 0usize..100_000) {
        let _ = decompress(&bytes, hint);
        let mut framed = vec![1u8];
        framed.extend_from_slice(&bytes);
        let _ = decompress(&framed, hint);
    }

    #[test]
    fn decompress_of_damaged_frames_never_panics(data in prop::collection::vec(0u8..2, 1000..5000),
                                                 edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                                 cut in any::<prop::sample::Index>()) {
        let mut framed = Vec::new();
        prop_assume!(compress_into(&data, 3, &mut framed) == Compression::Zstd);
        let mut damaged = framed.clone();
        for (at, byte) in edits {
            let i = 1 + at.index(damaged.len() - 1);
            damaged[i] = byte;
        }
        let _ = decompress(&damaged, 0);
        let _ = decompress(&framed[..1 + cut.index(framed.len() - 1)], data.len());
    }

    #[test]
    fn read_header_never_panics(seed in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..400),
                                extra in 0u64..1000, header_len in any::<u32>(), version in prop_oneof![Just(1u8), any::<u8>()],
                                with_trailer in any::<bool>()) {
        let key = master(seed);
        let mut tail = bytes;
        if with_trailer {
            tail.extend_from_slice(&header_len.to_le_bytes());
            tail.extend_from_slice(b"TMPK");
            tail.push(version);
        }
        let pack_len = tail.len() as u64 + extra;
        let _ = read_header(&key, &tail, pack_len);
        let _ = read_header(&key, &tail, tail.len() as u64);
        let _ = read_header(&key, &tail, 0);
    }

    #[test]
    fn unwrap_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), id in arb_id()) {
        let user = derive_from_keyfile(&[7u8; 32]).unwrap();
        prop_assert!(matches!(unwrap_master_key(&user, &id, &bytes), Err(FormatError::WrongKey)));
    }
}
