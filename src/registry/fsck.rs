//! Consistency: orphan collection, and `fsck`, which checks the database against blob
//! storage and every served index against a fresh render.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::apk::index::verified_content;
use crate::apk::sign::split_signed;
use crate::config::DatabaseBackend;
use crate::store::LockMode;
use crate::AppState;

/// Blobs that no package references, older than `grace`, and whose last reference (if
/// any) went more than `grace` ago; with `remove`, each is deleted. So the file of a
/// deleted package stays for `grace` after the delete: a database dump taken before a
/// copy of the blobs finds in the copy every file it lists, when the copy starts within
/// `grace` of the dump. The scan of rows and blobs runs without the blob lock, so uploads go
/// on meanwhile; each candidate is then checked again and deleted under the exclusive lock,
/// held only for that one blob: this process's, and on PostgreSQL the database's lock of
/// the digest, which every instance's uploads hold shared. Under them no upload is between
/// committing a blob and recording its row, so a candidate no row references now is an
/// orphan: an upload of the same content that has not committed yet stores the file
/// again. (Other processes on SQLite, such as `fsck --repair` run beside the server, are
/// kept off fresh blobs by `grace`, since committing existing content refreshes its
/// modification time.)
async fn orphans(
    state: &AppState,
    grace: Duration,
    remove: bool,
) -> anyhow::Result<Vec<crate::blob::BlobInfo>> {
    let cutoff = cutoff(state, grace);
    let cutoff_ms = unix_ms(cutoff);
    let referenced = state.store.referenced_blobs().await?;
    let released = state.store.released_blobs(cutoff_ms).await?;
    let mut found = Vec::new();
    for blob in state.blobs.list().await? {
        if referenced.contains(&blob.sha256)
            || released.contains(&blob.sha256)
            || blob.modified >= cutoff
        {
            continue;
        }
        let _guard = state.blob_lock.write().await;
        let _instances = state
            .store
            .lock_blob(&blob.sha256, LockMode::Exclusive)
            .await?;
        if state.store.blob_referenced(&blob.sha256).await?
            || state
                .store
                .blob_released_since(&blob.sha256, cutoff_ms)
                .await?
        {
            continue;
        }
        if remove {
            state.blobs.delete(&blob.sha256).await?;
        }
        found.push(blob);
    }
    Ok(found)
}

/// `grace` before the registry's clock says it is now.
fn cutoff(state: &AppState, grace: Duration) -> SystemTime {
    state
        .clock
        .now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes blobs that no package references, older than `grace`, whose last reference
/// went more than `grace` ago; then forgets such old releases.
pub async fn collect_orphans(state: &AppState, grace: Duration) -> anyhow::Result<Vec<String>> {
    let removed: Vec<String> = orphans(state, grace, true)
        .await?
        .into_iter()
        .map(|blob| blob.sha256)
        .collect();
    state
        .store
        .forget_releases(unix_ms(cutoff(state, grace)))
        .await?;
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), "removed orphan blobs");
    }
    Ok(removed)
}

/// Removes staged uploads untouched for `grace` (every one when `grace` is zero): a
/// process died while receiving them. An upload in progress writes to its file as its
/// body arrives. Returns how many were removed.
pub async fn collect_staged(state: &AppState, grace: Duration) -> anyhow::Result<usize> {
    let cutoff = cutoff(state, grace);
    let mut removed = 0;
    for staged in state.blobs.list_staged().await? {
        if grace.is_zero() || staged.modified < cutoff {
            state.blobs.remove_staged(&staged.name).await?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            count = removed,
            "removed staged files of interrupted uploads"
        );
    }
    Ok(removed)
}

/// Runs `collect_orphans` every `grace` in the background; a failed round (the database
/// unreachable, say) is logged and the next one runs as planned. On PostgreSQL, whose instances
/// may share the storage and go on while one that died is not restarted, staged files
/// older than `grace` are removed too (elsewhere a start removes them).
pub fn spawn_orphan_collector(state: AppState) {
    let grace = Duration::from_secs(state.config.storage.orphan_grace_secs.max(60));
    let staged = state.config.database_backend().ok() == Some(DatabaseBackend::Postgres);
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(grace);
        interval.tick().await;
        loop {
            interval.tick().await;
            match collect_orphans(&state, grace).await {
                Ok(_) => {}
                Err(e) if crate::error::unreachable_backend_of(&e).is_some() => {
                    tracing::warn!(error = %format!("{e:#}"), "orphan collection skipped");
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "orphan collection failed"),
            }
            if staged {
                match collect_staged(&state, grace).await {
                    Ok(_) => {}
                    Err(e) if crate::error::unreachable_backend_of(&e).is_some() => {
                        tracing::warn!(error = %format!("{e:#}"), "removing staged files skipped");
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "removing staged files failed")
                    }
                }
            }
        }
    });
}

/// What `fsck` found; `repaired` lists what `--repair` fixed.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
}

async fn blob_sha256(state: &AppState, sha256: &str, size: u64) -> anyhow::Result<String> {
    let mut reader = state.blobs.open_range(sha256, 0, size).await?.body;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks every package row against its blob (existence, size, sha256), every served
/// index against a fresh render, and looks for orphan blobs and leftover temporary
/// files (staged uploads). With `repair`, rebuilds indexes that differ and removes orphans
/// and temporary files older than the grace period; it never deletes a blob a row
/// references.
pub async fn fsck(state: &AppState, repair: bool) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let grace = Duration::from_secs(state.config.storage.orphan_grace_secs);
    for repo in state.store.list_repositories(None, None, None).await? {
        let place = format!("{}/{}/{}", repo.owner_name, repo.branch, repo.name);
        match crate::registry::virtuals::kind_of(state, repo.id).await? {
            crate::registry::virtuals::Kind::Hosted => {}
            crate::registry::virtuals::Kind::Remote(_) => {
                let owner = state
                    .store
                    .owner_by_name(&repo.owner_name)
                    .await?
                    .context("repository without owner")?;
                let problems = crate::registry::remote::check(state, &owner, &repo).await?;
                report.problems.extend(problems);
                continue;
            }
            crate::registry::virtuals::Kind::Virtual(_) => {
                let problems = crate::registry::snapshots::check(state, &repo).await?;
                report.problems.extend(problems);
                continue;
            }
        }
        for package in state.store.list_packages(repo.id).await? {
            let file = format!("{place}/{}/{}", package.arch, package.filename);
            match state.blobs.size(&package.sha256).await {
                Err(crate::blob::BlobError::NotFound(_)) => {
                    report
                        .problems
                        .push(format!("{file}: blob {} is missing", package.sha256));
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(size) if size != package.size as u64 => {
                    report.problems.push(format!(
                        "{file}: blob is {size} bytes, the row says {}",
                        package.size
                    ));
                    continue;
                }
                Ok(size) => {
                    let actual = blob_sha256(state, &package.sha256, size).await?;
                    if actual != package.sha256 {
                        report.problems.push(format!(
                            "{file}: blob content has sha256 {actual}, expected {}",
                            package.sha256
                        ));
                    }
                }
            }
        }

        let owner = state
            .store
            .owner_by_name(&repo.owner_name)
            .await?
            .context("repository without owner")?;
        let mut index_problems = Vec::new();
        if repo.built_gen < repo.wanted_gen {
            index_problems.push(format!(
                "{place}: index generation {} is behind the data ({})",
                repo.built_gen, repo.wanted_gen
            ));
        }
        // Indexes updated in place are compressed in other pieces than a fresh render:
        // what must match is the signatures (by every active key of the owner, in the
        // order a fresh render has them) and the content.
        let keys = state.keys.key_set(&owner).await?;
        let public_keys = keys
            .keys()
            .iter()
            .map(|key| Ok((key.key_name().to_string(), key.public_key_pem()?)))
            .collect::<anyhow::Result<Vec<(String, String)>>>()?;
        let content = |signed: &[u8]| {
            let mut content = Vec::new();
            for (name, pem) in &public_keys {
                content = verified_content(signed, pem, name)?;
            }
            crate::apk::ApkResult::Ok(content)
        };
        let signed_by = |signed: &[u8]| {
            split_signed(signed).map(|(entries, _)| {
                entries
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<String>>()
            })
        };
        let (_, rendered, removed) = state.indexer.render(&owner, &repo, None).await?;
        for fresh in &rendered {
            let arch = &fresh.arch;
            let Some(served) = state.store.index(repo.id, arch).await? else {
                index_problems.push(format!("{place}/{arch}: index is missing"));
                continue;
            };
            let (expected, found) = (signed_by(&fresh.content)?, signed_by(&served.content));
            match content(&served.content) {
                Err(e) => index_problems
                    .push(format!("{place}/{arch}: served index does not verify: {e}")),
                Ok(_) if found.as_ref().ok() != Some(&expected) => index_problems.push(format!(
                    "{place}/{arch}: served index is signed by {}, not by the owner's \
                         active keys ({})",
                    found.map(|f| f.join(" ")).unwrap_or_default(),
                    expected.join(" ")
                )),
                Ok(served) if served != content(&fresh.content)? => index_problems.push(format!(
                    "{place}/{arch}: served index differs from a fresh render"
                )),
                Ok(_) => {}
            }
        }
        for arch in &removed {
            index_problems.push(format!(
                "{place}/{arch}: index is served but the architecture has no packages"
            ));
        }
        if repair && !index_problems.is_empty() {
            let generation = state.store.bump_generation(repo.id).await?;
            state.indexer.wait_built(&owner, &repo, generation).await?;
            report.repaired.push(format!("{place}: indexes rebuilt"));
        }
        report.problems.extend(index_problems);
    }

    // Younger unreferenced blobs may belong to uploads in progress.
    for blob in orphans(state, grace, repair).await? {
        report.problems.push(format!(
            "blob {} ({} bytes) is referenced by no package",
            blob.sha256, blob.size
        ));
        if repair {
            report
                .repaired
                .push(format!("blob {} removed", blob.sha256));
        }
    }

    for staged in state.blobs.list_staged().await? {
        // Younger ones may be uploads in progress.
        if staged.modified >= state.clock.now() - grace {
            continue;
        }
        let name = staged.name;
        report
            .problems
            .push(format!("temporary file {name} is left over"));
        if repair {
            state.blobs.remove_staged(&name).await?;
            report
                .repaired
                .push(format!("temporary file {name} removed"));
        }
    }
    Ok(report)
}
