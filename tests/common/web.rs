//! The registry the web page tests browse (tests/web.rs, tests/browser.rs).

use alpine_registry::apk::builder::PackageBuilder;
use alpine_registry::store::Role;

use super::TestServer;

/// The password of each test user.
pub fn password_of(user: &str) -> String {
    format!("{user}-correct-horse")
}

/// `acme` (public): hello (two versions, two branches, two architectures) depending on
/// libgreet and on a package nobody has, libgreet (providing so:libgreet.so.1) and
/// greet-doc (noarch). `vault` (private): hush. alice writes to acme, bob is a member of
/// nothing, carol reads vault.
pub async fn world(server: &TestServer) {
    let state = &server.state;
    for (name, private) in [("acme", false), ("vault", true)] {
        alpine_registry::registry::accounts::create_owner(
            state,
            &alpine_registry::registry::audit::Actor::cli(),
            name,
            private,
            true,
            true,
        )
        .await
        .unwrap();
    }
    for user in ["alice", "bob", "carol"] {
        let hash = alpine_registry::access::hash_password(&password_of(user)).unwrap();
        alpine_registry::registry::accounts::create_user(
            state,
            &alpine_registry::registry::audit::Actor::cli(),
            user,
            Some(&hash),
            false,
            false,
        )
        .await
        .unwrap();
    }
    alpine_registry::registry::accounts::add_member(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "acme",
        "alice",
        Role::Write,
    )
    .await
    .unwrap();
    alpine_registry::registry::accounts::add_member(
        state,
        &alpine_registry::registry::audit::Actor::cli(),
        "vault",
        "carol",
        Role::Read,
    )
    .await
    .unwrap();
    let hello = |version: &str, arch: &str| {
        PackageBuilder::new("hello", version, arch)
            .field("pkgdesc", "Says hello to the world")
            .field("depend", "libgreet so:libgreet.so.1 nowhere-to-be-found")
            .field("provides", &format!("cmd:hello={version}"))
            .file(
                "usr/bin/hello",
                format!("hello {version} {arch}").as_bytes(),
            )
            .build()
    };
    let uploads = [
        ("/acme/v3.21/main", hello("1.0-r0", "x86_64")),
        ("/acme/v3.21/main", hello("1.0-r0", "aarch64")),
        ("/acme/edge/main", hello("1.1-r0", "x86_64")),
        (
            "/acme/v3.21/main",
            PackageBuilder::new("libgreet", "2.0-r0", "x86_64")
                .field("provides", "so:libgreet.so.1=1")
                .field("maintainer", "Greta Greeter <greta@example.org>")
                .file("usr/lib/libgreet.so.1", b"lib")
                .build(),
        ),
        (
            "/acme/v3.21/main",
            PackageBuilder::new("greet-doc", "2.0-r0", "noarch")
                .file("usr/share/doc/greet", b"doc")
                .build(),
        ),
        (
            "/vault/v1/main",
            PackageBuilder::new("hush", "1.0-r0", "x86_64")
                .field("pkgdesc", "Classified hush tool")
                .file("usr/bin/hush", b"secret")
                .build(),
        ),
    ];
    for (path, bytes) in uploads {
        let response = server.put_admin(path, bytes).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}
