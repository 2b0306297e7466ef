//! Whole-object codec: compress, then seal; open, then decompress (and verify blob ids).
//!
//! Sealed object = `aead::seal(data key, nonce, type, id, mode byte || payload)`; see
//! [`crate::compression`] for the framing and [`crate::aead`] for the sealing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aead::{NONCE_LEN, OVERHEAD, seal_in_place, seal_in_place_from};
use crate::compression::{compress_into, decompress_vec};
use crate::{FormatError, Id, MasterKey, ObjectType};

/// zstd level for JSON metadata (snapshots, trees, index files, locks, config).
pub const JSON_LEVEL: i32 = 3;

/// Compress (zstd at `level`, skipped when it does not pay) and seal `plaintext`.
///
/// Builds the result in one allocation: nonce, then the compressed frame, sealed in place.
pub fn encode(key: &MasterKey, ty: ObjectType, id: &Id, plaintext: &[u8], nonce: &[u8; 24], level: i32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext.len() + 1 + OVERHEAD);
    buf.extend_from_slice(nonce);
    compress_into(plaintext, level, &mut buf);
    debug_assert!(buf.len() > NONCE_LEN);
    seal_in_place(&key.data, ty, id, &mut buf);
    buf
}

/// [`encode`], proving first that the compressed payload decompresses to `plaintext` (a codec bug
/// must never reach a repository). Raw payloads are stored as they are and need no check.
pub fn encode_verified(
    key: &MasterKey,
    ty: ObjectType,
    id: &Id,
    plaintext: &[u8],
    nonce: &[u8; 24],
    level: i32,
) -> Result<Vec<u8>, FormatError> {
    let mut buf = Vec::with_capacity(plaintext.len() + 1 + OVERHEAD);
    encode_verified_into(key, ty, id, plaintext, nonce, level, &mut buf)?;
    Ok(buf)
}

/// [`encode_verified`] appending the sealed object to `out` (a pack buffer), without an
/// intermediate allocation. On error `out` is left as it was.
pub fn encode_verified_into(
    key: &MasterKey,
    ty: ObjectType,
    id: &Id,
    plaintext: &[u8],
    nonce: &[u8; 24],
    level: i32,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let start = out.len();
    out.reserve(plaintext.len() + 1 + OVERHEAD);
    out.extend_from_slice(nonce);
    let mode = compress_into(plaintext, level, out);
    if mode == crate::compression::Compression::Zstd {
        let verified = crate::compression::decompress(&out[start + NONCE_LEN..], plaintext.len())
            .map_err(|e| e.to_string())
            .and_then(|back| if back == plaintext { Ok(()) } else { Err("content differs".to_string()) });
        if let Err(why) = verified {
            out.truncate(start);
            return Err(FormatError::Corrupt {
                what: "compressed blob",
                detail: format!("{ty} {id} does not decompress to its plaintext ({why}); refusing to store it"),
            });
        }
    }
    seal_in_place_from(&key.data, ty, id, out, start);
    Ok(())
}

/// Open and decompress an object sealed by [`encode`].
pub fn decode(key: &MasterKey, ty: ObjectType, id: &Id, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let framed = crate::aead::open(&key.data, ty, id, sealed)?;
    decompress_vec(framed, 0)
}

/// [`decode`] for blobs, then check that the plaintext's keyed hash equals `id`.
pub fn decode_blob(key: &MasterKey, ty: ObjectType, id: &Id, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let plaintext = decode(key, ty, id, sealed)?;
    let actual = key.chunk_id(&plaintext);
    if actual != *id {
        return Err(FormatError::IdMismatch { expected: *id, actual });
    }
    Ok(plaintext)
}

/// Serialize `value` to JSON and [`encode`] it.
///
/// # Panics
/// If `value` cannot be serialized to JSON (never for the types in [`crate::objects`]).
pub fn encode_json<T: Serialize>(key: &MasterKey, ty: ObjectType, id: &Id, value: &T, nonce: &[u8; 24]) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("repository objects serialize to JSON");
    encode(key, ty, id, &json, nonce, JSON_LEVEL)
}

/// [`decode`] then parse JSON.
pub fn decode_json<T: DeserializeOwned>(
    key: &MasterKey,
    ty: ObjectType,
    id: &Id,
    sealed: &[u8],
) -> Result<T, FormatError> {
    let json = decode(key, ty, id, sealed)?;
    serde_json::from_slice(&json).map_err(|source| FormatError::Json { what: ty.name(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_verified_round_trips_compressible_and_raw_payloads() {
        let key = MasterKey::from_bytes([3u8; 64]);
        let text = b"tidemark ".repeat(10_000);
        let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for data in [&text[..], &noise[..], &b""[..]] {
            let id = key.chunk_id(data);
            let sealed = encode_verified(&key, ObjectType::DataBlob, &id, data, &[9u8; 24], 1).unwrap();
            assert_eq!(decode_blob(&key, ObjectType::DataBlob, &id, &sealed).unwrap(), data);
            // Same bytes as the unverified encoder for the same nonce.
            assert_eq!(sealed, encode(&key, ObjectType::DataBlob, &id, data, &[9u8; 24], 1));
        }
    }

    #[test]
    fn sealing_into_a_pack_equals_sealing_then_adding() {
        let key = MasterKey::from_bytes([4u8; 64]);
        let blobs: Vec<Vec<u8>> = vec![b"one ".repeat(5000), (0..3000u32).map(|i| ((i * 7919) >> 3) as u8).collect()];
        let mut direct = crate::pack::PackWriter::default();
        let mut copied = crate::pack::PackWriter::default();
        for (n, data) in blobs.iter().enumerate() {
            let id = key.chunk_id(data);
            let nonce = [n as u8; 24];
            direct
                .add_with(crate::pack::BlobType::Data, id, data.len() as u32, |buf| {
                    encode_verified_into(&key, ObjectType::DataBlob, &id, data, &nonce, 1, buf)
                })
                .unwrap();
            let sealed = encode(&key, ObjectType::DataBlob, &id, data, &nonce, 1);
            copied.add(crate::pack::BlobType::Data, id, &sealed, data.len() as u32);
        }
        assert_eq!(direct.entries(), copied.entries());
        assert_eq!(direct.finish(&key, &[0u8; 24]).1, copied.finish(&key, &[0u8; 24]).1);
    }
}
