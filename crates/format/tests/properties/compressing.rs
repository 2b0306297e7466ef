//! Compression framing and whole-object encoding.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn compress_round_trip(data in prop_oneof![
                               prop::collection::vec(any::<u8>(), 0..3000),
                               prop::collection::vec(0u8..4, 0..3000),
                               (any::<u64>(), 0usize..200_000).prop_map(|(s, n)| xof(&s.to_le_bytes(), n)),
                               (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
                           ],
                           level in prop_oneof![Just(0), Just(1), Just(3), Just(-1), 1i32..10]) {
        let mut out = vec![0xEE; 3];
        let mode = compress_into(&data, level, &mut out);
        prop_assert_eq!(&out[..3], &[0xEE; 3][..]);
        prop_assert_eq!(out[3], mode as u8);
        if level == 0 {
            prop_assert_eq!(mode, Compression::None);
        }
        if mode == Compression::Zstd {
            prop_assert!(out.len() - 4 + data.len() / 32 <= data.len());
        } else {
            prop_assert_eq!(&out[4..], &data[..]);
        }
        prop_assert_eq!(decompress(&out[3..], 0).unwrap(), data.clone());
        prop_assert_eq!(decompress(&out[3..], data.len()).unwrap(), data);
    }

    #[test]
    fn object_round_trip(seed in any::<u8>(), ty in arb_type(), nonce in any::<[u8; 24]>(),
                         data in prop_oneof![prop::collection::vec(any::<u8>(), 0..3000), prop::collection::vec(0u8..3, 0..3000)],
                         level in 0i32..5) {
        let key = master(seed);
        let id = key.chunk_id(&data);
        let sealed = object::encode(&key, ty, &id, &data, &nonce, level);
        prop_assert_eq!(object::decode(&key, ty, &id, &sealed).unwrap(), data.clone());
        prop_assert_eq!(object::decode_blob(&key, ty, &id, &sealed).unwrap(), data.clone());
        // Sealed under an id that is not the plaintext's hash: decode works, decode_blob refuses.
        let wrong = Id::from_bytes(blake3::hash(&id.0).into());
        let sealed = object::encode(&key, ty, &wrong, &data, &nonce, level);
        prop_assert_eq!(object::decode(&key, ty, &wrong, &sealed).unwrap(), data);
        let is_mismatch = matches!(object::decode_blob(&key, ty, &wrong, &sealed), Err(FormatError::IdMismatch { expected, actual }) if expected == wrong && actual == id);
        prop_assert!(is_mismatch);
    }
}

#[test]
fn incompressible_large_input_is_stored_raw_and_sample_skip_applies() {
    // Random data: the 16 KiB probe does not compress, so the whole input is stored raw.
    let data = xof(b"random", 1 << 20);
    let mut out = Vec::new();
    assert_eq!(compress_into(&data, 3, &mut out), Compression::None);
    assert_eq!(out.len(), data.len() + 1);
    // A compressible head but a random body: the probe passes, the whole does not save 1/32.
    let mut mixed = vec![0u8; 16 * 1024];
    mixed.extend(xof(b"body", 1 << 20));
    let mut out = Vec::new();
    assert_eq!(compress_into(&mixed, 3, &mut out), Compression::None);
    // A random head (probe fails) skips compression even if the rest would compress.
    let mut skipped = xof(b"head", 16 * 1024);
    skipped.resize(1 << 20, 0);
    let mut out = Vec::new();
    assert_eq!(compress_into(&skipped, 3, &mut out), Compression::None);
    // Small inputs are not probed.
    let mut small = xof(b"head", 16 * 1024);
    small.resize(64 * 1024, 0);
    let mut out = Vec::new();
    assert_eq!(compress_into(&small, 3, &mut out), Compression::Zstd);
}

#[test]
fn compression_is_deterministic_across_context_reuse() {
    let a = b"abcabcabc tidemark ".repeat(5000);
    let b = xof(b"other", 100_000);
    let first = {
        let mut out = Vec::new();
        compress_into(&a, 3, &mut out);
        out
    };
    for level in [1, 3, 5] {
        compress_into(&b, level, &mut Vec::new());
        compress_into(&a, level, &mut Vec::new());
    }
    let mut again = Vec::new();
    compress_into(&a, 3, &mut again);
    assert_eq!(first, again);
    let fresh = std::thread::spawn(move || {
        let mut out = Vec::new();
        compress_into(&a, 3, &mut out);
        out
    })
    .join()
    .unwrap();
    assert_eq!(first, fresh);
}

#[test]
fn decompress_limits_and_modes() {
    let corrupt = |r: Result<Vec<u8>, FormatError>| matches!(r, Err(FormatError::Corrupt { .. }));
    assert!(corrupt(decompress(&[], 0)));
    assert!(corrupt(decompress(&[2, 1, 2, 3], 0)));
    assert_eq!(decompress(&[0, 1, 2, 3], 0).unwrap(), [1, 2, 3]);
    // A bomb: 65 MiB of zeros compresses to a few KiB but exceeds the cap.
    let bomb = zstd::bulk::compress(&vec![0u8; compression::MAX_DECOMPRESSED_LEN + 1], 1).unwrap();
    let mut framed = vec![1u8];
    framed.extend_from_slice(&bomb);
    assert!(corrupt(decompress(&framed, 0)));
    // The same without a content size in the frame header (streaming encoder).
    let mut encoder = zstd::stream::write::Encoder::new(vec![1u8], 1).unwrap();
    encoder.include_contentsize(false).unwrap();
    io::copy(&mut io::repeat(0).take(compression::MAX_DECOMPRESSED_LEN as u64 + 1), &mut encoder).unwrap();
    assert!(corrupt(decompress(&encoder.finish().unwrap(), 0)));
    // Frames without a content size within the cap decode.
    let mut encoder = zstd::stream::write::Encoder::new(vec![1u8], 3).unwrap();
    encoder.include_contentsize(false).unwrap();
    io::Write::write_all(&mut encoder, &b"x".repeat(100_000)).unwrap();
    assert_eq!(decompress(&encoder.finish().unwrap(), 0).unwrap(), b"x".repeat(100_000));
}
