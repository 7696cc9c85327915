//! `Packages.adb`, the apk v3 index served beside each `APKINDEX.tar.gz`: the same
//! packages after every publish and delete, signed by the owner's key, with the same
//! validators and access rules, and the same through every instance of one database.
//! What it serves is decoded with the registry's own ADB reader.

mod common;

use std::collections::BTreeSet;

use alpine_registry::apk::adb::{self, IndexPackage};
use alpine_registry::store::Role;
use common::*;

const REPO: &str = "/admin/v3.21/main";

/// The owner's public key (PEM).
async fn owner_key(server: &TestServer, owner: &str, auth: Option<(&str, &str)>) -> String {
    let key = server.get(&format!("/{owner}/key"), auth).await;
    assert_eq!(key.status(), 200);
    key.text().await.unwrap()
}

/// GETs a `Packages.adb`, checks its signature with the owner's key and returns its
/// packages.
async fn verified_adb(
    server: &TestServer,
    owner: &str,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Vec<IndexPackage> {
    let key = owner_key(server, owner, auth).await;
    let response = server.get(path, auth).await;
    assert_eq!(response.status(), 200, "GET {path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"ADBd", "deflated as apk mkndx writes it");
    let file = adb::read_file(&bytes, 64 << 20).expect("an ADB file");
    assert_eq!(file.signatures.len(), 1, "one signature per owner key");
    file.verify(&key).expect("signed by the owner's key");
    file.index().expect("an index").packages
}

fn names(packages: &[IndexPackage]) -> BTreeSet<String> {
    packages
        .iter()
        .map(|p| format!("{}-{}", p.name, p.version))
        .collect()
}

/// What the APKINDEX of the same architecture lists, as `name-version`.
async fn v2_names(server: &TestServer, owner: &str, index: &str) -> BTreeSet<String> {
    let text = server.verified_index(owner, index, None).await;
    let mut listed = BTreeSet::new();
    let (mut name, mut version) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("P:") {
            name = v.to_string();
        } else if let Some(v) = line.strip_prefix("V:") {
            version = v.to_string();
        } else if line.is_empty() {
            listed.insert(format!("{name}-{version}"));
        }
    }
    listed
}

async fn publish(server: &TestServer, bytes: Vec<u8>) {
    let response = server.put_admin(REPO, bytes).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn packages_adb_lists_what_the_apkindex_lists_after_publish_and_delete() {
    let server = TestServer::start().await;
    publish(&server, package("keep", "1.0-r0", "x86_64")).await;
    publish(&server, package("gone", "1.0-r0", "x86_64")).await;
    publish(&server, package("docs", "2.0-r0", "noarch")).await;
    publish(&server, package("armonly", "1.0-r0", "aarch64")).await;
    for (arch, expected) in [
        ("x86_64", vec!["docs-2.0-r0", "gone-1.0-r0", "keep-1.0-r0"]),
        ("aarch64", vec!["armonly-1.0-r0", "docs-2.0-r0"]),
    ] {
        let adb_path = format!("{REPO}/{arch}/Packages.adb");
        let packages = verified_adb(&server, "admin", &adb_path, None).await;
        let index = format!("{REPO}/{arch}/APKINDEX.tar.gz");
        assert_eq!(names(&packages), v2_names(&server, "admin", &index).await);
        assert_eq!(
            names(&packages),
            expected.into_iter().map(String::from).collect()
        );
        // A noarch package keeps its arch: apk 3 fetches it from noarch/, served too.
        let docs = packages.iter().find(|p| p.name == "docs").unwrap();
        assert_eq!(docs.arch.as_deref(), Some("noarch"));
    }
    let noarch = server
        .get(&format!("{REPO}/noarch/docs-2.0-r0.apk"), None)
        .await;
    assert_eq!(noarch.status(), 200);

    let deleted = server
        .delete(
            &format!("{REPO}/x86_64/gone-1.0-r0.apk"),
            Some(("admin", ADMIN_TOKEN)),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let packages = verified_adb(
        &server,
        "admin",
        &format!("{REPO}/x86_64/Packages.adb"),
        None,
    )
    .await;
    assert_eq!(
        names(&packages),
        ["docs-2.0-r0", "keep-1.0-r0"].map(String::from).into()
    );
    let index = format!("{REPO}/x86_64/APKINDEX.tar.gz");
    assert_eq!(names(&packages), v2_names(&server, "admin", &index).await);
    server.stop().await;
}

#[tokio::test]
async fn packages_adb_of_the_real_packages_equals_apk_mkndx_field_for_field() {
    let server = TestServer::start().await;
    for file in [
        "gitea-test-1.4.1-r3.apk",
        "forgejo-noarch-test-1.0.0-r0.apk",
        "forgejo-noarch-test-openrc-1.0.0-r0.apk",
    ] {
        publish(&server, fixture(file)).await;
    }
    let served = verified_adb(
        &server,
        "admin",
        &format!("{REPO}/x86_64/Packages.adb"),
        None,
    )
    .await;
    // `apk mkndx` of the same three files (tests/fixtures/EXPECTED.md).
    let mkndx = adb::read_file(&fixture("mkndx-Packages.adb"), 1 << 20)
        .unwrap()
        .index()
        .unwrap();
    assert_eq!(served, mkndx.packages);
    server.stop().await;
}

#[tokio::test]
async fn packages_adb_answers_conditional_requests_like_the_apkindex() {
    let server = TestServer::start().await;
    publish(&server, package("keep", "1.0-r0", "x86_64")).await;
    let path = format!("{REPO}/x86_64/Packages.adb");
    let first = server.get(&path, None).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(first.headers()["cache-control"], "public, no-cache");
    let body = first.bytes().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&body)));

    let again = server
        .client
        .get(server.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    // Dated by the build that published it with the APKINDEX: If-Modified-Since is judged
    // as for the APKINDEX (a date within the current second is not final yet).
    let v2 = server
        .get(&format!("{REPO}/x86_64/APKINDEX.tar.gz"), None)
        .await;
    assert_eq!(v2.headers()["last-modified"].to_str().unwrap(), modified);
    let conditional = |p: String| {
        server
            .client
            .get(server.url(&p))
            .header("if-modified-since", &modified)
            .send()
    };
    let since = conditional(path.clone()).await.unwrap();
    let v2_since = conditional(format!("{REPO}/x86_64/APKINDEX.tar.gz"))
        .await
        .unwrap();
    assert_eq!(since.status(), v2_since.status());
    let head = server.client.head(server.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty());

    // A publish changes it: the old validator no longer matches.
    publish(&server, package("more", "1.0-r0", "x86_64")).await;
    let changed = server
        .client
        .get(server.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    server.stop().await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn private_owner_packages_adb_needs_a_members_credentials() {
    let server = TestServer::start().await;
    server
        .state
        .store
        .create_owner("priv", true, true, None)
        .await
        .unwrap();
    let response = server
        .put_admin("/priv/v1/main", package("p", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let path = "/priv/v1/main/x86_64/Packages.adb";
    let index = "/priv/v1/main/x86_64/APKINDEX.tar.gz";
    assert_eq!(server.get(path, None).await.status(), 401);
    // An outsider is answered as for the APKINDEX (the owner's existence stays hidden).
    let outsider = server
        .user_with_token("outsider", Role::Admin, None, None)
        .await;
    let status = server
        .get(path, Some(("outsider", &outsider)))
        .await
        .status();
    assert!(status.is_client_error(), "{status}");
    let v2 = server.get(index, Some(("outsider", &outsider))).await;
    assert_eq!(status, v2.status());
    let reader = server
        .user_with_token("reader", Role::Read, None, None)
        .await;
    server
        .state
        .store
        .set_member(
            server
                .state
                .store
                .owner_by_name("priv")
                .await
                .unwrap()
                .unwrap()
                .id,
            server
                .state
                .store
                .user_by_name("reader")
                .await
                .unwrap()
                .unwrap()
                .id,
            Role::Read,
            None,
        )
        .await
        .unwrap();
    let packages = verified_adb(&server, "priv", path, Some(("reader", &reader))).await;
    assert_eq!(names(&packages), ["p-1.0-r0".to_string()].into());
    let response = server.get(path, Some(("reader", &reader))).await;
    assert_eq!(response.headers()["cache-control"], "private, no-cache");
    server.stop().await;
}

#[tokio::test]
async fn packages_adb_published_through_one_instance_is_served_by_another() {
    let Some(_) = postgres::server_url() else {
        eprintln!("skipped: no PostgreSQL (set {})", postgres::URL_ENV);
        return;
    };
    let first = TestServer::start().await;
    let second = TestServer::start_on((*first.state.config).clone()).await;
    let path = format!("{REPO}/x86_64/Packages.adb");
    publish(&first, package("keep", "1.0-r0", "x86_64")).await;
    let packages = verified_adb(&second, "admin", &path, None).await;
    assert_eq!(names(&packages), ["keep-1.0-r0".to_string()].into());
    // And the other way, after the other instance served (and may keep) the first one.
    let response = second
        .put_admin(REPO, package("more", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let packages = verified_adb(&first, "admin", &path, None).await;
    assert_eq!(
        names(&packages),
        ["keep-1.0-r0", "more-1.0-r0"].map(String::from).into()
    );
    second.stop().await;
    first.stop().await;
}

/// Random publishes and deletes (concrete and noarch, two architectures), each followed
/// by the served `Packages.adb` of both architectures, which the indexer updates in
/// place: signed by the owner's key, and listing field for field what a full build of
/// the same rows lists.
#[tokio::test]
async fn incremental_packages_adb_lists_what_a_full_build_lists_after_random_changes() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("ADB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (ADB_SEED={seed} to run it again)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start().await;
    let state = &server.state;
    let arches = ["x86_64", "aarch64"];
    for arch in arches {
        publish(&server, package(&format!("base-{arch}"), "1.0-r0", arch)).await;
    }
    let owner = state.store.owner_by_name("admin").await.unwrap().unwrap();
    let repo_ref = alpine_registry::store::RepoRef {
        owner_id: owner.id,
        branch: "v3.21".into(),
        repository: "main".into(),
    };
    let repo = state.store.repository(&repo_ref).await.unwrap().unwrap();
    let incremental_before = state.indexer.incremental_builds();
    let mut live: Vec<(String, String)> = Vec::new();
    let mut serial = 0;
    let steps = 60;
    for step in 0..steps {
        // Mostly publishes at first, mostly deletes later.
        let publishing = live.is_empty() || rng.gen_bool(if step < steps / 2 { 0.8 } else { 0.3 });
        if publishing {
            serial += 1;
            let arch = ["x86_64", "aarch64", "noarch"][rng.gen_range(0..3)];
            let name = format!("p{}", rng.gen_range(0..8));
            let version = format!("1.{serial}-r0");
            publish(&server, package(&name, &version, arch)).await;
            live.push((format!("{name}-{version}"), arch.to_string()));
        } else {
            let (file, arch) = live.swap_remove(rng.gen_range(0..live.len()));
            let deleted = server
                .delete(
                    &format!("{REPO}/{arch}/{file}.apk"),
                    Some(("admin", ADMIN_TOKEN)),
                )
                .await;
            assert_eq!(deleted.status(), 204, "seed {seed}, step {step}");
        }
        let (_, rendered, _) = state.indexer.render(&owner, &repo, None).await.unwrap();
        for arch in arches {
            let served = verified_adb(
                &server,
                "admin",
                &format!("{REPO}/{arch}/Packages.adb"),
                None,
            )
            .await;
            let full = rendered.iter().find(|r| r.arch == arch).unwrap();
            let full = adb::read_file(&full.adb.as_ref().unwrap().content, 64 << 20)
                .unwrap()
                .index()
                .unwrap()
                .packages;
            assert_eq!(served, full, "seed {seed}, step {step}, {arch}");
            let expected: BTreeSet<String> = live
                .iter()
                .filter(|(_, a)| a == arch || a == "noarch")
                .map(|(f, _)| f.clone())
                .chain([format!("base-{arch}-1.0-r0")])
                .collect();
            assert_eq!(names(&served), expected, "seed {seed}, step {step}, {arch}");
        }
    }
    assert_eq!(
        state.indexer.incremental_builds() - incremental_before,
        steps,
        "every change was applied to the kept indexes"
    );
    server.stop().await;
}
