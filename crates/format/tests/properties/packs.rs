//! Pack writing and header reading.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn pack_round_trip(seed in any::<u8>(), nonce in any::<[u8; 24]>(),
                       blobs in prop::collection::vec((any::<bool>(), arb_id(), prop::collection::vec(any::<u8>(), 0..200), any::<u32>()), 0..40),
                       tail_cut in any::<prop::sample::Index>()) {
        let key = master(seed);
        let mut writer = PackWriter::with_capacity(1024);
        for (tree, id, sealed, raw) in &blobs {
            writer.add(if *tree { BlobType::Tree } else { BlobType::Data }, *id, sealed, *raw);
        }
        prop_assert_eq!(writer.is_empty(), blobs.is_empty());
        let (pack_id, bytes, entries) = writer.finish(&key, &nonce);
        prop_assert_eq!(pack_id, Id::hash(&bytes));
        prop_assert_eq!(entries.len(), blobs.len());
        for (entry, (tree, id, sealed, raw)) in entries.iter().zip(&blobs) {
            prop_assert_eq!(entry.blob_type, if *tree { BlobType::Tree } else { BlobType::Data });
            prop_assert_eq!(entry.id, *id);
            prop_assert_eq!(entry.raw_length, *raw);
            prop_assert_eq!(&bytes[entry.offset as usize..][..entry.length as usize], &sealed[..]);
        }
        let pack_len = bytes.len() as u64;
        match read_header(&key, &bytes, pack_len).unwrap() {
            HeaderRead::Entries(read) => prop_assert_eq!(&read, &entries),
            HeaderRead::NeedMore(n) => prop_assert!(false, "whole pack given, asked for {}", n),
        }
        // From any shorter tail: either the entries, or how much to read, which then suffices.
        let tail = &bytes[bytes.len() - tail_cut.index(bytes.len() + 1)..];
        match read_header(&key, tail, pack_len).unwrap() {
            HeaderRead::Entries(read) => prop_assert_eq!(&read, &entries),
            HeaderRead::NeedMore(mut n) => {
                // At most two rounds: the trailer, then the sealed header.
                for _ in 0..2 {
                    prop_assert!(n > tail.len() && n <= bytes.len());
                    match read_header(&key, &bytes[bytes.len() - n..], pack_len).unwrap() {
                        HeaderRead::Entries(read) => {
                            prop_assert_eq!(&read, &entries);
                            break;
                        }
                        HeaderRead::NeedMore(more) => {
                            prop_assert_eq!(n, pack::TRAILER_LEN);
                            n = more;
                        }
                    }
                }
            }
        }
        // The wrong key, a flipped header bit or a wrong pack length is an error.
        prop_assert!(read_header(&master(seed.wrapping_add(1)), &bytes, pack_len).is_err());
        let mut flipped = bytes.clone();
        let at = flipped.len() - pack::TRAILER_LEN - 1;
        flipped[at] ^= 0x40;
        prop_assert!(read_header(&key, &flipped, pack_len).is_err());
        prop_assert!(read_header(&key, &bytes, pack_len + 1).is_err());
    }
}

#[test]
fn read_header_trailer_errors() {
    let key = master(0);
    let (_, bytes, _) = PackWriter::default().finish(&key, &[0; 24]);
    assert_eq!(bytes.len(), 40 + pack::TRAILER_LEN);
    assert!(matches!(read_header(&key, &bytes, bytes.len() as u64).unwrap(), HeaderRead::Entries(e) if e.is_empty()));
    assert!(matches!(
        read_header(&key, &bytes[bytes.len() - 3..], bytes.len() as u64).unwrap(),
        HeaderRead::NeedMore(9)
    ));
    assert!(matches!(
        read_header(&key, &bytes[bytes.len() - 9..], bytes.len() as u64).unwrap(),
        HeaderRead::NeedMore(49)
    ));
    let mut newer = bytes.clone();
    *newer.last_mut().unwrap() = 2;
    assert!(matches!(
        read_header(&key, &newer, newer.len() as u64),
        Err(FormatError::UnsupportedVersion { found: 2, supported: 1 })
    ));
    let mut bad_magic = bytes.clone();
    let n = bad_magic.len();
    bad_magic[n - 2] = b'X';
    let err = read_header(&key, &bad_magic, n as u64).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    // Blobs that do not fill the space before the header.
    let mut padded = vec![0u8; 10];
    padded.extend_from_slice(&bytes);
    assert!(matches!(read_header(&key, &padded, padded.len() as u64), Err(FormatError::Corrupt { .. })));
}
