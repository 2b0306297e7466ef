//! Content-defined chunking: slice and stream chunkers.

use super::*;

/// Small chunker parameters so that short inputs hold many chunks.
fn arb_small_params() -> impl Strategy<Value = ChunkerParams> {
    (
        prop::sample::select(vec![(64u32, 256u32, 1024u32), (128, 512, 4096), (1024, 4096, 16384), (64, 1024, 1024)]),
        any::<u64>(),
    )
        .prop_map(|((min_size, avg_size, max_size), seed)| ChunkerParams { min_size, avg_size, max_size, seed })
}

/// Pseudo-random data with runs of zeros (which force max-size cuts).
fn arb_chunk_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u64>(), 0usize..6000, 0usize..3000), 0..8).prop_map(|parts| {
        let mut out = Vec::new();
        for (seed, random, zeros) in parts {
            out.extend(xof(&seed.to_le_bytes(), random));
            out.resize(out.len() + zeros, 0);
        }
        out
    })
}

/// A reader that returns reads of the given sizes in turn (0 = an `Interrupted` error).
struct ChoppyReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for ChoppyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        if size == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn stream_lengths<R: Read>(reader: R, params: ChunkerParams) -> (Vec<usize>, Vec<u8>) {
    let mut chunker = StreamChunker::new(reader, params);
    let mut chunk = Vec::new();
    let mut lengths = Vec::new();
    let mut all = Vec::new();
    while chunker.next_chunk(&mut chunk).unwrap() {
        lengths.push(chunk.len());
        all.extend_from_slice(&chunk);
    }
    assert!(!chunker.next_chunk(&mut chunk).unwrap(), "stays at end");
    assert!(chunk.is_empty());
    (lengths, all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn chunks_concatenate_to_input(params in arb_small_params(), data in arb_chunk_input()) {
        let lengths = chunk_lengths(&params, &data);
        prop_assert_eq!(lengths.iter().sum::<usize>(), data.len());
        let n = lengths.len();
        for (i, &len) in lengths.iter().enumerate() {
            prop_assert!(len <= params.max_size as usize);
            if i + 1 < n {
                prop_assert!(len >= params.min_size as usize);
            } else {
                prop_assert!(len > 0);
            }
        }
    }

    #[test]
    fn stream_chunker_matches_slice_chunker(
        params in arb_small_params(),
        data in arb_chunk_input(),
        sizes in prop::collection::vec(prop_oneof![Just(0usize), 1usize..10, 1usize..5000, 1usize..100_000], 1..8),
    ) {
        prop_assume!(sizes.iter().any(|&s| s > 0));
        let expected = chunk_lengths(&params, &data);
        let (lengths, all) = stream_lengths(ChoppyReader { data: &data, sizes, turn: 0 }, params);
        prop_assert_eq!(lengths, expected);
        prop_assert_eq!(all, data);
    }
}

#[test]
fn stream_chunker_default_params_large_input() {
    let params = ChunkerParams::with_seed(0xfeed_beef);
    // 20 MiB of pseudo-random data with a 10 MiB run of zeros (forces 8 MiB cuts).
    let mut data = xof(b"large", 6 << 20);
    data.resize(16 << 20, 0);
    data.extend(xof(b"large tail", 4 << 20));
    let expected = chunk_lengths(&params, &data);
    assert!(expected.contains(&(8 << 20)));
    for sizes in [vec![1 << 20], vec![4096, 0, 3 << 20, 7], vec![100 << 20]] {
        let (lengths, all) = stream_lengths(ChoppyReader { data: &data, sizes, turn: 0 }, params);
        assert_eq!(lengths, expected);
        assert!(all == data);
    }
}

#[test]
fn stream_chunker_reset_reuses_buffer() {
    let params = ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384, seed: 1 };
    let a = xof(b"a", 100_000);
    let b = xof(b"b", 50_000);
    let mut chunker = StreamChunker::new(&a[..], params);
    let mut chunk = Vec::new();
    assert!(chunker.next_chunk(&mut chunk).unwrap());
    chunker.reset(&b[..]);
    let mut lengths = Vec::new();
    while chunker.next_chunk(&mut chunk).unwrap() {
        lengths.push(chunk.len());
    }
    assert_eq!(lengths, chunk_lengths(&params, &b));
}

#[test]
fn stream_chunker_reports_read_errors() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let mut chunker = StreamChunker::new(Failing, ChunkerParams::with_seed(0));
    assert!(chunker.next_chunk(&mut Vec::new()).is_err());
}

#[test]
fn chunker_params_validate() {
    assert!(ChunkerParams::with_seed(5).validate().is_ok());
    for (min_size, avg_size, max_size) in
        [(0, 1024, 4096), (1025, 2048, 4096), (4096, 2048, 8192), (1024, 2048, 32 << 20), (64, 8 << 20, 16 << 20)]
    {
        let params = ChunkerParams { min_size, avg_size, max_size, seed: 0 };
        assert!(params.validate().is_err(), "{params:?}");
        // Invalid parameters are clamped, never a panic.
        let data = xof(b"x", 70_000);
        assert_eq!(chunk_lengths(&params, &data).iter().sum::<usize>(), data.len());
        let (lengths, _) = stream_lengths(&data[..], params);
        assert_eq!(lengths, chunk_lengths(&params, &data));
    }
}
