//! The JSON API under /api/v1 through real HTTP: the catalog and its access rules, search
//! pagination, bad parameters, the administration for site administrators, and the
//! OpenAPI document. Runs on PostgreSQL too when ALPINE_REGISTRY_TEST_POSTGRES_URL is set.

mod common;

use std::collections::{BTreeSet, HashSet};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::store::Role;
use common::*;
use serde_json::{json, Value};

/// Who asks: nobody, or a user name with a secret (token or password).
type Auth<'a> = Option<(&'a str, &'a str)>;

const ANONYMOUS: Auth<'static> = None;

/// Public org `acme` and private org `secret`, each with packages; `insider` (token in
/// the first place of the answer) reads `secret`, `outsider` (second) does not.
async fn setup(server: &TestServer) -> (String, String) {
    for (name, private) in [("acme", false), ("secret", true)] {
        server
            .state
            .store
            .create_owner(name, private, true, None)
            .await
            .unwrap();
    }
    for (path, builder) in [
        (
            "/acme/v3.21/main",
            PackageBuilder::new("libfoo", "1.2-r0", "x86_64")
                .field("provides", "so:libfoo.so.1=1.2")
                .field("maintainer", "Jane Doe <jane@example.org>"),
        ),
        (
            "/acme/v3.21/main",
            PackageBuilder::new("libfoo", "1.10-r0", "x86_64")
                .field("provides", "so:libfoo.so.1=1.10")
                .field("maintainer", "Jane Doe <jane@example.org>"),
        ),
        (
            "/acme/edge/community",
            PackageBuilder::new("libfoo", "1.10-r0", "aarch64"),
        ),
        (
            "/acme/v3.21/main",
            PackageBuilder::new("foo-tool", "2.0-r1", "x86_64")
                .field("depend", "so:libfoo.so.1 missing>=3")
                .field("provider_priority", "10"),
        ),
        (
            "/acme/v3.21/main",
            PackageBuilder::new("foo-doc", "2.0-r1", "noarch"),
        ),
        (
            "/secret/v3.21/main",
            PackageBuilder::new("libfoo-secret", "1.0-r0", "x86_64"),
        ),
        (
            "/secret/v3.21/main",
            PackageBuilder::new("hidden", "1.0-r0", "x86_64"),
        ),
    ] {
        let response = server.put_admin(path, builder.build()).await;
        assert_eq!(response.status(), 201, "PUT {path}");
    }
    let insider = server
        .user_with_token("insider", Role::Read, None, None)
        .await;
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "secret",
        "insider",
        Role::Read,
    )
    .await
    .unwrap();
    let outsider = server
        .user_with_token("outsider", Role::Admin, None, None)
        .await;
    (insider, outsider)
}

async fn get(server: &TestServer, path: &str, auth: Auth<'_>) -> (u16, Value) {
    let response = server.get(path, auth).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some((user, secret)) = auth {
        request = request.basic_auth(user, Some(secret));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn admin() -> Auth<'static> {
    Some(("admin", ADMIN_TOKEN))
}

/// `owner/name` of every item of a search page.
fn found(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["owner"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// The error shape of every refusal: `{"error": reason phrase, "message": words}`.
fn assert_error(status: u16, body: &Value, expected: u16, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert!(
        body["error"].is_string() && !body["message"].as_str().unwrap_or("").is_empty(),
        "{context}: error shape {body}"
    );
}

#[tokio::test]
async fn catalog_routes_show_owners_packages_and_indexes() {
    let server = TestServer::start().await;
    setup(&server).await;

    let (status, owners) = get(&server, "/api/v1/owners", ANONYMOUS).await;
    assert_eq!(status, 200);
    let names: Vec<_> = owners
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "admin", "insider", "outsider"]);
    assert_eq!(owners[0]["packages"], 5);

    let (status, acme) = get(&server, "/api/v1/owners/acme", ANONYMOUS).await;
    assert_eq!(status, 200);
    let key_name = acme["key"]["file_name"].as_str().unwrap().to_string();
    let key = server.get("/acme/key", None).await;
    assert_eq!(
        key.headers()["content-disposition"],
        format!("attachment; filename=\"{key_name}\"").as_str(),
        "the key file name is the one apk needs"
    );
    assert_eq!(acme["key"]["download_path"], "/acme/key");
    assert_eq!(
        acme["key"]["fingerprint_sha256"].as_str().unwrap().len(),
        64
    );

    let (status, repositories) = get(&server, "/api/v1/owners/acme/repositories", ANONYMOUS).await;
    assert_eq!(status, 200);
    let places: Vec<_> = repositories
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{} {}",
                r["branch"].as_str().unwrap(),
                r["repository"].as_str().unwrap(),
                r["arches"]
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            "edge/community [\"aarch64\"]",
            "v3.21/main [\"noarch\",\"x86_64\"]"
        ]
    );

    let (status, libfoo) = get(&server, "/api/v1/owners/acme/packages/libfoo", ANONYMOUS).await;
    assert_eq!(status, 200);
    assert_eq!(libfoo["versions"], json!(["1.10-r0", "1.2-r0"]));
    assert_eq!(libfoo["required_by"], json!(["foo-tool"]));
    let file = &libfoo["files"][1];
    assert_eq!(file["branch"], "v3.21");
    assert_eq!(file["arch"], "x86_64");
    assert_eq!(file["maintainer"], "Jane Doe <jane@example.org>");
    assert_eq!(file["provides"], json!(["so:libfoo.so.1=1.10"]));
    for field in [
        "origin",
        "commit",
        "build_time",
        "checksum",
        "sha256",
        "size",
        "installed_size",
        "license",
        "url",
        "description",
        "depends",
        "install_if",
        "provider_priority",
        "uploaded_ms",
    ] {
        assert!(file.get(field).is_some(), "{field} in {file}");
    }
    // The file at download_path is the one described.
    let download = server
        .get(file["download_path"].as_str().unwrap(), None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(json!(download.len()), file["size"]);

    let (_, tool) = get(&server, "/api/v1/owners/acme/packages/foo-tool", ANONYMOUS).await;
    assert_eq!(tool["files"][0]["provider_priority"], 10);
    assert_eq!(
        tool["depends"],
        json!([
            {"text": "so:libfoo.so.1", "target": {"owner": "acme", "name": "libfoo"}},
            {"text": "missing>=3", "target": null}
        ])
    );

    let (status, indexes) = get(&server, "/api/v1/owners/acme/index/v3.21/main", ANONYMOUS).await;
    assert_eq!(status, 200);
    assert_eq!(indexes[0]["arch"], "x86_64");
    assert_eq!(indexes[0]["entries"], 4);
    assert_eq!(
        indexes[0]["signatures"],
        json!([
            format!(".SIGN.RSA256.{key_name}"),
            format!(".SIGN.RSA.{key_name}")
        ])
    );
    let served = server
        .get("/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(json!(served.len()), indexes[0]["size"]);

    let (status, index) = get(
        &server,
        "/api/v1/owners/acme/index/v3.21/main/x86_64",
        ANONYMOUS,
    )
    .await;
    assert_eq!(status, 200);
    let listed: Vec<_> = index["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    // What the served APKINDEX lists, the same files.
    let text = server
        .verified_index("acme", "/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    let mut in_index: Vec<_> = text
        .split("\n\n")
        .filter(|s| !s.is_empty())
        .map(|stanza| {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap()
                    .to_string()
            };
            format!("{}-{}", field("P:"), field("V:"))
        })
        .collect();
    in_index.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, in_index);
    assert_eq!(
        listed,
        [
            "foo-doc-2.0-r1",
            "foo-tool-2.0-r1",
            "libfoo-1.10-r0",
            "libfoo-1.2-r0"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_private_owner_is_invisible_to_anonymous_callers_and_non_members() {
    let server = TestServer::start().await;
    let (insider, outsider) = setup(&server).await;

    for (who, auth, refusal) in [
        ("anonymous", ANONYMOUS, 401),
        ("outsider", Some(("outsider", outsider.as_str())), 404),
    ] {
        let (_, owners) = get(&server, "/api/v1/owners", auth).await;
        assert!(
            !owners.to_string().contains("secret"),
            "{who} lists the private owner: {owners}"
        );
        for query in ["", "q=secret", "q=hidden", "owner=secret", "q=*", "q=lib*"] {
            let response = server.get(&format!("/api/v1/packages?{query}"), auth).await;
            assert_eq!(response.status(), 200, "{who} {query}");
            let header_total: u64 = response.headers()["x-total-count"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let page: Value = response.json().await.unwrap();
            assert!(
                found(&page).iter().all(|p| !p.starts_with("secret/")),
                "{who} {query}: {page}"
            );
            let visible = found(&page).len() as u64;
            assert_eq!(page["total"], json!(visible), "{who} {query} total");
            assert_eq!(header_total, visible, "{who} {query} X-Total-Count");
        }
        for path in [
            "/api/v1/owners/secret",
            "/api/v1/owners/secret/repositories",
            "/api/v1/owners/secret/packages/hidden",
            "/api/v1/owners/secret/index/v3.21/main",
            "/api/v1/owners/secret/index/v3.21/main/x86_64",
        ] {
            let (status, body) = get(&server, path, auth).await;
            assert_error(status, &body, refusal, &format!("{who} GET {path}"));
            // Exactly what an owner that does not exist answers.
            let ghost = path.replace("secret", "nosuchowner");
            let (ghost_status, ghost_body) = get(&server, &ghost, auth).await;
            assert_eq!(ghost_status, status, "{who} {ghost}");
            assert_eq!(
                ghost_body["message"]
                    .as_str()
                    .unwrap()
                    .replace("nosuchowner", "secret"),
                body["message"].as_str().unwrap(),
                "{who}: the answers tell nothing apart"
            );
        }
    }

    // A member sees it everywhere.
    let auth = Some(("insider", insider.as_str()));
    let (_, owners) = get(&server, "/api/v1/owners", auth).await;
    assert!(owners.to_string().contains("\"secret\""));
    let (_, page) = get(&server, "/api/v1/packages?owner=secret", auth).await;
    assert_eq!(found(&page), ["secret/hidden", "secret/libfoo-secret"]);
    assert_eq!(page["total"], 2);
    let (_, page) = get(&server, "/api/v1/packages?q=lib", auth).await;
    assert_eq!(found(&page), ["acme/libfoo", "secret/libfoo-secret"]);
    for path in [
        "/api/v1/owners/secret",
        "/api/v1/owners/secret/repositories",
        "/api/v1/owners/secret/packages/hidden",
        "/api/v1/owners/secret/index/v3.21/main",
        "/api/v1/owners/secret/index/v3.21/main/x86_64",
    ] {
        assert_eq!(get(&server, path, auth).await.0, 200, "insider GET {path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_anonymous_reads_the_catalog_asks_for_credentials() {
    let server = TestServer::start_with(|config| config.auth.anonymous_read = false).await;
    let (insider, _) = setup(&server).await;
    for path in [
        "/api/v1/owners",
        "/api/v1/packages?q=foo",
        "/api/v1/owners/acme",
        "/api/v1/owners/acme/packages/libfoo",
        "/api/v1/owners/acme/index/v3.21/main/x86_64",
    ] {
        let response = server.get(path, ANONYMOUS).await;
        assert_eq!(response.status(), 401, "{path}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{path}"
        );
        let (status, _) = get(&server, path, Some(("insider", insider.as_str()))).await;
        assert_eq!(status, 200, "{path} with credentials");
    }
    server.stop().await;
}

/// Follows `Link: <...>; rel="next"` from `first`; returns every item in order and the
/// totals each page announced. `between` runs after the first page.
async fn walk<F, Fut>(
    server: &TestServer,
    first: &str,
    auth: Auth<'_>,
    between: F,
) -> (Vec<String>, Vec<u64>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut url = server.url(first);
    let mut items = Vec::new();
    let mut totals = Vec::new();
    let mut between = Some(between);
    for _ in 0..100 {
        let mut request = server.client.get(&url);
        if let Some((user, secret)) = auth {
            request = request.basic_auth(user, Some(secret));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let link = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let header_total: u64 = response.headers()["x-total-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["total"], json!(header_total));
        totals.push(header_total);
        items.extend(found(&page));
        if let Some(between) = between.take() {
            between().await;
        }
        match link {
            Some(link) => {
                assert!(page["next"].is_string(), "a Link header and a next cursor");
                let target = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("Link header {link:?}"));
                assert!(
                    target.starts_with(&server.url("/api/v1/packages?")),
                    "{target}"
                );
                url = target.to_string();
            }
            None => {
                assert!(page["next"].is_null(), "no Link header on the last page");
                return (items, totals);
            }
        }
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn search_pages_give_every_package_once_even_while_packages_are_added() {
    let server = TestServer::start().await;
    server
        .state
        .store
        .create_owner("acme", false, true, None)
        .await
        .unwrap();
    for i in 0..11 {
        let name = format!("pkg{i:02}");
        let response = server
            .put_admin("/acme/v1/main", package(&name, "1.0-r0", "x86_64"))
            .await;
        assert_eq!(response.status(), 201);
    }
    let all: Vec<String> = (0..11).map(|i| format!("acme/pkg{i:02}")).collect();

    // Every page size walks the same list, filters kept along the way.
    for limit in [1, 3, 4, 11, 100] {
        let (items, totals) = walk(
            &server,
            &format!("/api/v1/packages?q=pkg&arch=x86_64&limit={limit}"),
            ANONYMOUS,
            || async {},
        )
        .await;
        assert_eq!(items, all, "limit {limit}");
        assert!(totals.iter().all(|&t| t == 11));
        assert_eq!(totals.len(), 11_usize.div_ceil(limit));
    }
    let (status, page) = get(&server, "/api/v1/packages?q=pkg", ANONYMOUS).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        11,
        "default limit 50"
    );
    // HEAD gives the headers alone (curl -I).
    let head = server
        .client
        .head(server.url("/api/v1/packages?q=pkg&limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-total-count"], "11");
    assert!(head.headers()["link"]
        .to_str()
        .unwrap()
        .ends_with("; rel=\"next\""));

    // Packages published while walking: one sorting before the position reached, one
    // after it. Nothing seen is repeated, nothing that was there is missed, and the one
    // after the position is found.
    let (items, totals) = walk(
        &server,
        "/api/v1/packages?q=pkg&limit=4",
        ANONYMOUS,
        || async {
            for name in ["pkg00a", "pkg09a"] {
                let response = server
                    .put_admin("/acme/v1/main", package(name, "1.0-r0", "x86_64"))
                    .await;
                assert_eq!(response.status(), 201);
            }
        },
    )
    .await;
    let unique: HashSet<&String> = items.iter().collect();
    assert_eq!(unique.len(), items.len(), "no repeats: {items:?}");
    for expected in &all {
        assert!(items.contains(expected), "{expected} missed: {items:?}");
    }
    assert!(items.contains(&"acme/pkg09a".to_string()));
    assert!(!items.contains(&"acme/pkg00a".to_string()));
    assert_eq!(totals[0], 11);
    assert!(totals[1..].iter().all(|&t| t == 13));
    server.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_refused_with_a_message() {
    let server = TestServer::start().await;
    setup(&server).await;
    for (path, words) in [
        ("/api/v1/packages?limit=0", "limit"),
        ("/api/v1/packages?limit=101", "limit"),
        ("/api/v1/packages?limit=ten", "limit"),
        ("/api/v1/packages?limit=-1", "limit"),
        ("/api/v1/packages?after=not-a-cursor!", "cursor"),
        ("/api/v1/packages?arch=X86", "architecture"),
        ("/api/v1/packages?branch=..", "branch"),
        ("/api/v1/packages?owner=-", "owner"),
        ("/api/v1/packages?q=%5B*", "pattern"),
        ("/api/v1/packages?sort=name", "sort"),
        ("/api/v1/owners/-", "owner"),
        ("/api/v1/owners/acme/packages/..bad", "package name"),
        ("/api/v1/owners/acme/index/v3.21/main/X86", "architecture"),
        ("/api/v1/admin/tokens/abc", "id"),
        ("/api/v1/admin/owners/acme?force=maybe", "force"),
    ] {
        let method = if path.starts_with("/api/v1/admin/") {
            reqwest::Method::DELETE
        } else {
            reqwest::Method::GET
        };
        let (status, body) = send(&server, method, path, admin(), None).await;
        assert_error(status, &body, 400, path);
        assert_eq!(body["error"], "Bad Request");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{path}: {message:?} names {words:?}"
        );
    }
    for (path, body, words) in [
        ("/api/v1/admin/users", json!({"nam": "x"}), "nam"),
        (
            "/api/v1/admin/users",
            json!({"name": "bad name"}),
            "invalid owner",
        ),
        ("/api/v1/admin/owners", json!({"name": "api"}), "reserved"),
        (
            "/api/v1/admin/tokens",
            json!({"user": "insider", "scope": "root"}),
            "scope",
        ),
        (
            "/api/v1/admin/tokens",
            json!({"user": "insider", "scope": "read", "expires_in": "3"}),
            "unit",
        ),
    ] {
        let (status, answer) = send(
            &server,
            reqwest::Method::POST,
            path,
            admin(),
            Some(body.clone()),
        )
        .await;
        assert_error(status, &answer, 400, &format!("POST {path} {body}"));
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{body}: {message:?} names {words:?}"
        );
    }
    // A body that is not declared JSON, and one that is not JSON; with a Bearer token.
    for (content_type, body, expected) in [
        (None, r#"{"name": "x"}"#, 415),
        (Some("application/json"), "{not json", 400),
    ] {
        let mut request = server
            .client
            .post(server.url("/api/v1/admin/owners"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_error(status, &answer, expected, body);
    }
    server.stop().await;
}

/// A JSON body past `limits.max_json_bytes` is refused with 413 in the usual shape,
/// whether its length is declared or it streams in chunks; the connection ends there.
#[tokio::test]
async fn json_bodies_over_the_limit_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_json_bytes = 1024).await;
    let big = json!({"name": "x".repeat(2000)}).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(100).map(|c| Ok(c.to_vec())).collect();
    for body in [
        reqwest::Body::from(big.clone()),
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    ] {
        let response = server
            .client
            .post(server.url("/api/v1/admin/owners"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["connection"], "close");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_error(status, &answer, 413, "a 2 KB JSON body");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("limits.max_json_bytes"), "{message}");
    }
    // Under the limit, the same request goes through.
    let (status, answer) = send(
        &server,
        reqwest::Method::POST,
        "/api/v1/admin/owners",
        admin(),
        Some(json!({"name": "small"})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    server.stop().await;
}

/// Every administration route with a body it accepts, from the OpenAPI document.
async fn admin_routes(server: &TestServer) -> Vec<(reqwest::Method, String, Option<Value>)> {
    let (_, document) = get(server, "/api/v1/openapi.json", ANONYMOUS).await;
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/admin/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{owner}", "acme")
                .replace("{user}", "insider")
                .replace("{id}", "1");
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/v1/admin/users") => Some(json!({"name": "newbie"})),
                ("post", "/api/v1/admin/owners") => Some(json!({"name": "neworg"})),
                ("post", "/api/v1/admin/tokens") => {
                    Some(json!({"user": "insider", "scope": "read"}))
                }
                ("put", p) if p.ends_with("/password") => Some(json!({"password": "pw"})),
                ("put", p) if p.ends_with("/visibility") => Some(json!({"visibility": "private"})),
                ("put", p) if p.contains("/members/") => Some(json!({"role": "read"})),
                _ => None,
            };
            routes.push((method.to_uppercase().parse().unwrap(), concrete, body));
        }
    }
    routes
}

#[tokio::test]
async fn administration_is_refused_to_everyone_but_site_administrators() {
    let server = TestServer::start().await;
    let (insider, outsider) = setup(&server).await;
    // A site administrator's token of scope read, and one limited to an owner.
    let admin_read = server
        .user_with_token("admin", Role::Read, None, None)
        .await;
    let admin_limited = server
        .user_with_token("admin", Role::Admin, Some("acme"), None)
        .await;
    let routes = admin_routes(&server).await;
    assert_eq!(routes.len(), 15, "{routes:?}");
    for (method, path, body) in &routes {
        for (who, auth, refusal) in [
            ("anonymous", ANONYMOUS, 401),
            ("member", Some(("insider", insider.as_str())), 403),
            (
                "user with an admin token",
                Some(("outsider", outsider.as_str())),
                403,
            ),
            (
                "admin, read token",
                Some(("admin", admin_read.as_str())),
                403,
            ),
            (
                "admin, owner token",
                Some(("admin", admin_limited.as_str())),
                403,
            ),
        ] {
            let (status, answer) = send(&server, method.clone(), path, auth, body.clone()).await;
            assert_error(status, &answer, refusal, &format!("{who}: {method} {path}"));
        }
    }
    // Nothing was changed by the refused calls.
    let (_, users) = get(&server, "/api/v1/admin/users", admin()).await;
    assert!(!users.to_string().contains("newbie"));
    let (_, owners) = get(&server, "/api/v1/admin/owners", admin()).await;
    assert!(!owners.to_string().contains("neworg"));
    server.stop().await;
}

#[tokio::test]
async fn administration_does_what_the_command_line_does() {
    let server = TestServer::start().await;
    setup(&server).await;
    use reqwest::Method;

    // A user with a password, who signs in with it.
    let (status, created) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        admin(),
        Some(json!({"name": "carol", "password": "s3cret pass"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created,
        json!({"name": "carol", "is_admin": false, "has_password": true, "namespace": "carol"})
    );
    let carol = Some(("carol", "s3cret pass"));
    assert_eq!(get(&server, "/api/v1/owners", carol).await.0, 200);
    let (status, again) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        admin(),
        Some(json!({"name": "Carol"})),
    )
    .await;
    assert_error(status, &again, 409, "a name taken in another case");
    let (_, users) = get(&server, "/api/v1/admin/users", admin()).await;
    let carol_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "carol")
        .unwrap();
    assert_eq!(carol_row["has_password"], true);

    // A private organisation, and carol reading it through a token limited to it.
    let (status, org) = send(
        &server,
        Method::POST,
        "/api/v1/admin/owners",
        admin(),
        Some(json!({"name": "labs", "private": true, "org": true})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    assert_eq!(org["is_private"], true);
    let response = server
        .put_admin("/labs/edge/main", package("labtool", "0.1-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/owners/labs/members/carol",
        admin(),
        Some(json!({"role": "write"})),
    )
    .await;
    assert_eq!(status, 204);
    let (_, members) = get(&server, "/api/v1/admin/owners/labs/members", admin()).await;
    assert_eq!(
        members,
        json!([{"user_id": members[0]["user_id"], "user_name": "carol", "role": "write"}])
    );
    let (status, token) = send(
        &server,
        Method::POST,
        "/api/v1/admin/tokens",
        admin(),
        Some(json!({
            "user": "carol", "scope": "read", "owner": "labs", "expires_in": "1d", "label": "ci"
        })),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let secret = token["secret"].as_str().unwrap().to_string();
    assert_eq!(token["scope"], "read");
    assert_eq!(token["owner_name"], "labs");
    assert_eq!(token["label"], "ci");
    assert!(token["expires_at"].as_i64().unwrap() > unix_now() + 86_000);
    assert!(token.get("token_hash").is_none(), "never the hash");
    let with_token = Some(("carol", secret.as_str()));
    let (status, page) = get(&server, "/api/v1/packages?owner=labs", with_token).await;
    assert_eq!(status, 200);
    assert_eq!(found(&page), ["labs/labtool"]);
    let (_, tokens) = get(&server, "/api/v1/admin/tokens?user=carol", admin()).await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    assert!(
        !tokens.to_string().contains(&secret),
        "never the secret again"
    );
    let id = token["id"].as_i64().unwrap();
    let (status, _) = send(
        &server,
        Method::DELETE,
        &format!("/api/v1/admin/tokens/{id}"),
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/api/v1/owners", with_token).await.0, 401);
    let (status, body) = send(
        &server,
        Method::DELETE,
        &format!("/api/v1/admin/tokens/{id}"),
        admin(),
        None,
    )
    .await;
    assert_error(status, &body, 404, "revoked twice");

    // Visibility: public, then anyone reads it.
    assert_eq!(get(&server, "/api/v1/owners/labs", ANONYMOUS).await.0, 401);
    let (status, owner) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/owners/labs/visibility",
        admin(),
        Some(json!({"visibility": "public"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        owner,
        json!({"name": "labs", "is_private": false, "is_org": true})
    );
    assert_eq!(get(&server, "/api/v1/owners/labs", ANONYMOUS).await.0, 200);

    // Members removed, passwords removed.
    let (status, _) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/owners/labs/members/carol",
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, members) = get(&server, "/api/v1/admin/owners/labs/members", admin()).await;
    assert_eq!(members, json!([]));
    let (status, _) = send(
        &server,
        Method::PUT,
        "/api/v1/admin/users/carol/password",
        admin(),
        Some(json!({"password": null})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/api/v1/owners", carol).await.0, 401);

    // Deleting: refused while an owner holds repositories, then forced.
    let (status, body) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/owners/labs",
        admin(),
        None,
    )
    .await;
    assert_error(status, &body, 409, "owner with repositories");
    let (status, held) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/owners/labs?force=true",
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(held["packages"], 1);
    assert_eq!(get(&server, "/api/v1/owners/labs", admin()).await.0, 404);
    let (status, deleted) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/users/carol",
        admin(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"name": "carol", "namespace_deleted": true}));
    let (status, body) = send(
        &server,
        Method::DELETE,
        "/api/v1/admin/users/carol",
        admin(),
        None,
    )
    .await;
    assert_error(status, &body, 404, "deleted twice");
    server.stop().await;
}

/// A password change names the new password or null: `{}` (a field name mistyped, or
/// left out) used to remove the password as null does.
#[tokio::test]
async fn a_password_change_without_the_password_field_is_refused() {
    let server = TestServer::start().await;
    use reqwest::Method;
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/v1/admin/users",
        admin(),
        Some(json!({"name": "carol", "password": "first password"})),
    )
    .await;
    assert_eq!(status, 201);
    let path = "/api/v1/admin/users/carol/password";
    for body in [json!({}), json!({"pasword": "typo"})] {
        let (status, answer) = send(&server, Method::PUT, path, admin(), Some(body.clone())).await;
        assert_error(status, &answer, 400, &format!("PUT {body}"));
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("password"), "{body}: {message}");
    }
    let carol = Some(("carol", "first password"));
    assert_eq!(
        get(&server, "/api/v1/owners", carol).await.0,
        200,
        "unchanged"
    );
    let (status, _) = send(
        &server,
        Method::PUT,
        path,
        admin(),
        Some(json!({"password": null})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&server, "/api/v1/owners", carol).await.0,
        401,
        "removed"
    );
    let (_, document) = get(&server, "/api/v1/openapi.json", ANONYMOUS).await;
    assert_eq!(
        document["components"]["schemas"]["NewPassword"]["required"],
        json!(["password"])
    );
    server.stop().await;
}

/// Creating a user or an owner answers before the namespace's signing key exists (a
/// 4096-bit key takes seconds, 12 under load); the key is made in the background without
/// anything asking for it, and a publish that comes first waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_owners_are_created_before_their_key_is_generated() {
    use reqwest::Method;
    let server = TestServer::start_with(|c| c.signing.key_bits = 4096).await;
    for (path, body, owner) in [
        ("/api/v1/admin/users", json!({"name": "carol"}), "carol"),
        (
            "/api/v1/admin/owners",
            json!({"name": "labs", "org": true}),
            "labs",
        ),
    ] {
        let (status, answer) = send(&server, Method::POST, path, admin(), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        let record = server
            .state
            .store
            .owner_by_name(owner)
            .await
            .unwrap()
            .unwrap();
        assert!(
            server
                .state
                .store
                .signing_key(record.id)
                .await
                .unwrap()
                .is_none(),
            "{path} answered after generating {owner}'s key"
        );
    }
    // A publish into labs now waits for its key, and its index is signed with it.
    let response = server
        .put_admin("/labs/edge/main", package("early", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let text = server
        .verified_index("labs", "/labs/edge/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(common::index_names(&text), ["early"]);
    // Nobody asks for carol's key: it comes all the same.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (status, carol) = get(&server, "/api/v1/owners/carol", admin()).await;
        assert_eq!(status, 200);
        if let Some(name) = carol["key"]["file_name"].as_str() {
            assert!(name.starts_with("carol-"), "{carol}");
            assert_eq!(carol["key"]["bits"], 4096);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol's key was not generated in the background"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// The OpenAPI document lists the answers every request may get from the layers it goes
/// through, with their headers: it used to list no 415, 429 or 503 anywhere, and no
/// pattern for names, so a client generated from it (or schemathesis) met answers the
/// document said could not come.
#[tokio::test]
async fn the_openapi_document_lists_the_answers_of_every_layer_and_the_rules_of_names() {
    use alpine_registry::names::NameRule;
    let server = TestServer::start().await;
    let (_, document) = get(&server, "/api/v1/openapi.json", ANONYMOUS).await;
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let id = operation["operationId"].as_str().unwrap();
            let responses = &operation["responses"];
            let header =
                |status: &str, name: &str| responses[status]["headers"].get(name).is_some();
            if !["openapi", "healthz", "readyz"].contains(&id) {
                assert!(header("401", "WWW-Authenticate"), "{method} {path}: 401");
                assert!(header("429", "Retry-After"), "{method} {path}: 429");
            }
            if !["openapi", "healthz"].contains(&id) {
                assert!(header("503", "Retry-After"), "{method} {path}: 503");
            }
            if operation["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                for status in ["400", "413", "415"] {
                    assert!(responses.get(status).is_some(), "{method} {path}: {status}");
                }
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let rule = match parameter["name"].as_str().unwrap() {
                    "owner" | "branch" | "repository" | "user" => NameRule::SEGMENT,
                    "arch" => NameRule::ARCH,
                    "file" => NameRule::PACKAGE_FILE,
                    "name" => NameRule::PACKAGE_NAME,
                    "keyname" => NameRule::KEY_NAME,
                    _ => continue,
                };
                let pattern = parameter["schema"]["pattern"].as_str().unwrap_or("");
                let inner = rule.pattern.trim_start_matches('^').trim_end_matches('$');
                assert!(
                    pattern == rule.pattern || pattern == format!("^(?:{inner})?$"),
                    "{method} {path}: {parameter}"
                );
            }
        }
    }
    assert!(operations >= 40, "{operations} operations");
    // What the document says is what the server answers.
    let response = server
        .client
        .post(server.url("/api/v1/admin/owners"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"name": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = server.get("/acme/key", Some(("admin", "wrong"))).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        document["components"]["schemas"]["NewOwner"]["properties"]["name"]["pattern"],
        NameRule::SEGMENT.pattern
    );
    server.stop().await;
}

/// `(method, path)` of every `#[utoipa::path(...)]` in the API's source.
fn documented_handlers() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/api");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !source.contains(".route("),
            "routes of the API are registered with routes!, which documents them"
        );
        for attribute in source.split("#[utoipa::path(").skip(1) {
            let method = attribute.split(',').next().unwrap().trim().to_string();
            let path = attribute
                .split("path = \"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a path in every #[utoipa::path]");
            found.insert((method, path.to_string()));
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route() {
    let server = TestServer::start().await;
    setup(&server).await;
    let response = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));

    let mut in_document = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_document.insert((method.clone(), path.clone()));
        }
    }
    let handlers = documented_handlers();
    assert!(handlers.len() >= 20, "{handlers:?}");
    let api: BTreeSet<_> = in_document
        .iter()
        .filter(|(_, path)| path.starts_with("/api/v1/"))
        .cloned()
        .collect();
    assert_eq!(
        handlers, api,
        "every handler of src/http/api is registered and in the document, and nothing else"
    );
    // Beside the API: the routes apk and CI use, under the registry's layout and Gitea's,
    // and the server's own.
    let mut others = BTreeSet::new();
    for base in ["/{owner}", "/api/packages/{owner}/alpine"] {
        for (methods, rest) in [
            (&["get"][..], "/key"),
            (&["get"], "/keys/{keyname}"),
            (&["put"], "/{branch}/{repository}"),
            (
                &["get", "head"],
                "/{branch}/{repository}/{arch}/APKINDEX.tar.gz",
            ),
            (
                &["get", "head"],
                "/{branch}/{repository}/{arch}/Packages.adb",
            ),
            (
                &["get", "head", "delete"],
                "/{branch}/{repository}/{arch}/{file}",
            ),
            (
                &["get", "head"],
                "/{branch}/{repository}@{view}/{arch}/{file}",
            ),
        ] {
            for method in methods {
                others.insert((method.to_string(), format!("{base}{rest}")));
            }
        }
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        others.insert(("get".to_string(), path.to_string()));
    }
    let rest: BTreeSet<_> = in_document.difference(&api).cloned().collect();
    assert_eq!(rest, others, "the apk and server routes, and nothing else");
    // The rest of the router adds nothing under /api/v1.
    let router = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs"),
    )
    .unwrap();
    assert!(!router.contains("/api/v1"));

    // And every documented route is served: no answer from the router's fallback.
    for (method, path) in &in_document {
        let concrete = path
            .replace("{owner}", "acme")
            .replace("{name}", "libfoo")
            .replace("{branch}", "v3.21")
            .replace("{repository}", "main")
            .replace("{arch}", "x86_64")
            .replace("{user}", "nobody")
            .replace("{id}", "999999")
            .replace("{file}", "none-1.0-r0.apk")
            .replace("{view}", "2026-01-01T00:00:00Z")
            .replace("{snapshot}", "none")
            .replace("{keyname}", "acme-00000000.rsa.pub");
        let request = server
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                server.url(&concrete),
            )
            .basic_auth("admin", Some(ADMIN_TOKEN))
            .json(&json!({}));
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405
                && !body["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no endpoint"),
            "{method} {concrete}: {status} {body}"
        );
    }
    // Every schema a route refers to is defined.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "schema {name} is referenced but not defined"
        );
    }
    server.stop().await;
}
