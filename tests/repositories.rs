//! Repositories: what an upload says about creating one, and `repositories.auto_create =
//! false`.

mod common;
use common::{package, TestServer};

use alpine_registry::store::Role;
use serde_json::Value;

/// Every file below `dir` (none when it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn an_upload_says_whether_it_created_the_repository() {
    let server = TestServer::start().await;
    let first = server
        .put_admin("/admin/v3.21/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(first.status(), 201);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["repository_created"], true, "{body}");
    for field in [
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
    ] {
        assert!(body.get(field).is_some(), "{field} missing: {body}");
    }
    let second = server
        .put_admin("/admin/v3.21/main", package("world", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(second.status(), 201);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["repository_created"], false, "{body}");
    // A forgotten branch makes a new repository, and the answer says so.
    let typo = server
        .put_admin("/admin/main/x86_64", package("typo", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(typo.status(), 201);
    let body: Value = typo.json().await.unwrap();
    assert_eq!(body["repository_created"], true, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn without_auto_create_an_upload_into_a_missing_repository_is_404_and_changes_nothing() {
    let server = TestServer::start_with(|config| config.repositories.auto_create = false).await;
    for path in [
        "/admin/main/x86_64",
        "/api/packages/admin/alpine/main/x86_64",
    ] {
        let response = server
            .put_admin(path, package("hello", "1.0-r0", "x86_64"))
            .await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "Not Found");
        assert_eq!(
            body["message"],
            "no repository admin/main/x86_64: an administrator creates it with \
             \"alpine-registry repository create admin/main/x86_64\" \
             (repositories.auto_create is off)"
        );
    }
    let store = &server.state.store;
    assert!(store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .is_empty());
    assert!(store.referenced_blobs().await.unwrap().is_empty());
    for dir in ["blobs", "tmp"] {
        let left = files_under(&server.dir.path().join(dir));
        assert!(left.is_empty(), "{left:?}");
    }
    let index = server
        .get("/admin/main/x86_64/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index.status(), 404);

    // Access is decided first: the same answers as with auto_create on.
    let anonymous = server
        .put(
            "/admin/main/x86_64",
            package("hello", "1.0-r0", "x86_64"),
            None,
        )
        .await;
    assert_eq!(anonymous.status(), 401);
    let bob = server.user_with_token("bob", Role::Write, None, None).await;
    let stranger = server
        .put(
            "/admin/main/x86_64",
            package("hello", "1.0-r0", "x86_64"),
            Some(("bob", &bob)),
        )
        .await;
    assert_eq!(stranger.status(), 403);
    let unknown = server
        .put_admin("/nobody/v3.21/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("owner \"nobody\" not found"), "{message}");

    server.stop().await;
}
