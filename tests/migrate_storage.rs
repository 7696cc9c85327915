//! `migrate-storage`: an embedded installation (SQLite and files) moved by the real binary
//! into PostgreSQL and back into SQLite, or into another SQLite database and back, each
//! time served from its new place exactly as before.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use alpine_registry::config::{Config, S3Config};
use alpine_registry::names::RepoAddress;
use alpine_registry::registry::accounts::{self, TokenRequest};
use alpine_registry::registry::repositories;
use alpine_registry::store::Dump;
use alpine_registry::store::Role;
use common::postgres::{self as pg, TestDatabase};
use common::s3;
use common::*;
use sha2::{Digest, Sha256};

const BOB_PASSWORD: &str = "correct horse battery staple";

/// Tokens of the installation under test.
struct Tokens {
    bob: String,
    revoked: String,
}

/// What clients see of an installation: compared before and after each move
/// (`same_as`).
#[derive(Debug, PartialEq)]
struct Seen {
    /// `/{owner}/key` for every owner, then every key of each (state, dates, fingerprint)
    /// with what `/{owner}/keys/{name}` serves.
    keys: Vec<(String, Vec<u8>)>,
    /// Every index path with its status and bytes.
    indexes: Vec<(String, u16, Vec<u8>)>,
    /// Every package's download path with the sha256 of what it serves.
    packages: Vec<(String, String)>,
    /// The row ids of users, owners and repositories, by name.
    ids: Vec<(String, i64)>,
    /// The token list: ids, labels, expiry, revocation, last use.
    tokens: Vec<String>,
    /// Anonymous answers for the private owner: key, index, package.
    anonymous: Vec<u16>,
}

fn admin() -> Option<(&'static str, &'static str)> {
    Some(("admin", ADMIN_TOKEN))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Seen {
    /// Panics naming the first part that differs from `expected`.
    fn same_as(&self, expected: &Seen) {
        fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: &[T], expected: &[T]) {
            assert_eq!(got.len(), expected.len(), "{what}: {got:?}");
            for (got, expected) in got.iter().zip(expected) {
                assert!(got == expected, "{what} differ: {got:?}");
            }
        }
        same("keys", &self.keys, &expected.keys);
        let status = |seen: &Seen| {
            seen.indexes
                .iter()
                .map(|(path, status, _)| (path.clone(), *status))
                .collect::<Vec<_>>()
        };
        same("index statuses", &status(self), &status(expected));
        for ((path, _, got), (_, _, expected)) in self.indexes.iter().zip(&expected.indexes) {
            assert!(got == expected, "{path} serves other bytes");
        }
        same("packages", &self.packages, &expected.packages);
        same("ids", &self.ids, &expected.ids);
        same("tokens", &self.tokens, &expected.tokens);
        same("anonymous answers", &self.anonymous, &expected.anonymous);
        assert!(self == expected);
    }
}

async fn seen(server: &TestServer) -> Seen {
    let store = &server.state.store;
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for owner in store.list_owners().await.unwrap() {
        let response = server.get(&format!("/{}/key", owner.name), admin()).await;
        assert_eq!(response.status(), 200, "key of {}", owner.name);
        keys.push((owner.name.clone(), response.bytes().await.unwrap().to_vec()));
        ids.push((format!("owner {}", owner.name), owner.id));
        let owner = accounts::owner(&server.state, &owner.name).await.unwrap();
        for key in alpine_registry::registry::keys::list(&server.state, &owner)
            .await
            .unwrap()
        {
            let response = server.get(&key.download_path, admin()).await;
            assert_eq!(response.status(), 200, "{}", key.download_path);
            keys.push((format!("{key:?}"), response.bytes().await.unwrap().to_vec()));
        }
    }
    for user in store.list_users().await.unwrap() {
        ids.push((format!("user {}", user.name), user.id));
    }
    let mut indexes = Vec::new();
    let mut packages = Vec::new();
    for repo in store.list_repositories(None, None, None).await.unwrap() {
        let place = format!("/{}/{}/{}", repo.owner_name, repo.branch, repo.name);
        ids.push((format!("repository {place}"), repo.id));
        for arch in ["x86_64", "aarch64"] {
            let path = format!("{place}/{arch}/APKINDEX.tar.gz");
            let response = server.get(&path, admin()).await;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap().to_vec();
            if status == 200 {
                // Signed with the key the registry serves.
                server
                    .verified_index(&repo.owner_name, &path, admin())
                    .await;
            }
            indexes.push((path, status, bytes));
        }
        for package in store.list_packages(repo.id).await.unwrap() {
            let arch = if package.arch == "noarch" {
                "x86_64"
            } else {
                package.arch.as_str()
            };
            let path = format!("{place}/{arch}/{}", package.filename);
            let response = server.get(&path, admin()).await;
            assert_eq!(response.status(), 200, "GET {path}");
            let digest = sha256_hex(&response.bytes().await.unwrap());
            assert_eq!(digest, package.sha256, "{path}");
            packages.push((path, digest));
        }
    }
    // A snapshot of the virtual repository: the same listing, signed alike.
    if store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .iter()
        .any(|r| r.name == "all")
    {
        let path = "/acme/v3.21/all@release-1/x86_64/APKINDEX.tar.gz";
        let response = server.get(path, admin()).await;
        assert_eq!(response.status(), 200, "{path}");
        let bytes = response.bytes().await.unwrap().to_vec();
        server.verified_index("acme", path, admin()).await;
        indexes.push((path.to_string(), 200, bytes));
    }
    let tokens = store
        .list_tokens(None)
        .await
        .unwrap()
        .iter()
        .map(|t| {
            // The admin token reads everything here, so its last use moves on.
            let last_used = if t.user_name == "admin" {
                None
            } else {
                t.last_used_at
            };
            format!(
                "{} {} {} {:?} {:?} {:?} {:?} {:?} {}",
                t.id,
                t.user_name,
                t.scope.as_str(),
                t.owner_name,
                t.label,
                t.expires_at,
                t.revoked_at,
                last_used,
                t.created_at
            )
        })
        .collect();
    let mut anonymous = Vec::new();
    for path in [
        "/vault/key",
        "/vault/edge/testing/x86_64/APKINDEX.tar.gz",
        "/vault/edge/testing/x86_64/secret-1.0-r0.apk",
    ] {
        anonymous.push(server.get(path, None).await.status().as_u16());
    }
    Seen {
        keys,
        indexes,
        packages,
        ids,
        tokens,
        anonymous,
    }
}

/// The installation to move: users with a password and tokens (one revoked), a public and
/// a private organisation with members, packages in two repositories and three
/// architectures, and a deleted package.
async fn populate(server: &TestServer) -> Tokens {
    let state = &server.state;
    let hash = alpine_registry::access::hash_password(BOB_PASSWORD).unwrap();
    accounts::create_user(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "bob",
        Some(&hash),
        false,
        true,
    )
    .await
    .unwrap();
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
    accounts::create_owner(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "vault",
        true,
        true,
        true,
    )
    .await
    .unwrap();
    accounts::add_member(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "vault",
        "bob",
        Role::Write,
    )
    .await
    .unwrap();
    accounts::add_member(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        "bob",
        Role::Read,
    )
    .await
    .unwrap();
    let token = |label: &'static str| TokenRequest {
        user: "bob",
        scope: Role::Write,
        owner: Some("vault"),
        expires_at: Some(common::unix_now() + 30 * 86400),
        label: Some(label),
    };
    let bob = accounts::create_token(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        token("ci"),
        None,
    )
    .await
    .unwrap();
    let revoked = accounts::create_token(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        token("old"),
        None,
    )
    .await
    .unwrap();
    let revoked_id = state
        .store
        .list_tokens(None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.label.as_deref() == Some("old"))
        .unwrap()
        .id;
    accounts::revoke_token(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        revoked_id,
        common::unix_now(),
    )
    .await
    .unwrap();

    // A webhook: its sealed secret opens with the same master key on the copy.
    let acme = state.store.owner_by_name("acme").await.unwrap().unwrap();
    state
        .store
        .create_webhook(
            &alpine_registry::store::NewWebhook {
                owner_id: acme.id,
                url: "https://hooks.example.org/alpine".into(),
                secret_sealed: state.keys.seal_secret("copied", "s3cret").unwrap(),
                events: vec!["index.published".into()],
                created_ms: 1,
                created_by: "cli:test".into(),
            },
            20,
            None,
        )
        .await
        .unwrap();

    for (name, arch) in [
        ("hello", "x86_64"),
        ("hello", "aarch64"),
        ("tools", "noarch"),
        ("gone", "x86_64"),
    ] {
        let response = server
            .put_admin("/acme/v3.21/main", package(name, "1.0-r0", arch))
            .await;
        assert_eq!(response.status(), 201, "{name} {arch}");
    }
    let response = server
        .delete("/acme/v3.21/main/x86_64/gone-1.0-r0.apk", admin())
        .await;
    assert_eq!(response.status(), 204);
    // With bob's token, which records its use.
    let response = server
        .put(
            "/vault/edge/testing",
            package("secret", "1.0-r0", "x86_64"),
            Some(("bob", &bob)),
        )
        .await;
    assert_eq!(response.status(), 201);
    // acme rotated to a new key and retired its first: both are copied, with their
    // states, and the copy signs with the new one.
    let acme = accounts::owner(state, "acme").await.unwrap();
    let first = state.keys.get_or_create(&acme).await.unwrap();
    let cli = alpine_registry::registry::audit::Actor::cli();
    alpine_registry::registry::keys::rotate(state, &cli, &acme)
        .await
        .unwrap();
    alpine_registry::registry::keys::retire(state, &cli, &acme, first.key_name())
        .await
        .unwrap();
    // vault's keyring switched off (as the configuration has it: nothing is published
    // in the background), and a remote repository of acme with a verified
    // upstream index (its served copy signed with acme's key) and a cached file: copied
    // as they are, the cached file's blob with the packages'.
    let vault = state.store.owner_by_name("vault").await.unwrap().unwrap();
    state
        .store
        .set_keyring_enabled(vault.id, false, None)
        .await
        .unwrap();
    let upstream_key = alpine_registry::apk::sign::SigningKey::generate("upstream", 1024).unwrap();
    let mirror = state
        .store
        .create_remote_repository(
            &alpine_registry::store::RepoRef {
                owner_id: acme.id,
                branch: "v3.21".into(),
                repository: "mirror".into(),
            },
            &alpine_registry::store::Upstream {
                repository_id: 0,
                url: "http://127.0.0.1:9/alpine/v3.21/main".into(),
                keys: vec![alpine_registry::store::UpstreamKey {
                    name: upstream_key.key_name().to_string(),
                    pem: upstream_key.public_key_pem().unwrap(),
                }],
                refresh_secs: 30 * 86400,
            },
            None,
        )
        .await
        .unwrap();
    let cached = package("cached", "2.0-r0", "x86_64");
    let cached_sha256 = sha256_hex(&cached);
    let mut staged = state.blobs.stage().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut staged, &cached)
        .await
        .unwrap();
    staged.sync().await.unwrap();
    state.blobs.commit(staged, &cached_sha256).await.unwrap();
    let parsed = alpine_registry::apk::package::parse_package(
        &cached[..],
        &alpine_registry::apk::package::Limits::default(),
    )
    .unwrap();
    let unsigned =
        alpine_registry::apk::index::write_unsigned_index("upstream", &[&parsed.stanza]).unwrap();
    let content = alpine_registry::apk::index::sign_index(
        &unsigned,
        &upstream_key,
        &[alpine_registry::apk::sign::SignatureAlgorithm::Rsa],
    )
    .unwrap();
    let (signed, keys) = state.indexer.sign(&acme, unsigned.clone()).await.unwrap();
    let now = common::unix_now() * 1000;
    state
        .store
        .save_upstream_index(&alpine_registry::store::UpstreamIndex {
            repository_id: mirror.id,
            arch: "x86_64".into(),
            sha256: sha256_hex(&content),
            content,
            etag: Some("\"v1\"".into()),
            last_modified: None,
            verified_ms: now,
            checked_ms: now,
            error: None,
            signed_sha256: sha256_hex(&signed),
            signed,
            signed_keys: keys.join(","),
            signed_ms: now,
        })
        .await
        .unwrap();
    state
        .store
        .insert_upstream_file(&alpine_registry::store::UpstreamFile {
            repository_id: mirror.id,
            arch: "x86_64".into(),
            filename: "cached-2.0-r0.apk".into(),
            size: cached.len() as i64,
            sha256: cached_sha256,
            checksum: parsed.checksum.clone(),
            stored_ms: now,
        })
        .await
        .unwrap();
    // A virtual repository of acme's hosted and remote ones, its index built (and its
    // listing recorded in its history), and a snapshot of it: copied as they are.
    let cli = alpine_registry::registry::audit::Actor::cli();
    let all = RepoAddress::parse_path("acme/v3.21/all").unwrap();
    alpine_registry::registry::virtuals::create(
        state,
        &cli,
        &all,
        &[
            RepoAddress::parse_path("acme/v3.21/main").unwrap(),
            RepoAddress::parse_path("acme/v3.21/mirror").unwrap(),
        ],
    )
    .await
    .unwrap();
    let response = server
        .get("/acme/v3.21/all/x86_64/APKINDEX.tar.gz", admin())
        .await;
    assert_eq!(response.status(), 200);
    alpine_registry::registry::snapshots::create(
        state,
        &cli,
        &all,
        Some(alpine_registry::names::SnapshotName::parse("release-1").unwrap()),
    )
    .await
    .unwrap();
    // The newest repository removed: its id must not come back in a copy either.
    let scratch = RepoAddress::parse_path("acme/v3.21/scratch").unwrap();
    repositories::create(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        &scratch,
    )
    .await
    .unwrap();
    repositories::remove(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        &scratch,
    )
    .await
    .unwrap();
    Tokens { bob, revoked }
}

/// Checks what must hold on any copy: credentials, privacy, a clean fsck, and that new
/// rows (users, owners, tokens, repositories, packages) take fresh ids and publish into
/// valid indexes. `tag` keeps the names of each round apart.
async fn check_and_extend(server: &TestServer, tokens: &Tokens, tag: &str) {
    let acme = server
        .state
        .store
        .owner_by_name("acme")
        .await
        .unwrap()
        .unwrap();
    let webhooks = server.state.store.webhooks(acme.id).await.unwrap();
    assert_eq!(webhooks.len(), 1, "the webhook was copied");
    assert_eq!(
        server
            .state
            .keys
            .open_secret("copied", &webhooks[0].secret_sealed)
            .unwrap(),
        "s3cret"
    );
    let bob = Some(("bob", tokens.bob.as_str()));
    assert_eq!(server.get("/vault/key", bob).await.status(), 200);
    assert_eq!(
        server
            .get("/vault/key", Some(("bob", BOB_PASSWORD)))
            .await
            .status(),
        200,
        "the password hash was copied"
    );
    assert_eq!(
        server
            .get("/vault/key", Some(("bob", tokens.revoked.as_str())))
            .await
            .status(),
        401,
        "a revoked token stays revoked"
    );
    assert_ne!(server.get("/vault/key", None).await.status(), 200);
    assert_eq!(server.get("/acme/key", None).await.status(), 200);

    // Every index is what a fresh render gives: a rebuild yields the same bytes.
    let report = alpine_registry::registry::fsck::fsck(&server.state, false)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let store = &server.state.store;
    let max_user = store.list_users().await.unwrap().iter().map(|u| u.id).max();
    let max_owner = store
        .list_owners()
        .await
        .unwrap()
        .iter()
        .map(|o| o.id)
        .max();
    let max_token = store
        .list_tokens(None)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .max();
    // Removed repositories included.
    let last_repository = store.export().await.unwrap().last_repository_id;
    assert!(last_repository > 0);

    let user = format!("carol{tag}");
    let token = server.user_with_token(&user, Role::Read, None, None).await;
    assert!(Some(store.user_by_name(&user).await.unwrap().unwrap().id) > max_user);
    assert!(Some(store.owner_by_name(&user).await.unwrap().unwrap().id) > max_owner);
    let new_token = store
        .list_tokens(None)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.user_name == user)
        .unwrap();
    assert!(Some(new_token.id) > max_token);
    assert_eq!(
        server
            .get("/acme/key", Some((user.as_str(), token.as_str())))
            .await
            .status(),
        200
    );

    let name = format!("fresh{tag}");
    let response = server
        .put(
            "/vault/edge/testing",
            package(&name, "1.0-r0", "x86_64"),
            bob,
        )
        .await;
    assert_eq!(response.status(), 201);
    let text = server
        .verified_index("vault", "/vault/edge/testing/x86_64/APKINDEX.tar.gz", bob)
        .await;
    let names = index_names(&text);
    assert!(
        names.contains(&name) && names.iter().any(|n| n == "secret"),
        "{names:?}"
    );
    let repository = format!("/vault/edge/new{tag}");
    let response = server
        .put(&repository, package(&name, "1.0-r0", "aarch64"), bob)
        .await;
    assert_eq!(response.status(), 201);
    server
        .verified_index(
            "vault",
            &format!("{repository}/aarch64/APKINDEX.tar.gz"),
            bob,
        )
        .await;
    let created = store
        .list_repositories(None, None, Some(&format!("new{tag}")))
        .await
        .unwrap();
    assert!(
        created[0].id > last_repository,
        "repository ids are not reused"
    );
}

/// Every row of the registry `file` configures, read directly from its database.
async fn export(file: &Path) -> Dump {
    let state = alpine_registry::open(Config::load_file_only(file).unwrap())
        .await
        .unwrap();
    state.store.export().await.unwrap()
}

/// A configuration file for `data_dir` and `database_url` (empty: SQLite in the data
/// directory), with `master_key` when given.
fn write_config(path: &Path, data_dir: &Path, database_url: &str, master_key: Option<&str>) {
    write_config_on(path, data_dir, None, database_url, master_key)
}

/// As `write_config`, with the blobs in the bucket `s3` names when given.
fn write_config_on(
    path: &Path,
    data_dir: &Path,
    s3: Option<&S3Config>,
    database_url: &str,
    master_key: Option<&str>,
) {
    let mut text = format!(
        "[storage]\ndata_dir = {:?}\n",
        data_dir.display().to_string()
    );
    if let Some(s3) = s3 {
        text.push_str(&format!(
            "backend = \"s3\"\n\n[storage.s3]\nbucket = {:?}\nendpoint = {:?}\n\
             region = {:?}\npath_style = {}\nallow_http = {}\nprefix = {:?}\n\
             access_key_id = {:?}\nsecret_access_key = {:?}\n",
            s3.bucket,
            s3.endpoint,
            s3.region,
            s3.path_style,
            s3.allow_http,
            s3.prefix,
            s3.access_key_id,
            s3.secret_access_key
        ));
    }
    text.push_str(&format!(
        "\n[database]\nurl = {database_url:?}\n\n[signing]\nkey_bits = 1024\n\
         # Rows compared exactly: no keyring published in the background while a server\n\
         # stops (it has tests of its own).\nkeyring = false\n"
    ));
    if let Some(key) = master_key {
        text.push_str(&format!("master_key = {key:?}\n"));
    }
    text.push_str("\n[auth]\nfailure_delay_ms = 0\n");
    std::fs::write(path, text).unwrap();
}

fn migrate_storage(source: &Path, target: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(source)
        .arg("migrate-storage")
        .arg("--to")
        .arg(target)
        .env_remove("ALPINE_REGISTRY_BOOTSTRAP_TOKEN");
    command
}

/// Runs the migration that must succeed; checks its summary.
fn migrate_ok(source: &Path, target: &Path, in_place: bool) {
    let (stdout, stderr) = run_ok_both(&mut migrate_storage(source, target));
    for table in [
        "users",
        "owners",
        "tokens",
        "repositories",
        "packages",
        "indexes",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(table)),
            "{table} in {stdout}"
        );
    }
    assert!(stdout.contains("package files"), "{stdout}");
    assert!(stdout.contains("bytes"), "{stdout}");
    let how = if in_place {
        "checked in place"
    } else {
        "copied and verified"
    };
    assert!(stderr.contains(how), "{stderr}");
}

struct Layout {
    root: tempfile::TempDir,
}

impl Layout {
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// SQLite and files → `first_url` (empty: SQLite) with its own blob directory → back into
/// `second` (a fresh SQLite database; with `in_place`, in the first target's data
/// directory, keeping its files there).
async fn scenario(first_url: &str, first_s3: Option<&S3Config>, in_place: bool) {
    let layout = Layout {
        root: tempfile::tempdir().unwrap(),
    };
    let source_dir = layout.path("source");
    let source_file = layout.path("source.toml");
    write_config(&source_file, &source_dir, "", None);

    let source = TestServer::start_on(Config::load_file_only(&source_file).unwrap()).await;
    let tokens = populate(&source).await;
    let before = seen(&source).await;
    source.stop().await;
    let master_key = std::fs::read_to_string(source_dir.join("master.key")).unwrap();

    // Refused: the target would have another master key.
    let first_dir = layout.path("first");
    let first_file = layout.path("first.toml");
    write_config_on(&first_file, &first_dir, first_s3, first_url, None);
    let message = run_err(&mut migrate_storage(&source_file, &first_file));
    assert!(message.contains("signing.master_key"), "{message}");
    assert!(message.contains("master.key"), "{message}");
    assert!(
        !first_dir.join("master.key").exists(),
        "nothing is created for a refused target"
    );
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    write_config_on(&first_file, &first_dir, first_s3, first_url, Some(other));
    let message = run_err(&mut migrate_storage(&source_file, &first_file));
    assert!(message.contains("another master key"), "{message}");

    write_config_on(
        &first_file,
        &first_dir,
        first_s3,
        first_url,
        Some(master_key.trim()),
    );
    migrate_ok(&source_file, &first_file, false);
    let copied = export(&first_file).await;
    assert_eq!(
        copied,
        export(&source_file).await,
        "every row, every column"
    );
    assert_eq!(copied.upstreams.len(), 1);
    assert_eq!(copied.upstream_indexes.len(), 1);
    assert_eq!(copied.owner_keyrings.len(), 1);
    assert_eq!(copied.virtual_members.len(), 2);
    assert_eq!(copied.snapshots.len(), 1);
    assert!(
        copied.served_history.len() >= 4,
        "{:?}",
        copied.served_history
    );
    let cached = &copied.upstream_files[0];
    let target = alpine_registry::open(Config::load_file_only(&first_file).unwrap())
        .await
        .unwrap();
    assert_eq!(
        target.blobs.size(&cached.sha256).await.unwrap(),
        cached.size as u64,
        "the cached file's blob is copied"
    );
    drop(target);
    let max_repository = copied.repositories.iter().map(|r| r.id).max().unwrap();
    assert!(copied.last_repository_id > max_repository);
    // Refused: the target is not empty any more.
    let message = run_err(&mut migrate_storage(&source_file, &first_file));
    assert!(message.contains("not empty"), "{message}");

    let first = TestServer::start_on(Config::load_file_only(&first_file).unwrap()).await;
    seen(&first).await.same_as(&before);
    check_and_extend(&first, &tokens, "1").await;
    let extended = seen(&first).await;
    first.stop().await;

    // Back into SQLite.
    let (second_dir, second_url) = if in_place {
        let url = format!("sqlite://{}", first_dir.join("second.db").display());
        (first_dir.clone(), url)
    } else {
        (layout.path("second"), String::new())
    };
    let second_file = layout.path("second.toml");
    write_config(
        &second_file,
        &second_dir,
        &second_url,
        Some(master_key.trim()),
    );
    migrate_ok(&first_file, &second_file, in_place);
    assert_eq!(export(&second_file).await, export(&first_file).await);
    let second = TestServer::start_on(Config::load_file_only(&second_file).unwrap()).await;
    seen(&second).await.same_as(&extended);
    check_and_extend(&second, &tokens, "2").await;
    second.stop().await;

    // The source was only read.
    let source = TestServer::start_on(Config::load_file_only(&source_file).unwrap()).await;
    seen(&source).await.same_as(&before);
    source.stop().await;

    if first_s3.is_some() {
        // The test's prefix in the shared bucket, emptied.
        let first = alpine_registry::open(Config::load_file_only(&first_file).unwrap())
            .await
            .unwrap();
        for blob in first.blobs.list().await.unwrap() {
            first.blobs.delete(&blob.sha256).await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_embedded_installation_moves_to_another_sqlite_database_and_back() {
    scenario("", None, true).await;
}

#[tokio::test]
async fn an_embedded_installation_moves_to_postgres_and_s3_and_back() {
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    // With a test S3 server, the first move is into PostgreSQL + S3, as a scaled-out
    // deployment runs, and the way back out of it.
    let bucket = s3::config();
    if bucket.is_none() {
        s3::note_skipped();
    }
    scenario(&database.url, bucket.as_ref(), false).await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_damaged_source_file_stops_the_copy_before_any_row_is_written() {
    let layout = Layout {
        root: tempfile::tempdir().unwrap(),
    };
    let source_dir = layout.path("source");
    let source_file = layout.path("source.toml");
    write_config(&source_file, &source_dir, "", None);
    let source = TestServer::start_on(Config::load_file_only(&source_file).unwrap()).await;
    for name in ["a", "b"] {
        let response = source
            .put_admin("/admin/v1/main", package(name, "1.0-r0", "x86_64"))
            .await;
        assert_eq!(response.status(), 201);
    }
    source.stop().await;
    let before = export(&source_file).await;
    let sha256 = &before
        .packages
        .iter()
        .find(|p| p.name == "b")
        .unwrap()
        .sha256;
    let blob = source_dir
        .join("blobs/sha256")
        .join(&sha256[..2])
        .join(sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let master_key = std::fs::read_to_string(source_dir.join("master.key")).unwrap();
    let target_file = layout.path("target.toml");
    write_config(
        &target_file,
        &layout.path("target"),
        "",
        Some(master_key.trim()),
    );
    let message = run_err(&mut migrate_storage(&source_file, &target_file));
    assert!(
        message.contains(&format!("{sha256} of the source is damaged")),
        "{message}"
    );
    assert!(message.contains("the source is unchanged"), "{message}");
    assert!(message.contains("before trying again"), "{message}");
    assert_eq!(export(&source_file).await, before);
    assert!(export(&target_file).await.counts().is_empty());
}

/// A PostgreSQL registry takes its master key from `signing.master_key` only: a target on
/// PostgreSQL without it is refused (even with the source's key file in its data
/// directory), told to set that key to the key file's content, and never to copy the file.
#[tokio::test]
async fn a_postgres_target_is_told_to_set_the_master_key_not_to_copy_the_key_file() {
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    let layout = Layout {
        root: tempfile::tempdir().unwrap(),
    };
    let source_dir = layout.path("source");
    let source_file = layout.path("source.toml");
    write_config(&source_file, &source_dir, "", None);
    let source = TestServer::start_on(Config::load_file_only(&source_file).unwrap()).await;
    let response = source
        .put_admin("/admin/v1/main", package("a", "1.0-r0", "x86_64"))
        .await;
    assert_eq!(response.status(), 201);
    source.stop().await;
    let source_key = source_dir.join("master.key");
    let master_key = std::fs::read_to_string(&source_key).unwrap();

    let target_dir = layout.path("target");
    let target_file = layout.path("target.toml");
    write_config(&target_file, &target_dir, &database.url, None);
    // What the message offered for every target: the key file copied next to the target.
    std::fs::create_dir_all(&target_dir).unwrap();
    std::fs::copy(&source_key, target_dir.join("master.key")).unwrap();
    let message = run_err(&mut migrate_storage(&source_file, &target_file));
    assert!(
        message.contains("no master key (signing.master_key is empty)"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "set signing.master_key in {} to the content of {}",
            target_file.display(),
            source_key.display()
        )),
        "{message}"
    );
    assert!(message.contains("PostgreSQL"), "{message}");
    assert!(!message.contains("copy that file"), "{message}");
    assert!(
        !message.contains(&target_dir.join("master.key").display().to_string()),
        "{message}"
    );

    // Doing what it says is enough.
    write_config(
        &target_file,
        &target_dir,
        &database.url,
        Some(master_key.trim()),
    );
    migrate_ok(&source_file, &target_file, false);
    assert_eq!(export(&target_file).await, export(&source_file).await);
    database.drop_database().await;
}
