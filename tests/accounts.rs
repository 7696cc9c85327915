//! Administration of accounts: case-insensitive owner names, listing, deleting, changing
//! visibility and passwords, members, and what `token list` shows. Through the real
//! binary for the commands, and real HTTP for their effect on a running registry.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use alpine_registry::registry::accounts::{self, TokenRequest};
use alpine_registry::store::Role;
use common::postgres::TestDatabase;
use common::{package, run_err, run_ok, TestServer, ADMIN_TOKEN, BIN};

/// The binary on the registry in `dir`, or in the PostgreSQL database `database_url`.
fn cli(dir: &std::path::Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(dir)
        .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
        .env_remove("ALPINE_REGISTRY_BOOTSTRAP_TOKEN");
    if let Some(url) = database_url {
        command.env("ALPINE_REGISTRY__DATABASE__URL", url).env(
            "ALPINE_REGISTRY__SIGNING__MASTER_KEY",
            common::postgres::MASTER_KEY,
        );
    }
    command
}

/// A data directory for the binary, with a fresh PostgreSQL database when the tests run
/// against PostgreSQL.
struct Registry {
    dir: tempfile::TempDir,
    database: Option<TestDatabase>,
}

impl Registry {
    fn new() -> Registry {
        Registry {
            dir: tempfile::tempdir().unwrap(),
            database: TestDatabase::from_env(),
        }
    }

    fn cli(&self) -> Command {
        cli(
            self.dir.path(),
            self.database.as_ref().map(|d| d.url.as_str()),
        )
    }
}

fn with_stdin(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The row of `table` whose first column is `first`, split into cells.
fn row<'a>(table: &'a str, first: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .skip(1)
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&first))
}

#[test]
fn owner_names_are_unique_regardless_of_case() {
    let registry = Registry::new();
    run_ok(registry.cli().arg("migrate"));
    run_ok(registry.cli().args(["owner", "create", "acme", "--org"]));
    let message = run_err(registry.cli().args(["owner", "create", "Acme"]));
    assert!(
        message.contains("owner name Acme is taken: acme exists"),
        "{message}"
    );
    assert!(message.contains("regardless of case"), "{message}");
    // A user brings a namespace of its name: the same rule.
    let message = run_err(registry.cli().args(["user", "create", "ACME"]));
    assert!(message.contains("acme exists"), "{message}");
    run_ok(registry.cli().args(["user", "create", "bob"]));
    let message = run_err(registry.cli().args(["user", "create", "Bob"]));
    assert!(message.contains("bob exists"), "{message}");
    // A miss names the owner spelled differently.
    let message = run_err(registry.cli().args(["owner", "member", "list", "ACME"]));
    assert!(message.contains("did you mean acme?"), "{message}");
    let owners = run_ok(registry.cli().args(["owner", "list"]));
    assert_eq!(
        owners
            .lines()
            .filter(|l| l.to_lowercase().starts_with("acme "))
            .count(),
        1,
        "{owners}"
    );
}

#[tokio::test]
async fn the_database_refuses_owners_differing_only_in_case() {
    // Below the checks of the operations: two writers racing past them still cannot
    // create both.
    let server = TestServer::start().await;
    let store = &server.state.store;
    store.create_owner("acme", false, true, None).await.unwrap();
    let err = store
        .create_owner("ACME", false, true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, alpine_registry::store::StoreError::Conflict(_)),
        "{err:?}"
    );
    let err = store
        .create_user("Admin", None, false, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, alpine_registry::store::StoreError::Conflict(_)),
        "{err:?}"
    );
    assert_eq!(store.list_owners().await.unwrap().len(), 2);
    server.stop().await;
}

#[test]
fn users_owners_and_members_are_listed_and_changed() {
    let registry = Registry::new();
    run_ok(registry.cli().arg("migrate"));
    let output = with_stdin(
        registry
            .cli()
            .args(["user", "create", "alice", "--password-stdin"]),
        "first-pass\n",
    );
    assert!(output.status.success());
    run_ok(registry.cli().args(["user", "create", "root", "--admin"]));
    run_ok(registry.cli().args(["owner", "create", "acme", "--org"]));
    run_ok(
        registry
            .cli()
            .args(["owner", "member", "add", "acme", "alice", "--role", "write"]),
    );

    let users = run_ok(registry.cli().args(["user", "list"]));
    assert!(users.starts_with("USER "), "{users}");
    let alice = row(&users, "alice").expect("alice listed");
    assert_eq!(&alice[1..5], ["no", "yes", "0", "2"], "{users}");
    let root = row(&users, "root").expect("root listed");
    assert_eq!(&root[1..3], ["yes", "no"], "{users}");

    let output = with_stdin(
        registry.cli().args(["user", "password", "root"]),
        "pw-root\n",
    );
    assert!(output.status.success());
    let users = run_ok(registry.cli().args(["user", "list"]));
    assert_eq!(row(&users, "root").unwrap()[2], "yes", "{users}");
    run_ok(
        registry
            .cli()
            .args(["user", "password", "root", "--remove"]),
    );
    let users = run_ok(registry.cli().args(["user", "list"]));
    assert_eq!(row(&users, "root").unwrap()[2], "no", "{users}");

    let members = run_ok(registry.cli().args(["owner", "member", "list", "acme"]));
    assert_eq!(
        row(&members, "alice"),
        Some(vec!["alice", "write"]),
        "{members}"
    );

    let owners = run_ok(registry.cli().args(["owner", "list"]));
    let acme = row(&owners, "acme").expect("acme listed");
    assert_eq!(
        &acme[1..6],
        ["public", "organisation", "1", "0", "0"],
        "{owners}"
    );
    run_ok(
        registry
            .cli()
            .args(["owner", "visibility", "acme", "private"]),
    );
    let owners = run_ok(registry.cli().args(["owner", "list"]));
    assert_eq!(row(&owners, "acme").unwrap()[1], "private", "{owners}");

    run_ok(
        registry
            .cli()
            .args(["owner", "member", "remove", "acme", "alice"]),
    );
    let members = run_ok(registry.cli().args(["owner", "member", "list", "acme"]));
    assert_eq!(row(&members, "alice"), None, "{members}");
    let message = run_err(
        registry
            .cli()
            .args(["owner", "member", "remove", "acme", "alice"]),
    );
    assert!(message.contains("alice has no role on acme"), "{message}");

    // Deleting a user takes its namespace; the last site administrator stays.
    run_ok(registry.cli().args(["user", "delete", "alice"]));
    let users = run_ok(registry.cli().args(["user", "list"]));
    assert_eq!(row(&users, "alice"), None, "{users}");
    let owners = run_ok(registry.cli().args(["owner", "list"]));
    assert_eq!(row(&owners, "alice"), None, "{owners}");
    let message = run_err(registry.cli().args(["user", "delete", "root"]));
    assert!(message.contains("last site administrator"), "{message}");
    // An organisation goes with owner delete; a user's namespace goes with the user.
    let message = run_err(registry.cli().args(["owner", "delete", "root"]));
    assert!(message.contains("namespace of user root"), "{message}");
    run_ok(registry.cli().args(["owner", "delete", "acme"]));
    let message = run_err(registry.cli().args(["owner", "member", "list", "acme"]));
    assert!(message.contains("no owner named \"acme\""), "{message}");
}

#[tokio::test]
async fn password_changes_and_visibility_take_effect_on_the_running_registry() {
    let server = TestServer::start().await;
    let state = &server.state;
    let hash = alpine_registry::access::hash_password("old-password").unwrap();
    accounts::create_user(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        Some(&hash),
        false,
        false,
    )
    .await
    .unwrap();
    let index = "/alice/v1/main/x86_64/APKINDEX.tar.gz";
    let response = server
        .put(
            "/alice/v1/main",
            package("hello", "1.0-r0", "x86_64"),
            Some(("alice", "old-password")),
        )
        .await;
    assert_eq!(response.status(), 201);

    // Private: anonymous readers are turned away, the member still reads.
    accounts::set_visibility(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        true,
    )
    .await
    .unwrap();
    assert_eq!(server.get(index, None).await.status(), 401);
    assert_eq!(
        server
            .get(index, Some(("alice", "old-password")))
            .await
            .status(),
        200
    );
    accounts::set_visibility(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        false,
    )
    .await
    .unwrap();
    assert_eq!(server.get(index, None).await.status(), 200);

    // A new password replaces the old one at once.
    accounts::set_password(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "alice",
        Some("new-password".into()),
    )
    .await
    .unwrap();
    let path = "/alice/v1/main";
    let response = server
        .put(
            path,
            package("hello", "1.1-r0", "x86_64"),
            Some(("alice", "old-password")),
        )
        .await;
    assert_eq!(response.status(), 401);
    let response = server
        .put(
            path,
            package("hello", "1.1-r0", "x86_64"),
            Some(("alice", "new-password")),
        )
        .await;
    assert_eq!(response.status(), 201);
    server.stop().await;
}

#[tokio::test]
async fn deleting_an_owner_with_repositories_needs_force_and_takes_them_away() {
    let server = TestServer::start().await;
    let state = &server.state;
    accounts::create_owner(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        false,
        true,
        true,
    )
    .await
    .unwrap();
    let response = server
        .put_admin("/acme/v1/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    let old_key = server.get("/acme/key", None).await;
    assert_eq!(old_key.status(), 200);
    let old_key_name = old_key.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();

    let err = accounts::delete_owner(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("holds 1 repository (1 packages)"),
        "{err}"
    );
    assert_eq!(
        server
            .get("/acme/v1/main/x86_64/APKINDEX.tar.gz", None)
            .await
            .status(),
        200
    );

    let held = accounts::delete_owner(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        true,
    )
    .await
    .unwrap();
    assert_eq!((held.repositories, held.packages), (1, 1));
    for path in [
        "/acme/v1/main/x86_64/APKINDEX.tar.gz",
        "/acme/v1/main/x86_64/hello-1.0-r0.apk",
        "/acme/key",
    ] {
        let response = server.get(path, Some(("admin", ADMIN_TOKEN))).await;
        assert_eq!(response.status(), 404, "{path}");
    }

    // Created again (possibly under the same id), the owner has a new key, and the
    // running server serves and signs with that one, not the cached old one.
    accounts::create_owner(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        false,
        true,
        true,
    )
    .await
    .unwrap();
    let new_key = server.get("/acme/key", None).await;
    assert_eq!(new_key.status(), 200);
    let new_key_name = new_key.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(old_key_name, new_key_name);
    let response = server
        .put_admin("/acme/v1/main", package("hello", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    server
        .verified_index("acme", "/acme/v1/main/x86_64/APKINDEX.tar.gz", None)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn token_list_shows_label_creation_and_last_use_in_columns() {
    let server = TestServer::start().await;
    let state = &server.state;
    accounts::create_user(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "ci",
        None,
        false,
        false,
    )
    .await
    .unwrap();
    let request = TokenRequest {
        user: "ci",
        scope: Role::Write,
        owner: None,
        expires_at: None,
        label: Some("nightly builds"),
    };
    let secret = accounts::create_token(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        request,
        None,
    )
    .await
    .unwrap();
    let unused = TokenRequest {
        user: "ci",
        scope: Role::Read,
        owner: None,
        expires_at: None,
        label: None,
    };
    accounts::create_token(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        unused,
        None,
    )
    .await
    .unwrap();

    let response = server
        .put(
            "/ci/v1/main",
            package("hello", "1.0-r0", "x86_64"),
            Some(("ci", &secret)),
        )
        .await;
    assert_eq!(response.status(), 201);
    // The use is recorded off the request's path; wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tokens = accounts::list_tokens(state, Some("ci")).await.unwrap();
        if tokens.iter().any(|t| t.last_used_at.is_some()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last use never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let table = run_ok(
        cli(server.dir.path(), server.database_url()).args(["token", "list", "--user", "ci"]),
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header = lines[0];
    for column in ["LABEL", "CREATED", "LAST USED", "EXPIRES", "STATUS"] {
        assert!(header.contains(column), "{table}");
    }
    // Aligned: every column starts at the same place in every line.
    let label_at = header.find("LABEL").unwrap();
    let status_at = header.find("STATUS").unwrap();
    let used = lines
        .iter()
        .find(|l| l.contains("nightly builds"))
        .expect("label shown");
    assert_eq!(used.find("nightly builds"), Some(label_at), "{table}");
    assert_eq!(used.find("active"), Some(status_at), "{table}");
    let created_at = header.find("CREATED").unwrap();
    assert!(
        used[created_at..].starts_with("20"),
        "creation shown: {table}"
    );
    let last_used_at = header.find("LAST USED").unwrap();
    assert!(
        used[last_used_at..].starts_with("20"),
        "last use shown: {table}"
    );
    let unused = lines
        .iter()
        .find(|l| l.contains(" read "))
        .expect("second token");
    assert_eq!(&unused[label_at..label_at + 2], "- ", "{table}");
    assert_eq!(&unused[last_used_at..last_used_at + 2], "- ", "{table}");
    server.stop().await;
}
