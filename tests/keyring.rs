//! The keyring package `<owner>-keys`: listed in every repository of the owner, holding
//! exactly the public keys of its active keys under etc/apk/keys, signed by its newest key;
//! a new version after every rotation and retirement, published before the change
//! answers; switched off and on per owner; its name refused to uploads while it is on.
//!
//! Packages are read with the project's own parser; signatures are checked with the
//! public keys the registry serves.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use alpine_registry::apk::package::{parse_package, Limits};
use alpine_registry::apk::sign::{self, SignatureAlgorithm};
use alpine_registry::apk::version;
use alpine_registry::names::RepoAddress;
use alpine_registry::registry::audit::Actor;
use alpine_registry::store::Role;
use common::*;
use serde_json::{json, Value};

const REPOS: [&str; 2] = ["/admin/edge/main", "/admin/edge/community"];

fn admin() -> Option<(&'static str, &'static str)> {
    Some(("admin", ADMIN_TOKEN))
}

async fn start() -> TestServer {
    TestServer::start_with(|c| c.signing.keyring = true).await
}

/// The keyring package as a client sees it.
#[derive(Debug)]
struct Keyring {
    version: String,
    /// `etc/apk/keys/<name>` → contents.
    files: BTreeMap<String, String>,
    /// The key names of its `.SIGN.RSA256.<name>` entries.
    signed_by: Vec<String>,
}

/// The public key of admin's key `name`, as the registry serves it.
async fn public_key(server: &TestServer, name: &str) -> String {
    let key = server.get(&format!("/admin/keys/{name}"), admin()).await;
    assert_eq!(key.status(), 200, "/admin/keys/{name}");
    key.text().await.unwrap()
}

/// The version of `admin-keys` the verified x86_64 index of `repo` lists, if any.
async fn listed_version(server: &TestServer, repo: &str) -> Option<String> {
    let path = format!("{repo}/x86_64/APKINDEX.tar.gz");
    let response = server.get(&path, admin()).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let bytes = response.bytes().await.unwrap();
    let (signatures, signed) = sign::split_signed(&bytes).expect("a signed index");
    for (name, signature) in &signatures {
        let (alg, key_name) = match name.strip_prefix(".SIGN.RSA256.") {
            Some(key_name) => (SignatureAlgorithm::Rsa256, key_name),
            None => (
                SignatureAlgorithm::Rsa,
                name.strip_prefix(".SIGN.RSA.").unwrap(),
            ),
        };
        sign::verify(&public_key(server, key_name).await, alg, signed, signature)
            .expect("every signature of the index verifies");
    }
    let text = apkindex_text(signed);
    let stanza = text
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l == "P:admin-keys"))?;
    assert!(
        stanza.lines().any(|l| l == "A:x86_64"),
        "noarch, listed under the index's architecture: {stanza}"
    );
    stanza
        .lines()
        .find_map(|l| l.strip_prefix("V:"))
        .map(str::to_string)
}

/// Downloads `admin-keys` of `version` from `repo`, parses it with the registry's parser
/// and checks its signature with the public key it names, as served by the registry.
async fn download(server: &TestServer, repo: &str, version: &str) -> Keyring {
    let path = format!("{repo}/x86_64/admin-keys-{version}.apk");
    let response = server.get(&path, admin()).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let bytes = response.bytes().await.unwrap().to_vec();
    let parsed = parse_package(&bytes[..], &Limits::default()).expect("a valid package");
    assert_eq!(parsed.info.pkgname, "admin-keys");
    assert_eq!(parsed.info.pkgver, version);
    assert_eq!(parsed.info.arch, "noarch");

    let (signatures, signed) = sign::split_signed(&bytes).expect("a signed package");
    // The signature covers the control member, the first gzip member after it.
    let mut rest = signed;
    std::io::copy(
        &mut flate2::bufread::GzDecoder::new(&mut rest),
        &mut std::io::sink(),
    )
    .unwrap();
    let control = &signed[..signed.len() - rest.len()];
    let mut signed_by = Vec::new();
    for (name, signature) in &signatures {
        let key_name = name
            .strip_prefix(".SIGN.RSA256.")
            .unwrap_or_else(|| panic!("abuild-sign's entry: {name}"));
        sign::verify(
            &public_key(server, key_name).await,
            SignatureAlgorithm::Rsa256,
            control,
            signature,
        )
        .expect("the package's signature verifies with the key it names");
        signed_by.push(key_name.to_string());
    }

    let mut files = BTreeMap::new();
    let mut data = tar::Archive::new(flate2::read::GzDecoder::new(rest));
    for entry in data.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            files.insert(path, text);
        }
    }
    Keyring {
        version: version.to_string(),
        files,
        signed_by,
    }
}

/// The keyring every repository lists: the same version everywhere, verified.
async fn current(server: &TestServer) -> Keyring {
    let mut found: Option<Keyring> = None;
    for repo in REPOS {
        let version = listed_version(server, repo)
            .await
            .unwrap_or_else(|| panic!("{repo} lists admin-keys"));
        let keyring = download(server, repo, &version).await;
        if let Some(first) = &found {
            assert_eq!(first.version, keyring.version);
            assert_eq!(first.files, keyring.files);
        }
        found = Some(keyring);
    }
    found.unwrap()
}

/// `etc/apk/keys/<name>` → public PEM of every active key of admin, as the API lists
/// them and the registry serves them.
async fn active_keys(server: &TestServer) -> BTreeMap<String, String> {
    let detail: Value = server
        .get("/api/v1/owners/admin", admin())
        .await
        .json()
        .await
        .unwrap();
    let mut keys = BTreeMap::new();
    for key in detail["keys"].as_array().unwrap() {
        if key["state"] == "active" {
            let name = key["file_name"].as_str().unwrap();
            keys.insert(
                format!("etc/apk/keys/{name}"),
                public_key(server, name).await,
            );
        }
    }
    keys
}

async fn post(server: &TestServer, path: &str) -> Value {
    let response = server
        .client
        .post(server.url(path))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "POST {path}");
    response.json().await.unwrap()
}

async fn switch(server: &TestServer, auth: (&str, &str), enabled: bool) -> (u16, Value) {
    let response = server
        .client
        .put(server.url("/api/v1/owners/admin/keyring"))
        .basic_auth(auth.0, Some(auth.1))
        .json(&json!({ "enabled": enabled }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_keyring_follows_every_rotation_and_retirement_in_every_repository() {
    let server = start().await;
    for repo in REPOS {
        let response = server
            .put_admin(repo, package("hello", "1.0-r0", "x86_64"))
            .await;
        assert_eq!(response.status(), 201);
    }
    let first = current(&server).await;
    let (old, _) = {
        let keys = active_keys(&server).await;
        assert_eq!(keys.len(), 1);
        keys.into_iter().next().unwrap()
    };
    let old = old.strip_prefix("etc/apk/keys/").unwrap().to_string();
    assert_eq!(first.files, active_keys(&server).await);
    assert_eq!(first.signed_by, vec![old.clone()]);

    let rotated = post(&server, "/api/v1/owners/admin/keys/rotate").await;
    let new = rotated["key"]["file_name"].as_str().unwrap().to_string();
    // Published before the rotation answered: no wait here.
    let second = current(&server).await;
    assert_eq!(
        version::compare(&second.version, &first.version),
        std::cmp::Ordering::Greater,
        "{} after {}",
        second.version,
        first.version
    );
    assert_eq!(second.files, active_keys(&server).await);
    assert_eq!(
        second.files.keys().cloned().collect::<Vec<_>>(),
        {
            let mut both = vec![format!("etc/apk/keys/{old}"), format!("etc/apk/keys/{new}")];
            both.sort();
            both
        },
        "both keys while both sign"
    );
    assert_eq!(
        second.signed_by,
        vec![new.clone()],
        "signed by the newest key"
    );
    let replaced = server
        .get(
            &format!("/admin/edge/main/x86_64/admin-keys-{}.apk", first.version),
            admin(),
        )
        .await;
    assert_eq!(replaced.status(), 404, "the earlier version is deleted");

    post(&server, &format!("/api/v1/owners/admin/keys/{old}/retire")).await;
    let third = current(&server).await;
    assert_eq!(
        version::compare(&third.version, &second.version),
        std::cmp::Ordering::Greater
    );
    assert_eq!(
        third.files.keys().cloned().collect::<Vec<_>>(),
        vec![format!("etc/apk/keys/{new}")],
        "the retired key's file is gone"
    );
    assert_eq!(third.files, active_keys(&server).await);
    assert_eq!(third.signed_by, vec![new.clone()]);

    // The audit log says who published it, naming keys, never their material.
    let audit: Value = server
        .get("/api/v1/admin/audit?action=keyring.publish", admin())
        .await
        .json()
        .await
        .unwrap();
    let text = audit.to_string();
    assert!(text.contains(&new), "{text}");
    assert!(!text.contains("BEGIN"), "no key material: {text}");
    server.stop().await;
}

#[tokio::test]
async fn switched_off_it_leaves_every_index_and_on_it_comes_back_and_new_repositories_get_it() {
    let server = start().await;
    for repo in REPOS {
        assert_eq!(
            server
                .put_admin(repo, package("hello", "1.0-r0", "x86_64"))
                .await
                .status(),
            201
        );
    }
    let before = current(&server).await;

    let (status, body) = switch(&server, ("admin", ADMIN_TOKEN), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false);
    for repo in REPOS {
        assert_eq!(listed_version(&server, repo).await, None, "{repo}");
    }
    // Off, a package of its name is the owner's to upload.
    let (status, body) = switch(&server, ("admin", ADMIN_TOKEN), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], before.version.as_str());
    assert_eq!(body["repositories"].as_array().unwrap().len(), 2);
    let after = current(&server).await;
    assert_eq!(after.files, before.files, "the same key set, the same keys");

    // A repository created by its first upload, and one created empty.
    let created = server
        .put_admin("/admin/v3.20/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        listed_version(&server, "/admin/v3.20/main").await,
        Some(before.version.clone())
    );
    let at = RepoAddress::parse("admin", "v3.20", "testing").unwrap();
    alpine_registry::registry::repositories::create(&server.state, &Actor::cli(), &at)
        .await
        .unwrap();
    let index = server
        .get("/admin/v3.20/testing/x86_64/APKINDEX.tar.gz", admin())
        .await;
    assert_eq!(index.status(), 200);
    assert_eq!(
        listed_version(&server, "/admin/v3.20/testing").await,
        Some(before.version.clone())
    );
    server.stop().await;
}

#[tokio::test]
async fn an_upload_named_like_the_keyring_is_refused_while_it_is_on() {
    let server = start().await;
    let response = server
        .put_admin("/admin/edge/main", package("admin-keys", "99-r0", "noarch"))
        .await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Conflict");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("keyring"), "{message}");
    assert!(message.contains("owner keyring admin off"), "{message}");

    // A member who is not an admin of the owner may not switch it.
    let secret = server
        .user_with_token("writer", Role::Write, None, None)
        .await;
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &Actor::cli(),
        "admin",
        "writer",
        Role::Write,
    )
    .await
    .unwrap();
    let (status, _) = switch(&server, ("writer", &secret), false).await;
    assert_eq!(status, 403);

    let (status, _) = switch(&server, ("admin", ADMIN_TOKEN), false).await;
    assert_eq!(status, 200);
    let response = server
        .put_admin("/admin/edge/main", package("admin-keys", "99-r0", "noarch"))
        .await;
    assert_eq!(response.status(), 201, "the owner's own package while off");
    // A key change while off leaves the owner's own package of that name alone.
    post(&server, "/api/v1/owners/admin/keys/rotate").await;
    assert_eq!(
        listed_version(&server, "/admin/edge/main").await.as_deref(),
        Some("99-r0")
    );
    server.stop().await;
}

/// A remote (proxy) repository lists what its upstream lists: a key change publishes the
/// keyring into the owner's hosted repositories and leaves the remote one alone.
#[tokio::test]
async fn a_key_change_leaves_remote_repositories_alone() {
    let server = start().await;
    let put = server
        .put_admin("/admin/edge/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(put.status(), 201);
    let pem = server
        .get("/admin/key", admin())
        .await
        .text()
        .await
        .unwrap();
    let remote = alpine_registry::registry::remote::create(
        &server.state,
        &Actor::cli(),
        &RepoAddress::parse_path("admin/v3.21/upstream").unwrap(),
        &alpine_registry::registry::remote::NewRemote {
            url: "http://127.0.0.1:9/alpine/v3.21/main".into(),
            keys: vec![alpine_registry::store::UpstreamKey {
                name: "upstream-0123abcd.rsa.pub".into(),
                pem,
            }],
            refresh_secs: None,
        },
    )
    .await
    .unwrap();
    let before = listed_version(&server, "/admin/edge/main").await.unwrap();
    post(&server, "/api/v1/owners/admin/keys/rotate").await;
    let after = listed_version(&server, "/admin/edge/main").await.unwrap();
    assert_eq!(
        version::compare(&after, &before),
        std::cmp::Ordering::Greater,
        "{after} after {before}"
    );
    let files = server
        .state
        .store
        .package_files(remote.owner_id, "admin-keys")
        .await
        .unwrap();
    assert!(
        files.iter().all(|f| f.package.repository_id != remote.id),
        "the keyring was published into the remote repository"
    );
    server.stop().await;
}
