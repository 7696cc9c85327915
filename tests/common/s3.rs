//! An S3-compatible server for tests, named by `ALPINE_REGISTRY_TEST_S3_ENDPOINT`,
//! `ALPINE_REGISTRY_TEST_S3_BUCKET` (which exists), `ALPINE_REGISTRY_TEST_S3_ACCESS_KEY`
//! and `ALPINE_REGISTRY_TEST_S3_SECRET_KEY`. Each test gets a fresh random key prefix in
//! the bucket, so tests never see each other's objects.
//!
//! Without the endpoint, S3 tests are skipped with a note (and test servers keep their
//! blobs on the filesystem), unless `ALPINE_REGISTRY_TEST_REQUIRE_S3=1` says they must
//! run: then they fail.

use std::io::Write;

use alpine_registry::config::S3Config;

/// `http://127.0.0.1:9000`: the server's endpoint.
pub const ENDPOINT_ENV: &str = "ALPINE_REGISTRY_TEST_S3_ENDPOINT";
pub const BUCKET_ENV: &str = "ALPINE_REGISTRY_TEST_S3_BUCKET";
pub const ACCESS_KEY_ENV: &str = "ALPINE_REGISTRY_TEST_S3_ACCESS_KEY";
pub const SECRET_KEY_ENV: &str = "ALPINE_REGISTRY_TEST_S3_SECRET_KEY";
/// `1`: a missing `ENDPOINT_ENV` fails the S3 tests instead of skipping them.
pub const REQUIRE_ENV: &str = "ALPINE_REGISTRY_TEST_REQUIRE_S3";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// The configuration of a fresh prefix in the test bucket; None when no server is named
/// (the caller skips). Panics when none is named but one is required, or when the
/// endpoint is set without a bucket.
pub fn config() -> Option<S3Config> {
    let endpoint = var(ENDPOINT_ENV);
    if endpoint.is_empty() {
        if var(REQUIRE_ENV) == "1" {
            panic!("{REQUIRE_ENV}=1 but {ENDPOINT_ENV} is not set: the S3 tests cannot run");
        }
        return None;
    }
    let bucket = var(BUCKET_ENV);
    assert!(
        !bucket.is_empty(),
        "{ENDPOINT_ENV} is set but {BUCKET_ENV} is not: name a bucket that exists"
    );
    let (access_key_id, secret_access_key) = (var(ACCESS_KEY_ENV), var(SECRET_KEY_ENV));
    assert!(
        !access_key_id.is_empty() && !secret_access_key.is_empty(),
        "{ENDPOINT_ENV} is set but {ACCESS_KEY_ENV} or {SECRET_KEY_ENV} is not: name the key \
         pair (any pair, for a server that checks none)"
    );
    Some(S3Config {
        bucket,
        allow_http: endpoint.starts_with("http://"),
        endpoint,
        region: "us-east-1".into(),
        path_style: true,
        prefix: format!("test-{}-{:016x}", std::process::id(), rand::random::<u64>()),
        access_key_id,
        secret_access_key,
        ..S3Config::default()
    })
}

/// Says, once per test binary and past the test harness's output capture, that the S3
/// tests are skipped.
pub fn note_skipped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: S3 tests skipped: set {ENDPOINT_ENV}, {BUCKET_ENV}, {ACCESS_KEY_ENV} and \
             {SECRET_KEY_ENV} (.ci/s3.sh starts a server and sets them) to run them"
        );
    });
}
