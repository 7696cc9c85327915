//! Virtual repositories (the merged indexes of a hosted and a remote repository of the
//! same owner) and the snapshots of remote and virtual repositories, through real HTTP
//! against the real server, the remote member's upstream a local one (`common::upstream`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::package::{parse_package, Limits};
use alpine_registry::clock::{ManualClock, SharedClock};
use alpine_registry::names::{rfc3339_ms, RepoAddress};
use alpine_registry::registry::audit::Actor;
use alpine_registry::registry::remote::NewRemote;
use alpine_registry::store::ServedRow;
use common::upstream::Upstream;
use common::{TestServer, ADMIN_TOKEN};
use sha2::Digest;

const ALL: &str = "/admin/v3.21/all";
const HOSTED: &str = "/admin/v3.21/main";
const REMOTE: &str = "/admin/v3.21/alpine";

/// hello as the hosted member has it.
fn hello() -> Vec<u8> {
    common::package("hello", "1.0-r0", "x86_64")
}

/// The same name and version as upstream built it: other bytes, another `C:`.
fn upstream_hello() -> Vec<u8> {
    PackageBuilder::new("hello", "1.0-r0", "x86_64")
        .field("pkgdesc", "hello as upstream built it")
        .file("usr/share/hello/README", b"upstream\n")
        .build()
}

fn world() -> Vec<u8> {
    common::package("world", "2.1-r3", "x86_64")
}

fn extra() -> Vec<u8> {
    common::package("extra", "0.1-r0", "x86_64")
}

fn checksum(bytes: &[u8]) -> String {
    parse_package(bytes, &Limits::default()).unwrap().checksum
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn at(path: &str) -> RepoAddress {
    RepoAddress::parse_path(path).unwrap()
}

/// The hosted repository `main` with hello, the remote `alpine` of `upstream`, and the
/// virtual `all` of both, hosted first.
async fn setup(server: &TestServer, upstream: &Upstream) {
    assert_eq!(server.put_admin(HOSTED, hello()).await.status(), 201);
    alpine_registry::registry::remote::create(
        &server.state,
        &Actor::cli(),
        &at("admin/v3.21/alpine"),
        &NewRemote {
            url: upstream.url(),
            keys: upstream.trusted(),
            refresh_secs: Some(60),
        },
    )
    .await
    .unwrap();
    alpine_registry::registry::virtuals::create(
        &server.state,
        &Actor::cli(),
        &at("admin/v3.21/all"),
        &[at("admin/v3.21/main"), at("admin/v3.21/alpine")],
    )
    .await
    .unwrap();
}

/// The files the index at `repo` (a repository path, a view included) lists for x86_64,
/// with their `C:`, its signatures verified with the owner's key (and no other).
async fn listed(server: &TestServer, repo: &str) -> BTreeMap<String, String> {
    let text = server
        .verified_index("admin", &format!("{repo}/x86_64/APKINDEX.tar.gz"), None)
        .await;
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let fields = alpine_registry::apk::index::parse_stanza(s);
            (
                format!("{}-{}.apk", fields.name, fields.version),
                fields.checksum,
            )
        })
        .collect()
}

fn names(files: &BTreeMap<String, String>) -> Vec<&str> {
    files.keys().map(String::as_str).collect()
}

async fn download(server: &TestServer, repo: &str, file: &str) -> reqwest::Response {
    server.get(&format!("{repo}/x86_64/{file}"), None).await
}

async fn repository_id(server: &TestServer, path: &str) -> i64 {
    let owner = server
        .state
        .store
        .owner_by_name("admin")
        .await
        .unwrap()
        .unwrap();
    server
        .state
        .store
        .repository(&alpine_registry::registry::repo_ref(owner.id, &at(path)))
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Each file with an open row in `rows` has exactly one.
fn one_open_row_per_file(rows: &[ServedRow]) -> BTreeMap<String, usize> {
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.last_ms.is_none()) {
        *open
            .entry(format!("{}/{}", row.arch, row.filename))
            .or_default() += 1;
    }
    for (file, count) in &open {
        assert_eq!(*count, 1, "{file} has {count} open rows: {rows:#?}");
    }
    open
}

async fn message(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_index_merges_its_members_and_follows_their_changes() {
    let upstream = Upstream::start(&[upstream_hello(), world()]).await;
    let server = TestServer::start().await;
    setup(&server, &upstream).await;

    // One index lists both members, signed by the owner's key only; the first member
    // wins for the same name and version.
    let files = listed(&server, ALL).await;
    assert_eq!(names(&files), ["hello-1.0-r0.apk", "world-2.1-r3.apk"]);
    assert_ne!(checksum(&hello()), checksum(&upstream_hello()));
    assert_eq!(files["hello-1.0-r0.apk"], checksum(&hello()));
    assert_eq!(files["world-2.1-r3.apk"], checksum(&world()));

    // Validators as for every index.
    let index = format!("{ALL}/x86_64/APKINDEX.tar.gz");
    let first = server.get(&index, None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(first.headers().contains_key("last-modified"));
    let bytes = first.bytes().await.unwrap();
    let again = server
        .client
        .get(server.url(&index))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(etag, format!("\"{}\"", sha256(&bytes)));

    // Packages.adb: the same packages, signed by the owner's key.
    let key = server.get("/admin/key", None).await.text().await.unwrap();
    let adb = server
        .get(&format!("{ALL}/x86_64/Packages.adb"), None)
        .await;
    assert_eq!(adb.status(), 200);
    let adb = alpine_registry::apk::adb::read_file(&adb.bytes().await.unwrap(), 1 << 24).unwrap();
    adb.verify(&key).unwrap();
    let packages: Vec<(String, String)> = adb
        .index()
        .unwrap()
        .packages
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(
        packages,
        [
            ("hello".to_string(), "1.0-r0".to_string()),
            ("world".to_string(), "2.1-r3".to_string())
        ]
    );

    // Downloads resolve to the member the index took each file from; upstream is asked
    // once.
    let response = download(&server, ALL, "hello-1.0-r0.apk").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), hello());
    for _ in 0..2 {
        let response = download(&server, ALL, "world-2.1-r3.apk").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap(), world());
    }
    assert_eq!(upstream.requests(".apk").len(), 1);
    assert_eq!(
        download(&server, ALL, "nope-1.0-r0.apk").await.status(),
        404
    );

    // A publish and a delete in the hosted member show at the next request: without
    // hosted's hello, upstream's is listed and served.
    assert_eq!(server.put_admin(HOSTED, extra()).await.status(), 201);
    let files = listed(&server, ALL).await;
    assert_eq!(
        names(&files),
        ["extra-0.1-r0.apk", "hello-1.0-r0.apk", "world-2.1-r3.apk"]
    );
    let deleted = server
        .delete(
            &format!("{HOSTED}/x86_64/hello-1.0-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let files = listed(&server, ALL).await;
    assert_eq!(files["hello-1.0-r0.apk"], checksum(&upstream_hello()));
    let response = download(&server, ALL, "hello-1.0-r0.apk").await;
    assert_eq!(response.bytes().await.unwrap(), upstream_hello());

    // Uploads, deletes and copies into it are refused.
    let put = server.put_admin(ALL, world()).await;
    assert_eq!(put.status(), 405);
    assert!(message(put).await.contains("virtual repository"));
    let delete = server
        .delete(
            &format!("{ALL}/x86_64/extra-0.1-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(delete.status(), 405);
    let copy = server
        .client
        .post(server.url("/api/v1/owners/admin/packages/extra/copy"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({
            "branch": "v3.21", "repository": "main", "arch": "x86_64", "version": "0.1-r0",
            "to": {"branch": "v3.21", "repository": "all"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(copy.status(), 405);

    // The API and the owner's page show the kind and the members.
    let repositories: serde_json::Value = server
        .get("/api/v1/owners/admin/repositories", None)
        .await
        .json()
        .await
        .unwrap();
    let kinds: BTreeMap<String, (String, serde_json::Value)> = repositories
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_string(),
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["members"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(kinds["main"].0, "hosted");
    assert_eq!(kinds["alpine"].0, "remote");
    assert_eq!(kinds["all"].0, "virtual");
    assert_eq!(
        kinds["all"].1,
        serde_json::json!(["admin/v3.21/main", "admin/v3.21/alpine"])
    );
    let members: serde_json::Value = server
        .get("/api/v1/owners/admin/repositories/v3.21/all/members", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        members["members"],
        serde_json::json!([
            {"repository": "admin/v3.21/main", "kind": "hosted"},
            {"repository": "admin/v3.21/alpine", "kind": "remote"},
        ])
    );
    let page = server.get("/admin", None).await.text().await.unwrap();
    assert!(
        page.contains(r#"<span class="badge virtual">virtual</span>"#),
        "{page}"
    );
    assert!(page.contains("of <code>admin/v3.21/main</code>, <code>admin/v3.21/alpine</code>"));

    // A member cannot be removed while the virtual repository lists it.
    let refused = alpine_registry::registry::repositories::remove(
        &server.state,
        &Actor::cli(),
        &at("admin/v3.21/main"),
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("member of the virtual repository admin/v3.21/all"),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test]
async fn virtual_repositories_are_created_over_the_api_with_members_that_exist() {
    let upstream = Upstream::start(&[world()]).await;
    let server = TestServer::start().await;
    setup(&server, &upstream).await;
    let create = |path: &str, members: serde_json::Value, token: Option<String>| {
        let mut request = server
            .client
            .put(server.url(&format!(
                "/api/v1/owners/admin/repositories/v3.21/{path}/members"
            )))
            .json(&serde_json::json!({ "members": members }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let admin = || Some(ADMIN_TOKEN.to_string());
    let anonymous = create("mix", serde_json::json!(["admin/v3.21/alpine"]), None)
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let writer = server
        .user_with_token("wendy", alpine_registry::store::Role::Write, None, None)
        .await;
    server
        .state
        .store
        .set_member(
            server
                .state
                .store
                .owner_by_name("admin")
                .await
                .unwrap()
                .unwrap()
                .id,
            server
                .state
                .store
                .user_by_name("wendy")
                .await
                .unwrap()
                .unwrap()
                .id,
            alpine_registry::store::Role::Write,
            None,
        )
        .await
        .unwrap();
    let forbidden = create(
        "mix",
        serde_json::json!(["admin/v3.21/alpine"]),
        Some(writer),
    )
    .await
    .unwrap();
    assert_eq!(forbidden.status(), 403, "the owner's admins only");
    let created = create(
        "mix",
        serde_json::json!(["admin/v3.21/alpine", "admin/v3.21/main"]),
        admin(),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["members"][0]["repository"], "admin/v3.21/alpine");
    let again = create("mix", serde_json::json!(["admin/v3.21/main"]), admin())
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    for (members, says) in [
        (
            serde_json::json!(["admin/v3.21/all"]),
            "is a virtual repository",
        ),
        (
            serde_json::json!(["admin/v3.21/nope"]),
            "no repository admin/v3.21/nope",
        ),
        (
            serde_json::json!(["other/v3.21/main"]),
            "is not a repository of admin",
        ),
        (serde_json::json!([]), "at least one member"),
        (
            serde_json::json!(["admin/v3.21/main", "admin/v3.21/main"]),
            "listed twice",
        ),
        (serde_json::json!(["admin/main"]), "OWNER/BRANCH/REPOSITORY"),
    ] {
        let refused = create("bad", members.clone(), admin()).await.unwrap();
        assert_eq!(refused.status(), 400, "{members}");
        let said = message(refused).await;
        assert!(said.contains(says), "{members}: {said}");
    }
    // A mix the other way round: upstream's world, then nothing more.
    let files = listed(&server, "/admin/v3.21/mix").await;
    assert_eq!(names(&files), ["hello-1.0-r0.apk", "world-2.1-r3.apk"]);
    assert_eq!(
        server
            .get("/api/v1/owners/admin/repositories/v3.21/main/members", None)
            .await
            .status(),
        404,
        "not a virtual repository"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_serving_what_members_dropped() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let never = common::package("never", "1.0-r0", "x86_64");
    let upstream = Upstream::start(&[upstream_hello(), world(), never.clone()]).await;
    let server = TestServer::start_with_clock(|_| {}, clock.clone()).await;
    let now = || {
        let shared: SharedClock = clock.clone();
        shared.unix_ms()
    };
    setup(&server, &upstream).await;
    let before_anything = rfc3339_ms(now());
    clock.advance(Duration::from_secs(1));

    let files = listed(&server, ALL).await;
    assert_eq!(
        names(&files),
        ["hello-1.0-r0.apk", "never-1.0-r0.apk", "world-2.1-r3.apk"]
    );
    // world is cached by the remote member; never is not fetched.
    assert_eq!(
        download(&server, ALL, "world-2.1-r3.apk")
            .await
            .bytes()
            .await
            .unwrap(),
        world()
    );
    clock.advance(Duration::from_secs(1));
    let snapshots = "/api/v1/owners/admin/repositories/v3.21/all/snapshots";
    let created = server
        .client
        .post(server.url(snapshots))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "release-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["path"], "/admin/v3.21/all@release-1");
    let snapshot_ms = created["at_ms"].as_i64().unwrap();
    let duplicate = server
        .client
        .post(server.url(snapshots))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "release-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let unnamed = server
        .client
        .post(server.url(snapshots))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unnamed.status(), 201);
    let unnamed: serde_json::Value = unnamed.json().await.unwrap();
    assert_eq!(
        unnamed["name"],
        alpine_registry::registry::snapshots::default_name(snapshot_ms)
    );

    // Upstream drops world and never, the hosted member deletes hello.
    clock.advance(Duration::from_secs(1));
    upstream.publish(&[upstream_hello()], &upstream.key);
    let deleted = server
        .delete(
            &format!("{HOSTED}/x86_64/hello-1.0-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    clock.advance(Duration::from_secs(61));
    let files = listed(&server, ALL).await;
    assert_eq!(names(&files), ["hello-1.0-r0.apk"]);
    assert_eq!(files["hello-1.0-r0.apk"], checksum(&upstream_hello()));
    assert_eq!(
        download(&server, ALL, "world-2.1-r3.apk").await.status(),
        404
    );

    // The snapshot, by name and by its time in another offset, lists and serves what was
    // served then.
    let one_hour_ahead = {
        let at =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(snapshot_ms) * 1_000_000)
                .unwrap()
                .to_offset(time::macros::offset!(+1));
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for view in [
        format!("{ALL}@release-1"),
        format!("{ALL}@{one_hour_ahead}"),
    ] {
        let files = listed(&server, &view).await;
        assert_eq!(
            names(&files),
            ["hello-1.0-r0.apk", "never-1.0-r0.apk", "world-2.1-r3.apk"],
            "{view}"
        );
        assert_eq!(files["hello-1.0-r0.apk"], checksum(&hello()), "{view}");
        let response = download(&server, &view, "hello-1.0-r0.apk").await;
        assert_eq!(response.status(), 200, "{view}");
        assert_eq!(response.bytes().await.unwrap(), hello());
        let response = download(&server, &view, "world-2.1-r3.apk").await;
        assert_eq!(response.status(), 200, "{view}");
        assert_eq!(response.bytes().await.unwrap(), world());
        // never was never fetched, and upstream no longer lists it.
        let response = download(&server, &view, "never-1.0-r0.apk").await;
        assert_eq!(response.status(), 404, "{view}");
        assert!(message(response).await.contains("never cached"));
        let adb = server
            .get(&format!("{view}/x86_64/Packages.adb"), None)
            .await;
        assert_eq!(adb.status(), 200);
    }
    assert_eq!(upstream.requests(".apk").len(), 1, "served from storage");
    // The remote repository keeps its own history.
    let remote_view = format!("{REMOTE}@{}", rfc3339_ms(snapshot_ms));
    let files = listed(&server, &remote_view).await;
    assert_eq!(
        names(&files),
        ["hello-1.0-r0.apk", "never-1.0-r0.apk", "world-2.1-r3.apk"]
    );
    assert_eq!(
        download(&server, &remote_view, "world-2.1-r3.apk")
            .await
            .bytes()
            .await
            .unwrap(),
        world()
    );
    // Upstream still lists its hello: fetched now, though never asked for before.
    assert_eq!(
        download(&server, &remote_view, "hello-1.0-r0.apk")
            .await
            .bytes()
            .await
            .unwrap(),
        upstream_hello()
    );

    // The deleted hosted file stays: orphan collection and fsck leave it.
    let collected = alpine_registry::registry::fsck::collect_orphans(&server.state, Duration::ZERO)
        .await
        .unwrap();
    assert!(!collected.contains(&sha256(&hello())), "{collected:?}");
    let report = alpine_registry::registry::fsck::fsck(&server.state, false)
        .await
        .unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(
        download(&server, &format!("{ALL}@release-1"), "hello-1.0-r0.apk")
            .await
            .bytes()
            .await
            .unwrap(),
        hello()
    );

    // What views refuse.
    let future = rfc3339_ms(now() + 3_600_000);
    let response = server
        .get(&format!("{ALL}@{future}/x86_64/APKINDEX.tar.gz"), None)
        .await;
    assert_eq!(response.status(), 400);
    assert!(message(response).await.contains("in the future"));
    let response = server
        .get(&format!("{ALL}@nope/x86_64/APKINDEX.tar.gz"), None)
        .await;
    assert_eq!(response.status(), 404);
    assert!(message(response).await.contains("no snapshot named nope"));
    let response = server
        .get(
            &format!("{ALL}@{before_anything}/x86_64/APKINDEX.tar.gz"),
            None,
        )
        .await;
    assert_eq!(response.status(), 404);
    let response = server
        .get(
            &format!(
                "{HOSTED}@{}/x86_64/APKINDEX.tar.gz",
                rfc3339_ms(snapshot_ms)
            ),
            None,
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(message(response).await.contains("hosted repository"));
    let put = server.put_admin(&format!("{ALL}@release-1"), world()).await;
    assert_eq!(put.status(), 405);
    let delete = server
        .delete(
            &format!("{ALL}@release-1/x86_64/world-2.1-r3.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(delete.status(), 405);

    // Listed, removed; the moment stays readable by its time.
    let list: serde_json::Value = server.get(snapshots, None).await.json().await.unwrap();
    let listed_names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed_names.len(), 2);
    assert!(listed_names.contains(&"release-1"), "{list}");
    let remove = |name: &str| {
        server
            .client
            .delete(server.url(&format!("{snapshots}/{name}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    assert_eq!(remove("release-1").await.unwrap().status(), 204);
    assert_eq!(remove("release-1").await.unwrap().status(), 404);
    assert_eq!(
        server
            .get(&format!("{ALL}@release-1/x86_64/APKINDEX.tar.gz"), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        listed(&server, &format!("{ALL}@{}", rfc3339_ms(snapshot_ms)))
            .await
            .len(),
        3
    );
    let hosted = server
        .client
        .post(server.url("/api/v1/owners/admin/repositories/v3.21/main/snapshots"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(hosted.status(), 400);
    server.stop().await;
}

/// Many requests at once, on an index whose member changed, build it and record its
/// listing as one: one open history row per file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_builds_record_one_open_row_per_file() {
    let upstream = Upstream::start(&[upstream_hello(), world()]).await;
    let server = TestServer::start().await;
    setup(&server, &upstream).await;
    listed(&server, ALL).await;
    assert_eq!(server.put_admin(HOSTED, extra()).await.status(), 201);
    let url = server.url(&format!("{ALL}/x86_64/APKINDEX.tar.gz"));
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (reqwest::Client::new(), url.clone());
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "the same bytes");
    let rows = server
        .state
        .store
        .served_history(repository_id(&server, "admin/v3.21/all").await)
        .await
        .unwrap();
    let open = one_open_row_per_file(&rows);
    assert_eq!(open.len(), 3, "{rows:#?}");
    assert_eq!(rows.len(), 3, "nothing closed and opened again: {rows:#?}");
    server.stop().await;
}

/// Two instances on one PostgreSQL database: changes made through one show in the
/// virtual index the other serves, and both building at once record one listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_serves_the_members_changes_made_through_the_first() {
    use common::postgres::{self as pg, TestDatabase};
    let Some(database) = TestDatabase::from_env() else {
        pg::note_skipped();
        return;
    };
    let upstream = Upstream::start(&[upstream_hello(), world()]).await;
    let blobs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
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
    setup(&a, &upstream).await;

    let files = listed(&b, ALL).await;
    assert_eq!(names(&files), ["hello-1.0-r0.apk", "world-2.1-r3.apk"]);
    assert_eq!(files["hello-1.0-r0.apk"], checksum(&hello()));
    assert_eq!(a.put_admin(HOSTED, extra()).await.status(), 201);
    let files = listed(&b, ALL).await;
    assert!(files.contains_key("extra-0.1-r0.apk"), "{files:?}");
    assert_eq!(
        download(&b, ALL, "extra-0.1-r0.apk")
            .await
            .bytes()
            .await
            .unwrap(),
        extra()
    );
    let deleted = a
        .delete(
            &format!("{HOSTED}/x86_64/hello-1.0-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let files = listed(&b, ALL).await;
    assert_eq!(files["hello-1.0-r0.apk"], checksum(&upstream_hello()));
    let put = b.put_admin(ALL, world()).await;
    assert_eq!(put.status(), 405, "b knows the repository is virtual");

    // Both instances build the changed index at once.
    let more = common::package("more", "1.0-r0", "x86_64");
    assert_eq!(a.put_admin(HOSTED, more).await.status(), 201);
    let requests: Vec<_> = (0..8)
        .flat_map(|_| [a.url(ALL), b.url(ALL)])
        .map(|repo| {
            let client = reqwest::Client::new();
            tokio::spawn(async move {
                let response = client
                    .get(format!("{repo}/x86_64/APKINDEX.tar.gz"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "the same bytes");
    let rows = a
        .state
        .store
        .served_history(repository_id(&a, "admin/v3.21/all").await)
        .await
        .unwrap();
    let open = one_open_row_per_file(&rows);
    assert_eq!(open.len(), 4, "{rows:#?}");
    let more_rows = rows
        .iter()
        .filter(|r| r.filename == "more-1.0-r0.apk")
        .count();
    assert_eq!(more_rows, 1, "{rows:#?}");
    a.stop().await;
    b.stop().await;
}

/// `repository create --virtual`, `repository list` and `show`, `snapshot create`, `list`
/// and `remove` on the command line.
#[tokio::test]
async fn virtual_repositories_and_snapshots_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    common::run_ok(common::cli(dir.path()).arg("migrate"));
    common::run_ok(common::cli(dir.path()).args(["owner", "create", "acme"]));
    common::run_ok(common::cli(dir.path()).args(["repository", "create", "acme/v3.21/main"]));
    let (_, said) = common::run_ok_both(common::cli(dir.path()).args([
        "repository",
        "create",
        "acme/v3.21/all",
        "--virtual",
        "acme/v3.21/main",
    ]));
    assert!(
        said.contains("virtual repository acme/v3.21/all of acme/v3.21/main"),
        "{said}"
    );
    let refused = common::run_err(common::cli(dir.path()).args([
        "repository",
        "create",
        "acme/v3.21/nested",
        "--virtual",
        "acme/v3.21/all",
    ]));
    assert!(refused.contains("is a virtual repository"), "{refused}");
    let list = common::run_ok(common::cli(dir.path()).args(["repository", "list"]));
    assert!(list.contains("virtual of acme/v3.21/main"), "{list}");
    let show =
        common::run_ok(common::cli(dir.path()).args(["repository", "show", "acme/v3.21/all"]));
    assert!(show.contains("acme/v3.21/main (hosted)"), "{show}");
    let created = common::run_ok(common::cli(dir.path()).args([
        "snapshot",
        "create",
        "acme/v3.21/all",
        "--name",
        "r1",
    ]));
    assert_eq!(created.trim(), "acme/v3.21/all@r1");
    let duplicate = common::run_err(common::cli(dir.path()).args([
        "snapshot",
        "create",
        "acme/v3.21/all",
        "--name",
        "r1",
    ]));
    assert!(duplicate.contains("already"), "{duplicate}");
    let hosted =
        common::run_err(common::cli(dir.path()).args(["snapshot", "create", "acme/v3.21/main"]));
    assert!(hosted.contains("hosted repository"), "{hosted}");
    let list = common::run_ok(common::cli(dir.path()).args(["snapshot", "list", "acme/v3.21/all"]));
    assert!(list.contains("acme/v3.21/all@r1"), "{list}");
    common::run_ok(common::cli(dir.path()).args(["snapshot", "remove", "acme/v3.21/all", "r1"]));
    let list = common::run_ok(common::cli(dir.path()).args(["snapshot", "list", "acme/v3.21/all"]));
    assert!(!list.contains("r1"), "{list}");
    let member =
        common::run_err(common::cli(dir.path()).args(["repository", "remove", "acme/v3.21/main"]));
    assert!(
        member.contains("member of the virtual repository"),
        "{member}"
    );
}
