//! The access matrix: every identity against every owner route, each cell with its exact
//! status. On a mismatch the whole matrix is printed, then the test fails.
//!
//! Owners: `pubco` (public org), `privco` (private org), `ghostco` (does not exist, so a
//! hidden `privco` can be compared with a truly unknown owner). Routes: `GET /{o}/key`,
//! `GET /{o}/keys/{keyname}`, `GET`/`HEAD` index, `GET`/`HEAD` package, `PUT`, `DELETE`,
//! each natively and under `/api/packages/{o}/alpine`.

mod common;

use std::fmt::Write as _;

use alpine_registry::store::Role;
use common::*;

/// Expected statuses of one identity: for `pubco`, `privco` and `ghostco`, the status of
/// [read, PUT, DELETE], where "read" stands for each of GET key, GET keys/{keyname},
/// GET/HEAD index and GET/HEAD package (they share one access rule).
type Row = (&'static str, [[u16; 3]; 3]);

#[rustfmt::skip]
const WITH_ANONYMOUS_READ: [Row; 12] = [
    //                     pubco              privco             ghostco (unknown)
    //                     read  PUT  DELETE  read  PUT  DELETE  read  PUT  DELETE
    ("anonymous",         [[200, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("read-token",        [[200, 403, 403],  [200, 403, 403],  [404, 404, 404]]),
    ("write-token",       [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    ("admin-token",       [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    // Limited to the owner `other`: reads public owners as anonymous callers may.
    ("other-owner-token", [[200, 403, 403],  [404, 404, 404],  [404, 404, 404]]),
    ("expired-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("revoked-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("unknown-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("wrong-password",    [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("password",          [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    ("outsider",          [[200, 403, 403],  [404, 404, 404],  [404, 404, 404]]),
    ("site-admin",        [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
];

/// `auth.anonymous_read = false`: only the anonymous row differs (public reads are 401).
#[rustfmt::skip]
const WITHOUT_ANONYMOUS_READ: [Row; 12] = [
    //                     pubco              privco             ghostco (unknown)
    //                     read  PUT  DELETE  read  PUT  DELETE  read  PUT  DELETE
    ("anonymous",         [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("read-token",        [[200, 403, 403],  [200, 403, 403],  [404, 404, 404]]),
    ("write-token",       [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    ("admin-token",       [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    ("other-owner-token", [[403, 403, 403],  [404, 404, 404],  [404, 404, 404]]),
    ("expired-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("revoked-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("unknown-token",     [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("wrong-password",    [[401, 401, 401],  [401, 401, 401],  [401, 401, 401]]),
    ("password",          [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
    ("outsider",          [[200, 403, 403],  [404, 404, 404],  [404, 404, 404]]),
    ("site-admin",        [[200, 201, 204],  [200, 201, 204],  [404, 404, 404]]),
];

const OWNERS: [&str; 3] = ["pubco", "privco", "ghostco"];

/// Native routes and Gitea/Forgejo's layout.
const PREFIXES: [(&str, &str); 2] = [("native", ""), ("api", "/api/packages/{o}/alpine")];

const MEMBER_PASSWORD: &str = "member-pass-Correct-Horse-42";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Key,
    KeyNamed,
    IndexGet,
    IndexHead,
    PackageGet,
    PackageHead,
    Put,
    Delete,
}

const ROUTES: [Route; 8] = [
    Route::Key,
    Route::KeyNamed,
    Route::IndexGet,
    Route::IndexHead,
    Route::PackageGet,
    Route::PackageHead,
    Route::Put,
    Route::Delete,
];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Key => "key",
            Route::KeyNamed => "keys/n",
            Route::IndexGet => "GET idx",
            Route::IndexHead => "HEAD idx",
            Route::PackageGet => "GET pkg",
            Route::PackageHead => "HEAD pkg",
            Route::Put => "PUT",
            Route::Delete => "DELETE",
        }
    }

    /// Column of the expectation tables: 0 read, 1 PUT, 2 DELETE.
    fn class(self) -> usize {
        match self {
            Route::Put => 1,
            Route::Delete => 2,
            _ => 0,
        }
    }
}

#[derive(Clone)]
enum Credential {
    None,
    Basic(&'static str, String),
    Bearer(String),
}

struct Caller {
    label: &'static str,
    /// How the credential is sent, for the legend.
    how: &'static str,
    credential: Credential,
    /// Whether the credential authenticates at all.
    valid: bool,
}

/// One request of the matrix and what came back.
struct Cell {
    prefix: &'static str,
    owner: &'static str,
    route: Route,
    caller: &'static str,
    method: &'static str,
    path: String,
    want: u16,
    got: u16,
    challenge: Option<String>,
    body: String,
    /// For PUT/DELETE: whether the package's presence afterwards matches the status.
    side_effect: Option<Result<(), String>>,
}

impl Cell {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.got != self.want {
            problems.push(format!("status {} (want {})", self.got, self.want));
        }
        if self.got == 401
            && !self
                .challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Basic "))
        {
            problems.push(format!(
                "401 without a `WWW-Authenticate: Basic ...` header (got {:?})",
                self.challenge
            ));
        }
        if let Some(Err(e)) = &self.side_effect {
            problems.push(e.clone());
        }
        problems
    }
}

struct Fixture {
    callers: Vec<Caller>,
    /// Real key names of `pubco` and `privco` (and a made-up one for `ghostco`).
    keynames: Vec<(&'static str, String)>,
}

async fn admin_get(server: &TestServer, path: &str) -> reqwest::Response {
    server.get(path, Some(("admin", ADMIN_TOKEN))).await
}

/// A successful authentication from this address clears its failure count, so the
/// many deliberate failures of the matrix are never slowed down by the throttle.
async fn clear_failure_count(server: &TestServer) {
    assert_eq!(admin_get(server, "/pubco/key").await.status(), 200);
}

/// `/{owner}` natively, else the prefix template with the owner filled in.
fn base_path(template: &str, owner: &str) -> String {
    if template.is_empty() {
        format!("/{owner}")
    } else {
        template.replace("{o}", owner)
    }
}

fn package_file(name: &str) -> String {
    format!("{name}-1.0-r0.apk")
}

/// Package names of the PUT and DELETE cells: unique per caller and prefix.
fn cell_package(kind: &str, caller: &str, prefix: &str) -> String {
    format!("{kind}-{caller}-{prefix}")
}

async fn setup(server: &TestServer) -> Fixture {
    let store = &server.state.store;
    for (name, private) in [("pubco", false), ("privco", true), ("other", false)] {
        store.create_owner(name, private, true, None).await.unwrap();
    }
    for owner in ["pubco", "privco"] {
        let response = server
            .put_admin(
                &format!("/{owner}/v1/main"),
                package("pkg", "1.0-r0", "x86_64"),
            )
            .await;
        assert_eq!(response.status(), 201, "preloading {owner}");
    }

    // `member` is admin of both owners (and of `other`, so that a token can be limited
    // to it), so only the token scope limits its tokens.
    let hash = alpine_registry::access::hash_password(MEMBER_PASSWORD).unwrap();
    alpine_registry::registry::accounts::create_user(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "member",
        Some(&hash),
        false,
        false,
    )
    .await
    .unwrap();
    let member = store.user_by_name("member").await.unwrap().unwrap();
    for owner in ["pubco", "privco", "other"] {
        let owner = store.owner_by_name(owner).await.unwrap().unwrap();
        store
            .set_member(owner.id, member.id, Role::Admin, None)
            .await
            .unwrap();
    }
    let token = |scope: Role, owner: Option<&'static str>, expires_at: Option<i64>| {
        let state = server.state.clone();
        async move {
            alpine_registry::registry::accounts::create_token(
                &state,
                &alpine_registry::registry::audit::Actor::cli(),
                alpine_registry::registry::accounts::TokenRequest {
                    user: "member",
                    scope,
                    owner,
                    expires_at,
                    label: None,
                },
                None,
            )
            .await
            .unwrap()
        }
    };
    let read = token(Role::Read, None, None).await;
    let write = token(Role::Write, None, None).await;
    let admin = token(Role::Admin, None, None).await;
    let other = token(Role::Admin, Some("other"), None).await;
    let expired = token(Role::Admin, None, Some(common::unix_now() - 3600)).await;
    let revoked = token(Role::Admin, None, None).await;
    // The newest token of `member` is the one just created.
    let revoked_id = store
        .list_tokens(Some(member.id))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .max()
        .unwrap();
    assert!(store
        .revoke_token(revoked_id, common::unix_now(), None)
        .await
        .unwrap());
    let outsider = server
        .user_with_token("outsider", Role::Admin, None, None)
        .await;

    let callers = vec![
        Caller {
            label: "anonymous",
            how: "no Authorization header",
            credential: Credential::None,
            valid: true,
        },
        Caller {
            label: "read-token",
            how: "Basic member:<read-scope token>",
            credential: Credential::Basic("member", read),
            valid: true,
        },
        Caller {
            label: "write-token",
            how: "Basic member:<write-scope token>",
            credential: Credential::Basic("member", write),
            valid: true,
        },
        Caller {
            label: "admin-token",
            how: "Bearer <admin-scope token of member>",
            credential: Credential::Bearer(admin),
            valid: true,
        },
        Caller {
            label: "other-owner-token",
            how: "Basic token:<admin-scope token of member, --owner other>",
            credential: Credential::Basic("token", other),
            valid: true,
        },
        Caller {
            label: "expired-token",
            how: "Bearer <admin-scope token of member, expired an hour ago>",
            credential: Credential::Bearer(expired),
            valid: false,
        },
        Caller {
            label: "revoked-token",
            how: "Basic member:<admin-scope token of member, revoked>",
            credential: Credential::Basic("member", revoked),
            valid: false,
        },
        Caller {
            label: "unknown-token",
            how: "Bearer <a token never issued>",
            credential: Credential::Bearer("apkreg_never-issued-0123456789abcdefghij".into()),
            valid: false,
        },
        Caller {
            label: "wrong-password",
            how: "Basic member:<wrong password> (member has an argon2 password)",
            credential: Credential::Basic("member", "not-the-password".into()),
            valid: false,
        },
        Caller {
            label: "password",
            how: "Basic member:<correct password>",
            credential: Credential::Basic("member", MEMBER_PASSWORD.into()),
            valid: true,
        },
        Caller {
            label: "outsider",
            how: "Basic outsider:<admin-scope token>, member of neither owner",
            credential: Credential::Basic("outsider", outsider),
            valid: true,
        },
        Caller {
            label: "site-admin",
            how: "Basic admin:<bootstrap token> (site administrator)",
            credential: Credential::Basic("admin", ADMIN_TOKEN.into()),
            valid: true,
        },
    ];

    let mut keynames = Vec::new();
    for owner in ["pubco", "privco"] {
        let response = admin_get(server, &format!("/{owner}/key")).await;
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        let name = disposition
            .strip_prefix("attachment; filename=\"")
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("Content-Disposition {disposition:?}"))
            .to_string();
        assert!(name.starts_with(&format!("{owner}-")), "{name}");
        keynames.push((owner, name));
    }
    keynames.push(("ghostco", "ghostco-00000000.rsa.pub".to_string()));

    // One package per DELETE cell, present when its cell runs.
    for (prefix, _) in PREFIXES {
        for caller in &callers {
            for owner in ["pubco", "privco"] {
                let name = cell_package("del", caller.label, prefix);
                let response = server
                    .put_admin(
                        &format!("/{owner}/v1/main"),
                        package(&name, "1.0-r0", "x86_64"),
                    )
                    .await;
                assert_eq!(response.status(), 201, "preloading {owner} {name}");
            }
        }
    }
    Fixture { callers, keynames }
}

async fn send(
    server: &TestServer,
    method: &'static str,
    path: &str,
    credential: &Credential,
    body: Option<Vec<u8>>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.client.request(method, server.url(path));
    match credential {
        Credential::None => {}
        Credential::Basic(user, secret) => request = request.basic_auth(user, Some(secret)),
        Credential::Bearer(token) => request = request.bearer_auth(token),
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap()
}

/// Whether `owner`'s repository holds `file`, asked as the site admin.
async fn package_exists(server: &TestServer, owner: &str, file: &str) -> bool {
    let status = admin_get(server, &format!("/{owner}/v1/main/x86_64/{file}"))
        .await
        .status();
    assert!(
        status == 200 || status == 404,
        "checking {owner} {file}: {status}"
    );
    status == 200
}

async fn run_matrix(server: &TestServer, fixture: &Fixture, expected: &[Row]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (prefix, base_template) in PREFIXES {
        for owner in OWNERS {
            let base = base_path(base_template, owner);
            let keyname = &fixture
                .keynames
                .iter()
                .find(|(o, _)| *o == owner)
                .unwrap()
                .1;
            for caller in &fixture.callers {
                let row = expected
                    .iter()
                    .find(|(label, _)| *label == caller.label)
                    .unwrap_or_else(|| panic!("no expectations for {}", caller.label))
                    .1;
                let owner_index = OWNERS.iter().position(|o| *o == owner).unwrap();
                for route in ROUTES {
                    let want = row[owner_index][route.class()];
                    let put_name = cell_package("put", caller.label, prefix);
                    let del_name = cell_package("del", caller.label, prefix);
                    let (method, path, body) = match route {
                        Route::Key => ("GET", format!("{base}/key"), None),
                        Route::KeyNamed => ("GET", format!("{base}/keys/{keyname}"), None),
                        Route::IndexGet => (
                            "GET",
                            format!("{base}/v1/main/x86_64/APKINDEX.tar.gz"),
                            None,
                        ),
                        Route::IndexHead => (
                            "HEAD",
                            format!("{base}/v1/main/x86_64/APKINDEX.tar.gz"),
                            None,
                        ),
                        Route::PackageGet => (
                            "GET",
                            format!("{base}/v1/main/x86_64/{}", package_file("pkg")),
                            None,
                        ),
                        Route::PackageHead => (
                            "HEAD",
                            format!("{base}/v1/main/x86_64/{}", package_file("pkg")),
                            None,
                        ),
                        Route::Put => (
                            "PUT",
                            format!("{base}/v1/main"),
                            Some(package(&put_name, "1.0-r0", "x86_64")),
                        ),
                        Route::Delete => (
                            "DELETE",
                            format!("{base}/v1/main/x86_64/{}", package_file(&del_name)),
                            None,
                        ),
                    };
                    let response = send(server, method, &path, &caller.credential, body).await;
                    let got = response.status().as_u16();
                    let challenge = response
                        .headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap_or("<not ASCII>").to_string());
                    let body = response.text().await.unwrap_or_default();
                    let side_effect = match (route, owner) {
                        (_, "ghostco") => None,
                        (Route::Put, _) => {
                            let exists =
                                package_exists(server, owner, &package_file(&put_name)).await;
                            Some(if exists == (got == 201) {
                                Ok(())
                            } else {
                                Err(format!(
                                    "after PUT answered {got} the package {} exist",
                                    if exists { "does" } else { "does not" }
                                ))
                            })
                        }
                        (Route::Delete, _) => {
                            let exists =
                                package_exists(server, owner, &package_file(&del_name)).await;
                            Some(if exists != (got == 204) {
                                Ok(())
                            } else {
                                Err(format!(
                                    "after DELETE answered {got} the package {} exist",
                                    if exists { "does" } else { "does not" }
                                ))
                            })
                        }
                        _ => None,
                    };
                    if !caller.valid {
                        clear_failure_count(server).await;
                    }
                    cells.push(Cell {
                        prefix,
                        owner,
                        route,
                        caller: caller.label,
                        method,
                        path,
                        want,
                        got,
                        challenge,
                        body,
                        side_effect,
                    });
                }
            }
        }
    }
    cells
}

/// A hidden private owner must answer exactly like an owner that does not exist, to
/// anonymous callers too.
fn hidden_looks_unknown(cells: &[Cell]) -> Vec<String> {
    let mut problems = Vec::new();
    for hidden in cells
        .iter()
        .filter(|c| c.owner == "privco" && (c.got == 404 || c.caller == "anonymous"))
    {
        let Some(unknown) = cells.iter().find(|c| {
            c.owner == "ghostco"
                && c.prefix == hidden.prefix
                && c.route == hidden.route
                && c.caller == hidden.caller
        }) else {
            continue;
        };
        let hidden_body = hidden.body.replace("privco", "ghostco");
        if unknown.got != hidden.got || unknown.body != hidden_body {
            problems.push(format!(
                "[{}] {} {} as {}: hidden privco answers {} {:?}, unknown ghostco answers {} {:?}",
                hidden.prefix,
                hidden.method,
                hidden.path,
                hidden.caller,
                hidden.got,
                hidden.body,
                unknown.got,
                unknown.body
            ));
        }
    }
    problems
}

/// The matrix as tables (one per prefix and owner), then every problem in full.
fn render(fixture: &Fixture, cells: &[Cell], extra: &[String]) -> String {
    let mut out = String::new();
    let width = 10;
    writeln!(
        out,
        "\naccess matrix: `200` = as expected, `404!=403` = got 404, want 403, `*` = other problem\n"
    )
    .unwrap();
    for (prefix, template) in PREFIXES {
        for owner in OWNERS {
            let base = base_path(template, owner);
            writeln!(out, "[{prefix}] {owner} ({base}/...)").unwrap();
            write!(out, "  {:<18}", "caller").unwrap();
            for route in ROUTES {
                write!(out, "{:>width$}", route.label()).unwrap();
            }
            writeln!(out).unwrap();
            for caller in &fixture.callers {
                write!(out, "  {:<18}", caller.label).unwrap();
                for route in ROUTES {
                    let text = match cells.iter().find(|c| {
                        c.prefix == prefix
                            && c.owner == owner
                            && c.route == route
                            && c.caller == caller.label
                    }) {
                        None => "-".to_string(),
                        Some(c) if c.got != c.want => format!("{}!={}", c.got, c.want),
                        Some(c) if !c.problems().is_empty() => format!("{}*", c.got),
                        Some(c) => c.got.to_string(),
                    };
                    write!(out, "{text:>width$}").unwrap();
                }
                writeln!(out).unwrap();
            }
            writeln!(out).unwrap();
        }
    }
    writeln!(out, "callers:").unwrap();
    for caller in &fixture.callers {
        writeln!(out, "  {:<18} {}", caller.label, caller.how).unwrap();
    }
    let mut problems: Vec<String> = cells
        .iter()
        .flat_map(|c| {
            c.problems().into_iter().map(move |p| {
                let body: String = c.body.chars().take(200).collect();
                format!(
                    "[{}] {} {} as {}: {p}; body {body:?}",
                    c.prefix, c.method, c.path, c.caller
                )
            })
        })
        .collect();
    problems.extend(extra.iter().cloned());
    writeln!(
        out,
        "\n{} problem(s) in {} cells:",
        problems.len(),
        cells.len()
    )
    .unwrap();
    for p in &problems {
        writeln!(out, "  {p}").unwrap();
    }
    out
}

async fn check_matrix(server: TestServer, expected: &[Row]) {
    let fixture = setup(&server).await;
    let cells = run_matrix(&server, &fixture, expected).await;
    let extra = hidden_looks_unknown(&cells);
    let failed = !extra.is_empty() || cells.iter().any(|c| !c.problems().is_empty());
    let report = render(&fixture, &cells, &extra);
    // Printed always (visible with --nocapture), and on failure by the harness.
    println!("{report}");
    assert_eq!(
        cells.len(),
        PREFIXES.len() * OWNERS.len() * fixture.callers.len() * ROUTES.len()
    );
    server.stop().await;
    assert!(!failed, "access matrix mismatch, see the table above");
}

#[tokio::test]
async fn access_matrix_with_anonymous_read() {
    let server = TestServer::start().await;
    check_matrix(server, &WITH_ANONYMOUS_READ).await;
}

#[tokio::test]
async fn access_matrix_without_anonymous_read() {
    let server = TestServer::start_with(|c| c.auth.anonymous_read = false).await;
    check_matrix(server, &WITHOUT_ANONYMOUS_READ).await;
}
