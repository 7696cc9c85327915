//! Measures a key rotation on an owner whose repository holds N packages: `key rotate`
//! generates the new key, then has every index signed again (by the new key first and the
//! old one after) before it returns; `key retire` has them signed again by the new key
//! alone.
//!
//! ```sh
//! cargo run --example key_rotation -- --packages 10000
//! cargo run --example key_rotation -- --packages 10000 --database-url postgres://...
//! ```
//!
//! Rows are inserted through the store (the stanzas of real-looking packages; no package
//! files: an index build reads rows only), in one repository and one architecture, so
//! that one index lists them all. Prints the time of an index build of them all with one
//! key, of key generation alone, of the whole rotation, and of the retirement.
//!
//! Options: `--packages N` (10000), `--key-bits N` (4096, the default of
//! signing.key_bits), `--database-url URL` (SQLite in a temporary directory by default;
//! a PostgreSQL database given must be empty).

use std::time::{Duration, Instant};

use alpine_registry::apk::sign::{split_signed, SigningKey};
use alpine_registry::config::Config;
use alpine_registry::registry::audit::Actor;
use alpine_registry::registry::{accounts, keys, repositories};
use alpine_registry::store::{NewPackage, RepoRef};
use anyhow::Context;

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut packages = 10_000usize;
    let mut key_bits = 4096usize;
    let mut database_url = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--packages" => packages = value()?.parse()?,
            "--key-bits" => key_bits = value()?.parse()?,
            "--database-url" => database_url = value()?,
            other => anyhow::bail!(
                "unknown option {other}: --packages N, --key-bits N, --database-url URL"
            ),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.signing.key_bits = key_bits;
    if !database_url.is_empty() {
        config.database.url = database_url;
        config.signing.master_key = "a2V5LXJvdGF0aW9uLWV4YW1wbGUtbWFzdGVyLWtleTA=".into();
    }
    let state = alpine_registry::open(config).await?;
    let cli = Actor::cli();
    let (owner, _) = accounts::create_owner(&state, &cli, "acme", false, true, true).await?;
    let repo = RepoRef {
        owner_id: owner.id,
        branch: "v3.21".into(),
        repository: "main".into(),
    };
    let started = Instant::now();
    for i in 0..packages {
        let (name, version) = (format!("package-{i:05}"), "1.2.3-r0".to_string());
        let checksum = format!("Q1{:027}=", i);
        let stanza = format!(
            "C:{checksum}\nP:{name}\nV:{version}\nA:x86_64\nS:{size}\nI:{installed}\n\
             T:The {name} package, for measuring index builds\nU:https://example.org/{name}\n\
             L:MIT\no:{name}\nm:Someone <someone@example.org>\nt:1700000000\n\
             c:0123456789abcdef0123456789abcdef01234567\nD:so:libc.musl-x86_64.so.1\n\
             p:cmd:{name}=1.2.3-r0 so:lib{name}.so.1=1\n",
            size = 10_000 + i,
            installed = 40_960 + i
        );
        state
            .store
            .insert_package(
                &repo,
                NewPackage {
                    arch: "x86_64".into(),
                    filename: format!("{name}-{version}.apk"),
                    name,
                    version,
                    checksum,
                    sha256: format!("{i:064x}"),
                    size: 10_000 + i as i64,
                    stanza,
                },
                true,
                None,
            )
            .await?;
    }
    eprintln!("inserted {packages} rows in {}", ms(started.elapsed()));

    let started = Instant::now();
    repositories::reindex(&state, Some("acme")).await?;
    let one_key = started.elapsed();
    let repository_id = state
        .store
        .repository(&repo)
        .await?
        .context("the repository")?
        .id;

    let started = Instant::now();
    let owner_name = owner.name.clone();
    tokio::task::spawn_blocking(move || SigningKey::generate(&owner_name, key_bits)).await??;
    let generation = started.elapsed();

    let started = Instant::now();
    let rotated = keys::rotate(&state, &cli, &owner).await?;
    let rotation = started.elapsed();
    let old = rotated.signing[1].clone();
    let signed = state
        .store
        .index(repository_id, "x86_64")
        .await?
        .context("the index")?;
    let signatures = split_signed(&signed.content)?.0.len();

    let started = Instant::now();
    keys::retire(&state, &cli, &owner, &old).await?;
    let retirement = started.elapsed();

    println!("packages in the index                 {packages}");
    println!(
        "index size                            {} bytes",
        signed.content.len()
    );
    println!("index build, one key (reindex)        {}", ms(one_key));
    println!(
        "{key_bits}-bit key generation alone       {}",
        ms(generation)
    );
    println!(
        "key rotate (generation + re-signing)  {} ({signatures} signatures)",
        ms(rotation)
    );
    println!("key retire (re-signing, one key)      {}", ms(retirement));
    Ok(())
}
