//! Connection-level behaviour: slow clients and repeated authentication failures.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn clients_too_slow_to_send_headers_are_disconnected() {
    let server = TestServer::start_with(|c| c.server.header_read_timeout_secs = 1).await;
    let addr = server.addr;
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // ... and never finish the headers.
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(
        outcome.is_ok(),
        "the server closed the connection: {outcome:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    assert_eq!(server.get("/healthz", None).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn stalled_upload_bodies_time_out_and_leave_nothing() {
    let server = TestServer::start_with(|c| c.server.request_timeout_secs = 1).await;
    let body = package("slow", "1.0-r0", "x86_64");
    let head = body[..100].to_vec();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Vec::new())
        }),
    );
    use futures_util::StreamExt;
    let started = Instant::now();
    let response = server
        .client
        .put(server.url("/admin/v1/main"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    if let Ok(response) = response {
        assert_eq!(response.status(), 408);
    }
    assert!(server.staged().await.is_empty());
    assert!(server
        .state
        .store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .is_empty());
    server.stop().await;
}

#[tokio::test]
async fn repeated_authentication_failures_are_refused_for_a_while() {
    let server = TestServer::start_with(|c| {
        c.auth.max_failures = 3;
        c.auth.failure_delay_ms = 1500;
    })
    .await;
    let wrong = Some(("admin", "apkreg_wrong-wrong-wrong-wrong-wrong"));
    let right = Some(("admin", ADMIN_TOKEN));
    for _ in 0..3 {
        assert_eq!(server.get("/admin/key", wrong).await.status(), 401);
    }
    // Refused at once, without checking, with the time to wait.
    let started = Instant::now();
    let refused = server.get("/admin/key", wrong).await;
    assert_eq!(refused.status(), 429);
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("retry in 2 s"));
    // Tokens share one count per address: the right one waits too.
    assert_eq!(server.get("/admin/key", right).await.status(), 429);
    // Anonymous requests are not affected.
    assert_eq!(server.get("/healthz", None).await.status(), 200);
    assert_eq!(server.get("/admin/key", None).await.status(), 200);
    // Once the delay has passed, a success resets the count.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.get("/admin/key", right).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "still refused after the delay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(1400));
    for _ in 0..3 {
        assert_eq!(server.get("/admin/key", wrong).await.status(), 401);
    }
    server.stop().await;
}

#[tokio::test]
async fn wrong_urls_get_json_errors_that_say_what_to_do() {
    let server = TestServer::start().await;
    let upload_hint = "upload with PUT /{owner}/{branch}/{repository}, the .apk as the body";
    let bytes = package("hello", "1.0-r0", "x86_64");
    let cases: &[(reqwest::Method, &str, u16, &str)] = &[
        // The architecture added to an upload URL.
        (
            reqwest::Method::PUT,
            "/admin/v3.21/main/x86_64",
            404,
            upload_hint,
        ),
        // `curl -T file URL/` appends the file name.
        (
            reqwest::Method::PUT,
            "/admin/v3.21/main/hello-1.0-r0.apk",
            404,
            upload_hint,
        ),
        // The download path.
        (
            reqwest::Method::PUT,
            "/admin/v3.21/main/x86_64/hello-1.0-r0.apk",
            405,
            upload_hint,
        ),
        (reqwest::Method::POST, "/admin/v3.21/main", 405, upload_hint),
        // `GET /` is the web pages' home; a path of no route at all:
        (
            reqwest::Method::GET,
            "/admin/v3.21",
            404,
            "see the README for every endpoint",
        ),
        (
            reqwest::Method::GET,
            "/admin/v3.21/main/x86_64/APKINDEX.tar.gz/",
            404,
            "remove the trailing slash",
        ),
        (
            reqwest::Method::DELETE,
            "/admin/v3.21/main",
            405,
            "the Allow header",
        ),
    ];
    for (method, path, status, hint) in cases {
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
        if *status == 405 {
            assert!(response.headers().contains_key("allow"), "{method} {path}");
        }
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(hint), "{method} {path}: {message}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn upload_answers_carry_the_url_the_client_used() {
    let server = TestServer::start().await;
    let upload = |host: &'static str, forwarded: Option<&'static str>| {
        let mut request = server
            .client
            .put(server.url("/admin/v3.21/main"))
            .header("host", host)
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .body(package("hello", "1.0-r0", "x86_64"));
        if let Some(proto) = forwarded {
            request = request
                .header("x-forwarded-proto", proto)
                .header("x-forwarded-host", "apk.example.org");
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201);
            response.json::<serde_json::Value>().await.unwrap()["url"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let delete = || async {
        let gone = server
            .delete(
                "/admin/v3.21/main/x86_64/hello-1.0-r0.apk",
                Some(("admin", ADMIN_TOKEN)),
            )
            .await;
        assert_eq!(gone.status(), 204);
    };
    assert_eq!(
        upload("apk.lan:8080", None).await,
        "http://apk.lan:8080/admin/v3.21/main/x86_64/hello-1.0-r0.apk"
    );
    delete().await;
    // 127.0.0.1 is not a trusted proxy: its forwarding headers are not believed.
    assert_eq!(
        upload("apk.lan:8080", Some("https")).await,
        "http://apk.lan:8080/admin/v3.21/main/x86_64/hello-1.0-r0.apk"
    );
    server.stop().await;

    let server =
        TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
    let response = server
        .client
        .put(server.url("/admin/v3.21/main"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "apk.example.org")
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["url"],
        "https://apk.example.org/admin/v3.21/main/x86_64/hello-1.0-r0.apk"
    );
    server.stop().await;
}
