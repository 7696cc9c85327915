//! Packages: upload (PUT), download (GET/HEAD) and delete.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::conditional::{Entity, Plan};
use super::indexes::cache_control;
use super::FilePath;
use crate::apk::package::parse_package;
use crate::auth::Identity;
use crate::blob::Staged;
use crate::error::{AppError, AppResult};
use crate::indexer::is_removed;
use crate::names::{Arch, BranchName, OwnerName, PackageFile, RepoName};
use crate::registry::repositories::missing_for_upload;
use crate::store::{NewPackage, RepoRef, Role, StoreError};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct RepoPath {
    pub owner: String,
    pub branch: String,
    pub repository: String,
}

/// What a successful upload answers.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The `C:` identity in the index.
    pub checksum: String,
    pub sha256: String,
    pub size: i64,
    /// Download path, relative to the registry's root.
    pub path: String,
    pub url: String,
    /// Whether this upload created the repository (`repositories.auto_create`).
    pub repository_created: bool,
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

/// Streams the body into a staged upload while hashing it, never holding it in memory.
async fn receive(state: &AppState, body: Body) -> AppResult<Received> {
    let limit = state.config.limits.max_upload_bytes;
    let mut staged = state.blobs.stage().await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
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

/// `PUT /{owner}/{branch}/{repository}` with the `.apk` as body.
pub async fn upload(
    State(state): State<AppState>,
    identity: Identity,
    Path(path): Path<RepoPath>,
    uri: axum::http::Uri,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, Json<Uploaded>)> {
    let owner_name = OwnerName::parse(&path.owner)?;
    let branch = BranchName::parse(&path.branch)?;
    let repository = RepoName::parse(&path.repository)?;
    let owner = super::authorize(&state, &identity, &owner_name, Role::Write).await?;
    let repo_ref = RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    let auto_create = state.config.repositories.auto_create;
    // Refused before the body is received; the insert decides again in its transaction.
    if !auto_create && state.store.repository(&repo_ref).await?.is_none() {
        return Err(missing_for_upload(&owner_name, &branch, &repository));
    }
    let limit = state.config.limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }

    // Receiving and checking an upload costs a temporary file, buffers and a parse: the
    // number of uploads at that stage is capped, and the parses in them run at most one
    // per core. The slot is released before the publish, whose waits are cheap and
    // coalesce best when many run together.
    let upload_slot =
        state
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::Overloaded {
                message: format!(
                    "too many uploads in progress (limits.max_concurrent_uploads = {}): retry \
                 shortly",
                    state.config.limits.max_concurrent_uploads
                ),
                retry_after: 1,
            })?;
    let received = receive(&state, body).await?;
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
    let info = &parsed.info;
    let filename = format!("{}-{}.apk", info.pkgname, info.pkgver);
    let new_package = NewPackage {
        arch: info.arch.clone(),
        name: info.pkgname.clone(),
        version: info.pkgver.clone(),
        filename: filename.clone(),
        checksum: parsed.checksum.clone(),
        sha256: received.sha256.clone(),
        size: received.size as i64,
        stanza: parsed.stanza.clone(),
    };
    // Nothing of the parse is needed past this point; waiting publishes hold only the row.
    drop(parsed);

    // Blob first, then the row: a row never points at a missing blob. The read guard
    // keeps a concurrent delete from collecting the blob before the row exists.
    // Without auto_create, a repository removed since the check above is not created
    // again: the blob is then left to orphan collection, as after a 409.
    let inserted = {
        let _blob_guard = state.blob_lock.read().await;
        state
            .blobs
            .commit(received.staged, &received.sha256)
            .await?;
        state
            .store
            .insert_package(&repo_ref, new_package, auto_create)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => missing_for_upload(&owner_name, &branch, &repository),
                other => other.into(),
            })?
    };

    let package = inserted.package;
    // By id: a repository removed and created again under the same name is another one.
    let removed = || {
        AppError::NotFound(format!(
            "repository {owner_name}/{branch}/{repository} was removed while {}/{} was being \
             published: the package is not served",
            package.arch, package.filename
        ))
    };
    let repo = state
        .store
        .repository_by_id(package.repository_id)
        .await?
        .ok_or_else(removed)?;
    state
        .indexer
        .wait_built(&owner, &repo, inserted.generation)
        .await
        .map_err(|e| if is_removed(&e) { removed() } else { e.into() })?;
    tracing::info!(
        owner = %owner_name, branch = %branch, repository = %repository,
        file = %format!("{}/{}", package.arch, package.filename), "package published"
    );

    let path = format!(
        "/{owner_name}/{branch}/{repository}/{}/{}",
        package.arch, package.filename
    );
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            owner: owner_name.to_string(),
            branch: branch.to_string(),
            repository: repository.to_string(),
            name: package.name,
            version: package.version,
            arch: package.arch,
            checksum: package.checksum,
            sha256: package.sha256,
            size: package.size,
            url: format!(
                "{}{path}",
                super::origin::base_url(
                    &state.config,
                    &super::origin::Origin {
                        headers: &headers,
                        uri: &uri,
                        peer: extensions
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|info| info.0.ip()),
                    }
                )
            ),
            path,
            repository_created: inserted.repository_created,
        }),
    ))
}

/// Read size for downloads: large enough that file reads (each a trip to the blocking
/// pool) do not dominate.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

struct FileRef {
    owner: OwnerName,
    repo: RepoRef,
    arch: Arch,
    file: PackageFile,
}

async fn resolve(
    state: &AppState,
    identity: &Identity,
    path: &FilePath,
    need: Role,
) -> AppResult<(crate::store::Owner, FileRef)> {
    let owner_name = OwnerName::parse(&path.owner)?;
    let branch = BranchName::parse(&path.branch)?;
    let repository = RepoName::parse(&path.repository)?;
    let arch = Arch::parse(&path.arch)?;
    let file = PackageFile::parse(&path.file)?;
    let owner = super::authorize(state, identity, &owner_name, need).await?;
    let repo = RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    Ok((
        owner,
        FileRef {
            owner: owner_name,
            repo,
            arch,
            file,
        },
    ))
}

fn no_such_file(r: &FileRef) -> AppError {
    AppError::NotFound(format!(
        "{}/{}/{}/{}/{} not found",
        r.owner, r.repo.branch, r.repo.repository, r.arch, r.file
    ))
}

/// `GET`/`HEAD /{owner}/{branch}/{repository}/{arch}/{name}-{version}.apk`; a noarch
/// package is served under every architecture.
pub async fn download(
    State(state): State<AppState>,
    identity: Identity,
    Path(path): Path<FilePath>,
    method: Method,
    headers: HeaderMap,
) -> AppResult<Response> {
    let (owner, r) = resolve(&state, &identity, &path, Role::Read).await?;
    let package = state
        .store
        .find_package(&r.repo, r.arch.as_str(), r.file.as_str())
        .await?
        .ok_or_else(|| no_such_file(&r))?;
    let entity = Entity {
        etag: format!("\"{}\"", package.sha256),
        modified_ms: package.modified_ms,
        size: package.size as u64,
    };
    let builder = Response::builder()
        .header(header::ETAG, &entity.etag)
        .header(header::LAST_MODIFIED, entity.last_modified_http())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, cache_control(owner.is_private));
    let (status, start, len) = match entity.plan(&method, &headers) {
        Plan::NotModified => {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(|e| AppError::Internal(e.into()));
        }
        Plan::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(entity.size)),
        Plan::Full => (StatusCode::OK, 0, entity.size),
        Plan::Partial { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
    };
    let blob = state.blobs.open_range(&package.sha256, start, len).await?;
    let mut builder = builder
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len);
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, entity.size),
        );
    }
    builder
        .body(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(blob.body, DOWNLOAD_CHUNK),
        ))
        .map_err(|e| AppError::Internal(e.into()))
}

/// `DELETE /{owner}/{branch}/{repository}/{arch}/{name}-{version}.apk`. When it answers
/// 204 the index no longer lists the package.
pub async fn delete(
    State(state): State<AppState>,
    identity: Identity,
    Path(path): Path<FilePath>,
) -> AppResult<StatusCode> {
    let (owner, r) = resolve(&state, &identity, &path, Role::Write).await?;
    let (package, generation) = state
        .store
        .delete_package(&r.repo, r.arch.as_str(), r.file.as_str())
        .await?
        .ok_or_else(|| no_such_file(&r))?;
    // A repository removed meanwhile took the package and its indexes with it.
    if let Some(repo) = state.store.repository_by_id(package.repository_id).await? {
        match state.indexer.wait_built(&owner, &repo, generation).await {
            Err(e) if !is_removed(&e) => return Err(e.into()),
            _ => {}
        }
    }
    {
        let _blob_guard = state.blob_lock.write().await;
        if !state.store.blob_referenced(&package.sha256).await? {
            state.blobs.delete(&package.sha256).await?;
        }
    }
    tracing::info!(
        owner = %r.owner, branch = %r.repo.branch, repository = %r.repo.repository,
        file = %format!("{}/{}", package.arch, package.filename), "package deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}
