//! Publishing and deleting packages, with their invariants in one place:
//!
//! - the blob is committed before its row is inserted, so a row never points at a
//!   missing blob (under `blob_lock` and the database's shared lock of the digest, so a
//!   delete or orphan collection, in this process or another instance, cannot collect it
//!   in between);
//! - an acknowledged change is in the signed index before the call returns (it waits for
//!   the generation its row created);
//! - a delete leaves the blob to orphan collection, which keeps it for
//!   `storage.orphan_grace_secs` after its last reference went (see `fsck::orphans`);
//! - when the database is unreachable the answer is 503, never an acknowledgement: before
//!   the row is committed nothing changed but a blob that orphan collection takes; after
//!   it, the package is recorded but its index lags, and is rebuilt by the next read of
//!   the index (or at start);
//! - an upload of a file that is stored already changes nothing (its row is refused, and
//!   with it the generation bump). With the very same bytes it is a retry of the upload
//!   that stored it (whose answer was lost): once the index lists the stored file it is
//!   answered as `repositories.identical_reupload` says, a conflict that says so or an
//!   acceptance; other bytes are a conflict.

use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::apk::package::parse_package;
use crate::blob::Staged;
use crate::config::IdenticalReupload;
use crate::error::{AppError, AppResult};
use crate::indexer::is_removed;
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::{self, Actor};
use crate::registry::repositories::missing_for_upload;
pub use crate::registry::upload_slots::Uploader;
use crate::store::{AuditEntry, LockMode, NewPackage, Owner, Package, StoreError};
use crate::AppState;

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Published {
    pub package: Package,
    /// Whether this publish created the repository (`repositories.auto_create`).
    pub repository_created: bool,
    /// The file was stored already with these very bytes, and nothing changed
    /// (`repositories.identical_reupload = "accept"`); `package` is the stored one.
    pub identical: bool,
    /// The dependencies nothing provides, when the dependency check is `warn`.
    pub warnings: Vec<String>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub package: Package,
    /// What the packages left behind depend on that nothing provides any more, when the
    /// dependency check is `warn`.
    pub warnings: Vec<String>,
}

/// A received body, staged in blob storage; its staged file is removed when dropped
/// unless committed.
struct Received {
    staged: Staged,
    sha256: String,
    size: u64,
}

fn too_large(limit: u64) -> AppError {
    AppError::PayloadTooLarge(format!(
        "package exceeds the upload limit of {limit} bytes (limits.max_upload_bytes)"
    ))
}

/// Refuses an upload before its body is read: a declared length over the limit, or a
/// repository that does not exist while `repositories.auto_create` is off.
pub async fn precheck(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    declared_len: Option<u64>,
) -> AppResult<()> {
    let limit = state.config.limits.max_upload_bytes;
    let repository = state
        .store
        .repository(&crate::registry::repo_ref(owner.id, at))
        .await?;
    match repository {
        None if !state.config.repositories.auto_create => return Err(missing_for_upload(at)),
        Some(repository) => {
            crate::registry::remote::refuse_into(state, &repository, at, "uploads").await?
        }
        None => {}
    }
    if declared_len.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Streams the body into a staged upload while hashing it, never holding it in memory.
async fn receive<S, E>(state: &AppState, mut body: S) -> AppResult<Received>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limit = state.config.limits.max_upload_bytes;
    let mut staged = state.blobs.stage().await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| AppError::BadRequest(format!("the upload was interrupted: {e}")))?;
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&chunk);
        staged.write_all(&chunk).await.context("writing upload")?;
    }
    if size == 0 {
        return Err(AppError::BadRequest(
            "empty body: send the .apk file as the request body (curl --upload-file)".into(),
        ));
    }
    // Read back by the parser through its path.
    staged.flush().await.context("writing upload")?;
    Ok(Received {
        staged,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Publishes the `.apk` in `body` into the repository `at` of `owner` (whose write right
/// the caller has checked), sent by `uploader`. Returns once the package's signed index is
/// served.
pub async fn publish<S, E>(
    state: &AppState,
    actor: &Actor,
    uploader: Uploader,
    owner: &Owner,
    at: &RepoAddress,
    declared_len: Option<u64>,
    body: S,
) -> AppResult<Published>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let result = publish_counted(state, actor, uploader, owner, at, declared_len, body).await;
    count(
        &state.metrics.publishes,
        &state.metrics.publish_duration,
        &result,
        started,
    );
    result
}

/// Counts a publish, delete or copy by how it ended.
pub(crate) fn count<T>(
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::OutcomeLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    duration: &prometheus_client::metrics::histogram::Histogram,
    result: &AppResult<T>,
    started: std::time::Instant,
) {
    let status = match result {
        Ok(_) => 200,
        Err(e) => e.status().as_u16(),
    };
    crate::metrics::Metrics::change(family, duration, status, started.elapsed());
}

async fn publish_counted<S, E>(
    state: &AppState,
    actor: &Actor,
    uploader: Uploader,
    owner: &Owner,
    at: &RepoAddress,
    declared_len: Option<u64>,
    body: S,
) -> AppResult<Published>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    precheck(state, owner, at, declared_len).await?;
    // Receiving and checking an upload costs a staged file, buffers and a parse: the
    // number of uploads at that stage is capped, and the parses in them run at most one
    // per core. The slot is released before the publish, whose waits are cheap and
    // coalesce best when many run together.
    let upload_slot = state.uploads.take(uploader)?;
    let received = receive(state, body).await?;
    let limits = state.config.apk_limits();
    let file_path = received.staged.path().to_path_buf();
    let parse_slot = state
        .parses
        .clone()
        .acquire_owned()
        .await
        .context("parse slots closed")?;
    let parsed = tokio::task::spawn_blocking(move || {
        let _parse_slot = parse_slot;
        let file = std::fs::File::open(&file_path).context("opening upload")?;
        Ok::<_, AppError>(parse_package(std::io::BufReader::new(file), &limits)?)
    })
    .await
    .context("package parser task")??;
    drop(upload_slot);
    crate::registry::keyring::refuse_name(state, owner, &parsed.info.pkgname).await?;
    // Refused here, nothing is stored: the staged file goes with `received`.
    let warnings =
        crate::registry::dependencies::check_upload(state, owner, at, &parsed.info).await?;
    let info = &parsed.info;
    let new_package = NewPackage {
        arch: info.arch.clone(),
        name: info.pkgname.clone(),
        version: info.pkgver.clone(),
        filename: format!("{}-{}.apk", info.pkgname, info.pkgver),
        checksum: parsed.checksum.clone(),
        sha256: received.sha256.clone(),
        size: received.size as i64,
        stanza: parsed.stanza.clone(),
    };
    // Nothing of the parse is needed past this point; waiting publishes hold only the row.
    drop(parsed);
    let mut entry = actor.entry(
        state,
        "package.publish",
        Some(owner),
        audit::file_target(at, &new_package.arch, &new_package.filename),
        json!({ "sha256": new_package.sha256, "size": new_package.size }),
    );
    if !warnings.is_empty() {
        entry.outcome = "warned".into();
    }
    let mut published = record(
        state,
        owner,
        at,
        new_package,
        Content::Staged(received.staged),
        &entry,
    )
    .await?;
    if !published.identical {
        published.warnings = warnings;
    }
    if published.repository_created {
        crate::registry::keyring::add_to(state, owner, at).await?;
    }
    Ok(published)
}

/// Where the file of a package to record is.
pub(crate) enum Content {
    /// Received by an upload, committed to blob storage under its digest here.
    Staged(Staged),
    /// Stored already under its digest, for the row of another package (a copy).
    Stored,
}

/// Records `new_package` in the repository `at` of `owner`, its file first: the one path of
/// uploads and copies from blob to row to the signed index. Returns once the index lists
/// the package; a file stored there already answers as an upload of it does.
pub(crate) async fn record(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    new_package: NewPackage,
    content: Content,
    entry: &AuditEntry,
) -> AppResult<Published> {
    let sha256 = new_package.sha256.clone();
    let repo_ref = crate::registry::repo_ref(owner.id, at);
    let (arch, filename) = (new_package.arch.clone(), new_package.filename.clone());
    // Blob first, then the row. Without auto_create, a repository removed since the
    // precheck is not created again: the blob is then left to orphan collection, as
    // after a 409.
    let auto_create = state.config.repositories.auto_create;
    let inserted = {
        let _blob_guard = state.blob_lock.read().await;
        let _instances = state.store.lock_blob(&sha256, LockMode::Shared).await?;
        match content {
            Content::Staged(staged) => state.blobs.commit(staged, &sha256).await?,
            // The row that stored it may go meanwhile: under these locks orphan collection
            // cannot take the file between this look and the new row.
            Content::Stored => {
                state.blobs.size(&sha256).await?;
            }
        }
        state
            .store
            .insert_package(&repo_ref, new_package, auto_create, Some(entry))
            .await
    };
    let inserted = match inserted {
        Ok(inserted) => inserted,
        Err(StoreError::NotFound(_)) => return Err(missing_for_upload(at)),
        // Looked for only now, the locks above released: uploads that conflict are rare,
        // and a look before every insert would cost all the others a query.
        Err(StoreError::Conflict(message)) => {
            return match state
                .store
                .find_package(&repo_ref, &arch, &filename)
                .await?
            {
                Some(stored) if stored.sha256 == sha256 => {
                    identical(state, owner, at, stored).await
                }
                Some(stored) if stored.arch == arch => Err(exists(
                    format!(
                        "{arch}/{filename} already exists with other content (sha256 {}); \
                         delete it before uploading it again",
                        stored.sha256
                    ),
                    None,
                )),
                _ => Err(exists(message, None)),
            };
        }
        Err(other) => return Err(other.into()),
    };

    let recorded = std::time::Instant::now();
    let package = inserted.package;
    // By id: a repository removed and created again under the same name is another one.
    let removed = || removed_while_publishing(at, &package);
    let repo = state
        .store
        .repository_by_id(package.repository_id)
        .await
        .map_err(|e| recorded_not_listed(e.into(), &package))?
        .ok_or_else(removed)?;
    state
        .indexer
        .wait_built(owner, &repo, inserted.generation)
        .await
        .map_err(|e| {
            if is_removed(&e) {
                removed()
            } else {
                recorded_not_listed(e.into(), &package)
            }
        })?;
    // The change's webhook events are due, and those of its index.
    state.webhooks.wake();
    state
        .metrics
        .publish_to_index
        .observe(recorded.elapsed().as_secs_f64());
    tracing::info!(
        owner = %at.owner, branch = %at.branch, repository = %at.repository,
        file = %format!("{}/{}", package.arch, package.filename), "package published"
    );
    crate::registry::retention::after_publish(state, owner, package.repository_id);
    Ok(Published {
        package,
        repository_created: inserted.repository_created,
        identical: false,
        warnings: Vec::new(),
    })
}

fn exists(message: String, identical: Option<Package>) -> AppError {
    AppError::Exists(Box::new(crate::error::Exists {
        message,
        identical,
        answer: serde_json::Map::new(),
    }))
}

/// An upload of the very bytes stored under its name: a retry of the upload that stored
/// them. Nothing is stored; once the index lists the stored file (the upload that stored
/// it may have ended before it did) the answer is an acceptance or a conflict, as
/// `repositories.identical_reupload` says.
async fn identical(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    stored: Package,
) -> AppResult<Published> {
    let repo = state
        .store
        .repository_by_id(stored.repository_id)
        .await?
        .ok_or_else(|| removed_while_publishing(at, &stored))?;
    // Every generation committed so far covers the stored row; an index that is current
    // returns at once, without a build.
    state
        .indexer
        .wait_built(owner, &repo, repo.wanted_gen)
        .await
        .map_err(|e| {
            if is_removed(&e) {
                removed_while_publishing(at, &stored)
            } else {
                e.into()
            }
        })?;
    let file = format!("{}/{}", stored.arch, stored.filename);
    match state.config.repositories.identical_reupload {
        IdenticalReupload::Accept => {
            tracing::info!(
                owner = %at.owner, branch = %at.branch, repository = %at.repository,
                file = %file, "identical upload accepted: nothing changed"
            );
            Ok(Published {
                package: stored,
                repository_created: false,
                identical: true,
                warnings: Vec::new(),
            })
        }
        IdenticalReupload::Conflict => Err(exists(
            format!(
                "{file} is already stored with these very bytes (sha256 {}): nothing needs \
                 doing, the package is published",
                stored.sha256
            ),
            Some(stored),
        )),
    }
}

/// The repository went while `package` was being published into it.
fn removed_while_publishing(at: &RepoAddress, package: &Package) -> AppError {
    AppError::NotFound(format!(
        "repository {at} was removed while {}/{} was being published: the package is not \
         served",
        package.arch, package.filename
    ))
}

/// An outage between the row's commit and its index: the answer stays 503, saying what
/// the client will find once the database is back.
fn recorded_not_listed(err: AppError, package: &Package) -> AppError {
    match err {
        AppError::BackendUnavailable { cause, .. } => AppError::BackendUnavailable {
            message: format!(
                "the database became unreachable after {}/{} was recorded, before the index \
                 listing it was published: it will be listed once the database is back; \
                 it is recorded, so uploading it again says that it is stored already",
                package.arch, package.filename
            ),
            cause,
        },
        other => other,
    }
}

fn no_such_file(at: &RepoAddress, arch: &Arch, file: &PackageFile) -> AppError {
    AppError::NotFound(format!("{at}/{arch}/{file} not found"))
}

/// The package served at `at`/`arch`/`file` (a noarch package under every architecture).
pub async fn find(
    state: &AppState,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
) -> AppResult<Package> {
    state
        .store
        .find_package(
            &crate::registry::repo_ref(owner.id, at),
            arch.as_str(),
            file.as_str(),
        )
        .await?
        .ok_or_else(|| no_such_file(at, arch, file))
}

/// Why a package is deleted, as its audit log entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Asked for (a DELETE, the web page, a command).
    Request,
    /// The source of a move.
    Move,
    /// A retention rule.
    Retention,
    /// An earlier version of the owner's keyring package, or the keyring switched off.
    Keyring,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Request => "request",
            DeleteReason::Move => "move",
            DeleteReason::Retention => "retention",
            DeleteReason::Keyring => "keyring",
        }
    }
}

/// Deletes the package at `at`/`arch`/`file` (whose write right the caller has checked).
/// Returns once the index no longer lists it; its blob is left to orphan collection.
pub async fn delete(
    state: &AppState,
    actor: &Actor,
    reason: DeleteReason,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
) -> AppResult<Package> {
    let started = std::time::Instant::now();
    let result = delete_counted(state, actor, reason, owner, at, arch, file).await;
    count(
        &state.metrics.deletes,
        &state.metrics.delete_duration,
        &result,
        started,
    );
    result
}

/// Deletes like [`delete`], after the dependency check of the repository: refused when it
/// is `refuse` and packages left behind depend on what only this one provides; with
/// `warn`, deleted and those named.
pub async fn delete_checked(
    state: &AppState,
    actor: &Actor,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
) -> AppResult<Deleted> {
    let started = std::time::Instant::now();
    // A file that is not there, or a refusal of the check, counts as a delete refused.
    let checked = async {
        crate::registry::remote::refuse_changes(state, owner, at, "deletes").await?;
        let package = find(state, owner, at, arch, file).await?;
        crate::registry::dependencies::check_delete(state, owner, at, &package).await
    };
    let warnings = match checked.await {
        Ok(warnings) => warnings,
        Err(refused) => {
            let refused = Err(refused);
            count(
                &state.metrics.deletes,
                &state.metrics.delete_duration,
                &refused,
                started,
            );
            return refused;
        }
    };
    let package = delete(state, actor, DeleteReason::Request, owner, at, arch, file).await?;
    Ok(Deleted { package, warnings })
}

async fn delete_counted(
    state: &AppState,
    actor: &Actor,
    reason: DeleteReason,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
) -> AppResult<Package> {
    let entry = actor.entry(
        state,
        "package.delete",
        Some(owner),
        audit::file_target(at, arch.as_str(), file.as_str()),
        json!({ "reason": reason.as_str() }),
    );
    let (package, generation) = state
        .store
        .delete_package(
            &crate::registry::repo_ref(owner.id, at),
            arch.as_str(),
            file.as_str(),
            Some(&entry),
        )
        .await?
        .ok_or_else(|| no_such_file(at, arch, file))?;
    // A repository removed meanwhile took the package and its indexes with it.
    if let Some(repo) = state.store.repository_by_id(package.repository_id).await? {
        match state.indexer.wait_built(owner, &repo, generation).await {
            Err(e) if !is_removed(&e) => return Err(e.into()),
            _ => {}
        }
    }
    state.webhooks.wake();
    tracing::info!(
        owner = %at.owner, branch = %at.branch, repository = %at.repository,
        file = %format!("{}/{}", package.arch, package.filename), "package deleted"
    );
    Ok(package)
}
