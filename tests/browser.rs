//! The web pages in headless Chromium, driven over WebDriver (chromedriver), against the
//! real server: search, open a package page, follow a dependency link, log in, delete a
//! file after confirmation. Screenshots go to `<target>/tmp/screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver). Without them
//! the test is skipped with the reason printed, unless
//! `ALPINE_REGISTRY_TEST_REQUIRE_BROWSER=1`, which makes it fail instead (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::web::{password_of, world};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};

/// The first of `names` found on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("chromium is not installed (Debian: apt-get install chromium)")?;
    let driver = on_path(&["chromedriver"])
        .ok_or("chromedriver is not installed (Debian: apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// chromedriver on a port of its own, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_listening(port);
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &Driver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--force-device-scale-factor=1",
            ],
        }),
    );
    ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connect to chromedriver")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Clicks the element `locator` finds, then waits (bounded) until the browser is at a
/// path that `arrived` accepts: a click may return before the navigation it starts.
async fn navigate(client: &Client, locator: Locator<'_>, arrived: impl Fn(&str) -> bool) {
    client
        .find(locator)
        .await
        .unwrap_or_else(|e| panic!("nothing to click: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let path = path_of(client).await;
        if arrived(&path) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser stayed at {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// axe-core's script (`axe.min.js`, npm's axe-core), named by
/// `ALPINE_REGISTRY_TEST_AXE`; `.ci/run` installs it. Without it the accessibility checks
/// are skipped with a note, unless the browser is required (CI): then they fail.
fn axe_script() -> Option<String> {
    match std::env::var("ALPINE_REGISTRY_TEST_AXE") {
        Ok(path) if !path.is_empty() => {
            Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}")))
        }
        _ => {
            assert!(
                std::env::var("ALPINE_REGISTRY_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "ALPINE_REGISTRY_TEST_REQUIRE_BROWSER=1 but ALPINE_REGISTRY_TEST_AXE does not \
                 name axe.min.js (npm install axe-core)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"accessibility checks skipped: ALPINE_REGISTRY_TEST_AXE is not set\n",
            );
            None
        }
    }
}

/// Runs axe-core on the page the browser shows; returns its violations as
/// `(impact, rule, help, nodes)`.
async fn axe_violations(client: &Client, axe: &str) -> Vec<(String, String, String, usize)> {
    // WebDriver's scripts are not the page's: its Content-Security-Policy does not apply.
    client.execute(axe, vec![]).await.expect("load axe-core");
    let result = client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, {resultTypes: ['violations']})\
               .then(r => done(r.violations.map(v => [v.impact || '', v.id, v.help, v.nodes.length])))\
               .catch(e => done([['error', 'axe', String(e), 0]]));",
            vec![],
        )
        .await
        .expect("axe.run");
    serde_json::from_value(result).expect("axe's violations")
}

/// Every kind of page, checked with axe-core: no serious or critical violation.
async fn accessibility(client: &Client, server: &TestServer, axe: &str, pages: &[&str]) {
    let mut failures = Vec::new();
    for page in pages {
        client.goto(&server.url(page)).await.unwrap();
        let violations = axe_violations(client, axe).await;
        for (impact, rule, help, nodes) in &violations {
            eprintln!("axe {page}: {impact} {rule} ({nodes} nodes): {help}");
            if impact == "serious" || impact == "critical" || impact == "error" {
                failures.push(format!("{page}: {impact} {rule} ({nodes} nodes): {help}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "accessibility violations:\n{}",
        failures.join("\n")
    );
}

async fn path_of(client: &Client) -> String {
    let url = client.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_browse_login_and_delete_in_chromium() {
    let (chromium, driver_path) = match browser() {
        Ok(found) => found,
        Err(reason) => {
            if std::env::var("ALPINE_REGISTRY_TEST_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("ALPINE_REGISTRY_TEST_REQUIRE_BROWSER=1 but {reason}");
            }
            // Written past the test harness's capture, so that the skip shows.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("browser test skipped: {reason}\n").as_bytes(),
            );
            return;
        }
    };
    let server = TestServer::start().await;
    world(&server).await;
    let driver = Driver::start(&driver_path);
    let client = connect(&driver, &chromium).await;
    let result = tokio::time::timeout(Duration::from_secs(120), scenario(&client, &server)).await;
    let _ = client.close().await;
    drop(driver);
    result.expect("the browser scenario took over two minutes");
    server.stop().await;
}

async fn scenario(client: &Client, server: &TestServer) {
    // Search from the home page.
    client.goto(&server.url("/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "Packages · alpine-registry");
    // Keyboard: the first Tab reaches the skip link, shown with a visible focus ring.
    client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Tab.to_string())
        .await
        .unwrap();
    let focused = client
        .execute(
            "const e = document.activeElement; const s = getComputedStyle(e); \
             return [e.textContent, s.outlineStyle, s.outlineWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused,
        serde_json::json!(["Skip to content", "solid", "3px"]),
        "keyboard focus"
    );
    let search = client.find(Locator::Id("home-q")).await.unwrap();
    search.send_keys("greet").await.unwrap();
    navigate(client, Locator::Css("main form[role=search] button"), |p| {
        p == "/-/search?q=greet"
    })
    .await;
    assert_eq!(path_of(client).await, "/-/search?q=greet");
    let results = client.find_all(Locator::Css("a.result")).await.unwrap();
    let mut names = Vec::new();
    for link in &results {
        names.push(link.text().await.unwrap());
    }
    assert_eq!(names, ["greet-doc", "libgreet"]);
    // The search box of the header, for a name that provides nothing else.
    let header_search = client.find(Locator::Id("site-q")).await.unwrap();
    header_search.send_keys("hel*").await.unwrap();
    navigate(
        client,
        Locator::Css("header form[role=search] button"),
        |p| p.starts_with("/-/search?q=hel"),
    )
    .await;
    assert_eq!(text(client, "#result-count").await, "1 package");
    screenshot(client, "search.png").await;

    // The package page, and its dependency link.
    navigate(client, Locator::LinkText("hello"), |p| {
        p == "/acme/-/packages/hello"
    })
    .await;
    assert_eq!(path_of(client).await, "/acme/-/packages/hello");
    assert_eq!(text(client, "main h1").await, "hello");
    assert!(text(client, "#availability")
        .await
        .contains("hello-1.1-r0.apk"));
    screenshot(client, "package.png").await;
    navigate(client, Locator::Css("#depends a.dep"), |p| {
        p == "/acme/-/packages/libgreet"
    })
    .await;
    assert_eq!(path_of(client).await, "/acme/-/packages/libgreet");
    assert_eq!(text(client, "main h1").await, "libgreet");
    assert!(text(client, "#required-by").await.contains("hello"));

    // Log in from the header link; back where asked.
    navigate(client, Locator::LinkText("Log in"), |p| {
        p.starts_with("/-/login")
    })
    .await;
    client
        .find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    client
        .find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(&password_of("alice"))
        .await
        .unwrap();
    screenshot(client, "login.png").await;
    navigate(client, Locator::Css("main form button[type=submit]"), |p| {
        p == "/"
    })
    .await;
    assert_eq!(path_of(client).await, "/");
    assert!(text(client, "header .account")
        .await
        .contains("Logged in as alice"));

    // Delete one file of hello, after confirming.
    client
        .goto(&server.url("/acme/-/packages/hello"))
        .await
        .unwrap();
    let delete_links = client.find_all(Locator::Css("a.delete")).await.unwrap();
    assert_eq!(delete_links.len(), 3, "one per file");
    navigate(
        client,
        Locator::Css("a.delete[href*='file=hello-1.1-r0.apk']"),
        |p| p.starts_with("/acme/-/packages/hello/delete?"),
    )
    .await;
    assert_eq!(text(client, "main h1").await, "Delete hello-1.1-r0.apk?");
    // Nothing is deleted by the confirmation page itself.
    assert_eq!(
        server
            .get("/acme/edge/main/x86_64/hello-1.1-r0.apk", None)
            .await
            .status(),
        200
    );
    screenshot(client, "delete-confirmation.png").await;
    navigate(client, Locator::Id("confirm-delete"), |p| {
        p == "/acme/-/packages/hello/delete"
    })
    .await;
    assert!(text(client, "#deleted").await.contains("was deleted"));
    assert_eq!(
        server
            .get("/acme/edge/main/x86_64/hello-1.1-r0.apk", None)
            .await
            .status(),
        404
    );
    client
        .goto(&server.url("/acme/-/packages/hello"))
        .await
        .unwrap();
    assert_eq!(text(client, "#versions").await, "1.0-r0");

    // The setup snippet, as shown.
    client
        .goto(&server.url("/acme/-/setup/v3.21/main"))
        .await
        .unwrap();
    let script = text(client, "#setup-script").await;
    assert!(
        script.contains("mv \"$tmp\" '/etc/apk/keys/acme-"),
        "{script}"
    );
    screenshot(client, "setup.png").await;
    client.goto(&server.url("/")).await.unwrap();
    screenshot(client, "home.png").await;

    // A token alone logs in, the user name left empty (the browser sends the form).
    let token = server
        .user_with_token("alice", alpine_registry::store::Role::Read, None, None)
        .await;
    client.delete_all_cookies().await.unwrap();
    client.goto(&server.url("/-/login")).await.unwrap();
    client
        .find(Locator::Id("secret"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    navigate(client, Locator::Css("main form button[type=submit]"), |p| {
        p == "/"
    })
    .await;
    assert!(text(client, "header .account")
        .await
        .contains("Logged in as alice"));

    // Readable on a phone: the page fits a narrow window without sideways scrolling.
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&server.url("/acme")).await.unwrap();
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::Value::Bool(true),
        "the owner page scrolls sideways"
    );
    screenshot(client, "owner-phone.png").await;
    client.set_window_size(1280, 900).await.unwrap();

    // Every kind of page, as alice (logged in, with the right to delete): with axe-core, no
    // serious or critical violation.
    if let Some(axe) = axe_script() {
        // With her password, which may delete (the token above only reads).
        client.delete_all_cookies().await.unwrap();
        client.goto(&server.url("/-/login")).await.unwrap();
        for (field, value) in [
            ("user", "alice".to_string()),
            ("secret", password_of("alice")),
        ] {
            client
                .find(Locator::Id(field))
                .await
                .unwrap()
                .send_keys(&value)
                .await
                .unwrap();
        }
        navigate(client, Locator::Css("main form button[type=submit]"), |p| {
            p == "/"
        })
        .await;
        client
            .goto(&server.url("/acme/-/packages/hello"))
            .await
            .unwrap();
        let confirm = client
            .find(Locator::Css("a.delete"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .expect("a delete link");
        let pages = [
            "/",
            "/-/search?q=hello",
            "/-/search?q=nothing-matches-this",
            "/acme",
            "/acme/-/packages/hello",
            confirm.as_str(),
            "/acme/-/setup/v3.21/main",
            "/acme/-/index/v3.21/main",
            "/-/login",
            "/vault",
            "/no-such-owner/-/packages/x",
        ];
        accessibility(client, server, &axe, &pages).await;
    }
}
