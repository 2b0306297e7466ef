//! Harness: a repository in memory, buckets on the shared moto server, and a small S3 client to
//! put, delete and read objects with their metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use opendal::Operator;
use tidemark_repo::format::keys::KdfParams;
use tidemark_repo::{Credential, InitOptions, Repository};
use tidemark_testkit::{BucketOptions, S3Server};

/// A new repository in memory.
pub fn repo() -> Repository {
    let opts = InitOptions { kdf: KdfParams { m_kib: 1024, t: 1, p: 1 }, ..Default::default() };
    Repository::init(Arc::new(tidemark_storage::MemoryStorage::new()), &Credential::Password(b"pw".to_vec()), &opts)
        .unwrap()
}

/// The shared server, or `None` (skipped loudly).
pub fn server(test: &str) -> Option<&'static S3Server> {
    S3Server::shared_or_skip(test)
}

/// The URL tidemark is given for `bucket/prefix`.
pub fn url(server: &S3Server, bucket: &str, prefix: &str) -> String {
    server.url(bucket, prefix)
}

/// The credentials moto accepts.
pub fn credentials() -> Option<(String, String)> {
    let (id, secret) = S3Server::credentials();
    Some((id.to_string(), secret.to_string()))
}

/// An object as a bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
}

/// A bucket on the test server.
pub struct Bucket {
    pub name: String,
    pub url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn new(server: &S3Server, options: &BucketOptions) -> Bucket {
        let name = server.new_bucket_with(options).unwrap();
        Self::open(server, &name)
    }

    pub fn open(server: &S3Server, name: &str) -> Bucket {
        let (id, secret) = S3Server::credentials();
        let builder = opendal::services::S3::default()
            .bucket(name)
            .endpoint(&server.endpoint())
            .region(S3Server::region())
            .access_key_id(id)
            .secret_access_key(secret)
            .disable_config_load()
            .disable_ec2_metadata();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let op = Operator::new(builder).unwrap();
        let transport = opendal_http_transport_reqwest::ReqwestTransport::new(reqwest::Client::new());
        let context = op.context().with_http_transport(opendal::HttpTransporter::new(transport));
        let op = op.with_context(context);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Bucket { name: name.to_string(), url: url(server, name, ""), op, rt }
    }

    pub fn put(&self, key: &str, data: &[u8], content_type: Option<&str>, meta: &[(&str, &str)]) {
        let options = opendal::options::WriteOptions {
            content_type: content_type.map(str::to_string),
            user_metadata: (!meta.is_empty())
                .then(|| meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        self.rt.block_on(self.op.write_options(key, data.to_vec(), options)).unwrap();
    }

    /// Put many small objects, 32 at a time.
    pub fn put_many(&self, objects: Vec<(String, Vec<u8>)>) {
        self.rt.block_on(async {
            futures::stream::iter(objects)
                .map(|(k, d)| {
                    let op = self.op.clone();
                    async move { op.write(&k, d).await.unwrap() }
                })
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
        });
    }

    /// A directory marker (an empty object whose key ends in `/`).
    pub fn mkdir(&self, key: &str) {
        self.rt.block_on(self.op.create_dir(key)).unwrap();
    }

    pub fn delete(&self, key: &str) {
        self.rt.block_on(self.op.delete(key)).unwrap();
    }

    pub fn get(&self, key: &str) -> Object {
        let meta = self.rt.block_on(self.op.stat(key)).unwrap();
        let data = self.rt.block_on(self.op.read(key)).unwrap().to_vec();
        let user_metadata = meta
            .user_metadata()
            .map(|u| u.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .unwrap_or_default();
        Object { data, content_type: meta.content_type().map(str::to_string), user_metadata }
    }

    /// Every key (files and markers), sorted.
    pub fn keys(&self) -> Vec<String> {
        let options = opendal::options::ListOptions { recursive: true, ..Default::default() };
        let entries = self.rt.block_on(self.op.list_options("", options)).unwrap();
        let mut keys: Vec<String> = entries.into_iter().map(|e| e.path().to_string()).filter(|p| p != "/").collect();
        keys.sort();
        keys
    }

    /// Every key with its object.
    pub fn contents(&self) -> BTreeMap<String, Object> {
        self.keys().into_iter().filter(|k| !k.ends_with('/')).map(|k| (k.clone(), self.get(&k))).collect()
    }
}
