//! Webhooks with a real HTTP receiver: every delivery signed with HMAC-SHA256 of its body
//! (checked here with the hmac crate, as a receiver would); `index.published` sent once
//! the signed index listing the change is served; a receiver that is down at first gets
//! the delivery when it comes back; a delivery pending when the server is SIGKILLed is
//! sent after the restart (the real binary); with two instances on one PostgreSQL
//! database every event is delivered exactly once; non-public targets refused; rights.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpine_registry::store::Role;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));
const SECRET: &str = "It's a Secret to Everybody";
const REPO: &str = "/admin/edge/main";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every POST and answers `status`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(Mutex::new(200));
        let app = {
            let (got, status) = (got.clone(), status.clone());
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let (got, status) = (got.clone(), status.clone());
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default()
                        };
                        got.lock().unwrap().push(Received {
                            event: header("x-alpine-registry-event"),
                            delivery: header("x-alpine-registry-delivery"),
                            signature: header("x-alpine-registry-signature-256"),
                            body: body.to_vec(),
                        });
                        StatusCode::from_u16(*status.lock().unwrap()).unwrap()
                    }
                }),
            )
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            got,
            status,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until `done` holds for what was received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {what}; received {:#?}",
                got.iter().map(|r| (&r.event, r.json())).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The signature a receiver computes from the body it got and its secret.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn of_event<'a>(got: &'a [Received], event: &str) -> Vec<&'a Received> {
    got.iter().filter(|r| r.event == event).collect()
}

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    auth: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
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

/// Adds a webhook to `owner` through the API of the server at `base`; returns its id.
async fn add_webhook(base: &str, owner: &str, url: &str, events: &[&str]) -> i64 {
    let (status, body) = api(
        &reqwest::Client::new(),
        reqwest::Method::POST,
        format!("{base}/api/v1/owners/{owner}/webhooks"),
        Some(json!({ "url": url, "secret": SECRET, "events": events })),
        ADMIN,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn deliveries(base: &str, id: i64) -> Vec<Value> {
    let (status, body) = api(
        &reqwest::Client::new(),
        reqwest::Method::GET,
        format!("{base}/api/v1/owners/admin/webhooks/{id}/deliveries"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits (bounded) until webhook `id` has `count` deliveries, all delivered; returns
/// them.
async fn wait_delivered(base: &str, id: i64, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = deliveries(base, id).await;
        if listed.len() == count && listed.iter().all(|d| d["state"] == "delivered") {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "not {count} delivered within 30 s: {listed:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quick(config: &mut alpine_registry::config::Config) {
    config.webhooks.allow_private_targets = true;
    config.webhooks.poll_interval_ms = 50;
    config.webhooks.retry_base_secs = 1;
    config.webhooks.retry_max_interval_secs = 1;
}

#[tokio::test]
async fn events_are_signed_and_the_index_event_comes_once_the_index_lists_the_change() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(quick).await;
    let base = server.url("");
    let id = add_webhook(&base, "admin", &receiver.url(), &[]).await;

    assert_eq!(
        server
            .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    let got = receiver
        .wait_for("package.published and index.published", |got| {
            !of_event(got, "package.published").is_empty()
                && !of_event(got, "index.published").is_empty()
        })
        .await;
    for received in &got {
        assert_eq!(received.signature, expected_signature(&received.body));
        assert!(received.delivery.parse::<i64>().is_ok(), "{received:?}");
        assert_eq!(received.json()["event"], received.event);
    }
    let published = of_event(&got, "package.published")[0].json();
    assert_eq!(published["owner"], "admin");
    assert_eq!(published["branch"], "edge");
    assert_eq!(published["repository"], "main");
    assert_eq!(published["arch"], "x86_64");
    assert_eq!(published["file"], "hello-1.0-r0.apk");
    assert_eq!(published["name"], "hello");
    assert_eq!(published["version"], "1.0-r0");
    assert_eq!(published["reason"], "upload");
    assert_eq!(published["actor"]["kind"], "user");
    assert_eq!(published["actor"]["name"], "admin");

    // The index the event names is the one served, and it lists the change.
    let index = of_event(&got, "index.published")[0].json();
    assert_eq!(index["arch"], "x86_64");
    assert_eq!(index["added"], json!(["hello-1.0-r0.apk"]));
    assert_eq!(index["removed"], json!([]));
    let index_path = format!("/{}", index["path"].as_str().unwrap());
    assert_eq!(index_path, format!("{REPO}/x86_64/APKINDEX.tar.gz"));
    let served = server.get(&index_path, ADMIN).await.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&served)),
        index["sha256"].as_str().unwrap()
    );
    let text = server.verified_index("admin", &index_path, ADMIN).await;
    assert!(index_names(&text).contains(&"hello".to_string()));
    let generation = index["generation"].as_i64().unwrap();

    // A delete: who and why, and the index without it.
    let before = receiver.received().len();
    let deleted = server
        .delete(&format!("{REPO}/x86_64/hello-1.0-r0.apk"), ADMIN)
        .await;
    assert_eq!(deleted.status(), 204);
    let got = receiver
        .wait_for("package.deleted and its index", |got| {
            got.len() >= before + 2
                && of_event(&got[before..], "index.published").len() == 1
                && of_event(&got[before..], "package.deleted").len() == 1
        })
        .await;
    let deleted = of_event(&got[before..], "package.deleted")[0].json();
    assert_eq!(deleted["reason"], "request");
    assert_eq!(deleted["actor"]["name"], "admin");
    assert_eq!(deleted["file"], "hello-1.0-r0.apk");
    let index = of_event(&got[before..], "index.published")[0].json();
    assert_eq!(index["removed"], json!(["hello-1.0-r0.apk"]));
    assert!(index["generation"].as_i64().unwrap() > generation);
    assert_eq!(index["packages"], 0);

    // Each delivery listed, delivered with the receiver's status.
    let listed = wait_delivered(&base, id, 4).await;
    for delivery in &listed {
        assert_eq!(delivery["last_status"], 200);
        assert_eq!(delivery["attempts"], 1);
        assert!(delivery["last_latency_ms"].is_i64());
    }
    // And on the owner's webhooks page, for its admins.
    let page = server.get("/admin/-/webhooks", ADMIN).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&receiver.url()), "{html}");
    assert_eq!(html.matches("<td>delivered</td>").count(), 4, "{html}");
    assert!(html.contains("index.published") && html.contains("package.deleted"));
    assert!(!html.contains(SECRET) && !html.contains("<script"));
    let owner_page = server.get("/admin", ADMIN).await.text().await.unwrap();
    assert!(owner_page.contains("/admin/-/webhooks"));
    server.stop().await;
}

#[tokio::test]
async fn a_webhook_gets_only_the_events_it_asked_for_and_none_of_another_owner() {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(quick).await;
    let base = server.url("");
    for arch in ["x86_64", "aarch64"] {
        let put = server
            .put_admin(REPO, package("tool", "1.0-r0", arch))
            .await;
        assert_eq!(put.status(), 201);
    }
    let id = add_webhook(&base, "admin", &receiver.url(), &["index.published"]).await;
    let token = server.user_with_token("bob", Role::Write, None, None).await;
    // Bob's own owner: no webhook there.
    let bob = Some(("bob", token.as_str()));
    let put = server
        .put("/bob/edge/main", package("other", "1.0-r0", "x86_64"), bob)
        .await;
    assert_eq!(put.status(), 201);
    // A noarch package is in the event of every index it touches.
    assert_eq!(
        server
            .put_admin(REPO, package("doc", "1.0-r0", "noarch"))
            .await
            .status(),
        201
    );
    // Events are queued with their change, before its answer: these are all there are.
    let listed = wait_delivered(&base, id, 2).await;
    assert!(listed.iter().all(|d| d["event"] == "index.published"));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let mut arches: Vec<String> = got
        .iter()
        .map(|r| {
            let body = r.json();
            assert_eq!(r.event, "index.published");
            assert_eq!(body["owner"], "admin");
            assert_eq!(body["added"], json!(["doc-1.0-r0.apk"]));
            assert_eq!(body["packages"], 2);
            body["arch"].as_str().unwrap().to_string()
        })
        .collect();
    arches.sort();
    assert_eq!(arches, ["aarch64", "x86_64"]);
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_down_at_first_gets_the_delivery_once_it_is_back() {
    // A port nothing listens on yet.
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = TestServer::start_with(quick).await;
    let base = server.url("");
    let id = add_webhook(
        &base,
        "admin",
        &format!("http://{addr}/hook"),
        &["package.published"],
    )
    .await;
    assert_eq!(
        server
            .put_admin(REPO, package("hello", "1.0-r0", "x86_64"))
            .await
            .status(),
        201
    );
    // Tried, failed, still pending.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let listed = deliveries(&base, id).await;
        if listed
            .first()
            .is_some_and(|d| d["attempts"].as_i64().unwrap() >= 1)
        {
            break listed[0].clone();
        }
        assert!(Instant::now() < deadline, "no attempt within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["state"], "pending", "{failed}");
    assert!(failed["last_status"].is_null(), "{failed}");
    assert!(!failed["last_error"].as_str().unwrap().is_empty());

    // Back, answering 503 first: still retried.
    let receiver = Receiver::start_on(tokio::net::TcpListener::bind(addr).await.unwrap());
    *receiver.status.lock().unwrap() = 503;
    receiver
        .wait_for("a first attempt", |got| !got.is_empty())
        .await;
    *receiver.status.lock().unwrap() = 200;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = deliveries(&base, id).await;
        if listed[0]["state"] == "delivered" {
            assert_eq!(listed[0]["last_status"], 200);
            assert!(
                listed[0]["attempts"].as_i64().unwrap() >= 3,
                "{}",
                listed[0]
            );
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {}", listed[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.received();
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), 1, "one delivery, attempted several times");
    assert_eq!(got.last().unwrap().json()["file"], "hello-1.0-r0.apk");
    receiver.task.abort();
    server.stop().await;
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_unless_allowed() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let (status, body) = api(
            &client,
            reqwest::Method::POST,
            server.url("/api/v1/owners/admin/webhooks"),
            Some(json!({ "url": url, "secret": SECRET })),
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("allow_private_targets"),
            "{body}"
        );
    }
    for (body, why) in [
        (
            json!({ "url": "ftp://example.org/", "secret": SECRET }),
            "scheme",
        ),
        (
            json!({ "url": "https://u:p@example.org/", "secret": SECRET }),
            "credentials",
        ),
        (
            json!({ "url": "https://203.0.113.9/", "secret": "" }),
            "empty secret",
        ),
        (
            json!({ "url": "https://203.0.113.9/", "secret": SECRET, "events": ["push"] }),
            "unknown event",
        ),
    ] {
        let (status, answer) = api(
            &client,
            reqwest::Method::POST,
            server.url("/api/v1/owners/admin/webhooks"),
            Some(body),
            ADMIN,
        )
        .await;
        assert_eq!(status, 400, "{why}: {answer}");
    }
    let (_, listed) = api(
        &client,
        reqwest::Method::GET,
        server.url("/api/v1/owners/admin/webhooks"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(listed, json!([]), "nothing added");
    server.stop().await;
}

#[tokio::test]
async fn only_owner_admins_manage_webhooks_and_secrets_are_never_shown() {
    let server = TestServer::start_with(quick).await;
    let client = reqwest::Client::new();
    let base = server.url("");
    let id = add_webhook(&base, "admin", "http://203.0.113.9/hook", &[]).await;
    let writer = server
        .user_with_token("wendy", Role::Write, None, None)
        .await;
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "admin",
        "wendy",
        Role::Write,
    )
    .await
    .unwrap();
    let wendy = Some(("wendy", writer.as_str()));
    let url = server.url("/api/v1/owners/admin/webhooks");
    let (status, _) = api(&client, reqwest::Method::GET, url.clone(), None, wendy).await;
    assert_eq!(status, 403);
    let (status, _) = api(
        &client,
        reqwest::Method::POST,
        url.clone(),
        Some(json!({ "url": "http://203.0.113.9/x", "secret": SECRET })),
        wendy,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = api(
        &client,
        reqwest::Method::DELETE,
        format!("{url}/{id}"),
        None,
        wendy,
    )
    .await;
    assert_eq!(status, 403);
    let page = server.get("/admin/-/webhooks", wendy).await;
    assert_eq!(page.status(), 403);
    // Another owner's webhook is not found under this owner.
    let (status, _) = api(
        &client,
        reqwest::Method::DELETE,
        server.url(&format!("/api/v1/owners/wendy/webhooks/{id}")),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 404);

    let (status, listed) = api(&client, reqwest::Method::GET, url.clone(), None, ADMIN).await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["url"], "http://203.0.113.9/hook");
    assert_eq!(
        listed[0]["events"],
        json!(["package.published", "package.deleted", "index.published"])
    );
    assert!(!listed.to_string().contains(SECRET));

    let (status, _) = api(
        &client,
        reqwest::Method::DELETE,
        format!("{url}/{id}"),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 204);
    let (_, listed) = api(&client, reqwest::Method::GET, url, None, ADMIN).await;
    assert_eq!(listed, json!([]));

    // Both changes audited, the secret in neither; stored sealed.
    let entries = server
        .state
        .store
        .audit_entries(&alpine_registry::store::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e.action.as_str())
        .filter(|a| a.starts_with("webhook."))
        .collect();
    assert_eq!(actions, vec!["webhook.remove", "webhook.add"]);
    assert!(!serde_json::to_string(&entries).unwrap().contains(SECRET));
    server.stop().await;
}

/// The real binary, its data directory kept across a SIGKILL.
struct Binary {
    data: tempfile::TempDir,
    child: Option<std::process::Child>,
    port: u16,
    log: std::path::PathBuf,
}

impl Binary {
    fn env(command: &mut std::process::Command) {
        command
            .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
            // The events counted here are those of the test's own package.
            .env("ALPINE_REGISTRY__SIGNING__KEYRING", "false")
            .env("ALPINE_REGISTRY__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
            .env("ALPINE_REGISTRY__WEBHOOKS__POLL_INTERVAL_MS", "50")
            .env("ALPINE_REGISTRY__WEBHOOKS__RETRY_BASE_SECS", "1")
            .env("ALPINE_REGISTRY__WEBHOOKS__RETRY_MAX_INTERVAL_SECS", "1")
            .env("ALPINE_REGISTRY__WEBHOOKS__TIMEOUT_SECS", "2");
    }

    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command.arg("--data-dir").arg(self.data.path());
        Self::env(&mut command);
        command
    }

    fn start(&mut self) {
        self.port = free_port();
        let log = std::fs::File::create(&self.log).unwrap();
        let child = self
            .command()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_listening(self.port);
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn a_delivery_pending_at_a_sigkill_is_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Binary {
        log: dir.path().join("server.log"),
        data: tempfile::tempdir().unwrap(),
        child: None,
        port: 0,
    };
    server.start();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Added with the command line, the server running.
    let mut add = server.command();
    add.args([
        "webhook",
        "add",
        "admin",
        &format!("http://{addr}/hook"),
        "--events",
        "package.published,index.published",
    ])
    .env("ALPINE_REGISTRY_WEBHOOK_SECRET", SECRET);
    let id: i64 = run_ok(&mut add).trim().parse().unwrap();

    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}{REPO}", server.base()))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    // Both events tried and failed (nothing listens), then the process dies.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = deliveries(&server.base(), id).await;
        if listed.len() == 2 && listed.iter().all(|d| d["attempts"].as_i64().unwrap() >= 1) {
            assert!(listed.iter().all(|d| d["state"] == "pending"), "{listed:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempts: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();

    let receiver = Receiver::start_on(tokio::net::TcpListener::bind(addr).await.unwrap());
    server.start();
    let got = receiver
        .wait_for("both events after the restart", |got| {
            !of_event(got, "package.published").is_empty()
                && !of_event(got, "index.published").is_empty()
        })
        .await;
    for received in &got {
        assert_eq!(received.signature, expected_signature(&received.body));
    }
    assert_eq!(
        of_event(&got, "package.published")[0].json()["file"],
        "hello-1.0-r0.apk"
    );

    // The command line lists them as delivered.
    let mut list = server.command();
    list.args(["webhook", "deliveries", &id.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run_ok(&mut list);
        if out.matches("delivered").count() == 2 {
            assert!(out.contains("package.published") && out.contains("index.published"));
            assert!(out.contains("200"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut listed = server.command();
    listed.args(["webhook", "list", "admin"]);
    let out = run_ok(&mut listed);
    assert!(out.contains(&format!("http://{addr}/hook")), "{out}");
    assert!(!out.contains(SECRET));
    let mut remove = server.command();
    remove.args(["webhook", "remove", &id.to_string()]);
    run_ok(&mut remove);
    assert!(!run_ok(&mut listed).contains(&format!("http://{addr}/hook")));
}

/// Two instances on one PostgreSQL database, both sending: every event is delivered
/// exactly once, whichever instance made the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_each_event_is_delivered_exactly_once() {
    let Some(database) = postgres::TestDatabase::from_env() else {
        postgres::note_skipped();
        return;
    };
    let blobs = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| {
        let mut config = test_config(dir);
        config.database.url = database.url.clone();
        config.signing.master_key = postgres::MASTER_KEY.to_string();
        config.storage.blob_dir = Some(blobs.path().to_path_buf());
        quick(&mut config);
        config.webhooks.poll_interval_ms = 10;
        config
    };
    let a = TestServer::start_on(config(dir_a.path())).await;
    let b = TestServer::start_on(config(dir_b.path())).await;
    let receiver = Receiver::start().await;
    let id = add_webhook(&a.url(""), "admin", &receiver.url(), &["package.published"]).await;
    assert_eq!(id, 1);

    const PACKAGES: usize = 24;
    let mut uploads = Vec::new();
    for i in 0..PACKAGES {
        let server = if i % 2 == 0 { &a } else { &b };
        let (client, url) = (server.client.clone(), server.url(REPO));
        uploads.push(tokio::spawn(async move {
            client
                .put(url)
                .basic_auth("admin", Some(ADMIN_TOKEN))
                .body(package(&format!("p{i}"), "1.0-r0", "x86_64"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), 201);
    }
    // Each sent once: a second send would have been a second claim, counted as an attempt.
    let listed = wait_delivered(&a.url(""), 1, PACKAGES).await;
    assert!(listed.iter().all(|d| d["attempts"] == 1), "{listed:#?}");
    let got = receiver.received();
    let mut files: Vec<String> = got
        .iter()
        .map(|r| r.json()["file"].as_str().unwrap().to_string())
        .collect();
    files.sort();
    let mut expected: Vec<String> = (0..PACKAGES).map(|i| format!("p{i}-1.0-r0.apk")).collect();
    expected.sort();
    assert_eq!(files, expected, "each event exactly once");
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), PACKAGES);
    a.stop().await;
    b.stop().await;
    database.drop_database().await;
}
