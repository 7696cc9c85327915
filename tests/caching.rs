//! HTTP caching through real HTTP: `If-Modified-Since` never confirms a copy that may be
//! older than the current representation (dates have one-second resolution; changes are
//! known to the millisecond), the precedence of `If-None-Match`, and byte ranges as RFC
//! 9110 defines them.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alpine_registry::apk::builder::PackageBuilder;
use common::process::ChildServer;
use common::*;

const REPO: &str = "/admin/v3.21/main";
const INDEX: &str = "/admin/v3.21/main/x86_64/APKINDEX.tar.gz";
const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));
/// How often a test tries to make two changes land in one second before giving up.
const SAME_SECOND_ATTEMPTS: usize = 20;

/// What a test looks at in an answer.
struct Answer {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
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
        etag: header("etag"),
        last_modified: header("last-modified"),
        content_range: header("content-range"),
        content_length: header("content-length"),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(server, reqwest::Method::GET, path, headers).await
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls the clock until a new second starts, so that what follows has most of a second
/// to land in it (the server runs in this process, on the same clock).
async fn start_of_next_second() {
    let now = unix_secs();
    while unix_secs() == now {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Uploads and answers the download path.
async fn publish(server: &TestServer, bytes: Vec<u8>) -> String {
    let response = server.put_admin(REPO, bytes).await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["path"].as_str().unwrap().to_string()
}

/// The same name and version as `package`, with other bytes.
fn other_bytes(name: &str, version: &str, marker: usize) -> Vec<u8> {
    PackageBuilder::new(name, version, "x86_64")
        .file(
            &format!("usr/share/{name}/README"),
            format!("{name} {version} rebuilt {marker}\n").as_bytes(),
        )
        .build()
}

#[tokio::test]
async fn index_replaced_within_its_last_modified_second_is_sent_in_full() {
    let server = TestServer::start().await;
    for attempt in 0..SAME_SECOND_ATTEMPTS {
        start_of_next_second().await;
        publish(&server, package(&format!("a{attempt}"), "1.0-r0", "x86_64")).await;
        let first = get(&server, INDEX, &[]).await;
        publish(&server, package(&format!("b{attempt}"), "1.0-r0", "x86_64")).await;
        let second = get(&server, INDEX, &[]).await;
        assert_ne!(first.etag, second.etag, "the index changed");
        if first.last_modified != second.last_modified {
            continue;
        }
        // What apk, curl -z and wget -N send: the date of their copy, no entity tag.
        let since = first.last_modified.unwrap();
        let answer = get(&server, INDEX, &[("If-Modified-Since", &since)]).await;
        assert_eq!(
            answer.status, 200,
            "a copy dated {since} may be the older index"
        );
        assert_eq!(answer.etag, second.etag);
        assert_eq!(answer.body, second.body);
        // HEAD answers like GET.
        let head = request(
            &server,
            reqwest::Method::HEAD,
            INDEX,
            &[("If-Modified-Since", &since)],
        )
        .await;
        assert_eq!(head.status, 200);

        // Once that second has passed, the date sent is exact again.
        start_of_next_second().await;
        let third = get(&server, INDEX, &[]).await;
        assert_eq!(third.etag, second.etag);
        assert_ne!(third.last_modified.as_deref(), Some(since.as_str()));
        let since = third.last_modified.unwrap();
        let answer = get(&server, INDEX, &[("If-Modified-Since", &since)]).await;
        assert_eq!(answer.status, 304);
        server.stop().await;
        return;
    }
    panic!("no two publishes landed in one second in {SAME_SECOND_ATTEMPTS} attempts");
}

#[tokio::test]
async fn index_emptied_and_refilled_within_its_second_is_sent_in_full() {
    let server = TestServer::start().await;
    for attempt in 0..SAME_SECOND_ATTEMPTS {
        start_of_next_second().await;
        let path = publish(&server, package(&format!("a{attempt}"), "1.0-r0", "x86_64")).await;
        let first = get(&server, INDEX, &[]).await;
        assert_eq!(server.delete(&path, ADMIN).await.status(), 204);
        let emptied = get(&server, INDEX, &[]).await;
        assert_eq!(
            emptied.status, 200,
            "an emptied architecture keeps an index"
        );
        assert_ne!(emptied.etag, first.etag);
        let path = publish(&server, package(&format!("b{attempt}"), "1.0-r0", "x86_64")).await;
        let second = get(&server, INDEX, &[]).await;
        if first.last_modified != second.last_modified {
            assert_eq!(server.delete(&path, ADMIN).await.status(), 204);
            continue;
        }
        let since = first.last_modified.unwrap();
        let answer = get(&server, INDEX, &[("If-Modified-Since", &since)]).await;
        assert_eq!(
            answer.status, 200,
            "a copy dated {since} may be an earlier index"
        );
        assert_eq!(answer.etag, second.etag);
        server.stop().await;
        return;
    }
    panic!("no remove and publish landed in one second in {SAME_SECOND_ATTEMPTS} attempts");
}

#[tokio::test]
async fn package_uploaded_again_with_other_bytes_within_its_second_is_sent_in_full() {
    let server = TestServer::start().await;
    for attempt in 0..SAME_SECOND_ATTEMPTS {
        start_of_next_second().await;
        let name = format!("p{attempt}");
        let old_bytes = package(&name, "1.0-r0", "x86_64");
        let new_bytes = other_bytes(&name, "1.0-r0", attempt);
        assert_ne!(old_bytes, new_bytes);
        let path = publish(&server, old_bytes).await;
        let old = get(&server, &path, &[]).await;
        assert_eq!(server.delete(&path, ADMIN).await.status(), 204);
        assert_eq!(publish(&server, new_bytes.clone()).await, path);
        let new = get(&server, &path, &[]).await;
        assert_ne!(old.etag, new.etag);
        if old.last_modified != new.last_modified {
            continue;
        }
        let since = new.last_modified.clone().unwrap();
        let answer = get(&server, &path, &[("If-Modified-Since", &since)]).await;
        assert_eq!(
            answer.status, 200,
            "a copy dated {since} may be the old bytes"
        );
        assert_eq!(answer.etag, new.etag);
        assert_eq!(answer.body, new_bytes);
        // Resuming a download by date would splice old and new bytes: send it whole.
        let resumed = get(
            &server,
            &path,
            &[("If-Range", &since), ("Range", "bytes=10-")],
        )
        .await;
        assert_eq!(resumed.status, 200);
        assert_eq!(resumed.content_range, None);
        assert_eq!(resumed.body, new_bytes);
        // The entity tag is exact, so it still validates.
        let etag = new.etag.unwrap();
        let resumed = get(
            &server,
            &path,
            &[("If-Range", &etag), ("Range", "bytes=10-")],
        )
        .await;
        assert_eq!(resumed.status, 206);
        assert_eq!(resumed.body, &new_bytes[10..]);
        assert_eq!(
            get(&server, &path, &[("If-None-Match", &etag)])
                .await
                .status,
            304
        );
        server.stop().await;
        return;
    }
    panic!("no delete and upload landed in one second in {SAME_SECOND_ATTEMPTS} attempts");
}

/// apk's fetcher sends no `Last-Modified` back: its `If-Modified-Since` is the time its
/// cached copy was written, by the client's clock. A copy fetched early in a second is
/// older than a change later in that second although its date equals the change's second.
#[tokio::test]
async fn copy_fetched_earlier_in_the_second_of_a_change_is_sent_in_full() {
    let server = TestServer::start().await;
    publish(&server, package("hello", "1.0-r0", "x86_64")).await;
    for attempt in 0..SAME_SECOND_ATTEMPTS {
        start_of_next_second().await;
        // The client's copy, dated by its own clock when it arrived.
        let copy = get(&server, INDEX, &[]).await;
        let fetched = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs()));
        publish(&server, package(&format!("b{attempt}"), "1.0-r0", "x86_64")).await;
        if httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs())) != fetched {
            continue;
        }
        let answer = get(&server, INDEX, &[("If-Modified-Since", &fetched)]).await;
        assert_eq!(
            answer.status, 200,
            "the copy fetched at {fetched} lacks the package published after it"
        );
        assert_ne!(answer.etag, copy.etag);
        // A date after the change's second proves the copy current.
        start_of_next_second().await;
        let now = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs()));
        let answer = get(&server, INDEX, &[("If-Modified-Since", &now)]).await;
        assert_eq!(answer.status, 304);
        server.stop().await;
        return;
    }
    panic!("no fetch and publish landed in one second in {SAME_SECOND_ATTEMPTS} attempts");
}

#[tokio::test]
async fn if_modified_since_equal_to_last_modified_is_not_modified_once_its_second_has_passed() {
    let server = TestServer::start().await;
    start_of_next_second().await;
    let path = publish(&server, package("hello", "1.0-r0", "x86_64")).await;
    // Within the second of the change, the date sent is that second, which cannot
    // validate a copy (it may predate the change): the next request is answered in full.
    for target in [INDEX, path.as_str()] {
        let early = get(&server, target, &[]).await;
        let since = early.last_modified.unwrap();
        if since == httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix_secs())) {
            let answer = get(&server, target, &[("If-Modified-Since", &since)]).await;
            assert_eq!(answer.status, 200, "{target}");
        }
    }
    start_of_next_second().await;
    for target in [INDEX, path.as_str()] {
        let fresh = get(&server, target, &[]).await;
        let since = fresh.last_modified.unwrap();
        let answer = get(&server, target, &[("If-Modified-Since", &since)]).await;
        assert_eq!(answer.status, 304, "{target}");
        assert_eq!(answer.etag, fresh.etag, "{target}");
        assert!(answer.body.is_empty());
        let older = get(
            &server,
            target,
            &[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
        )
        .await;
        assert_eq!(older.status, 200, "{target}");
    }
    // A date If-Range matches the exact Last-Modified.
    let since = get(&server, &path, &[]).await.last_modified.unwrap();
    let resumed = get(
        &server,
        &path,
        &[("If-Range", &since), ("Range", "bytes=10-19")],
    )
    .await;
    assert_eq!(resumed.status, 206);

    // An index replaced in a later second is as cacheable as the first one.
    start_of_next_second().await;
    publish(&server, package("other", "1.0-r0", "x86_64")).await;
    start_of_next_second().await;
    let since = get(&server, INDEX, &[]).await.last_modified.unwrap();
    let answer = get(&server, INDEX, &[("If-Modified-Since", &since)]).await;
    assert_eq!(answer.status, 304);
    server.stop().await;
}

#[tokio::test]
async fn rebuilding_an_unchanged_index_keeps_its_last_modified() {
    let server = TestServer::start().await;
    publish(&server, package("hello", "1.0-r0", "x86_64")).await;
    start_of_next_second().await;
    let before = get(&server, INDEX, &[]).await;
    start_of_next_second().await;
    // What `reindex` and a crash recovery do: render again from the same rows.
    let store = &server.state.store;
    let repo = store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .remove(0);
    let owner = store.owner_by_name("admin").await.unwrap().unwrap();
    let generation = store.bump_generation(repo.id).await.unwrap();
    server
        .state
        .indexer
        .wait_built(&owner, &repo, generation)
        .await
        .unwrap();
    let after = get(&server, INDEX, &[]).await;
    assert_eq!(after.etag, before.etag, "same rows, same bytes");
    assert_eq!(after.last_modified, before.last_modified);
    let since = before.last_modified.unwrap();
    let answer = get(&server, INDEX, &[("If-Modified-Since", &since)]).await;
    assert_eq!(answer.status, 304);
    server.stop().await;
}

#[tokio::test]
async fn if_none_match_takes_precedence_over_if_modified_since() {
    let server = TestServer::start().await;
    let path = publish(&server, package("hello", "1.0-r0", "x86_64")).await;
    for target in [INDEX, path.as_str()] {
        let fresh = get(&server, target, &[]).await;
        let etag = fresh.etag.unwrap();
        let since = fresh.last_modified.unwrap();
        let answer = get(
            &server,
            target,
            &[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", &since),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{target}: a different entity tag wins");
        assert_eq!(answer.body, fresh.body);
        let answer = get(
            &server,
            target,
            &[
                ("If-None-Match", &etag),
                ("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"),
            ],
        )
        .await;
        assert_eq!(answer.status, 304, "{target}: a matching entity tag wins");
    }
    server.stop().await;
}

/// `If-Match` and `If-Unmodified-Since` on GET and HEAD are preconditions (RFC 9110
/// 13.1.1, 13.1.4): 412 when they do not hold, for indexes and packages alike, also for
/// answers that would be served from memory.
#[tokio::test]
async fn failed_preconditions_are_412() {
    let server = TestServer::start().await;
    let path = publish(&server, package("hello", "1.0-r0", "x86_64")).await;
    for target in [INDEX, path.as_str()] {
        let fresh = get(&server, target, &[]).await;
        // Twice, so that the second answer could come from memory.
        let again = get(&server, target, &[]).await;
        assert_eq!(again.status, 200);
        let etag = fresh.etag.unwrap();
        // Later than any change (the Last-Modified of an answer within the second of the
        // change is not yet a date that validates).
        let since = "Fri, 01 Jan 2100 00:00:00 GMT";
        for (headers, status) in [
            (vec![("If-Match", etag.as_str())], 200),
            (vec![("If-Match", "*")], 200),
            (vec![("If-Match", "\"other\"")], 412),
            (vec![("If-Unmodified-Since", since)], 200),
            (
                vec![("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
                412,
            ),
            (
                vec![("If-Match", "\"other\""), ("If-None-Match", etag.as_str())],
                412,
            ),
        ] {
            let answer = get(&server, target, &headers).await;
            assert_eq!(answer.status, status, "{target} {headers:?}");
            if status == 200 {
                assert_eq!(answer.body, fresh.body);
            }
        }
        let head = server
            .client
            .head(server.url(target))
            .header("If-Match", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 412, "HEAD {target}");
    }
    server.stop().await;
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

/// Downloads are answered from memory between changes; a change another process commits
/// to the same database (the CLI making an owner private, removing a repository) reaches
/// them within moments, and once seen is never undone.
#[test]
fn changes_by_another_process_reach_the_download_path() {
    let server = ChildServer::start(ADMIN_TOKEN, &[]);
    let data = server.dir.path().join("data");
    let client = reqwest::blocking::Client::new();
    let put = client
        .put(server.url(REPO))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .body(package("hello", "1.0-r0", "x86_64"))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    let file = "/admin/v3.21/main/x86_64/hello-1.0-r0.apk";
    let status = |path: &str| {
        client
            .get(server.url(path))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Read twice: the second answer comes from memory.
    for _ in 0..2 {
        assert_eq!(status(INDEX), 200);
        assert_eq!(status(file), 200);
    }
    // Waits until every path answers `expected`, then checks it stays so.
    let settle = |expected: u16, what: &str| {
        let started = std::time::Instant::now();
        while [INDEX, file].iter().any(|p| status(p) != expected) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: still not {expected} after 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..20 {
            assert_eq!(
                (status(INDEX), status(file)),
                (expected, expected),
                "{what}"
            );
        }
        started.elapsed()
    };
    run_ok(cli(&data).args(["owner", "visibility", "admin", "private"]));
    let took = settle(401, "after the owner became private");
    eprintln!("the server saw the change {took:?} after the CLI committed it");
    run_ok(cli(&data).args(["owner", "visibility", "admin", "public"]));
    settle(200, "after the owner became public again");
    run_ok(cli(&data).args(["repository", "remove", "admin/v3.21/main"]));
    settle(404, "after the repository was removed");
}

/// Downloads answered again from memory (`http::ready`) answer exactly what the full way
/// does, and never outlive a change: a publish, a delete, an owner made private.
#[tokio::test]
async fn answers_kept_in_memory_follow_every_change() {
    let server = TestServer::start().await;
    let first = package("hello", "1.0-r0", "x86_64");
    let path = publish(&server, first.clone()).await;
    // Answers are kept once their Last-Modified is final, after the second of the change.
    start_of_next_second().await;
    let full = get(&server, &path, &[]).await;
    assert_full(&full, &first);
    let index = get(&server, INDEX, &[]).await;
    assert_eq!(index.status, 200);
    for _ in 0..3 {
        let again = get(&server, &path, &[]).await;
        assert_full(&again, &first);
        assert_eq!(
            (&again.etag, &again.last_modified),
            (&full.etag, &full.last_modified)
        );
        let again = get(&server, INDEX, &[]).await;
        assert_eq!((again.status, &again.body), (200, &index.body));
        assert_eq!(again.etag, index.etag);
    }
    let etag = index.etag.clone().unwrap();
    let date = index.last_modified.clone().unwrap();
    let answer = get(&server, INDEX, &[("If-None-Match", &etag)]).await;
    assert_eq!((answer.status, answer.body.len()), (304, 0));
    assert_eq!(answer.etag.as_deref(), Some(etag.as_str()));
    let answer = get(&server, INDEX, &[("If-Modified-Since", &date)]).await;
    assert_eq!(answer.status, 304);
    let answer = get(
        &server,
        INDEX,
        &[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
    )
    .await;
    assert_eq!((answer.status, &answer.body), (200, &index.body));
    let head = request(&server, reqwest::Method::HEAD, &path, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.content_length.as_deref(),
        Some(first.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // A publish changes the index at once.
    publish(&server, package("other", "2.0-r0", "x86_64")).await;
    let changed = get(&server, INDEX, &[("If-None-Match", &etag)]).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.etag.as_deref(), Some(etag.as_str()));
    assert_ne!(changed.body, index.body);

    // A delete makes the file go at once.
    assert_eq!(server.delete(&path, ADMIN).await.status(), 204);
    assert_eq!(get(&server, &path, &[]).await.status, 404);

    // An owner made private is no longer served to anyone without credentials.
    start_of_next_second().await;
    assert_eq!(get(&server, INDEX, &[]).await.status, 200);
    assert_eq!(get(&server, INDEX, &[]).await.status, 200);
    alpine_registry::registry::accounts::set_visibility(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "admin",
        true,
    )
    .await
    .unwrap();
    let hidden = get(&server, INDEX, &[]).await;
    assert!(
        hidden.status == 401 || hidden.status == 404,
        "{}",
        hidden.status
    );
    let hidden = get(
        &server,
        INDEX,
        &[("If-None-Match", changed.etag.as_deref().unwrap())],
    )
    .await;
    assert!(
        hidden.status == 401 || hidden.status == 404,
        "{}",
        hidden.status
    );
}
