//! No secret in the logs: the real binary runs with `RUST_LOG=trace` (sqlx and tower-http
//! included) through a full session, and nothing secret may appear in what it writes:
//! tokens, passwords (right or wrong), `Authorization` header values, password hashes,
//! the master key, owner private keys.

mod common;
use common::backends::Backends;
use common::{free_port, BIN};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::package;

const BOOTSTRAP_TOKEN: &str = "apkreg_bootstrap-Zq8vN3xK7pL2mW9rT4yB6cD1";
const PASSWORD: &str = "Alice-Pass-Tr0ub4dor-and-3";
const WRONG_PASSWORD: &str = "Alice-Wrong-Pass-Xy7Qw2Er9";
const WRONG_TOKEN: &str = "apkreg_wrong-Hj4Kl8Mn2Bv6Cx0Za5Sd9Fg3";

/// The binary on `data_dir` (and the test environment's database and bucket, if any),
/// logging everything, with no bootstrap token from the caller's environment.
fn binary(data_dir: &Path, backends: &Backends) -> Command {
    let mut command = Command::new(BIN);
    backends.apply(&mut command);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("ALPINE_REGISTRY__SIGNING__KEY_BITS", "1024")
        .env("RUST_LOG", "trace")
        .env_remove("ALPINE_REGISTRY_BOOTSTRAP_TOKEN")
        .stdin(Stdio::null());
    command
}

/// What an administration command wrote.
struct Output {
    what: String,
    stdout: String,
    stderr: String,
}

/// Runs an administration command (stdin: `input`), which must succeed.
fn admin(data_dir: &Path, backends: &Backends, args: &[&str], input: Option<&str>) -> Output {
    let mut child = binary(data_dir, backends)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let out = Output {
        what: args.join(" "),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        output.status.success(),
        "{} failed: {}",
        out.what,
        out.stderr
    );
    out
}

/// A running `serve` whose stdout and stderr go to files.
struct Server {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    fn start(
        data_dir: &Path,
        backends: &Backends,
        log_dir: &Path,
        bootstrap: Option<&str>,
    ) -> Server {
        let port = free_port();
        let stdout = log_dir.join("serve.stdout");
        let stderr = log_dir.join("serve.stderr");
        let mut command = binary(data_dir, backends);
        if let Some(token) = bootstrap {
            command.env("ALPINE_REGISTRY_BOOTSTRAP_TOKEN", token);
        }
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        };
        server.wait_ready();
        server
    }

    /// Polls `/readyz` (bounded) instead of sleeping a fixed time.
    fn wait_ready(&mut self) {
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early ({status}): {}", self.logs());
            }
            let ready = client
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(5))
                .send();
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become ready");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then a bounded wait for a clean exit; returns (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "graceful exit on SIGTERM: {status}");
        (
            std::fs::read_to_string(&self.stdout).unwrap(),
            std::fs::read_to_string(&self.stderr).unwrap(),
        )
    }
}

fn basic(user: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
}

/// A secret and a name for it in failure messages.
struct Secret {
    name: String,
    value: String,
}

fn secret(name: impl Into<String>, value: impl Into<String>) -> Secret {
    let value = value.into();
    assert!(
        value.len() >= 12,
        "too short to search for reliably: {value:?}"
    );
    Secret {
        name: name.into(),
        value,
    }
}

/// A token, and its random part alone (in case something strips the prefix).
fn token_secrets(name: &str, token: &str) -> Vec<Secret> {
    vec![
        secret(name, token),
        secret(
            format!("{name} without prefix"),
            token.strip_prefix("apkreg_").unwrap(),
        ),
    ]
}

/// Where each secret occurs in `text`, the secret itself masked in the excerpt.
fn leaks(source: &str, text: &str, secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets {
        for (number, line) in text.lines().enumerate() {
            if line.contains(&s.value) {
                let masked = line.replace(&s.value, &format!("<{}>", s.name));
                let excerpt: String = masked.chars().take(300).collect();
                found.push(format!(
                    "{source} line {}: {} leaked: {excerpt}",
                    number + 1,
                    s.name
                ));
            }
        }
    }
    found
}

/// The base64 lines of a PEM body (without the armour), and the body joined.
fn pem_secrets(name: &str, pem: &str) -> Vec<Secret> {
    let lines: Vec<&str> = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    assert!(lines.len() > 5, "{name}: not a PEM body: {pem:?}");
    let mut secrets: Vec<Secret> = lines
        .iter()
        .enumerate()
        // The last line can be a few characters that occur anywhere by chance.
        .filter(|(_, l)| l.len() >= 16)
        .map(|(i, l)| secret(format!("{name} line {}", i + 1), *l))
        .collect();
    secrets.push(secret(format!("{name} (joined)"), lines.concat()));
    secrets
}

/// Reads the owners' key material and alice's password hash from the data directory
/// (server stopped): the sealed private keys as stored, the decrypted PEMs, the master key.
fn stored_secrets(data_dir: &Path, backends: &Backends, owners: &[&str]) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = backends
        .secrets()
        .into_iter()
        .map(|(name, value)| secret(name, value))
        .collect();
    if backends.database.is_none() {
        let master = std::fs::read_to_string(data_dir.join("master.key")).unwrap();
        secrets.push(secret("master key", master.trim()));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = alpine_registry::config::Config::default();
        config.storage.data_dir = data_dir.to_path_buf();
        config.signing.key_bits = 1024;
        backends.configure(&mut config);
        let state = alpine_registry::open(config).await.unwrap();
        let alice = state.store.user_by_name("alice").await.unwrap().unwrap();
        let hash = alice.password_hash.expect("alice has a password");
        assert!(hash.starts_with("$argon2"), "{hash}");
        secrets.push(secret("alice's password hash", hash.clone()));
        // The digest part alone.
        secrets.push(secret(
            "alice's password digest",
            hash.rsplit('$').next().unwrap(),
        ));
        for name in owners {
            let owner = state.store.owner_by_name(name).await.unwrap().unwrap();
            let stored = state
                .store
                .signing_key(owner.id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{name} has a key"));
            secrets.push(secret(
                format!("sealed private key of {name}"),
                stored.private_pem.clone(),
            ));
            let key = state.keys.get_or_create(&owner).await.unwrap();
            assert_eq!(key.key_name(), stored.key_name);
            let pem = key.private_pkcs8_pem().unwrap();
            assert!(pem.contains("PRIVATE KEY"), "{name}");
            assert!(
                !stored.private_pem.contains(pem.lines().nth(1).unwrap()),
                "the stored private key of {name} is not in the clear"
            );
            secrets.extend(pem_secrets(&format!("private key of {name}"), &pem));
        }
    });
    secrets
}

fn status(response: reqwest::blocking::Response) -> u16 {
    response.status().as_u16()
}

#[test]
fn no_secret_reaches_the_logs() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let data_dir = data.path();
    // On PostgreSQL and S3 too when the test environment names them: their password and
    // secret key are then among the secrets searched for.
    let backends = Backends::from_env();
    eprintln!("secrets in logs: on {}", backends.describe());
    let server = Server::start(data_dir, &backends, logs.path(), Some(BOOTSTRAP_TOKEN));
    let mut admin_outputs = Vec::new();

    // Administration while the server runs.
    let mut run = |args: &[&str], input: Option<&str>| {
        let out = admin(data_dir, &backends, args, input);
        let stdout = out.stdout.clone();
        admin_outputs.push(out);
        stdout
    };
    run(
        &["user", "create", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    run(&["user", "create", "bob"], None);
    run(&["owner", "create", "secretco", "--private", "--org"], None);
    run(
        &[
            "owner", "member", "add", "secretco", "alice", "--role", "write",
        ],
        None,
    );
    let alice_token = run(
        &["token", "create", "--user", "alice", "--scope", "write"],
        None,
    )
    .trim()
    .to_string();
    let read_token = run(
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--scope",
            "read",
            "--owner",
            "secretco",
            "--expires-in",
            "1h",
        ],
        None,
    )
    .trim()
    .to_string();
    let bob_token = run(
        &["token", "create", "--user", "bob", "--scope", "admin"],
        None,
    )
    .trim()
    .to_string();
    for token in [&alice_token, &read_token, &bob_token] {
        assert!(
            token.starts_with("apkreg_") && !token.contains(char::is_whitespace),
            "{token:?}"
        );
    }

    // A full session.
    let client = reqwest::blocking::Client::new();
    let put = |path: &str, name: &str| {
        client
            .put(server.url(path))
            .body(package(name, "1.0-r0", "x86_64"))
    };
    let s = status(
        put("/admin/v3.21/main", "boot")
            .basic_auth("admin", Some(BOOTSTRAP_TOKEN))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 201, "Basic admin:<bootstrap token>");
    let s = status(
        put("/alice/v3.21/main", "tok-basic")
            .basic_auth("alice", Some(&alice_token))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 201, "Basic alice:<token>");
    let s = status(
        put("/secretco/v3.21/main", "tok-bearer")
            .bearer_auth(&alice_token)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 201, "Bearer <token>");
    let s = status(
        put("/secretco/v3.21/main", "pw-basic")
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 201, "Basic alice:<password>");
    let s = status(
        put("/api/packages/secretco/alpine/v3.21/main", "api-token")
            .basic_auth("token", Some(&alice_token))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 201, "Basic token:<token> under /api/packages");
    let s = status(
        client
            .put(server.url("/secretco/v3.21/main"))
            .basic_auth("alice", Some(PASSWORD))
            .body(b"not a package".to_vec())
            .send()
            .unwrap(),
    );
    assert_eq!(s, 400, "malformed package");

    // Downloads.
    let index = "/secretco/v3.21/main/x86_64/APKINDEX.tar.gz";
    let file = "/secretco/v3.21/main/x86_64/pw-basic-1.0-r0.apk";
    let get = |path: &str| client.get(server.url(path));
    assert_eq!(
        status(
            get("/secretco/key")
                .bearer_auth(&read_token)
                .send()
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            get(index)
                .basic_auth("alice", Some(PASSWORD))
                .send()
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            get(file)
                .basic_auth("alice", Some(&read_token))
                .send()
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            get(file)
                .bearer_auth(&alice_token)
                .header("Range", "bytes=0-9")
                .send()
                .unwrap()
        ),
        206
    );
    // Credentials in the URL, as in /etc/apk/repositories.
    let with_userinfo = server
        .url(index)
        .replace("http://", &format!("http://alice:{PASSWORD}@"));
    assert_eq!(status(client.get(with_userinfo).send().unwrap()), 200);
    assert_eq!(
        status(
            get("/admin/v3.21/main/x86_64/APKINDEX.tar.gz")
                .send()
                .unwrap()
        ),
        200,
        "anonymous read of a public owner"
    );

    // Private owner: anonymous 401, an outsider 404.
    assert_eq!(status(get(index).send().unwrap()), 401);
    assert_eq!(
        status(
            get(index)
                .basic_auth("bob", Some(&bob_token))
                .send()
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(get("/secretco/key").bearer_auth(&bob_token).send().unwrap()),
        404
    );

    // Wrong credentials, each followed by a success so the failure throttle stays idle.
    let wrong: Vec<reqwest::blocking::RequestBuilder> = vec![
        get(index).basic_auth("alice", Some(WRONG_PASSWORD)),
        get(index).basic_auth("ghost", Some(WRONG_PASSWORD)),
        get(index).bearer_auth(WRONG_TOKEN),
        get(index).basic_auth("admin", Some(WRONG_TOKEN)),
        put("/secretco/v3.21/main", "wrong").basic_auth("alice", Some(WRONG_PASSWORD)),
        put("/secretco/v3.21/main", "wrong").bearer_auth(WRONG_TOKEN),
        client
            .delete(server.url(file))
            .basic_auth("alice", Some(WRONG_PASSWORD)),
    ];
    for request in wrong {
        assert_eq!(status(request.send().unwrap()), 401);
        assert_eq!(
            status(get(index).bearer_auth(&alice_token).send().unwrap()),
            200
        );
    }

    // Deletes: Bearer token, Basic password, Basic bootstrap token.
    let delete = |path: &str| client.delete(server.url(path));
    assert_eq!(
        status(
            delete("/secretco/v3.21/main/x86_64/tok-bearer-1.0-r0.apk")
                .bearer_auth(&alice_token)
                .send()
                .unwrap()
        ),
        204
    );
    assert_eq!(
        status(
            delete(file)
                .basic_auth("alice", Some(PASSWORD))
                .send()
                .unwrap()
        ),
        204
    );
    assert_eq!(
        status(
            delete("/admin/v3.21/main/x86_64/boot-1.0-r0.apk")
                .basic_auth("admin", Some(BOOTSTRAP_TOKEN))
                .send()
                .unwrap()
        ),
        204
    );

    // Token administration while the server runs: list, revoke, then the token is refused.
    let list = run(&["token", "list"], None);
    let read_id = list
        .lines()
        .find(|l| l.contains("alice") && l.contains("read") && l.contains("secretco"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the read token in {list}"))
        .to_string();
    run(&["token", "revoke", &read_id], None);
    assert_eq!(
        status(get(index).bearer_auth(&read_token).send().unwrap()),
        401,
        "revoked"
    );
    assert_eq!(
        status(get(index).bearer_auth(&alice_token).send().unwrap()),
        200
    );

    let (stdout, stderr) = server.stop();

    // Everything is logged: sqlx statements (the token lookup among them), tower-http's
    // request events, the server's own events. (Nothing in the stack emits at TRACE
    // level today; DEBUG is the most verbose level that shows up.)
    for needle in [
        "DEBUG",
        "sqlx::query",
        // `?` on SQLite, `$1` on PostgreSQL.
        "t.token_hash = ",
        "answered",
        "package published",
    ] {
        assert!(
            stderr.contains(needle),
            "expected {needle:?} in the server log; is RUST_LOG honoured?"
        );
    }

    let mut secrets = Vec::new();
    secrets.extend(token_secrets("bootstrap token", BOOTSTRAP_TOKEN));
    secrets.extend(token_secrets("alice's write token", &alice_token));
    secrets.extend(token_secrets("alice's read token", &read_token));
    secrets.extend(token_secrets("bob's token", &bob_token));
    secrets.extend(token_secrets("wrong token", WRONG_TOKEN));
    secrets.push(secret("alice's password", PASSWORD));
    secrets.push(secret("wrong password", WRONG_PASSWORD));
    for (user, value, name) in [
        ("admin", BOOTSTRAP_TOKEN, "admin:<bootstrap token>"),
        ("alice", alice_token.as_str(), "alice:<write token>"),
        ("token", alice_token.as_str(), "token:<write token>"),
        ("alice", read_token.as_str(), "alice:<read token>"),
        ("bob", bob_token.as_str(), "bob:<token>"),
        ("alice", PASSWORD, "alice:<password>"),
        ("alice", WRONG_PASSWORD, "alice:<wrong password>"),
        ("ghost", WRONG_PASSWORD, "ghost:<wrong password>"),
        ("admin", WRONG_TOKEN, "admin:<wrong token>"),
    ] {
        secrets.push(secret(format!("base64 of {name}"), basic(user, value)));
    }
    secrets.extend(stored_secrets(
        data_dir,
        &backends,
        &["admin", "alice", "bob", "secretco"],
    ));

    let mut found = leaks("serve stderr", &stderr, &secrets);
    found.extend(leaks("serve stdout", &stdout, &secrets));
    if stderr.contains("PRIVATE KEY") || stdout.contains("PRIVATE KEY") {
        found.push("a PEM private key armour line is in the server output".into());
    }
    // Administration commands log to stderr too; `token create` prints its token on
    // stdout by design, nothing else may show a secret.
    for out in &admin_outputs {
        found.extend(leaks(
            &format!("`{}` stderr", out.what),
            &out.stderr,
            &secrets,
        ));
        if !out.what.starts_with("token create") {
            found.extend(leaks(
                &format!("`{}` stdout", out.what),
                &out.stdout,
                &secrets,
            ));
        }
    }
    assert!(
        found.is_empty(),
        "{} secret occurrence(s) in the output:\n{}",
        found.len(),
        found.join("\n")
    );
    assert!(
        !stdout.contains("apkreg_"),
        "with the bootstrap token from the environment nothing token-like is printed: {stdout}"
    );
}

/// Without `ALPINE_REGISTRY_BOOTSTRAP_TOKEN` the first start prints the admin token on
/// stdout, once, by design; the log (stderr) still never shows it.
#[test]
fn first_start_token_is_printed_but_never_logged() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let backends = Backends::from_env();
    let server = Server::start(data.path(), &backends, logs.path(), None);
    // The token is printed before the listener binds, so it is there once ready.
    let printed = std::fs::read_to_string(&server.stdout).unwrap();
    let token = printed
        .lines()
        .find(|l| l.starts_with("apkreg_"))
        .unwrap_or_else(|| panic!("no token line in {printed:?}"))
        .trim()
        .to_string();

    let client = reqwest::blocking::Client::new();
    let response = client
        .put(server.url("/admin/v3.21/main"))
        .basic_auth("admin", Some(&token))
        .body(package("first", "1.0-r0", "x86_64"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = client
        .get(server.url("/admin/key"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(server.url("/admin/key"))
        .bearer_auth(format!("{token}x"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401, "a near miss of the token");

    let (stdout, stderr) = server.stop();
    assert!(
        stderr.contains("sqlx::query") && stderr.contains("answered"),
        "RUST_LOG=trace is honoured"
    );
    assert_eq!(
        stdout.matches(&token).count(),
        2,
        "shown once: the token line and the curl example: {stdout}"
    );
    let mut secrets = token_secrets("first-start token", &token);
    secrets.push(secret("base64 of admin:<token>", basic("admin", &token)));
    let found = leaks("serve stderr", &stderr, &secrets);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
