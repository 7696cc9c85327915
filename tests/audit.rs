//! The audit log (`/api/v1/admin/audit`, `/api/v1/owners/{owner}/audit`, the Activity
//! page, `audit list` on the real binary): each change records exactly one entry naming
//! its actor, the client address a trusted proxy reports, the action, the target and the
//! outcome; refused changes record nothing; a retention deletion names its rule; no secret
//! enters the log; pages follow one another; who may read it; pruning by the clock.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alpine_registry::clock::ManualClock;
use alpine_registry::store::{AuditEntry, AuditQuery, Role};
use common::*;
use serde_json::{json, Value};

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));
/// The client the trusted proxy (the test client on 127.0.0.1) reports.
const CLIENT: &str = "203.0.113.7";

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    auth: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .header("x-forwarded-for", CLIENT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn proxied_server() -> TestServer {
    TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await
}

/// Every entry in the table, oldest first, but those of keys the server makes in the
/// background (they come when they come).
async fn entries(server: &TestServer) -> Vec<AuditEntry> {
    let mut all = server
        .state
        .store
        .audit_entries(&AuditQuery {
            limit: 100_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    all.retain(|e| e.action != "key.create");
    all.reverse();
    all
}

/// Runs `change`, then checks that it recorded exactly one entry, and returns it.
async fn one_entry(server: &TestServer, before: &mut usize) -> AuditEntry {
    let all = entries(server).await;
    assert_eq!(
        all.len(),
        *before + 1,
        "expected one new entry, found {:#?}",
        &all[*before..]
    );
    *before = all.len();
    all.last().unwrap().clone()
}

fn assert_entry(entry: &AuditEntry, action: &str, owner: Option<&str>, target: &str) {
    assert_eq!(entry.action, action, "{entry:?}");
    assert_eq!(entry.owner.as_deref(), owner, "{entry:?}");
    assert_eq!(entry.target, target, "{entry:?}");
    assert_eq!(entry.outcome, "ok", "{entry:?}");
}

/// Checks that the entry names the bootstrap admin, its token and the forwarded client.
fn by_admin(entry: &AuditEntry) {
    assert_eq!(entry.actor_kind, "user", "{entry:?}");
    assert_eq!(entry.actor, "admin", "{entry:?}");
    assert!(entry.token_id.is_some(), "{entry:?}");
    assert_eq!(entry.token_label.as_deref(), Some("bootstrap"), "{entry:?}");
    assert_eq!(entry.client.as_deref(), Some(CLIENT), "{entry:?}");
}

#[tokio::test]
async fn each_change_records_one_entry_with_its_actor_address_action_and_target() {
    use reqwest::Method;
    let server = proxied_server().await;
    let mut seen = entries(&server).await.len();

    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        Some(json!({"name": "dora", "password": "dora-secret-pass"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(&e, "user.create", None, "dora");
    assert_eq!(e.detail["password"], true);

    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/admin/owners",
        Some(json!({"name": "acme", "org": true})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(&e, "owner.create", Some("acme"), "acme");

    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/owners/acme/members/dora",
        Some(json!({"role": "write"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(&e, "member.set", Some("acme"), "acme/dora");
    assert_eq!(e.detail["role"], "write");

    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        Some(json!({"user": "dora", "scope": "write", "owner": "acme", "label": "ci"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token_id = body["id"].as_i64().unwrap();
    let dora_secret = body["secret"].as_str().unwrap().to_string();
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(
        &e,
        "token.create",
        Some("acme"),
        &format!("dora/tokens/{token_id}"),
    );
    assert_eq!(e.detail["label"], "ci");
    assert_eq!(e.detail["scope"], "write");

    // dora publishes with her token: the entry names her and that token.
    let dora = Some(("dora", dora_secret.as_str()));
    let response = server
        .client
        .put(server.url("/acme/edge/main"))
        .header("x-forwarded-for", CLIENT)
        .basic_auth("dora", Some(&dora_secret))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let e = one_entry(&server, &mut seen).await;
    assert_eq!(e.actor_kind, "user");
    assert_eq!(e.actor, "dora");
    assert_eq!(e.token_id, Some(token_id));
    assert_eq!(e.token_label.as_deref(), Some("ci"));
    assert_eq!(e.client.as_deref(), Some(CLIENT));
    assert_entry(
        &e,
        "package.publish",
        Some("acme"),
        "acme/edge/main/x86_64/hello-1.0-r0.apk",
    );

    let pin = "/api/v1/owners/acme/pins/edge/main/x86_64/hello-1.0-r0.apk";
    let (status, _) = send(&server, Method::PUT, pin, None, dora).await;
    assert_eq!(status, 200);
    let e = one_entry(&server, &mut seen).await;
    assert_eq!(e.actor, "dora");
    assert_entry(
        &e,
        "package.pin",
        Some("acme"),
        "acme/edge/main/x86_64/hello-1.0-r0.apk",
    );
    let (status, _) = send(&server, Method::DELETE, pin, None, dora).await;
    assert_eq!(status, 200);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(
        &e,
        "package.unpin",
        Some("acme"),
        "acme/edge/main/x86_64/hello-1.0-r0.apk",
    );

    // A copy records the copy; a move also records the delete of its source.
    let copy = |to: &str, remove: bool| {
        json!({"branch": "edge", "repository": "main", "arch": "x86_64",
               "version": "1.0-r0", "to": {"branch": "edge", "repository": to},
               "move": remove})
    };
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/owners/acme/packages/hello/copy",
        Some(copy("testing", false)),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(
        &e,
        "package.copy",
        Some("acme"),
        "acme/edge/testing/x86_64/hello-1.0-r0.apk",
    );
    assert_eq!(e.detail["source"], "acme/edge/main/x86_64/hello-1.0-r0.apk");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/owners/acme/packages/hello/copy",
        Some(copy("community", true)),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let all = entries(&server).await;
    assert_eq!(all.len(), seen + 2, "{:#?}", &all[seen..]);
    assert_entry(
        &all[seen],
        "package.copy",
        Some("acme"),
        "acme/edge/community/x86_64/hello-1.0-r0.apk",
    );
    assert_eq!(all[seen].detail["move"], true);
    assert_entry(
        &all[seen + 1],
        "package.delete",
        Some("acme"),
        "acme/edge/main/x86_64/hello-1.0-r0.apk",
    );
    assert_eq!(all[seen + 1].detail["reason"], "move");
    by_admin(&all[seen + 1]);
    seen += 2;

    let response = server
        .client
        .delete(server.url("/acme/edge/testing/x86_64/hello-1.0-r0.apk"))
        .header("x-forwarded-for", CLIENT)
        .basic_auth("dora", Some(&dora_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let e = one_entry(&server, &mut seen).await;
    assert_eq!(e.actor, "dora");
    assert_entry(
        &e,
        "package.delete",
        Some("acme"),
        "acme/edge/testing/x86_64/hello-1.0-r0.apk",
    );
    assert_eq!(e.detail["reason"], "request");

    let (status, body) = send(
        &server,
        Method::PUT,
        "/api/v1/owners/acme/retention",
        Some(json!({"branch": "edge", "keep_versions": 3})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(&e, "retention.set", Some("acme"), "acme/edge");
    assert_eq!(e.detail["keep_versions"], 3);
    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/owners/acme/retention?branch=edge",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "retention.remove", Some("acme"), "acme/edge");

    let (status, body) = send(
        &server,
        Method::PUT,
        "/api/v1/owners/acme/repositories/edge/community/settings",
        Some(json!({"dependency_check": "refuse"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let e = one_entry(&server, &mut seen).await;
    assert_entry(
        &e,
        "repository.settings",
        Some("acme"),
        "acme/edge/community",
    );
    assert_eq!(e.detail["dependency_check"], "refuse");

    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/owners/acme/visibility",
        Some(json!({"visibility": "private"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "owner.visibility", Some("acme"), "acme");
    assert_eq!(e.detail["private"], true);

    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/users/dora/password",
        Some(json!({"password": "dora-other-pass"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "user.password", None, "dora");

    let (status, _) = send(
        &server,
        Method::DELETE,
        &format!("/api/v1/admin/tokens/{token_id}"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "token.revoke", None, &format!("dora/tokens/{token_id}"));

    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/owners/acme/members/dora",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "member.remove", Some("acme"), "acme/dora");

    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/owners/acme?force=true",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    let e = one_entry(&server, &mut seen).await;
    by_admin(&e);
    assert_entry(&e, "owner.delete", Some("acme"), "acme");

    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/users/dora",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "user.delete", None, "dora");

    // The keys the server made in the background: one entry each, by the server.
    let keys: Vec<AuditEntry> = server
        .state
        .store
        .audit_entries(&AuditQuery {
            action: Some("key.create".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    for key in &keys {
        assert_eq!(
            (key.actor_kind.as_str(), key.actor.as_str()),
            ("system", "server")
        );
    }
    let mut owners: Vec<_> = keys.iter().filter_map(|k| k.owner.clone()).collect();
    owners.sort();
    let before = owners.len();
    owners.dedup();
    assert_eq!(owners.len(), before, "one key.create per owner: {keys:?}");
    server.stop().await;
}

#[tokio::test]
async fn repositories_created_and_removed_on_the_command_line_are_recorded() {
    let server = TestServer::start().await;
    let actor = alpine_registry::registry::audit::Actor::cli();
    let at = alpine_registry::names::RepoAddress::parse("admin", "edge", "extra").unwrap();
    let mut seen = entries(&server).await.len();
    alpine_registry::registry::repositories::create(&server.state, &actor, &at)
        .await
        .unwrap();
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "repository.create", Some("admin"), "admin/edge/extra");
    assert_eq!(e.actor_kind, "cli");
    assert_eq!(e.client, None);
    alpine_registry::registry::repositories::remove(&server.state, &actor, &at)
        .await
        .unwrap();
    let e = one_entry(&server, &mut seen).await;
    assert_entry(&e, "repository.remove", Some("admin"), "admin/edge/extra");
    server.stop().await;
}

/// Refusals (403, 404, 409, 422 ...) change nothing, and no entry claims they did.
#[tokio::test]
async fn refused_changes_record_nothing() {
    use reqwest::Method;
    let server = proxied_server().await;
    let reader = server.user_with_token("rita", Role::Read, None, None).await;
    server
        .put_admin("/admin/edge/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    let seen = entries(&server).await.len();

    // 403: a reader of nothing uploads, deletes, pins, sets a rule, reads the admin log.
    let response = server
        .client
        .put(server.url("/admin/edge/main"))
        .basic_auth("rita", Some(&reader))
        .body(package("hello", "2.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 403 | 404));
    let rita = Some(("rita", reader.as_str()));
    for (method, path, body) in [
        (
            Method::DELETE,
            "/admin/edge/main/x86_64/hello-1.0-r0.apk",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/owners/admin/retention",
            Some(json!({"keep_versions": 1})),
        ),
        (
            Method::POST,
            "/api/v1/admin/users",
            Some(json!({"name": "mallory"})),
        ),
    ] {
        let (status, _) = send(&server, method, path, body, rita).await;
        assert!(matches!(status, 403 | 404), "{path}: {status}");
    }
    // 409: an existing user, a file that exists with other content.
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        Some(json!({"name": "rita"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 409);
    let response = server
        .put_admin("/admin/edge/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    // An identical re-upload changes nothing either (200 or 409 by configuration).
    assert!(matches!(response.status().as_u16(), 200 | 409));
    // 404: a token that does not exist, a member that is none, a rule that is none.
    for (method, path) in [
        (Method::DELETE, "/api/v1/admin/tokens/999999"),
        (Method::DELETE, "/api/v1/admin/owners/admin/members/rita"),
        (Method::DELETE, "/api/v1/owners/admin/retention"),
        (Method::DELETE, "/admin/edge/main/x86_64/nothing-1.0-r0.apk"),
    ] {
        let (status, _) = send(&server, method, path, None, ADMIN).await;
        assert_eq!(status, 404, "{path}");
    }
    let after = entries(&server).await;
    assert_eq!(after.len(), seen, "{:#?}", &after[seen..]);
    server.stop().await;
}

#[tokio::test]
async fn a_retention_deletion_names_the_rule() {
    let server = proxied_server().await;
    for version in ["1-r0", "2-r0", "3-r0"] {
        let response = server
            .put_admin("/admin/edge/main", package("hello", version, "x86_64"))
            .await;
        assert_eq!(response.status(), 201);
    }
    let (status, body) = send(
        &server,
        reqwest::Method::PUT,
        "/api/v1/owners/admin/retention",
        Some(json!({"branch": "edge", "repository": "main", "keep_versions": 1})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = entries(&server).await.len();
    let (status, body) = send(
        &server,
        reqwest::Method::POST,
        "/api/v1/owners/admin/retention/apply",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The rule may also have run after the publishes: the deletions are counted in all.
    let deletes: Vec<AuditEntry> = entries(&server)
        .await
        .into_iter()
        .filter(|e| e.action == "package.delete")
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:#?}");
    for e in &deletes {
        assert_eq!(e.actor_kind, "retention", "{e:?}");
        assert_eq!(e.actor, "admin/edge/main", "{e:?}");
        assert_eq!(e.detail["reason"], "retention");
        assert_eq!(e.client, None);
        assert_eq!(e.token_id, None);
    }
    let mut targets: Vec<&str> = deletes.iter().map(|e| e.target.as_str()).collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "admin/edge/main/x86_64/hello-1-r0.apk",
            "admin/edge/main/x86_64/hello-2-r0.apk"
        ]
    );
    assert!(entries(&server).await.len() >= seen);
    server.stop().await;
}

/// Tokens, passwords, their hashes and key material never enter the log: every column
/// of every row is searched for them.
#[tokio::test]
async fn no_secret_enters_the_log() {
    use reqwest::Method;
    let server = proxied_server().await;
    let password = "sesame-open-please-42";
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        Some(json!({"name": "sam", "password": password})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201);
    let second = "another-sesame-43";
    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/users/sam/password",
        Some(json!({"password": second})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        Some(json!({"user": "sam", "scope": "write", "label": "deploy"})),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201);
    let secret = body["secret"].as_str().unwrap().to_string();
    let response = server
        .client
        .put(server.url("/sam/edge/main"))
        .basic_auth("sam", Some(&secret))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The key made for sam's namespace is in the log by now (the publish waited for it).
    let sam = server
        .state
        .store
        .owner_by_name("sam")
        .await
        .unwrap()
        .unwrap();
    let key = server
        .state
        .store
        .signing_key(sam.id)
        .await
        .unwrap()
        .unwrap();
    let hash = server
        .state
        .store
        .user_by_name("sam")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    let all = server
        .state
        .store
        .audit_entries(&AuditQuery {
            limit: 100_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(all.iter().any(|e| e.action == "token.create"));
    assert!(all.iter().any(|e| e.action == "user.password"));
    assert!(all
        .iter()
        .any(|e| e.action == "key.create" && e.owner.as_deref() == Some("sam")));
    let text = serde_json::to_string(&all).unwrap()
        + &all.iter().map(|e| format!("{e:?}")).collect::<String>();
    let pem_body = |pem: &str| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    for (what, needle) in [
        ("the token", secret.clone()),
        (
            "the token's hash",
            alpine_registry::access::hash_token(&secret),
        ),
        ("the bootstrap token", ADMIN_TOKEN.to_string()),
        ("the first password", password.to_string()),
        ("the second password", second.to_string()),
        ("the password hash", hash.clone()),
        ("the sealed private key", key.private_pem.clone()),
    ] {
        assert!(!text.contains(&needle), "{what} is in the audit log");
    }
    // Not even a line of the sealed key or of the public key's body.
    for line in key.private_pem.lines().chain(key.public_pem.lines()) {
        if line.len() > 20 && !line.starts_with("-----") {
            assert!(!text.contains(line), "key material in the audit log");
        }
    }
    assert!(!text.contains(&pem_body(&key.public_pem)));
    server.stop().await;
}

/// Pages go newest first, each continuing where the last stopped, through the `Link`
/// header; filters apply to every page.
#[tokio::test]
async fn pages_follow_one_another_newest_first() {
    let server = TestServer::start().await;
    for n in 0..7 {
        let response = server
            .put_admin(
                "/admin/edge/main",
                package(&format!("pkg{n}"), "1.0-r0", "x86_64"),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let mut url = server.url("/api/v1/admin/audit?action=package.publish&limit=3");
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    let mut pages = 0;
    loop {
        let response = server
            .client
            .get(&url)
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = response.json().await.unwrap();
        pages += 1;
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["action"], "package.publish");
            ids.push(e["id"].as_i64().unwrap());
            targets.push(e["target"].as_str().unwrap().to_string());
        }
        match link {
            Some(link) => {
                assert!(page["next"].is_string());
                url = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string();
            }
            None => {
                assert!(page.get("next").is_none());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let expected: Vec<String> = (0..7)
        .rev()
        .map(|n| format!("admin/edge/main/x86_64/pkg{n}-1.0-r0.apk"))
        .collect();
    assert_eq!(targets, expected);
    // Bad input is a 400 that says what to send.
    for query in [
        "limit=0",
        "limit=1001",
        "after=junk",
        "since=yesterday",
        "color=red",
    ] {
        let (status, body) = send(
            &server,
            reqwest::Method::GET,
            &format!("/api/v1/admin/audit?{query}"),
            None,
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
    server.stop().await;
}

/// Site administrators read every entry; an owner's admin reads that owner's entries
/// only; a reader of the owner is refused (403), a stranger to a private owner finds
/// nothing (404), nobody without credentials reads anything (401).
#[tokio::test]
async fn owner_admins_read_their_owner_only() {
    use reqwest::Method;
    let server = TestServer::start().await;
    let olga = server
        .user_with_token("olga", Role::Admin, None, None)
        .await;
    let _ = server.user_with_token("vic", Role::Admin, None, None).await;
    alpine_registry::registry::accounts::set_visibility(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "vic",
        true,
    )
    .await
    .unwrap();
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "admin",
        "olga",
        Role::Read,
    )
    .await
    .unwrap();
    let response = server
        .put(
            "/olga/edge/main",
            package("mine", "1.0-r0", "x86_64"),
            Some(("olga", &olga)),
        )
        .await;
    assert_eq!(response.status(), 201);
    server
        .put_admin("/admin/edge/main", package("theirs", "1.0-r0", "x86_64"))
        .await;
    let as_olga = Some(("olga", olga.as_str()));

    let (status, body) = send(
        &server,
        Method::GET,
        "/api/v1/owners/olga/audit",
        None,
        as_olga,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list = body["entries"].as_array().unwrap();
    assert!(list
        .iter()
        .any(|e| e["target"] == "olga/edge/main/x86_64/mine-1.0-r0.apk"));
    assert!(list.iter().all(|e| e["owner"] == "olga"), "{body}");

    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/owners/admin/audit",
        None,
        as_olga,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/owners/vic/audit",
        None,
        as_olga,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(&server, Method::GET, "/api/v1/admin/audit", None, as_olga).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/owners/olga/audit",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(&server, Method::GET, "/api/v1/admin/audit", None, None).await;
    assert_eq!(status, 401);

    let (status, body) = send(
        &server,
        Method::GET,
        "/api/v1/admin/audit?owner=admin",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200);
    let list = body["entries"].as_array().unwrap();
    assert!(list
        .iter()
        .any(|e| e["target"] == "admin/edge/main/x86_64/theirs-1.0-r0.apk"));
    assert!(list.iter().all(|e| e["owner"] == "admin"), "{body}");
    let (status, _) = send(
        &server,
        Method::GET,
        "/api/v1/admin/audit?owner=nobody",
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 404);

    // Both routes are in the OpenAPI document with every answer above.
    let (status, document) = send(&server, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for path in ["/api/v1/admin/audit", "/api/v1/owners/{owner}/audit"] {
        let operation = &document["paths"][path]["get"];
        for status in ["200", "400", "401", "403", "404"] {
            assert!(
                operation["responses"].get(status).is_some(),
                "{path} {status}: {operation}"
            );
        }
    }
    server.stop().await;
}

/// Entries older than audit.retention_days go, by the registry's clock, in the
/// background; newer ones stay.
#[tokio::test]
async fn old_entries_are_pruned_in_the_background() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let server = TestServer::start_with_clock(
        |c| {
            c.audit.retention_days = 30;
            c.audit.prune_interval_secs = 1;
        },
        clock.clone(),
    )
    .await;
    let response = server
        .put_admin("/admin/edge/main", package("old", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    clock.advance(Duration::from_secs(29 * 86400));
    let response = server
        .put_admin("/admin/edge/main", package("new", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let publishes = |all: &[AuditEntry]| -> Vec<String> {
        all.iter()
            .filter(|e| e.action == "package.publish")
            .map(|e| e.target.clone())
            .collect()
    };
    assert_eq!(publishes(&entries(&server).await).len(), 2);
    clock.advance(Duration::from_secs(2 * 86400));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = publishes(&entries(&server).await);
        if left == ["admin/edge/main/x86_64/new-1.0-r0.apk"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not pruned: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// `audit list` on the real binary: a change made by a command names `cli` and the OS
/// user; the filters apply.
#[test]
fn audit_list_on_the_binary_shows_commands_and_filters() {
    let backends = common::backends::Backends::from_env();
    let dir = tempfile::tempdir().unwrap();
    let command = || {
        let mut command = cli(dir.path());
        backends.apply(&mut command);
        command.env("USER", "operator7");
        command
    };
    run_ok(command().arg("migrate"));
    run_ok(command().args(["user", "create", "bea"]));
    run_ok(command().args(["owner", "create", "bea-org", "--org"]));
    let out = run_ok(command().args(["audit", "list", "--action", "user.create"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(lines[1].contains("cli:operator7"), "{out}");
    assert!(lines[1].contains("user.create"), "{out}");
    assert!(lines[1].contains("bea"), "{out}");
    let out = run_ok(command().args(["audit", "list", "--owner", "bea-org", "--since", "1d"]));
    assert!(out.contains("owner.create"), "{out}");
    assert!(!out.contains("user.create"), "{out}");
    let out = run_ok(command().args(["audit", "list", "--actor", "nobody-else"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    let (out, err) = run_ok_both(command().args(["audit", "list", "--limit", "1"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("--after"), "{err}");
    let err = run_err(command().args(["audit", "list", "--since", "soon"]));
    assert!(err.contains("since"), "{err}");
}

/// The Activity page: an owner's admin sees its changes (under the pages' CSP, no script);
/// a reader is refused, a visitor without credentials is sent to log in.
#[tokio::test]
async fn the_activity_page_shows_an_owners_changes_to_its_admins() {
    let server = TestServer::start().await;
    let reader = server.user_with_token("rhea", Role::Read, None, None).await;
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "admin",
        "rhea",
        Role::Read,
    )
    .await
    .unwrap();
    let response = server
        .put_admin("/admin/edge/main", package("shown", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let response = server.get("/admin/-/activity", ADMIN).await;
    assert_eq!(response.status(), 200);
    let csp = response
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'none'") || csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("Activity of admin"), "{html}");
    assert!(
        html.contains("admin/edge/main/x86_64/shown-1.0-r0.apk"),
        "{html}"
    );
    assert!(html.contains("package.publish"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    // The owner page links to it for its admins only.
    let owner_page = server.get("/admin", ADMIN).await.text().await.unwrap();
    assert!(owner_page.contains("/admin/-/activity"));
    let owner_page = server
        .get("/admin", Some(("rhea", reader.as_str())))
        .await
        .text()
        .await
        .unwrap();
    assert!(!owner_page.contains("/admin/-/activity"));

    let response = server
        .get("/admin/-/activity", Some(("rhea", &reader)))
        .await;
    assert_eq!(response.status(), 403);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(server.url("/admin/-/activity"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());
    assert!(response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("/-/login"));
    server.stop().await;
}

/// A publish the dependency check accepts with warnings (repositories.dependency_check
/// warn, the default) is recorded with the outcome `warned`.
#[tokio::test]
async fn a_publish_with_dependency_warnings_is_recorded_as_warned() {
    let server = TestServer::start().await;
    let bytes = alpine_registry::apk::builder::PackageBuilder::new("needy", "1.0-r0", "x86_64")
        .field("depend", "nowhere-to-be-found")
        .file("usr/bin/needy", b"needy")
        .build();
    let response = server.put_admin("/admin/edge/main", bytes).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-alpine-registry-warning"));
    let e = entries(&server).await.pop().unwrap();
    assert_eq!(e.action, "package.publish");
    assert_eq!(e.target, "admin/edge/main/x86_64/needy-1.0-r0.apk");
    assert_eq!(e.outcome, "warned");
    server.stop().await;
}
