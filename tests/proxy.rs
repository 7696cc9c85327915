//! The registry behind a reverse proxy: the client is the address the proxy reports.
//!
//! These tests send the forwarding headers themselves, as a proxy at 127.0.0.1 would.

mod common;

use common::{TestServer, ADMIN_TOKEN};

/// A login form submission with its double-submitted token, from `forwarded_for`.
async fn login(
    server: &TestServer,
    forwarded_for: &str,
    user: &str,
    secret: &str,
) -> reqwest::StatusCode {
    let csrf = "ab".repeat(32);
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url("/-/login"))
        .header("x-forwarded-for", forwarded_for)
        .header("cookie", format!("alpine_registry_login={csrf}"))
        .form(&[
            ("user", user),
            ("secret", secret),
            ("csrf", &csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

/// Wrong passwords for made-up users from `forwarded_for` (a fresh address each time
/// when None) until 429: the per-address limit; how many were answered 401.
async fn trip(server: &TestServer, forwarded_for: Option<&str>) -> usize {
    for attempt in 0..50 {
        let address = forwarded_for.map_or_else(|| format!("198.51.100.{attempt}"), str::to_string);
        let status = server
            .client
            .get(server.url("/admin/key"))
            .header("x-forwarded-for", address)
            .basic_auth(format!("nobody{attempt}"), Some("guess"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 429 {
            return attempt;
        }
        assert_eq!(status, 401);
    }
    panic!("no 429 after 50 failed attempts");
}

#[tokio::test]
async fn forwarded_addresses_are_counted_only_from_trusted_proxies() {
    let throttle = |c: &mut alpine_registry::config::Config| {
        c.auth.max_failures = 3;
        c.auth.max_failures_per_address = 5;
        c.auth.failure_delay_ms = 60_000;
    };
    // Behind a trusted proxy (the test client, at 127.0.0.1), each forwarded address
    // has its own count, whether the credentials come in a header or the login form.
    let server = TestServer::start_with(|c| {
        throttle(c);
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let hash = alpine_registry::access::hash_password("alice-password").unwrap();
    alpine_registry::registry::accounts::create_user(
        &server.state,
        "alice",
        Some(&hash),
        false,
        false,
    )
    .await
    .unwrap();
    assert_eq!(trip(&server, Some("198.51.100.7")).await, 5);
    assert_eq!(
        login(&server, "198.51.100.7", "alice", "alice-password").await,
        429
    );
    assert_eq!(
        login(&server, "198.51.100.8", "alice", "alice-password").await,
        303
    );
    let other = server
        .client
        .get(server.url("/admin/key"))
        .header("x-forwarded-for", "198.51.100.8")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    server.stop().await;

    // From a peer that is not a trusted proxy, forwarding headers are not believed: a
    // fresh made-up address per attempt is still one address.
    let server = TestServer::start_with(throttle).await;
    assert_eq!(trip(&server, None).await, 5);
    assert_eq!(login(&server, "198.51.100.99", "admin", "any").await, 429);
    server.stop().await;
}

#[tokio::test]
async fn urls_in_answers_use_what_the_nearest_trusted_proxy_wrote() {
    let server =
        TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let upload = |name: &'static str, forwarded: &'static str, host: Option<&'static str>| {
        let mut request = server
            .client
            .put(server.url("/admin/v3.21/main"))
            .bearer_auth(ADMIN_TOKEN)
            .header("forwarded", forwarded)
            .body(common::package(name, "1.0-r0", "x86_64"));
        if let Some(host) = host {
            request = request.header("x-forwarded-host", host);
        }
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 201);
            let body: serde_json::Value = answer.json().await.unwrap();
            body["url"].as_str().unwrap().to_string()
        }
    };
    // The client's own element first, then the one a proxy that appends wrote.
    assert_eq!(
        upload(
            "one",
            "host=evil.example;proto=https, for=192.0.2.1;host=apk.example.org;proto=http",
            None
        )
        .await,
        "http://apk.example.org/admin/v3.21/main/x86_64/one-1.0-r0.apk"
    );
    // X-Forwarded-Host, the last of its values, before Forwarded.
    assert_eq!(
        upload(
            "two",
            "for=192.0.2.1;host=other.example;proto=https",
            Some("evil.example, apk.example.org")
        )
        .await,
        "https://apk.example.org/admin/v3.21/main/x86_64/two-1.0-r0.apk"
    );
    server.stop().await;
}
