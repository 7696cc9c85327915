//! Login sessions and the failure throttle, as a registry of several instances behind a
//! round-robin balancer sees them, and their limits.
//!
//! On one registry (SQLite, or PostgreSQL when `ALPINE_REGISTRY_TEST_POSTGRES_URL` is set):
//! one user logging in over a thousand times ends nobody else's session; a full session
//! table refuses logins (503) rather than end anyone's; successful logins are limited per
//! user (429); expired sessions are pruned by a background job.
//!
//! On two instances of the real binary sharing one PostgreSQL database and one master key
//! (skipped with a note without `ALPINE_REGISTRY_TEST_POSTGRES_URL`, failing with
//! `ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1`): a session made on one is valid on the
//! other, a delete confirmed on one is accepted by the other, logout, a password change
//! and a token revocation on one end the sessions on both, the login limit counts on both,
//! and the failure throttle trips after as many failures spread over both as on one.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alpine_registry::store::Role;
use common::postgres::{self as pg, TestDatabase};
use common::process::ChildServer;
use common::web::{password_of, world};
use common::{package, TestServer, ADMIN_TOKEN};
use futures_util::StreamExt;

const SESSION_COOKIE: &str = "alpine_registry_session";
const LOGIN_COOKIE: &str = "alpine_registry_login";

/// An answer, read whole.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    /// The value of the hidden form field `name`.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }

    fn logged_in_as(&self, user: &str) -> bool {
        self.body
            .contains(&format!("Logged in as <strong>{user}</strong>"))
    }

    fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A browser: cookies kept between requests (whichever instance answered), redirects not
/// followed.
struct Browser {
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookies = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookies.is_empty() {
            request
        } else {
            request.header("cookie", cookies)
        };
        let response = request.send().await.unwrap();
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        for cookie in page.headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            let (name, value) = cookie.split(';').next().unwrap().split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        page
    }

    async fn get(&mut self, url: &str) -> Page {
        let request = self.client.get(url);
        self.send(request).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let request = self.client.post(url).form(form);
        self.send(request).await
    }

    /// Logs in through the form of the registry at `base`; the answer to the POST.
    async fn login(&mut self, base: &str, user: &str, secret: &str) -> Page {
        let form = self.get(&format!("{base}/-/login")).await;
        assert_eq!(form.status, 200);
        let csrf = form.field("csrf");
        let fields = [
            ("user", user),
            ("secret", secret),
            ("csrf", csrf.as_str()),
            ("next", "/"),
        ];
        self.post(&format!("{base}/-/login"), &fields).await
    }

    /// The CSRF token of the session, as a page of the registry at `base` carries it.
    async fn csrf(&mut self, base: &str) -> String {
        self.get(&format!("{base}/")).await.field("csrf")
    }
}

/// A login with `secret` from a browser that holds no session (a script's), with the
/// double-submitted value of the login form it would have fetched; the status.
async fn bare_login(client: &reqwest::Client, base: &str, secret: &str) -> u16 {
    let csrf = "5".repeat(64);
    client
        .post(format!("{base}/-/login"))
        .header("cookie", format!("{LOGIN_COOKIE}={csrf}"))
        .form(&[("user", "x"), ("secret", secret), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn started(tweak: impl FnOnce(&mut alpine_registry::config::Config)) -> TestServer {
    let server = TestServer::start_with(tweak).await;
    world(&server).await;
    server
}

#[tokio::test]
async fn one_user_logging_in_a_thousand_times_ends_no_other_users_session() {
    // The table could hold every one of the flood's logins five times over.
    let server = started(|c| {
        c.auth.max_sessions = 200;
        c.auth.max_logins_per_user = 100_000;
    })
    .await;
    let base = server.url("");
    let mut admin = Browser::new();
    assert_eq!(admin.login(&base, "admin", ADMIN_TOKEN).await.status, 303);
    let mut carol = Browser::new();
    let carols = password_of("carol");
    assert_eq!(carol.login(&base, "carol", &carols).await.status, 303);

    let flood = server
        .user_with_token("flood", Role::Read, None, None)
        .await;
    let mut first = Browser::new();
    assert_eq!(first.login(&base, "flood", &flood).await.status, 303);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..1_100)
        .map(|_| bare_login(&client, &base, &flood))
        .buffer_unordered(8)
        .collect()
        .await;
    eprintln!("1,100 logins of one user: {:?}", started.elapsed());
    assert!(statuses.iter().all(|s| *s == 303), "every login succeeds");

    // Everyone else is still logged in; the flood kept its newest sessions only.
    assert!(admin.get(&format!("{base}/")).await.logged_in_as("admin"));
    assert!(carol.get(&format!("{base}/")).await.logged_in_as("carol"));
    assert_eq!(carol.get(&format!("{base}/vault")).await.status, 200);
    assert!(!first.get(&format!("{base}/")).await.logged_in_as("flood"));
    let flood_user = server
        .state
        .store
        .user_by_name("flood")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        server
            .state
            .store
            .count_sessions(Some(flood_user.id))
            .await
            .unwrap(),
        32
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_session_table_refuses_logins_and_ends_nobodys_session() {
    let server = started(|c| {
        c.auth.max_sessions = 2;
        c.auth.max_sessions_per_user = 1;
    })
    .await;
    let base = server.url("");
    let home = format!("{base}/");
    let mut alice = Browser::new();
    assert_eq!(
        alice
            .login(&base, "alice", &password_of("alice"))
            .await
            .status,
        303
    );
    let mut carol = Browser::new();
    assert_eq!(
        carol
            .login(&base, "carol", &password_of("carol"))
            .await
            .status,
        303
    );
    let mut bob = Browser::new();
    let refused = bob.login(&base, "bob", &password_of("bob")).await;
    assert_eq!(refused.status, 503);
    assert!(refused.retry_after() >= 1);
    assert!(
        refused.body.contains("as many login sessions as it may"),
        "{}",
        refused.body
    );
    assert!(!bob.cookies.contains_key(SESSION_COOKIE));
    assert!(alice.get(&home).await.logged_in_as("alice"));
    assert!(carol.get(&home).await.logged_in_as("carol"));
    // Carol, at her own cap, replaces her own session: nobody else's.
    let mut carol_elsewhere = Browser::new();
    assert_eq!(
        carol_elsewhere
            .login(&base, "carol", &password_of("carol"))
            .await
            .status,
        303
    );
    assert!(carol_elsewhere.get(&home).await.logged_in_as("carol"));
    assert!(!carol.get(&home).await.logged_in_as("carol"));
    assert!(alice.get(&home).await.logged_in_as("alice"));
    server.stop().await;
}

#[tokio::test]
async fn successful_logins_are_limited_per_user() {
    let server = started(|c| {
        c.auth.max_logins_per_user = 3;
        c.auth.login_window_secs = 60;
    })
    .await;
    let base = server.url("");
    let token = server
        .user_with_token("alice", Role::Read, None, None)
        .await;
    for _ in 0..3 {
        assert_eq!(Browser::new().login(&base, "", &token).await.status, 303);
    }
    let mut fourth = Browser::new();
    let refused = fourth.login(&base, "alice", &password_of("alice")).await;
    assert_eq!(refused.status, 429);
    // Three per minute: the next one within 20 s.
    let wait = refused.retry_after();
    assert!((1..=20).contains(&wait), "Retry-After: {wait}");
    assert!(
        refused.body.contains("logged in 3 times within 60 s"),
        "{}",
        refused.body
    );
    assert!(!fourth.cookies.contains_key(SESSION_COOKIE));
    // Another user is not affected, nor are the credentials themselves.
    assert_eq!(
        Browser::new()
            .login(&base, "bob", &password_of("bob"))
            .await
            .status,
        303
    );
    let key = server.get("/vault/key", Some(("alice", &token))).await;
    assert_eq!(
        key.status(),
        404,
        "alice is no member of vault, but authenticated"
    );
    server.stop().await;
}

#[tokio::test]
async fn expired_sessions_are_pruned_in_the_background() {
    let server = started(|c| c.auth.session_lifetime_secs = 2).await;
    let base = server.url("");
    let mut alice = Browser::new();
    assert_eq!(
        alice
            .login(&base, "alice", &password_of("alice"))
            .await
            .status,
        303
    );
    assert_eq!(server.state.store.count_sessions(None).await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.state.store.count_sessions(None).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired session is still kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alice.get(&format!("{base}/")).await.logged_in_as("alice"));
    server.stop().await;
}

// Two instances of the binary on one PostgreSQL database.

const TOKEN: &str = "apkreg_sessions-test-token-0123456789abcd";

/// Two instances on one fresh database, with one master key and one blob directory, as
/// behind a round-robin balancer.
struct Pair {
    a: ChildServer,
    b: ChildServer,
    client: reqwest::Client,
    _blobs: tempfile::TempDir,
    // Dropped after the servers.
    _database: TestDatabase,
}

impl Pair {
    /// None when the PostgreSQL tests are skipped.
    async fn start(env: &[(&str, &str)]) -> Option<Pair> {
        let Some(server) = pg::server_url() else {
            pg::note_skipped();
            return None;
        };
        let database = TestDatabase::create(&server);
        let blobs = tempfile::tempdir().unwrap();
        let mut all: Vec<(String, String)> = vec![
            (
                "ALPINE_REGISTRY__DATABASE__URL".into(),
                database.url.clone(),
            ),
            (
                "ALPINE_REGISTRY__SIGNING__MASTER_KEY".into(),
                pg::MASTER_KEY.into(),
            ),
            (
                "ALPINE_REGISTRY__STORAGE__BLOB_DIR".into(),
                blobs.path().display().to_string(),
            ),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let start = || {
            let all = all.clone();
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> =
                    all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                ChildServer::start(TOKEN, &env)
            })
        };
        let (a, b) = (start(), start());
        Some(Pair {
            a: a.await.unwrap(),
            b: b.await.unwrap(),
            client: reqwest::Client::new(),
            _blobs: blobs,
            _database: database,
        })
    }

    /// An administration call through instance A; the JSON answer.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let response = self
            .client
            .request(method, self.a.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// `vault` (private) with the package hush, and carol, who may write to it: her
    /// password and a token of hers (secret, id).
    async fn vault(&self) -> (String, String, i64) {
        use reqwest::Method;
        let password = "carol-correct-horse".to_string();
        self.admin(
            Method::POST,
            "/api/v1/admin/users",
            serde_json::json!({"name": "carol", "password": password}),
        )
        .await;
        self.admin(
            Method::POST,
            "/api/v1/admin/owners",
            serde_json::json!({"name": "vault", "private": true, "org": true}),
        )
        .await;
        self.admin(
            Method::PUT,
            "/api/v1/admin/owners/vault/members/carol",
            serde_json::json!({"role": "write"}),
        )
        .await;
        let token = self
            .admin(
                Method::POST,
                "/api/v1/admin/tokens",
                serde_json::json!({"user": "carol", "scope": "write"}),
            )
            .await;
        let uploaded = self
            .client
            .put(self.a.url("/vault/v1/main"))
            .bearer_auth(TOKEN)
            .body(package("hush", "1.0-r0", "x86_64"))
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.status(), 201);
        (
            password,
            token["secret"].as_str().unwrap().to_string(),
            token["id"].as_i64().unwrap(),
        )
    }
}

const HUSH: &str = "/vault/-/packages/hush/delete";
const HUSH_FILE: [(&str, &str); 4] = [
    ("branch", "v1"),
    ("repository", "main"),
    ("arch", "x86_64"),
    ("file", "hush-1.0-r0.apk"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_instance_is_valid_on_the_other_until_logout() {
    let Some(pair) = Pair::start(&[]).await else {
        return;
    };
    let (password, _, _) = pair.vault().await;
    let (a, b) = (pair.a.url(""), pair.b.url(""));
    let mut carol = Browser::new();
    assert_eq!(carol.login(&a, "carol", &password).await.status, 303);

    // The private owner's page, on the instance that did not make the session.
    let page = carol.get(&format!("{b}/vault")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.logged_in_as("carol"));
    assert_eq!(carol.get(&format!("{a}/vault")).await.status, 200);

    // A delete confirmed on A is accepted by B.
    let query: String = HUSH_FILE
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let confirm = carol.get(&format!("{a}{HUSH}?{query}")).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let csrf = confirm.field("csrf");
    let mut form = HUSH_FILE.to_vec();
    form.push(("csrf", &csrf));
    let deleted = carol.post(&format!("{b}{HUSH}"), &form).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    for base in [&a, &b] {
        let file = pair
            .client
            .get(format!("{base}/vault/v1/main/x86_64/hush-1.0-r0.apk"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), 404, "{base}");
    }

    // Logout on A ends the session on B.
    let csrf = carol.csrf(&a).await;
    let session = carol.cookies[SESSION_COOKIE].clone();
    assert_eq!(
        carol
            .post(&format!("{a}/-/logout"), &[("csrf", &csrf)])
            .await
            .status,
        303
    );
    let mut replay = Browser::new();
    replay
        .cookies
        .insert(SESSION_COOKIE.to_string(), session.clone());
    for base in [&b, &a] {
        let page = replay.get(&format!("{base}/vault")).await;
        assert_eq!(page.status, 404, "{base}: the session ended");
        assert!(!page.logged_in_as("carol"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_or_a_revocation_on_one_instance_ends_sessions_on_the_other() {
    let Some(pair) = Pair::start(&[]).await else {
        return;
    };
    let (password, token, token_id) = pair.vault().await;
    let (a, b) = (pair.a.url(""), pair.b.url(""));
    let mut by_password = Browser::new();
    assert_eq!(by_password.login(&a, "carol", &password).await.status, 303);
    let mut by_token = Browser::new();
    assert_eq!(by_token.login(&a, "", &token).await.status, 303);
    for browser in [&mut by_password, &mut by_token] {
        assert_eq!(browser.get(&format!("{b}/vault")).await.status, 200);
    }

    // A new password (set through A) ends the password session, on B too; the token
    // session stays.
    pair.admin(
        reqwest::Method::PUT,
        "/api/v1/admin/users/carol/password",
        serde_json::json!({"password": "another-horse"}),
    )
    .await;
    assert_eq!(by_password.get(&format!("{b}/vault")).await.status, 404);
    assert_eq!(by_token.get(&format!("{b}/vault")).await.status, 200);
    // Revoking the token (through A) ends the session made with it, on B too.
    pair.admin(
        reqwest::Method::DELETE,
        &format!("/api/v1/admin/tokens/{token_id}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(by_token.get(&format!("{b}/vault")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_limit_counts_logins_on_every_instance() {
    let Some(pair) = Pair::start(&[("ALPINE_REGISTRY__AUTH__MAX_LOGINS_PER_USER", "4")]).await
    else {
        return;
    };
    let (_, token, _) = pair.vault().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (a, b) = (pair.a.url(""), pair.b.url(""));
    for base in [&a, &b, &a, &b] {
        assert_eq!(bare_login(&client, base, &token).await, 303);
    }
    for base in [&a, &b] {
        assert_eq!(bare_login(&client, base, &token).await, 429, "{base}");
    }
}

/// The status of `GET /admin/key` on `base` with the password `secret` for `user`.
async fn attempt(client: &reqwest::Client, base: &str, user: &str, secret: &str) -> u16 {
    client
        .get(format!("{base}/admin/key"))
        .basic_auth(user, Some(secret))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_throttle_trips_after_as_many_failures_over_two_instances_as_on_one() {
    let Some(pair) = Pair::start(&[
        ("ALPINE_REGISTRY__AUTH__MAX_FAILURES", "3"),
        ("ALPINE_REGISTRY__AUTH__MAX_FAILURES_PER_ADDRESS", "8"),
        ("ALPINE_REGISTRY__AUTH__FAILURE_DELAY_MS", "60000"),
    ])
    .await
    else {
        return;
    };
    let client = &pair.client;
    let (a, b) = (pair.a.url(""), pair.b.url(""));
    // On one instance: three failures of one name, then refused.
    for _ in 0..3 {
        assert_eq!(attempt(client, &a, "solo", "guess").await, 401);
    }
    assert_eq!(attempt(client, &a, "solo", "guess").await, 429);
    // Spread over both: the same three, then refused by both.
    for base in [&a, &b, &a] {
        assert_eq!(attempt(client, base, "spread", "guess").await, 401);
    }
    for base in [&b, &a] {
        assert_eq!(
            attempt(client, base, "spread", "guess").await,
            429,
            "{base}"
        );
    }
    // Per address whatever the name: 3 + 3 failures so far, two more over both, then
    // even a fresh name is refused by both.
    assert_eq!(attempt(client, &b, "fresh-1", "guess").await, 401);
    assert_eq!(attempt(client, &a, "fresh-2", "guess").await, 401);
    for base in [&a, &b] {
        assert_eq!(
            attempt(client, base, "fresh-3", "guess").await,
            429,
            "{base}"
        );
    }
    // A refusal names when to retry.
    let refused = client
        .get(format!("{b}/admin/key"))
        .basic_auth("spread", Some("guess"))
        .send()
        .await
        .unwrap();
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
}
