//! Frozen test vectors of format version 1 (listed in docs/FORMAT.md, "Test vectors").
//!
//! These bytes are the contract: if a test here fails, the code changed the format. Do not update an
//! expected value without a new format version. The one exception is V4 (zstd output), which a newer
//! zstd may encode differently; readers must still decode the frozen bytes.
//!
//! Common inputs: master key = bytes 0x00..=0x3f (data key 0x00..=0x1f, id key 0x20..=0x3f);
//! `nonce(b)` = 24 bytes of value `b`; `xof(seed, n)` = the first `n` bytes of the BLAKE3 XOF
//! (unkeyed) of `seed`.

use tidemark_format::chunker::{ChunkerParams, StreamChunker, chunk_lengths};
use tidemark_format::keys::{KdfParams, derive_from_keyfile, derive_from_password, unwrap_master_key, wrap_master_key};
use tidemark_format::pack::{BlobType, HeaderRead, PackWriter, read_header};
use tidemark_format::{Id, MasterKey, ObjectType, aead, compression, object};

fn master() -> MasterKey {
    MasterKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn nonce(b: u8) -> [u8; 24] {
    [b; 24]
}

fn xof(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(seed).finalize_xof().fill(&mut out);
    out
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const SEED: u64 = 0x0123_4567_89ab_cdef;

/// V1: AEAD seal. Data key of the master key, nonce 0x40..=0x57, type Snapshot (3), id 32 x 0xaa.
#[test]
fn v1_aead_seal() {
    let key = master();
    let n: [u8; 24] = std::array::from_fn(|i| 0x40 + i as u8);
    let id = Id::from_bytes([0xaa; 32]);

    let mut h = blake3::Hasher::new_keyed(&key.data);
    h.update(b"tidemark-aead-subkey-v1");
    h.update(&n[..12]);
    assert_eq!(h.finalize().to_hex().as_str(), "f02e686a9065dfd656979e4dd14b176d3cfc1f07045b2f4299356fb5e37e33c3");

    let sealed = aead::seal(&key.data, &n, ObjectType::Snapshot, &id, b"tidemark format v1");
    let expected = "404142434445464748494a4b4c4d4e4f5051525354555657\
                    061452970b70fd24d3415f6e20fde6924b69ebe304f52053a92957c320fcfe2aa2d8";
    assert_eq!(hex::encode(&sealed), expected);
    assert_eq!(aead::open(&key.data, ObjectType::Snapshot, &id, &unhex(expected)).unwrap(), b"tidemark format v1");
}

/// V2: chunk id = keyed BLAKE3 with the id key.
#[test]
fn v2_chunk_id() {
    assert_eq!(
        master().chunk_id(b"hello, tidemark").to_hex(),
        "29873d7e249eed318a3b6e7539118c3b9333b9d69146bba3c1067d251dce45ae"
    );
}

/// V3: object encoding of an incompressible input (stored raw, mode 0): `xof("tidemark
/// incompressible", 64)`, type DataBlob, id = its chunk id, nonce(2), level 3.
#[test]
fn v3_object_raw() {
    let key = master();
    let data = xof(b"tidemark incompressible", 64);
    let id = key.chunk_id(&data);
    assert_eq!(id.to_hex(), "00c766684084c93eb774a06718110ded2c96166a15b5c396f3f23a176ee506fd");
    let expected = "020202020202020202020202020202020202020202020202\
                    f02fb013dc30c9b633479fc7dca86c16f1f2cdf6ed310da45a8d63b4a8de8024f0b947d9fc265824d263ea6abd24\
                    683ecd464566b8bfae62471e7aa71c6883da2c48139f9dfd610ac90c828ad195ebf9c1";
    let sealed = object::encode(&key, ObjectType::DataBlob, &id, &data, &nonce(2), 3);
    assert_eq!(hex::encode(&sealed), expected);
    let framed = aead::open(&key.data, ObjectType::DataBlob, &id, &sealed).unwrap();
    assert_eq!(framed[0], compression::Compression::None as u8);
    assert_eq!(object::decode_blob(&key, ObjectType::DataBlob, &id, &unhex(expected)).unwrap(), data);
}

/// V4: object encoding of a compressible input (zstd, mode 1): `"tidemark "` repeated 100 times,
/// type DataBlob, id = its chunk id, nonce(1), level 3. The zstd bytes are those of zstd 1.5.7.
#[test]
fn v4_object_zstd() {
    let key = master();
    let data = b"tidemark ".repeat(100);
    let id = key.chunk_id(&data);
    assert_eq!(id.to_hex(), "390abf2dc8d73a01944803a3736bfb4ecc9c9196fe1703873980fde5e85332c9");
    let expected = "010101010101010101010101010101010101010101010101\
                    3dc67c493e279fff49935ba74a721af49eaa45a0617f06e3849c955d6f6fc7c0a2767594f95e0964b3f2e0";
    // Readers must decode the frozen bytes whatever zstd they link.
    assert_eq!(object::decode_blob(&key, ObjectType::DataBlob, &id, &unhex(expected)).unwrap(), data);
    let framed = aead::open(&key.data, ObjectType::DataBlob, &id, &unhex(expected)).unwrap();
    assert_eq!(framed[0], compression::Compression::Zstd as u8);
    let sealed = object::encode(&key, ObjectType::DataBlob, &id, &data, &nonce(1), 3);
    assert_eq!(hex::encode(&sealed), expected, "zstd output changed (new zstd version?)");
}

/// V5: key derivation and master-key wrapping. Password "correct horse battery staple", salt
/// 0x10..=0x1f, Argon2id m=1024 KiB t=1 p=1; key file = 32 x 0x5a; key id 32 x 0x11; nonces 3 and 4.
#[test]
fn v5_keys() {
    let key = master();
    let salt: Vec<u8> = (0x10u8..0x20).collect();
    let kid = Id::from_bytes([0x11; 32]);
    let params = KdfParams { m_kib: 1024, t: 1, p: 1 };

    // The user keys themselves (UserKey is opaque), recomputed with the primitives.
    let mut argon = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(b"correct horse battery staple", &salt, &mut argon)
    .unwrap();
    assert_eq!(hex::encode(argon), "556f761d813beb4827e0d3b280d48a0ccd46c03b38de3861aa6740bbff0ecd43");
    let from_file = blake3::derive_key("tidemark 2026 key file v1", &[0x5a; 32]);
    assert_eq!(hex::encode(from_file), "0255fc873ece9d1c54bb1250a03b35829d52efa67f1577d2ec56263e0b28983a");

    let plaintext = [key.data, key.id].concat();
    let expected_pw = "030303030303030303030303030303030303030303030303\
                       4938463669b36368ae8f7f031d83d48961f2e7f27fe936d8f3974fdc53748b550907fbe8765c183dafca0727039c099c\
                       b35124092cd95ca28a55a8063defbee00d978a42ed954bf012b025058d038c65";
    let user = derive_from_password(b"correct horse battery staple", &salt, &params).unwrap();
    assert_eq!(hex::encode(wrap_master_key(&user, &key, &kid, &nonce(3))), expected_pw);
    assert_eq!(hex::encode(aead::seal(&argon, &nonce(3), ObjectType::Key, &kid, &plaintext)), expected_pw);
    assert_eq!(unwrap_master_key(&user, &kid, &unhex(expected_pw)).unwrap(), key);

    let expected_file = "040404040404040404040404040404040404040404040404\
                         4a5a7bdef964bf7bf9bb4c26fde2863c3d6940df3590514548d198e10a8e73c15163b6bcbbbf6deb4f1830ca68e98de6\
                         fe01b1ea5ef669054f86ab9805816c3a1b9323c72931eeb42a829c054ffc573c";
    let user = derive_from_keyfile(&[0x5a; 32]).unwrap();
    assert_eq!(hex::encode(wrap_master_key(&user, &key, &kid, &nonce(4))), expected_file);
    assert_eq!(hex::encode(aead::seal(&from_file, &nonce(4), ObjectType::Key, &kid, &plaintext)), expected_file);
    assert_eq!(unwrap_master_key(&user, &kid, &unhex(expected_file)).unwrap(), key);
}

/// V6: chunk boundaries over `xof("tidemark chunker test vector", 8 MiB)`.
#[test]
fn v6_chunk_boundaries() {
    let data = xof(b"tidemark chunker test vector", 8 << 20);
    assert_eq!(
        blake3::hash(&data).to_hex().as_str(),
        "027c3007113a46e901401df95cdaad8238194badb0a5d1f9846af460f191a885"
    );

    let default = ChunkerParams::with_seed(SEED);
    let expected = [1887988, 1493702, 1784122, 1341218, 620510, 1261068];
    assert_eq!(chunk_lengths(&default, &data), expected);

    let unseeded = ChunkerParams::with_seed(0);
    assert_eq!(chunk_lengths(&unseeded, &data), [610280, 2010289, 1231496, 1159809, 611634, 1983839, 781261]);

    let small = ChunkerParams { min_size: 16 * 1024, avg_size: 64 * 1024, max_size: 256 * 1024, seed: SEED };
    let lengths = chunk_lengths(&small, &data);
    assert_eq!(lengths.len(), 110);
    assert_eq!(lengths[..8], [25069, 113579, 23475, 57415, 150807, 63441, 73107, 130652]);
    let le: Vec<u8> = lengths.iter().flat_map(|&l| (l as u64).to_le_bytes()).collect();
    assert_eq!(blake3::hash(&le).to_hex().as_str(), "a194e0e52e9d72cb24c88529826b524aa079cb7f2e7ecbc8a50fd4e0aedfc59a");

    // The streaming chunker gives the same boundaries.
    let mut chunker = StreamChunker::new(&data[..], default);
    let mut chunk = Vec::new();
    let mut streamed = Vec::new();
    while chunker.next_chunk(&mut chunk).unwrap() {
        streamed.push(chunk.len());
    }
    assert_eq!(streamed, expected);
}

/// V7: a pack of two blobs. Data blob "hello, tidemark" (nonce 5), tree blob `{"nodes":[]}` (nonce
/// 6), both `object::encode` at level 3 (stored raw), header nonce 7.
#[test]
fn v7_pack() {
    let key = master();
    let b1 = b"hello, tidemark";
    let id1 = key.chunk_id(b1);
    let s1 = object::encode(&key, ObjectType::DataBlob, &id1, b1, &nonce(5), 3);
    let b2 = br#"{"nodes":[]}"#;
    let id2 = key.chunk_id(b2);
    let s2 = object::encode(&key, ObjectType::TreeBlob, &id2, b2, &nonce(6), 3);
    let mut writer = PackWriter::default();
    writer.add(BlobType::Data, id1, &s1, b1.len() as u32);
    writer.add(BlobType::Tree, id2, &s2, b2.len() as u32);
    let (id, bytes, entries) = writer.finish(&key, &nonce(7));

    let expected = "050505050505050505050505050505050505050505050505d839b4273feb8921f10bde1a9fba720418a035f256ce7b\
                    73b15501e6ba95e46e06060606060606060606060606060606060606060606060617c9eaeb079b3f70efb8c3d739bc\
                    aaebdfa2454413d6a9df10aae09e8e070707070707070707070707070707070707070707070707c89da780df416993\
                    deee00b78b85d51d8ba631225fe9d29b6bdbc02fe6dc88321d392e1bc01c375f6dee3700fd01778919bfa35e4798a2\
                    e0bb595304d51d4f4cbca7069c5ae6b24cb76e13b36603a706b5998fc227364e4461cb4cfd7335be917bfd7a000000\
                    544d504b01";
    assert_eq!(bytes.len(), 240);
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(id.to_hex(), "2ff74e6ca70de9a4de199b994d0fadec0068fe3db3c706da45d83844fd23cf3a");

    let frozen = unhex(expected);
    let HeaderRead::Entries(read) = read_header(&key, &frozen, frozen.len() as u64).unwrap() else {
        panic!("whole pack given")
    };
    assert_eq!(read, entries);
    assert_eq!((read[0].offset, read[0].length, read[0].raw_length), (0, 56, 15));
    assert_eq!((read[1].offset, read[1].length, read[1].raw_length), (56, 53, 12));
    let e = &read[1];
    let blob = &frozen[e.offset as usize..][..e.length as usize];
    assert_eq!(object::decode_blob(&key, ObjectType::TreeBlob, &id2, blob).unwrap(), b2);
}
