//! Remote repositories: a caching proxy of an upstream repository, here a local upstream
//! (`common::upstream`: packages indexed with the registry's own index writer, signed with
//! a key the test makes, standing in for Alpine's) served by a small HTTP server that
//! counts requests, can hold package answers, and can be stopped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alpine_registry::apk::sign::{split_signed, SigningKey};
use alpine_registry::clock::ManualClock;
use alpine_registry::registry::audit::Actor;
use alpine_registry::registry::remote::NewRemote;
use common::upstream::Upstream;
use common::{TestServer, ADMIN_TOKEN};
use sha2::Digest;

const REPO: &str = "/admin/v3.21/main";
const INDEX: &str = "/admin/v3.21/main/x86_64/APKINDEX.tar.gz";

fn hello() -> Vec<u8> {
    common::package("hello", "1.0-r0", "x86_64")
}

fn world() -> Vec<u8> {
    common::package("world", "2.1-r3", "x86_64")
}

async fn create_remote(server: &TestServer, upstream: &Upstream, refresh_secs: u64) {
    alpine_registry::registry::remote::create(
        &server.state,
        &Actor::cli(),
        &alpine_registry::names::RepoAddress::parse_path("admin/v3.21/main").unwrap(),
        &NewRemote {
            url: upstream.url(),
            keys: upstream.trusted(),
            refresh_secs: Some(refresh_secs),
        },
    )
    .await
    .unwrap();
}

async fn metrics(server: &TestServer) -> String {
    let response = server.get("/metrics", Some(("admin", ADMIN_TOKEN))).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn upstream_index_is_served_signed_by_the_owner_with_its_content_unchanged() {
    let upstream = Upstream::start(&[hello(), world()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;

    // Verified with the owner's key only (both signatures), by the project's own code.
    let text = server.verified_index("admin", INDEX, None).await;
    let ours = server.get(INDEX, None).await.bytes().await.unwrap();
    let theirs = upstream.index();
    let (_, ours_unsigned) = split_signed(&ours).unwrap();
    let (their_signatures, theirs_unsigned) = split_signed(&theirs).unwrap();
    assert_eq!(
        ours_unsigned, theirs_unsigned,
        "the content is upstream's, byte for byte"
    );
    assert_eq!(text, common::apkindex_text(theirs_unsigned));
    assert!(their_signatures[0].0.ends_with(upstream.key.key_name()));
    assert_eq!(common::index_names(&text), ["hello", "world"]);

    // The repository's API answer names the upstream and the index's freshness.
    let info: serde_json::Value = server
        .get(
            "/api/v1/owners/admin/repositories/v3.21/main/upstream",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["url"], upstream.url());
    assert_eq!(info["indexes"][0]["arch"], "x86_64");
    assert!(info["indexes"][0]["error"].is_null());
    // The owner's page marks the repository remote, with its upstream.
    let page = server.get("/admin", None).await.text().await.unwrap();
    assert!(
        page.contains(r#"<span class="badge remote">remote</span>"#),
        "{page}"
    );
    assert!(page.contains(&format!("cache of <code>{}</code>", upstream.url())));
    assert!(page.contains("x86_64: verified"));
    assert!(!page.contains("stale"));

    // Packages.adb: the upstream's packages with their identities, signed by the owner's
    // key, answered again from what was made (same bytes, 304 to its ETag).
    let key = server.get("/admin/key", None).await.text().await.unwrap();
    let path = "/admin/v3.21/main/x86_64/Packages.adb";
    let response = server.get(path, None).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"ADBd");
    let adb = alpine_registry::apk::adb::read_file(&bytes, 1 << 24).unwrap();
    adb.verify(&key).unwrap();
    let listed: Vec<(String, String, Vec<u8>)> = adb
        .index()
        .unwrap()
        .packages
        .into_iter()
        .map(|p| (p.name, p.version, p.hashes))
        .collect();
    let expected: Vec<(String, String, Vec<u8>)> = [hello(), world()]
        .iter()
        .map(|bytes| {
            let parsed = alpine_registry::apk::package::parse_package(
                &bytes[..],
                &alpine_registry::apk::package::Limits::default(),
            )
            .unwrap();
            let package =
                alpine_registry::apk::adb::IndexPackage::from_stanza(&parsed.stanza).unwrap();
            (package.name, package.version, package.hashes)
        })
        .collect();
    assert_eq!(listed, expected);
    let again = server.get(path, None).await;
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(again.bytes().await.unwrap(), bytes);
    let unchanged = reqwest::Client::new()
        .get(server.url(path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    server.stop().await;
}

#[tokio::test]
async fn upstream_index_signed_by_an_unknown_key_is_refused_and_never_served() {
    let upstream = Upstream::start(&[hello()]).await;
    let stranger = SigningKey::generate("stranger", 1024).unwrap();
    upstream.publish(&[hello()], &stranger);
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;

    let response = server.get(INDEX, None).await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("verif"),
        "{body}"
    );
    let package = server
        .get(&format!("{REPO}/x86_64/hello-1.0-r0.apk"), None)
        .await;
    assert_eq!(package.status(), 502);
    assert!(upstream.requests(".apk").is_empty(), "no package fetched");
    let repo = server
        .state
        .store
        .repository(&alpine_registry::store::RepoRef {
            owner_id: server
                .state
                .store
                .owner_by_name("admin")
                .await
                .unwrap()
                .unwrap()
                .id,
            branch: "v3.21".into(),
            repository: "main".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(server
        .state
        .store
        .upstream_index(repo.id, "x86_64")
        .await
        .unwrap()
        .is_none());
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "alpine_registry_upstream_requests_total{kind=\"index\",result=\"error\"}"
        ) >= 1.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn package_is_fetched_once_checked_and_then_served_from_storage() {
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;
    let path = format!("{REPO}/x86_64/hello-1.0-r0.apk");

    let first = server.get(&path, None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap(), hello());
    let second = server.get(&path, None).await;
    assert_eq!(second.status(), 200);
    let etag = second.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(second.bytes().await.unwrap(), hello());
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(sha2::Sha256::digest(hello())))
    );
    assert_eq!(
        upstream.requests(".apk").len(),
        1,
        "the second came from storage"
    );
    // Not listed upstream: 404, and upstream is not asked.
    let missing = server
        .get(&format!("{REPO}/x86_64/nope-1.0-r0.apk"), None)
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(upstream.requests(".apk").len(), 1);

    let text = metrics(&server).await;
    let count = |result: &str| {
        metric(
            &text,
            &format!(
                "alpine_registry_upstream_requests_total{{kind=\"package\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(count("miss"), 1.0, "{text}");
    assert_eq!(count("hit"), 1.0, "{text}");
    assert_eq!(
        metric(&text, "alpine_registry_upstream_received_bytes_total"),
        hello().len() as f64
    );

    // Uploads and deletes into a remote repository are refused.
    let put = server.put_admin(REPO, world()).await;
    assert_eq!(put.status(), 405);
    let body: serde_json::Value = put.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("remote repository"));
    let delete = server.delete(&path, Some(("admin", ADMIN_TOKEN))).await;
    assert_eq!(delete.status(), 405);
    server.stop().await;
}

/// `bytes` with one byte of its last gzip member (the data) changed: same size.
fn with_data_byte_changed(mut bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes.len() - 12;
    bytes[at] ^= 0x55;
    bytes
}

#[tokio::test]
async fn tampered_package_is_refused_mid_transfer_and_not_stored() {
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;
    let path = format!("{REPO}/x86_64/hello-1.0-r0.apk");
    let blobs_before = server.stored_blobs().await;

    // Same size, other bytes: the transfer breaks, nothing is stored.
    upstream.replace("hello-1.0-r0.apk", with_data_byte_changed(hello()));
    let response = server.get(&path, None).await;
    assert_eq!(response.status(), 200, "the answer starts before the check");
    assert!(
        response.bytes().await.is_err(),
        "the client sees a broken transfer"
    );
    // Another package under the name: refused too.
    upstream.replace(
        "hello-1.0-r0.apk",
        common::package("hello", "1.0-r0", "aarch64"),
    );
    let response = server.get(&path, None).await;
    assert!(response.status() != 200 || response.bytes().await.is_err());
    assert_eq!(server.stored_blobs().await, blobs_before, "nothing stored");
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "alpine_registry_upstream_requests_total{kind=\"package\",result=\"error\"}"
        ),
        2.0,
        "{text}"
    );

    // Once upstream serves the real file, it is served and stored.
    upstream.replace("hello-1.0-r0.apk", hello());
    let response = server.get(&path, None).await;
    assert_eq!(response.bytes().await.unwrap(), hello());
    assert_eq!(server.stored_blobs().await.len(), blobs_before.len() + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_for_one_file_make_one_upstream_request() {
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;
    // The index first, so that every request below goes for the package at once.
    assert_eq!(server.get(INDEX, None).await.status(), 200);
    upstream.hold(true);
    let url = server.url(&format!("{REPO}/x86_64/hello-1.0-r0.apk"));
    let requests: Vec<_> = (0..32)
        .map(|_| {
            // A connection each.
            let client = reqwest::Client::new();
            let url = url.clone();
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while upstream.requests(".apk").is_empty() {
        assert!(Instant::now() < deadline, "upstream never asked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every request reaches the registry while the first fetch is held: each of them has
    // been counted as a hit or miss, or waits for the fetch (visible as a connection).
    let deadline = Instant::now() + Duration::from_secs(30);
    while established_to(server.addr.port()) < 32 {
        assert!(Instant::now() < deadline, "the clients did not all connect");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    upstream.hold(false);
    for request in requests {
        assert_eq!(request.await.unwrap(), hello());
    }
    assert_eq!(upstream.requests(".apk").len(), 1);
    server.stop().await;
}

/// Established TCP connections to local port `port` (from /proc/net/tcp).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // The client side: remote address is the server's port, state 01 established.
            fields.len() > 3 && fields[2].ends_with(&port) && fields[3] == "01"
        })
        .count()
}

#[tokio::test]
async fn upstream_down_leaves_the_last_index_and_cached_packages_served() {
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let upstream = Upstream::start(&[hello(), world()]).await;
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    create_remote(&server, &upstream, 60).await;
    let index = server.get(INDEX, None).await.bytes().await.unwrap();
    let path = format!("{REPO}/x86_64/hello-1.0-r0.apk");
    assert_eq!(
        server.get(&path, None).await.bytes().await.unwrap(),
        hello()
    );

    upstream.stop().await;
    clock.advance(Duration::from_secs(61));
    let again = server.get(INDEX, None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.bytes().await.unwrap(),
        index,
        "the last verified index"
    );
    assert_eq!(
        server.get(&path, None).await.bytes().await.unwrap(),
        hello()
    );
    // Not cached: upstream cannot give it.
    let world_path = format!("{REPO}/x86_64/world-2.1-r3.apk");
    assert!(server
        .get(&world_path, None)
        .await
        .status()
        .is_server_error());
    assert_eq!(server.get("/readyz", None).await.status(), 200);
    let text = metrics(&server).await;
    assert_eq!(
        metric(&text, "alpine_registry_upstream_stale_indexes "),
        1.0,
        "{text}"
    );
    let info: serde_json::Value = server
        .get(
            "/api/v1/owners/admin/repositories/v3.21/main/upstream",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(info["indexes"][0]["error"].is_string(), "{info}");
    let page = server.get("/admin", None).await.text().await.unwrap();
    assert!(page.contains("stale: upstream failed"), "{page}");
    // Within the period after a failed attempt, upstream is not asked again.
    let before = upstream.requests("APKINDEX.tar.gz").len();
    assert_eq!(server.get(INDEX, None).await.status(), 200);
    assert_eq!(upstream.requests("APKINDEX.tar.gz").len(), before);
    server.stop().await;
}

#[tokio::test]
async fn index_is_refreshed_after_the_period_with_a_conditional_request() {
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    create_remote(&server, &upstream, 600).await;
    let first = server.verified_index("admin", INDEX, None).await;
    assert_eq!(common::index_names(&first), ["hello"]);
    assert_eq!(upstream.requests("APKINDEX.tar.gz"), [None]);

    // Within the period: served without asking upstream.
    clock.advance(Duration::from_secs(599));
    server.get(INDEX, None).await;
    assert_eq!(upstream.requests("APKINDEX.tar.gz").len(), 1);

    // Past it, unchanged: a conditional request, answered 304.
    clock.advance(Duration::from_secs(2));
    let etag = format!(
        "\"{}\"",
        hex::encode(sha2::Sha256::digest(upstream.index()))
    );
    assert_eq!(server.verified_index("admin", INDEX, None).await, first);
    assert_eq!(upstream.requests("APKINDEX.tar.gz")[1], Some(etag));

    // Past it again, changed upstream: the new index is served.
    upstream.publish(&[hello(), world()], &upstream.key);
    clock.advance(Duration::from_secs(601));
    let text = server.verified_index("admin", INDEX, None).await;
    assert_eq!(common::index_names(&text), ["hello", "world"]);
    let metrics = metrics(&server).await;
    let count = |result: &str| {
        metric(
            &metrics,
            &format!(
                "alpine_registry_upstream_requests_total{{kind=\"index\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!((count("fetched"), count("not_modified")), (2.0, 1.0));
    server.stop().await;
}

#[tokio::test]
async fn fsck_checks_cached_files_against_the_index() {
    let upstream = Upstream::start(&[hello(), world()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;
    for file in ["hello-1.0-r0.apk", "world-2.1-r3.apk"] {
        let response = server.get(&format!("{REPO}/x86_64/{file}"), None).await;
        response.bytes().await.unwrap();
    }
    let report = alpine_registry::registry::fsck::fsck(&server.state, false)
        .await
        .unwrap();
    assert_eq!(report.problems, Vec::<String>::new());

    // The cached file of hello replaced by other bytes under its digest, world's lost.
    let hello_sha = hex::encode(sha2::Sha256::digest(hello()));
    let world_sha = hex::encode(sha2::Sha256::digest(world()));
    let blobs = &server.state.blobs;
    blobs.delete(&hello_sha).await.unwrap();
    let mut staged = blobs.stage().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut staged, &with_data_byte_changed(hello()))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut staged).await.unwrap();
    blobs.commit(staged, &hello_sha).await.unwrap();
    blobs.delete(&world_sha).await.unwrap();

    let report = alpine_registry::registry::fsck::fsck(&server.state, false)
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems[0].contains("hello-1.0-r0.apk: cached blob content has sha256"));
    assert!(report.problems[1].contains("world-2.1-r3.apk: cached blob"));
    assert!(report.problems[1].contains("missing"));
    server.stop().await;
}

/// Two instances on one PostgreSQL database: what one verified and cached, the other
/// serves without asking upstream.
#[tokio::test]
async fn second_instance_serves_what_the_first_cached() {
    use common::postgres::{self as pg, TestDatabase};
    let Some(database) = TestDatabase::from_env() else {
        pg::note_skipped();
        return;
    };
    let upstream = Upstream::start(&[hello()]).await;
    let blobs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One bucket prefix for both.
    let s3 = common::s3::config();
    let config = |dir: &std::path::Path| {
        let mut config = common::test_config(dir);
        config.database.url = database.url.clone();
        config.signing.master_key = pg::MASTER_KEY.to_string();
        config.storage.blob_dir = Some(blobs.path().to_path_buf());
        if let Some(s3) = &s3 {
            config.storage.backend = alpine_registry::config::StorageBackend::S3;
            config.storage.s3 = s3.clone();
        }
        config
    };
    let a = TestServer::start_on(config(dir_a.path())).await;
    let b = TestServer::start_on(config(dir_b.path())).await;
    create_remote(&a, &upstream, 600).await;
    let path = format!("{REPO}/x86_64/hello-1.0-r0.apk");
    let index = a.get(INDEX, None).await.bytes().await.unwrap();
    assert_eq!(a.get(&path, None).await.bytes().await.unwrap(), hello());
    upstream.stop().await;

    assert_eq!(b.get(INDEX, None).await.bytes().await.unwrap(), index);
    assert_eq!(b.get(&path, None).await.bytes().await.unwrap(), hello());
    let put = b.put_admin(REPO, world()).await;
    assert_eq!(put.status(), 405, "b knows the repository is remote");
    assert_eq!(upstream.requests(".apk").len(), 1);
    assert_eq!(upstream.requests("APKINDEX.tar.gz").len(), 1);
    a.stop().await;
    b.stop().await;
}

/// `repository create --upstream` on the command line, then served by a server on the
/// same data directory; and the API's PUT, which needs the owner's admin role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_repositories_are_created_on_the_command_line_and_over_the_api() {
    let upstream = Upstream::start(&[hello()]).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join(upstream.key.key_name());
    std::fs::write(&key_file, upstream.key.public_key_pem().unwrap()).unwrap();
    common::run_ok(common::cli(dir.path()).arg("migrate"));
    common::run_ok(common::cli(dir.path()).args(["owner", "create", "acme"]));
    let (_, said) = common::run_ok_both(
        common::cli(dir.path())
            .args(["repository", "create", "acme/v3.21/main", "--upstream"])
            .arg(upstream.url())
            .arg("--upstream-key")
            .arg(&key_file)
            .args(["--refresh", "10m"]),
    );
    assert!(said.contains("remote repository acme/v3.21/main"), "{said}");
    let refused = common::run_err(
        common::cli(dir.path())
            .args(["repository", "create", "acme/v3.21/other", "--upstream"])
            .arg("ftp://example.org/x")
            .arg("--upstream-key")
            .arg(&key_file),
    );
    assert!(refused.contains("not an http(s) URL"), "{refused}");

    let server = TestServer::start_on(common::test_config(dir.path())).await;
    let info: serde_json::Value = server
        .get("/api/v1/owners/acme/repositories/v3.21/main/upstream", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["refresh_secs"], 600);
    assert_eq!(info["keys"][0], upstream.key.key_name());
    let text = server
        .verified_index("acme", "/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(common::index_names(&text), ["hello"]);

    let path = "/api/v1/owners/admin/repositories/v3.21/proxy/upstream";
    let body = serde_json::json!({
        "url": upstream.url(),
        "keys": [{"name": upstream.key.key_name(), "pem": upstream.key.public_key_pem().unwrap()}],
    });
    let put = |auth: Option<(&str, &str)>, body: serde_json::Value| {
        let mut request = server.client.put(server.url(path)).json(&body);
        if let Some((user, secret)) = auth {
            request = request.basic_auth(user, Some(secret));
        }
        request.send()
    };
    assert_eq!(put(None, body.clone()).await.unwrap().status(), 401);
    // An owner's own admin may not point the server at a URL: site administrators only.
    let token = server
        .user_with_token("carol", alpine_registry::store::Role::Admin, None, None)
        .await;
    let own = "/api/v1/owners/carol/repositories/v3.21/proxy/upstream";
    let refused = server
        .client
        .put(server.url(own))
        .basic_auth("carol", Some(token))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let created = put(Some(("admin", ADMIN_TOKEN)), body.clone())
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(
        created["refresh_secs"], 600,
        "upstream.default_refresh_secs"
    );
    assert_eq!(
        put(Some(("admin", ADMIN_TOKEN)), body.clone())
            .await
            .unwrap()
            .status(),
        409
    );
    let no_keys = serde_json::json!({"url": upstream.url(), "keys": []});
    assert_eq!(
        put(Some(("admin", ADMIN_TOKEN)), no_keys)
            .await
            .unwrap()
            .status(),
        400
    );
    let response = server
        .get("/admin/v3.21/proxy/x86_64/hello-1.0-r0.apk", None)
        .await;
    assert_eq!(response.bytes().await.unwrap(), hello());
    server.stop().await;
}

/// While one request refreshes an index from a slow upstream, the others are answered
/// the stored index at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_holds_up_one_request_only() {
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    create_remote(&server, &upstream, 60).await;
    let index = server.get(INDEX, None).await.bytes().await.unwrap();
    clock.advance(Duration::from_secs(61));
    upstream.hold_index(true);
    let refreshing = {
        let (client, url) = (server.client.clone(), server.url(INDEX));
        tokio::spawn(async move { client.get(url).send().await.unwrap().bytes().await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while upstream.requests("APKINDEX.tar.gz").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the refresh never asked upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answered = tokio::time::timeout(Duration::from_secs(10), server.get(INDEX, None))
        .await
        .expect("answered while the refresh waits for upstream");
    assert_eq!(answered.bytes().await.unwrap(), index);
    upstream.hold_index(false);
    assert_eq!(refreshing.await.unwrap().unwrap(), index);
    server.stop().await;
}

/// Cached files are referenced blobs: orphan collection leaves them; removing the
/// repository releases them, and collection past the grace period takes them.
#[tokio::test]
async fn cached_files_are_kept_from_orphan_collection_until_their_repository_goes() {
    let upstream = Upstream::start(&[hello()]).await;
    let server = TestServer::start().await;
    create_remote(&server, &upstream, 600).await;
    let path = format!("{REPO}/x86_64/hello-1.0-r0.apk");
    assert_eq!(
        server.get(&path, None).await.bytes().await.unwrap(),
        hello()
    );
    let sha256 = hex::encode(sha2::Sha256::digest(hello()));
    let collect =
        || alpine_registry::registry::fsck::collect_orphans(&server.state, Duration::ZERO);
    assert_eq!(collect().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        server.get(&path, None).await.bytes().await.unwrap(),
        hello()
    );

    alpine_registry::registry::repositories::remove(
        &server.state,
        &Actor::cli(),
        &alpine_registry::names::RepoAddress::parse_path("admin/v3.21/main").unwrap(),
    )
    .await
    .unwrap();
    let released = server.state.store.released_blobs(0).await.unwrap();
    assert!(
        released.contains(&sha256),
        "the removal released the cached file"
    );
    assert_eq!(server.get(&path, None).await.status(), 404);
    server.stop().await;
}
