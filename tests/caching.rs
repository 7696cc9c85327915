//! Downloads through real HTTP: byte ranges as RFC 9110 defines them.

mod common;

use common::*;

const REPO: &str = "/admin/v3.21/main";

/// What a test looks at in an answer.
struct Answer {
    status: u16,
    content_range: Option<String>,
    content_length: Option<String>,
    body: Vec<u8>,
}

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = server.client.request(method, server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: response.status().as_u16(),
        content_range: header("content-range"),
        content_length: header("content-length"),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(server, reqwest::Method::GET, path, headers).await
}

/// Uploads and answers the download path.
async fn publish(server: &TestServer, bytes: Vec<u8>) -> String {
    let response = server.put_admin(REPO, bytes).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["path"].as_str().unwrap().to_string()
}

/// A server with one package; answers its path and bytes.
async fn one_package() -> (TestServer, String, Vec<u8>) {
    let server = TestServer::start().await;
    let bytes = package("hello", "1.0-r0", "x86_64");
    let path = publish(&server, bytes.clone()).await;
    (server, path, bytes)
}

fn assert_partial(answer: &Answer, bytes: &[u8], first: usize, last: usize) {
    assert_eq!(answer.status, 206);
    assert_eq!(
        answer.content_range.as_deref(),
        Some(format!("bytes {first}-{last}/{}", bytes.len()).as_str())
    );
    assert_eq!(
        answer.content_length.as_deref(),
        Some((last - first + 1).to_string().as_str())
    );
    assert_eq!(answer.body, &bytes[first..=last]);
}

fn assert_full(answer: &Answer, bytes: &[u8]) {
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_range, None);
    assert_eq!(
        answer.content_length.as_deref(),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(answer.body, bytes);
}

#[tokio::test]
async fn suffix_range_longer_than_the_file_serves_the_whole_file() {
    let (server, path, bytes) = one_package().await;
    let answer = get(&server, &path, &[("Range", "bytes=-99999")]).await;
    assert_partial(&answer, &bytes, 0, bytes.len() - 1);
    let answer = get(&server, &path, &[("Range", "bytes=-10")]).await;
    assert_partial(&answer, &bytes, bytes.len() - 10, bytes.len() - 1);
    server.stop().await;
}

#[tokio::test]
async fn range_with_last_before_first_is_ignored() {
    let (server, path, bytes) = one_package().await;
    let answer = get(&server, &path, &[("Range", "bytes=5-3")]).await;
    assert_full(&answer, &bytes);
    server.stop().await;
}

#[tokio::test]
async fn overlapping_ranges_are_served_by_the_first_satisfiable_one() {
    let (server, path, bytes) = one_package().await;
    let answer = get(&server, &path, &[("Range", "bytes=0-1,0-1")]).await;
    assert_partial(&answer, &bytes, 0, 1);
    let past = format!("bytes={}-,4-7, 0-1", bytes.len());
    let answer = get(&server, &path, &[("Range", &past)]).await;
    assert_partial(&answer, &bytes, 4, 7);
    server.stop().await;
}

#[tokio::test]
async fn range_end_beyond_any_integer_is_clipped_to_the_file() {
    let (server, path, bytes) = one_package().await;
    let answer = get(
        &server,
        &path,
        &[("Range", "bytes=0-99999999999999999999999")],
    )
    .await;
    assert_partial(&answer, &bytes, 0, bytes.len() - 1);
    let answer = get(&server, &path, &[("Range", "bytes=3-99999")]).await;
    assert_partial(&answer, &bytes, 3, bytes.len() - 1);
    server.stop().await;
}

#[tokio::test]
async fn range_entirely_past_the_end_is_unsatisfiable() {
    let (server, path, bytes) = one_package().await;
    for range in [
        format!("bytes={}-", bytes.len()),
        format!("bytes={}-", bytes.len() + 39),
        "bytes=99999999999999999999999-".to_string(),
        "bytes=-0".to_string(),
    ] {
        let answer = get(&server, &path, &[("Range", &range)]).await;
        assert_eq!(answer.status, 416, "{range}");
        assert_eq!(
            answer.content_range.as_deref(),
            Some(format!("bytes */{}", bytes.len()).as_str()),
            "{range}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn range_header_with_hundreds_of_ranges_is_ignored() {
    let (server, path, bytes) = one_package().await;
    let many = format!("bytes={}", vec!["0-1"; 300].join(","));
    let answer = get(&server, &path, &[("Range", &many)]).await;
    assert_full(&answer, &bytes);
    server.stop().await;
}

#[tokio::test]
async fn head_ignores_range() {
    let (server, path, bytes) = one_package().await;
    let answer = request(
        &server,
        reqwest::Method::HEAD,
        &path,
        &[("Range", "bytes=0-9")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_range, None);
    assert_eq!(
        answer.content_length.as_deref(),
        Some(bytes.len().to_string().as_str())
    );
    server.stop().await;
}
