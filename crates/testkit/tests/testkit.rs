//! The test kit's own servers behave as promised: they start, answer, and stop on drop.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tidemark_testkit::{BucketOptions, S3Server, skip_or_fail};

#[test]
fn s3_server_starts_makes_buckets_and_stops_on_drop() {
    let server = match S3Server::start() {
        Ok(server) => server,
        Err(err) => return skip_or_fail("s3_server_starts", &err),
    };
    let port = server.port();
    assert_eq!(server.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        server.url("bkt", "/a/b/"),
        format!("s3://bkt/a/b?endpoint=http://127.0.0.1:{port}&region=us-east-1&path_style=true")
    );
    assert_eq!(
        server.url("bkt", ""),
        format!("s3://bkt?endpoint=http://127.0.0.1:{port}&region=us-east-1&path_style=true")
    );
    assert!(server.log_path().exists());

    server.create_bucket("plain-bucket").unwrap();
    let err = server.create_bucket("x").unwrap_err();
    assert!(err.to_string().contains("create bucket"), "{err}");
    let versioned = BucketOptions { versioning: true, ..BucketOptions::default() };
    let a = server.new_bucket_with(&versioned).unwrap();
    let b = server.new_bucket().unwrap();
    assert_ne!(a, b);
    server.reset().unwrap();
    // After the reset the name is free again.
    server.create_bucket("plain-bucket").unwrap();

    let log = server.log_path().to_owned();
    drop(server);
    assert!(!log.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "moto still answers on {port} after drop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
