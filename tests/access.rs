//! Who may read and write: credentials, scopes, private owners, expiry and revocation.

mod common;

use alpine_registry::store::Role;
use common::*;

/// Sets up a public org `pub` and a private org `priv`, each with one package, and a
/// user `member` with write rights on both.
async fn setup(server: &TestServer) {
    for (name, private) in [("pub", false), ("priv", true)] {
        server
            .state
            .store
            .create_owner(name, private, true, None)
            .await
            .unwrap();
        let response = server
            .put_admin(
                &format!("/{name}/v1/main"),
                package("p", "1.0-r0", "x86_64"),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_with_a_challenge() {
    let server = TestServer::start().await;
    setup(&server).await;
    let put = server
        .put("/pub/v1/main", package("q", "1.0-r0", "x86_64"), None)
        .await;
    assert_eq!(put.status(), 401);
    assert!(put.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let delete = server
        .delete("/pub/v1/main/x86_64/p-1.0-r0.apk", None)
        .await;
    assert_eq!(delete.status(), 401);
    for auth in [
        ("admin", "apkreg_wrong-token-xxxxxxxxxxxxxxxxxxxx"),
        ("admin", "wrong password"),
        ("ghost", "x"),
    ] {
        let response = server
            .get("/pub/v1/main/x86_64/APKINDEX.tar.gz", Some(auth))
            .await;
        assert_eq!(response.status(), 401, "{auth:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    let garbage = server
        .client
        .get(server.url("/pub/key"))
        .header("Authorization", "Basic !!!notbase64")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    server.stop().await;
}

/// A token goes in Basic (any user name), as `Bearer`, or as Gitea's `token` scheme, which
/// its clients send; another scheme is refused as missing credentials.
#[tokio::test]
async fn tokens_are_taken_in_every_scheme_gitea_clients_use() {
    let server = TestServer::start().await;
    setup(&server).await;
    for (i, scheme) in ["Bearer", "bearer", "token", "Token"]
        .into_iter()
        .enumerate()
    {
        let response = server
            .client
            .put(server.url("/pub/v1/main"))
            .header("Authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .body(package(&format!("scheme{i}"), "1.0-r0", "x86_64"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{scheme}");
    }
    let other = server
        .client
        .put(server.url("/pub/v1/main"))
        .header("Authorization", format!("Digest {ADMIN_TOKEN}"))
        .body(package("digest", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn private_owner_needs_a_members_credentials() {
    let server = TestServer::start().await;
    setup(&server).await;
    let index = "/priv/v1/main/x86_64/APKINDEX.tar.gz";
    let file = "/priv/v1/main/x86_64/p-1.0-r0.apk";
    // Anonymous: credentials are needed.
    for path in [index, file, "/priv/key"] {
        let response = server.get(path, None).await;
        assert_eq!(response.status(), 401, "{path}");
    }
    // A mistyped owner and a private one answer alike, and the message names both causes
    // (apk shows only "401", so the spelling is the first thing to check).
    let private: serde_json::Value = server.get(index, None).await.json().await.unwrap();
    let unknown: serde_json::Value = server
        .get("/pirv/v1/main/x86_64/APKINDEX.tar.gz", None)
        .await
        .json()
        .await
        .unwrap();
    let message = private["message"].as_str().unwrap();
    assert!(
        message.starts_with("unknown or private owner priv: check the spelling"),
        "{message}"
    );
    assert_eq!(
        unknown["message"].as_str().unwrap(),
        message.replace("owner priv:", "owner pirv:")
    );
    // A valid user who is not a member must not learn the owner exists.
    let outsider = server
        .user_with_token("outsider", Role::Admin, None, None)
        .await;
    for path in [index, file, "/priv/key"] {
        assert_eq!(
            server
                .get(path, Some(("outsider", &outsider)))
                .await
                .status(),
            404,
            "{path}"
        );
    }
    // A read member reads, but cannot write.
    let reader = server
        .user_with_token("reader", Role::Admin, None, None)
        .await;
    let owner = server
        .state
        .store
        .owner_by_name("priv")
        .await
        .unwrap()
        .unwrap();
    let reader_user = server
        .state
        .store
        .user_by_name("reader")
        .await
        .unwrap()
        .unwrap();
    server
        .state
        .store
        .set_member(owner.id, reader_user.id, Role::Read, None)
        .await
        .unwrap();
    let text = server
        .verified_index("priv", index, Some(("reader", &reader)))
        .await;
    assert_eq!(index_names(&text), ["p"]);
    assert_eq!(
        server.get(file, Some(("reader", &reader))).await.status(),
        200
    );
    let put = server
        .put(
            "/priv/v1/main",
            package("q", "1.0-r0", "x86_64"),
            Some(("reader", &reader)),
        )
        .await;
    assert_eq!(put.status(), 403);
    assert_eq!(
        server
            .delete(file, Some(("reader", &reader)))
            .await
            .status(),
        403
    );
    // Private responses are not cached by shared caches.
    let response = server.get(index, Some(("reader", &reader))).await;
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("private"));
    server.stop().await;
}

#[tokio::test]
async fn token_scopes_and_owner_limits() {
    let server = TestServer::start().await;
    setup(&server).await;
    let read = server
        .user_with_token("admin", Role::Read, None, None)
        .await;
    let write = server
        .user_with_token("admin", Role::Write, None, None)
        .await;
    let only_pub = server
        .user_with_token("admin", Role::Write, Some("pub"), None)
        .await;

    let put = |path: &'static str, name: &'static str, token: String| {
        let server = &server;
        async move {
            server
                .put(
                    path,
                    package(name, "1.0-r0", "x86_64"),
                    Some(("admin", &token)),
                )
                .await
                .status()
        }
    };
    assert_eq!(put("/pub/v1/main", "r", read.clone()).await, 403);
    assert_eq!(put("/pub/v1/main", "w", write.clone()).await, 201);
    assert_eq!(put("/pub/v1/main", "l", only_pub.clone()).await, 201);
    // A token limited to `pub` has no rights on `priv` (not even to know it).
    assert_eq!(put("/priv/v1/main", "l", only_pub.clone()).await, 404);
    assert_eq!(
        server
            .get(
                "/priv/v1/main/x86_64/APKINDEX.tar.gz",
                Some(("admin", &only_pub))
            )
            .await
            .status(),
        404
    );
    // A read token reads private owners its user may read.
    assert_eq!(
        server
            .get(
                "/priv/v1/main/x86_64/APKINDEX.tar.gz",
                Some(("admin", &read))
            )
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .delete("/pub/v1/main/x86_64/w-1.0-r0.apk", Some(("admin", &read)))
            .await
            .status(),
        403
    );
    assert_eq!(
        server
            .delete("/pub/v1/main/x86_64/w-1.0-r0.apk", Some(("admin", &write)))
            .await
            .status(),
        204
    );
    server.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_rejected() {
    let server = TestServer::start().await;
    setup(&server).await;
    let expired = server
        .user_with_token("admin", Role::Admin, None, Some(common::unix_now() - 1))
        .await;
    let path = "/pub/v1/main/x86_64/APKINDEX.tar.gz";
    let answer = server.get(path, Some(("admin", &expired))).await;
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("this token expired on "),
        "{body}"
    );
    let live = server
        .user_with_token("admin", Role::Admin, None, Some(common::unix_now() + 3600))
        .await;
    assert_eq!(server.get(path, Some(("admin", &live))).await.status(), 200);
    let id = server
        .state
        .store
        .list_tokens(None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .max()
        .unwrap();
    assert!(server
        .state
        .store
        .revoke_token(id, common::unix_now(), None)
        .await
        .unwrap());
    let answer = server.get(path, Some(("admin", &live))).await;
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("this token was revoked"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn password_login_and_anonymous_read_switch() {
    let server = TestServer::start_with(|c| c.auth.anonymous_read = false).await;
    setup(&server).await;
    let hash = alpine_registry::access::hash_password("s3cret-pass").unwrap();
    alpine_registry::registry::accounts::create_user(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        Some(&hash),
        false,
        false,
    )
    .await
    .unwrap();
    let path = "/pub/v1/main/x86_64/APKINDEX.tar.gz";
    assert_eq!(
        server.get(path, None).await.status(),
        401,
        "anonymous_read = false"
    );
    assert_eq!(
        server
            .get(path, Some(("alice", "s3cret-pass")))
            .await
            .status(),
        200
    );
    assert_eq!(
        server.get(path, Some(("alice", "wrong"))).await.status(),
        401
    );
    // Her own namespace is writable with her password.
    let put = server
        .put(
            "/alice/v1/main",
            package("a", "1.0-r0", "x86_64"),
            Some(("alice", "s3cret-pass")),
        )
        .await;
    assert_eq!(put.status(), 201);
    let put = server
        .put(
            "/pub/v1/main",
            package("a", "1.0-r0", "x86_64"),
            Some(("alice", "s3cret-pass")),
        )
        .await;
    assert_eq!(put.status(), 403);
    server.stop().await;
}

/// The registry reads the time from its clock: a token is dated by it, valid until the
/// clock passes its expiry, and its last use is the clock's time.
#[tokio::test]
async fn tokens_expire_by_the_registry_clock() {
    use alpine_registry::clock::{ManualClock, SharedClock};
    use std::time::{Duration, UNIX_EPOCH};

    let start = 1_900_000_000;
    let manual = std::sync::Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(start as u64),
    ));
    let clock: SharedClock = manual.clone();
    let server = TestServer::start_with_clock(|_| {}, clock).await;
    setup(&server).await;
    let token = server
        .user_with_token("admin", Role::Admin, None, Some(start + 3600))
        .await;
    let path = "/pub/v1/main/x86_64/APKINDEX.tar.gz";
    assert_eq!(
        server.get(path, Some(("admin", &token))).await.status(),
        200
    );
    // The use is recorded off the request's path: wait for it, within a bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        let record = server
            .state
            .store
            .list_tokens(None)
            .await
            .unwrap()
            .into_iter()
            .max_by_key(|t| t.id)
            .unwrap();
        if record.last_used_at.is_some() || std::time::Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(record.created_at, start, "dated by the registry clock");
    assert_eq!(record.last_used_at, Some(start));

    manual.advance(Duration::from_secs(3601));
    let answer = server.get(path, Some(("admin", &token))).await;
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("this token expired on "),
        "{body}"
    );
    server.stop().await;
}
