//! The catalog (what the JSON API and the web pages show) over packages published through
//! real HTTP: search, package details, indexes, and the access rules of the apk routes.

mod common;

use alpine_registry::access::{Identity, Principal};
use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::error::AppError;
use alpine_registry::registry::catalog::{self, PackageQuery};
use alpine_registry::store::Role;
use common::*;

/// Public org `acme` and private org `secret`; user `insider` reads `secret`, user
/// `outsider` does not.
async fn setup(server: &TestServer) {
    for (name, private) in [("acme", false), ("secret", true)] {
        server
            .state
            .store
            .create_owner(name, private, true, None)
            .await
            .unwrap();
    }
    let publish = |path: &'static str, bytes: Vec<u8>| async move {
        let response = server.put_admin(path, bytes).await;
        assert_eq!(response.status(), 201, "PUT {path}");
    };
    publish(
        "/acme/v3.21/main",
        PackageBuilder::new("libfoo", "1.2-r0", "x86_64")
            .field("provides", "so:libfoo.so.1=1.2")
            .field("maintainer", "Jane Doe <jane@example.org>")
            .build(),
    )
    .await;
    publish(
        "/acme/v3.21/main",
        PackageBuilder::new("libfoo", "1.10-r0", "x86_64")
            .field("provides", "so:libfoo.so.1=1.10")
            .field("maintainer", "Jane Doe <jane@example.org>")
            .build(),
    )
    .await;
    publish(
        "/acme/edge/main",
        PackageBuilder::new("libfoo", "1.10-r0", "aarch64")
            .field("provides", "so:libfoo.so.1=1.10")
            .build(),
    )
    .await;
    publish(
        "/acme/v3.21/main",
        PackageBuilder::new("foo-tool", "2.0-r1", "x86_64")
            .field("depend", "so:libfoo.so.1 missing-thing>=3")
            .field("provides", "cmd:foo=2.0-r1")
            .build(),
    )
    .await;
    publish(
        "/acme/v3.21/main",
        PackageBuilder::new("foo-doc", "2.0-r1", "noarch")
            .field("install_if", "docs foo-tool=2.0-r1")
            .build(),
    )
    .await;
    publish(
        "/secret/v3.21/main",
        PackageBuilder::new("libfoo-secret", "1.0-r0", "x86_64").build(),
    )
    .await;
    for (name, role) in [("insider", Some(Role::Read)), ("outsider", None)] {
        server.user_with_token(name, Role::Read, None, None).await;
        if let Some(role) = role {
            alpine_registry::registry::accounts::add_member(
                &server.state,
                &alpine_registry::registry::audit::Actor::cli(),
                "secret",
                name,
                role,
            )
            .await
            .unwrap();
        }
    }
}

async fn user(server: &TestServer, name: &str) -> Identity {
    Identity::User(Principal {
        user: server
            .state
            .store
            .user_by_name(name)
            .await
            .unwrap()
            .unwrap(),
        scope: Role::Read,
        only_owner: None,
        token: None,
    })
}

fn names(page: &catalog::Page<catalog::PackageSummary>) -> Vec<String> {
    page.items
        .iter()
        .map(|p| format!("{}/{}", p.owner, p.name))
        .collect()
}

#[tokio::test]
async fn search_matches_names_and_provides_and_hides_private_owners() {
    let server = TestServer::start().await;
    setup(&server).await;
    let state = &server.state;
    let q = |q: &str| PackageQuery {
        q: Some(q.to_string()),
        ..PackageQuery::default()
    };

    let anonymous = catalog::search(state, &Identity::Anonymous, &q("foo"), None, 50)
        .await
        .unwrap();
    assert_eq!(
        names(&anonymous),
        ["acme/foo-doc", "acme/foo-tool", "acme/libfoo"]
    );
    assert_eq!(anonymous.total, 3);
    let outsider = user(&server, "outsider").await;
    let seen = catalog::search(state, &outsider, &q("foo"), None, 50)
        .await
        .unwrap();
    assert_eq!(seen.total, 3, "a non-member does not see the private owner");
    let insider = user(&server, "insider").await;
    let seen = catalog::search(state, &insider, &q("foo"), None, 50)
        .await
        .unwrap();
    assert_eq!(
        names(&seen),
        [
            "acme/foo-doc",
            "acme/foo-tool",
            "acme/libfoo",
            "secret/libfoo-secret"
        ]
    );

    // By what a package provides, by glob, and by filters.
    let by_so = catalog::search(state, &Identity::Anonymous, &q("so:libfoo"), None, 50)
        .await
        .unwrap();
    assert_eq!(names(&by_so), ["acme/libfoo"]);
    let by_cmd = catalog::search(state, &Identity::Anonymous, &q("cmd:foo"), None, 50)
        .await
        .unwrap();
    assert_eq!(names(&by_cmd), ["acme/foo-tool"]);
    let glob = catalog::search(state, &insider, &q("lib*"), None, 50)
        .await
        .unwrap();
    assert_eq!(names(&glob), ["acme/libfoo", "secret/libfoo-secret"]);
    let aarch64 = PackageQuery {
        arch: Some("aarch64".into()),
        ..PackageQuery::default()
    };
    let on_arm = catalog::search(state, &Identity::Anonymous, &aarch64, None, 50)
        .await
        .unwrap();
    assert_eq!(
        names(&on_arm),
        ["acme/foo-doc", "acme/libfoo"],
        "noarch files install on every architecture"
    );
    let jane = PackageQuery {
        maintainer: Some("JANE".into()),
        branch: Some("v3.21".into()),
        ..PackageQuery::default()
    };
    let by_jane = catalog::search(state, &Identity::Anonymous, &jane, None, 50)
        .await
        .unwrap();
    assert_eq!(names(&by_jane), ["acme/libfoo"]);
    let libfoo = &by_jane.items[0];
    assert_eq!(
        libfoo.latest_version, "1.10-r0",
        "apk order, not text order"
    );
    assert_eq!(libfoo.files, 2);
    assert_eq!(libfoo.branches, ["v3.21"]);
    server.stop().await;
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let server = TestServer::start().await;
    setup(&server).await;
    let insider = user(&server, "insider").await;
    let all = PackageQuery::default();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = catalog::search(&server.state, &insider, &all, after.as_deref(), 2)
            .await
            .unwrap();
        assert_eq!(page.total, 4);
        seen.extend(names(&page));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "acme/foo-doc",
            "acme/foo-tool",
            "acme/libfoo",
            "secret/libfoo-secret"
        ]
    );
    for limit in [0, 101] {
        let refused = catalog::search(&server.state, &insider, &all, None, limit).await;
        assert!(matches!(refused, Err(AppError::BadRequest(_))), "{limit}");
    }
    let bad_cursor = catalog::search(&server.state, &insider, &all, Some("nope!"), 10).await;
    assert!(matches!(bad_cursor, Err(AppError::BadRequest(_))));
    server.stop().await;
}

#[tokio::test]
async fn a_package_lists_versions_files_and_links() {
    let server = TestServer::start().await;
    setup(&server).await;
    let state = &server.state;
    let anonymous = Identity::Anonymous;

    let libfoo = catalog::package(state, &anonymous, "acme", "libfoo")
        .await
        .unwrap();
    assert_eq!(libfoo.versions, ["1.10-r0", "1.2-r0"]);
    let places: Vec<_> = libfoo
        .files
        .iter()
        .map(|f| format!("{} {} {}", f.version, f.branch, f.arch))
        .collect();
    assert_eq!(
        places,
        [
            "1.10-r0 edge aarch64",
            "1.10-r0 v3.21 x86_64",
            "1.2-r0 v3.21 x86_64"
        ]
    );
    let file = &libfoo.files[1];
    assert_eq!(
        file.download_path,
        "/acme/v3.21/main/x86_64/libfoo-1.10-r0.apk"
    );
    assert_eq!(
        file.maintainer.as_deref(),
        Some("Jane Doe <jane@example.org>")
    );
    assert_eq!(file.build_time, Some(1_700_000_000));
    assert_eq!(file.installed_size, Some(4096));
    assert_eq!(file.license, "MIT");
    assert!(file.checksum.starts_with("Q1"));
    assert_eq!(file.sha256.len(), 64);
    // The file served at that path is the one described.
    let body = server
        .get(&file.download_path, None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len() as i64, file.size);
    assert_eq!(libfoo.provides, ["so:libfoo.so.1=1.10"]);
    assert_eq!(libfoo.required_by, ["foo-tool"]);

    let tool = catalog::package(state, &anonymous, "acme", "foo-tool")
        .await
        .unwrap();
    let links: Vec<_> = tool
        .depends
        .iter()
        .map(|l| (l.text.as_str(), l.target.as_ref().map(|t| t.name.as_str())))
        .collect();
    assert_eq!(
        links,
        [
            ("so:libfoo.so.1", Some("libfoo")),
            ("missing-thing>=3", None)
        ]
    );
    assert!(
        tool.required_by.is_empty(),
        "install_if is not a dependency: {:?}",
        tool.required_by
    );

    let doc = catalog::package(state, &anonymous, "acme", "foo-doc")
        .await
        .unwrap();
    assert!(doc.files[0].noarch);
    let targets: Vec<_> = doc.install_if.iter().map(|l| l.target.is_some()).collect();
    assert_eq!(targets, [false, true]);

    assert!(matches!(
        catalog::package(state, &anonymous, "acme", "nothing").await,
        Err(AppError::NotFound(_))
    ));
    // A private owner answers as the apk routes do: 401 to anonymous, 404 to outsiders.
    assert!(matches!(
        catalog::package(state, &anonymous, "secret", "libfoo-secret").await,
        Err(AppError::Unauthorized(_))
    ));
    let outsider = user(&server, "outsider").await;
    assert!(matches!(
        catalog::package(state, &outsider, "secret", "libfoo-secret").await,
        Err(AppError::NotFound(_))
    ));
    let insider = user(&server, "insider").await;
    assert!(catalog::package(state, &insider, "secret", "libfoo-secret")
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test]
async fn owners_indexes_and_keys_as_served() {
    let server = TestServer::start().await;
    setup(&server).await;
    let state = &server.state;
    let anonymous = Identity::Anonymous;

    let owners: Vec<_> = catalog::owners(state, &anonymous)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    // Users' namespaces are public owners too.
    assert_eq!(owners, ["acme", "admin", "insider", "outsider"]);
    let insider = user(&server, "insider").await;
    let owners: Vec<_> = catalog::owners(state, &insider)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(owners.contains(&"secret".to_string()));

    let acme = catalog::owner(state, &anonymous, "acme").await.unwrap();
    assert_eq!(acme.overview.packages, 5);
    assert_eq!(acme.overview.repositories.len(), 2);
    let key = acme.key.expect("acme has a key");
    assert!(key.file_name.starts_with("acme-") && key.file_name.ends_with(".rsa.pub"));
    assert_eq!(key.bits, 1024);
    assert_eq!(key.algorithms, ["RSA256 (SHA-256)", "RSA (SHA-1)"]);
    assert_eq!(key.fingerprint_sha256[..8], key.file_name[5..13]);

    let indexes = catalog::index_status(state, &anonymous, "acme", "v3.21", "main")
        .await
        .unwrap();
    let arches: Vec<_> = indexes.iter().map(|i| i.arch.as_str()).collect();
    assert_eq!(arches, ["x86_64"]);
    let index = &indexes[0];
    assert_eq!(index.entries, 4, "three x86_64 files and one noarch file");
    assert_eq!(
        index.signatures,
        [
            format!(".SIGN.RSA256.{}", key.file_name),
            format!(".SIGN.RSA.{}", key.file_name)
        ]
    );
    let served = server
        .get(&index.download_path, None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(served.len(), index.size);

    let files = catalog::index_files(state, &anonymous, "acme", "v3.21", "main", "x86_64")
        .await
        .unwrap();
    let listed: Vec<_> = files
        .iter()
        .map(|f| format!("{}-{}", f.name, f.version))
        .collect();
    assert_eq!(
        listed,
        [
            "foo-doc-2.0-r1",
            "foo-tool-2.0-r1",
            "libfoo-1.10-r0",
            "libfoo-1.2-r0"
        ]
    );
    // Any known architecture is served the noarch files; an unknown one nothing.
    let s390x = catalog::index_files(state, &anonymous, "acme", "v3.21", "main", "s390x")
        .await
        .unwrap();
    assert_eq!(s390x.len(), 1);
    assert_eq!(s390x[0].name, "foo-doc");
    let served = server
        .get("/acme/v3.21/main/s390x/APKINDEX.tar.gz", None)
        .await;
    assert_eq!(served.status(), 200);
    assert!(matches!(
        catalog::index_files(state, &anonymous, "acme", "v3.21", "main", "sparc").await,
        Err(AppError::NotFound(_))
    ));
    assert_eq!(
        server
            .get("/acme/v3.21/main/sparc/APKINDEX.tar.gz", None)
            .await
            .status(),
        404
    );
    assert!(matches!(
        catalog::index_status(state, &anonymous, "acme", "v9", "main").await,
        Err(AppError::NotFound(_))
    ));
    server.stop().await;
}

/// Names and provided names on which a pattern can trip: both cases, digits,
/// punctuation that SQLite's GLOB or a regular expression reads specially, non-ASCII.
const TRICKY: [(&str, &str); 8] = [
    ("libfoo", "so:libfoo.so.1=1.0 cmd:foo"),
    ("LibBar", "cmd:Bar-1 pc:bar"),
    ("a.b-c_d+e", "odd[name]=1 star*name hat^name"),
    ("x9", "dash-name back\\slash quote\"name /bin/sh"),
    ("Zz", "é-accent É-upper"),
    ("q", "brace{x} paren(y) dollar$z pipe|w"),
    ("b-", "]close [open -lead ^caret !bang"),
    ("o9o", "?quest *star"),
];

/// Every glob is matched as the `glob` crate matches it (case-insensitive for ASCII
/// letters, against the name and each provided name), though the database does the
/// matching: SQLite with GLOB, PostgreSQL with a regular expression. Patterns are drawn
/// from characters that are special to one or the other, and near the names.
#[tokio::test]
async fn globs_match_as_the_glob_crate_matches() {
    let server = TestServer::start().await;
    for (name, provides) in TRICKY {
        let response = server
            .put_admin(
                "/admin/v3.21/main",
                PackageBuilder::new(name, "1.0-r0", "noarch")
                    .field("provides", provides)
                    .build(),
            )
            .await;
        assert_eq!(response.status(), 201, "{name}");
    }
    let options = glob::MatchOptions {
        case_sensitive: false,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    let alphabet: Vec<char> = "aAbBoOsS9.-_:/*?[]!^\\\"$|{}()éÉz".chars().collect();
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    // Every name and provided name, to draw patterns near them.
    let targets: Vec<&str> = TRICKY
        .iter()
        .flat_map(|(name, provides)| std::iter::once(*name).chain(provides.split(' ')))
        .collect();
    let mut checked = 0;
    let mut matched_some = 0;
    while checked < 600 {
        let mut q = String::new();
        if checked % 2 == 0 {
            // Random characters.
            for _ in 0..1 + next(6) {
                q.push(alphabet[next(alphabet.len())]);
            }
        } else {
            // A name or provided name, each character kept (its case flipped at times),
            // replaced by a wildcard, put in a class (negated, or a range around it), or
            // changed.
            for c in targets[next(targets.len())].chars() {
                match next(9) {
                    0 => q.push('?'),
                    1 => q.push('*'),
                    2 => q.push_str(&format!("[{c}]")),
                    3 => q.push_str(&format!("[!{}]", alphabet[next(alphabet.len())])),
                    4 => {
                        let low = char::from_u32(c as u32 - 1).unwrap_or(c);
                        let high = char::from_u32(c as u32 + 2).unwrap_or(c);
                        q.push_str(&format!("[{low}-{high}]"));
                    }
                    5 => q.push(alphabet[next(alphabet.len())]),
                    6 => q.extend(c.to_uppercase()),
                    _ => q.push(c),
                }
            }
        }
        if !q.contains(['*', '?']) {
            q.push('*');
        }
        let Ok(pattern) = glob::Pattern::new(&q) else {
            continue;
        };
        if q.contains("**") {
            continue;
        }
        let expected: Vec<String> = {
            let mut names: Vec<&str> = TRICKY
                .iter()
                .filter(|(name, provides)| {
                    pattern.matches_with(name, options)
                        || provides.split(' ').any(|atom| {
                            // The name an atom is about: `!` and a version dropped.
                            let atom = atom.strip_prefix('!').unwrap_or(atom);
                            let end = atom.find(['=', '<', '>', '~']).unwrap_or(atom.len());
                            pattern.matches_with(&atom[..end], options)
                        })
                })
                .map(|(name, _)| *name)
                .collect();
            names.sort();
            names.iter().map(|n| format!("admin/{n}")).collect()
        };
        let query = PackageQuery {
            q: Some(q.clone()),
            ..PackageQuery::default()
        };
        let page = catalog::search(&server.state, &Identity::Anonymous, &query, None, 100)
            .await
            .unwrap_or_else(|e| panic!("{q:?}: {e}"));
        assert_eq!(names(&page), expected, "pattern {q:?}");
        assert_eq!(page.total as usize, expected.len(), "pattern {q:?}");
        checked += 1;
        matched_some += usize::from(!expected.is_empty());
    }
    eprintln!("{checked} patterns, {matched_some} matching some package");
    assert!(
        matched_some > 100,
        "only {matched_some} patterns matched anything"
    );
    server.stop().await;
}

/// Catalog queries past `limits.max_concurrent_catalog_queries` wait their turn for
/// `limits.catalog_query_wait_secs`, then are answered 503 with Retry-After; once a
/// place is free they are answered again.
#[tokio::test]
async fn catalog_queries_past_the_cap_wait_then_are_refused() {
    let server = TestServer::start_with(|c| {
        c.limits.max_concurrent_catalog_queries = 1;
        c.limits.catalog_query_wait_secs = 1;
    })
    .await;
    assert_eq!(server.state.catalog_queries.available_permits(), 1);
    let held = server
        .state
        .catalog_queries
        .clone()
        .acquire_owned()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = server.get("/api/v1/packages?q=foo", None).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Service Unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("retry shortly"),
        "{body}"
    );
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(5),
        "waited {waited:?}"
    );
    drop(held);
    assert_eq!(
        server.get("/api/v1/packages?q=foo", None).await.status(),
        200
    );
    server.stop().await;
}

/// A package page names at most `limits.max_required_by` packages requiring it, the
/// first by name, and counts them all: the API in `required_by_total`, the web page in
/// words.
#[tokio::test]
async fn required_by_is_capped_and_counted() {
    let server = TestServer::start_with(|c| c.limits.max_required_by = 2).await;
    let at = &server;
    let publish = |bytes: Vec<u8>| async move {
        assert_eq!(at.put_admin("/admin/v3.21/main", bytes).await.status(), 201);
    };
    publish(
        PackageBuilder::new("libcore", "1.0-r0", "x86_64")
            .field("provides", "so:libcore.so.1=1.0")
            .build(),
    )
    .await;
    // By name, by what it provides, with a version constraint; a conflict is no
    // dependency.
    for (name, depend) in [
        ("user-d", "libcore"),
        ("user-b", "so:libcore.so.1"),
        ("user-c", "libcore>=1.0"),
        ("user-a", "so:libcore.so.1"),
        ("rival", "!libcore"),
    ] {
        publish(
            PackageBuilder::new(name, "1.0-r0", "noarch")
                .field("depend", depend)
                .build(),
        )
        .await;
    }
    let detail: serde_json::Value = server
        .get("/api/v1/owners/admin/packages/libcore", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["required_by"],
        serde_json::json!(["user-a", "user-b"])
    );
    assert_eq!(detail["required_by_total"], 4);
    let page = server
        .get("/admin/-/packages/libcore", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("and 2 more."), "{page}");
    server.stop().await;
}
