//! Startup recovery and `fsck`: what they find and what `--repair` fixes, on the blob
//! storage the tests run on (S3 when a test bucket is named, see `common::s3`). Damage is
//! done behind the registry's back (`Behind`: files in its blob directory, objects in its
//! bucket); files age by the registry's clock.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alpine_registry::clock::ManualClock;
use alpine_registry::registry::fsck::fsck;
use alpine_registry::store::RenderedIndex;
use common::*;

const REPO: &str = "/admin/v1/main";

async fn upload(server: &TestServer, name: &str) -> String {
    let response = server
        .put_admin(REPO, package(name, "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["sha256"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn fsck_finds_each_kind_of_damage_and_repair_fixes_what_it_can() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    let grace = Duration::from_secs(server.state.config.storage.orphan_grace_secs);
    let behind = Behind::of_server(&server);
    let a = upload(&server, "a").await;
    let b = upload(&server, "b").await;
    upload(&server, "c").await;
    let response = server
        .put_admin(REPO, package("d", "1.0-r0", "aarch64"))
        .await;
    assert_eq!(response.status(), 201);
    let report = fsck(&server.state, false).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Damage: a missing blob, an altered blob, tampered indexes, an orphan and a staged
    // upload left over.
    behind.remove(&a).await;
    let mut bytes = behind.read(&b).await;
    bytes[40] ^= 0xff;
    behind.write(&b, &bytes).await;
    let repo = server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .remove(0);
    server
        .state
        .store
        .publish_indexes(
            repo.id,
            repo.built_gen,
            vec![
                RenderedIndex {
                    arch: "x86_64".into(),
                    content: b"junk".to_vec(),
                    sha256: "0".repeat(64),
                    entries: 0,
                    signatures: Vec::new(),
                    adb: None,
                },
                // Signed by the owner's key, but listing nothing.
                RenderedIndex {
                    arch: "aarch64".into(),
                    content: signed_empty_index(&server).await,
                    sha256: "1".repeat(64),
                    entries: 0,
                    signatures: Vec::new(),
                    adb: None,
                },
            ],
            vec![],
            common::unix_now_ms(),
        )
        .await
        .unwrap();
    let orphan = "f".repeat(64);
    behind.write(&orphan, b"orphan").await;
    let tmp = server.staging_dir().join("upload-old");
    std::fs::write(&tmp, b"partial").unwrap();

    // Younger than the grace period, the orphan and the staged file may belong to an
    // upload in progress: not problems yet.
    let report = fsck(&server.state, false).await.unwrap();
    let text = report.problems.join("\n");
    assert!(text.contains(&format!("blob {a} is missing")), "{text}");
    assert!(text.contains("blob content has sha256"), "{text}");
    assert!(
        text.contains("x86_64: served index does not verify"),
        "{text}"
    );
    assert!(
        text.contains("aarch64: served index differs from a fresh render"),
        "{text}"
    );
    assert!(
        !text.contains(&orphan),
        "fresh orphans are left alone: {text}"
    );
    assert!(!text.contains("upload-old"), "{text}");
    assert_eq!(report.problems.len(), 4, "{text}");

    clock.advance(2 * grace);
    let report = fsck(&server.state, false).await.unwrap();
    let text = report.problems.join("\n");
    assert!(
        text.contains(&format!(
            "blob {orphan} (6 bytes) is referenced by no package"
        )),
        "{text}"
    );
    assert!(
        text.contains("temporary file upload-old is left over"),
        "{text}"
    );
    assert_eq!(report.problems.len(), 6, "{text}");
    assert!(report.repaired.is_empty());
    assert!(
        behind.exists(&orphan).await,
        "fsck without --repair changes nothing"
    );

    let report = fsck(&server.state, true).await.unwrap();
    assert_eq!(report.problems.len(), 6);
    assert!(!behind.exists(&orphan).await);
    assert!(!tmp.exists());
    assert!(
        behind.exists(&b).await,
        "a referenced blob is never deleted, even when damaged"
    );
    // Only the blob damage remains; the index is whole again.
    let report = fsck(&server.state, false).await.unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    let text = server
        .verified_index("admin", "/admin/v1/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["a", "b", "c"]);
    let text = server
        .verified_index("admin", "/admin/v1/main/aarch64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["d"]);
    server.stop().await;
}

async fn signed_empty_index(server: &TestServer) -> Vec<u8> {
    use alpine_registry::apk::index::{sign_index, write_unsigned_index};
    use alpine_registry::apk::sign::SignatureAlgorithm;
    let owner = server
        .state
        .store
        .owner_by_name("admin")
        .await
        .unwrap()
        .unwrap();
    let key = server.state.keys.get_or_create(&owner).await.unwrap();
    let unsigned = write_unsigned_index("admin/v1/main", &[]).unwrap();
    sign_index(
        &unsigned,
        &key,
        &[SignatureAlgorithm::Rsa256, SignatureAlgorithm::Rsa],
    )
    .unwrap()
}

#[tokio::test]
async fn startup_recovery_rebuilds_lagging_indexes_and_collects_orphans() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server =
        TestServer::start_with_clock(|c| c.storage.orphan_grace_secs = 0, clock.clone()).await;
    let behind = Behind::of_server(&server);
    upload(&server, "a").await;
    let repo = server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .remove(0);
    // As if the process died between a row's commit and its index build.
    let wanted = server.state.store.bump_generation(repo.id).await.unwrap();
    let orphan = "d".repeat(64);
    behind.write(&orphan, b"orphan").await;
    std::fs::write(server.staging_dir().join("upload-x"), b"partial").unwrap();
    // Versions before staging in blob storage received uploads in <data_dir>/tmp.
    let legacy = server.dir.path().join("tmp");
    std::fs::create_dir(&legacy).unwrap();
    std::fs::write(legacy.join("upload-y.apk"), b"partial").unwrap();
    // Older than the grace period (none) by the registry's clock.
    clock.advance(Duration::from_secs(10));

    alpine_registry::recover(&server.state).await.unwrap();
    let repo = server
        .state
        .store
        .repository_by_id(repo.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(repo.built_gen, wanted);
    assert!(!behind.exists(&orphan).await);
    assert!(server.staged().await.is_empty());
    assert!(!legacy.exists());
    let text = server
        .verified_index("admin", "/admin/v1/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["a"]);
    server.stop().await;
}

/// A deleted package's file stays for `storage.orphan_grace_secs` after the delete,
/// however old the file is, so that a database dump taken before a copy of the blobs
/// finds its files in the copy; then orphan collection removes it, unless another package
/// still uses it.
#[tokio::test]
async fn a_deleted_packages_file_stays_for_the_grace_period_then_goes_unless_shared() {
    use alpine_registry::registry::fsck::collect_orphans;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    let grace = Duration::from_secs(server.state.config.storage.orphan_grace_secs);
    let bytes = package("shared", "1.0-r0", "x86_64");
    assert_eq!(server.put_admin(REPO, bytes.clone()).await.status(), 201);
    assert_eq!(
        server
            .put_admin("/admin/v1/other", bytes.clone())
            .await
            .status(),
        201
    );
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    // An old file by now.
    clock.advance(2 * grace);
    let admin = Some(("admin", ADMIN_TOKEN));
    assert_eq!(
        server
            .delete("/admin/v1/main/x86_64/shared-1.0-r0.apk", admin)
            .await
            .status(),
        204
    );
    collect_orphans(&server.state, grace).await.unwrap();
    assert!(
        server.stored_blobs().await.contains(&sha),
        "still used by admin/v1/other"
    );
    assert_eq!(
        server
            .delete("/admin/v1/other/x86_64/shared-1.0-r0.apk", admin)
            .await
            .status(),
        204
    );
    collect_orphans(&server.state, grace).await.unwrap();
    assert!(
        server.stored_blobs().await.contains(&sha),
        "kept after its last package went"
    );
    let report = fsck(&server.state, false).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    clock.advance(grace - Duration::from_secs(1));
    collect_orphans(&server.state, grace).await.unwrap();
    assert!(server.stored_blobs().await.contains(&sha));

    clock.advance(Duration::from_secs(2));
    let removed = collect_orphans(&server.state, grace).await.unwrap();
    assert_eq!(removed, vec![sha.clone()]);
    assert!(!server.stored_blobs().await.contains(&sha));
    server.stop().await;
}

/// The blob storage of a registry reached directly, as an operator's tool would, not
/// through the registry: its blob directory, or its bucket and prefix.
enum Behind {
    Fs(std::path::PathBuf),
    S3 {
        bucket: object_store::aws::AmazonS3,
        prefix: String,
    },
}

impl Behind {
    /// The storage `storage` configures (`blob_dir` is where `fs` keeps blobs).
    fn of(storage: &alpine_registry::config::StorageConfig, blob_dir: &std::path::Path) -> Behind {
        match storage.backend {
            alpine_registry::config::StorageBackend::Fs => Behind::Fs(blob_dir.to_path_buf()),
            alpine_registry::config::StorageBackend::S3 => {
                let s3 = &storage.s3;
                let bucket = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_endpoint(&s3.endpoint)
                    .with_allow_http(s3.allow_http)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .build()
                    .unwrap();
                Behind::S3 {
                    bucket,
                    prefix: s3.prefix.clone(),
                }
            }
        }
    }

    /// The blob storage of `server`.
    fn of_server(server: &TestServer) -> Behind {
        let config = &server.state.config;
        Behind::of(&config.storage, &config.blob_dir())
    }

    fn object(prefix: &str, sha256: &str) -> object_store::path::Path {
        let key = format!("sha256/{}/{sha256}", &sha256[..2]);
        match prefix.trim_matches('/') {
            "" => key.as_str().into(),
            prefix => format!("{prefix}/{key}").as_str().into(),
        }
    }

    async fn remove(&self, sha256: &str) {
        use object_store::ObjectStore;
        match self {
            Behind::Fs(dir) => std::fs::remove_file(blob_file(dir, sha256)).unwrap(),
            Behind::S3 { bucket, prefix } => {
                bucket.delete(&Self::object(prefix, sha256)).await.unwrap()
            }
        }
    }

    /// Writes `bytes` as the blob `sha256`, whatever their digest.
    async fn write(&self, sha256: &str, bytes: &[u8]) {
        use object_store::ObjectStore;
        match self {
            Behind::Fs(dir) => {
                let path = blob_file(dir, sha256);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Behind::S3 { bucket, prefix } => {
                bucket
                    .put(&Self::object(prefix, sha256), bytes.to_vec().into())
                    .await
                    .unwrap();
            }
        }
    }

    async fn read(&self, sha256: &str) -> Vec<u8> {
        use object_store::ObjectStore;
        match self {
            Behind::Fs(dir) => std::fs::read(blob_file(dir, sha256)).unwrap(),
            Behind::S3 { bucket, prefix } => bucket
                .get(&Self::object(prefix, sha256))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        }
    }

    async fn exists(&self, sha256: &str) -> bool {
        use object_store::ObjectStore;
        match self {
            Behind::Fs(dir) => blob_file(dir, sha256).exists(),
            Behind::S3 { bucket, prefix } => {
                match bucket.head(&Self::object(prefix, sha256)).await {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

fn blob_file(blob_dir: &std::path::Path, sha256: &str) -> std::path::PathBuf {
    blob_dir.join("sha256").join(&sha256[..2]).join(sha256)
}

/// A package with `len` bytes of data that does not compress.
fn package_of_size(name: &str, len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    alpine_registry::apk::builder::PackageBuilder::new(name, "1.0-r0", "x86_64")
        .file(&format!("usr/share/{name}/data"), &data)
        .build()
}

/// A listed package whose file is gone from blob storage (a restore that copied the
/// blobs before the database dump): its download, small (read whole) or large
/// (streamed), answers 503 with a message that names `alpine-registry fsck`, and the log
/// has it as an error; never 500. On the backends the tests run on (S3 when a test bucket
/// is named).
#[test]
fn a_listed_package_whose_blob_is_missing_answers_503_naming_fsck() {
    use common::process::ChildServer;
    let server = ChildServer::start_on_backends(ADMIN_TOKEN, &[]);
    let mut storage = alpine_registry::config::StorageConfig::default();
    if let Some(bucket) = &server.backends.s3 {
        storage.backend = alpine_registry::config::StorageBackend::S3;
        storage.s3 = bucket.clone();
    }
    let behind = Behind::of(&storage, &server.dir.path().join("data/blobs"));
    let client = reqwest::blocking::Client::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (name, bytes) in [
        ("small", package("small", "1.0-r0", "x86_64")),
        ("large", package_of_size("large", 512 * 1024)),
    ] {
        let response = client
            .put(server.url(REPO))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(bytes.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 201, "{name}");
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        runtime.block_on(behind.remove(&sha256));
        let path = format!("{REPO}/x86_64/{name}-1.0-r0.apk");
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let response = client
                .request(method.clone(), server.url(&path))
                .basic_auth("admin", Some(ADMIN_TOKEN))
                .send()
                .unwrap();
            assert_eq!(response.status(), 503, "{method} {name}");
            if method == reqwest::Method::GET {
                let body: serde_json::Value = response.json().unwrap();
                let message = body["message"].as_str().unwrap();
                assert!(message.contains("alpine-registry fsck"), "{message}");
                assert!(message.contains(&sha256), "{message}");
            }
        }
        let log = std::fs::read_to_string(&server.log).unwrap();
        assert!(
            log.lines()
                .any(|line| line.contains(" ERROR ") && line.contains(&sha256)),
            "{log}"
        );
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(!log.contains("internal error"), "a 500 was answered: {log}");
}
