//! The real binary: administration commands, configuration, first start and shutdown.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

mod common;
use common::{cli, free_port, run_err, run_ok, wait_listening, BIN};

#[test]
fn default_config_is_printed_and_parses_back() {
    let text = run_ok(Command::new(BIN).arg("print-default-config"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &text).unwrap();
    let config = alpine_registry::config::Config::load(Some(&file)).unwrap();
    assert_eq!(config, alpine_registry::config::Config::default());
}

#[test]
fn unknown_config_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
    )
    .unwrap();
    let output = cli(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_port"), "{stderr}");
    let output = cli(dir.path())
        .env("ALPINE_REGISTRY__LIMITS__MAX_UPLOAD_BYTES", "lots")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn admin_commands_manage_users_owners_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(cli(dir.path()).arg("migrate"));
    let mut child = cli(dir.path())
        .args(["user", "create", "bob", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hunter22\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    run_ok(cli(dir.path()).args(["owner", "create", "acme", "--private", "--org"]));
    run_ok(cli(dir.path()).args(["owner", "member", "add", "acme", "bob", "--role", "write"]));
    let token = run_ok(cli(dir.path()).args([
        "token",
        "create",
        "--user",
        "bob",
        "--scope",
        "write",
        "--owner",
        "acme",
        "--expires-in",
        "90d",
    ]));
    let lines: Vec<&str> = token.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {token:?}");
    assert!(lines[0].starts_with("apkreg_"));
    let list = run_ok(cli(dir.path()).args(["token", "list", "--user", "bob"]));
    assert!(
        list.contains("bob") && list.contains("acme") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(lines[0]), "token list never shows secrets");
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    run_ok(cli(dir.path()).args(["token", "revoke", &id]));
    let list = run_ok(cli(dir.path()).args(["token", "list"]));
    assert!(list.contains("revoked"), "{list}");
    let again = cli(dir.path())
        .args(["token", "revoke", &id])
        .output()
        .unwrap();
    assert!(!again.status.success());
    // Duplicates and bad names are refused with a message.
    let dup = cli(dir.path())
        .args(["owner", "create", "acme"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = cli(dir.path())
        .args(["owner", "create", "api"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    run_ok(cli(dir.path()).args(["reindex"]));
    // acme has no repository yet: naming one that does not exist is an error.
    run_err(cli(dir.path()).args(["reindex", "acme/edge"]));
}

/// Starts `serve` on `port` with stdout captured.
fn serve(mut command: Command, port: u16) -> std::process::Child {
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigterm(child: &std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
}

#[test]
fn first_start_prints_one_admin_token_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(cli(dir.path()), port);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("admin token"), "{first}");
    let mut token = String::new();
    stdout.read_line(&mut token).unwrap();
    let token = token.trim().to_string();
    assert!(token.starts_with("apkreg_"), "{token}");
    wait_listening(port);
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let key = client
        .get(format!("http://127.0.0.1:{port}/admin/key"))
        .basic_auth("admin", Some(&token))
        .send()
        .unwrap();
    assert_eq!(key.status(), 200);
    let status = sigterm(&child);
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "graceful exit on SIGTERM");

    // Second start: the database has users, no new token is printed.
    let port = free_port();
    let mut child = serve(cli(dir.path()), port);
    wait_listening(port);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut rest).unwrap();
    assert!(!rest.contains("apkreg_"), "token printed again: {rest}");
}

#[test]
fn bootstrap_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fixed = "apkreg_from-the-environment-0123456789";
    let mut command = cli(dir.path());
    command.env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", fixed);
    let mut child = serve(command, port);
    wait_listening(port);
    let client = reqwest::blocking::Client::new();
    let response = client
        .put(format!("http://127.0.0.1:{port}/admin/v3.21/main"))
        .basic_auth("admin", Some(fixed))
        .body(b"not a package".to_vec())
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "authenticated, then rejected as malformed"
    );
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        !out.contains(fixed),
        "a token from the environment is not echoed"
    );
}

#[test]
fn fsck_exit_code_tells_whether_problems_were_found() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(cli(dir.path()).arg("migrate"));
    run_ok(cli(dir.path()).arg("fsck"));
    let orphan = dir.path().join("blobs/sha256/ab");
    std::fs::create_dir_all(&orphan).unwrap();
    let path = orphan.join("ab".repeat(32));
    std::fs::write(&path, b"x").unwrap();
    let output = cli(dir.path())
        .env("ALPINE_REGISTRY__STORAGE__ORPHAN_GRACE_SECS", "0")
        .arg("fsck")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line per problem: {stdout}");
    assert!(stdout.contains("referenced by no package"), "{stdout}");
    let repaired = cli(dir.path())
        .env("ALPINE_REGISTRY__STORAGE__ORPHAN_GRACE_SECS", "0")
        .args(["fsck", "--repair"])
        .output()
        .unwrap();
    assert!(
        !repaired.status.success(),
        "problems were found, even if repaired"
    );
    assert!(!path.exists());
    run_ok(
        cli(dir.path())
            .env("ALPINE_REGISTRY__STORAGE__ORPHAN_GRACE_SECS", "0")
            .arg("fsck"),
    );
}

#[test]
fn mistakes_in_admin_commands_are_named() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(cli(dir.path()).arg("migrate"));
    let message = run_err(cli(dir.path()).args(["owner", "create", "api"]));
    assert!(message.contains("\"api\" is reserved"), "{message}");
    run_ok(cli(dir.path()).args(["owner", "create", "acme", "--org"]));
    // An owner without that branch: an error, not "0 repositories reindexed".
    let message = run_err(cli(dir.path()).args(["reindex", "acme/v9"]));
    assert!(
        message.contains("no repository matches acme/v9"),
        "{message}"
    );
    // A token limited to an owner its user has no role on could do nothing.
    run_ok(cli(dir.path()).args(["user", "create", "bob"]));
    let message = run_err(cli(dir.path()).args([
        "token", "create", "--user", "bob", "--scope", "write", "--owner", "acme",
    ]));
    assert!(message.contains("bob has no role on acme"), "{message}");
    // Durations need a unit, and must be positive.
    for (bad, expected) in [("3", "give a unit"), ("0d", "must be positive")] {
        let message = run_err(cli(dir.path()).args([
            "token",
            "create",
            "--user",
            "bob",
            "--scope",
            "read",
            "--expires-in",
            bad,
        ]));
        assert!(message.contains(expected), "{bad}: {message}");
    }
    let output = cli(dir.path()).arg("reindex").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 repositories reindexed"));
}

#[test]
fn admin_commands_never_create_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for args in [
        &["token", "list"][..],
        &["user", "create", "bob"],
        &["owner", "create", "acme"],
        &["fsck"],
        &["reindex"],
    ] {
        let message = run_err(cli(&data).args(args));
        let expected = format!(
            "no registry database at {}",
            data.join("registry.db").display()
        );
        assert!(message.contains(&expected), "{args:?}: {message}");
        assert!(message.contains("--data-dir"), "{message}");
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    // `migrate` creates one; then the same commands work.
    run_ok(cli(&data).arg("migrate"));
    run_ok(cli(&data).args(["token", "list"]));
}

/// Instances sharing a PostgreSQL database must share the master key: without a configured
/// one, no command opens the registry, and the message says how to make one. Nothing
/// needs to listen at the URL: the refusal comes first.
#[test]
fn postgres_needs_a_configured_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["migrate"],
        &["user", "list"],
        &["fsck"],
    ] {
        let message = run_err(
            cli(&data)
                .args(args)
                .env(
                    "ALPINE_REGISTRY__DATABASE__URL",
                    "postgres://registry:secret@127.0.0.1:9/registry",
                )
                .env_remove("ALPINE_REGISTRY__SIGNING__MASTER_KEY"),
        );
        for needle in [
            "signing.master_key",
            "ALPINE_REGISTRY__SIGNING__MASTER_KEY",
            "head -c 32 /dev/urandom | base64",
        ] {
            assert!(message.contains(needle), "{args:?}: {needle} in {message}");
        }
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
}
