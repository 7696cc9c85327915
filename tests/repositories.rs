//! Repositories: what an upload says about creating one, `repositories.auto_create =
//! false`, and `repository create | list | remove` run with the real binary against a
//! running server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;
use common::process::ChildServer;
use common::{
    cli, index_entry, index_names, package, run_err, run_ok_both, TestServer, ADMIN_TOKEN,
};

use alpine_registry::names::RepoAddress;
use alpine_registry::store::{RepoRef, Role};
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
    assert!(server.stored_blobs().await.is_empty());
    assert!(server.staged().await.is_empty());
    for dir in ["blobs", "tmp", "staging"] {
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

#[tokio::test]
async fn an_index_build_cannot_bring_back_a_removed_repository() {
    let server = TestServer::start().await;
    let state = &server.state;
    let response = server
        .put_admin("/admin/edge/main", package("old", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let owner = state.store.owner_by_name("admin").await.unwrap().unwrap();
    let repo_ref = RepoRef {
        owner_id: owner.id,
        branch: "edge".into(),
        repository: "main".into(),
    };
    let repo = state.store.repository(&repo_ref).await.unwrap().unwrap();
    // A build renders, then the repository is removed before the build publishes.
    let (generation, rendered, removed) = state.indexer.render(&owner, &repo, None).await.unwrap();
    let at = RepoAddress::parse("admin", "edge", "main").unwrap();
    let gone = alpine_registry::registry::repositories::remove(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        &at,
    )
    .await
    .unwrap();
    assert_eq!(gone.packages, 1);
    assert_eq!(gone.arches, ["x86_64"]);
    assert!(state.store.list_packages(repo.id).await.unwrap().is_empty());
    let late = state
        .store
        .publish_indexes(repo.id, generation + 1, rendered, removed, 0)
        .await;
    assert!(late.is_err(), "published into a removed repository");
    assert!(state
        .store
        .index(repo.id, "x86_64")
        .await
        .unwrap()
        .is_none());
    let error = state
        .indexer
        .wait_built(&owner, &repo, generation + 1)
        .await
        .unwrap_err();
    assert!(alpine_registry::indexer::is_removed(&error), "{error:#}");
    assert_eq!(state.indexer.rebuild_stale().await.unwrap(), 0);
    let index = server
        .get("/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index.status(), 404);

    // The same name again is a new repository: a new id, none of the old packages.
    let response = server
        .put_admin("/admin/edge/main", package("new", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.json::<Value>().await.unwrap()["repository_created"],
        true
    );
    let again = state.store.repository(&repo_ref).await.unwrap().unwrap();
    assert_ne!(again.id, repo.id);
    let text = server
        .verified_index("admin", "/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["new"]);
    server.stop().await;
}

/// The index of `arch` in admin/v3.21/empty, its signatures verified against the owner's
/// key; its `P:` names and its `DESCRIPTION`.
async fn empty_repository_index(server: &TestServer, arch: &str) -> (Vec<String>, Option<String>) {
    let path = format!("/admin/v3.21/empty/{arch}/APKINDEX.tar.gz");
    let text = server.verified_index("admin", &path, None).await;
    let bytes = server.get(&path, None).await.bytes().await.unwrap();
    let (_, unsigned) = alpine_registry::apk::sign::split_signed(&bytes).unwrap();
    (index_names(&text), index_entry(unsigned, "DESCRIPTION"))
}

/// A repository made with `repository create` (the function the command calls) had no
/// index until its first upload, so the setup snippet's `apk update` failed (apk-tools 2:
/// "No such file or directory", 3: 404). Now it serves a signed, empty index for every
/// Alpine architecture, as a repository of noarch packages does, whichever is asked for
/// first; an upload of one architecture's package leaves every other architecture's index
/// served, and empty. An architecture name Alpine does not have is still 404.
#[tokio::test]
async fn a_created_repository_serves_an_empty_index_for_every_architecture() {
    use alpine_registry::apk::names::KNOWN_ARCHES;
    let server = TestServer::start().await;
    let at = RepoAddress::parse("admin", "v3.21", "empty").unwrap();
    alpine_registry::registry::repositories::create(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        &at,
    )
    .await
    .unwrap();
    // The JSON listing of an index says what the apk route would serve, before anything
    // was asked of it.
    let listing = server
        .get("/api/v1/owners/admin/index/v3.21/empty/mips64", None)
        .await;
    assert_eq!(listing.status(), 200);
    for arch in KNOWN_ARCHES.iter().rev() {
        let (names, description) = empty_repository_index(&server, arch).await;
        assert!(names.is_empty(), "{arch}: {names:?}");
        assert_eq!(description.as_deref(), Some("admin/v3.21/empty"), "{arch}");
        let listing: Value = server
            .get(
                &format!("/api/v1/owners/admin/index/v3.21/empty/{arch}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            listing["packages"],
            serde_json::json!([]),
            "{arch}: {listing}"
        );
    }
    for path in [
        "/admin/v3.21/empty/vax/APKINDEX.tar.gz",
        "/api/v1/owners/admin/index/v3.21/empty/vax",
    ] {
        assert_eq!(server.get(path, None).await.status(), 404, "{path}");
    }

    let response = server
        .put_admin("/admin/v3.21/empty", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    for arch in KNOWN_ARCHES {
        let (names, description) = empty_repository_index(&server, arch).await;
        let expected: &[&str] = if *arch == "x86_64" { &["hello"] } else { &[] };
        assert_eq!(names, expected, "{arch}");
        assert_eq!(description.as_deref(), Some("admin/v3.21/empty"), "{arch}");
    }
    assert_eq!(
        server
            .get("/admin/v3.21/empty/vax/APKINDEX.tar.gz", None)
            .await
            .status(),
        404
    );
    server.stop().await;
}

/// The first index asked of an empty repository brings every Alpine architecture's: one
/// upload later, the architectures nobody asked for are served too (a machine of another
/// architecture set up after the first upload still gets an index).
#[tokio::test]
async fn the_first_index_asked_of_an_empty_repository_serves_every_architecture() {
    use alpine_registry::apk::names::KNOWN_ARCHES;
    let server = TestServer::start().await;
    let at = RepoAddress::parse("admin", "v3.21", "empty").unwrap();
    alpine_registry::registry::repositories::create(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        &at,
    )
    .await
    .unwrap();
    let (names, _) = empty_repository_index(&server, "x86_64").await;
    assert!(names.is_empty(), "{names:?}");
    let response = server
        .put_admin("/admin/v3.21/empty", package("tool", "1.0-r0", "aarch64"))
        .await;
    assert_eq!(response.status(), 201);
    for arch in KNOWN_ARCHES {
        let (names, _) = empty_repository_index(&server, arch).await;
        let expected: &[&str] = if *arch == "aarch64" { &["tool"] } else { &[] };
        assert_eq!(names, expected, "{arch}");
    }
    // A repository created by an upload is not empty: it serves its own architectures.
    let response = server
        .put_admin("/admin/v3.21/other", package("tool", "1.0-r0", "aarch64"))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        server
            .get("/admin/v3.21/other/x86_64/APKINDEX.tar.gz", None)
            .await
            .status(),
        404
    );
    server.stop().await;
}

const ARCH_INDEXES: [&str; 3] = ["x86_64", "aarch64", "riscv64"];

#[test]
fn repositories_are_created_listed_and_removed_while_the_server_runs() {
    let server = ChildServer::start(
        ADMIN_TOKEN,
        &[("ALPINE_REGISTRY__REPOSITORIES__AUTO_CREATE", "false")],
    );
    let data = server.dir.path().join("data");
    let client = reqwest::blocking::Client::new();
    let put = |path: &str, bytes: Vec<u8>| {
        client
            .put(server.url(path))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(bytes)
            .send()
            .unwrap()
    };
    let status = |path: &str| client.get(server.url(path)).send().unwrap().status();

    assert_eq!(
        put("/admin/v3.21/main", package("hello", "1.0-r0", "x86_64")).status(),
        404
    );
    let (_, stderr) = run_ok_both(cli(&data).args(["repository", "create", "admin/v3.21/main"]));
    assert!(
        stderr.contains("created repository admin/v3.21/main"),
        "{stderr}"
    );
    let message = run_err(cli(&data).args(["repository", "create", "admin/v3.21/main"]));
    assert!(
        message.contains("repository admin/v3.21/main already exists"),
        "{message}"
    );
    run_ok_both(cli(&data).args(["repository", "create", "admin/edge/testing"]));

    for (name, arch) in [
        ("hello", "x86_64"),
        ("world", "aarch64"),
        ("docs", "noarch"),
    ] {
        let response = put("/admin/v3.21/main", package(name, "1.0-r0", arch));
        assert_eq!(response.status(), 201, "{name}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["repository_created"], false);
    }
    for arch in ARCH_INDEXES {
        assert_eq!(
            status(&format!("/admin/v3.21/main/{arch}/APKINDEX.tar.gz")),
            200,
            "{arch}"
        );
    }

    let (list, _) = run_ok_both(cli(&data).args(["repository", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let header = lines[0];
    assert!(
        header.starts_with("REPOSITORY") && header.trim_end().ends_with("LAST PUBLISH"),
        "{list}"
    );
    // Ordered by owner, branch, name; columns aligned under the header.
    let columns = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        columns(lines[1])[..4],
        ["admin/edge/testing", "hosted", "-", "0"]
    );
    assert_eq!(columns(lines[1])[4], "-");
    let main = columns(lines[2]);
    assert_eq!(
        main[..4],
        [
            "admin/v3.21/main",
            "hosted",
            "aarch64,noarch,riscv64,x86_64",
            "3"
        ],
        "{list}"
    );
    assert!(main[4].ends_with(" UTC"), "{list}");
    for word in ["KIND", "ARCHES", "PACKAGES", "LAST PUBLISH"] {
        let at = header.find(word).unwrap();
        assert_eq!(
            lines[2][at..].split("  ").next().unwrap().trim(),
            match word {
                "KIND" => "hosted",
                "ARCHES" => "aarch64,noarch,riscv64,x86_64",
                "PACKAGES" => "3",
                _ => main[4].as_str(),
            },
            "{list}"
        );
    }
    let (only, _) = run_ok_both(cli(&data).args(["repository", "list", "--owner", "admin"]));
    assert_eq!(only, list);

    // Readers during the removal never see an index again once one is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let stop = stop.clone();
        let urls: Vec<String> = ARCH_INDEXES
            .iter()
            .map(|arch| server.url(&format!("/admin/v3.21/main/{arch}/APKINDEX.tar.gz")))
            .collect();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for url in &urls {
                    seen.push((url.clone(), client.get(url).send().unwrap().status()));
                }
            }
            seen
        })
    };
    let (_, stderr) = run_ok_both(cli(&data).args(["repository", "remove", "admin/v3.21/main"]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().unwrap();
    if let Some(first_gone) = seen.iter().position(|(_, s)| *s == 404) {
        let after: Vec<_> = seen[first_gone..]
            .iter()
            .filter(|(_, s)| *s != 404)
            .collect();
        assert!(
            after.is_empty(),
            "served after an index was gone: {after:?}"
        );
    }
    assert!(
        stderr.contains(
            "removed repository admin/v3.21/main: 3 packages, the indexes of aarch64, \
             riscv64, x86_64"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("orphan collection"), "{stderr}");

    for arch in ARCH_INDEXES.iter().chain(&["s390x"]) {
        assert_eq!(
            status(&format!("/admin/v3.21/main/{arch}/APKINDEX.tar.gz")),
            404,
            "{arch}"
        );
    }
    for file in [
        "x86_64/hello-1.0-r0.apk",
        "aarch64/world-1.0-r0.apk",
        "noarch/docs-1.0-r0.apk",
        "x86_64/docs-1.0-r0.apk",
    ] {
        assert_eq!(status(&format!("/admin/v3.21/main/{file}")), 404, "{file}");
    }
    let (list, _) = run_ok_both(cli(&data).args(["repository", "list"]));
    assert!(!list.contains("admin/v3.21/main"), "{list}");
    // Removed, not re-created by the next upload.
    assert_eq!(
        put("/admin/v3.21/main", package("hello", "1.0-r0", "x86_64")).status(),
        404
    );
}

#[test]
fn unknown_names_in_repository_commands_are_named() {
    let dir = tempfile::tempdir().unwrap();
    run_ok_both(cli(dir.path()).arg("migrate"));
    run_ok_both(cli(dir.path()).args(["owner", "create", "acme", "--org"]));
    for (args, expected) in [
        (
            &["repository", "list", "--owner", "nobody"][..],
            "no owner named \"nobody\"",
        ),
        (
            &["repository", "remove", "nobody/v3.21/main"],
            "no owner named \"nobody\"",
        ),
        (
            &["repository", "create", "nobody/v3.21/main"],
            "no owner named \"nobody\"",
        ),
        (
            &["repository", "remove", "acme/v3.21/main"],
            "no repository acme/v3.21/main",
        ),
        (
            &["repository", "create", "acme/main"],
            "expected OWNER/BRANCH/REPOSITORY",
        ),
        (
            &["repository", "create", "acme/keys/main"],
            "\"keys\" is reserved",
        ),
        (
            &["repository", "list", "--owner", "api"],
            "\"api\" is reserved",
        ),
    ] {
        let message = run_err(cli(dir.path()).args(args));
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    let (list, _) = run_ok_both(cli(dir.path()).args(["repository", "list", "--owner", "acme"]));
    assert_eq!(list.lines().count(), 1, "the header alone: {list}");
}
