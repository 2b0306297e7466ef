//! Buckets on the shared moto server for the bucket-source tests, with a small S3 client of their
//! own (OpenDAL, signed with the moto credentials) to put objects with a content type and user
//! metadata, delete them, read them back and list the keys: the tests must not use tidemark to
//! check tidemark.

use std::collections::{BTreeMap, HashMap};

use opendal::Operator;
use tidemark_testkit::{BucketOptions, S3Server};

/// An object as a bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
}

/// A bucket of its own on the test server.
pub struct TestBucket {
    /// Bucket name.
    pub name: String,
    /// The URL tidemark is given: `s3://NAME?endpoint=...&region=...&path_style=true`.
    pub url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
}

impl TestBucket {
    /// A new bucket (plain, or with versioning) on `server`.
    pub fn new(server: &S3Server, options: &BucketOptions) -> TestBucket {
        let name = server.new_bucket_with(options).expect("create bucket");
        let (id, secret) = S3Server::credentials();
        let builder = opendal::services::S3::default()
            .bucket(&name)
            .endpoint(&server.endpoint())
            .region(S3Server::region())
            .access_key_id(id)
            .secret_access_key(secret)
            .disable_config_load()
            .disable_ec2_metadata();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let op = Operator::new(builder).expect("S3 operator");
        let transport = opendal_http_transport_reqwest::ReqwestTransport::new(reqwest::Client::new());
        let context = op.context().with_http_transport(opendal::HttpTransporter::new(transport));
        let op = op.with_context(context);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        TestBucket { url: server.url(&name, ""), name, op, rt }
    }

    /// Put an object with a content type and user metadata.
    pub fn put(&self, key: &str, data: &[u8], content_type: Option<&str>, meta: &[(&str, &str)]) {
        let options = opendal::options::WriteOptions {
            content_type: content_type.map(str::to_string),
            user_metadata: (!meta.is_empty())
                .then(|| meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        self.rt.block_on(self.op.write_options(key, data.to_vec(), options)).expect("put");
    }

    /// Delete an object (a delete marker in a versioned bucket).
    pub fn delete(&self, key: &str) {
        self.rt.block_on(self.op.delete(key)).expect("delete");
    }

    /// Read an object with its content type and user metadata.
    pub fn get(&self, key: &str) -> Object {
        let meta = self.rt.block_on(self.op.stat(key)).expect("stat");
        let data = self.rt.block_on(self.op.read(key)).expect("read").to_vec();
        let user_metadata = meta
            .user_metadata()
            .map(|u| u.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .unwrap_or_default();
        Object { data, content_type: meta.content_type().map(str::to_string), user_metadata }
    }

    /// Every key of a current object, sorted.
    pub fn keys(&self) -> Vec<String> {
        let options = opendal::options::ListOptions { recursive: true, ..Default::default() };
        let entries = self.rt.block_on(self.op.list_options("", options)).expect("list");
        let mut keys: Vec<String> = entries.into_iter().map(|e| e.path().to_string()).filter(|p| p != "/").collect();
        keys.sort();
        keys
    }

    /// Every key with its object.
    pub fn contents(&self) -> BTreeMap<String, Object> {
        self.keys().into_iter().map(|k| (k.clone(), self.get(&k))).collect()
    }
}
