//! JSON objects through the sealed object codec.

use super::*;

fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (-62_000_000_000i64..250_000_000_000, 0i32..1_000_000_000).prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z/_.-]{0,20}"]
}

fn arb_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(arb_string(), arb_string(), 0..3)
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let summary = (prop::option::of(arb_timestamp()), prop::option::of(arb_timestamp()), any::<[u64; 10]>()).prop_map(
        |(s, e, n)| SnapshotSummary {
            backup_start: s,
            backup_end: e,
            files_new: n[0],
            files_changed: n[1],
            files_unmodified: n[2],
            dirs: n[3],
            errors: n[4],
            blobs_added: n[5],
            data_added: n[6],
            data_added_packed: n[7],
            total_files: n[8],
            total_bytes: n[9],
        },
    );
    (
        (arb_timestamp(), arb_string(), arb_string(), arb_string(), prop::option::of(arb_string())),
        (
            prop::collection::vec(arb_string(), 0..3),
            prop::collection::vec(arb_string(), 0..3),
            prop::option::of(arb_id()),
        ),
        (arb_id(), arb_string(), prop::option::of(summary), arb_map()),
    )
        .prop_map(
            |((time, hostname, username, kind, source), (paths, tags, parent), (tree, program, summary, extra))| {
                Snapshot { time, hostname, username, kind, source, paths, tags, parent, tree, program, summary, extra }
            },
        )
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        (
            arb_string(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..10)),
            prop::sample::select(vec![NodeType::File, NodeType::Dir, NodeType::Symlink, NodeType::Other]),
        ),
        (any::<u32>(), any::<u32>(), any::<u32>(), arb_string(), arb_string()),
        (any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (prop::collection::vec(arb_id(), 0..3), prop::option::of(arb_id()), prop::option::of(arb_string()), arb_map()),
    )
        .prop_map(
            |(
                (name, name_bytes, node_type),
                (mode, uid, gid, user, group),
                (mtime_ns, ctime_ns, inode, device, size),
                (content, subtree, link_target, attrs),
            )| Node {
                name,
                name_bytes,
                node_type,
                mode,
                uid,
                gid,
                user,
                group,
                mtime_ns,
                ctime_ns,
                inode,
                device,
                size,
                content,
                subtree,
                link_target,
                attrs,
            },
        )
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec(arb_node(), 0..4).prop_map(|nodes| Tree { nodes })
}

fn arb_index() -> impl Strategy<Value = IndexFile> {
    let blob = (arb_id(), any::<bool>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
        |(id, tree, offset, length, raw_length)| IndexBlob {
            id,
            blob_type: if tree { BlobType::Tree } else { BlobType::Data },
            offset,
            length,
            raw_length,
        },
    );
    let pack = (arb_id(), any::<u64>(), prop::collection::vec(blob, 0..4)).prop_map(|(id, size, blobs)| IndexPack {
        id,
        size,
        blobs,
    });
    (prop::collection::vec(arb_id(), 0..3), prop::collection::vec(pack, 0..4))
        .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_json_round_trip(snapshot in arb_snapshot(), seed in any::<u8>(), nonce in any::<[u8; 24]>(), id in arb_id()) {
        let key = master(seed);
        let sealed = object::encode_json(&key, ObjectType::Snapshot, &id, &snapshot, &nonce);
        let back: Snapshot = object::decode_json(&key, ObjectType::Snapshot, &id, &sealed).unwrap();
        prop_assert_eq!(back, snapshot);
    }

    #[test]
    fn tree_json_round_trip(tree in arb_tree(), seed in any::<u8>(), nonce in any::<[u8; 24]>()) {
        let key = master(seed);
        let json = serde_json::to_vec(&tree).unwrap();
        let id = key.chunk_id(&json);
        let sealed = object::encode_json(&key, ObjectType::TreeBlob, &id, &tree, &nonce);
        // Tree blobs are addressed by the hash of their JSON, so decode_blob verifies them.
        prop_assert_eq!(object::decode_blob(&key, ObjectType::TreeBlob, &id, &sealed).unwrap(), json);
        let back: Tree = object::decode_json(&key, ObjectType::TreeBlob, &id, &sealed).unwrap();
        prop_assert_eq!(back, tree);
    }

    #[test]
    fn index_json_round_trip(index in arb_index(), seed in any::<u8>(), nonce in any::<[u8; 24]>(), id in arb_id()) {
        let key = master(seed);
        let sealed = object::encode_json(&key, ObjectType::Index, &id, &index, &nonce);
        let back: IndexFile = object::decode_json(&key, ObjectType::Index, &id, &sealed).unwrap();
        prop_assert_eq!(back, index);
    }
}

#[test]
fn config_key_and_lock_json_round_trip() {
    let key = master(9);
    let repo = Id::from_bytes([1; 32]);
    let t: Timestamp = "2026-11-02T10:00:00.123456789Z".parse().unwrap();
    let config = RepoConfig {
        version: 1,
        id: repo,
        chunker: ChunkerParams::with_seed(u64::MAX),
        pack_size: 32 << 20,
        compression_level: -3,
    };
    let sealed = object::encode_json(&key, ObjectType::Config, &repo, &config, &[1; 24]);
    assert_eq!(object::decode_json::<RepoConfig>(&key, ObjectType::Config, &repo, &sealed).unwrap(), config);
    let err = object::decode_json::<Lock>(&key, ObjectType::Config, &repo, &sealed).unwrap_err();
    assert!(matches!(err, FormatError::Json { what: "config", .. }), "{err}");

    let marker = RepoMarker { format: "tidemark".into(), version: 1, id: repo };
    let json = serde_json::to_string(&marker).unwrap();
    assert_eq!(serde_json::from_str::<RepoMarker>(&json).unwrap(), marker);

    for kdf in [Kdf::Argon2id { params: KdfParams::DEFAULT, salt: vec![7; 16] }, Kdf::Keyfile] {
        let file = KeyFile { created: t, host: "h".into(), username: "u".into(), kdf, data: vec![3; 104] };
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(serde_json::from_str::<KeyFile>(&json).unwrap(), file);
    }

    let lock = Lock {
        time: t,
        exclusive: true,
        hostname: "h".into(),
        pid: 42,
        username: "u".into(),
        operation: "prune".into(),
    };
    let id = Id::from_bytes([2; 32]);
    let sealed = object::encode_json(&key, ObjectType::Lock, &id, &lock, &[2; 24]);
    assert_eq!(object::decode_json::<Lock>(&key, ObjectType::Lock, &id, &sealed).unwrap(), lock);
}
