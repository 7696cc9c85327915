//! The `BlobStore` contract, written once and run against each store: the filesystem
//! always, S3 when a server is named (see `common::s3`; skipped with a note otherwise).

mod common;

use std::sync::Arc;
use std::time::Duration;

use alpine_registry::blob::{BlobError, BlobStore, FsBlobStore, S3BlobStore};
use alpine_registry::config::S3Config;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::relay::Relay;
use common::s3;

/// A store and what must outlive it (its directory).
struct Subject {
    store: Arc<dyn BlobStore>,
    _dir: tempfile::TempDir,
}

fn fs_store() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        store: Arc::new(FsBlobStore::new(dir.path().join("blobs")).unwrap()),
        _dir: dir,
    }
}

fn s3_store_with(config: &S3Config) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    Subject {
        store: Arc::new(S3BlobStore::new(config, dir.path().join("staging")).unwrap()),
        _dir: dir,
    }
}

/// A store on a fresh prefix of the test bucket, or None (skipped).
fn s3_store() -> Option<(Subject, S3Config)> {
    let Some(config) = s3::config() else {
        s3::note_skipped();
        return None;
    };
    Some((s3_store_with(&config), config))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes that differ from position to position (a misplaced range shows).
fn content(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Stages `bytes`, flushed, not committed.
async fn staged(store: &dyn BlobStore, bytes: &[u8]) -> alpine_registry::blob::Staged {
    let mut staged = store.stage().await.unwrap();
    staged.write_all(bytes).await.unwrap();
    staged.flush().await.unwrap();
    staged
}

/// Stores `bytes` as an upload would; returns its key.
async fn put(store: &dyn BlobStore, bytes: &[u8]) -> String {
    let key = sha256(bytes);
    let staged = staged(store, bytes).await;
    store.commit(staged, &key).await.unwrap();
    key
}

async fn read(store: &dyn BlobStore, key: &str, offset: u64, len: u64) -> Vec<u8> {
    let mut reader = store.open_range(key, offset, len).await.unwrap();
    let mut out = Vec::new();
    reader.body.read_to_end(&mut out).await.unwrap();
    out
}

async fn listed(store: &dyn BlobStore) -> Vec<(String, u64)> {
    let mut blobs: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.sha256, b.size))
        .collect();
    blobs.sort();
    blobs
}

async fn stage_commit_and_read_back(store: &dyn BlobStore) {
    store.ping().await.unwrap();
    let bytes = content(100_000, 1);
    let key = put(store, &bytes).await;
    assert_eq!(store.size(&key).await.unwrap(), bytes.len() as u64);
    let reader = store.open_range(&key, 0, bytes.len() as u64).await.unwrap();
    assert_eq!(reader.size, bytes.len() as u64);
    assert_eq!(read(store, &key, 0, bytes.len() as u64).await, bytes);
    assert_eq!(listed(store).await, [(key, bytes.len() as u64)]);
    assert!(store.list_staged().await.unwrap().is_empty());
}

async fn range_reads(store: &dyn BlobStore) {
    let bytes = content(70_000, 2);
    let key = put(store, &bytes).await;
    let size = bytes.len() as u64;
    for (offset, len) in [(0, 1), (1, 1), (0, 1000), (12_345, 20_000), (size - 1, 1)] {
        let reader = store.open_range(&key, offset, len).await.unwrap();
        assert_eq!(
            reader.size, size,
            "the whole blob's size, whatever the range"
        );
        let got = read(store, &key, offset, len).await;
        assert_eq!(
            got,
            bytes[offset as usize..(offset + len) as usize],
            "{offset}+{len}"
        );
    }
    // An empty range reads nothing but still tells the size.
    let reader = store.open_range(&key, 10, 0).await.unwrap();
    assert_eq!(reader.size, size);
    assert!(read(store, &key, 10, 0).await.is_empty());
}

async fn missing_blobs_are_not_found(store: &dyn BlobStore) {
    let absent = sha256(b"never stored");
    assert!(matches!(
        store.size(&absent).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.open_range(&absent, 0, 10).await,
        Err(BlobError::NotFound(_))
    ));
    // Keys that are no sha256 never reach the storage.
    for bad in [
        "",
        "../etc/passwd",
        "ABCDEF",
        &absent[..63],
        &absent.to_uppercase(),
    ] {
        assert!(
            matches!(store.size(bad).await, Err(BlobError::NotFound(_))),
            "{bad:?}"
        );
    }
    // Deleting what is not there is fine.
    store.delete(&absent).await.unwrap();
}

async fn delete_removes_the_blob(store: &dyn BlobStore) {
    let kept = put(store, b"kept").await;
    let gone = put(store, b"deleted").await;
    store.delete(&gone).await.unwrap();
    assert!(matches!(
        store.size(&gone).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.open_range(&gone, 0, 1).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(listed(store).await, [(kept.clone(), 4)]);
    store.delete(&gone).await.unwrap();
    assert_eq!(read(store, &kept, 0, 4).await, b"kept");
}

async fn list_excludes_staged_uploads(store: &dyn BlobStore) {
    let pending = staged(store, &content(5000, 3)).await;
    let key = put(store, b"committed").await;
    assert_eq!(listed(store).await, [(key.clone(), 9)]);
    let staged_now = store.list_staged().await.unwrap();
    assert_eq!(staged_now.len(), 1, "{staged_now:?}");
    assert_eq!(staged_now[0].size, 5000);
    assert!(staged_now[0].modified > std::time::SystemTime::now() - Duration::from_secs(600));
    // Dropped uncommitted: nothing staged, nothing stored.
    drop(pending);
    assert!(store.list_staged().await.unwrap().is_empty());
    assert_eq!(listed(store).await, [(key, 9)]);
}

async fn recommit_refreshes_the_modified_time(store: &dyn BlobStore) {
    let bytes = b"shared content".to_vec();
    let key = put(store, &bytes).await;
    let first = store.list().await.unwrap()[0].modified;
    // Beyond any store's timestamp granularity (S3: a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(store, &bytes).await;
    let blobs = store.list().await.unwrap();
    assert_eq!(blobs.len(), 1);
    assert!(
        blobs[0].modified > first,
        "{:?} is not after {first:?}",
        blobs[0].modified
    );
    assert_eq!(read(store, &key, 0, bytes.len() as u64).await, bytes);
    assert!(store.list_staged().await.unwrap().is_empty());
}

async fn a_large_blob_goes_through(store: &dyn BlobStore) {
    // Above the multipart threshold, with parts of 8 MiB and a short last one.
    let len = 17 * 1024 * 1024 + 12_345;
    assert!(len as u64 > 2 * alpine_registry::blob::MULTIPART_THRESHOLD);
    let bytes = content(len, 4);
    let key = put(store, &bytes).await;
    assert_eq!(store.size(&key).await.unwrap(), len as u64);
    let back = read(store, &key, 0, len as u64).await;
    assert!(back == bytes, "the large blob reads back unchanged");
    // Across the boundary of the first part.
    let boundary = 8 * 1024 * 1024;
    assert_eq!(
        read(store, &key, boundary - 10, 20).await,
        bytes[boundary as usize - 10..boundary as usize + 10]
    );
    assert_eq!(listed(store).await, [(key, len as u64)]);
    assert!(store.list_staged().await.unwrap().is_empty());
}

async fn staged_uploads_are_listed_and_removed(store: &dyn BlobStore) {
    let first = staged(store, b"half an upload").await;
    let second = staged(store, b"another").await;
    let mut names: Vec<_> = store
        .list_staged()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.size))
        .collect();
    names.sort_by_key(|(_, size)| *size);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0].1, 7);
    assert_eq!(names[1].1, 14);
    store.remove_staged(&names[1].0).await.unwrap();
    let left = store.list_staged().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, names[0].0);
    // Gone already is fine; a name that is no plain file name is refused.
    store.remove_staged(&names[1].0).await.unwrap();
    for bad in ["", ".", "..", "../blobs", "a/b"] {
        assert!(store.remove_staged(bad).await.is_err(), "{bad:?}");
    }
    drop(first);
    drop(second);
    assert!(store.list_staged().await.unwrap().is_empty());
    assert!(listed(store).await.is_empty());
}

async fn concurrent_commits_all_land(store: &dyn BlobStore) {
    // More than the S3 store sends at once: the rest wait their turn.
    let contents: Vec<Vec<u8>> = (0..20).map(|i| content(10_000 + i, i as u32)).collect();
    let keys = futures_util::future::join_all(contents.iter().map(|bytes| put(store, bytes))).await;
    let mut expected: Vec<_> = keys
        .iter()
        .zip(&contents)
        .map(|(key, bytes)| (key.clone(), bytes.len() as u64))
        .collect();
    expected.sort();
    assert_eq!(listed(store).await, expected);
    for (key, bytes) in keys.iter().zip(&contents) {
        assert_eq!(&read(store, key, 0, bytes.len() as u64).await, bytes);
    }
    assert!(store.list_staged().await.unwrap().is_empty());
}

/// Each scenario once per store: `on_fs::NAME` and `on_s3::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_fs {
            $(
                #[tokio::test]
                async fn $name() {
                    let subject = super::fs_store();
                    super::$name(&*subject.store).await;
                }
            )*
        }
        mod on_s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((subject, _)) = super::s3_store() else {
                        return;
                    };
                    super::$name(&*subject.store).await;
                }
            )*
        }
    };
}

conformance!(
    stage_commit_and_read_back,
    range_reads,
    missing_blobs_are_not_found,
    delete_removes_the_blob,
    list_excludes_staged_uploads,
    recommit_refreshes_the_modified_time,
    a_large_blob_goes_through,
    staged_uploads_are_listed_and_removed,
    concurrent_commits_all_land,
);

/// The objects are `<prefix>/sha256/<ab>/<sha256>`, and other objects under the prefix are
/// not taken for blobs.
#[tokio::test]
async fn s3_objects_are_laid_out_by_sha256_under_the_prefix() {
    use object_store::ObjectStore;
    let Some((subject, config)) = s3_store() else {
        return;
    };
    let store = &*subject.store;
    let key = put(store, b"laid out").await;
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_endpoint(&config.endpoint)
        .with_allow_http(config.allow_http)
        .with_region(&config.region)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .build()
        .unwrap();
    let path =
        object_store::path::Path::from(format!("{}/sha256/{}/{key}", config.prefix, &key[..2]));
    let object = raw.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(object.as_ref(), b"laid out");
    for stray in [
        format!("{}/sha256/zz/{key}", config.prefix),
        format!("{}/sha256/{}/not-a-blob", config.prefix, &key[..2]),
        format!("{}/sha256/{key}", config.prefix),
        format!("{}/elsewhere/{}/{key}", config.prefix, &key[..2]),
    ] {
        raw.put(&stray.as_str().into(), b"stray".to_vec().into())
            .await
            .unwrap();
    }
    assert_eq!(listed(store).await, [(key, 8)]);
}

/// A store whose server is down: `ping` fails (within the bounded retries), and reads
/// say Unavailable, which the HTTP layer answers with 503 and `Retry-After`.
#[tokio::test]
async fn an_unreachable_s3_server_is_unavailable_not_an_internal_error() {
    use axum::response::IntoResponse;
    let port = common::free_port();
    let config = S3Config {
        bucket: "absent".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        allow_http: true,
        access_key_id: "key".into(),
        secret_access_key: "secret".into(),
        ..S3Config::default()
    };
    let subject = s3_store_with(&config);
    let store = &*subject.store;
    let started = std::time::Instant::now();
    let error = store.ping().await.unwrap_err();
    assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let error = store
        .open_range(&sha256(b"x"), 0, 1)
        .await
        .err()
        .expect("no server");
    assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");
    let response = alpine_registry::error::AppError::from(error).into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let staged = staged(store, b"upload").await;
    let error = store.commit(staged, &sha256(b"upload")).await.unwrap_err();
    assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");
    assert!(
        store.list_staged().await.unwrap().is_empty(),
        "a failed commit leaves no staged file"
    );
}

/// The bound on waiting for an S3 answer in the tests below
/// (`storage.s3.first_byte_timeout_secs`).
const FIRST_BYTE: Duration = Duration::from_secs(2);
/// What an answer may take beyond its bound on a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A store on a fresh prefix of the test bucket that it reaches through a relay, with
/// short bounds: one second to connect, `FIRST_BYTE` for an answer to start or a transfer
/// to move on, 3 retries begun within a second of the first try.
fn s3_store_through_relay() -> Option<(Subject, Relay)> {
    let Some(mut config) = s3::config() else {
        s3::note_skipped();
        return None;
    };
    let relay = Relay::to_endpoint(&config.endpoint);
    config.endpoint = relay.endpoint();
    config.connect_timeout_secs = 1;
    config.first_byte_timeout_secs = FIRST_BYTE.as_secs();
    config.max_retries = 3;
    config.retry_timeout_secs = 1;
    Some((s3_store_with(&config), relay))
}

/// Runs `what`, which must end within `FIRST_BYTE` and `MARGIN`; fails rather than hangs
/// when it does not end at all.
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after 30 s"));
    let took = started.elapsed();
    assert!(took <= FIRST_BYTE + MARGIN, "{what} took {took:?}");
    eprintln!("{what}: {took:?}");
    out
}

fn assert_unavailable(what: &str, error: Option<BlobError>) {
    assert!(
        matches!(error, Some(BlobError::Unavailable(_))),
        "{what}: {error:?}"
    );
}

/// A server that accepts connections and never answers: every operation says Unavailable
/// once its answer is `FIRST_BYTE` late (none is tried again: the retries end a second
/// after the first try), and the store works again once the server answers.
#[tokio::test]
async fn a_frozen_s3_server_is_unavailable_within_the_first_byte_timeout() {
    let Some((subject, relay)) = s3_store_through_relay() else {
        return;
    };
    let store = &*subject.store;
    let kept = put(store, b"stored before").await;
    relay.freeze();
    assert_unavailable("ping", bounded("ping", store.ping()).await.err());
    assert_unavailable("size", bounded("size", store.size(&kept)).await.err());
    let opened = bounded("open_range", store.open_range(&kept, 0, 5)).await;
    assert_unavailable("open_range", opened.err());
    let upload = staged(store, b"sent while frozen").await;
    let committed = bounded(
        "commit",
        store.commit(upload, &sha256(b"sent while frozen")),
    )
    .await;
    assert_unavailable("commit", committed.err());
    relay.thaw();
    store.ping().await.unwrap();
    assert_eq!(read(store, &kept, 0, 13).await, b"stored before");
}

/// A download whose answer stops coming midway fails `FIRST_BYTE` after the last byte,
/// with an error that says the storage is unavailable (503 for the client).
#[tokio::test]
async fn an_s3_download_that_stalls_midway_fails_within_the_first_byte_timeout() {
    let Some((subject, relay)) = s3_store_through_relay() else {
        return;
    };
    let store = &*subject.store;
    let bytes = content(4 << 20, 7);
    let key = put(store, &bytes).await;
    // Slow, so that little is on its way when it stops.
    relay.throttle(1 << 20);
    let mut reader = store.open_range(&key, 0, bytes.len() as u64).await.unwrap();
    let mut first = vec![0u8; 256 << 10];
    reader.body.read_exact(&mut first).await.unwrap();
    assert!(first == bytes[..first.len()]);
    relay.freeze();
    let mut rest = Vec::new();
    let error = bounded("the rest", reader.body.read_to_end(&mut rest))
        .await
        .unwrap_err();
    let answer = alpine_registry::error::AppError::from(BlobError::Io(error));
    assert!(answer.is_backend_unavailable(), "{answer:?}");
}

/// No bound limits a whole transfer: a download that takes twice `FIRST_BYTE` and more,
/// but never pauses that long, arrives whole.
#[tokio::test]
async fn a_slow_s3_download_that_keeps_moving_is_not_cut() {
    let Some((subject, relay)) = s3_store_through_relay() else {
        return;
    };
    let store = &*subject.store;
    let bytes = content(2 << 20, 8);
    let key = put(store, &bytes).await;
    relay.throttle(512 << 10);
    let started = std::time::Instant::now();
    let back = tokio::time::timeout(
        Duration::from_secs(60),
        read(store, &key, 0, bytes.len() as u64),
    )
    .await
    .expect("the download ends");
    assert!(
        started.elapsed() > 2 * FIRST_BYTE,
        "{:?}",
        started.elapsed()
    );
    assert!(back == bytes, "the slow download arrives unchanged");
}

/// Answers 500 are tried again (with backoff) and the operation then succeeds.
#[tokio::test]
async fn s3_server_errors_are_retried() {
    let Some((subject, relay)) = s3_store_through_relay() else {
        return;
    };
    let store = &*subject.store;
    relay.fail(2);
    let key = put(store, b"stored on the third try").await;
    assert_eq!(relay.failed(), 2);
    assert_eq!(read(store, &key, 0, 23).await, b"stored on the third try");
}

/// Answers 500 past the retries make the operation Unavailable (503 with `Retry-After`
/// for the client), not an internal error, after the configured number of tries.
#[tokio::test]
async fn s3_server_errors_past_the_retries_are_unavailable() {
    let Some((subject, relay)) = s3_store_through_relay() else {
        return;
    };
    let store = &*subject.store;
    relay.fail(u64::MAX);
    let upload = staged(store, b"refused").await;
    let committed = bounded("commit", store.commit(upload, &sha256(b"refused"))).await;
    assert_unavailable("commit", committed.err());
    assert_eq!(relay.failed(), 4, "the first try and 3 retries");
    let error = bounded("size", store.size(&sha256(b"refused"))).await.err();
    assert_unavailable("size", error);
    assert_unavailable("ping", bounded("ping", store.ping()).await.err());
    relay.fail(0);
    store.ping().await.unwrap();
}
