//! Blob storage through HTTP: uploads are staged next to the blobs (so a blob directory
//! on another filesystem than the data directory works), a staged file never outlives its
//! upload, and staged files an interrupted upload left are collected once stale. All but
//! the first test run on S3 too when the tests do (see `common::s3`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::*;

const REPO: &str = "/admin/v1/main";

/// Overrides where the cross-device test puts its blob directory (default `/dev/shm`).
const OTHER_FS_VAR: &str = "ALPINE_REGISTRY_TEST_OTHER_FS";

/// A fresh directory on another filesystem than `data_dir`. Panics, saying what is
/// missing, when there is none: the test it serves would prove nothing on one filesystem.
fn dir_on_another_filesystem(data_dir: &Path) -> tempfile::TempDir {
    let base = std::env::var_os(OTHER_FS_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let data_dev = std::fs::metadata(data_dir).unwrap().dev();
    let base_dev = match std::fs::metadata(&base) {
        Ok(meta) if meta.is_dir() => meta.dev(),
        _ => panic!(
            "this test needs a writable directory on another filesystem than the temporary \
             directory ({}): {} does not exist; mount a tmpfs there or set {OTHER_FS_VAR}=DIR",
            data_dir.display(),
            base.display()
        ),
    };
    assert_ne!(
        base_dev,
        data_dev,
        "this test needs a directory on another filesystem than the temporary directory \
         ({}), but {} is on the same device; set {OTHER_FS_VAR}=DIR or TMPDIR so that they \
         differ",
        data_dir.display(),
        base.display()
    );
    tempfile::tempdir_in(&base).unwrap_or_else(|e| {
        panic!(
            "this test needs a writable directory on another filesystem: {}: {e}",
            base.display()
        )
    })
}

fn blob_path(blob_dir: &Path, sha256: &str) -> PathBuf {
    blob_dir.join("sha256").join(&sha256[..2]).join(sha256)
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

async fn fsck(server: &TestServer, repair: bool) -> alpine_registry::registry::fsck::Report {
    alpine_registry::registry::fsck::fsck(&server.state, repair)
        .await
        .unwrap()
}

#[tokio::test]
async fn upload_with_the_blob_dir_on_another_filesystem() {
    let mut other = None;
    let server = TestServer::start_with(|c| {
        on_fs(c);
        let dir = dir_on_another_filesystem(&c.storage.data_dir);
        c.storage.blob_dir = Some(dir.path().to_path_buf());
        other = Some(dir);
    })
    .await;
    let blob_dir = other.as_ref().unwrap().path().to_path_buf();
    let bytes = package("hello", "1.0-r0", "x86_64");

    let response = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let body: serde_json::Value = response.json().await.unwrap();
    let sha256 = body["sha256"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(blob_path(&blob_dir, &sha256)).unwrap(), bytes);
    let download = server
        .get("/admin/v1/main/x86_64/hello-1.0-r0.apk", None)
        .await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert!(
        staged_files(&blob_dir).is_empty(),
        "{:?}",
        staged_files(&blob_dir)
    );

    // The same content again, into another repository: the stored blob is reused and made
    // fresh again, so orphan collection cannot take it before its new row exists.
    age(&blob_path(&blob_dir, &sha256), Duration::from_secs(7200));
    assert_eq!(
        server
            .put_admin("/admin/v1/other", bytes.clone())
            .await
            .status(),
        201
    );
    let modified = std::fs::metadata(blob_path(&blob_dir, &sha256))
        .unwrap()
        .modified()
        .unwrap();
    assert!(modified > SystemTime::now() - Duration::from_secs(600));
    assert!(
        staged_files(&blob_dir).is_empty(),
        "{:?}",
        staged_files(&blob_dir)
    );
    let download = server
        .get("/admin/v1/other/x86_64/hello-1.0-r0.apk", None)
        .await;
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let report = fsck(&server, false).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    server.stop().await;
}

#[tokio::test]
async fn rejected_uploads_leave_no_staged_file() {
    let server = TestServer::start_with(|c| c.limits.max_upload_bytes = 4096).await;

    let response = server
        .put_admin(REPO, b"this is not a package".repeat(20))
        .await;
    assert_eq!(response.status(), 400);
    let mut truncated = package("cut", "1.0-r0", "x86_64");
    truncated.truncate(truncated.len() / 2);
    assert_eq!(server.put_admin(REPO, truncated).await.status(), 400);
    assert_eq!(server.put_admin(REPO, Vec::new()).await.status(), 400);
    // Over the limit while streaming (no Content-Length to refuse it early).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![7u8; 1000])).collect();
    let response = server
        .client
        .put(server.url(REPO))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    assert!(
        server.staged().await.is_empty(),
        "{:?}",
        server.staged().await
    );
    assert!(server.stored_blobs().await.is_empty(), "no blob stored");
    assert!(server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .is_empty());
    server.stop().await;
}

#[tokio::test]
async fn stale_staged_files_are_collected_and_fresh_ones_kept() {
    let server = TestServer::start().await;
    let staging = server.staging_dir();
    let stale = staging.join("upload-stale");
    std::fs::write(&stale, b"half an upload").unwrap();
    age(&stale, Duration::from_secs(7200));
    let fresh = staging.join("upload-fresh");
    std::fs::write(&fresh, b"an upload in progress").unwrap();

    let report = fsck(&server, false).await;
    assert_eq!(
        report.problems,
        ["temporary file upload-stale is left over"],
        "a staged file is neither a blob nor an orphan"
    );
    assert!(stale.exists());

    let report = fsck(&server, true).await;
    assert_eq!(report.repaired, ["temporary file upload-stale removed"]);
    assert!(!stale.exists());
    assert!(fresh.exists(), "younger than storage.orphan_grace_secs");
    assert!(fsck(&server, false).await.problems.is_empty());

    // Orphan collection leaves staged files alone, however old: they are not blobs.
    age(&fresh, Duration::from_secs(7200));
    let removed = alpine_registry::registry::fsck::collect_orphans(&server.state, Duration::ZERO)
        .await
        .unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    assert!(fresh.exists());

    // At start, before any upload of this process can be in progress, every staged file
    // goes; on PostgreSQL with a blob directory, which its instances may share, only those
    // older than the grace period (another instance may be writing the others).
    let recent = staging.join("upload-recent");
    std::fs::write(&recent, b"half an upload").unwrap();
    alpine_registry::recover(&server.state).await.unwrap();
    assert!(!fresh.exists(), "older than storage.orphan_grace_secs");
    if server.database_url().is_some() && !server.on_s3() {
        assert!(recent.exists(), "another instance may be receiving it");
        assert_eq!(server.staged().await.len(), 1);
    } else {
        assert!(server.staged().await.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn an_upload_in_progress_is_staged_and_survives_repair() {
    let server = TestServer::start_with(|c| c.storage.orphan_grace_secs = 60).await;
    let staging = server.staging_dir();
    let bytes = package("slow", "1.0-r0", "x86_64");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let request = server
        .client
        .put(server.url(REPO))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let request = tokio::spawn(request);
    let half = bytes.len() / 2;
    tx.send(Ok(bytes[..half].to_vec())).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = loop {
        let staged: Vec<PathBuf> = server
            .staged()
            .await
            .iter()
            .map(|name| staging.join(name))
            .collect();
        if staged.len() == 1 && std::fs::metadata(&staged[0]).unwrap().len() == half as u64 {
            break staged[0].clone();
        }
        assert!(Instant::now() < deadline, "no staged file: {staged:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let report = fsck(&server, true).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(staged.exists());

    tx.send(Ok(bytes[half..].to_vec())).await.unwrap();
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 201);
    assert!(server.staged().await.is_empty());
    let download = server
        .get("/admin/v1/main/x86_64/slow-1.0-r0.apk", None)
        .await;
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());
    server.stop().await;
}
