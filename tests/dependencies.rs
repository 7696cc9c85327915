//! The publish-time dependency check through real HTTP (and the binary for
//! `repository set`), on the backends the tests run on: an upload whose dependency
//! nothing provides is refused (422, nothing stored) or accepted with warnings, as the
//! configuration or the repository's own setting says; providers in the same
//! repository, another repository of the owner's branch and an external index (signed,
//! checked with its key, read again when it changes) satisfy it, with their versions;
//! a delete that leaves others depending on nothing is warned about or refused.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::apk::index::{sign_index, write_unsigned_index};
use alpine_registry::apk::sign::{SignatureAlgorithm, SigningKey};
use alpine_registry::config::{DependencyCheck, DependencySource};
use common::*;
use serde_json::{json, Value};

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_TOKEN));

/// A package depending on `depends` and providing `provides`.
fn pkg(name: &str, version: &str, depends: &[&str], provides: &[&str]) -> Vec<u8> {
    let mut builder = PackageBuilder::new(name, version, "x86_64")
        .file(&format!("usr/share/{name}/README"), name.as_bytes());
    if !depends.is_empty() {
        builder = builder.field("depend", &depends.join(" "));
    }
    if !provides.is_empty() {
        builder = builder.field("provides", &provides.join(" "));
    }
    builder.build()
}

/// An upload's status, its `X-Alpine-Registry-Warning` headers and its body.
async fn upload(server: &TestServer, repo: &str, bytes: Vec<u8>) -> (u16, Vec<String>, Value) {
    let response = server.put_admin(repo, bytes).await;
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (u16, Vec<String>, Value) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .get_all("x-alpine-registry-warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

async fn refusing() -> TestServer {
    TestServer::start_with(|c| c.repositories.dependency_check = DependencyCheck::Refuse).await
}

#[tokio::test]
async fn a_missing_shared_library_is_refused_under_refuse_and_nothing_is_stored() {
    let server = refusing().await;
    let (status, headers, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg(
            "app",
            "1.0-r0",
            &["so:libnothere.so.1", "!conflicting"],
            &[],
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(headers.is_empty());
    assert_eq!(body["error"], "Unprocessable Entity");
    let unsatisfied = strings(&body["unsatisfied"]);
    assert_eq!(
        unsatisfied.len(),
        1,
        "the conflict is no dependency: {unsatisfied:?}"
    );
    assert!(
        unsatisfied[0].contains("so:libnothere.so.1"),
        "{unsatisfied:?}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("so:libnothere.so.1"));
    let download = server
        .get("/admin/v3.21/main/x86_64/app-1.0-r0.apk", None)
        .await;
    assert_eq!(download.status(), 404);
    assert!(server.stored_blobs().await.is_empty(), "nothing stored");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_shared_library_is_accepted_with_a_warning_under_warn() {
    // warn is the default.
    let server = TestServer::start().await;
    let (status, headers, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("app", "1.0-r0", &["so:libnothere.so.1", "/bin/sh"], &[]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let warnings = strings(&body["warnings"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("so:libnothere.so.1"), "{warnings:?}");
    assert_eq!(headers, warnings, "one header per warning");
    let index = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&index), ["app"]);
    // Without dependencies: no warning, and no header.
    let (status, headers, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("plain", "1.0-r0", &[], &[]),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["warnings"], json!([]));
    assert!(headers.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_provider_in_the_repository_or_another_of_the_owners_branch_satisfies() {
    let server = refusing().await;
    let app = |name: &str| pkg(name, "1.0-r0", &["so:libnothere.so.1", "cmd:helper"], &[]);
    let (status, _, _) = upload(&server, "/admin/v3.21/main", app("app")).await;
    assert_eq!(status, 422);
    // The package's own provides count for it.
    let (status, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg(
            "selfish",
            "1.0-r0",
            &["so:libself.so.1", "selfish=1.0-r0"],
            &["so:libself.so.1=1.0"],
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg(
            "libnothere",
            "1.2-r0",
            &[],
            &["so:libnothere.so.1=1.2", "cmd:helper"],
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, headers, body) = upload(&server, "/admin/v3.21/main", app("app")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["warnings"], json!([]));
    assert!(headers.is_empty());
    // Another repository of the same owner and branch.
    let (status, _, body) = upload(&server, "/admin/v3.21/community", app("app2")).await;
    assert_eq!(status, 201, "{body}");
    // Not another branch, nor another owner.
    let (status, _, _) = upload(&server, "/admin/edge/main", app("app3")).await;
    assert_eq!(status, 422);
    let token = server
        .user_with_token("bob", alpine_registry::store::Role::Admin, None, None)
        .await;
    let response = server
        .put("/bob/v3.21/main", app("app4"), Some(("bob", &token)))
        .await;
    assert_eq!(response.status(), 422);
    server.stop().await;
}

#[tokio::test]
async fn version_constraints_are_checked_against_the_versions_found() {
    let server = TestServer::start().await;
    let (status, _, _) = upload(&server, "/admin/v3.21/main", pkg("foo", "1.0-r0", &[], &[])).await;
    assert_eq!(status, 201);
    let warnings = |body: &Value| strings(&body["warnings"]);
    let (_, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("needs-two", "1", &["foo>=2"], &[]),
    )
    .await;
    let unmet = warnings(&body);
    assert_eq!(unmet.len(), 1, "{unmet:?}");
    assert!(
        unmet[0].contains("foo>=2") && unmet[0].contains("1.0-r0"),
        "{unmet:?}"
    );
    let (_, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg(
            "fine",
            "1",
            &["foo<2", "foo=1.0-r0", "foo~1.0", "foo>0.9"],
            &[],
        ),
    )
    .await;
    assert_eq!(warnings(&body), Vec::<String>::new());
    // A versioned dependency on a name provided without a version is not satisfied.
    upload(
        &server,
        "/admin/v3.21/main",
        pkg("tool", "3", &[], &["cmd:tool"]),
    )
    .await;
    let (_, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("user", "1", &["cmd:tool>=1"], &[]),
    )
    .await;
    assert_eq!(warnings(&body).len(), 1);
    let (status, _, _) = upload(&server, "/admin/v3.21/main", pkg("foo", "2.0-r0", &[], &[])).await;
    assert_eq!(status, 201);
    let (_, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("needs-two-b", "1", &["foo>=2"], &[]),
    )
    .await;
    assert_eq!(warnings(&body), Vec::<String>::new());
    server.stop().await;
}

/// Writes an index listing `stanzas` signed with `key` to `path`.
fn write_index(path: &Path, key: &SigningKey, stanzas: &[&str]) {
    let unsigned = write_unsigned_index("alpine main", stanzas).unwrap();
    let signed = sign_index(&unsigned, key, &[SignatureAlgorithm::Rsa]).unwrap();
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, signed).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Uploads `bytes` until it is accepted (the check refusing it meanwhile stores nothing).
async fn accepted_within(server: &TestServer, repo: &str, bytes: Vec<u8>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = upload(server, repo, bytes.clone()).await;
        if status == 201 {
            return;
        }
        assert_eq!(status, 422, "{body}");
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_external_index_satisfies_once_read_and_is_read_again_when_it_changes() {
    let sources = tempfile::tempdir().unwrap();
    let alpine = SigningKey::generate("alpine-devel", 1024).unwrap();
    let alpine_key = sources.path().join(alpine.key_name());
    std::fs::write(&alpine_key, alpine.public_key_pem().unwrap()).unwrap();
    let musl = "C:Q1a\nP:musl\nV:1.2.5-r9\nA:x86_64\np:so:libc.musl-x86_64.so.1=1\n\n";
    let index = sources.path().join("main.tar.gz");
    write_index(&index, &alpine, &[musl]);
    // A source whose signature does not verify with the key configured for it: skipped.
    let forger = SigningKey::generate("alpine-devel", 1024).unwrap();
    let forged_key = sources.path().join("forged").join(forger.key_name());
    std::fs::create_dir_all(forged_key.parent().unwrap()).unwrap();
    std::fs::write(&forged_key, alpine.public_key_pem().unwrap()).unwrap();
    let forged = sources.path().join("forged.tar.gz");
    write_index(
        &forged,
        &forger,
        &["C:Q1b\nP:evil\nV:1\nA:x86_64\np:so:libevil.so.1=1\n\n"],
    );
    let server = TestServer::start_with(|c| {
        c.repositories.dependency_check = DependencyCheck::Refuse;
        c.repositories.dependency_refresh_secs = 1;
        c.repositories.dependency_sources = vec![
            DependencySource {
                location: forged.display().to_string(),
                branches: vec!["v3.21".into()],
                key: Some(forged_key.clone()),
            },
            DependencySource {
                location: format!("file://{}", index.display()),
                branches: vec!["v3.21".into()],
                key: Some(alpine_key.clone()),
            },
            DependencySource {
                location: sources.path().join("missing.tar.gz").display().to_string(),
                branches: Vec::new(),
                key: None,
            },
        ];
    })
    .await;
    let libc = |name: &str| pkg(name, "1.0-r0", &["so:libc.musl-x86_64.so.1"], &[]);
    accepted_within(
        &server,
        "/admin/v3.21/main",
        libc("app"),
        Duration::from_secs(20),
    )
    .await;
    // The forged source was looked at before (sources are read in order), and skipped.
    let (status, _, _) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("evil-user", "1", &["so:libevil.so.1"], &[]),
    )
    .await;
    assert_eq!(status, 422);
    // The source serves v3.21 only.
    let (status, _, _) = upload(&server, "/admin/edge/main", libc("app")).await;
    assert_eq!(status, 422);
    // Changed: read again.
    let newer = "C:Q1c\nP:libnew\nV:2-r0\nA:x86_64\np:so:libnew.so.2=2\n\n";
    write_index(&index, &alpine, &[newer, musl]);
    let new_user = pkg("new-user", "1", &["so:libnew.so.2"], &[]);
    accepted_within(
        &server,
        "/admin/v3.21/main",
        new_user,
        Duration::from_secs(20),
    )
    .await;
    server.stop().await;
}

async fn settings(server: &TestServer, repo: &str, body: Option<Value>) -> (u16, Value) {
    let url = server.url(&format!(
        "/api/v1/owners/admin/repositories/{repo}/settings"
    ));
    let request = match body {
        Some(body) => server.client.put(url).json(&body),
        None => server.client.get(url),
    };
    let response = request
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_repository_setting_beats_the_configured_one() {
    let server = refusing().await;
    let missing = |name: &str| pkg(name, "1", &["so:libnothere.so.1"], &[]);
    let (status, _, _) = upload(&server, "/admin/v3.21/main", pkg("seed", "1", &[], &[])).await;
    assert_eq!(status, 201);
    let (status, body) = settings(&server, "v3.21/main", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["dependency_check"], Value::Null);
    assert_eq!(body["effective_dependency_check"], "refuse");
    let (status, body) = settings(
        &server,
        "v3.21/main",
        Some(json!({"dependency_check": "warn"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective_dependency_check"], "warn");
    let (status, _, body) = upload(&server, "/admin/v3.21/main", missing("a")).await;
    assert_eq!(status, 201);
    assert_eq!(strings(&body["warnings"]).len(), 1);
    // Another repository still follows the configuration.
    let (status, _, _) = upload(&server, "/admin/v3.21/other", missing("b")).await;
    assert_eq!(status, 422);
    // off: no check at all.
    settings(
        &server,
        "v3.21/main",
        Some(json!({"dependency_check": "off"})),
    )
    .await;
    let (status, _, body) = upload(&server, "/admin/v3.21/main", missing("c")).await;
    assert_eq!((status, body["warnings"].clone()), (201, json!([])));
    // null: the configuration again.
    let (_, body) = settings(
        &server,
        "v3.21/main",
        Some(json!({"dependency_check": null})),
    )
    .await;
    assert_eq!(body["effective_dependency_check"], "refuse");
    let (status, _, _) = upload(&server, "/admin/v3.21/main", missing("d")).await;
    assert_eq!(status, 422);
    // `{}` changes nothing; an unknown repository, an unknown value are refused.
    let (status, _) = settings(&server, "v3.21/main", Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = settings(
        &server,
        "v3.21/main",
        Some(json!({"dependency_check": "maybe"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = settings(&server, "v3.21/nope", None).await;
    assert_eq!(status, 404);
    // Changing it takes the admin role on the owner; a writer may read it.
    alpine_registry::registry::accounts::create_user(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "ci",
        None,
        false,
        false,
    )
    .await
    .unwrap();
    alpine_registry::registry::accounts::add_member(
        &server.state,
        &alpine_registry::registry::audit::Actor::cli(),
        "admin",
        "ci",
        alpine_registry::store::Role::Write,
    )
    .await
    .unwrap();
    let writer = server
        .user_with_token(
            "ci",
            alpine_registry::store::Role::Admin,
            Some("admin"),
            None,
        )
        .await;
    let url = server.url("/api/v1/owners/admin/repositories/v3.21/main/settings");
    let response = server
        .client
        .put(&url)
        .basic_auth("ci", Some(&writer))
        .json(&json!({"dependency_check": "off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = server
        .client
        .get(&url)
        .basic_auth("ci", Some(&writer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn deleting_what_others_depend_on_is_warned_about_or_refused() {
    let server = TestServer::start().await;
    let lib = pkg("libfoo", "1.0-r0", &[], &["so:libfoo.so.1=1.0"]);
    let (status, _, _) = upload(&server, "/admin/v3.21/main", lib.clone()).await;
    assert_eq!(status, 201);
    let (status, _, body) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("app", "1", &["so:libfoo.so.1"], &[]),
    )
    .await;
    assert_eq!((status, body["warnings"].clone()), (201, json!([])));
    let path = "/admin/v3.21/main/x86_64/libfoo-1.0-r0.apk";
    let set = |check: &'static str| {
        let server = &server;
        async move {
            let (status, _) = settings(
                server,
                "v3.21/main",
                Some(json!({"dependency_check": check})),
            )
            .await;
            assert_eq!(status, 200);
        }
    };
    set("refuse").await;
    let (status, _, body) = answer(server.delete(path, ADMIN).await).await;
    assert_eq!(status, 422, "{body}");
    let unsatisfied = strings(&body["unsatisfied"]);
    assert_eq!(unsatisfied.len(), 1);
    assert!(
        unsatisfied[0].contains("x86_64/app-1.apk") && unsatisfied[0].contains("so:libfoo.so.1"),
        "{unsatisfied:?}"
    );
    assert_eq!(server.get(path, None).await.status(), 200, "not deleted");
    // Something else providing it: the delete goes through without a word.
    let (status, _, _) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("libfoo-compat", "1", &[], &["so:libfoo.so.1=1.1"]),
    )
    .await;
    assert_eq!(status, 201);
    let (status, headers, _) = answer(server.delete(path, ADMIN).await).await;
    assert_eq!((status, headers), (204, Vec::new()));
    // Under warn the last provider goes, and the answer says what it leaves.
    set("warn").await;
    let (status, headers, _) = answer(
        server
            .delete("/admin/v3.21/main/x86_64/libfoo-compat-1.apk", ADMIN)
            .await,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert!(headers[0].contains("x86_64/app-1.apk"), "{headers:?}");
    let index = server
        .verified_index("admin", "/admin/v3.21/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(index_names(&index), ["app"]);
    server.stop().await;
}

/// `repository set --dependency-check` on the real binary, beside the running server.
#[tokio::test]
async fn the_repository_set_command_changes_the_check() {
    let server = TestServer::start().await;
    let (status, _, _) = upload(&server, "/admin/v3.21/main", pkg("seed", "1", &[], &[])).await;
    assert_eq!(status, 201);
    let command = |args: &[&str]| {
        let mut command = cli(server.dir.path());
        if let Some(url) = server.database_url() {
            command.env("ALPINE_REGISTRY__DATABASE__URL", url).env(
                "ALPINE_REGISTRY__SIGNING__MASTER_KEY",
                common::postgres::MASTER_KEY,
            );
        }
        command.args(args);
        command
    };
    let (_, stderr) = run_ok_both(&mut command(&[
        "repository",
        "set",
        "admin/v3.21/main",
        "--dependency-check",
        "refuse",
    ]));
    assert!(
        stderr.contains("admin/v3.21/main: dependency check refuse"),
        "{stderr}"
    );
    let (status, _, _) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("app", "1", &["so:libnothere.so.1"], &[]),
    )
    .await;
    assert_eq!(status, 422);
    let (_, stderr) = run_ok_both(&mut command(&[
        "repository",
        "set",
        "admin/v3.21/main",
        "--dependency-check",
        "default",
    ]));
    assert!(
        stderr.contains("dependency check warn (repositories.dependency_check)"),
        "{stderr}"
    );
    let (status, _, _) = upload(
        &server,
        "/admin/v3.21/main",
        pkg("app", "1", &["so:libnothere.so.1"], &[]),
    )
    .await;
    assert_eq!(status, 201);
    let stderr = run_err(&mut command(&[
        "repository",
        "set",
        "admin/v3.21/main",
        "--dependency-check",
        "sometimes",
    ]));
    assert!(stderr.contains("use off, warn or refuse"), "{stderr}");
    let stderr = run_err(&mut command(&[
        "repository",
        "set",
        "admin/v3.21/nope",
        "--dependency-check",
        "off",
    ]));
    assert!(
        stderr.contains("no repository admin/v3.21/nope"),
        "{stderr}"
    );
    server.stop().await;
}
