//! End-to-end tests through real HTTP: publish, index, download, delete, noarch,
//! conditional requests and the status codes of the interface.

mod common;

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::store::Role;
use common::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;

const REPO: &str = "/admin/v3.21/main";
const INDEX: &str = "/admin/v3.21/main/x86_64/APKINDEX.tar.gz";

#[tokio::test]
async fn publish_then_install_path_works() {
    let server = TestServer::start().await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    let response = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], "hello");
    assert_eq!(body["version"], "1.0-r0");
    assert_eq!(body["arch"], "x86_64");
    assert_eq!(body["size"], bytes.len());
    assert_eq!(body["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert!(body["checksum"].as_str().unwrap().starts_with("Q1"));
    assert_eq!(body["path"], "/admin/v3.21/main/x86_64/hello-1.0-r0.apk");

    // Read-your-writes: the index served right after the 201 lists the package.
    let text = server.verified_index("admin", INDEX, None).await;
    assert!(text.contains("P:hello\nV:1.0-r0\nA:x86_64\n"), "{text}");
    assert!(text.contains(&format!("C:{}\n", body["checksum"].as_str().unwrap())));
    assert!(text.contains(&format!("S:{}\n", bytes.len())));

    let download = server
        .get("/admin/v3.21/main/x86_64/hello-1.0-r0.apk", None)
        .await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.headers()["etag"],
        format!("\"{}\"", hex::encode(Sha256::digest(&bytes))).as_str()
    );
    assert_eq!(download.bytes().await.unwrap().as_ref(), bytes.as_slice());
    server.stop().await;
}

#[tokio::test]
async fn real_abuild_packages_give_the_index_lines_apk_index_writes() {
    let server = TestServer::start().await;
    for file in [
        "gitea-test-1.4.1-r3.apk",
        "forgejo-noarch-test-1.0.0-r0.apk",
        "forgejo-noarch-test-openrc-1.0.0-r0.apk",
    ] {
        let response = server.put_admin(REPO, fixture(file)).await;
        assert_eq!(response.status(), 201, "{file}");
    }
    let text = server.verified_index("admin", INDEX, None).await;
    let expected = std::fs::read_to_string(fixture_path("EXPECTED.md")).unwrap();
    let block = expected
        .split("```")
        .nth(1)
        .expect("code block in EXPECTED.md")
        .trim_start_matches('\n')
        .replace("A:noarch", "A:x86_64");
    assert_eq!(text, block);
    server.stop().await;
}

#[tokio::test]
async fn index_has_description_and_is_deterministic() {
    let server = TestServer::start().await;
    server
        .put_admin(REPO, package("b", "1.0-r0", "x86_64"))
        .await;
    server
        .put_admin(REPO, package("a", "2.0-r0", "x86_64"))
        .await;
    server
        .put_admin(REPO, package("a", "10.0-r0", "x86_64"))
        .await;
    let text = server.verified_index("admin", INDEX, None).await;
    // Sorted by name, then by apk version order (2.0 < 10.0).
    assert_eq!(index_names(&text), ["a", "a", "b"]);
    let a = text.find("V:2.0-r0").unwrap();
    let b = text.find("V:10.0-r0").unwrap();
    assert!(a < b, "versions in apk order");
    let first = server.get(INDEX, None).await.bytes().await.unwrap();
    let generation_before = server.state.indexer.builds();
    // A rebuild from the same rows yields the same bytes.
    let repo = server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .remove(0);
    let owner = server
        .state
        .store
        .owner_by_name("admin")
        .await
        .unwrap()
        .unwrap();
    let generation = server.state.store.bump_generation(repo.id).await.unwrap();
    server
        .state
        .indexer
        .wait_built(&owner, &repo, generation)
        .await
        .unwrap();
    assert!(server.state.indexer.builds() > generation_before);
    let second = server.get(INDEX, None).await.bytes().await.unwrap();
    let (_, unsigned_first) = alpine_registry::apk::sign::split_signed(&first).unwrap();
    let (_, unsigned_second) = alpine_registry::apk::sign::split_signed(&second).unwrap();
    assert_eq!(unsigned_first, unsigned_second);
    // DESCRIPTION names owner/branch/repository.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(unsigned_first));
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().to_string();
        if name == "DESCRIPTION" {
            let mut d = String::new();
            std::io::Read::read_to_string(&mut entry, &mut d).unwrap();
            assert_eq!(d, "admin/v3.21/main");
        }
        names.push(name);
    }
    assert_eq!(names, ["DESCRIPTION", "APKINDEX"]);
    server.stop().await;
}

/// Indexes updated in place after each change say what a full render of the same rows
/// says, signed by the owner's key, across chunk cuts and merges, noarch packages and
/// deletes; and most builds are updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_indexes_match_a_full_render() {
    use alpine_registry::apk::index::verified_content;
    let server = Arc::new(TestServer::start().await);
    let state = &server.state;
    let owner = state.store.owner_by_name("admin").await.unwrap().unwrap();
    let key = state.keys.get_or_create(&owner).await.unwrap();
    let public_pem = key.public_key_pem().unwrap();
    let check = |phase: &'static str| {
        let server = server.clone();
        let (owner, key, public_pem) = (owner.clone(), key.clone(), public_pem.clone());
        async move {
            let repo = server
                .state
                .store
                .list_repositories(None, None, None)
                .await
                .unwrap();
            let repo = &repo[0];
            let (_, fresh, _) = server
                .state
                .indexer
                .render(&owner, repo, None)
                .await
                .unwrap();
            assert_eq!(fresh.len(), 2, "{phase}: x86_64 and aarch64");
            for fresh in fresh {
                let served = server
                    .get(
                        &format!("/admin/v3.21/main/{}/APKINDEX.tar.gz", fresh.arch),
                        None,
                    )
                    .await
                    .bytes()
                    .await
                    .unwrap();
                let served = verified_content(&served, &public_pem, key.key_name())
                    .unwrap_or_else(|e| panic!("{phase}/{}: {e}", fresh.arch));
                let expected =
                    verified_content(&fresh.content, &public_pem, key.key_name()).unwrap();
                assert!(
                    served == expected,
                    "{phase}/{}: content differs",
                    fresh.arch
                );
            }
        }
    };
    // 8 clients: several changes per build, more than two chunks' worth per index.
    let uploads: Vec<(String, String, &str)> = (0..330)
        .map(|i| {
            let arch = match i % 6 {
                0 => "noarch",
                1 => "aarch64",
                _ => "x86_64",
            };
            (
                format!("pkg-{:03}", (i * 37) % 330),
                format!("1.{}-r0", i % 4),
                arch,
            )
        })
        .collect();
    let uploads = Arc::new(std::sync::Mutex::new(uploads));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, uploads) = (server.clone(), uploads.clone());
            tokio::spawn(async move {
                loop {
                    let Some((name, version, arch)) = uploads.lock().unwrap().pop() else {
                        break;
                    };
                    let response = server.put_admin(REPO, package(&name, &version, arch)).await;
                    assert_eq!(response.status(), 201, "{name}-{version} {arch}");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    check("after uploads").await;
    // While uploads ran, an architecture appearing in a change (aarch64 after x86_64, in
    // whatever order the clients got there) takes a full build.
    let (uploads_built, uploads_incremental) =
        (state.indexer.builds(), state.indexer.incremental_builds());
    assert!(
        uploads_incremental * 2 >= uploads_built,
        "only {uploads_incremental} of {uploads_built} builds were updates"
    );
    // Deletes, one run of neighbours (a chunk shrinks) and scattered ones, noarch too.
    for i in (0..330).filter(|i| i % 11 == 0 || (100..160).contains(i)) {
        let arch = match i % 6 {
            0 => "noarch",
            1 => "aarch64",
            _ => "x86_64",
        };
        let file = format!("pkg-{:03}-1.{}-r0.apk", (i * 37) % 330, i % 4);
        let served_in = if arch == "noarch" { "x86_64" } else { arch };
        let response = server
            .delete(
                &format!("/admin/v3.21/main/{served_in}/{file}"),
                Some(("admin", ADMIN_TOKEN)),
            )
            .await;
        assert_eq!(response.status(), 204, "{file}");
    }
    check("after deletes").await;
    // One delete at a time: each is a build, and each an update of the kept state.
    let builds = state.indexer.builds() - uploads_built;
    let incremental = state.indexer.incremental_builds() - uploads_incremental;
    assert!(
        incremental == builds && builds > 50,
        "{incremental} of {builds} builds of the deletes were updates"
    );
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn key_endpoints_serve_the_key_named_in_the_index() {
    let server = TestServer::start().await;
    server
        .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
        .await;
    let key = server.get("/admin/key", None).await;
    assert_eq!(key.status(), 200);
    assert_eq!(key.headers()["content-type"], "application/x-pem-file");
    let disposition = key.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let keyname = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap()
        .to_string();
    assert!(
        keyname.starts_with("admin-") && keyname.ends_with(".rsa.pub"),
        "{keyname}"
    );
    let pem = key.text().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let named = server.get(&format!("/admin/keys/{keyname}"), None).await;
    assert_eq!(named.status(), 200);
    assert_eq!(named.text().await.unwrap(), pem);
    assert_eq!(
        server.get("/admin/keys/other.rsa.pub", None).await.status(),
        404
    );
    // Unknown owners answer anonymous callers like private ones.
    assert_eq!(server.get("/nobody/key", None).await.status(), 401);
    assert_eq!(
        server
            .get("/nobody/key", Some(("admin", ADMIN_TOKEN)))
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn noarch_packages_appear_in_every_architecture() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .put_admin(REPO, package("tool", "1.0-r0", "noarch"))
            .await
            .status(),
        201
    );
    for arch in ["x86_64", "aarch64", "riscv64"] {
        let text = server
            .verified_index(
                "admin",
                &format!("/admin/v3.21/main/{arch}/APKINDEX.tar.gz"),
                None,
            )
            .await;
        assert!(
            text.contains(&format!("P:tool\nV:1.0-r0\nA:{arch}\n")),
            "{text}"
        );
        let download = server
            .get(&format!("/admin/v3.21/main/{arch}/tool-1.0-r0.apk"), None)
            .await;
        assert_eq!(
            download.status(),
            200,
            "{arch} falls back to the noarch file"
        );
    }
    // A concrete package joins the noarch one in its architecture only.
    server
        .put_admin(REPO, package("bin", "1.0-r0", "x86_64"))
        .await;
    let x86 = server.verified_index("admin", INDEX, None).await;
    assert_eq!(index_names(&x86), ["bin", "tool"]);
    let arm = server
        .verified_index("admin", "/admin/v3.21/main/aarch64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&arm), ["tool"]);
    // Unknown architecture names get no index of noarch packages.
    assert_eq!(
        server
            .get("/admin/v3.21/main/vax/APKINDEX.tar.gz", None)
            .await
            .status(),
        404
    );

    // Same name and version as noarch and concrete: 409 both ways.
    let clash = server
        .put_admin(REPO, package("tool", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(clash.status(), 409);
    let clash = server
        .put_admin(REPO, package("bin", "1.0-r0", "noarch"))
        .await;
    assert_eq!(clash.status(), 409);

    // Deleting the noarch package through an architecture path removes it everywhere.
    let gone = server
        .delete(
            "/admin/v3.21/main/aarch64/tool-1.0-r0.apk",
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(gone.status(), 204);
    // aarch64 was served (from the noarch package alone): it stays, empty.
    let aarch64 = server
        .verified_index("admin", "/admin/v3.21/main/aarch64/APKINDEX.tar.gz", None)
        .await;
    assert!(index_names(&aarch64).is_empty(), "{aarch64}");
    // An architecture never served is still unknown.
    assert_eq!(
        server
            .get("/admin/v3.21/main/armv7/APKINDEX.tar.gz", None)
            .await
            .status(),
        404
    );
    let x86 = server.verified_index("admin", INDEX, None).await;
    assert_eq!(index_names(&x86), ["bin"]);
    server.stop().await;
}

#[tokio::test]
async fn delete_removes_from_index_before_answering() {
    let server = TestServer::start().await;
    let admin = Some(("admin", ADMIN_TOKEN));
    server
        .put_admin(REPO, package("one", "1.0-r0", "x86_64"))
        .await;
    server
        .put_admin(REPO, package("two", "1.0-r0", "x86_64"))
        .await;
    let response = server
        .delete("/admin/v3.21/main/x86_64/one-1.0-r0.apk", admin)
        .await;
    assert_eq!(response.status(), 204);
    let text = server.verified_index("admin", INDEX, None).await;
    assert_eq!(index_names(&text), ["two"]);
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/one-1.0-r0.apk", None)
            .await
            .status(),
        404
    );
    assert_eq!(
        server
            .delete("/admin/v3.21/main/x86_64/one-1.0-r0.apk", admin)
            .await
            .status(),
        404
    );
    // The last package of the architecture goes: the index stays, signed and empty, so
    // that apk replaces its cached copy instead of keeping it.
    assert_eq!(
        server
            .delete("/admin/v3.21/main/x86_64/two-1.0-r0.apk", admin)
            .await
            .status(),
        204
    );
    let text = server.verified_index("admin", INDEX, None).await;
    assert!(index_names(&text).is_empty(), "{text}");
    let bytes = server.get(INDEX, None).await.bytes().await.unwrap();
    let (_, unsigned) = alpine_registry::apk::sign::split_signed(&bytes).unwrap();
    assert_eq!(
        index_entry(unsigned, "DESCRIPTION").as_deref(),
        Some("admin/v3.21/main")
    );
    // Re-uploading after delete works (the documented way to replace a package).
    assert_eq!(
        server
            .put_admin(REPO, package("one", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    server.stop().await;
}

/// Two deletes of one file at once (a client's retry racing its first attempt): one
/// removes it (204), the other finds nothing (404).
#[tokio::test]
async fn a_delete_racing_another_delete_of_the_same_file_is_404() {
    let server = TestServer::start().await;
    let admin = Some(("admin", ADMIN_TOKEN));
    let file = "/admin/v3.21/main/x86_64/twice-1.0-r0.apk";
    for round in 0..5 {
        let response = server
            .put_admin(REPO, package("twice", "1.0-r0", "x86_64"))
            .await;
        assert_eq!(response.status(), 201, "round {round}");
        let (a, b) = tokio::join!(server.delete(file, admin), server.delete(file, admin));
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort();
        assert_eq!(statuses, [204, 404], "round {round}");
        let body: serde_json::Value = if a.status() == 404 { a } else { b }.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("not found"),
            "{body}"
        );
        assert_eq!(server.get(file, None).await.status(), 404);
    }
    server.stop().await;
}

#[tokio::test]
async fn duplicate_upload_is_a_conflict() {
    let server = TestServer::start().await;
    assert_eq!(
        server
            .put_admin(REPO, package("dup", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let again = server
        .put_admin(
            REPO,
            PackageBuilder::new("dup", "1.0-r0", "x86_64")
                .file("x", b"other")
                .build(),
        )
        .await;
    assert_eq!(again.status(), 409);
    let body: serde_json::Value = again.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("delete it"),
        "{body}"
    );
    // Another repository or branch is another namespace.
    assert_eq!(
        server
            .put_admin("/admin/v3.21/community", package("dup", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    assert_eq!(
        server
            .put_admin("/admin/edge/main", package("dup", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    server.stop().await;
}

/// Index builds so far, as `/metrics` counts them (every kind).
async fn index_builds(server: &TestServer) -> f64 {
    let response = server.get("/metrics", Some(("admin", ADMIN_TOKEN))).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("alpine_registry_index_builds_total{"))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// What clients are served of a repository's index and a package file, and every row
/// the database holds for them: equal before and after an upload that changed nothing.
#[derive(Debug, PartialEq)]
struct Served {
    index_sha256: String,
    index_etag: String,
    file_etag: String,
    repositories: Vec<alpine_registry::store::RepositoryRow>,
    packages: Vec<alpine_registry::store::PackageRow>,
    /// Repository, architecture, generation, sha256, build time and modification time of
    /// each served index.
    indexes: Vec<(i64, String, i64, String, i64, Option<i64>)>,
}

async fn served(server: &TestServer, file: &str) -> Served {
    let index = server.get(INDEX, None).await;
    assert_eq!(index.status(), 200);
    let index_etag = index.headers()["etag"].to_str().unwrap().to_string();
    let download = server.get(file, None).await;
    assert_eq!(download.status(), 200);
    let dump = server.state.store.export().await.unwrap();
    Served {
        index_etag,
        index_sha256: hex::encode(Sha256::digest(index.bytes().await.unwrap())),
        file_etag: download.headers()["etag"].to_str().unwrap().to_string(),
        repositories: dump.repositories,
        packages: dump.packages,
        indexes: dump
            .indexes
            .into_iter()
            .map(|i| {
                (
                    i.repository_id,
                    i.arch,
                    i.generation,
                    i.sha256,
                    i.built_at,
                    i.modified_ms,
                )
            })
            .collect(),
    }
}

/// The fields of a 201 that a repeated answer repeats (all but `repository_created`, true
/// for the upload that created the repository).
fn upload_fields(body: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    [
        "owner",
        "branch",
        "repository",
        "name",
        "version",
        "arch",
        "checksum",
        "sha256",
        "size",
        "path",
        "url",
    ]
    .iter()
    .map(|key| {
        let value = body[*key].clone();
        assert!(!value.is_null(), "{key} in {body}");
        (key.to_string(), value)
    })
    .collect()
}

#[tokio::test]
async fn a_retried_upload_of_the_same_bytes_is_a_conflict_that_says_so() {
    let server = TestServer::start().await;
    let bytes = package("retry", "1.0-r0", "x86_64");
    let file = "/admin/v3.21/main/x86_64/retry-1.0-r0.apk";
    let first = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["repository_created"], true);
    let before = served(&server, file).await;
    let builds = index_builds(&server).await;

    let again = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(again.status(), 409);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["error"], "Conflict");
    assert_eq!(body["identical"], true, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("nothing needs doing"), "{message}");
    assert!(message.contains("x86_64/retry-1.0-r0.apk"), "{message}");
    assert_eq!(upload_fields(&body), upload_fields(&first));
    assert_eq!(body["repository_created"], false);
    assert_eq!(served(&server, file).await, before, "nothing changed");
    assert_eq!(index_builds(&server).await, builds, "no index was built");

    // Other bytes under the same name: a conflict, not identical, describing nothing.
    let other = server
        .put_admin(
            REPO,
            PackageBuilder::new("retry", "1.0-r0", "x86_64")
                .file("x", b"other")
                .build(),
        )
        .await;
    assert_eq!(other.status(), 409);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["error"], "Conflict");
    assert_eq!(body["identical"], false, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("delete it"),
        "{body}"
    );
    assert!(body.get("sha256").is_none(), "{body}");
    // So is a noarch file of the same name and version.
    let clash = server
        .put_admin(REPO, package("retry", "1.0-r0", "noarch"))
        .await;
    assert_eq!(clash.status(), 409);
    let body: serde_json::Value = clash.json().await.unwrap();
    assert_eq!(body["identical"], false, "{body}");
    assert_eq!(served(&server, file).await, before, "nothing changed");
    server.stop().await;
}

#[tokio::test]
async fn with_identical_reupload_accept_a_retry_is_answered_200_and_changes_nothing() {
    let server = TestServer::start_with(|c| {
        c.repositories.identical_reupload = alpine_registry::config::IdenticalReupload::Accept
    })
    .await;
    let bytes = package("retry", "1.0-r0", "x86_64");
    let file = "/admin/v3.21/main/x86_64/retry-1.0-r0.apk";
    let first = server.put_admin(REPO, bytes.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let before = served(&server, file).await;
    let builds = index_builds(&server).await;
    let indexer_builds = server.state.indexer.builds();

    for _ in 0..2 {
        let again = server.put_admin(REPO, bytes.clone()).await;
        assert_eq!(again.status(), 200);
        let body: serde_json::Value = again.json().await.unwrap();
        assert_eq!(upload_fields(&body), upload_fields(&first));
        assert_eq!(body["repository_created"], false);
        assert!(body.get("error").is_none(), "{body}");
    }
    assert_eq!(served(&server, file).await, before, "nothing changed");
    assert_eq!(index_builds(&server).await, builds, "no index was built");
    assert_eq!(server.state.indexer.builds(), indexer_builds);

    // Other bytes are still refused.
    let other = server
        .put_admin(
            REPO,
            PackageBuilder::new("retry", "1.0-r0", "x86_64")
                .file("x", b"other")
                .build(),
        )
        .await;
    assert_eq!(other.status(), 409);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["identical"], false, "{body}");
    assert_eq!(served(&server, file).await, before, "nothing changed");
    server.stop().await;
}

/// An upload whose instance died after its row was committed, before its index was
/// published: the retry finds the file stored and publishes the index listing it before
/// answering.
#[tokio::test]
async fn an_identical_retry_publishes_an_index_left_behind() {
    let server = TestServer::start_with(|c| {
        c.repositories.identical_reupload = alpine_registry::config::IdenticalReupload::Accept
    })
    .await;
    assert_eq!(
        server
            .put_admin(REPO, package("first", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    // What the dead instance left: the blob and the row, no index.
    let bytes = package("orphaned", "1.0-r0", "x86_64");
    let parsed =
        alpine_registry::apk::package::parse_package(&bytes[..], &server.state.config.apk_limits())
            .unwrap();
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut staged = server.state.blobs.stage().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut staged, &bytes)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut staged).await.unwrap();
    server.state.blobs.commit(staged, &sha256).await.unwrap();
    let owner = server
        .state
        .store
        .owner_by_name("admin")
        .await
        .unwrap()
        .unwrap();
    let repo = alpine_registry::store::RepoRef {
        owner_id: owner.id,
        branch: "v3.21".into(),
        repository: "main".into(),
    };
    server
        .state
        .store
        .insert_package(
            &repo,
            alpine_registry::store::NewPackage {
                arch: parsed.info.arch.clone(),
                name: parsed.info.pkgname.clone(),
                version: parsed.info.pkgver.clone(),
                filename: "orphaned-1.0-r0.apk".into(),
                checksum: parsed.checksum.clone(),
                sha256: sha256.clone(),
                size: bytes.len() as i64,
                stanza: parsed.stanza.clone(),
            },
            false,
            None,
        )
        .await
        .unwrap();
    let builds = server.state.indexer.builds();

    let again = server.put_admin(REPO, bytes).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        server.state.indexer.builds(),
        builds + 1,
        "the retry built it"
    );
    let text = server.verified_index("admin", INDEX, None).await;
    assert_eq!(index_names(&text), ["first", "orphaned"]);
    assert_eq!(server.state.indexer.builds(), builds + 1);
    server.stop().await;
}

#[tokio::test]
async fn conditional_and_range_requests() {
    let server = TestServer::start().await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    server.put_admin(REPO, bytes.clone()).await;
    let index = server.get(INDEX, None).await;
    let etag = index.headers()["etag"].to_str().unwrap().to_string();
    let modified = index.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let not_modified = server
        .client
        .get(server.url(INDEX))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    // A date validates a copy once the second of the change has passed (within it, a
    // copy may predate the change: tests/caching.rs).
    let changed_at = httpdate::parse_http_date(&modified).unwrap();
    while std::time::SystemTime::now() < changed_at + std::time::Duration::from_secs(1) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let modified = server.get(INDEX, None).await.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let not_modified = server
        .client
        .get(server.url(INDEX))
        .header("If-Modified-Since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let changed = server
        .client
        .get(server.url(INDEX))
        .header("If-None-Match", "\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let head = server.client.head(server.url(INDEX)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);

    let path = "/admin/v3.21/main/x86_64/hello-1.0-r0.apk";
    let partial = server
        .client
        .get(server.url(path))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 10-19/{}", bytes.len()).as_str()
    );
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let unsatisfiable = server
        .client
        .get(server.url(path))
        .header("Range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(unsatisfiable.status(), 416);
    let head = server.client.head(server.url(path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    let cached = server
        .client
        .get(server.url(path))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_400_and_changes_nothing() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not gzip", REPO, b"this is not a package".to_vec()),
        (
            "invalid version",
            REPO,
            PackageBuilder::new("bad", "1.0-foo", "x86_64").build(),
        ),
        (
            "name with slash",
            REPO,
            PackageBuilder::new("bad", "1.0-r0", "x86_64")
                .without_field("pkgname")
                .field("pkgname", "a/b")
                .build(),
        ),
        (
            "missing arch",
            REPO,
            PackageBuilder::new("bad", "1.0-r0", "x86_64")
                .without_field("arch")
                .build(),
        ),
        ("truncated", REPO, {
            let b = package("cut", "1.0-r0", "x86_64");
            b[..b.len() / 2].to_vec()
        }),
        (
            "invalid branch",
            "/admin/v3..21/main",
            package("ok", "1.0-r0", "x86_64"),
        ),
        (
            "invalid repository",
            "/admin/v3.21/m%20ain",
            package("ok", "1.0-r0", "x86_64"),
        ),
        ("empty body", REPO, Vec::new()),
    ];
    for (what, path, body) in cases {
        let response = server.put_admin(path, body).await;
        assert_eq!(response.status(), 400, "{what}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            !body["message"].as_str().unwrap().is_empty(),
            "{what}: {body}"
        );
    }
    assert_eq!(
        server
            .get("/admin/v3.21/main/x8%2F6/APKINDEX.tar.gz", None)
            .await
            .status(),
        400
    );
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/..%2F..%2Fetc.apk", None)
            .await
            .status(),
        400
    );
    // Nothing was stored and no temporary file is left.
    assert!(server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .is_empty());
    let staged = server.staged().await;
    assert!(staged.is_empty(), "staged files left: {staged:?}");
    assert_eq!(server.get("/healthz", None).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn apk_v3_package_is_415() {
    let server = TestServer::start().await;
    let mut adb = b"ADBd".to_vec();
    adb.extend_from_slice(&[0u8; 64]);
    let response = server.put_admin(REPO, adb).await;
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("v2"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn oversized_upload_is_413_with_and_without_content_length() {
    let server = TestServer::start_with(|c| c.limits.max_upload_bytes = 4096).await;
    let big = PackageBuilder::new("big", "1.0-r0", "x86_64")
        .file(
            "blob",
            &(0..200_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect::<Vec<_>>(),
        )
        .build();
    assert!(big.len() > 4096);
    let response = server.put_admin(REPO, big.clone()).await;
    assert_eq!(response.status(), 413);
    // Chunked: no Content-Length, the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1000).map(|c| Ok(c.to_vec())).collect();
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
    let staged = server.staged().await;
    assert!(staged.is_empty(), "staged files left: {staged:?}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_things_are_404() {
    let server = TestServer::start().await;
    server
        .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
        .await;
    for path in [
        "/admin/v3.99/main/x86_64/APKINDEX.tar.gz",
        "/admin/v3.21/other/x86_64/APKINDEX.tar.gz",
        "/admin/v3.21/main/aarch64/APKINDEX.tar.gz",
        "/admin/v3.21/main/x86_64/missing-1.0-r0.apk",
        "/admin/v3.21/main/aarch64/hello-1.0-r0.apk",
    ] {
        let response = server.get(path, None).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["message"].is_string());
    }
    let response = server
        .put_admin("/nobody/v3.21/main", package("x", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn gitea_compatible_routes() {
    let server = TestServer::start().await;
    let base = "/api/packages/admin/alpine";
    let response = server
        .put_admin(
            &format!("{base}/v3.21/main"),
            package("gt", "1.0-r0", "x86_64"),
        )
        .await;
    assert_eq!(response.status(), 201);
    let text = server
        .verified_index(
            "admin",
            &format!("{base}/v3.21/main/x86_64/APKINDEX.tar.gz"),
            None,
        )
        .await;
    assert_eq!(index_names(&text), ["gt"]);
    assert_eq!(server.get(&format!("{base}/key"), None).await.status(), 200);
    assert_eq!(
        server
            .get(&format!("{base}/v3.21/main/x86_64/gt-1.0-r0.apk"), None)
            .await
            .status(),
        200
    );
    // Same data as the native routes.
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/gt-1.0-r0.apk", None)
            .await
            .status(),
        200
    );
    let deleted = server
        .delete(
            &format!("{base}/v3.21/main/x86_64/gt-1.0-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_uploads_all_land_with_coalesced_builds() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let builds_before = server.state.indexer.builds();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let response = server
                .put_admin(REPO, package(&format!("pkg{i:02}"), "1.0-r0", "x86_64"))
                .await;
            assert_eq!(response.status(), 201);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let text = server.verified_index("admin", INDEX, None).await;
    let names = index_names(&text);
    assert_eq!(names.len(), 32, "{names:?}");
    let builds = server.state.indexer.builds() - builds_before;
    assert!(builds < 32, "{builds} index builds for 32 uploads");
    eprintln!("32 concurrent uploads caused {builds} index builds");
    let server = std::sync::Arc::into_inner(server).expect("no other references");
    server.stop().await;
}

#[tokio::test]
async fn health_endpoints() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz", None).await.status(), 200);
    let ready = server.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    // The blob store's directory (S3: its staging directory) gone.
    let gone = if server.on_s3() {
        server.staging_dir()
    } else {
        server.dir.path().join("blobs")
    };
    std::fs::remove_dir_all(gone).unwrap();
    assert_eq!(server.get("/readyz", None).await.status(), 503);
    server.stop().await;
}

#[tokio::test]
async fn upload_by_write_member_of_an_organisation() {
    let server = TestServer::start().await;
    let org = server
        .state
        .store
        .create_owner("acme", false, true, None)
        .await
        .unwrap();
    let token = server.user_with_token("dev", Role::Write, None, None).await;
    let dev = server
        .state
        .store
        .user_by_name("dev")
        .await
        .unwrap()
        .unwrap();
    let put = server
        .put(
            "/acme/edge/main",
            package("x", "1.0-r0", "x86_64"),
            Some(("dev", &token)),
        )
        .await;
    assert_eq!(put.status(), 403, "not a member yet");
    server
        .state
        .store
        .set_member(org.id, dev.id, Role::Write, None)
        .await
        .unwrap();
    let put = server
        .put(
            "/acme/edge/main",
            package("x", "1.0-r0", "x86_64"),
            Some(("dev", &token)),
        )
        .await;
    assert_eq!(put.status(), 201);
    // Bearer works as well as Basic.
    let put = server
        .client
        .put(server.url("/acme/edge/main"))
        .bearer_auth(&token)
        .body(package("y", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    server.stop().await;
}
