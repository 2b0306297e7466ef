//! Incremental bucket snapshots on a provider whose listings carry no ETag: s3s-fs (a real second
//! S3 implementation) lists objects without one, so size and last-modified time decide reuse.

use std::sync::Arc;

use opendal::Operator;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, NoProgress, Repository};
use tidemark_source_objects::{BucketBackupOptions, backup_bucket};
use tidemark_testkit::S3sServer;

fn repo() -> Repository {
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    Repository::init(Arc::new(tidemark_storage::MemoryStorage::new()), &Credential::Password(b"pw".to_vec()), &opts)
        .unwrap()
}

/// A bucket on s3s-fs, written through its S3 API.
struct Bucket {
    url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(server: &S3sServer) -> Bucket {
        let name = server.new_bucket().unwrap();
        let (id, secret) = S3sServer::credentials();
        let builder = opendal::services::S3::default()
            .bucket(&name)
            .endpoint(&server.endpoint())
            .region(S3sServer::region())
            .access_key_id(id)
            .secret_access_key(secret)
            .disable_config_load()
            .disable_ec2_metadata();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let op = Operator::new(builder).unwrap();
        let transport = opendal_http_transport_reqwest::ReqwestTransport::new(reqwest::Client::new());
        let context = op.context().with_http_transport(opendal::HttpTransporter::new(transport));
        let op = op.with_context(context);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Bucket { url: server.url(&name, ""), op, rt }
    }

    fn put(&self, key: &str, data: &[u8]) {
        self.rt.block_on(self.op.write(key, data.to_vec())).unwrap();
    }

    fn read(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(self.op.read(key)).unwrap().to_vec()
    }
}

#[test]
fn unchanged_objects_are_reused_when_the_listing_has_no_etag() {
    let Some(server) = S3sServer::shared_or_skip("unchanged_objects_are_reused_when_the_listing_has_no_etag") else {
        return;
    };
    let src = Bucket::new(server);
    src.put("docs/a.txt", b"alpha");
    src.put("docs/b.txt", b"bravo");
    src.put("photos/c.jpg", &vec![3u8; 200_000]);
    src.put("top.txt", b"at the root");
    let repo = repo();
    let (id, secret) = S3sServer::credentials();
    let opts = BucketBackupOptions {
        concurrency: 4,
        credentials: Some((id.to_string(), secret.to_string())),
        ..BucketBackupOptions::new(src.url.clone())
    };

    let first = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    assert_eq!((first.stats.objects_fetched, first.stats.objects_reused), (4, 0));
    let s = first.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_new, s.total_files), (4, 4));

    // Nothing changed: nothing is fetched, and the tree is the same.
    let second = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!((second.stats.objects_fetched, second.stats.objects_reused), (0, 4));
    let s = second.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_new, s.files_changed, s.files_unmodified, s.total_files), (0, 0, 4, 4));
    assert_eq!(second.snapshot.tree, first.snapshot.tree);

    // Same size, different content, a later last-modified time (the listing has whole seconds):
    // exactly that object is fetched again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    src.put("docs/b.txt", b"BRAVO");
    let third = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert!(third.warnings.is_empty(), "{:?}", third.warnings);
    assert_eq!((third.stats.objects_fetched, third.stats.objects_reused), (1, 3));
    let s = third.snapshot.summary.clone().unwrap();
    assert_eq!((s.files_new, s.files_changed, s.files_unmodified, s.total_files), (0, 1, 3, 4));
    assert_ne!(third.snapshot.tree, second.snapshot.tree);
    assert_eq!(src.read("docs/b.txt"), b"BRAVO");

    // And the run after that is back to fetching nothing.
    let fourth = backup_bucket(&repo, &opts, Arc::new(NoProgress)).unwrap();
    assert_eq!((fourth.stats.objects_fetched, fourth.stats.objects_reused), (0, 4));
    assert_eq!(fourth.snapshot.tree, third.snapshot.tree);
}
