//! The web pages through real HTTP: every page, the access rules (a private owner's
//! packages never shown to anonymous visitors or non-members), login and logout, CSRF
//! refusals, and deleting a file after confirmation.

mod common;

use std::collections::BTreeMap;

use alpine_registry::store::Role;
use common::web::{password_of, world};
use common::*;
use sha2::{Digest, Sha256};

/// A browser's view of the site: cookies kept between requests, redirects not followed.
struct Visitor {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn location(&self) -> &str {
        self.headers["location"].to_str().unwrap()
    }

    /// The value of the form field `name` (hidden inputs), HTML entities undone.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        unescape(&self.body[start..end])
    }

    /// The markup of the element whose `id` is given, up to its closing tag (the
    /// elements looked up this way hold no element of their own kind).
    fn by_id(&self, id: &str) -> String {
        let marker = format!("id=\"{id}\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in {}", self.body));
        let open = self.body[..at].rfind('<').unwrap();
        let tag: String = self.body[open + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let rest = &self.body[open..];
        let close = rest
            .find(&format!("</{tag}>"))
            .unwrap_or_else(|| panic!("#{id} is not closed"));
        rest[..close].to_string()
    }
}

/// The text of some markup: tags dropped, entities undone.
fn text(markup: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

/// Text with HTML entities (named and numeric) undone.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Visitor {
    fn new(server: &TestServer) -> Visitor {
        Visitor {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: server.url(""),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn page(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header("cookie", self.cookie_header())
        };
        let response = request.send().await.unwrap();
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.page(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.client.post(format!("{}{path}", self.base)).form(form);
        self.page(request).await
    }

    /// Logs in through the form; returns the answer to the POST.
    async fn login(&mut self, user: &str, secret: &str) -> Page {
        let form = self.get("/-/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.field("csrf");
        self.post(
            "/-/login",
            &[
                ("user", user),
                ("secret", secret),
                ("csrf", &csrf),
                ("next", "/"),
            ],
        )
        .await
    }

    async fn logged_in(server: &TestServer, user: &str) -> Visitor {
        let mut visitor = Visitor::new(server);
        let answer = visitor.login(user, &password_of(user)).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        visitor
    }

    /// The CSRF token of the session, as the pages' forms carry it.
    async fn csrf(&mut self) -> String {
        self.get("/").await.field("csrf")
    }
}

async fn started() -> TestServer {
    let server = TestServer::start().await;
    world(&server).await;
    server
}

/// Every page where the private owner could show, for one visitor.
async fn assert_vault_invisible(visitor: &mut Visitor, who: &str) {
    let home = visitor.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("/acme"), "{who}: acme listed");
    assert!(!home.body.contains("vault"), "{who}: home shows vault");
    for query in [
        "/-/search",
        "/-/search?q=hush",
        "/-/search?owner=vault",
        "/-/search?q=h*",
    ] {
        let page = visitor.get(query).await;
        assert_eq!(page.status, 200, "{who} {query}");
        assert!(
            !page.body.contains("hush") || query.contains("q=hush"),
            "{who}: {query} shows hush"
        );
        assert!(!page.body.contains("/vault"), "{who}: {query} links vault");
        assert!(!page.body.contains("Classified"), "{who}: {query}");
    }
    for path in [
        "/vault",
        "/vault/-/packages/hush",
        "/vault/-/setup/v1/main",
        "/vault/-/index/v1/main",
        "/vault/-/packages/hush/delete?branch=v1&repository=main&arch=x86_64&file=hush-1.0-r0.apk",
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 404, "{who}: {path}");
        assert!(!page.body.contains("Classified"), "{who}: {path}");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{who}: {path} is a page"
        );
    }
    // Exactly as an owner that does not exist.
    let missing = visitor.get("/no-such-owner").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn home_lists_owners_and_repositories_with_counts() {
    let server = started().await;
    let mut anonymous = Visitor::new(&server);
    let home = anonymous.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(home.body.contains("name=\"viewport\""));
    assert!(home.body.contains("action=\"/-/search\""));
    assert!(home.body.contains("<label for=\"home-q\""));
    assert!(home.body.contains("href=\"/acme\""));
    // v3.21/main holds 4 files (hello x2, libgreet, greet-doc), edge/main 1.
    assert!(
        home.body.contains("<td class=\"num\">4</td>"),
        "{}",
        home.body
    );
    assert!(home.body.contains("<td class=\"num\">1</td>"));
    assert!(home.body.contains("5 package files"));
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"));
    let css = anonymous.get("/-/static/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(css.body.contains(":focus-visible"));
    assert_eq!(anonymous.get("/-/static/other.css").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_private_owner_is_shown_to_members_only() {
    let server = started().await;
    let mut anonymous = Visitor::new(&server);
    assert_vault_invisible(&mut anonymous, "anonymous").await;
    let mut bob = Visitor::logged_in(&server, "bob").await;
    assert_vault_invisible(&mut bob, "bob").await;
    // With Basic credentials of a non-member, as scripts send them.
    let basic = server
        .client
        .get(server.url("/vault/-/packages/hush"))
        .basic_auth("bob", Some(password_of("bob")))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 404);

    let mut carol = Visitor::logged_in(&server, "carol").await;
    let home = carol.get("/").await;
    assert!(home.body.contains("href=\"/vault\""));
    assert!(home.body.contains("private"));
    let search = carol.get("/-/search?q=hush").await;
    assert!(search.body.contains("href=\"/vault/-/packages/hush\""));
    let page = carol.get("/vault/-/packages/hush").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Classified hush tool"));
    assert_eq!(carol.get("/vault").await.status, 200);
    assert_eq!(carol.get("/vault/-/index/v1/main").await.status, 200);
    // A reader is not offered deletion, and may not delete.
    assert!(!page.body.contains("Delete…"));
    let confirm = carol
        .get("/vault/-/packages/hush/delete?branch=v1&repository=main&arch=x86_64&file=hush-1.0-r0.apk")
        .await;
    assert_eq!(confirm.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn search_matches_names_globs_and_provides_with_filters_and_pages() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let names = |page: &Page| -> Vec<String> {
        page.body
            .split("class=\"result\" href=\"/acme/-/packages/")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_string())
            .collect()
    };
    let all = visitor.get("/-/search").await;
    assert_eq!(names(&all), ["greet-doc", "hello", "libgreet"]);
    assert!(all.body.contains("3 packages"));
    let cases: &[(&str, &[&str])] = &[
        ("q=greet", &["greet-doc", "libgreet"]),
        ("q=GREET", &["greet-doc", "libgreet"]),
        ("q=hel*", &["hello"]),
        ("q=*greet", &["libgreet"]),
        ("q=so%3Alibgreet.so.1", &["libgreet"]),
        ("q=cmd%3Ahello", &["hello"]),
        ("q=&branch=edge", &["hello"]),
        ("arch=aarch64", &["greet-doc", "hello"]),
        ("maintainer=greta", &["libgreet"]),
        ("q=nothing-like-this", &[]),
    ];
    for (query, expected) in cases {
        let page = visitor.get(&format!("/-/search?{query}")).await;
        assert_eq!(page.status, 200, "{query}");
        assert_eq!(names(&page), *expected, "{query}");
    }
    // The filters stay in the form.
    let filtered = visitor.get("/-/search?q=greet&maintainer=greta").await;
    assert!(filtered
        .body
        .contains("id=\"f-maintainer\" name=\"maintainer\" value=\"greta\""));

    // Pages of one, followed by their links.
    let mut seen = Vec::new();
    let mut next = Some("/-/search?limit=1".to_string());
    while let Some(path) = next {
        let page = visitor.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        seen.extend(names(&page));
        next = page.body.find("id=\"next-page\" href=\"").map(|at| {
            let rest = &page.body[at + "id=\"next-page\" href=\"".len()..];
            unescape(&rest[..rest.find('"').unwrap()])
        });
        assert!(seen.len() <= 3, "pages never end: {seen:?}");
    }
    assert_eq!(seen, ["greet-doc", "hello", "libgreet"]);
    assert_eq!(visitor.get("/-/search?after=garbage").await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn owner_page_has_the_matrix_and_the_signing_key() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/acme").await;
    assert_eq!(page.status, 200);
    let matrix = page.by_id("matrix");
    // Columns: the architectures with an index; a row per branch and repository.
    let header: Vec<&str> = matrix.split("<th scope=\"col\"").skip(1).collect();
    assert!(
        header[2].contains(">aarch64<") && header[3].contains(">x86_64<"),
        "{matrix}"
    );
    let rows: Vec<&str> = matrix.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 2, "{matrix}");
    // edge/main: x86_64 only (hello 1.1), no aarch64 index.
    assert!(rows[0].contains(">edge<"));
    assert!(rows[0].contains("<td class=\"num empty\">"));
    assert!(rows[0].contains("<td class=\"num\">1</td>"));
    // v3.21/main: aarch64 lists hello + greet-doc, x86_64 hello + libgreet + greet-doc.
    assert!(rows[1].contains(">v3.21<"));
    let cells: Vec<&str> = rows[1]
        .split("<td class=\"num\">")
        .skip(1)
        .map(|c| &c[..c.find('<').unwrap()])
        .collect();
    assert_eq!(cells[..3], ["2", "3", "4"], "{}", rows[1]);
    assert!(rows[1].contains("noarch"));

    let key = server.get("/acme/key", None).await;
    let disposition = key.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let pem = key.text().await.unwrap();
    let file_name = disposition
        .trim_start_matches("attachment; filename=\"")
        .trim_end_matches('"');
    let key_section = page.by_id("key");
    assert!(key_section.contains(file_name), "{key_section}");
    let fingerprint = public_key_sha256(&pem);
    assert!(page.body.contains(&fingerprint));
    assert!(page.body.contains("RSA256 (SHA-256)"));
    server.stop().await;
}

/// Hex SHA-256 of the DER of a PEM public key.
fn public_key_sha256(pem: &str) -> String {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    hex::encode(Sha256::digest(der))
}

#[tokio::test]
async fn setup_snippet_names_the_exact_key_file_and_the_visitors_url() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/acme/-/setup/v3.21/main").await;
    assert_eq!(page.status, 200);
    let script = text(&page.by_id("setup-script"));
    let key = server.get("/acme/key", None).await;
    let disposition = key.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let pem = key.text().await.unwrap();
    let file_name = disposition
        .trim_start_matches("attachment; filename=\"")
        .trim_end_matches('"');
    let origin = format!("http://{}", server.addr);
    assert!(
        script.contains(&format!("wget -q -O \"$tmp\" '{origin}/acme/key'")),
        "{script}"
    );
    assert!(
        script.contains(&format!("mv \"$tmp\" '/etc/apk/keys/{file_name}'")),
        "{script}"
    );
    assert!(
        script.contains(&hex::encode(Sha256::digest(pem.as_bytes()))),
        "the SHA-256 of the key file: {script}"
    );
    assert!(
        !script.contains("openssl"),
        "stock Alpine has no openssl command"
    );
    assert!(script.contains(&format!(
        "grep -qxF '{origin}/acme/v3.21/main' /etc/apk/repositories || echo \
         '{origin}/acme/v3.21/main' >> /etc/apk/repositories"
    )));
    assert!(script.contains("apk update"));
    assert!(page.body.contains(&public_key_sha256(&pem)));
    assert!(!script.contains("bash"));
    // The line is what apk fetches: the index is there.
    let index = server
        .get("/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index.status(), 200);
    // A POSIX shell parses it.
    let check = std::process::Command::new("sh")
        .arg("-n")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(check.success(), "sh -n refuses the script");
    run_setup_script(&script, &pem, &format!("{origin}/acme/v3.21/main")).await;
    assert_eq!(visitor.get("/acme/-/setup/v3.21/nope").await.status, 404);

    // Private: the credentials-in-URL form.
    let mut carol = Visitor::logged_in(&server, "carol").await;
    let page = carol.get("/vault/-/setup/v1/main").await;
    assert_eq!(page.status, 200);
    let script = text(&page.by_id("setup-script"));
    let host = server.addr.to_string();
    assert!(
        script.contains(&format!("'http://USER:TOKEN@{host}/vault/v1/main'")),
        "{script}"
    );
    assert!(script.contains(&format!("'http://USER:TOKEN@{host}/vault/key'")));

    // Behind a trusted proxy, the visitor's https address.
    server.stop().await;
    let proxied =
        TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1".into()]).await;
    world(&proxied).await;
    let page = proxied
        .client
        .get(proxied.url("/acme/-/setup/v3.21/main"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "apk.example.org")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(unescape(&page).contains("'https://apk.example.org/acme/v3.21/main'"));
    proxied.stop().await;
}

/// What the setup script runs, besides the shell's own: what busybox gives a stock
/// Alpine machine (no openssl).
const SETUP_TOOLS: [&str; 8] = [
    "wget",
    "sha256sum",
    "mktemp",
    "cut",
    "chmod",
    "mv",
    "rm",
    "grep",
];

/// Runs the setup script for real, with /etc/apk/ in a temporary directory, a PATH that
/// holds only the tools stock Alpine has (links to this machine's: no openssl) and an
/// `apk` that records its arguments: twice, as someone would by mistake; then with a
/// wrong key file. Skipped, saying so, where a tool is missing, unless
/// `ALPINE_REGISTRY_TEST_REQUIRE_TOOLS` is set (as CI does): then it fails.
async fn run_setup_script(script: &str, pem: &str, line: &str) {
    let missing: Vec<&str> = SETUP_TOOLS
        .into_iter()
        .filter(|tool| {
            !std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        })
        .collect();
    if !missing.is_empty() {
        // CI installs them: there, a missing tool is a failure, not a skip.
        assert!(
            std::env::var_os("ALPINE_REGISTRY_TEST_REQUIRE_TOOLS").is_none(),
            "setup script not run: {missing:?} missing (ALPINE_REGISTRY_TEST_REQUIRE_TOOLS is set)"
        );
        eprintln!("setup script not run: {missing:?} missing");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/apk");
    std::fs::create_dir_all(etc.join("keys")).unwrap();
    std::fs::write(
        etc.join("repositories"),
        "https://dl-cdn.alpinelinux.org/alpine/v3.21/main\n",
    )
    .unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in SETUP_TOOLS.into_iter().chain(["sh", "cat"]) {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        let target = String::from_utf8(found.stdout).unwrap();
        std::os::unix::fs::symlink(target.trim(), bin.join(tool)).unwrap();
    }
    let apk = bin.join("apk");
    std::fs::write(
        &apk,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}/apk-calls\n",
            root.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&apk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let local = script.replace("/etc/apk/", &format!("{}/", etc.display()));
    // Nothing else: a script that needs openssl (or anything stock Alpine lacks) fails.
    let path = bin.display().to_string();
    let run = |script: String| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", path)
                .output()
                .unwrap()
        })
    };
    for _ in 0..2 {
        let output = run(local.clone()).await.unwrap();
        assert!(
            output.status.success(),
            "the setup script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let keys: Vec<_> = std::fs::read_dir(etc.join("keys")).unwrap().collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        std::fs::read_to_string(keys[0].as_ref().unwrap().path()).unwrap(),
        pem
    );
    let repositories = std::fs::read_to_string(etc.join("repositories")).unwrap();
    assert_eq!(
        repositories,
        format!("https://dl-cdn.alpinelinux.org/alpine/v3.21/main\n{line}\n"),
        "the line is added once"
    );
    let calls = std::fs::read_to_string(root.path().join("apk-calls")).unwrap();
    assert_eq!(calls, "update\nupdate\n");
    // A key file that is not the one the page names is refused and never installed, and
    // its temporary copy is gone.
    let file_sha256 = local
        .lines()
        .find_map(|l| l.strip_prefix("# The key file's SHA-256 must be "))
        .unwrap()
        .trim_end_matches('.')
        .to_string();
    let tampered = local.replace(&file_sha256, &"0".repeat(64));
    std::fs::remove_file(keys[0].as_ref().unwrap().path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let output = {
        let scratch = scratch.path().to_path_buf();
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(tampered)
                .env("PATH", path)
                .env("TMPDIR", scratch)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrong key file"));
    assert_eq!(std::fs::read_dir(etc.join("keys")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "the downloaded copy is removed"
    );
}

#[tokio::test]
async fn package_page_shows_every_field_the_matrix_and_links() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/acme/-/packages/hello").await;
    assert_eq!(page.status, 200);
    // Versions newest first.
    let versions = page.by_id("versions");
    let newer = versions.find("1.1-r0").unwrap();
    let older = versions.find("1.0-r0").unwrap();
    assert!(newer < older, "{versions}");
    // Branches × architectures, cells holding the files.
    let matrix = page.by_id("availability");
    let rows: Vec<&str> = matrix.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains(">edge<") && rows[1].contains(">v3.21<"));
    let edge_cells: Vec<&str> = rows[0].split("<td").skip(1).collect();
    // Columns aarch64, x86_64: edge has x86_64 only.
    assert!(edge_cells[0].contains("class=\"empty\""));
    assert!(edge_cells[1].contains("href=\"/acme/edge/main/x86_64/hello-1.1-r0.apk\""));
    assert!(rows[1].contains("href=\"/acme/v3.21/main/aarch64/hello-1.0-r0.apk\""));
    // The cell's sha256 is the downloaded file's.
    let download = server
        .get("/acme/edge/main/x86_64/hello-1.1-r0.apk", None)
        .await
        .bytes()
        .await
        .unwrap();
    let sha = hex::encode(Sha256::digest(&download));
    assert!(edge_cells[1].contains(&sha));
    // Dependencies: resolved ones linked, the others marked.
    let depends = page.by_id("depends");
    assert!(depends.contains("<a class=\"dep\" href=\"/acme/-/packages/libgreet\">libgreet</a>"));
    assert!(page
        .body
        .contains("<span class=\"unresolved\">nowhere-to-be-found</span>"));
    assert!(page.body.contains("cmd:hello"));
    // Every index field of a file.
    for label in [
        "P: name",
        "V: version",
        "A: architecture",
        "S: size",
        "I: installed size",
        "T: description",
        "U: url",
        "L: license",
        "o: origin",
        "m: maintainer",
        "t: build time",
        "c: commit",
        "D: depends",
        "p: provides",
        "C: checksum",
        "sha256",
    ] {
        assert!(page.body.contains(&format!("<dt>{label}</dt>")), "{label}");
    }
    assert!(page
        .body
        .contains("0123456789abcdef0123456789abcdef01234567"));
    // Anonymous visitors are offered no delete.
    assert!(!page.body.contains("Delete…"));

    let lib = visitor.get("/acme/-/packages/libgreet").await;
    assert!(lib
        .by_id("required-by")
        .contains("href=\"/acme/-/packages/hello\""));
    let doc = visitor.get("/acme/-/packages/greet-doc").await;
    assert!(doc.body.contains("<span class=\"badge\">noarch</span>"));
    assert!(doc.body.contains("every architecture"));
    // The noarch file's link downloads it.
    let link = doc.by_id("availability");
    let at = link
        .find("href=\"/acme/v3.21/main/")
        .expect("a download link");
    let href = &link[at + "href=\"".len()..];
    let href = &href[..href.find('"').unwrap()];
    assert!(href.ends_with("/greet-doc-2.0-r0.apk"), "{href}");
    assert_eq!(server.get(href, None).await.status(), 200, "{href}");
    assert_eq!(visitor.get("/acme/-/packages/nope").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn index_status_page_describes_the_served_index() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/acme/-/index/v3.21/main").await;
    assert_eq!(page.status, 200);
    let index = server
        .get("/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await
        .bytes()
        .await
        .unwrap();
    assert!(page.body.contains(&hex::encode(Sha256::digest(&index))));
    assert!(page.body.contains(&format!("({} bytes)", index.len())));
    assert!(
        page.body.contains("<dt>Entries</dt><dd>3</dd>"),
        "{}",
        page.body
    );
    assert!(page.body.contains(".SIGN.RSA256.acme-"));
    assert!(page.body.contains(".SIGN.RSA.acme-"));
    assert!(page
        .body
        .contains("href=\"/acme/v3.21/main/aarch64/APKINDEX.tar.gz\""));
    assert!(page.body.contains("<dt>Generation</dt>"));
    assert_eq!(visitor.get("/acme/-/index/v3.21/nope").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn login_sets_a_session_cookie_and_logout_ends_it() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let form = visitor.get("/-/login?next=/acme").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("<label for=\"user\">"));
    assert!(form.body.contains("<label for=\"secret\">"));
    let login_cookie = &form.set_cookies()[0];
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"));
    assert!(!login_cookie.contains("Secure"));
    assert_eq!(form.field("next"), "/acme");

    // A wrong password: the form again, no session.
    let csrf = form.field("csrf");
    let wrong = visitor
        .post(
            "/-/login",
            &[
                ("user", "alice"),
                ("secret", "wrong"),
                ("csrf", &csrf),
                ("next", "/acme"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.headers.contains_key("www-authenticate"));
    assert!(wrong.body.contains("id=\"login-error\""));
    assert!(!visitor.cookies.contains_key("alpine_registry_session"));

    let ok = visitor
        .post(
            "/-/login",
            &[
                ("user", "alice"),
                ("secret", &password_of("alice")),
                ("csrf", &csrf),
                ("next", "/acme"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.location(), "/acme");
    let session_cookie = ok
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("alpine_registry_session="))
        .expect("session cookie");
    assert!(session_cookie.contains("HttpOnly"));
    assert!(session_cookie.contains("SameSite=Lax"));
    assert!(session_cookie.contains("Path=/"));
    let session_id = visitor.cookies["alpine_registry_session"].clone();
    assert_eq!(session_id.len(), 64);
    let home = visitor.get("/").await;
    assert!(home.body.contains("Logged in as <strong>alice</strong>"));

    // Logout ends the session on the server: the old cookie no longer counts.
    let csrf = home.field("csrf");
    let out = visitor.post("/-/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookies()[0].contains("Max-Age=0"));
    let replayed = server
        .client
        .get(server.url("/"))
        .header("cookie", format!("alpine_registry_session={session_id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!replayed.contains("Logged in as"));
    assert!(replayed.contains("href=\"/-/login\""));

    // Open redirects are refused.
    let mut other = Visitor::new(&server);
    let form = other.get("/-/login").await;
    let csrf = form.field("csrf");
    let ok = other
        .post(
            "/-/login",
            &[
                ("user", "bob"),
                ("secret", &password_of("bob")),
                ("csrf", &csrf),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.location(), "/");
    server.stop().await;
}

#[tokio::test]
async fn a_token_logs_in_with_its_scope_until_it_is_revoked() {
    let server = started().await;
    let token = server
        .user_with_token("alice", Role::Read, None, None)
        .await;
    let mut visitor = Visitor::new(&server);
    let ok = visitor.login("whoever", &token).await;
    assert_eq!(ok.status, 303);
    let page = visitor.get("/acme/-/packages/hello").await;
    assert!(page.body.contains("Logged in as <strong>alice</strong>"));
    // A read token cannot delete, though alice can.
    assert!(!page.body.contains("Delete…"));
    let id = server
        .state
        .store
        .list_tokens(None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.user_name == "alice")
        .unwrap()
        .id;
    server
        .state
        .store
        .revoke_token(id, unix_now(), None)
        .await
        .unwrap();
    let after = visitor.get("/").await;
    assert!(!after.body.contains("Logged in as"));
    server.stop().await;
}

#[tokio::test]
async fn a_new_password_ends_the_sessions_of_the_old_one() {
    let server = started().await;
    let mut bob = Visitor::logged_in(&server, "bob").await;
    assert!(bob.get("/").await.body.contains("Logged in as"));
    alpine_registry::registry::accounts::set_password(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "bob",
        Some("another-password".into()),
    )
    .await
    .unwrap();
    let home = bob.get("/").await;
    assert_eq!(home.status, 200);
    assert!(!home.body.contains("Logged in as"));
    server.stop().await;
}

#[tokio::test]
async fn cookies_are_secure_when_the_visitor_came_over_https() {
    let server =
        TestServer::start_with(|c| c.server.public_url = "https://apk.example.org".into()).await;
    world(&server).await;
    let mut visitor = Visitor::new(&server);
    let form = visitor.get("/-/login").await;
    assert!(form.set_cookies()[0].contains("; Secure"));
    let ok = visitor.login("alice", &password_of("alice")).await;
    assert_eq!(ok.status, 303);
    let session = ok
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("alpine_registry_session="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
    server.stop().await;
}

/// A token logs in without a user name, as the form's help says: the user field used to
/// be required, so a browser would not send the form without one. A password still needs
/// its user name, and the refusal says so.
#[tokio::test]
async fn a_token_logs_in_without_a_user_name() {
    let server = started().await;
    let token = server
        .user_with_token("alice", Role::Read, None, None)
        .await;
    let mut visitor = Visitor::new(&server);
    let form = visitor.get("/-/login").await;
    let user_input = form
        .body
        .split("<input id=\"user\"")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .expect("the user field");
    assert!(!user_input.contains("required"), "{user_input}");
    let answer = visitor.login("", &token).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let home = visitor.get("/").await;
    assert!(home.body.contains("Logged in as <strong>alice</strong>"));

    let mut other = Visitor::new(&server);
    let refused = other.login("", &password_of("alice")).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("id=\"login-error\""));
    assert!(
        refused
            .body
            .contains("enter your user name with the password"),
        "{}",
        refused.body
    );
    assert!(!other.cookies.contains_key("alpine_registry_session"));
    server.stop().await;
}

#[tokio::test]
async fn login_without_the_double_submitted_token_is_refused() {
    let server = started().await;
    let mut visitor = Visitor::new(&server);
    let secret = password_of("alice");
    // No cookie, no field.
    let bare = visitor
        .post("/-/login", &[("user", "alice"), ("secret", &secret)])
        .await;
    assert_eq!(bare.status, 403);
    // A field without the cookie (what a cross-site form can send).
    let forged = visitor
        .post(
            "/-/login",
            &[
                ("user", "alice"),
                ("secret", &secret),
                ("csrf", &"a".repeat(64)),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    // The cookie with another value in the field.
    visitor.get("/-/login").await;
    let mismatched = visitor
        .post(
            "/-/login",
            &[
                ("user", "alice"),
                ("secret", &secret),
                ("csrf", &"b".repeat(64)),
            ],
        )
        .await;
    assert_eq!(mismatched.status, 403);
    assert!(!visitor.cookies.contains_key("alpine_registry_session"));
    server.stop().await;
}

#[tokio::test]
async fn login_form_answers_to_the_failure_throttle() {
    let server = TestServer::start_with(|c| {
        c.auth.max_failures = 2;
        c.auth.failure_delay_ms = 60_000;
    })
    .await;
    world(&server).await;
    let mut visitor = Visitor::new(&server);
    for _ in 0..2 {
        assert_eq!(visitor.login("alice", "guess").await.status, 401);
    }
    // Now even the right password waits, through the form or a header.
    let refused = visitor.login("alice", &password_of("alice")).await;
    assert_eq!(refused.status, 429);
    assert!(refused.headers.contains_key("retry-after"));
    assert!(!visitor.cookies.contains_key("alpine_registry_session"));
    let basic = server
        .get("/acme/key", Some(("alice", &password_of("alice"))))
        .await;
    assert_eq!(basic.status(), 429);
    server.stop().await;
}

const HELLO_X86: &str = "branch=v3.21&repository=main&arch=x86_64&file=hello-1.0-r0.apk";

#[tokio::test]
async fn forms_without_the_session_token_change_nothing() {
    let server = started().await;
    let mut alice = Visitor::logged_in(&server, "alice").await;
    let fields = [
        ("branch", "v3.21"),
        ("repository", "main"),
        ("arch", "x86_64"),
        ("file", "hello-1.0-r0.apk"),
    ];
    let path = "/acme/-/packages/hello/delete";
    let without = alice.post(path, &fields).await;
    assert_eq!(without.status, 403);
    let mut wrong = fields.to_vec();
    wrong.push((
        "csrf",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ));
    assert_eq!(alice.post(path, &wrong).await.status, 403);
    // Another session's token is not this one's.
    let mut bob = Visitor::logged_in(&server, "bob").await;
    let bobs = bob.csrf().await;
    let mut other = fields.to_vec();
    other.push(("csrf", &bobs));
    assert_eq!(alice.post(path, &other).await.status, 403);
    // Without any session, with a token.
    let mut anonymous = Visitor::new(&server);
    assert_eq!(anonymous.post(path, &other).await.status, 403);
    // Nothing changed.
    let file = server
        .get("/acme/v3.21/main/x86_64/hello-1.0-r0.apk", None)
        .await;
    assert_eq!(file.status(), 200);
    let index = server
        .verified_index("acme", "/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert!(index.contains("P:hello\nV:1.0-r0"));
    // Logout without the token keeps the session.
    assert_eq!(alice.post("/-/logout", &[]).await.status, 403);
    assert!(alice.get("/").await.body.contains("Logged in as"));
    server.stop().await;
}

#[tokio::test]
async fn a_writer_deletes_a_file_after_confirmation() {
    let server = started().await;
    // Anonymous visitors are sent to log in first, and back.
    let mut anonymous = Visitor::new(&server);
    let confirm_path = format!("/acme/-/packages/hello/delete?{HELLO_X86}");
    let redirect = anonymous.get(&confirm_path).await;
    assert_eq!(redirect.status, 303);
    assert!(redirect
        .location()
        .starts_with("/-/login?next=%2Facme%2F-%2Fpackages%2Fhello%2Fdelete%3F"));

    // A member of nothing may not.
    let mut bob = Visitor::logged_in(&server, "bob").await;
    assert_eq!(bob.get(&confirm_path).await.status, 403);
    let csrf = bob.csrf().await;
    let refused = bob
        .post(
            "/acme/-/packages/hello/delete",
            &[
                ("branch", "v3.21"),
                ("repository", "main"),
                ("arch", "x86_64"),
                ("file", "hello-1.0-r0.apk"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);

    let mut alice = Visitor::logged_in(&server, "alice").await;
    let page = alice.get("/acme/-/packages/hello").await;
    assert!(unescape(&page.body).contains(&format!(
        "href=\"/acme/-/packages/hello/delete?{HELLO_X86}\""
    )));
    let confirm = alice.get(&confirm_path).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Delete hello-1.0-r0.apk?"));
    assert_eq!(confirm.field("file"), "hello-1.0-r0.apk");
    // A file of another package through this package's page: no.
    let other = alice
        .get("/acme/-/packages/hello/delete?branch=v3.21&repository=main&arch=x86_64&file=libgreet-2.0-r0.apk")
        .await;
    assert_eq!(other.status, 404);
    // The confirmation is a page; the file is still there.
    assert_eq!(
        server
            .get("/acme/v3.21/main/x86_64/hello-1.0-r0.apk", None)
            .await
            .status(),
        200
    );
    let done = alice
        .post(
            "/acme/-/packages/hello/delete",
            &[
                ("branch", &confirm.field("branch")),
                ("repository", &confirm.field("repository")),
                ("arch", &confirm.field("arch")),
                ("file", &confirm.field("file")),
                ("csrf", &confirm.field("csrf")),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("was deleted"));
    // Gone, and the signed index (answered before the page) no longer lists it.
    assert_eq!(
        server
            .get("/acme/v3.21/main/x86_64/hello-1.0-r0.apk", None)
            .await
            .status(),
        404
    );
    let index = server
        .verified_index("acme", "/acme/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert!(!index.contains("P:hello\n"), "{index}");
    assert!(index.contains("P:libgreet"));
    let page = alice.get("/acme/-/packages/hello").await;
    assert!(!page
        .body
        .contains("/acme/v3.21/main/x86_64/hello-1.0-r0.apk"));
    assert!(page
        .body
        .contains("/acme/v3.21/main/aarch64/hello-1.0-r0.apk"));
    server.stop().await;
}

#[tokio::test]
async fn without_anonymous_reads_every_page_asks_for_a_login_first() {
    let server = TestServer::start_with(|c| c.auth.anonymous_read = false).await;
    world(&server).await;
    let mut anonymous = Visitor::new(&server);
    for path in [
        "/",
        "/-/search?q=hello",
        "/acme",
        "/vault",
        "/acme/-/packages/hello",
        "/nobody",
    ] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert!(page.location().starts_with("/-/login?next=%2F"), "{path}");
        assert!(!page.body.contains("hello"));
    }
    assert_eq!(anonymous.get("/-/login").await.status, 200);
    let mut alice = Visitor::logged_in(&server, "alice").await;
    let home = alice.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("href=\"/acme\""));
    assert!(!home.body.contains("vault"));
    assert_eq!(alice.get("/vault").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_noarch_file_is_deleted_from_its_page_too() {
    let server = started().await;
    let mut alice = Visitor::logged_in(&server, "alice").await;
    let page = unescape(&alice.get("/acme/-/packages/greet-doc").await.body);
    let at = page
        .find("href=\"/acme/-/packages/greet-doc/delete?")
        .expect("delete link");
    let href = &page[at + "href=\"".len()..];
    let href = &href[..href.find('"').unwrap()];
    let confirm = alice.get(href).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let fields: Vec<(&str, String)> = ["branch", "repository", "arch", "file", "csrf"]
        .into_iter()
        .map(|name| (name, confirm.field(name)))
        .collect();
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = alice.post("/acme/-/packages/greet-doc/delete", &form).await;
    assert_eq!(done.status, 200, "{}", done.body);
    // Gone from the index of every architecture.
    for arch in ["x86_64", "aarch64"] {
        let index = server
            .verified_index(
                "acme",
                &format!("/acme/v3.21/main/{arch}/APKINDEX.tar.gz"),
                None,
            )
            .await;
        assert!(!index.contains("P:greet-doc"), "{arch}: {index}");
    }
    assert_eq!(alice.get("/acme/-/packages/greet-doc").await.status, 404);
    server.stop().await;
}

/// A form past `limits.max_form_bytes` is refused with a 413 page before anything is
/// checked, with or without a declared length.
#[tokio::test]
async fn forms_over_the_limit_are_refused() {
    let server = TestServer::start().await;
    let form = format!("user=admin&secret={}&csrf=x", "a".repeat(20 << 10));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = form
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    for (path, body) in [
        ("/-/login", reqwest::Body::from(form.clone())),
        (
            "/admin/-/packages/hello/delete",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        ),
    ] {
        let response = server
            .client
            .post(server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        assert_eq!(response.headers()["connection"], "close", "{path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("limits.max_form_bytes"), "{path}: {page}");
    }
    server.stop().await;
}
