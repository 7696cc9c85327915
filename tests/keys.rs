//! Signing keys over a registry's lifetime: rotation with overlapping signatures,
//! retirement, import of an abuild key, through real HTTP and the real binary; the key
//! set seen by every instance sharing one database.
//!
//! Every served index is checked with the project's own verifier
//! (`apk::index::verified_content`) against each public key the registry serves, as a
//! client holding only that key would check it.
//!
//! The import tests make their keys with `openssl genrsa`: skipped, saying so, where
//! openssl is missing, unless `ALPINE_REGISTRY_TEST_REQUIRE_TOOLS` is set (as CI does):
//! then they fail.

mod common;

use std::path::Path;
use std::process::Command;

use alpine_registry::apk::adb;
use alpine_registry::apk::index::verified_content;
use alpine_registry::apk::sign::split_signed;
use alpine_registry::store::{AuditQuery, Role};
use common::backends::Backends;
use common::process::ChildServer;
use common::*;
use serde_json::{json, Value};

const REPO: &str = "/admin/edge/main";
const INDEX: &str = "/admin/edge/main/x86_64/APKINDEX.tar.gz";

fn admin() -> Option<(&'static str, &'static str)> {
    Some(("admin", ADMIN_TOKEN))
}

/// A key as served: its file name (from Content-Disposition) and PEM.
async fn served_key(server: &TestServer, path: &str) -> (String, String) {
    let response = server.get(path, admin()).await;
    assert_eq!(response.status(), 200, "GET {path}");
    key_of(response).await
}

async fn key_of(response: reqwest::Response) -> (String, String) {
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let name = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{disposition}"))
        .to_string();
    (name, response.text().await.unwrap())
}

/// The `.SIGN.*` entry names of a signed index, in order.
fn signature_names(index: &[u8]) -> Vec<String> {
    split_signed(index)
        .expect("signed index")
        .0
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// What the registry's default algorithms give for these keys, newest first.
fn expected_names(keys: &[&str]) -> Vec<String> {
    keys.iter()
        .flat_map(|key| [format!(".SIGN.RSA256.{key}"), format!(".SIGN.RSA.{key}")])
        .collect()
}

/// GET `url` as the site administrator of token `secret`.
async fn get_bytes_as(client: &reqwest::Client, url: &str, secret: &str) -> Vec<u8> {
    let response = client
        .get(url)
        .basic_auth("admin", Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.bytes().await.unwrap().to_vec()
}

async fn get_bytes(client: &reqwest::Client, url: &str) -> Vec<u8> {
    get_bytes_as(client, url, ADMIN_TOKEN).await
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.post(url);
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}")),
    )
}

async fn owner_keys(server: &TestServer, owner: &str) -> Vec<Value> {
    let response = server
        .get(&format!("/api/v1/owners/{owner}"), admin())
        .await;
    assert_eq!(response.status(), 200);
    let detail: Value = response.json().await.unwrap();
    detail["keys"].as_array().unwrap().clone()
}

#[tokio::test]
async fn rotation_signs_with_new_key_first_and_old_after_until_the_old_is_retired() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    assert_eq!(
        server
            .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let (old, old_pem) = served_key(&server, "/admin/key").await;
    assert_eq!(
        signature_names(&get_bytes(&client, &server.url(INDEX)).await),
        expected_names(&[&old])
    );

    let (status, rotated) = post(
        &client,
        &server.url("/api/v1/owners/admin/keys/rotate"),
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new = rotated["key"]["file_name"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        new.starts_with("admin-") && new.ends_with(".rsa.pub"),
        "{new}"
    );
    assert_eq!(rotated["key"]["state"], "active");
    assert_eq!(rotated["signing"], json!([new, old]));
    assert_eq!(rotated["resigned"], json!(["admin/edge/main"]));

    // Signed again before the answer: the new key first, the old one after it; a client
    // holding either key alone verifies the index with it.
    let index = get_bytes(&client, &server.url(INDEX)).await;
    assert_eq!(signature_names(&index), expected_names(&[&new, &old]));
    let (served_new, new_pem) = served_key(&server, "/admin/key").await;
    assert_eq!(
        served_new, new,
        "/{{owner}}/key serves the newest active key"
    );
    let content = verified_content(&index, &new_pem, &new).expect("new key verifies");
    assert_eq!(
        verified_content(&index, &old_pem, &old).expect("old key verifies"),
        content
    );
    assert_eq!(
        served_key(&server, &format!("/admin/keys/{old}")).await,
        (old.clone(), old_pem.clone())
    );

    // Packages.adb beside it: signed by both keys, the new one first.
    let adb_path = INDEX.replace("APKINDEX.tar.gz", "Packages.adb");
    let adb_signers = |bytes: &[u8]| {
        let file = adb::read_file(bytes, 1 << 24).expect("an ADB file");
        let ids: Vec<_> = file.signatures.iter().map(|s| s.key_id).collect();
        (file, ids)
    };
    let (file, ids) = adb_signers(&get_bytes(&client, &server.url(&adb_path)).await);
    assert_eq!(
        ids,
        [
            adb::key_id(&new_pem).unwrap(),
            adb::key_id(&old_pem).unwrap()
        ]
    );
    file.verify(&new_pem)
        .expect("new key verifies Packages.adb");
    file.verify(&old_pem)
        .expect("old key verifies Packages.adb");

    // A publish during the overlap (an incremental build) is signed by both as well.
    assert_eq!(
        server
            .put_admin(REPO, package("world", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let index = get_bytes(&client, &server.url(INDEX)).await;
    assert_eq!(signature_names(&index), expected_names(&[&new, &old]));
    verified_content(&index, &old_pem, &old).expect("old key verifies");
    assert!(apkindex_text(split_signed(&index).unwrap().1).contains("P:world\n"));

    let keys = owner_keys(&server, "admin").await;
    let listed: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| {
            (
                k["file_name"].as_str().unwrap(),
                k["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(new.as_str(), "active"), (old.as_str(), "active")]);

    // Retired: only the new key signs; the old key is still served, and a client holding
    // only it finds no signature it can check.
    let (status, retired) = post(
        &client,
        &server.url(&format!("/api/v1/owners/admin/keys/{old}/retire")),
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{retired}");
    assert_eq!(retired["key"]["state"], "retired");
    assert_eq!(retired["signing"], json!([new]));
    let index = get_bytes(&client, &server.url(INDEX)).await;
    assert_eq!(signature_names(&index), expected_names(&[&new]));
    verified_content(&index, &new_pem, &new).expect("new key verifies");
    assert!(verified_content(&index, &old_pem, &old).is_err());
    assert_eq!(
        served_key(&server, &format!("/admin/keys/{old}")).await,
        (old.clone(), old_pem.clone())
    );
    assert_eq!(served_key(&server, "/admin/key").await.0, new);
    let (file, ids) = adb_signers(&get_bytes(&client, &server.url(&adb_path)).await);
    assert_eq!(ids, [adb::key_id(&new_pem).unwrap()]);
    file.verify(&new_pem)
        .expect("new key verifies Packages.adb");
    assert!(file.verify(&old_pem).is_err());
    let keys = owner_keys(&server, "admin").await;
    assert_eq!(keys[1]["state"], "retired");
    assert!(keys[1]["retired_at"].as_i64().unwrap() >= keys[1]["created_at"].as_i64().unwrap());
    assert!(keys[0]["retired_at"].is_null());
    assert_eq!(
        keys[1]["download_path"],
        json!(format!("/admin/keys/{old}"))
    );

    // Refusals: the last active key, a key retired before, a name never held.
    let retire = |name: &str| server.url(&format!("/api/v1/owners/admin/keys/{name}/retire"));
    let (status, body) = post(&client, &retire(&new), admin(), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("only active key"),
        "{body}"
    );
    let (status, body) = post(&client, &retire(&old), admin(), None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = post(&client, &retire("nobody-0000.rsa.pub"), admin(), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        server
            .get("/admin/keys/nobody-0000.rsa.pub", admin())
            .await
            .status(),
        404
    );

    // Recorded, without key material.
    let entries = server
        .state
        .store
        .audit_entries(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.action.starts_with("key.") && e.action != "key.create")
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("key.retire", old.as_str()), ("key.rotate", new.as_str())]
    );
    for entry in &entries {
        let detail = entry.detail.to_string();
        assert!(
            !detail.contains("PRIVATE") && !detail.contains("PUBLIC KEY"),
            "{detail}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn owner_admins_may_rotate_their_owner_and_others_may_not() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    alpine_registry::registry::accounts::create_owner(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        false,
        true,
        true,
    )
    .await
    .unwrap();
    let carol = server
        .user_with_token("carol", Role::Admin, None, None)
        .await;
    let dave = server
        .user_with_token("dave", Role::Write, None, None)
        .await;
    for (user, role) in [("carol", Role::Admin), ("dave", Role::Write)] {
        alpine_registry::registry::accounts::add_member(
            &server.state,
            &alpine_registry::registry::audit::Actor::cli(),
            "acme",
            user,
            role,
        )
        .await
        .unwrap();
    }
    let rotate = server.url("/api/v1/owners/acme/keys/rotate");
    let (status, _) = post(&client, &rotate, None, None).await;
    assert_eq!(status, 401);
    let (status, body) = post(&client, &rotate, Some(("dave", dave.as_str())), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(&client, &rotate, Some(("carol", carol.as_str())), None).await;
    assert_eq!(status, 201, "{body}");
    let entry = server
        .state
        .store
        .audit_entries(&AuditQuery {
            action: Some("key.rotate".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entry.len(), 1);
    assert_eq!(
        (entry[0].actor.as_str(), entry[0].owner.as_deref()),
        ("carol", Some("acme"))
    );
    // At most signing.max_active_keys (3) active keys: acme's first, carol's, then one more.
    let (status, body) = post(&client, &rotate, Some(("carol", carol.as_str())), None).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(&client, &rotate, Some(("carol", carol.as_str())), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("signing.max_active_keys"),
        "{body}"
    );
    // Not on another owner.
    let (status, body) = post(
        &client,
        &server.url("/api/v1/owners/admin/keys/rotate"),
        Some(("carol", carol.as_str())),
        None,
    )
    .await;
    assert!(status == 403 || status == 404, "{status} {body}");
    server.stop().await;
}

/// Whether openssl can be run; false (after saying so) where it is missing and not
/// required.
fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("ALPINE_REGISTRY_TEST_REQUIRE_TOOLS").is_none(),
            "openssl missing (ALPINE_REGISTRY_TEST_REQUIRE_TOOLS is set)"
        );
        eprintln!("import test skipped: openssl missing");
    }
    found
}

/// `openssl genrsa BITS` into `dir/name`, and its public key (`openssl pkey -pubout`).
fn openssl_key(dir: &Path, name: &str, bits: u32) -> (std::path::PathBuf, String) {
    let private = dir.join(name);
    run_ok(
        Command::new("openssl")
            .arg("genrsa")
            .arg("-out")
            .arg(&private)
            .arg(bits.to_string()),
    );
    let public = run_ok(
        Command::new("openssl")
            .arg("pkey")
            .arg("-in")
            .arg(&private)
            .arg("-pubout"),
    );
    (private, public)
}

#[tokio::test]
async fn an_imported_abuild_key_signs_under_its_own_name() {
    if !have_openssl() {
        return;
    }
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        server
            .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let (old, old_pem) = served_key(&server, "/admin/key").await;
    let (private, public) = openssl_key(dir.path(), "ops.rsa", 2048);
    let name = "ops@example.org-5f3e2a1b.rsa.pub";
    let import = server.url("/api/v1/owners/admin/keys");
    let body = |pem: &str, name: Option<&str>| Some(json!({ "private_key": pem, "name": name }));
    let pem = std::fs::read_to_string(&private).unwrap();
    let (status, imported) = post(&client, &import, admin(), body(&pem, Some(name))).await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["key"]["file_name"], name);
    assert_eq!(imported["key"]["bits"], 2048);

    // The signatures name the key exactly as the clients have it; openssl's own public
    // key verifies them.
    let index = get_bytes(&client, &server.url(INDEX)).await;
    assert_eq!(signature_names(&index), expected_names(&[name, &old]));
    verified_content(&index, &public, name).expect("the imported key verifies");
    verified_content(&index, &old_pem, &old).expect("the old key verifies");
    let (served, served_pem) = served_key(&server, "/admin/key").await;
    assert_eq!(served, name);
    assert_eq!(
        alpine_registry::apk::sign::public_key_fingerprint(&served_pem).unwrap(),
        alpine_registry::apk::sign::public_key_fingerprint(&public).unwrap()
    );

    // Refused: the same name again, a weak key, garbage, an encrypted key, a bad name.
    let (status, body_) = post(&client, &import, admin(), body(&pem, Some(name))).await;
    assert_eq!(status, 409, "{body_}");
    assert!(body_["message"]
        .as_str()
        .unwrap()
        .contains("exists already"));
    let (weak, _) = openssl_key(dir.path(), "weak.rsa", 1024);
    let weak = std::fs::read_to_string(weak).unwrap();
    let (status, body_) = post(&client, &import, admin(), body(&weak, None)).await;
    assert_eq!(status, 400, "{body_}");
    assert!(
        body_["message"].as_str().unwrap().contains("1024 bits"),
        "{body_}"
    );
    let (status, body_) = post(&client, &import, admin(), body("not a key", None)).await;
    assert_eq!(status, 400, "{body_}");
    assert!(body_["message"]
        .as_str()
        .unwrap()
        .contains("not an RSA private key"));
    let encrypted = run_ok(
        Command::new("openssl")
            .args(["pkey", "-aes256", "-passout", "pass:secret", "-in"])
            .arg(&private),
    );
    let (status, body_) = post(&client, &import, admin(), body(&encrypted, None)).await;
    assert_eq!(status, 400, "{body_}");
    assert!(body_["message"].as_str().unwrap().contains("encrypted"));
    let (other, _) = openssl_key(dir.path(), "other.rsa", 2048);
    let other = std::fs::read_to_string(other).unwrap();
    let (status, body_) = post(&client, &import, admin(), body(&other, Some("../x.pub"))).await;
    assert_eq!(status, 400, "{body_}");
    // Nothing of that was stored.
    assert_eq!(owner_keys(&server, "admin").await.len(), 2);

    // Without a name: the registry's convention, <owner>-<8 hex digits>.rsa.pub.
    let (status, imported) = post(&client, &import, admin(), body(&other, None)).await;
    assert_eq!(status, 201, "{imported}");
    let default = imported["key"]["file_name"].as_str().unwrap();
    assert!(default.starts_with("admin-") && default.len() == "admin-".len() + 8 + 8);
    let entries = server
        .state
        .store
        .audit_entries(&AuditQuery {
            action: Some("key.import".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert!(!entries
        .iter()
        .any(|e| e.detail.to_string().contains("PRIVATE")));
    server.stop().await;
}

/// The binary run against a child server's database (and data directory).
fn cli_of(server: &ChildServer) -> Command {
    let mut command = cli(&server.dir.path().join("data"));
    server.backends.apply(&mut command);
    command
}

#[test]
fn key_commands_rotate_import_retire_and_list_on_the_binary() {
    let token = "apkreg_keys-cli-token-0123456789abcdef";
    let server = ChildServer::start_on_backends(token, &[]);
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| {
        let response = client
            .get(server.url(path))
            .basic_auth("admin", Some(token))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response
    };
    let put = client
        .put(server.url(REPO))
        .basic_auth("admin", Some(token))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    // The server sees a commit of another process on SQLite within its read cache's
    // watch interval: the index is polled (bounded) until it has the signatures wanted.
    let index_signed_by = |keys: &[&str]| {
        let wanted = expected_names(keys);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let index = get(INDEX).bytes().unwrap().to_vec();
            if signature_names(&index) == wanted || std::time::Instant::now() > deadline {
                assert_eq!(signature_names(&index), wanted);
                return index;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let old = get("/admin/key");
    let old_name = old.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let old_pem = old.text().unwrap();
    let old_name = old_name
        .trim_start_matches("attachment; filename=\"")
        .trim_end_matches('"')
        .to_string();

    // Rotated by another process: the running server signs with both before the command
    // returns, the new key first.
    let (stdout, stderr) = run_ok_both(cli_of(&server).args(["key", "rotate", "admin"]));
    let new_name = stdout.trim().to_string();
    assert!(
        new_name.starts_with("admin-") && new_name != old_name,
        "{stdout}"
    );
    assert!(stderr.contains("1 repository signed again"), "{stderr}");
    let index = index_signed_by(&[&new_name, &old_name]);
    verified_content(&index, &old_pem, &old_name).expect("old key verifies");
    let new_pem = get(&format!("/admin/keys/{new_name}")).text().unwrap();
    verified_content(&index, &new_pem, &new_name).expect("new key verifies");

    let list = run_ok(cli_of(&server).args(["key", "list", "admin"]));
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..2], ["KEY", "STATE"], "{list}");
    assert_eq!(rows[1][..2], [new_name.as_str(), "active"], "{list}");
    assert_eq!(rows[2][..2], [old_name.as_str(), "active"], "{list}");

    // Retired by the command line: the server signs with the new key alone.
    let stdout = run_ok(cli_of(&server).args(["key", "retire", "admin", &old_name]));
    assert_eq!(stdout.trim(), old_name);
    let index = index_signed_by(&[&new_name]);
    assert!(verified_content(&index, &old_pem, &old_name).is_err());
    let list = run_ok(cli_of(&server).args(["key", "list", "admin"]));
    assert!(list.lines().nth(2).unwrap().contains("retired"), "{list}");
    let message = run_err(cli_of(&server).args(["key", "retire", "admin", &new_name]));
    assert!(message.contains("only active key"), "{message}");
    let message = run_err(cli_of(&server).args(["key", "retire", "admin", "x-1.rsa.pub"]));
    assert!(message.contains("no key named x-1.rsa.pub"), "{message}");

    if have_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = openssl_key(dir.path(), "abuild.rsa", 2048);
        let name = "ci@example.org-6543210f.rsa.pub";
        let stdout = run_ok(
            cli_of(&server)
                .args(["key", "import", "admin", "--name", name, "--private-key"])
                .arg(&private),
        );
        assert_eq!(stdout.trim(), name);
        let index = index_signed_by(&[name, &new_name]);
        verified_content(&index, &public, name).expect("imported key verifies");

        let message = run_err(
            cli_of(&server)
                .args(["key", "import", "admin", "--name", name, "--private-key"])
                .arg(&private),
        );
        assert!(message.contains("exists already"), "{message}");
        let (weak, _) = openssl_key(dir.path(), "weak.rsa", 1024);
        let message = run_err(
            cli_of(&server)
                .args(["key", "import", "admin", "--private-key"])
                .arg(&weak),
        );
        assert!(message.contains("too weak"), "{message}");
        let garbage = dir.path().join("garbage.rsa");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let message = run_err(
            cli_of(&server)
                .args(["key", "import", "admin", "--private-key"])
                .arg(&garbage),
        );
        assert!(message.contains("not an RSA private key"), "{message}");
        let list = run_ok(cli_of(&server).args(["key", "list", "admin"]));
        assert_eq!(list.lines().count(), 4, "header and three keys: {list}");
    }
}

/// Several instances on one PostgreSQL database: a rotation through one, and a
/// retirement on the command line, are signed with by the other at its next build,
/// although it had the owner's keys cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_signs_with_the_key_set_another_changed() {
    let backends = Backends::from_env();
    if backends.database.is_none() {
        common::postgres::note_skipped();
        return;
    }
    let token = "apkreg_keys-multi-token-0123456789abcdef";
    let env: Vec<(String, String)> = backends.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = ChildServer::start(token, &env);
    let b = ChildServer::start(token, &env);
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(token));
    let publish = |server: &ChildServer, name: &str| {
        auth(client.put(server.url(REPO)))
            .body(package(name, "1.0-r0", "x86_64"))
            .send()
    };
    assert_eq!(publish(&a, "one").await.unwrap().status(), 201);
    // B reads and caches the owner's key, and builds with it.
    let old = auth(client.get(b.url("/admin/key"))).send().await.unwrap();
    assert_eq!(old.status(), 200);
    let (old_name, old_pem) = {
        let disposition = old.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        let name = disposition
            .trim_start_matches("attachment; filename=\"")
            .trim_end_matches('"')
            .to_string();
        (name, old.text().await.unwrap())
    };
    assert_eq!(publish(&b, "two").await.unwrap().status(), 201);

    // Rotated through A.
    let (status, rotated) = post(
        &client,
        &a.url("/api/v1/owners/admin/keys/rotate"),
        Some(("admin", token)),
        None,
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let new_name = rotated["key"]["file_name"].as_str().unwrap().to_string();

    // B's next build (an incremental one) signs with the new key set.
    assert_eq!(publish(&b, "three").await.unwrap().status(), 201);
    for server in [&a, &b] {
        let index = get_bytes_as(&client, &server.url(INDEX), token).await;
        assert_eq!(
            signature_names(&index),
            expected_names(&[&new_name, &old_name]),
            "instance on port {}",
            server.port
        );
        verified_content(&index, &old_pem, &old_name).expect("old key verifies");
        assert!(apkindex_text(split_signed(&index).unwrap().1).contains("P:three\n"));
    }
    let served = auth(client.get(b.url("/admin/key"))).send().await.unwrap();
    let (served_name, new_pem) = {
        let disposition = served.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        (disposition, served.text().await.unwrap())
    };
    assert!(
        served_name.contains(&new_name),
        "B serves the new key: {served_name}"
    );

    // Retired on the command line: B's next build signs with the new key alone.
    let mut command = cli(&a.dir.path().join("data"));
    backends.apply(&mut command);
    run_ok(command.args(["key", "retire", "admin", &old_name]));
    assert_eq!(publish(&b, "four").await.unwrap().status(), 201);
    let index = get_bytes_as(&client, &b.url(INDEX), token).await;
    assert_eq!(signature_names(&index), expected_names(&[&new_name]));
    verified_content(&index, &new_pem, &new_name).expect("new key verifies");
    assert!(verified_content(&index, &old_pem, &old_name).is_err());
    drop((a, b));
    if let Some(database) = backends.database {
        database.drop_database().await;
    }
}

/// Serves `content` as the repository's index of `arch`, as if a build had published it.
async fn serve_as_index(server: &TestServer, owner: &str, arch: &str, content: Vec<u8>) {
    use sha2::Digest;
    let store = &server.state.store;
    let owner = store.owner_by_name(owner).await.unwrap().unwrap();
    let repo = store
        .repository(&alpine_registry::store::RepoRef {
            owner_id: owner.id,
            branch: "edge".into(),
            repository: "main".into(),
        })
        .await
        .unwrap()
        .unwrap();
    let signatures = signature_names(&content);
    store
        .publish_indexes(
            repo.id,
            repo.built_gen,
            vec![alpine_registry::store::RenderedIndex {
                arch: arch.into(),
                sha256: hex::encode(sha2::Sha256::digest(&content)),
                entries: 1,
                signatures,
                content,
                adb: None,
            }],
            Vec::new(),
            unix_now_ms(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn fsck_finds_an_index_not_signed_by_every_active_key_in_order_and_repairs_it() {
    use alpine_registry::apk::index::sign_index_by;
    use alpine_registry::apk::sign::SignatureAlgorithm::{Rsa, Rsa256};
    use alpine_registry::registry::fsck::fsck;
    let server = TestServer::start().await;
    let state = &server.state;
    assert_eq!(
        server
            .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let owner = state.store.owner_by_name("admin").await.unwrap().unwrap();
    let cli = alpine_registry::registry::audit::Actor::cli();
    alpine_registry::registry::keys::rotate(state, &cli, &owner)
        .await
        .unwrap();
    assert_eq!(
        fsck(state, false).await.unwrap().problems,
        Vec::<String>::new()
    );
    let served = get_bytes(&reqwest::Client::new(), &server.url(INDEX)).await;
    let unsigned = split_signed(&served).unwrap().1.to_vec();
    let set = state.keys.key_set(&owner).await.unwrap();
    let (new, old) = (set.keys()[0], set.keys()[1]);

    // Both keys, the old one first: every signature verifies, the order is wrong.
    let swapped = sign_index_by(&unsigned, &[old, new], &[Rsa256, Rsa]).unwrap();
    serve_as_index(&server, "admin", "x86_64", swapped).await;
    let problems = fsck(state, false).await.unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("not by the owner's active keys"),
        "{problems:?}"
    );

    // The old key alone: the new one does not sign it.
    let old_only = sign_index_by(&unsigned, &[old], &[Rsa256, Rsa]).unwrap();
    serve_as_index(&server, "admin", "x86_64", old_only).await;
    let problems = fsck(state, false).await.unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains(&format!("no signature by {}", new.key_name())),
        "{problems:?}"
    );

    let repaired = fsck(state, true).await.unwrap();
    assert_eq!(repaired.repaired, ["admin/edge/main: indexes rebuilt"]);
    assert_eq!(
        fsck(state, false).await.unwrap().problems,
        Vec::<String>::new()
    );
    let index = get_bytes(&reqwest::Client::new(), &server.url(INDEX)).await;
    assert_eq!(
        signature_names(&index),
        expected_names(&[new.key_name(), old.key_name()])
    );
    server.stop().await;
}
