//! The keyring package: `<owner>-keys`, noarch, holding the public key of every active key
//! of the owner under `etc/apk/keys/<keyname>`, so that a client that installed it once
//! receives a new key with `apk upgrade` before the old one is retired (what
//! `alpine-keys` does for Alpine itself).
//!
//! It is a package row in every repository of the owner, recorded through the publish
//! path (blob, row, signed index) after every key change and into each repository when it
//! is created; the rows of its earlier versions go through the delete path. Its version is
//! the number of key events of the owner (keys added plus keys retired, `N-r0`): it grows
//! with each rotation, import or retirement and, as keys are never removed but with
//! their owner, never repeats. Its bytes are a function of the key set alone (dates from
//! the key events, deterministic signatures), so instances that build it for the same key
//! set store the very same file.

use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::apk::builder::PackageBuilder;
use crate::apk::package::parse_package;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::{self, Actor};
use crate::registry::publish::{self, Content, DeleteReason};
use crate::store::{NewPackage, Owner, Package, Repository};
use crate::AppState;

/// The name of the owner's keyring package.
pub fn package_name(owner: &Owner) -> String {
    format!("{}-keys", owner.name)
}

/// Whether the owner's repositories list its keyring: as switched for the owner, else
/// `signing.keyring`.
pub async fn enabled(state: &AppState, owner: &Owner) -> AppResult<bool> {
    Ok(state
        .store
        .keyring_enabled(owner.id)
        .await?
        .unwrap_or(state.config.signing.keyring))
}

/// Refuses (409) a package of an owner's keyring's name while its keyring is on: clients
/// would take it for the keyring.
pub async fn refuse_name(state: &AppState, owner: &Owner, name: &str) -> AppResult<()> {
    if name == package_name(owner) && enabled(state, owner).await? {
        return Err(AppError::Conflict(format!(
            "{name} is the name of the keyring package the registry publishes for {} (the \
             public keys of its signing keys): name the package otherwise, or switch the \
             keyring off first (owner keyring {} off)",
            owner.name, owner.name
        )));
    }
    Ok(())
}

/// The keyring package for the owner's key set as it is now.
struct Built {
    version: String,
    filename: String,
    bytes: Vec<u8>,
    /// The key files it holds, newest key first.
    keys: Vec<String>,
}

/// Builds the keyring of the owner's active keys, signed with its newest one, as
/// abuild-sign would sign it (generating the owner's first key if it has none).
async fn build(state: &AppState, owner: &Owner) -> AppResult<Built> {
    let signer = state.keys.key_set(owner).await?.newest().clone();
    let records = state.store.signing_keys(owner.id).await?;
    let retired = records.iter().filter(|r| r.retired_at.is_some()).count();
    let events = records.len() + retired;
    let last_event = records
        .iter()
        .flat_map(|r| [Some(r.created_at), r.retired_at])
        .flatten()
        .max()
        .unwrap_or(0);
    let active: Vec<_> = records.iter().filter(|r| r.retired_at.is_none()).collect();
    let name = package_name(owner);
    let version = format!("{events}-r0");
    let installed: usize = active.iter().map(|r| r.public_pem.len()).sum();
    let mut builder = PackageBuilder::new(&name, &version, "noarch");
    for field in [
        "pkgdesc",
        "url",
        "builddate",
        "packager",
        "size",
        "origin",
        "commit",
        "maintainer",
        "license",
    ] {
        builder = builder.without_field(field);
    }
    builder = builder
        .field(
            "pkgdesc",
            &format!("Public keys that sign the packages of {}", owner.name),
        )
        .field("builddate", &last_event.to_string())
        .field("packager", "alpine-registry")
        .field("size", &installed.to_string())
        .field("origin", &name)
        // Public keys are facts, not works; the package states no restriction.
        .field("license", "Public-Domain");
    let public_url = state.config.server.public_url.trim_end_matches('/');
    if !public_url.is_empty() {
        builder = builder.field("url", &format!("{public_url}/{}/key", owner.name));
    }
    for record in &active {
        builder = builder.file(
            &format!("etc/apk/keys/{}", record.key_name),
            record.public_pem.as_bytes(),
        );
    }
    let builder = builder.signed_with(&signer);
    Ok(Built {
        filename: builder.filename(),
        bytes: builder.build(),
        version,
        keys: active.iter().map(|r| r.key_name.clone()).collect(),
    })
}

/// What switching the keyring did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyringState {
    /// Whether the owner's repositories list its keyring package.
    pub enabled: bool,
    /// The package's name, `<owner>-keys`.
    pub package: String,
    /// Its version now (null while off).
    pub version: Option<String>,
    /// The repositories that list it now (owner/branch/repository).
    pub repositories: Vec<String>,
}

/// Switches the owner's keyring on (published into every repository of the owner) or off
/// (removed from each); returns once every index says so.
pub async fn switch(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    on: bool,
) -> AppResult<KeyringState> {
    let entry = actor.entry(
        state,
        if on { "keyring.on" } else { "keyring.off" },
        Some(owner),
        package_name(owner),
        json!({}),
    );
    state
        .store
        .set_keyring_enabled(owner.id, on, Some(&entry))
        .await?;
    bring(state, owner, true).await
}

/// Brings every repository of the owner to its keyring as the key set is now: the
/// current version published, earlier ones deleted. Nothing while the keyring is off: a
/// package of its name is then the owner's own.
pub async fn sync(state: &AppState, owner: &Owner) -> AppResult<KeyringState> {
    bring(state, owner, false).await
}

/// `sync`; while the keyring is off, with `remove_when_off`, every row of its name deleted
/// (the keyring switched off).
async fn bring(state: &AppState, owner: &Owner, remove_when_off: bool) -> AppResult<KeyringState> {
    let on = enabled(state, owner).await?;
    let built = if on {
        Some(build(state, owner).await?)
    } else if remove_when_off {
        None
    } else {
        return Ok(KeyringState {
            enabled: false,
            package: package_name(owner),
            version: None,
            repositories: Vec::new(),
        });
    };
    let present = present(state, owner).await?;
    let mut listed = Vec::new();
    for repo in state
        .store
        .list_repositories(Some(owner.id), None, None)
        .await?
    {
        let here = present
            .iter()
            .filter(|p| p.repository_id == repo.id)
            .cloned()
            .collect();
        if sync_one(state, owner, &repo, here, built.as_ref()).await? {
            listed.push(format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name));
        }
    }
    Ok(KeyringState {
        enabled: on,
        package: package_name(owner),
        version: built.map(|b| b.version),
        repositories: listed,
    })
}

/// Publishes the owner's keyring into the repository `at` (just created), when it is on.
pub async fn add_to(state: &AppState, owner: &Owner, at: &RepoAddress) -> AppResult<()> {
    if !enabled(state, owner).await? {
        return Ok(());
    }
    let Some(repo) = state
        .store
        .repository(&crate::registry::repo_ref(owner.id, at))
        .await?
    else {
        return Ok(());
    };
    let built = build(state, owner).await?;
    let here = present(state, owner)
        .await?
        .into_iter()
        .filter(|p| p.repository_id == repo.id)
        .collect();
    sync_one(state, owner, &repo, here, Some(&built)).await?;
    Ok(())
}

/// The rows of the owner's keyring package, in every repository of the owner.
async fn present(state: &AppState, owner: &Owner) -> AppResult<Vec<Package>> {
    Ok(state
        .store
        .package_files(owner.id, &package_name(owner))
        .await?
        .into_iter()
        .map(|file| file.package)
        .collect())
}

/// Brings every owner's repositories to its keyring, in a task of its own, at start: a
/// process stopped between a key change (or a repository's creation) and its keyring's
/// publication leaves it behind until then.
pub fn spawn_catch_up(state: AppState) {
    tokio::spawn(async move {
        let owners = match state.store.list_owners().await {
            Ok(owners) => owners,
            Err(e) => {
                tracing::warn!(error = %e, "keyring catch-up: listing owners");
                return;
            }
        };
        for summary in owners {
            let owner = match state.store.owner_by_name(&summary.name).await {
                Ok(Some(owner)) => owner,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "keyring catch-up: reading an owner");
                    return;
                }
            };
            if let Err(e) = sync(&state, &owner).await {
                tracing::warn!(owner = %owner.name, error = %e, "keyring catch-up");
            }
        }
    });
}

/// Brings one repository to `built` (None: no keyring); true when it lists a keyring.
/// A version higher than `built` found there (another instance saw a later key change)
/// is left, and what it replaces deleted. A remote repository lists what its upstream
/// lists, a virtual one what its members list, never a keyring of its own.
async fn sync_one(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    present: Vec<Package>,
    built: Option<&Built>,
) -> AppResult<bool> {
    if !matches!(
        crate::registry::virtuals::kind_of(state, repo.id).await?,
        crate::registry::virtuals::Kind::Hosted
    ) {
        return Ok(false);
    }
    let at = RepoAddress::parse(&owner.name, &repo.branch, &repo.name)?;
    let newest = match built {
        None => None,
        Some(built) => {
            let newer = present
                .iter()
                .filter(|p| crate::apk::version::compare(&p.version, &built.version).is_ge())
                .max_by(|a, b| crate::apk::version::compare(&a.version, &b.version));
            match newer {
                Some(found) => Some(found.version.clone()),
                None => {
                    publish_into(state, owner, &at, built).await?;
                    Some(built.version.clone())
                }
            }
        }
    };
    for old in present
        .iter()
        .filter(|p| newest.as_deref() != Some(p.version.as_str()))
    {
        let arch = Arch::parse(&old.arch)?;
        let file = PackageFile::parse(&old.filename)?;
        match publish::delete(
            state,
            &Actor::system(),
            DeleteReason::Keyring,
            owner,
            &at,
            &arch,
            &file,
        )
        .await
        {
            // Deleted by another instance meanwhile.
            Ok(_) | Err(AppError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(newest.is_some())
}

/// Records `built` in the repository `at` through the publish path.
async fn publish_into(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    built: &Built,
) -> AppResult<()> {
    let limits = state.config.apk_limits();
    let parsed = parse_package(&built.bytes[..], &limits)?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&built.bytes));
    let mut staged = state.blobs.stage().await?;
    staged
        .write_all(&built.bytes)
        .await
        .map_err(anyhow::Error::from)?;
    staged.flush().await.map_err(anyhow::Error::from)?;
    let new_package = NewPackage {
        arch: parsed.info.arch.clone(),
        name: parsed.info.pkgname.clone(),
        version: parsed.info.pkgver.clone(),
        filename: built.filename.clone(),
        checksum: parsed.checksum.clone(),
        sha256: sha256.clone(),
        size: built.bytes.len() as i64,
        stanza: parsed.stanza.clone(),
    };
    // Key file names only, never key material.
    let entry = Actor::system().entry(
        state,
        "keyring.publish",
        Some(owner),
        audit::file_target(at, "noarch", &built.filename),
        json!({ "version": built.version, "keys": built.keys, "sha256": sha256 }),
    );
    match publish::record(
        state,
        owner,
        at,
        new_package,
        Content::Staged(staged),
        &entry,
    )
    .await
    {
        // Published by another instance for the same key set: the very same bytes.
        Ok(_) | Err(AppError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
