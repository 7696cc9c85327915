//! Store conformance: every scenario is written once against `&dyn Store` and run on each
//! backend, so SQLite and PostgreSQL keep the same records, conflicts (with the same
//! messages), orderings and transactional guarantees.
//!
//! `sqlite::*` run on a temporary file. `postgres::*` run on a fresh database of the
//! server named by `ALPINE_REGISTRY_TEST_POSTGRES_URL`, dropped afterwards; without that
//! variable they are skipped with a note, or fail when
//! `ALPINE_REGISTRY_TEST_REQUIRE_POSTGRES=1`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use alpine_registry::store::{
    Dump, IndexRow, InsertedPackage, MemberRow, NewPackage, NewSession, NewToken, Owner, OwnerRow,
    OwnerScope, PackageRow, PackageSearch, PostgresStore, RenderedIndex, RepoRef, RepositoryRow,
    RetentionRuleRow, Retirement, Role, SearchCollector, SearchFile, SearchPage, SearchTerm,
    SessionAdmission, SessionLimits, SigningKeyRow, SqliteStore, Store, StoreError, StoredKey,
    TokenRow, UserRow,
};
use common::postgres::{self as pg, TestDatabase};
use futures_util::future::join_all;

/// A store on a backend, with what must outlive it.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    // Declared last: dropped after the store.
    database: Option<TestDatabase>,
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        let store = SqliteStore::connect(&url, 4, alpine_registry::clock::system())
            .await
            .expect("open SQLite");
        Backend {
            store: Arc::new(store),
            _dir: Some(dir),
            database: None,
        }
    }

    /// Closes the store, then drops its PostgreSQL database (if any) before returning.
    async fn finish(self) {
        drop(self.store);
        if let Some(database) = self.database {
            database.drop_database().await;
        }
    }

    /// None when the PostgreSQL tests are skipped.
    async fn postgres() -> Option<Backend> {
        let Some(server) = pg::server_url() else {
            pg::note_skipped();
            return None;
        };
        let database = TestDatabase::create(&server);
        let store = PostgresStore::connect(&database.url, 4, alpine_registry::clock::system())
            .await
            .expect("open PostgreSQL");
        Some(Backend {
            store: Arc::new(store),
            _dir: None,
            database: Some(database),
        })
    }
}

/// Runs each scenario as `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let backend = super::Backend::sqlite().await;
                    super::$scenario(backend.store.as_ref()).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(backend) = super::Backend::postgres().await {
                        super::$scenario(backend.store.as_ref()).await;
                        backend.finish().await;
                    }
                }
            )*
        }
    };
}

conformance!(
    users_and_their_namespaces,
    owner_and_user_names_are_unique_regardless_of_case,
    members_and_roles,
    listing_users_and_owners,
    deleting_users_and_owners_takes_what_they_hold,
    tokens,
    signing_keys_first_insert_wins,
    signing_keys_rotate_and_retire,
    packages_insert_find_delete,
    noarch_and_concrete_architectures_clash,
    referenced_blobs_and_listing,
    deletions_release_their_blobs,
    package_and_index_files_carry_their_place_and_stanza,
    catalog_rows_follow_their_package_rows,
    searches_page_by_name_and_owner_within_their_scope,
    owners_in_a_scope,
    repositories_and_generations,
    repositories_created_listed_and_removed,
    publishing_indexes,
    changes_since_a_generation,
    concurrent_writers,
    export_and_import,
    sessions_are_read_by_digest_with_their_user_and_token,
    sessions_end_with_their_password_token_or_user,
    each_user_keeps_their_newest_sessions_only,
    a_full_session_table_refuses_logins_and_evicts_nobody,
    successful_logins_are_rate_limited_per_user,
    concurrent_logins_of_one_user_keep_the_cap,
    expired_sessions_are_pruned,
    authentication_failures_count_per_key_within_the_window,
    a_package_rows_stanza_is_read_by_id,
);

fn now() -> i64 {
    common::unix_now()
}

fn conflict(err: StoreError) -> String {
    match err {
        StoreError::Conflict(message) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn not_found(err: StoreError) -> String {
    match err {
        StoreError::NotFound(message) => message,
        other => panic!("expected not found, got {other:?}"),
    }
}

fn repo(owner_id: i64, branch: &str, repository: &str) -> RepoRef {
    RepoRef {
        owner_id,
        branch: branch.into(),
        repository: repository.into(),
    }
}

fn new_package(name: &str, version: &str, arch: &str) -> NewPackage {
    NewPackage {
        arch: arch.into(),
        name: name.into(),
        version: version.into(),
        filename: format!("{name}-{version}.apk"),
        checksum: format!("Q1{name}{version}{arch}="),
        sha256: format!("{:0>64}", format!("{name}{version}{arch}").len()),
        size: 1234,
        stanza: format!("P:{name}\nV:{version}\nA:{arch}\n"),
    }
}

/// A package whose blob digest is `sha256`.
fn new_package_blob(name: &str, version: &str, arch: &str, sha256: &str) -> NewPackage {
    NewPackage {
        sha256: sha256.into(),
        ..new_package(name, version, arch)
    }
}

fn token<'a>(user_id: i64, hash: &'a str, scope: Role) -> NewToken<'a> {
    NewToken {
        user_id,
        token_hash: hash,
        prefix: "apkreg_abc",
        scope,
        owner_id: None,
        expires_at: None,
        label: None,
    }
}

fn key(name: &str) -> StoredKey {
    StoredKey {
        key_name: name.into(),
        private_pem: format!("private of {name}"),
        public_pem: format!("public of {name}"),
    }
}

fn rendered(arch: &str, content: &[u8]) -> RenderedIndex {
    RenderedIndex {
        arch: arch.into(),
        content: content.to_vec(),
        sha256: format!("sha-of-{}", String::from_utf8_lossy(content)),
        entries: content.len(),
        signatures: vec![
            format!(".SIGN.RSA256.{arch}.rsa.pub"),
            format!(".SIGN.RSA.{arch}.rsa.pub"),
        ],
        adb: None,
    }
}

async fn users_and_their_namespaces(store: &dyn Store) {
    store.ping().await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert!(store.user_by_name("alice").await.unwrap().is_none());

    let before = now();
    let alice = store
        .create_user("alice", Some("$argon2id$hash"), false, None)
        .await
        .unwrap();
    assert_eq!(alice.name, "alice");
    assert!(!alice.is_admin);
    assert_eq!(alice.password_hash.as_deref(), Some("$argon2id$hash"));
    let root = store.create_user("root", None, true, None).await.unwrap();
    assert!(root.is_admin);
    assert_ne!(root.id, alice.id);
    assert_eq!(store.count_users().await.unwrap(), 2);

    let found = store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.name.as_str(), found.is_admin),
        (alice.id, "alice", false)
    );
    assert_eq!(found.password_hash.as_deref(), Some("$argon2id$hash"));
    let found = store.user_by_name("root").await.unwrap().unwrap();
    assert!(found.is_admin);
    assert_eq!(found.password_hash, None);
    // Exact lookups are exact.
    assert!(store.user_by_name("Alice").await.unwrap().is_none());

    // The namespace: a public, non-organisation owner of the same name, with the user as
    // its admin.
    let namespace = store.owner_by_name("alice").await.unwrap().unwrap();
    assert_eq!(namespace.name, "alice");
    assert!(!namespace.is_private && !namespace.is_org);
    assert_eq!(
        store.member_role(namespace.id, alice.id).await.unwrap(),
        Some(Role::Admin)
    );
    let listed = store.list_users().await.unwrap();
    let listed_alice = listed.iter().find(|u| u.name == "alice").unwrap();
    assert!(listed_alice.created_at >= before && listed_alice.created_at <= now());

    store
        .set_password(alice.id, Some("$argon2id$other"), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$argon2id$other")
    );
    store.set_password(alice.id, None, None).await.unwrap();
    assert_eq!(
        store
            .user_by_name("alice")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        None
    );

    // Organisations and private owners.
    let acme = store.create_owner("acme", true, true, None).await.unwrap();
    assert_eq!(
        (acme.name.as_str(), acme.is_private, acme.is_org),
        ("acme", true, true)
    );
    let found = store.owner_by_name("acme").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.is_private, found.is_org),
        (acme.id, true, true)
    );
    store.set_owner_private(acme.id, false, None).await.unwrap();
    assert!(
        !store
            .owner_by_name("acme")
            .await
            .unwrap()
            .unwrap()
            .is_private
    );
    store.set_owner_private(acme.id, true, None).await.unwrap();
    assert!(
        store
            .owner_by_name("acme")
            .await
            .unwrap()
            .unwrap()
            .is_private
    );
    assert!(store.owner_by_name("nobody").await.unwrap().is_none());
    assert!(store.owner_by_name("ACME").await.unwrap().is_none());
}

async fn owner_and_user_names_are_unique_regardless_of_case(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    assert_eq!(
        conflict(
            store
                .create_owner("acme", false, true, None)
                .await
                .unwrap_err()
        ),
        "owner \"acme\" already exists"
    );
    assert_eq!(
        conflict(
            store
                .create_owner("ACME", false, false, None)
                .await
                .unwrap_err()
        ),
        "owner \"ACME\" already exists"
    );
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    assert_eq!(
        conflict(
            store
                .create_user("alice", None, false, None)
                .await
                .unwrap_err()
        ),
        "user \"alice\" already exists"
    );
    assert_eq!(
        conflict(
            store
                .create_user("Alice", None, true, None)
                .await
                .unwrap_err()
        ),
        "user \"Alice\" already exists"
    );
    // The user row would be new, its namespace is not: neither is created.
    assert_eq!(
        conflict(
            store
                .create_user("Acme", None, false, None)
                .await
                .unwrap_err()
        ),
        "an owner named \"Acme\" already exists"
    );
    assert!(store.user_by_name("Acme").await.unwrap().is_none());
    assert!(store
        .user_by_name_ignoring_case("acme")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert_eq!(
        conflict(
            store
                .create_owner("ALICE", false, true, None)
                .await
                .unwrap_err()
        ),
        "owner \"ALICE\" already exists"
    );
    let owners = store.list_owners().await.unwrap();
    assert_eq!(
        owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["acme", "alice"]
    );

    // Lookups ignoring case find the one spelling there is.
    for spelling in ["acme", "Acme", "ACME", "aCmE"] {
        let found = store
            .owner_by_name_ignoring_case(spelling)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id, found.name.as_str()), (acme.id, "acme"));
    }
    let found = store
        .user_by_name_ignoring_case("ALICE")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.name.as_str()), (alice.id, "alice"));
    assert!(store
        .owner_by_name_ignoring_case("acm")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .user_by_name_ignoring_case("bob")
        .await
        .unwrap()
        .is_none());
    // Names that differ in more than ASCII case are different names.
    assert!(store
        .owner_by_name_ignoring_case("acme_")
        .await
        .unwrap()
        .is_none());
    store
        .create_owner("acme-2", false, true, None)
        .await
        .unwrap();
    store
        .create_owner("acme.x", false, true, None)
        .await
        .unwrap();
}

async fn members_and_roles(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let bob = store.create_user("bob", None, false, None).await.unwrap();
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let zed = store.create_user("Zed", None, false, None).await.unwrap();
    assert_eq!(store.member_role(acme.id, bob.id).await.unwrap(), None);
    assert!(store.list_members(acme.id).await.unwrap().is_empty());

    store
        .set_member(acme.id, bob.id, Role::Read, None)
        .await
        .unwrap();
    assert_eq!(
        store.member_role(acme.id, bob.id).await.unwrap(),
        Some(Role::Read)
    );
    // Setting again replaces the role.
    store
        .set_member(acme.id, bob.id, Role::Write, None)
        .await
        .unwrap();
    assert_eq!(
        store.member_role(acme.id, bob.id).await.unwrap(),
        Some(Role::Write)
    );
    store
        .set_member(acme.id, alice.id, Role::Admin, None)
        .await
        .unwrap();
    store
        .set_member(acme.id, zed.id, Role::Read, None)
        .await
        .unwrap();

    // Ordered by user name, byte-wise (upper case first).
    let members = store.list_members(acme.id).await.unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| (m.user_id, m.user_name.as_str(), m.role))
            .collect::<Vec<_>>(),
        [
            (zed.id, "Zed", Role::Read),
            (alice.id, "alice", Role::Admin),
            (bob.id, "bob", Role::Write),
        ]
    );
    // A user's namespace lists only the user.
    let bob_ns = store.owner_by_name("bob").await.unwrap().unwrap();
    let members = store.list_members(bob_ns.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0].user_name.as_str(), members[0].role),
        ("bob", Role::Admin)
    );

    assert!(store.remove_member(acme.id, bob.id, None).await.unwrap());
    assert!(!store.remove_member(acme.id, bob.id, None).await.unwrap());
    assert_eq!(store.member_role(acme.id, bob.id).await.unwrap(), None);
    assert_eq!(store.list_members(acme.id).await.unwrap().len(), 2);
}

async fn listing_users_and_owners(store: &dyn Store) {
    let before = now();
    let bob = store
        .create_user("bob", Some("hash"), false, None)
        .await
        .unwrap();
    store.create_user("Zed", None, true, None).await.unwrap();
    store.create_user("alice", None, false, None).await.unwrap();
    let acme = store.create_owner("acme", true, true, None).await.unwrap();
    store.create_owner("Big", false, true, None).await.unwrap();
    store
        .set_member(acme.id, bob.id, Role::Write, None)
        .await
        .unwrap();

    let t = now();
    // Active, expired, revoked, and one expiring later: two count.
    for (hash, expires_at) in [("h1", None), ("h2", Some(t - 10)), ("h4", Some(t + 3600))] {
        store
            .insert_token(
                NewToken {
                    expires_at,
                    ..token(bob.id, hash, Role::Read)
                },
                None,
            )
            .await
            .unwrap();
    }
    let revoked = store
        .insert_token(token(bob.id, "h3", Role::Read), None)
        .await
        .unwrap();
    assert!(store.revoke_token(revoked, t, None).await.unwrap());

    // Ordered by name, byte-wise.
    let users = store.list_users().await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["Zed", "alice", "bob"]
    );
    let listed = users.iter().find(|u| u.name == "bob").unwrap();
    assert_eq!(listed.id, bob.id);
    assert!(!listed.is_admin);
    assert!(listed.has_password);
    assert_eq!(listed.active_tokens, 2);
    assert_eq!(listed.memberships, 2);
    assert!(listed.created_at >= before && listed.created_at <= now());
    let zed = users.iter().find(|u| u.name == "Zed").unwrap();
    assert!(zed.is_admin && !zed.has_password);
    assert_eq!((zed.active_tokens, zed.memberships), (0, 1));

    let bob_ns = store.owner_by_name("bob").await.unwrap().unwrap();
    let repo = repo(acme.id, "v3.21", "main");
    store
        .insert_package(&repo, new_package("hello", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    store
        .insert_package(&repo, new_package("hello", "1.0-r0", "aarch64"), true, None)
        .await
        .unwrap();
    store
        .insert_package(
            &RepoRef {
                branch: "edge".into(),
                ..repo.clone()
            },
            new_package("tool", "2.0-r0", "noarch"),
            true,
            None,
        )
        .await
        .unwrap();
    store
        .insert_package(
            &RepoRef {
                owner_id: bob_ns.id,
                ..repo.clone()
            },
            new_package("bobs", "1-r0", "x86_64"),
            true,
            None,
        )
        .await
        .unwrap();

    let owners = store.list_owners().await.unwrap();
    assert_eq!(
        owners.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["Big", "Zed", "acme", "alice", "bob"]
    );
    let listed = owners.iter().find(|o| o.name == "acme").unwrap();
    assert_eq!(listed.id, acme.id);
    assert!(listed.is_private && listed.is_org);
    assert_eq!(
        (listed.members, listed.repositories, listed.packages),
        (1, 2, 3)
    );
    assert!(listed.created_at >= before && listed.created_at <= now());
    let listed = owners.iter().find(|o| o.name == "bob").unwrap();
    assert!(!listed.is_private && !listed.is_org);
    assert_eq!(
        (listed.members, listed.repositories, listed.packages),
        (1, 1, 1)
    );
    let listed = owners.iter().find(|o| o.name == "Big").unwrap();
    assert_eq!(
        (listed.members, listed.repositories, listed.packages),
        (0, 0, 0)
    );
}

async fn deleting_users_and_owners_takes_what_they_hold(store: &dyn Store) {
    let admin = store.create_user("admin", None, true, None).await.unwrap();
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let alice_ns = store.owner_by_name("alice").await.unwrap().unwrap();
    store
        .set_member(acme.id, alice.id, Role::Write, None)
        .await
        .unwrap();
    store
        .set_member(alice_ns.id, admin.id, Role::Read, None)
        .await
        .unwrap();
    store
        .insert_token(token(alice.id, "alice-token", Role::Write), None)
        .await
        .unwrap();
    store
        .insert_token(
            NewToken {
                owner_id: Some(acme.id),
                ..token(admin.id, "admin-for-acme", Role::Write)
            },
            None,
        )
        .await
        .unwrap();
    store
        .insert_token(
            NewToken {
                owner_id: Some(alice_ns.id),
                ..token(admin.id, "admin-for-alice", Role::Read)
            },
            None,
        )
        .await
        .unwrap();
    store
        .insert_token(token(admin.id, "admin-everywhere", Role::Admin), None)
        .await
        .unwrap();
    store
        .insert_signing_key(alice_ns.id, key("alice-1.rsa.pub"), None)
        .await
        .unwrap();
    store
        .insert_signing_key(acme.id, key("acme-1.rsa.pub"), None)
        .await
        .unwrap();
    let alice_repo = repo(alice_ns.id, "v1", "main");
    let InsertedPackage {
        package: _,
        generation: _,
        ..
    } = store
        .insert_package(
            &alice_repo,
            new_package_blob("a", "1-r0", "x86_64", "blob-a"),
            true,
            None,
        )
        .await
        .unwrap();
    let acme_repo = repo(acme.id, "v1", "main");
    let InsertedPackage {
        package: _,
        generation: _,
        ..
    } = store
        .insert_package(
            &acme_repo,
            new_package_blob("b", "1-r0", "x86_64", "blob-b"),
            true,
            None,
        )
        .await
        .unwrap();
    let acme_repository = store.repository(&acme_repo).await.unwrap().unwrap();
    store
        .publish_indexes(
            acme_repository.id,
            1,
            vec![rendered("x86_64", b"acme index")],
            vec![],
            1_000_000,
        )
        .await
        .unwrap();

    // The user with its namespace: tokens, memberships, key, repositories, packages go.
    store
        .delete_user(alice.id, Some(alice_ns.id), None)
        .await
        .unwrap();
    assert!(store.user_by_name("alice").await.unwrap().is_none());
    assert!(store.owner_by_name("alice").await.unwrap().is_none());
    assert!(store.token_by_hash("alice-token").await.unwrap().is_none());
    assert!(store
        .token_by_hash("admin-for-alice")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.member_role(acme.id, alice.id).await.unwrap(), None);
    assert!(store.signing_key(alice_ns.id).await.unwrap().is_none());
    assert!(store.repository(&alice_repo).await.unwrap().is_none());
    assert!(!store.blob_referenced("blob-a").await.unwrap());
    assert_eq!(
        store
            .list_tokens(None)
            .await
            .unwrap()
            .iter()
            .map(|t| t.token_hash.as_str())
            .collect::<Vec<_>>(),
        ["admin-for-acme", "admin-everywhere"]
    );
    assert_eq!(
        not_found(store.delete_user(alice.id, None, None).await.unwrap_err()),
        "the user no longer exists"
    );

    // The owner with its key, members, owner-limited tokens, repositories, packages and
    // indexes.
    store.delete_owner(acme.id, None).await.unwrap();
    assert!(store.owner_by_name("acme").await.unwrap().is_none());
    assert!(store.signing_key(acme.id).await.unwrap().is_none());
    assert!(store.list_members(acme.id).await.unwrap().is_empty());
    assert!(store
        .token_by_hash("admin-for-acme")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .token_by_hash("admin-everywhere")
        .await
        .unwrap()
        .is_some());
    assert!(store.repository(&acme_repo).await.unwrap().is_none());
    assert!(store
        .repository_by_id(acme_repository.id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .index(acme_repository.id, "x86_64")
        .await
        .unwrap()
        .is_none());
    assert!(store.referenced_blobs().await.unwrap().is_empty());
    assert!(store
        .list_repositories(None, None, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        not_found(store.delete_owner(acme.id, None).await.unwrap_err()),
        "the owner no longer exists"
    );
    // Without a namespace, only the user goes; its name is free again.
    let carol = store.create_user("carol", None, false, None).await.unwrap();
    store.delete_user(carol.id, None, None).await.unwrap();
    assert!(store.user_by_name("carol").await.unwrap().is_none());
    assert!(store.owner_by_name("carol").await.unwrap().is_some());
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["admin"]);
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    assert!(store.signing_key(acme.id).await.unwrap().is_none());
}

async fn tokens(store: &dyn Store) {
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let bob = store.create_user("bob", None, false, None).await.unwrap();
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let before = now();
    let first = store
        .insert_token(
            NewToken {
                user_id: alice.id,
                token_hash: "hash-1",
                prefix: "apkreg_one",
                scope: Role::Write,
                owner_id: Some(acme.id),
                expires_at: Some(before + 3600),
                label: Some("nightly builds"),
            },
            None,
        )
        .await
        .unwrap();
    let second = store
        .insert_token(token(bob.id, "hash-2", Role::Read), None)
        .await
        .unwrap();
    let third = store
        .insert_token(token(alice.id, "hash-3", Role::Admin), None)
        .await
        .unwrap();
    assert!(first < second && second < third);
    assert_eq!(
        conflict(
            store
                .insert_token(token(bob.id, "hash-1", Role::Read), None)
                .await
                .unwrap_err()
        ),
        "token collision, try again"
    );

    let found = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(found.id, first);
    assert_eq!(found.token_hash, "hash-1");
    assert_eq!(
        (found.user_id, found.user_name.as_str()),
        (alice.id, "alice")
    );
    assert_eq!(found.prefix, "apkreg_one");
    assert_eq!(found.scope, Role::Write);
    assert_eq!(
        (found.owner_id, found.owner_name.as_deref()),
        (Some(acme.id), Some("acme"))
    );
    assert_eq!(found.expires_at, Some(before + 3600));
    assert_eq!(found.revoked_at, None);
    assert!(found.created_at >= before && found.created_at <= now());
    assert_eq!(found.label.as_deref(), Some("nightly builds"));
    assert_eq!(found.last_used_at, None);
    let found = store.token_by_hash("hash-2").await.unwrap().unwrap();
    assert_eq!(
        (
            found.owner_id,
            found.owner_name,
            found.label,
            found.expires_at
        ),
        (None, None, None, None)
    );
    assert_eq!(found.scope, Role::Read);
    assert!(store.token_by_hash("hash-x").await.unwrap().is_none());

    // Listed by id, for everyone or for one user.
    let ids = |tokens: Vec<alpine_registry::store::TokenRecord>| {
        tokens.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_tokens(None).await.unwrap()),
        [first, second, third]
    );
    assert_eq!(
        ids(store.list_tokens(Some(alice.id)).await.unwrap()),
        [first, third]
    );
    assert_eq!(
        ids(store.list_tokens(Some(bob.id)).await.unwrap()),
        [second]
    );
    assert!(store.list_tokens(Some(-1)).await.unwrap().is_empty());

    // Revoked once; revoking again, or an unknown id, says so.
    assert!(store.revoke_token(second, before + 5, None).await.unwrap());
    assert!(!store.revoke_token(second, before + 9, None).await.unwrap());
    assert!(!store
        .revoke_token(third + 1000, before, None)
        .await
        .unwrap());
    let found = store.token_by_hash("hash-2").await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(before + 5));

    store.touch_token(first, before + 60).await.unwrap();
    assert_eq!(
        store
            .token_by_hash("hash-1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(before + 60)
    );
    store.touch_token(first, before + 120).await.unwrap();
    let listed = store.list_tokens(Some(alice.id)).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(before + 120));
    assert_eq!(listed[1].last_used_at, None);
}

async fn signing_keys_first_insert_wins(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let beta = store.create_owner("beta", false, true, None).await.unwrap();
    let gamma = store
        .create_owner("gamma", false, true, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .owners_without_key()
            .await
            .unwrap()
            .iter()
            .map(|o| (o.id, o.name.as_str()))
            .collect::<Vec<_>>(),
        [(acme.id, "acme"), (beta.id, "beta"), (gamma.id, "gamma")]
    );
    assert!(store.signing_key(acme.id).await.unwrap().is_none());
    assert!(store.active_key_ids(acme.id).await.unwrap().is_empty());

    let stored = store
        .insert_signing_key(acme.id, key("acme-1.rsa.pub"), None)
        .await
        .unwrap();
    assert_eq!(stored.key_name, "acme-1.rsa.pub");
    assert_eq!(stored.private_pem, "private of acme-1.rsa.pub");
    assert_eq!(stored.public_pem, "public of acme-1.rsa.pub");
    // A second key for the same owner is not stored: the first comes back.
    let again = store
        .insert_signing_key(acme.id, key("acme-2.rsa.pub"), None)
        .await
        .unwrap();
    assert_eq!(again.key_name, "acme-1.rsa.pub");
    assert_eq!(again.private_pem, "private of acme-1.rsa.pub");
    let read = store.signing_key(acme.id).await.unwrap().unwrap();
    assert_eq!(
        (read.key_name.as_str(), read.public_pem.as_str()),
        ("acme-1.rsa.pub", "public of acme-1.rsa.pub")
    );
    let listed = store.signing_keys(acme.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_name, "acme-1.rsa.pub");
    assert_eq!(store.active_key_ids(acme.id).await.unwrap(), [listed[0].id]);

    // Racing inserts for one owner: one key wins, everyone gets it.
    let racers = join_all(
        (0..8)
            .map(|i| store.insert_signing_key(gamma.id, key(&format!("gamma-{i}.rsa.pub")), None)),
    )
    .await;
    let names: HashSet<String> = racers.into_iter().map(|k| k.unwrap().key_name).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        store
            .signing_key(gamma.id)
            .await
            .unwrap()
            .map(|k| k.key_name),
        names.into_iter().next()
    );
    assert_eq!(store.signing_keys(gamma.id).await.unwrap().len(), 1);
    assert_eq!(
        store
            .owners_without_key()
            .await
            .unwrap()
            .iter()
            .map(|o| (o.id, o.name.as_str()))
            .collect::<Vec<_>>(),
        [(beta.id, "beta")]
    );
}

async fn signing_keys_rotate_and_retire(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let other = store
        .create_owner("other", false, true, None)
        .await
        .unwrap();
    store
        .insert_signing_key(acme.id, key("acme-1.rsa.pub"), None)
        .await
        .unwrap();
    store
        .insert_signing_key(other.id, key("other-1.rsa.pub"), None)
        .await
        .unwrap();
    let main = store
        .create_repository(&repo(acme.id, "edge", "main"), None)
        .await
        .unwrap();
    let testing = store
        .create_repository(&repo(acme.id, "edge", "testing"), None)
        .await
        .unwrap();
    store
        .create_repository(&repo(other.id, "edge", "main"), None)
        .await
        .unwrap();

    // A second key: newest first, every repository of the owner (and only of it) to be
    // built again.
    let bumped = store
        .add_signing_key(acme.id, key("acme-2.rsa.pub"), 3, None)
        .await
        .unwrap();
    assert_eq!(
        bumped
            .iter()
            .map(|r| (r.id, r.wanted_gen))
            .collect::<Vec<_>>(),
        [
            (main.id, main.wanted_gen + 1),
            (testing.id, testing.wanted_gen + 1)
        ]
    );
    let keys = store.signing_keys(acme.id).await.unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.key_name.as_str()).collect();
    assert_eq!(names, ["acme-2.rsa.pub", "acme-1.rsa.pub"]);
    assert!(keys.iter().all(|k| k.retired_at.is_none()));
    assert_eq!(
        store.active_key_ids(acme.id).await.unwrap(),
        [keys[0].id, keys[1].id]
    );
    assert_eq!(
        store.signing_key(acme.id).await.unwrap().unwrap().key_name,
        "acme-2.rsa.pub"
    );
    // No more active keys than allowed.
    let full = store
        .add_signing_key(acme.id, key("acme-5.rsa.pub"), 2, None)
        .await
        .unwrap_err();
    assert!(conflict(full).contains("active keys"));
    assert_eq!(store.signing_keys(acme.id).await.unwrap().len(), 2);
    let first = store.insert_signing_key(acme.id, key("acme-3.rsa.pub"), None);
    assert_eq!(
        first.await.unwrap().key_name,
        "acme-2.rsa.pub",
        "not a first key"
    );

    // Names are unique across owners.
    let taken = store
        .add_signing_key(other.id, key("acme-1.rsa.pub"), 3, None)
        .await
        .unwrap_err();
    assert!(conflict(taken).contains("acme-1.rsa.pub"));
    assert_eq!(store.signing_keys(other.id).await.unwrap().len(), 1);

    // Retire the old key; the last active one and a retired one are refused.
    let retired = store
        .retire_signing_key(acme.id, "acme-1.rsa.pub", 1_700_000_000, None)
        .await
        .unwrap();
    match retired {
        Retirement::Retired(repositories) => assert_eq!(repositories.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.active_key_ids(acme.id).await.unwrap(), [keys[0].id]);
    let keys = store.signing_keys(acme.id).await.unwrap();
    assert_eq!(keys[1].retired_at, Some(1_700_000_000));
    assert!(matches!(
        store
            .retire_signing_key(acme.id, "acme-1.rsa.pub", 1, None)
            .await
            .unwrap(),
        Retirement::AlreadyRetired
    ));
    assert!(matches!(
        store
            .retire_signing_key(acme.id, "acme-2.rsa.pub", 1, None)
            .await
            .unwrap(),
        Retirement::LastActive
    ));
    assert!(matches!(
        store
            .retire_signing_key(acme.id, "other-1.rsa.pub", 1, None)
            .await
            .unwrap(),
        Retirement::NoSuchKey
    ));
    // Two retirements at once leave one key active.
    store
        .add_signing_key(acme.id, key("acme-4.rsa.pub"), 3, None)
        .await
        .unwrap();
    let both = join_all(
        ["acme-2.rsa.pub", "acme-4.rsa.pub"]
            .map(|name| store.retire_signing_key(acme.id, name, 2, None)),
    )
    .await;
    let retired = both
        .iter()
        .filter(|r| matches!(r, Ok(Retirement::Retired(_))))
        .count();
    assert_eq!(retired, 1, "{both:?}");
    assert_eq!(store.active_key_ids(acme.id).await.unwrap().len(), 1);
    assert!(store.owners_without_key().await.unwrap().is_empty());
}

async fn packages_insert_find_delete(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v3.21", "main");
    assert!(store.repository(&main).await.unwrap().is_none());

    let before_ms = common::unix_now_ms();
    let InsertedPackage {
        package,
        generation,
        ..
    } = store
        .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    let after_ms = common::unix_now_ms();
    assert_eq!(generation, 1);
    // The upload created the repository.
    let repository = store.repository(&main).await.unwrap().unwrap();
    assert_eq!(package.repository_id, repository.id);
    assert_eq!(
        (
            package.arch.as_str(),
            package.name.as_str(),
            package.version.as_str(),
            package.filename.as_str()
        ),
        ("x86_64", "hello", "1.0-r0", "hello-1.0-r0.apk")
    );
    let expected = new_package("hello", "1.0-r0", "x86_64");
    assert_eq!(package.checksum, expected.checksum);
    assert_eq!(package.sha256, expected.sha256);
    assert_eq!(package.size, 1234);
    assert!(package.modified_ms >= before_ms && package.modified_ms <= after_ms);
    assert_eq!(package.created_at, package.modified_ms.div_euclid(1000));

    // The same file again, or the same name and version under another file name.
    let message = conflict(
        store
            .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), true, None)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        message,
        "x86_64/hello-1.0-r0.apk already exists; delete it before uploading it again"
    );
    let renamed = NewPackage {
        filename: "renamed.apk".into(),
        ..new_package("hello", "1.0-r0", "x86_64")
    };
    assert_eq!(
        conflict(
            store
                .insert_package(&main, renamed, true, None)
                .await
                .unwrap_err()
        ),
        "x86_64/renamed.apk already exists; delete it before uploading it again"
    );
    // A refused insert changes nothing: no generation was used up.
    let repository = store.repository(&main).await.unwrap().unwrap();
    assert_eq!(repository.wanted_gen, 1);
    assert_eq!(store.list_packages(repository.id).await.unwrap().len(), 1);

    // Other architectures, versions, repositories and branches are separate.
    let InsertedPackage {
        package: _,
        generation,
        ..
    } = store
        .insert_package(&main, new_package("hello", "1.0-r0", "aarch64"), true, None)
        .await
        .unwrap();
    assert_eq!(generation, 2);
    let InsertedPackage {
        package: _,
        generation,
        ..
    } = store
        .insert_package(&main, new_package("hello", "1.1-r0", "x86_64"), true, None)
        .await
        .unwrap();
    assert_eq!(generation, 3);
    let community = repo(acme.id, "v3.21", "community");
    let InsertedPackage {
        package: other,
        generation,
        ..
    } = store
        .insert_package(
            &community,
            new_package("hello", "1.0-r0", "x86_64"),
            true,
            None,
        )
        .await
        .unwrap();
    assert_eq!(generation, 1);
    assert_ne!(other.repository_id, repository.id);
    let InsertedPackage {
        package: _,
        generation: _,
        ..
    } = store
        .insert_package(&main, new_package("tool", "2.0-r0", "noarch"), true, None)
        .await
        .unwrap();

    // Found at its own architecture; noarch at any architecture.
    let found = store
        .find_package(&main, "x86_64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, package.id);
    assert_eq!(found.modified_ms, package.modified_ms);
    assert_eq!(found.created_at, package.created_at);
    let found = store
        .find_package(&main, "aarch64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.arch, "aarch64");
    assert!(store
        .find_package(&main, "armhf", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .is_none());
    for arch in ["x86_64", "armhf", "noarch"] {
        let found = store
            .find_package(&main, arch, "tool-2.0-r0.apk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.arch, "noarch", "{arch}");
    }
    assert!(store
        .find_package(
            &repo(acme.id, "v3.21", "nope"),
            "x86_64",
            "hello-1.0-r0.apk"
        )
        .await
        .unwrap()
        .is_none());
    assert!(store
        .find_package(&repo(acme.id, "edge", "main"), "x86_64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .is_none());

    // Deleted through any architecture path for noarch, once.
    let (deleted, generation) = store
        .delete_package(&main, "armhf", "tool-2.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (deleted.arch.as_str(), deleted.name.as_str()),
        ("noarch", "tool")
    );
    assert_eq!(generation, 5);
    assert!(store
        .delete_package(&main, "armhf", "tool-2.0-r0.apk", None)
        .await
        .unwrap()
        .is_none());
    let (deleted, generation) = store
        .delete_package(&main, "x86_64", "hello-1.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.id, package.id);
    assert_eq!(deleted.sha256, package.sha256);
    assert_eq!(generation, 6);
    assert!(store
        .find_package(&main, "x86_64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .is_none());
    // The other architecture's file stays.
    assert!(store
        .find_package(&main, "aarch64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .delete_package(&repo(acme.id, "v3.21", "nope"), "x86_64", "x.apk", None)
        .await
        .unwrap()
        .is_none());
    // A missing file changes no generation.
    assert!(store
        .delete_package(&main, "x86_64", "missing-1-r0.apk", None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.repository(&main).await.unwrap().unwrap().wanted_gen,
        6
    );

    // Deleted, the file may come back.
    let InsertedPackage {
        package: again,
        generation,
        ..
    } = store
        .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    assert_ne!(again.id, package.id);
    assert_eq!(generation, 7);
}

async fn noarch_and_concrete_architectures_clash(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "edge", "main");
    store
        .insert_package(&main, new_package("foo", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    store
        .insert_package(&main, new_package("foo", "1.0-r0", "aarch64"), true, None)
        .await
        .unwrap();
    // Either clashing row may be named.
    let message = conflict(
        store
            .insert_package(&main, new_package("foo", "1.0-r0", "noarch"), true, None)
            .await
            .unwrap_err(),
    );
    assert!(
        ["x86_64", "aarch64"].iter().any(|arch| message
            == format!(
                "foo-1.0-r0 already exists in this repository as {arch}; a package is \
                 either noarch or built per architecture, delete the other first"
            )),
        "{message}"
    );

    store
        .insert_package(&main, new_package("bar", "2.0-r0", "noarch"), true, None)
        .await
        .unwrap();
    assert_eq!(
        conflict(
            store
                .insert_package(&main, new_package("bar", "2.0-r0", "x86_64"), true, None)
                .await
                .unwrap_err()
        ),
        "bar-2.0-r0 already exists in this repository as noarch; a package is either \
         noarch or built per architecture, delete the other first"
    );
    // Another version, or another repository, does not clash.
    store
        .insert_package(&main, new_package("bar", "2.1-r0", "x86_64"), true, None)
        .await
        .unwrap();
    store
        .insert_package(
            &repo(acme.id, "edge", "testing"),
            new_package("bar", "2.0-r0", "x86_64"),
            true,
            None,
        )
        .await
        .unwrap();
    let repository = store.repository(&main).await.unwrap().unwrap();
    // Four inserts went in, two were refused without using a generation.
    assert_eq!(repository.wanted_gen, 4);
    assert!(store.has_noarch(repository.id).await.unwrap());
    store
        .delete_package(&main, "x86_64", "bar-2.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert!(!store.has_noarch(repository.id).await.unwrap());
    // Gone as noarch, it may come per architecture.
    store
        .insert_package(&main, new_package("bar", "2.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
}

async fn package_and_index_files_carry_their_place_and_stanza(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let other = store
        .create_owner("other", false, true, None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (owner, branch, repository, name, arch) in [
        (&acme, "v1", "main", "zeta", "x86_64"),
        (&acme, "edge", "testing", "zeta", "noarch"),
        (&acme, "v1", "main", "alpha", "aarch64"),
        (&acme, "v1", "main", "beta", "noarch"),
        (&other, "v1", "main", "zeta", "x86_64"),
    ] {
        let inserted = store
            .insert_package(
                &repo(owner.id, branch, repository),
                new_package(name, "1-r0", arch),
                true,
                None,
            )
            .await
            .unwrap();
        ids.push(inserted.package);
    }
    let places = |files: &[alpine_registry::store::CatalogFile]| -> Vec<String> {
        files
            .iter()
            .map(|f| {
                format!(
                    "{}/{} {} {} {:?}",
                    f.branch, f.repository, f.package.name, f.package.arch, f.stanza
                )
            })
            .collect()
    };
    let zeta = store.package_files(acme.id, "zeta").await.unwrap();
    assert_eq!(
        places(&zeta),
        [
            "v1/main zeta x86_64 \"P:zeta\\nV:1-r0\\nA:x86_64\\n\"",
            "edge/testing zeta noarch \"P:zeta\\nV:1-r0\\nA:noarch\\n\"",
        ],
        "the owner's files of that name only, by row id"
    );
    assert!(store
        .package_files(acme.id, "nothing")
        .await
        .unwrap()
        .is_empty());
    let main = ids[0].repository_id;
    let listed = store.index_files(main, "x86_64").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|f| f.package.name.as_str())
            .collect::<Vec<_>>(),
        ["zeta", "beta"],
        "the architecture's files and the noarch ones, by row id"
    );
    assert_eq!(listed[0].package.id, ids[0].id);
    let arm = store.index_files(main, "aarch64").await.unwrap();
    assert_eq!(arm.len(), 2);
    assert!(store
        .index_files(main + 1000, "x86_64")
        .await
        .unwrap()
        .is_empty());
}

/// A search that any scope and page of these tests starts from.
fn search(scope: OwnerScope) -> PackageSearch {
    PackageSearch {
        scope,
        term: None,
        owner: None,
        branch: None,
        repository: None,
        arch: None,
        maintainer: None,
        after: None,
        limit: 100,
    }
}

const PUBLIC: OwnerScope = OwnerScope {
    every: false,
    public: true,
    member: None,
    only: None,
};

/// What a search gave to its collector: the files, then the descriptions it asked for
/// (of every file).
#[derive(Default)]
struct Collected {
    files: Vec<SearchFile>,
    descriptions: Vec<(i64, String)>,
}

impl SearchCollector for Collected {
    fn file(&mut self, file: SearchFile) {
        self.files.push(file);
    }

    fn wanted_descriptions(&self) -> Vec<i64> {
        self.files.iter().map(|f| f.package_id).collect()
    }

    fn description(&mut self, package_id: i64, description: String) {
        self.descriptions.push((package_id, description));
    }
}

async fn run_search(store: &dyn Store, search: &PackageSearch) -> (SearchPage, Collected) {
    let mut collected = Collected::default();
    let page = store.search_packages(search, &mut collected).await.unwrap();
    collected.descriptions.sort();
    (page, collected)
}

/// "name owner" of each key of a page.
async fn keys(store: &dyn Store, search: &PackageSearch) -> Vec<String> {
    run_search(store, search)
        .await
        .0
        .keys
        .iter()
        .map(|(name, owner)| format!("{name} {owner}"))
        .collect()
}

/// An index entry as the registry writes one, with `extra` lines.
fn entry(name: &str, version: &str, arch: &str, extra: &str) -> NewPackage {
    NewPackage {
        stanza: format!(
            "C:Q1{name}{version}=\nP:{name}\nV:{version}\nA:{arch}\nS:100\nI:4096\n\
             T:Description of {name}: \"quoted\", back\\slash\nU:https://example.org/\nL:MIT\n\
             {extra}\n"
        ),
        ..new_package(name, version, arch)
    }
}

/// The database keeps the catalog rows of every package row from its stanza, in the
/// transaction of the row, and drops them with it.
async fn catalog_rows_follow_their_package_rows(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v1", "main");
    let libfoo = store
        .insert_package(
            &main,
            entry(
                "libfoo",
                "1.0-r0",
                "x86_64",
                "m:Jane DOE <Jane@Example.org>\nD:so:libc.musl-x86_64.so.1 !old bar>=2\n\
                 p:so:libfoo.so.1=1.0 cmd:foo=1.0 cmd:foo=1.1 \"odd\\name\"=1\n",
            ),
            true,
            None,
        )
        .await
        .unwrap()
        .package;
    for (name, extra) in [
        ("bar", "D:libfoo>=1\n"),
        ("tool", "D:cmd:foo /bin/sh\n"),
        ("other", "D:!libfoo\n"),
    ] {
        store
            .insert_package(&main, entry(name, "1-r0", "noarch", extra), true, None)
            .await
            .unwrap();
    }
    let term = |term: SearchTerm| PackageSearch {
        term: Some(term),
        ..search(PUBLIC)
    };
    let substring = |text: &str| term(SearchTerm::Substring(text.into()));
    // By what it provides: the name an atom is about, a substring, letters lowercased.
    assert_eq!(keys(store, &substring("cmd:foo")).await, ["libfoo acme"]);
    assert_eq!(keys(store, &substring("libfoo.so")).await, ["libfoo acme"]);
    assert!(
        keys(store, &substring("1.0")).await.is_empty(),
        "not the version"
    );
    assert_eq!(keys(store, &substring("odd\\name")).await, ["libfoo acme"]);
    assert_eq!(keys(store, &substring("bfo")).await, ["libfoo acme"]);
    // The maintainer, lowercased; a package without one matches no maintainer.
    let jane = PackageSearch {
        maintainer: Some("jane doe <jane@".into()),
        ..search(PUBLIC)
    };
    let (page, collected) = run_search(store, &jane).await;
    assert_eq!(page.keys, [("libfoo".to_string(), "acme".to_string())]);
    assert_eq!(
        collected.descriptions,
        [(
            libfoo.id,
            "Description of libfoo: \"quoted\", back\\slash".to_string()
        )]
    );
    // Dependencies resolve to a package of that name, else to the first providing it.
    let mut providers = store
        .providers(
            acme.id,
            &[
                "so:libfoo.so.1".into(),
                "libfoo".into(),
                "cmd:foo".into(),
                "old".into(),
                "missing".into(),
            ],
        )
        .await
        .unwrap();
    providers.sort();
    assert_eq!(
        providers,
        [
            ("cmd:foo".to_string(), "libfoo".to_string()),
            ("libfoo".into(), "libfoo".into()),
            ("so:libfoo.so.1".into(), "libfoo".into()),
        ]
    );
    // Required by: a dependency on the name or on what it provides; a conflict is none.
    assert_eq!(
        store.required_by(acme.id, "libfoo", 10).await.unwrap(),
        (vec!["bar".to_string(), "tool".to_string()], 2)
    );
    assert_eq!(
        store.required_by(acme.id, "libfoo", 1).await.unwrap(),
        (vec!["bar".to_string()], 2),
        "the first by name, and how many in all"
    );
    assert_eq!(
        store.required_by(acme.id, "old", 10).await.unwrap(),
        (vec![], 0)
    );

    // Gone with the row.
    store
        .delete_package(&main, "x86_64", "libfoo-1.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert!(keys(store, &substring("cmd:foo")).await.is_empty());
    assert!(store
        .providers(acme.id, &["cmd:foo".into()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.required_by(acme.id, "libfoo", 10).await.unwrap(),
        (vec!["bar".to_string()], 1)
    );
    // And with the repository.
    store.delete_repository(&main, None).await.unwrap().unwrap();
    assert!(keys(store, &search(PUBLIC)).await.is_empty());
}

/// Keys in byte order of (name, owner), counted over all pages, within the scope and the
/// filters; pages continue after their cursor.
async fn searches_page_by_name_and_owner_within_their_scope(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let hidden = store
        .create_owner("hidden", true, true, None)
        .await
        .unwrap();
    let zed = store.create_owner("zed", false, true, None).await.unwrap();
    let user = store.create_user("uma", None, false, None).await.unwrap();
    store
        .set_member(hidden.id, user.id, Role::Read, None)
        .await
        .unwrap();
    for (owner, branch, name, arch, extra) in [
        (&acme, "v1", "apkg", "x86_64", "m:Jane <j@x>\n"),
        (&acme, "edge", "apkg", "aarch64", ""),
        (&acme, "v1", "Bpkg", "noarch", ""),
        (&zed, "v1", "apkg", "x86_64", ""),
        (&hidden, "v1", "secret", "x86_64", "m:Jane <j@x>\n"),
    ] {
        store
            .insert_package(
                &repo(owner.id, branch, "main"),
                entry(name, "1-r0", arch, extra),
                true,
                None,
            )
            .await
            .unwrap();
    }
    // Byte order: uppercase first; one name of two owners, by owner.
    assert_eq!(
        keys(store, &search(PUBLIC)).await,
        ["Bpkg acme", "apkg acme", "apkg zed"]
    );
    let member = OwnerScope {
        member: Some(user.id),
        ..OwnerScope::default()
    };
    assert_eq!(keys(store, &search(member)).await.len(), 4);
    let every = OwnerScope {
        every: true,
        ..OwnerScope::default()
    };
    assert_eq!(keys(store, &search(every)).await.len(), 4);
    // A token limited to `hidden`, of a user who is not a member: public owners only.
    let limited = OwnerScope {
        public: true,
        member: Some(user.id + 1000),
        only: Some(hidden.id),
        ..OwnerScope::default()
    };
    assert_eq!(keys(store, &search(limited)).await.len(), 3);
    assert!(keys(store, &search(OwnerScope::default())).await.is_empty());
    // What a private owner holds is neither matched nor counted outside the scope.
    let jane = |scope| PackageSearch {
        maintainer: Some("jane".into()),
        ..search(scope)
    };
    let (page, _) = run_search(store, &jane(PUBLIC)).await;
    assert_eq!((page.total, page.keys.len()), (1, 1));
    let (page, _) = run_search(store, &jane(member)).await;
    assert_eq!(page.total, 2);

    // Filters: owner, branch, repository, and an architecture with the noarch files.
    let filtered = |change: fn(&mut PackageSearch)| {
        let mut search = search(PUBLIC);
        change(&mut search);
        search
    };
    assert_eq!(
        keys(store, &filtered(|s| s.owner = Some("zed".into()))).await,
        ["apkg zed"]
    );
    assert_eq!(
        keys(store, &filtered(|s| s.branch = Some("edge".into()))).await,
        ["apkg acme"]
    );
    assert!(
        keys(store, &filtered(|s| s.repository = Some("other".into())))
            .await
            .is_empty()
    );
    let arm = filtered(|s| s.arch = Some("aarch64".into()));
    assert_eq!(keys(store, &arm).await, ["Bpkg acme", "apkg acme"]);
    // A page's files are those that match, by package id.
    let (_, collected) = run_search(store, &arm).await;
    let files: Vec<String> = collected
        .files
        .iter()
        .map(|f| format!("{} {} {}", f.name, f.branch, f.arch))
        .collect();
    assert_eq!(files, ["apkg edge aarch64", "Bpkg v1 noarch"]);
    assert!(collected
        .files
        .windows(2)
        .all(|w| w[0].package_id < w[1].package_id));

    // Pages of one: each continues after the last key of the previous one; a package
    // published meanwhile that sorts after the position appears, one before does not.
    let mut walk = search(PUBLIC);
    walk.limit = 1;
    let mut seen = Vec::new();
    loop {
        let (page, _) = run_search(store, &walk).await;
        if seen.len() == 1 {
            for (name, owner) in [("Aearly", &acme), ("zlate", &zed)] {
                store
                    .insert_package(
                        &repo(owner.id, "v1", "main"),
                        entry(name, "1-r0", "x86_64", ""),
                        true,
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
        assert_eq!(page.keys.len(), 1);
        seen.push(format!("{} {}", page.keys[0].0, page.keys[0].1));
        if !page.more {
            assert_eq!(page.total, 5);
            break;
        }
        walk.after = Some(page.keys[0].clone());
    }
    assert_eq!(
        seen,
        ["Bpkg acme", "apkg acme", "apkg zed", "zlate zed"],
        "no key twice, none skipped"
    );
}

/// `owners_in` admits exactly what `OwnerScope::admits` says.
async fn owners_in_a_scope(store: &dyn Store) {
    let user = store.create_user("uma", None, false, None).await.unwrap();
    let mut owners: Vec<(Owner, bool)> = Vec::new();
    for (name, private, member) in [
        ("pub", false, false),
        ("pubmember", false, true),
        ("priv", true, false),
        ("privmember", true, true),
    ] {
        let owner = store.create_owner(name, private, true, None).await.unwrap();
        if member {
            store
                .set_member(owner.id, user.id, Role::Read, None)
                .await
                .unwrap();
        }
        owners.push((owner, member));
    }
    // The user's own namespace is an owner too, on which the user is admin.
    let uma = store.owner_by_name("uma").await.unwrap().unwrap();
    owners.push((uma, true));
    owners.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let privmember = owners.iter().find(|(o, _)| o.name == "privmember").unwrap();
    let only = privmember.0.id;
    for every in [false, true] {
        for public in [false, true] {
            for member in [None, Some(user.id)] {
                for only in [None, Some(only)] {
                    let scope = OwnerScope {
                        every,
                        public,
                        member,
                        only,
                    };
                    let expected: Vec<&str> = owners
                        .iter()
                        .filter(|(o, is_member)| scope.admits(o, *is_member))
                        .map(|(o, _)| o.name.as_str())
                        .collect();
                    let got = store.owners_in(&scope).await.unwrap();
                    let got: Vec<&str> = got.iter().map(|o| o.name.as_str()).collect();
                    assert_eq!(got, expected, "{scope:?}");
                }
            }
        }
    }
}

async fn referenced_blobs_and_listing(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v1", "main");
    let other = repo(acme.id, "v1", "other");
    assert!(store.referenced_blobs().await.unwrap().is_empty());
    assert!(!store.blob_referenced("aaaa").await.unwrap());
    // One blob under two rows.
    for (repository, name, arch, blob) in [
        (&main, "zeta", "x86_64", "aaaa"),
        (&main, "alpha", "x86_64", "bbbb"),
        (&main, "alpha", "aarch64", "cccc"),
        (&main, "Beta", "x86_64", "dddd"),
        (&other, "alpha", "x86_64", "aaaa"),
    ] {
        store
            .insert_package(
                repository,
                new_package_blob(name, "1-r0", arch, blob),
                true,
                None,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.referenced_blobs().await.unwrap(),
        ["aaaa", "bbbb", "cccc", "dddd"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>()
    );
    assert!(store.blob_referenced("aaaa").await.unwrap());
    assert!(!store.blob_referenced("eeee").await.unwrap());

    // Ordered by architecture, then file name, byte-wise.
    let repository = store.repository(&main).await.unwrap().unwrap();
    let listed: Vec<(String, String, String)> = store
        .list_packages(repository.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.repository_id, repository.id);
            (p.arch, p.filename, p.sha256)
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("aarch64", "alpha-1-r0.apk", "cccc"),
            ("x86_64", "Beta-1-r0.apk", "dddd"),
            ("x86_64", "alpha-1-r0.apk", "bbbb"),
            ("x86_64", "zeta-1-r0.apk", "aaaa"),
        ]
        .map(|(a, f, s)| (a.to_string(), f.to_string(), s.to_string()))
    );
    assert!(store
        .list_packages(repository.id + 1000)
        .await
        .unwrap()
        .is_empty());

    // A blob stays referenced while any row holds it.
    store
        .delete_package(&main, "x86_64", "zeta-1-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert!(store.blob_referenced("aaaa").await.unwrap());
    store
        .delete_package(&other, "x86_64", "alpha-1-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert!(!store.blob_referenced("aaaa").await.unwrap());
    assert!(!store.referenced_blobs().await.unwrap().contains("aaaa"));
}

/// Every way package rows go (a package, a repository, an owner, a user's namespace)
/// records when their blobs lost the reference, which orphan collection waits on.
async fn deletions_release_their_blobs(store: &dyn Store) {
    let before = common::unix_now_ms();
    let set = |blobs: &[&str]| blobs.iter().map(|b| b.to_string()).collect::<HashSet<_>>();
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let beta = store.create_owner("beta", false, true, None).await.unwrap();
    let carol = store.create_user("carol", None, false, None).await.unwrap();
    let carols = store.owner_by_name("carol").await.unwrap().unwrap();
    let main = repo(acme.id, "v1", "main");
    let other = repo(acme.id, "v1", "other");
    let betas = repo(beta.id, "v1", "main");
    let carol_main = repo(carols.id, "v1", "main");
    for (repository, name, blob) in [
        (&main, "one", "aaaa"),
        (&main, "two", "bbbb"),
        (&other, "three", "cccc"),
        (&betas, "four", "dddd"),
        (&betas, "five", "aaaa"),
        (&carol_main, "six", "eeee"),
    ] {
        store
            .insert_package(
                repository,
                new_package_blob(name, "1-r0", "x86_64", blob),
                true,
                None,
            )
            .await
            .unwrap();
    }
    assert!(store.released_blobs(0).await.unwrap().is_empty());

    // Released although another row still holds it: the row that went is what counts.
    store
        .delete_package(&main, "x86_64", "one-1-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.released_blobs(before).await.unwrap(), set(&["aaaa"]));
    assert!(store.blob_released_since("aaaa", before).await.unwrap());
    assert!(!store.blob_released_since("bbbb", before).await.unwrap());
    // Not released since a moment after it went.
    let later = common::unix_now_ms() + 1;
    assert!(!store.blob_released_since("aaaa", later).await.unwrap());
    assert!(store.released_blobs(later).await.unwrap().is_empty());

    // The clock reaches `later` (a millisecond at most) before the next deletions.
    while common::unix_now_ms() < later {
        std::thread::yield_now();
    }
    store
        .delete_repository(&other, None)
        .await
        .unwrap()
        .unwrap();
    store.delete_owner(beta.id, None).await.unwrap();
    store
        .delete_user(carol.id, Some(carols.id), None)
        .await
        .unwrap();
    assert_eq!(
        store.released_blobs(before).await.unwrap(),
        set(&["aaaa", "cccc", "dddd", "eeee"])
    );
    assert_eq!(
        store.released_blobs(later).await.unwrap(),
        set(&["aaaa", "cccc", "dddd", "eeee"]),
        "the owner's release of aaaa replaced the package's"
    );
    assert!(store.blob_released_since("eeee", later).await.unwrap());

    // Forgotten once older than asked.
    store.forget_releases(before).await.unwrap();
    assert_eq!(store.released_blobs(0).await.unwrap().len(), 4);
    store
        .forget_releases(common::unix_now_ms() + 1)
        .await
        .unwrap();
    assert!(store.released_blobs(0).await.unwrap().is_empty());
    assert!(!store.blob_released_since("aaaa", 0).await.unwrap());
}

async fn repositories_and_generations(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let beta = store.create_owner("beta", false, true, None).await.unwrap();
    let refs = [
        repo(acme.id, "v3.21", "main"),
        repo(acme.id, "v3.21", "community"),
        repo(acme.id, "edge", "main"),
        repo(beta.id, "v3.21", "main"),
    ];
    let mut ids = Vec::new();
    for r in &refs {
        let InsertedPackage {
            package,
            generation: _,
            ..
        } = store
            .insert_package(r, new_package("hello", "1.0-r0", "x86_64"), true, None)
            .await
            .unwrap();
        ids.push(package.repository_id);
    }

    let repository = store.repository(&refs[0]).await.unwrap().unwrap();
    assert_eq!(repository.id, ids[0]);
    assert_eq!(repository.owner_id, acme.id);
    assert_eq!(repository.owner_name, "acme");
    assert_eq!(
        (repository.branch.as_str(), repository.name.as_str()),
        ("v3.21", "main")
    );
    assert_eq!((repository.wanted_gen, repository.built_gen), (1, 0));
    let by_id = store.repository_by_id(ids[3]).await.unwrap().unwrap();
    assert_eq!(
        (
            by_id.owner_name.as_str(),
            by_id.branch.as_str(),
            by_id.name.as_str()
        ),
        ("beta", "v3.21", "main")
    );
    assert!(store
        .repository_by_id(ids[3] + 1000)
        .await
        .unwrap()
        .is_none());

    // Filters, in creation order.
    let list = |owner: Option<i64>, branch: Option<&'static str>, name: Option<&'static str>| async move {
        store
            .list_repositories(owner, branch, name)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(list(None, None, None).await, ids);
    assert_eq!(list(Some(acme.id), None, None).await, ids[..3].to_vec());
    assert_eq!(
        list(Some(acme.id), Some("v3.21"), None).await,
        ids[..2].to_vec()
    );
    assert_eq!(
        list(Some(acme.id), Some("v3.21"), Some("community")).await,
        [ids[1]]
    );
    assert_eq!(
        list(None, None, Some("main")).await,
        [ids[0], ids[2], ids[3]]
    );
    assert_eq!(list(None, Some("edge"), None).await, [ids[2]]);
    assert!(list(Some(beta.id), Some("edge"), None).await.is_empty());

    // Everything is stale until built.
    let stale_ids = store
        .stale_repositories()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect::<Vec<_>>();
    assert_eq!(stale_ids, ids);
    for id in &ids {
        store
            .publish_indexes(*id, 1, vec![], vec![], 0)
            .await
            .unwrap();
    }
    assert!(store.stale_repositories().await.unwrap().is_empty());

    // A bump forces a rebuild.
    assert_eq!(store.bump_generation(ids[1]).await.unwrap(), 2);
    assert_eq!(store.bump_generation(ids[1]).await.unwrap(), 3);
    let stale = store.stale_repositories().await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(
        (
            stale[0].id,
            stale[0].wanted_gen,
            stale[0].built_gen,
            stale[0].owner_name.as_str()
        ),
        (ids[1], 3, 1, "acme")
    );
    assert_eq!(
        not_found(store.bump_generation(ids[3] + 1000).await.unwrap_err()),
        "no such repository"
    );
    // Publishing an older generation than the last leaves built_gen alone.
    store
        .publish_indexes(ids[1], 3, vec![], vec![], 0)
        .await
        .unwrap();
    store
        .publish_indexes(ids[1], 2, vec![], vec![], 0)
        .await
        .unwrap();
    let repository = store.repository_by_id(ids[1]).await.unwrap().unwrap();
    assert_eq!((repository.wanted_gen, repository.built_gen), (3, 3));
    assert!(store.stale_repositories().await.unwrap().is_empty());

    // The snapshot: the wanted generation, every package row, the served architectures.
    store
        .insert_package(
            &refs[0],
            new_package("tool", "2.0-r0", "noarch"),
            true,
            None,
        )
        .await
        .unwrap();
    store
        .publish_indexes(
            ids[0],
            1,
            vec![rendered("x86_64", b"one"), rendered("armhf", b"two")],
            vec![],
            5_000,
        )
        .await
        .unwrap();
    let snapshot = store.index_snapshot(ids[0]).await.unwrap();
    assert_eq!(snapshot.generation, 2);
    assert_eq!(snapshot.served_arches, ["armhf", "x86_64"]);
    let mut entries: Vec<_> = snapshot
        .packages
        .iter()
        .map(|e| {
            (
                e.arch.as_str(),
                e.name.as_str(),
                e.version.as_str(),
                e.checksum.as_str(),
                e.stanza.as_str(),
            )
        })
        .collect();
    entries.sort();
    let hello = new_package("hello", "1.0-r0", "x86_64");
    let tool = new_package("tool", "2.0-r0", "noarch");
    assert_eq!(
        entries,
        [
            (
                "noarch",
                "tool",
                "2.0-r0",
                tool.checksum.as_str(),
                tool.stanza.as_str()
            ),
            (
                "x86_64",
                "hello",
                "1.0-r0",
                hello.checksum.as_str(),
                hello.stanza.as_str()
            ),
        ]
    );
    let unserved = store.index_snapshot(ids[2]).await.unwrap();
    assert_eq!(unserved.generation, 1);
    assert_eq!(unserved.packages.len(), 1);
    assert!(unserved.served_arches.is_empty());
}

/// What changed after a generation: the rows inserted after it that are still there, the
/// ids of the rows removed after it, up to the wanted generation read in the same snapshot.
async fn changes_since_a_generation(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v1", "main");
    let mut ids = Vec::new();
    for (name, arch) in [("a", "x86_64"), ("b", "noarch"), ("c", "aarch64")] {
        let inserted = store
            .insert_package(&main, new_package(name, "1.0-r0", arch), true, None)
            .await
            .unwrap();
        ids.push(inserted.package.id);
        assert_eq!(inserted.generation, ids.len() as i64);
    }
    let id = store.repository(&main).await.unwrap().unwrap().id;
    let names = |changes: &alpine_registry::store::IndexChanges| {
        let mut added: Vec<(i64, String, String)> = changes
            .added
            .iter()
            .map(|e| (e.id, e.name.clone(), e.arch.clone()))
            .collect();
        added.sort();
        let mut removed = changes.removed.clone();
        removed.sort();
        (changes.generation, added, removed)
    };

    let everything = store.index_changes(id, 0).await.unwrap();
    assert_eq!(
        names(&everything),
        (
            3,
            vec![
                (ids[0], "a".into(), "x86_64".into()),
                (ids[1], "b".into(), "noarch".into()),
                (ids[2], "c".into(), "aarch64".into()),
            ],
            vec![]
        )
    );
    let stanza = &everything.added.iter().find(|e| e.id == ids[0]).unwrap();
    let expected = new_package("a", "1.0-r0", "x86_64");
    assert_eq!(
        (
            stanza.version.as_str(),
            stanza.checksum.as_str(),
            stanza.stanza.as_str()
        ),
        (
            "1.0-r0",
            expected.checksum.as_str(),
            expected.stanza.as_str()
        )
    );
    assert_eq!(names(&store.index_changes(id, 2).await.unwrap()).1.len(), 1);
    let nothing = store.index_changes(id, 3).await.unwrap();
    assert_eq!(names(&nothing), (3, vec![], vec![]));

    // A removal after the generation is listed by id; a row inserted and removed within
    // the range is not listed as added.
    let (gone, generation) = store
        .delete_package(&main, "x86_64", "a-1.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((gone.id, generation), (ids[0], 4));
    let d = store
        .insert_package(&main, new_package("d", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    assert_eq!(d.generation, 5);
    let (_, generation) = store
        .delete_package(&main, "x86_64", "d-1.0-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(generation, 6);
    let e = store
        .insert_package(&main, new_package("e", "1.0-r0", "armhf"), true, None)
        .await
        .unwrap();
    let changes = store.index_changes(id, 3).await.unwrap();
    let (generation, added, mut removed) = names(&changes);
    removed.retain(|r| *r != d.package.id);
    assert_eq!(
        (generation, added, removed),
        (
            7,
            vec![(e.package.id, "e".into(), "armhf".into())],
            vec![ids[0]]
        )
    );
    assert!(changes.removed.contains(&d.package.id));
    assert_eq!(
        names(&store.index_changes(id, 4).await.unwrap()).2,
        vec![d.package.id]
    );

    // The served architectures and the generation they were built at come with the
    // changes.
    assert_eq!(
        store.index_changes(id, 7).await.unwrap().built_generation,
        0
    );
    store
        .publish_indexes(id, 7, vec![rendered("armhf", b"x")], vec![], 1_000)
        .await
        .unwrap();
    let published = store.index_changes(id, 7).await.unwrap();
    assert_eq!(published.served_arches, ["armhf"]);
    assert_eq!(published.built_generation, 7);
    // Another repository's changes are its own; a removed repository has none.
    let other = repo(acme.id, "v1", "community");
    store
        .insert_package(&other, new_package("z", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    assert_eq!(
        names(&store.index_changes(id, 7).await.unwrap()),
        (7, vec![], vec![])
    );
    not_found(store.index_changes(i64::MAX, 0).await.unwrap_err());
}

async fn publishing_indexes(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v1", "main");
    let InsertedPackage {
        package,
        generation: _,
        ..
    } = store
        .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), true, None)
        .await
        .unwrap();
    let id = package.repository_id;
    assert!(store.index(id, "x86_64").await.unwrap().is_none());

    store
        .publish_indexes(
            id,
            1,
            vec![rendered("x86_64", b"first"), rendered("aarch64", b"other")],
            vec![],
            1_700_000_000_123,
        )
        .await
        .unwrap();
    let index = store.index(id, "x86_64").await.unwrap().unwrap();
    assert_eq!(index.generation, 1);
    assert_eq!(&index.content[..], b"first");
    assert_eq!(index.sha256, "sha-of-first");
    assert_eq!(index.built_at, 1_700_000_000);
    assert_eq!(index.modified_ms, 1_700_000_000_123);
    // What the pages read of it, without its bytes: by architecture, with the entries
    // and signatures its build recorded.
    let summaries = store.index_summaries(id).await.unwrap();
    let described: Vec<_> = summaries
        .iter()
        .map(|s| (s.arch.as_str(), s.generation, s.size, s.entries))
        .collect();
    assert_eq!(
        described,
        [("aarch64", 1, 5, Some(5)), ("x86_64", 1, 5, Some(5))]
    );
    assert_eq!(summaries[1].sha256, "sha-of-first");
    assert_eq!(summaries[1].built_at, 1_700_000_000);
    assert_eq!(
        summaries[1].signatures.as_deref(),
        Some(&rendered("x86_64", b"")).map(|r| &r.signatures[..])
    );
    assert_eq!(
        store.repository_by_id(id).await.unwrap().unwrap().built_gen,
        1
    );

    // The same bytes at a later generation keep their dates; new bytes are dated now.
    store
        .publish_indexes(
            id,
            2,
            vec![
                rendered("x86_64", b"first"),
                rendered("aarch64", b"changed"),
            ],
            vec![],
            1_700_000_100_456,
        )
        .await
        .unwrap();
    let index = store.index(id, "x86_64").await.unwrap().unwrap();
    assert_eq!(
        (index.generation, index.built_at, index.modified_ms),
        (2, 1_700_000_000, 1_700_000_000_123)
    );
    let index = store.index(id, "aarch64").await.unwrap().unwrap();
    assert_eq!(&index.content[..], b"changed");
    assert_eq!(
        (index.generation, index.built_at, index.modified_ms),
        (2, 1_700_000_100, 1_700_000_100_456)
    );

    // A builder that rendered an older generation leaves newer rows alone, and removes
    // nothing newer than what it rendered.
    store
        .publish_indexes(
            id,
            1,
            vec![rendered("x86_64", b"stale")],
            vec!["aarch64".into()],
            1_700_000_200_000,
        )
        .await
        .unwrap();
    let index = store.index(id, "x86_64").await.unwrap().unwrap();
    assert_eq!((&index.content[..], index.generation), (&b"first"[..], 2));
    assert!(store.index(id, "aarch64").await.unwrap().is_some());
    assert_eq!(
        store.repository_by_id(id).await.unwrap().unwrap().built_gen,
        2
    );

    // Removing an architecture, adding another, in one publication.
    store
        .publish_indexes(
            id,
            3,
            vec![rendered("armhf", b"new arch")],
            vec!["aarch64".into(), "s390x".into()],
            1_700_000_300_999,
        )
        .await
        .unwrap();
    assert!(store.index(id, "aarch64").await.unwrap().is_none());
    let index = store.index(id, "armhf").await.unwrap().unwrap();
    assert_eq!(
        (index.generation, index.built_at, index.modified_ms),
        (3, 1_700_000_300, 1_700_000_300_999)
    );
    assert_eq!(
        store.index_snapshot(id).await.unwrap().served_arches,
        ["armhf", "x86_64"]
    );
    assert_eq!(
        store.repository_by_id(id).await.unwrap().unwrap().built_gen,
        3
    );
    // Empty content is an index too (an architecture whose last package went).
    store
        .publish_indexes(
            id,
            4,
            vec![rendered("armhf", b"")],
            vec![],
            1_700_000_400_000,
        )
        .await
        .unwrap();
    let index = store.index(id, "armhf").await.unwrap().unwrap();
    assert!(index.content.is_empty());
    assert!(store.index(id + 1000, "armhf").await.unwrap().is_none());
}

/// Opens connections for the racers below, so that they start together instead of one
/// finishing while the others still connect.
async fn warm_up(store: &dyn Store) {
    join_all((0..4).map(|_| async {
        store.ping().await.unwrap();
        store.count_users().await.unwrap();
    }))
    .await;
}

async fn concurrent_writers(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "edge", "main");

    // Many uploads into a new repository: one repository, every generation used once.
    let uploads = join_all((0..16).map(|i| {
        let main = main.clone();
        async move {
            store
                .insert_package(
                    &main,
                    new_package(&format!("p{i}"), "1-r0", "x86_64"),
                    true,
                    None,
                )
                .await
        }
    }))
    .await;
    let mut generations: Vec<i64> = uploads.into_iter().map(|r| r.unwrap().generation).collect();
    generations.sort();
    assert_eq!(generations, (1..=16).collect::<Vec<_>>());
    assert_eq!(
        store
            .list_repositories(None, None, None)
            .await
            .unwrap()
            .len(),
        1
    );

    // The same name and version as noarch and per architecture at once: exactly one wins.
    for round in 0..8 {
        warm_up(store).await;
        let version = format!("{round}-r0");
        let attempts = join_all(["noarch", "x86_64", "noarch", "aarch64"].map(|arch| {
            let main = main.clone();
            let version = version.clone();
            async move {
                store
                    .insert_package(&main, new_package("race", &version, arch), true, None)
                    .await
                    .map(|inserted| inserted.package.arch)
            }
        }))
        .await;
        let won: Vec<String> = attempts
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .cloned()
            .collect();
        for result in attempts {
            if let Err(err) = result {
                conflict(err);
            }
        }
        let noarch = won.iter().filter(|a| *a == "noarch").count();
        assert!(
            (noarch == 1 && won.len() == 1) || (noarch == 0 && !won.is_empty()),
            "round {round}: {won:?}"
        );
    }

    // Racing deletes of one file: one deletes it.
    for file in 0..8 {
        warm_up(store).await;
        let filename = format!("p{file}-1-r0.apk");
        let deletes =
            join_all((0..4).map(|_| store.delete_package(&main, "x86_64", &filename, None))).await;
        let deleted = deletes
            .into_iter()
            .map(|r| r.unwrap())
            .filter(Option::is_some)
            .count();
        assert_eq!(deleted, 1, "{filename}");
    }

    // Racing creations of one name in different cases: one wins, the others conflict.
    let creations = join_all(
        ["globex", "Globex", "GLOBEX", "gLoBeX"]
            .map(|name| store.create_owner(name, false, true, None)),
    )
    .await;
    let created = creations.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1);
    for result in creations {
        if let Err(err) = result {
            assert!(conflict(err).contains("already exists"));
        }
    }
    let users =
        join_all(["wile", "Wile", "WILE"].map(|name| store.create_user(name, None, false, None)))
            .await;
    assert_eq!(users.iter().filter(|r| r.is_ok()).count(), 1);
    for result in users {
        if let Err(err) = result {
            conflict(err);
        }
    }
    // No half-created user: every user has its namespace.
    for user in store.list_users().await.unwrap() {
        assert!(store.owner_by_name(&user.name).await.unwrap().is_some());
    }

    // Concurrent publications of one repository: the newest generation stays.
    let repository = store.repository(&main).await.unwrap().unwrap();
    let publications = join_all((1..=8).rev().map(|generation| {
        store.publish_indexes(
            repository.id,
            generation,
            vec![rendered("x86_64", format!("gen {generation}").as_bytes())],
            vec![],
            generation * 1000,
        )
    }))
    .await;
    for result in publications {
        result.unwrap();
    }
    let index = store.index(repository.id, "x86_64").await.unwrap().unwrap();
    assert_eq!((index.generation, &index.content[..]), (8, &b"gen 8"[..]));
    assert_eq!(
        store
            .repository_by_id(repository.id)
            .await
            .unwrap()
            .unwrap()
            .built_gen,
        8
    );
}

#[test]
fn test_database_urls_name_the_new_database() {
    assert_eq!(
        pg::with_database("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
        "postgres://u:p@127.0.0.1:5432/t1"
    );
    assert_eq!(
        pg::with_database("postgresql://u@db?sslmode=disable", "t1"),
        "postgresql://u@db/t1?sslmode=disable"
    );
}

async fn repositories_created_listed_and_removed(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let main = repo(acme.id, "v3.21", "main");
    let edge = repo(acme.id, "edge", "main");

    // Without permission to create, a missing repository stays missing.
    not_found(
        store
            .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), false, None)
            .await
            .unwrap_err(),
    );
    assert!(store.repository(&main).await.unwrap().is_none());

    let created = store.create_repository(&main, None).await.unwrap();
    assert_eq!((created.wanted_gen, created.built_gen), (0, 0));
    assert!(store.is_empty_repository(created.id).await.unwrap());
    conflict(store.create_repository(&main, None).await.unwrap_err());
    let first = store
        .insert_package(&main, new_package("hello", "1.0-r0", "x86_64"), false, None)
        .await
        .unwrap();
    assert!(!first.repository_created);
    assert!(!store.is_empty_repository(created.id).await.unwrap());
    assert_eq!(first.package.repository_id, created.id);
    let tool = store
        .insert_package(&edge, new_package("tool", "2.0-r0", "noarch"), true, None)
        .await
        .unwrap();
    assert!(tool.repository_created);
    store
        .publish_indexes(
            created.id,
            first.generation,
            vec![rendered("x86_64", b"index")],
            vec![],
            now() * 1000,
        )
        .await
        .unwrap();

    let summaries = store.repository_summaries(Some(acme.id)).await.unwrap();
    let listed: Vec<(&str, &str, Vec<String>, i64)> = summaries
        .iter()
        .map(|r| {
            (
                r.branch.as_str(),
                r.repository.as_str(),
                r.arches.clone(),
                r.packages,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("edge", "main", vec!["noarch".to_string()], 1),
            ("v3.21", "main", vec!["x86_64".to_string()], 1),
        ]
    );
    assert!(summaries.iter().all(|r| r.owner == "acme"));
    assert!(summaries.iter().all(|r| r.last_publish_ms.is_some()));
    assert_eq!(store.repository_summaries(None).await.unwrap().len(), 2);

    // Removal takes the packages and every index in one step.
    let removed = store.delete_repository(&main, None).await.unwrap().unwrap();
    assert_eq!(
        (removed.packages, removed.arches),
        (1, vec!["x86_64".to_string()])
    );
    assert!(store.repository(&main).await.unwrap().is_none());
    assert!(store.index(created.id, "x86_64").await.unwrap().is_none());
    assert!(store.list_packages(created.id).await.unwrap().is_empty());
    assert!(store
        .delete_repository(&main, None)
        .await
        .unwrap()
        .is_none());
    // A build of the removed repository cannot publish, nor read it.
    not_found(
        store
            .publish_indexes(
                created.id,
                first.generation,
                vec![rendered("x86_64", b"late")],
                vec![],
                now() * 1000,
            )
            .await
            .unwrap_err(),
    );
    not_found(store.index_snapshot(created.id).await.unwrap_err());
    assert!(store.index(created.id, "x86_64").await.unwrap().is_none());
    // Created again, it is another repository.
    let again = store.create_repository(&main, None).await.unwrap();
    assert!(again.id > created.id, "{} reused {}", again.id, created.id);
}

/// Rows as another database holds them: ids with gaps, a removed newest repository (id
/// 12), NULL where columns allow it.
fn dump() -> Dump {
    let user = |id: i64, name: &str, hash: Option<&str>, is_admin: bool| UserRow {
        id,
        name: name.into(),
        password_hash: hash.map(str::to_string),
        is_admin,
        created_at: 1_700_000_000 + id,
    };
    let owner = |id: i64, name: &str, is_private: bool, is_org: bool| OwnerRow {
        id,
        name: name.into(),
        is_private,
        is_org,
        created_at: 1_700_000_100 + id,
    };
    let package = |id: i64, repository_id: i64, name: &str, modified_ms: Option<i64>, pinned| {
        let new = new_package(name, "1.0-r0", "x86_64");
        PackageRow {
            id,
            repository_id,
            arch: new.arch,
            name: new.name,
            version: new.version,
            filename: new.filename,
            checksum: new.checksum,
            sha256: new.sha256,
            size: new.size,
            stanza: new.stanza,
            created_at: 1_700_000_200,
            modified_ms,
            pinned,
        }
    };
    Dump {
        users: vec![
            user(2, "admin", None, true),
            user(7, "bob", Some("$argon2id$hash"), false),
        ],
        owners: vec![
            owner(2, "admin", false, false),
            owner(7, "bob", false, false),
            owner(9, "vault", true, true),
        ],
        members: vec![
            MemberRow {
                owner_id: 2,
                user_id: 2,
                role: "admin".into(),
            },
            MemberRow {
                owner_id: 9,
                user_id: 7,
                role: "write".into(),
            },
        ],
        tokens: vec![
            TokenRow {
                id: 4,
                user_id: 2,
                token_hash: "hash-4".into(),
                prefix: "apkreg_aaa".into(),
                scope: "admin".into(),
                owner_id: None,
                expires_at: None,
                revoked_at: None,
                created_at: 1_700_000_300,
                label: Some("bootstrap".into()),
                last_used_at: Some(1_700_000_360),
            },
            TokenRow {
                id: 11,
                user_id: 7,
                token_hash: "hash-11".into(),
                prefix: "apkreg_bbb".into(),
                scope: "write".into(),
                owner_id: Some(9),
                expires_at: Some(1_800_000_000),
                revoked_at: Some(1_700_000_400),
                created_at: 1_700_000_310,
                label: None,
                last_used_at: None,
            },
        ],
        signing_keys: vec![
            SigningKeyRow {
                id: 4,
                owner_id: 9,
                key_name: "vault-1234.rsa.pub".into(),
                private_pem: "aes256gcm:v1:sealed".into(),
                public_pem: "public".into(),
                created_at: 1_700_000_500,
                retired_at: Some(1_700_000_900),
            },
            SigningKeyRow {
                id: 7,
                owner_id: 9,
                key_name: "vault-5678.rsa.pub".into(),
                private_pem: "aes256gcm:v1:sealed2".into(),
                public_pem: "public2".into(),
                created_at: 1_700_000_800,
                retired_at: None,
            },
        ],
        repositories: vec![
            RepositoryRow {
                id: 3,
                owner_id: 9,
                branch: "edge".into(),
                name: "main".into(),
                wanted_gen: 5,
                built_gen: 5,
                dependency_check: Some("refuse".into()),
            },
            RepositoryRow {
                id: 8,
                owner_id: 7,
                branch: "v3.21".into(),
                name: "main".into(),
                wanted_gen: 2,
                built_gen: 1,
                dependency_check: None,
            },
            RepositoryRow {
                id: 12,
                owner_id: 9,
                branch: "edge".into(),
                name: "all".into(),
                wanted_gen: 0,
                built_gen: 0,
                dependency_check: None,
            },
        ],
        packages: vec![
            package(20, 3, "hello", Some(1_700_000_200_123), true),
            package(31, 8, "old", None, false),
        ],
        indexes: vec![IndexRow {
            repository_id: 3,
            arch: "x86_64".into(),
            generation: 5,
            content: vec![0x1f, 0x8b, 0, 255],
            sha256: "ab".repeat(32),
            built_at: 1_700_000_600,
            modified_ms: None,
            entries: Some(4),
            signatures: Some(".SIGN.RSA256.acme-01234567.rsa.pub".into()),
            adb: Some(b"ADBd".to_vec()),
            adb_sha256: Some("cd".repeat(32)),
        }],
        retention_rules: vec![
            RetentionRuleRow {
                owner_id: 9,
                branch: String::new(),
                repository: String::new(),
                keep_versions: Some(3),
                max_age_secs: None,
                keep_min: 0,
                include_globs: String::new(),
                exclude_globs: String::new(),
                updated_at: 1_700_000_700,
            },
            RetentionRuleRow {
                owner_id: 9,
                branch: "edge".into(),
                repository: "main".into(),
                keep_versions: None,
                max_age_secs: Some(86_400 * 90),
                keep_min: 2,
                include_globs: "lib*\nhello".into(),
                exclude_globs: "*-dev".into(),
                updated_at: 1_700_000_800,
            },
        ],
        webhooks: vec![alpine_registry::store::WebhookRow {
            id: 4,
            owner_id: 9,
            url: "https://hooks.example.org/alpine".into(),
            secret_sealed: "aes256gcm:v1:sealed".into(),
            events: "package.published,index.published".into(),
            created_ms: 1_700_000_900,
            created_by: "cli:root".into(),
        }],
        owner_keyrings: vec![alpine_registry::store::OwnerKeyringRow {
            owner_id: 9,
            enabled: false,
        }],
        upstreams: vec![alpine_registry::store::UpstreamRow {
            repository_id: 8,
            url: "https://dl-cdn.alpinelinux.org/alpine/v3.21/main".into(),
            keys: r#"[{"name":"alpine.rsa.pub","pem":"public"}]"#.into(),
            refresh_secs: 600,
        }],
        upstream_indexes: vec![alpine_registry::store::UpstreamIndex {
            repository_id: 8,
            arch: "x86_64".into(),
            content: vec![0x1f, 0x8b, 1],
            sha256: "ef".repeat(32),
            etag: Some("\"abc\"".into()),
            last_modified: None,
            verified_ms: 1_700_000_950_000,
            checked_ms: 1_700_000_960_000,
            error: Some("upstream answered 503".into()),
            signed: vec![0x1f, 0x8b, 2],
            signed_sha256: "01".repeat(32),
            signed_keys: "bob-1.rsa.pub".into(),
            signed_ms: 1_700_000_950_001,
        }],
        upstream_files: vec![alpine_registry::store::UpstreamFile {
            repository_id: 8,
            arch: "x86_64".into(),
            filename: "curl-8.11.0-r0.apk".into(),
            sha256: "23".repeat(32),
            size: 4096,
            checksum: "Q1abc=".into(),
            stored_ms: 1_700_000_970_000,
        }],
        virtuals: vec![alpine_registry::store::VirtualRow { repository_id: 12 }],
        virtual_members: vec![
            alpine_registry::store::VirtualMemberRow {
                repository_id: 12,
                position: 0,
                member_id: 3,
            },
            alpine_registry::store::VirtualMemberRow {
                repository_id: 12,
                position: 1,
                member_id: 8,
            },
        ],
        virtual_indexes: vec![alpine_registry::store::VirtualIndexRow {
            repository_id: 12,
            arch: "x86_64".into(),
            fingerprint: "3:ab,8:ef|vault-5678.rsa.pub".into(),
            content: vec![0x1f, 0x8b, 3],
            sha256: "45".repeat(32),
            adb: None,
            adb_sha256: None,
            adb_error: Some("no Q1 identity".into()),
            entries: 2,
            modified_ms: 1_700_000_980_000,
            built_ms: 1_700_000_980_001,
        }],
        served_history: vec![
            alpine_registry::store::ServedHistoryRow {
                id: 5,
                repository_id: 12,
                arch: "x86_64".into(),
                filename: "hello-1.0-r0.apk".into(),
                stanza: "C:Q1abc=\nP:hello\nV:1.0-r0\nS:1\n\n".into(),
                member_id: 3,
                sha256: Some("00".repeat(32)),
                first_ms: 1_700_000_980_000,
                last_ms: Some(1_700_000_990_000),
            },
            alpine_registry::store::ServedHistoryRow {
                id: 9,
                repository_id: 12,
                arch: "x86_64".into(),
                filename: "curl-8.11.0-r0.apk".into(),
                stanza: "C:Q1abc=\nP:curl\nV:8.11.0-r0\nS:4096\n\n".into(),
                member_id: 8,
                sha256: None,
                first_ms: 1_700_000_980_000,
                last_ms: None,
            },
        ],
        snapshots: vec![alpine_registry::store::SnapshotRow {
            repository_id: 12,
            name: "release-1".into(),
            at_ms: 1_700_000_985_000,
        }],
        last_repository_id: 12,
    }
}

async fn export_and_import(store: &dyn Store) {
    assert!(store.table_counts().await.unwrap().is_empty());
    let rows = dump();
    store.import(&rows).await.unwrap();
    assert_eq!(store.export().await.unwrap(), rows);
    assert_eq!(store.table_counts().await.unwrap(), rows.counts());
    // What the rows say holds through the other methods too.
    let bob = store.user_by_name("bob").await.unwrap().unwrap();
    assert_eq!(bob.password_hash.as_deref(), Some("$argon2id$hash"));
    let revoked = store.token_by_hash("hash-11").await.unwrap().unwrap();
    assert_eq!(
        (revoked.owner_name.as_deref(), revoked.revoked_at),
        (Some("vault"), Some(1_700_000_400))
    );
    let vault = repo(9, "edge", "main");
    let found = store
        .find_package(&vault, "x86_64", "hello-1.0-r0.apk")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.modified_ms, 1_700_000_200_123);
    let index = store.index(3, "x86_64").await.unwrap().unwrap();
    assert_eq!(index.content.as_ref(), [0x1f, 0x8b, 0, 255]);
    assert_eq!(index.modified_ms, 1_700_000_600_999);
    let summary = &store.index_summaries(3).await.unwrap()[0];
    assert_eq!((summary.size, summary.entries), (4, Some(4)));
    // The catalog rows of the copied packages are the database's own, derived on insert.
    let every = OwnerScope {
        every: true,
        ..OwnerScope::default()
    };
    assert_eq!(
        keys(store, &search(every)).await,
        ["hello vault", "old bob"]
    );

    // Into a database that holds rows: refused, nothing written.
    let message = conflict(store.import(&rows).await.unwrap_err());
    assert!(message.contains("not empty"), "{message}");
    assert_eq!(store.table_counts().await.unwrap(), rows.counts());

    // New rows take fresh ids, past every copied one and past removed repository 12.
    let carol = store.create_user("carol", None, false, None).await.unwrap();
    assert!(carol.id > 7, "{}", carol.id);
    assert!(store.owner_by_name("carol").await.unwrap().unwrap().id > 9);
    let token_id = store
        .insert_token(token(carol.id, "hash-new", Role::Read), None)
        .await
        .unwrap();
    assert!(token_id > 11, "{token_id}");
    let created = store
        .create_repository(&repo(9, "edge", "testing"), None)
        .await
        .unwrap();
    assert!(created.id > 12, "{} reuses a removed id", created.id);
    let inserted = store
        .insert_package(&vault, new_package("new", "1.0-r0", "x86_64"), false, None)
        .await
        .unwrap();
    assert!(inserted.package.id > 31, "{}", inserted.package.id);
    assert!(store.export().await.unwrap().last_repository_id >= created.id);
}

/// Limits that never refuse a login.
fn roomy() -> SessionLimits {
    SessionLimits {
        per_user: 1000,
        total: 100_000,
        login_interval_ms: 0,
        login_burst_ms: 0,
        now_ms: now() * 1000,
    }
}

fn session<'a>(id_hash: &'a str, user_id: i64, token_id: Option<i64>) -> NewSession<'a> {
    NewSession {
        id_hash,
        user_id,
        token_id,
        password_fingerprint: token_id.is_none().then_some("fingerprint"),
        created_at: now(),
        expires_at: now() + 3600,
    }
}

async fn created(store: &dyn Store, new: NewSession<'_>, limits: SessionLimits) -> u64 {
    match store.create_session(new, limits).await.unwrap() {
        SessionAdmission::Created { evicted } => evicted,
        other => panic!("expected a session, got {other:?}"),
    }
}

async fn live(store: &dyn Store, id_hash: &str) -> bool {
    store.session(id_hash, now()).await.unwrap().is_some()
}

async fn sessions_are_read_by_digest_with_their_user_and_token(store: &dyn Store) {
    let alice = store
        .create_user("alice", Some("$argon2id$a"), true, None)
        .await
        .unwrap();
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let token_end = now() + 60;
    let token_id = store
        .insert_token(
            NewToken {
                owner_id: Some(acme.id),
                expires_at: Some(token_end),
                ..token(alice.id, "token-hash", Role::Read)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        created(store, session("by-password", alice.id, None), roomy()).await,
        0
    );
    assert_eq!(
        created(
            store,
            session("by-token", alice.id, Some(token_id)),
            roomy()
        )
        .await,
        0
    );

    let read = store.session("by-password", now()).await.unwrap().unwrap();
    assert_eq!(read.user.id, alice.id);
    assert_eq!(read.user.name, "alice");
    assert!(read.user.is_admin);
    assert_eq!(read.user.password_hash.as_deref(), Some("$argon2id$a"));
    assert_eq!(read.password_fingerprint.as_deref(), Some("fingerprint"));
    assert!(read.token.is_none());
    assert!(read.expires_at > now());

    let read = store.session("by-token", now()).await.unwrap().unwrap();
    assert_eq!(read.password_fingerprint, None);
    let token = read.token.expect("the token of a token login");
    assert_eq!(token.id, token_id);
    assert_eq!(token.scope, Role::Read);
    assert_eq!(token.owner_id, Some(acme.id));
    assert_eq!(token.expires_at, Some(token_end));
    assert_eq!(token.revoked_at, None);

    // Only the exact digest, and only before the session's end.
    assert!(store.session("by-passwor", now()).await.unwrap().is_none());
    assert!(store.session("BY-PASSWORD", now()).await.unwrap().is_none());
    assert!(store
        .session("by-password", now() + 3600)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.count_sessions(None).await.unwrap(), 2);
    assert_eq!(store.count_sessions(Some(alice.id)).await.unwrap(), 2);
    assert_eq!(
        store.count_sessions(Some(alice.id + 1000)).await.unwrap(),
        0
    );

    assert!(store.delete_session("by-password").await.unwrap());
    assert!(!store.delete_session("by-password").await.unwrap());
    assert!(!live(store, "by-password").await);
    assert!(live(store, "by-token").await);
}

async fn sessions_end_with_their_password_token_or_user(store: &dyn Store) {
    let alice = store
        .create_user("alice", Some("$argon2id$a"), false, None)
        .await
        .unwrap();
    let bob = store
        .create_user("bob", Some("$argon2id$b"), false, None)
        .await
        .unwrap();
    let token_id = store
        .insert_token(token(alice.id, "alice-token", Role::Write), None)
        .await
        .unwrap();
    let other_token = store
        .insert_token(token(alice.id, "alice-other-token", Role::Write), None)
        .await
        .unwrap();
    for (id, user, token) in [
        ("alice-password", alice.id, None),
        ("alice-token", alice.id, Some(token_id)),
        ("alice-other-token", alice.id, Some(other_token)),
        ("bob-password", bob.id, None),
    ] {
        created(store, session(id, user, token), roomy()).await;
    }
    // A new password ends the password sessions of that user only.
    store
        .set_password(alice.id, Some("$argon2id$new"), None)
        .await
        .unwrap();
    assert!(!live(store, "alice-password").await);
    assert!(live(store, "alice-token").await);
    assert!(live(store, "bob-password").await);
    // Revoking a token ends the sessions made with it only.
    assert!(store.revoke_token(token_id, now(), None).await.unwrap());
    assert!(!live(store, "alice-token").await);
    assert!(live(store, "alice-other-token").await);
    // Deleting a user ends all of theirs.
    let namespace = store.owner_by_name("alice").await.unwrap().unwrap();
    store
        .delete_user(alice.id, Some(namespace.id), None)
        .await
        .unwrap();
    assert!(!live(store, "alice-other-token").await);
    assert!(live(store, "bob-password").await);
    assert_eq!(store.count_sessions(None).await.unwrap(), 1);
}

async fn each_user_keeps_their_newest_sessions_only(store: &dyn Store) {
    let admin = store.create_user("admin", None, true, None).await.unwrap();
    let flood = store.create_user("flood", None, false, None).await.unwrap();
    let limits = SessionLimits {
        per_user: 3,
        total: 5,
        ..roomy()
    };
    created(store, session("admin", admin.id, None), limits).await;
    let mut evicted = 0;
    for i in 0..40 {
        evicted += created(
            store,
            session(&format!("flood-{i}"), flood.id, None),
            limits,
        )
        .await;
    }
    assert_eq!(evicted, 37);
    assert_eq!(store.count_sessions(Some(flood.id)).await.unwrap(), 3);
    assert!(live(store, "admin").await, "another user's session stays");
    for i in 0..37 {
        assert!(!live(store, &format!("flood-{i}")).await, "flood-{i}");
    }
    for i in 37..40 {
        assert!(live(store, &format!("flood-{i}")).await, "flood-{i}");
    }
    // Expired sessions of the user go first, whatever the cap.
    let old = NewSession {
        created_at: now() - 7200,
        expires_at: now() - 3600,
        ..session("expired", admin.id, None)
    };
    created(store, old, limits).await;
    assert_eq!(
        created(store, session("admin-2", admin.id, None), limits).await,
        1
    );
    assert!(live(store, "admin").await);
    assert!(live(store, "admin-2").await);
}

async fn a_full_session_table_refuses_logins_and_evicts_nobody(store: &dyn Store) {
    let a = store.create_user("a", None, false, None).await.unwrap();
    let b = store.create_user("b", None, false, None).await.unwrap();
    let c = store.create_user("c", None, false, None).await.unwrap();
    let limits = SessionLimits {
        per_user: 1,
        total: 2,
        ..roomy()
    };
    let first = NewSession {
        expires_at: now() + 600,
        ..session("a", a.id, None)
    };
    created(store, first, limits).await;
    created(store, session("b", b.id, None), limits).await;
    assert_eq!(
        store
            .create_session(session("c", c.id, None), limits)
            .await
            .unwrap(),
        SessionAdmission::Full {
            next_expiry: now() + 600
        }
    );
    assert!(live(store, "a").await && live(store, "b").await);
    assert!(!live(store, "c").await);
    // A user at their own cap replaces their own session: the total stays.
    assert_eq!(created(store, session("b-2", b.id, None), limits).await, 1);
    assert!(live(store, "a").await && live(store, "b-2").await);
    // Expired sessions do not count.
    let later = SessionLimits {
        now_ms: (now() + 700) * 1000,
        ..limits
    };
    let c_later = NewSession {
        created_at: now() + 700,
        expires_at: now() + 4300,
        ..session("c", c.id, None)
    };
    created(store, c_later, later).await;
}

async fn successful_logins_are_rate_limited_per_user(store: &dyn Store) {
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let bob = store.create_user("bob", None, false, None).await.unwrap();
    let start = now() * 1000;
    // Three at once, then one per second.
    let at = |ms: i64| SessionLimits {
        login_interval_ms: 1000,
        login_burst_ms: 2000,
        now_ms: start + ms,
        ..roomy()
    };
    for i in 0..3 {
        created(store, session(&format!("alice-{i}"), alice.id, None), at(0)).await;
    }
    let refused = store
        .create_session(session("alice-3", alice.id, None), at(100))
        .await
        .unwrap();
    assert_eq!(
        refused,
        SessionAdmission::TooSoon {
            retry_after_ms: 900
        }
    );
    assert!(!live(store, "alice-3").await);
    assert_eq!(store.count_sessions(Some(alice.id)).await.unwrap(), 3);
    // Another user is not affected.
    created(store, session("bob", bob.id, None), at(100)).await;
    // A refusal takes nothing: the allowance comes back on time.
    created(store, session("alice-3", alice.id, None), at(1000)).await;
    assert!(matches!(
        store
            .create_session(session("alice-4", alice.id, None), at(1500))
            .await
            .unwrap(),
        SessionAdmission::TooSoon {
            retry_after_ms: 500
        }
    ));
    // A quiet while gives the whole burst back.
    for i in 5..8 {
        created(
            store,
            session(&format!("alice-{i}"), alice.id, None),
            at(60_000),
        )
        .await;
    }
}

async fn concurrent_logins_of_one_user_keep_the_cap(store: &dyn Store) {
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let limits = SessionLimits {
        per_user: 3,
        ..roomy()
    };
    let ids: Vec<String> = (0..24).map(|i| format!("alice-{i}")).collect();
    let results = join_all(
        ids.iter()
            .map(|id| store.create_session(session(id, alice.id, None), limits)),
    )
    .await;
    for result in results {
        assert!(matches!(result.unwrap(), SessionAdmission::Created { .. }));
    }
    assert_eq!(store.count_sessions(Some(alice.id)).await.unwrap(), 3);
}

async fn expired_sessions_are_pruned(store: &dyn Store) {
    let alice = store.create_user("alice", None, false, None).await.unwrap();
    let bob = store.create_user("bob", None, false, None).await.unwrap();
    let old = NewSession {
        created_at: now() - 100,
        expires_at: now() - 10,
        ..session("old", alice.id, None)
    };
    created(store, old, roomy()).await;
    // (A login of alice's would take her expired session with it.)
    created(store, session("new", bob.id, None), roomy()).await;
    assert_eq!(store.count_sessions(None).await.unwrap(), 2);
    assert_eq!(store.prune_sessions(now()).await.unwrap(), 1);
    assert_eq!(store.count_sessions(None).await.unwrap(), 1);
    assert!(live(store, "new").await);
    assert_eq!(store.prune_sessions(now()).await.unwrap(), 0);
}

async fn authentication_failures_count_per_key_within_the_window(store: &dyn Store) {
    let (user, address, other) = (
        b"user-key".as_slice(),
        b"addr-key".as_slice(),
        b"other".as_slice(),
    );
    let counts = |rows: Vec<alpine_registry::store::FailureCount>| {
        let mut rows: Vec<(Vec<u8>, i64, i64)> = rows
            .into_iter()
            .map(|r| (r.key, r.failures, r.last_ms))
            .collect();
        rows.sort();
        rows
    };
    assert!(store
        .auth_failures([user, address])
        .await
        .unwrap()
        .is_empty());
    let window = 60_000;
    let t = 1_700_000_000_000;
    store
        .record_auth_failure([user, address], t, window)
        .await
        .unwrap();
    store
        .record_auth_failure([user, address], t + 10, window)
        .await
        .unwrap();
    store
        .record_auth_failure([other, address], t + 20, window)
        .await
        .unwrap();
    assert_eq!(
        counts(store.auth_failures([user, address]).await.unwrap()),
        vec![(address.to_vec(), 3, t + 20), (user.to_vec(), 2, t + 10)]
    );
    // A failure reported late (another instance's clock) does not move the last one back.
    store
        .record_auth_failure([user, other], t + 5, window)
        .await
        .unwrap();
    assert_eq!(
        counts(store.auth_failures([user, other]).await.unwrap()),
        vec![(other.to_vec(), 2, t + 20), (user.to_vec(), 3, t + 10)]
    );
    // After a quiet window the count starts again.
    store
        .record_auth_failure([user, address], t + 20 + window + 1, window)
        .await
        .unwrap();
    assert_eq!(
        counts(store.auth_failures([user, address]).await.unwrap()),
        vec![
            (address.to_vec(), 1, t + 21 + window),
            (user.to_vec(), 1, t + 21 + window)
        ]
    );
    store.clear_auth_failures(user).await.unwrap();
    assert_eq!(
        counts(store.auth_failures([user, address]).await.unwrap()),
        vec![(address.to_vec(), 1, t + 21 + window)]
    );
    assert_eq!(store.prune_auth_failures(t + 21).await.unwrap(), 1);
    assert!(store
        .auth_failures([other, other])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.auth_failures([address, other]).await.unwrap().len(),
        1
    );
}

/// Rows the database held before the catalog tables existed (as an older version wrote
/// them), inserted on a database migrated up to just before them.
const ROWS_BEFORE_THE_CATALOG: &str = "
INSERT INTO owners (id, name, is_private, is_org, created_at) VALUES (41, 'acme', FALSE, TRUE, 0);
INSERT INTO repositories (id, owner_id, branch, name, wanted_gen, built_gen)
    VALUES (42, 41, 'v3.21', 'main', 3, 3);
INSERT INTO packages (id, repository_id, arch, name, version, filename, checksum, sha256,
                      size, stanza, created_at, modified_ms)
VALUES (43, 42, 'x86_64', 'libfoo', '1.0-r0', 'libfoo-1.0-r0.apk', 'Q1a=', 'aa', 1,
'C:Q1a=
P:libfoo
V:1.0-r0
A:x86_64
T:The foo library: \"quoted\"
m:Jane DOE <jane@example.org>
D:so:libc.musl-x86_64.so.1 !old
p:so:libfoo.so.1=1.0 cmd:foo=1.0

', 0, 1),
(44, 42, 'noarch', 'foo-tool', '2-r0', 'foo-tool-2-r0.apk', 'Q1b=', 'bb', 1,
'C:Q1b=
P:foo-tool
V:2-r0
A:noarch
T:A tool
D:cmd:foo

', 0, 2);
";

/// The migrations of `backend` before the catalog's (0040), in a directory of their own,
/// byte for byte: a database migrated with them is one an older version left.
fn migrations_before_the_catalog(backend: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let version: u32 = name[..4].parse().unwrap();
        if version < 40 {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// What the catalog finds of `ROWS_BEFORE_THE_CATALOG` once the store migrated them.
async fn catalog_of_rows_before_it(store: &dyn Store) {
    let every = OwnerScope {
        every: true,
        ..OwnerScope::default()
    };
    let by_provides = PackageSearch {
        term: Some(SearchTerm::Substring("cmd:foo".into())),
        ..search(every)
    };
    let (page, collected) = run_search(store, &by_provides).await;
    assert_eq!(page.keys, [("libfoo".to_string(), "acme".to_string())]);
    assert_eq!(
        collected.descriptions,
        [(43, "The foo library: \"quoted\"".to_string())]
    );
    let by_maintainer = PackageSearch {
        maintainer: Some("jane doe".into()),
        ..search(every)
    };
    assert_eq!(keys(store, &by_maintainer).await, ["libfoo acme"]);
    assert_eq!(
        store.providers(41, &["cmd:foo".into()]).await.unwrap(),
        [("cmd:foo".to_string(), "libfoo".to_string())]
    );
    assert_eq!(
        store.required_by(41, "libfoo", 10).await.unwrap(),
        (vec!["foo-tool".to_string()], 1)
    );
    // Every index is rendered again at the next start, recording its entries.
    let stale = store.stale_repositories().await.unwrap();
    assert_eq!(stale.iter().map(|r| r.id).collect::<Vec<_>>(), [42]);
}

#[tokio::test]
async fn sqlite_migration_fills_the_catalog_of_existing_rows() {
    use sqlx::ConnectOptions as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let mut connection = options.connect().await.unwrap();
    let older = migrations_before_the_catalog("sqlite");
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    sqlx::raw_sql(ROWS_BEFORE_THE_CATALOG)
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);
    let store = SqliteStore::connect(&url, 2, alpine_registry::clock::system())
        .await
        .expect("migrated");
    catalog_of_rows_before_it(&store).await;
}

#[tokio::test]
async fn postgres_migration_fills_the_catalog_of_existing_rows() {
    use sqlx::ConnectOptions as _;
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    let options: sqlx::postgres::PgConnectOptions = database.url.parse().unwrap();
    let mut connection = options.connect().await.unwrap();
    let older = migrations_before_the_catalog("postgres");
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    sqlx::raw_sql(ROWS_BEFORE_THE_CATALOG)
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);
    let store = PostgresStore::connect(&database.url, 2, alpine_registry::clock::system())
        .await
        .expect("migrated");
    catalog_of_rows_before_it(&store).await;
    drop(store);
    database.drop_database().await;
}

async fn a_package_rows_stanza_is_read_by_id(store: &dyn Store) {
    let acme = store.create_owner("acme", false, true, None).await.unwrap();
    let at = repo(acme.id, "edge", "main");
    let mut ids = Vec::new();
    for name in ["alpha", "beta"] {
        let inserted = store
            .insert_package(&at, new_package(name, "1-r0", "x86_64"), true, None)
            .await
            .unwrap();
        ids.push(inserted.package.id);
    }
    assert_eq!(
        store.package_stanza(ids[1]).await.unwrap().as_deref(),
        Some("P:beta\nV:1-r0\nA:x86_64\n")
    );
    store
        .delete_package(&at, "x86_64", "alpha-1-r0.apk", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.package_stanza(ids[0]).await.unwrap(), None);
}

/// The migrations of `backend` numbered below `version`.
fn migrations_before(backend: &str, version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name[..4].parse::<u32>().unwrap() < version {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// Owners with their one key each, as stored before an owner could hold several.
const KEYS_BEFORE_ROTATION: &str = "
INSERT INTO owners (id, name, is_private, is_org, created_at) VALUES (41, 'acme', FALSE, TRUE, 0);
INSERT INTO owners (id, name, is_private, is_org, created_at) VALUES (43, 'beta', FALSE, TRUE, 0);
INSERT INTO repositories (id, owner_id, branch, name, wanted_gen, built_gen)
    VALUES (42, 41, 'v3.21', 'main', 3, 3);
INSERT INTO signing_keys (owner_id, key_name, private_pem, public_pem, created_at)
    VALUES (41, 'acme-1.rsa.pub', 'private of acme-1.rsa.pub', 'public of acme-1.rsa.pub', 7);
INSERT INTO signing_keys (owner_id, key_name, private_pem, public_pem, created_at)
    VALUES (43, 'beta-1.rsa.pub', 'private of beta-1.rsa.pub', 'public of beta-1.rsa.pub', 8);
";

/// Each owner's key comes through migration 0100 active, and a second one can be added.
async fn keys_after_the_rotation_migration(store: &dyn Store) {
    let keys = store.signing_keys(41).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (
            keys[0].key_name.as_str(),
            keys[0].private_pem.as_str(),
            keys[0].created_at,
            keys[0].retired_at
        ),
        ("acme-1.rsa.pub", "private of acme-1.rsa.pub", 7, None)
    );
    assert_eq!(store.active_key_ids(41).await.unwrap(), [keys[0].id]);
    assert_eq!(
        store.signing_keys(43).await.unwrap()[0].key_name,
        "beta-1.rsa.pub"
    );
    // Later migrations may raise the generation too (to have every index rebuilt).
    let before = store
        .repository_by_id(42)
        .await
        .unwrap()
        .unwrap()
        .wanted_gen;
    let bumped = store
        .add_signing_key(41, key("acme-2.rsa.pub"), 3, None)
        .await
        .unwrap();
    assert_eq!(
        bumped
            .iter()
            .map(|r| (r.id, r.wanted_gen))
            .collect::<Vec<_>>(),
        [(42, before + 1)]
    );
    let ids = store.active_key_ids(41).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] > keys[0].id, "a new key takes a fresh id: {ids:?}");
}

#[tokio::test]
async fn sqlite_migration_keeps_each_owners_key_active() {
    use sqlx::ConnectOptions as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let mut connection = options.connect().await.unwrap();
    let older = migrations_before("sqlite", 100);
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    sqlx::raw_sql(KEYS_BEFORE_ROTATION)
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);
    let store = SqliteStore::connect(&url, 2, alpine_registry::clock::system())
        .await
        .expect("migrated");
    keys_after_the_rotation_migration(&store).await;
}

#[tokio::test]
async fn postgres_migration_keeps_each_owners_key_active() {
    use sqlx::ConnectOptions as _;
    let Some(server) = pg::server_url() else {
        pg::note_skipped();
        return;
    };
    let database = TestDatabase::create(&server);
    let options: sqlx::postgres::PgConnectOptions = database.url.parse().unwrap();
    let mut connection = options.connect().await.unwrap();
    let older = migrations_before("postgres", 100);
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    sqlx::raw_sql(KEYS_BEFORE_ROTATION)
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);
    let store = PostgresStore::connect(&database.url, 2, alpine_registry::clock::system())
        .await
        .expect("migrated");
    keys_after_the_rotation_migration(&store).await;
    drop(store);
    database.drop_database().await;
}
