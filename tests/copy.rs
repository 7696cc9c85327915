//! Copying and moving package files between repositories (`POST
//! /api/v1/owners/{owner}/packages/{name}/copy` and `package copy` on the real binary):
//! the target's signed index lists the very file, its blob shared with the source; a move
//! takes it out of the source's index; a file already in the target is a 409 saying whether
//! its bytes are the same; who may copy what; and a shared blob outliving either side.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::clock::ManualClock;
use alpine_registry::registry::fsck::{collect_orphans, fsck};
use alpine_registry::store::Role;
use common::process::ChildServer;
use common::*;
use serde_json::{json, Value};

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));

/// POSTs a copy of package `name` of `owner` with `body`.
async fn copy(
    server: &TestServer,
    owner: &str,
    name: &str,
    body: Value,
    auth: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url(&format!("/api/v1/owners/{owner}/packages/{name}/copy")))
        .json(&body);
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The stanza of package `name` in an APKINDEX text.
fn stanza<'a>(text: &'a str, name: &str) -> &'a str {
    text.split("\n\n")
        .find(|s| s.lines().any(|l| l == format!("P:{name}")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The value of `field` (`C`, `S`) in a stanza.
fn field<'a>(stanza: &'a str, field: &str) -> &'a str {
    stanza
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field}: in {stanza}"))
}

async fn upload(server: &TestServer, repo: &str, bytes: Vec<u8>) {
    let response = server.put_admin(repo, bytes).await;
    assert_eq!(response.status(), 201, "{repo}");
}

async fn body_of(server: &TestServer, path: &str, auth: Option<(&str, &str)>) -> (u16, Vec<u8>) {
    let response = server.get(path, auth).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn promoting_from_edge_to_v3_21_lists_the_same_file_signed_and_shares_its_blob() {
    let server = TestServer::start().await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    upload(&server, "/admin/edge/main", bytes.clone()).await;

    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["owner"], "admin");
    assert_eq!(body["branch"], "v3.21");
    assert_eq!(body["path"], "/admin/v3.21/main/x86_64/hello-1.0-r0.apk");
    assert_eq!(body["source"], "/admin/edge/main/x86_64/hello-1.0-r0.apk");
    assert_eq!(body["moved"], false);
    assert_eq!(body["repository_created"], true);

    // As apk reads it: signed with the owner's key, the entry of the very same file.
    let edge = server
        .verified_index("admin", "/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    let v321 = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    let (from, to) = (stanza(&edge, "hello"), stanza(&v321, "hello"));
    assert_eq!(field(to, "C"), field(from, "C"));
    assert_eq!(field(to, "S"), bytes.len().to_string());
    assert_eq!(body["checksum"], field(from, "C"));
    assert_eq!(
        body_of(&server, "/admin/v3.21/main/x86_64/hello-1.0-r0.apk", None).await,
        (200, bytes.clone())
    );
    // A copy, not a move; and one blob for both.
    assert_eq!(index_names(&edge), ["hello"]);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(server.stored_blobs().await, [sha]);

    let metrics = server.get("/metrics", ADMIN).await.text().await.unwrap();
    assert!(
        metrics.contains("alpine_registry_copies_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_move_removes_the_file_from_the_source_index() {
    let server = TestServer::start().await;
    let hello = package("hello", "1.0-r0", "x86_64");
    upload(&server, "/admin/edge/main", hello.clone()).await;
    upload(
        &server,
        "/admin/edge/main",
        package("world", "1.0-r0", "x86_64"),
    )
    .await;
    upload(
        &server,
        "/admin/edge/main",
        package("docs", "1.0-r0", "noarch"),
    )
    .await;

    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "file": "hello-1.0-r0.apk", "move": true,
               "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["moved"], true);
    // A noarch file named under an architecture: its noarch row moves.
    let (status, body) = copy(
        &server,
        "admin",
        "docs",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "move": true,
               "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["arch"], "noarch");
    assert_eq!(body["source"], "/admin/edge/main/noarch/docs-1.0-r0.apk");

    let edge = server
        .verified_index("admin", "/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&edge), ["world"]);
    let v321 = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&v321), ["docs", "hello"]);
    for gone in [
        "/admin/edge/main/x86_64/hello-1.0-r0.apk",
        "/admin/edge/main/noarch/docs-1.0-r0.apk",
    ] {
        assert_eq!(server.get(gone, None).await.status(), 404, "{gone}");
    }
    assert_eq!(
        body_of(&server, "/admin/v3.21/main/x86_64/hello-1.0-r0.apk", None).await,
        (200, hello)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_copy_to_another_owner_is_signed_with_that_owners_key() {
    let server = TestServer::start().await;
    server
        .state
        .store
        .create_owner("acme", false, true, None)
        .await
        .unwrap();
    let bytes = package("hello", "1.0-r0", "x86_64");
    upload(&server, "/admin/edge/main", bytes.clone()).await;

    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0",
               "to": {"owner": "acme", "branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["path"], "/acme/v3.21/main/x86_64/hello-1.0-r0.apk");
    // `verified_index` checks every signature with acme's key, named as acme's key file.
    let text = server
        .verified_index("acme", "/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&text), ["hello"]);
    let key = |owner: &'static str| {
        let server = &server;
        async move {
            server
                .get(&format!("/{owner}/key"), None)
                .await
                .text()
                .await
        }
    };
    assert_ne!(key("acme").await.unwrap(), key("admin").await.unwrap());
    assert_eq!(
        body_of(&server, "/acme/v3.21/main/x86_64/hello-1.0-r0.apk", None).await,
        (200, bytes)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_copy_onto_the_same_name_and_version_is_409_saying_whether_the_bytes_are_identical() {
    let server = TestServer::start().await;
    upload(
        &server,
        "/admin/edge/main",
        package("hello", "1.0-r0", "x86_64"),
    )
    .await;
    // The same name and version, other bytes.
    let other = PackageBuilder::new("hello", "1.0-r0", "x86_64")
        .file("usr/share/hello/OTHER", b"other\n")
        .build();
    upload(&server, "/admin/v3.21/community", other).await;
    let to = |repository: &str| {
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "move": true,
               "to": {"branch": "v3.21", "repository": repository}})
    };
    let (status, _) = copy(&server, "admin", "hello", to("main"), ADMIN).await;
    assert_eq!(status, 201);
    // The move went: copy it back to edge, then again to v3.21/main.
    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "v3.21", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "to": {"branch": "edge", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = copy(&server, "admin", "hello", to("main"), ADMIN).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["identical"], true);
    assert_eq!(body["path"], "/admin/v3.21/main/x86_64/hello-1.0-r0.apk");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("these very bytes"),
        "{body}"
    );
    let (status, body) = copy(&server, "admin", "hello", to("community"), ADMIN).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["identical"], false);
    assert!(
        body["message"].as_str().unwrap().contains("other content"),
        "{body}"
    );
    // A refused move deleted nothing.
    let edge = server
        .verified_index("admin", "/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&edge), ["hello"]);
    server.stop().await;
}

#[tokio::test]
async fn an_identical_file_accepted_by_configuration_answers_200_and_a_move_deletes_the_source() {
    let server = TestServer::start_with(|config| {
        config.repositories.identical_reupload = alpine_registry::config::IdenticalReupload::Accept;
    })
    .await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    upload(&server, "/admin/edge/main", bytes.clone()).await;
    upload(&server, "/admin/v3.21/main", bytes).await;
    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "move": true,
               "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["moved"], true);
    let edge = server
        .verified_index("admin", "/admin/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert!(index_names(&edge).is_empty(), "{edge}");
    server.stop().await;
}

#[tokio::test]
async fn copying_needs_read_on_the_source_and_write_on_the_target() {
    let server = TestServer::start().await;
    server
        .state
        .store
        .create_owner("secret", true, true, None)
        .await
        .unwrap();
    upload(
        &server,
        "/admin/edge/main",
        package("hello", "1.0-r0", "x86_64"),
    )
    .await;
    upload(
        &server,
        "/secret/edge/main",
        package("hello", "1.0-r0", "x86_64"),
    )
    .await;
    let reader = server
        .user_with_token("reader", Role::Read, None, None)
        .await;
    let writer = server
        .user_with_token("writer", Role::Write, None, None)
        .await;
    let request = |owner: &str, to: Value, remove_source: bool| {
        (
            owner.to_string(),
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "version": "1.0-r0", "to": to, "move": remove_source}),
        )
    };
    let cases = [
        // A read-only token: the public source is readable, the target is not writable.
        (
            "read-only token, same owner",
            request(
                "admin",
                json!({"branch": "v3.21", "repository": "main"}),
                false,
            ),
            Some(("reader", reader.as_str())),
            403,
        ),
        (
            "read-only token, its own namespace",
            request(
                "admin",
                json!({"owner": "reader", "branch": "v3.21", "repository": "main"}),
                false,
            ),
            Some(("reader", reader.as_str())),
            403,
        ),
        (
            "read-only token, a private owner as target",
            request(
                "admin",
                json!({"owner": "secret", "branch": "v3.21", "repository": "main"}),
                false,
            ),
            Some(("reader", reader.as_str())),
            404,
        ),
        // Write on the target, no read on the private source.
        (
            "write on the target, private source",
            request(
                "secret",
                json!({"owner": "writer", "branch": "v3.21", "repository": "main"}),
                false,
            ),
            Some(("writer", writer.as_str())),
            404,
        ),
        // A move deletes the source: write there too.
        (
            "move without write on the source",
            request(
                "admin",
                json!({"owner": "writer", "branch": "v3.21", "repository": "main"}),
                true,
            ),
            Some(("writer", writer.as_str())),
            403,
        ),
        (
            "anonymous",
            request(
                "admin",
                json!({"owner": "writer", "branch": "v3.21", "repository": "main"}),
                false,
            ),
            None,
            401,
        ),
        // Read on the public source, write on its own namespace.
        (
            "read on the source, write on the target",
            request(
                "admin",
                json!({"owner": "writer", "branch": "v3.21", "repository": "main"}),
                false,
            ),
            Some(("writer", writer.as_str())),
            201,
        ),
    ];
    for (case, (owner, body), auth, expected) in cases {
        let (status, answer) = copy(&server, &owner, "hello", body, auth).await;
        assert_eq!(status, expected, "{case}: {answer}");
    }
    // Nothing but the last copy was made.
    for (index, names) in [
        ("/admin/v3.21/main/x86_64/APKINDEX.tar.gz", 404),
        ("/secret/v3.21/main/x86_64/APKINDEX.tar.gz", 404),
        ("/reader/v3.21/main/x86_64/APKINDEX.tar.gz", 404),
        ("/writer/v3.21/main/x86_64/APKINDEX.tar.gz", 200),
    ] {
        assert_eq!(server.get(index, ADMIN).await.status(), names, "{index}");
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_copies_are_refused_in_words() {
    let server = TestServer::start().await;
    upload(
        &server,
        "/admin/edge/main",
        package("hello", "1.0-r0", "x86_64"),
    )
    .await;
    for (body, name, expected_status, expected) in [
        (
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "to": {"branch": "v3.21", "repository": "main"}}),
            "hello",
            400,
            "\"file\" or by \"version\"",
        ),
        (
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "version": "1.0-r0", "to": {"branch": "edge", "repository": "main"}}),
            "hello",
            400,
            "is the repository the file is in",
        ),
        (
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "file": "hello-1.0-r0.apk", "to": {"branch": "v3.21", "repository": "main"}}),
            "world",
            404,
            "a file of package hello, not of world",
        ),
        (
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "version": "2.0-r0", "to": {"branch": "v3.21", "repository": "main"}}),
            "hello",
            404,
            "admin/edge/main/x86_64/hello-2.0-r0.apk not found",
        ),
        (
            json!({"branch": "edge", "repository": "main", "arch": "x86_64",
                   "version": "1.0-r0", "to": {"branch": "keys", "repository": "main"}}),
            "hello",
            400,
            "\"keys\" is reserved",
        ),
    ] {
        let (status, answer) = copy(&server, "admin", name, body.clone(), ADMIN).await;
        assert_eq!(status, expected_status, "{body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{body}: {answer}"
        );
    }
    server.stop().await;
}

/// The blob a copy shares stays while either row names it; fsck finds nothing wrong; once
/// both are deleted it goes after the grace period.
#[tokio::test]
async fn a_shared_blob_outlives_the_source_and_goes_after_the_grace_once_both_are_deleted() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    let grace = Duration::from_secs(server.state.config.storage.orphan_grace_secs);
    let bytes = package("hello", "1.0-r0", "x86_64");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    upload(&server, "/admin/edge/main", bytes.clone()).await;
    let (status, _) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201);
    // An old file by now.
    clock.advance(2 * grace);
    assert_eq!(
        server
            .delete("/admin/edge/main/x86_64/hello-1.0-r0.apk", ADMIN)
            .await
            .status(),
        204
    );
    clock.advance(2 * grace);
    collect_orphans(&server.state, grace).await.unwrap();
    assert_eq!(
        body_of(&server, "/admin/v3.21/main/x86_64/hello-1.0-r0.apk", None).await,
        (200, bytes)
    );
    let report = fsck(&server.state, false).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    assert_eq!(
        server
            .delete("/admin/v3.21/main/x86_64/hello-1.0-r0.apk", ADMIN)
            .await
            .status(),
        204
    );
    collect_orphans(&server.state, grace).await.unwrap();
    assert!(
        server.stored_blobs().await.contains(&sha),
        "kept for the grace"
    );
    let report = fsck(&server.state, false).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    clock.advance(grace + Duration::from_secs(1));
    assert_eq!(
        collect_orphans(&server.state, grace).await.unwrap(),
        vec![sha.clone()]
    );
    assert!(!server.stored_blobs().await.contains(&sha));
    server.stop().await;
}

/// `package copy` on the real binary, beside the running server, on the backends the tests
/// run on.
#[test]
fn the_package_copy_command_promotes_and_moves_while_the_server_runs() {
    let server = ChildServer::start_on_backends(ADMIN_TOKEN, &[]);
    let data = server.dir.path().join("data");
    let command = || {
        let mut command = cli(&data);
        server.backends.apply(&mut command);
        command
    };
    let client = reqwest::blocking::Client::new();
    let bytes = package("hello", "1.0-r0", "x86_64");
    let put = client
        .put(server.url("/admin/edge/main"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    // What the server lists, once it has seen what the command changed (another
    // process's change reaches its read cache within its watch interval).
    let listed = |repository: &str, want: &[&str]| {
        let url = server.url(&format!("/api/v1/owners/admin/index/{repository}/x86_64"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let response = client.get(&url).send().unwrap();
            let names: Vec<String> = if response.status() == 200 {
                let body: Value = response.json().unwrap();
                body["packages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect()
            } else {
                Vec::new()
            };
            if names == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{repository}: {names:?}, not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let (_, stderr) = run_ok_both(command().args([
        "package",
        "copy",
        "admin/edge/main/x86_64/hello-1.0-r0.apk",
        "v3.21/main",
    ]));
    assert!(
        stderr.contains("copied admin/edge/main/x86_64/hello-1.0-r0.apk to admin/v3.21/main"),
        "{stderr}"
    );
    listed("v3.21/main", &["hello"]);
    listed("edge/main", &["hello"]);
    let download = client
        .get(server.url("/admin/v3.21/main/x86_64/hello-1.0-r0.apk"))
        .send()
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().unwrap().to_vec(), bytes);

    let (_, stderr) = run_ok_both(command().args([
        "package",
        "copy",
        "admin/edge/main/x86_64/hello-1.0-r0.apk",
        "admin/v3.22/main",
        "--move",
    ]));
    assert!(stderr.contains("moved"), "{stderr}");
    listed("v3.22/main", &["hello"]);
    listed("edge/main", &[]);

    let message = run_err(command().args([
        "package",
        "copy",
        "admin/v3.21/main/x86_64/hello-1.0-r0.apk",
        "v3.22/main",
    ]));
    assert!(message.contains("these very bytes"), "{message}");
    let message = run_err(command().args(["package", "copy", "admin/v3.21/main", "v3.22/main"]));
    assert!(
        message.contains("expected OWNER/BRANCH/REPOSITORY/ARCH/FILE"),
        "{message}"
    );
}

/// A row whose file is missing from blob storage (damage) is not copied: the copy answers
/// 503 naming fsck, and no row of the target names the missing file.
#[tokio::test]
async fn a_file_missing_from_blob_storage_is_not_copied() {
    let server = TestServer::start().await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    upload(&server, "/admin/edge/main", bytes).await;
    server.state.blobs.delete(&sha).await.unwrap();
    let (status, body) = copy(
        &server,
        "admin",
        "hello",
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "to": {"branch": "v3.21", "repository": "main"}}),
        ADMIN,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("alpine-registry fsck"),
        "{body}"
    );
    assert_eq!(
        server
            .get("/admin/v3.21/main/x86_64/hello-1.0-r0.apk", ADMIN)
            .await
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_copy_with_every_answer() {
    use alpine_registry::names::NameRule;
    let server = TestServer::start().await;
    let document: Value = server
        .get("/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    let operation = &document["paths"]["/api/v1/owners/{owner}/packages/{name}/copy"]["post"];
    assert_eq!(operation["operationId"], "copy_package");
    for status in [
        "200", "201", "400", "401", "403", "404", "409", "413", "415", "429", "503",
    ] {
        assert!(
            operation["responses"].get(status).is_some(),
            "{status}: {operation}"
        );
    }
    let schemas = &document["components"]["schemas"];
    for (schema, field, rule) in [
        ("CopyRequest", "branch", NameRule::SEGMENT),
        ("CopyRequest", "arch", NameRule::ARCH),
        ("CopyRequest", "file", NameRule::PACKAGE_FILE),
        ("CopyTarget", "owner", NameRule::SEGMENT),
        ("CopyTarget", "repository", NameRule::SEGMENT),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["pattern"], rule.pattern,
            "{schema}.{field}"
        );
    }
    assert!(schemas["CopyRequest"]["properties"].get("move").is_some());
    server.stop().await;
}
