//! Packages: upload (PUT), download (GET/HEAD) and delete.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Serialize;

use super::api::{ErrorBody, FileBytes};
use super::conditional::{Entity, Plan, Preconditions, Ranges};
use super::indexes::cache_control;
use super::ready;
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::http::client::Client;
use crate::names::{Arch, FileAddress, PackageFile, RepoAddress, RepoFile, View};
use crate::registry::audit::Actor;
use crate::registry::publish;
use crate::store::{Package, Role};
use crate::AppState;

/// What a successful upload answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// The package's dependencies that nothing provides, when the repository's dependency
    /// check is `warn` (each also sent as an `X-Alpine-Registry-Warning` header).
    pub warnings: Vec<String>,
}

/// The header that repeats each warning of an answer, for clients that show headers only.
pub const WARNING_HEADER: &str = "x-alpine-registry-warning";

/// One `X-Alpine-Registry-Warning` header per warning (those that are no valid header
/// value are left to the body).
fn warning_headers(warnings: &[String]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for warning in warnings {
        if let Ok(value) = axum::http::HeaderValue::from_str(warning) {
            headers.append(WARNING_HEADER, value);
        }
    }
    headers
}

impl Uploaded {
    /// `package` in `at` as an upload answers it, its URL under `base_url`.
    pub(crate) fn new(
        at: &RepoAddress,
        package: Package,
        base_url: &str,
        repository_created: bool,
    ) -> Self {
        let path = format!("/{at}/{}/{}", package.arch, package.filename);
        Uploaded {
            owner: at.owner.to_string(),
            branch: at.branch.to_string(),
            repository: at.repository.to_string(),
            name: package.name,
            version: package.version,
            arch: package.arch,
            checksum: package.checksum,
            sha256: package.sha256,
            size: package.size,
            url: format!("{base_url}{path}"),
            path,
            repository_created,
            warnings: Vec::new(),
        }
    }
}

/// Publishes a package: the `.apk` (apk v2) as the body. Answers 201 once the signed
/// index of its architecture (of every architecture, for a noarch package) lists it; for a
/// file stored already with the same bytes, 200 or a 409 that describes it
/// (`repositories.identical_reupload`), in the words of the 201 that stored it.
#[utoipa::path(put, path = "/{owner}/{branch}/{repository}", tag = "apk",
    operation_id = "upload_package",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A repository, such as main")),
    request_body(content = FileBytes, content_type = "application/octet-stream",
        description = "The .apk file"),
    responses(
        (status = 200, body = Uploaded,
            description = "These very bytes are stored under this name already, and \
                           repositories.identical_reupload is accept: the answer of the \
                           upload that stored them"),
        (status = 201, body = Uploaded,
            description = "Published; with the dependency check at warn, `warnings` (and an \
                           X-Alpine-Registry-Warning header each) name the dependencies \
                           nothing provides",
            headers(("X-Alpine-Registry-Warning" = String,
                description = "An unsatisfied dependency (repeated, one per warning)"))),
        (status = 400, body = ErrorBody,
            description = "A malformed package, an invalid name in it or in the path, an empty \
                           body"),
        (status = 401, description = "No credentials, or bad ones", body = ErrorBody),
        (status = 403, description = "Credentials without write access to this owner",
            body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such owner, or no such repository while repositories.auto_create \
                           is off"),
        (status = 405, body = ErrorBody,
            description = "A remote or virtual repository, or a view of one's history \
                           (REPOSITORY@...): they take no uploads"),
        (status = 409, body = ErrorBody,
            description = "The same name and version is already in the repository (the body \
                           says whether its bytes are the upload's, \"identical\", and \
                           describes the stored file)"),
        (status = 413, description = "Over limits.max_upload_bytes", body = ErrorBody),
        (status = 422, body = ErrorBody,
            description = "The dependency check of the repository is refuse and a dependency \
                           is provided by nothing in the owner's repositories of the branch \
                           or the dependency sources (listed in `unsatisfied`); nothing is \
                           stored"),
        (status = 408, body = ErrorBody,
            description = "The body sent nothing for server.body_idle_timeout_secs"),
        (status = 415, description = "An apk v3 package: only v2 packages are taken",
            body = ErrorBody),
        (status = 429, body = ErrorBody,
            description = "This user has limits.max_concurrent_uploads_per_user uploads in \
                           progress already, or too many failed authentication attempts from \
                           this address"),
        (status = 503, body = ErrorBody,
            description = "More uploads at once than limits.max_concurrent_uploads, or the \
                           database or blob storage is unreachable"),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    identity: Identity,
    at: RepoAddress,
    uri: axum::http::Uri,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, HeaderMap, Json<Uploaded>)> {
    let owner = super::authorize(&state, &identity, &at.owner, Role::Write).await?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let base_url = super::origin::base_url(
        &state.config,
        &super::origin::Origin {
            headers: &headers,
            uri: &uri,
            peer: extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        },
    );
    let uploader = match &identity {
        Identity::User(principal) => publish::Uploader::User(principal.user.id),
        Identity::Anonymous => publish::Uploader::Address(
            super::client::ClientAddr::of(&extensions)
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
        ),
    };
    let actor = Actor::of(&identity, super::client::ClientAddr::of(&extensions));
    let body = body.into_data_stream();
    match publish::publish(&state, &actor, uploader, &owner, &at, declared, body).await {
        Ok(published) => {
            let status = if published.identical {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut answer = Uploaded::new(
                &at,
                published.package,
                &base_url,
                published.repository_created,
            );
            answer.warnings = published.warnings;
            Ok((status, warning_headers(&answer.warnings), Json(answer)))
        }
        Err(other) => Err(describe_stored(other, &at, &base_url)),
    }
}

/// A 409 for a file stored in `at` already, with the stored file described as the upload
/// that stored it was answered, when its bytes are identical; any other error as it is.
pub(crate) fn describe_stored(err: AppError, at: &RepoAddress, base_url: &str) -> AppError {
    let AppError::Exists(mut exists) = err else {
        return err;
    };
    if let Some(stored) = &exists.identical {
        let answer = Uploaded::new(at, stored.clone(), base_url, false);
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(answer) {
            exists.answer = fields;
        }
    }
    AppError::Exists(exists)
}

/// A package file; a noarch package is served under every architecture.
#[utoipa::path(method(get, head), path = "/{owner}/{branch}/{repository}/{arch}/{file}",
    tag = "apk", operation_id = "get_package",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A repository, such as main"),
        ("arch" = String, Path, description = "An architecture, such as x86_64"),
        ("file" = String, Path, description = "{name}-{version}.apk"),
        Preconditions, Ranges),
    responses(
        (status = 200, description = "The package", content_type = "application/octet-stream",
            body = FileBytes,
            headers(("ETag" = String, description = "\"<sha256 of the file>\""),
                ("Last-Modified" = String), ("Accept-Ranges" = String),
                ("Cache-Control" = String))),
        (status = 206, description = "The range asked for (GET only)",
            content_type = "application/octet-stream", body = FileBytes,
            headers(("Content-Range" = String, description = "bytes <first>-<last>/<size>"),
                ("ETag" = String))),
        (status = 304, description = "Not modified since the copy the validators name",
            headers(("ETag" = String), ("Last-Modified" = String))),
        (status = 400, body = ErrorBody,
            description = "Invalid owner, branch, repository, architecture or file name"),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, description = "No such package file", body = ErrorBody),
        (status = 412, description = "If-Match or If-Unmodified-Since does not hold",
            body = ErrorBody),
        (status = 416, description = "No requested range is satisfiable (GET only)",
            body = ErrorBody,
            headers(("Content-Range" = String, description = "bytes */<size>"))),
    ))]
#[allow(clippy::too_many_arguments)]
pub async fn download(
    state: &AppState,
    identity: &Identity,
    at: &RepoAddress,
    view: Option<&View>,
    arch: &Arch,
    file: &PackageFile,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let owner = super::authorize(state, identity, &at.owner, Role::Read).await?;
    if view.is_some() {
        return super::remote::package(
            state, identity, &owner, at, view, arch, file, method, headers,
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no repository {at}")));
    }
    let package = match publish::find(state, &owner, at, arch, file).await {
        Ok(package) => package,
        // The files of remote and virtual repositories are not package rows.
        Err(AppError::NotFound(message)) => {
            return match super::remote::package(
                state, identity, &owner, at, None, arch, file, method, headers,
            )
            .await?
            {
                Some(response) => Ok(response),
                None => Err(AppError::NotFound(message)),
            };
        }
        Err(other) => return Err(other),
    };
    let entity = Entity {
        etag: format!("\"{}\"", package.sha256),
        modified_ms: package.modified_ms,
        size: package.size as u64,
    };
    serve_blob(
        state,
        identity,
        &owner,
        &entity,
        &package.sha256,
        method,
        headers,
    )
    .await
}

/// A moment of a remote or virtual repository's history: at a time (RFC 3339, any
/// offset) or a snapshot's name, `APKINDEX.tar.gz` and `Packages.adb` list what the
/// repository listed then (signed with the owner's keys of now), and each package file
/// they list is served, also after upstream or the member dropped it. Read only: PUT and
/// DELETE answer 405.
#[utoipa::path(method(get, head), path = "/{owner}/{branch}/{repository}@{view}/{arch}/{file}",
    tag = "apk", operation_id = "get_view_file",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A remote or virtual repository"),
        ("view" = String, Path,
            description = "A time such as 2026-12-01T00:00:00Z, or a snapshot's name"),
        ("arch" = String, Path, description = "An architecture, such as x86_64"),
        ("file" = String, Path,
            description = "APKINDEX.tar.gz, Packages.adb or {name}-{version}.apk"),
        Preconditions, Ranges),
    responses(
        (status = 200, description = "The index or the package",
            content_type = "application/octet-stream", body = FileBytes,
            headers(("ETag" = String), ("Last-Modified" = String),
                ("Cache-Control" = String))),
        (status = 206, description = "The range of a package asked for (GET only)",
            content_type = "application/octet-stream", body = FileBytes,
            headers(("Content-Range" = String), ("ETag" = String))),
        (status = 304, description = "Not modified since the copy the validators name",
            headers(("ETag" = String), ("Last-Modified" = String))),
        (status = 400, body = ErrorBody,
            description = "Invalid names, a view that is neither a time nor a snapshot name, \
                           a time in the future, or a hosted repository (which keeps no \
                           history)"),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such repository or snapshot; nothing of that architecture \
                           served by then; a file not listed then, or never cached and no \
                           longer listed upstream; no Packages.adb for entries it cannot hold"),
        (status = 412, description = "If-Match or If-Unmodified-Since does not hold",
            body = ErrorBody),
        (status = 416, description = "No requested range is satisfiable (GET only)",
            body = ErrorBody,
            headers(("Content-Range" = String, description = "bytes */<size>"))),
        (status = 502, body = ErrorBody,
            description = "A file of a remote repository that its upstream cannot give now"),
    ))]
#[allow(dead_code)] // documents the shared file route (`download` and `indexes::get`)
pub(crate) async fn get_view() {}

/// Answers a download of the blob `sha256` as `entity`: ranges, conditions and all.
pub(super) async fn serve_blob(
    state: &AppState,
    identity: &Identity,
    owner: &crate::store::Owner,
    entity: &Entity,
    sha256: &str,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let builder = Response::builder()
        .header(header::ETAG, &entity.etag)
        .header(header::LAST_MODIFIED, entity.last_modified_http())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, cache_control(owner.is_private));
    let (status, start, len) = match entity.plan(method, headers) {
        Plan::NotModified => {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(|e| AppError::Internal(e.into()));
        }
        Plan::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(entity.size)),
        Plan::PreconditionFailed => return Err(super::conditional::precondition_failed()),
        Plan::Full => (StatusCode::OK, 0, entity.size),
        Plan::Partial { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
    };
    let small = state
        .small_files
        .get(state.blobs.as_ref(), sha256, entity.size)
        .await?;
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
    let (body, whole) = match small {
        Some(bytes) => {
            let bytes = bytes.slice(start as usize..(start + len) as usize);
            (Body::from(bytes.clone()), Some(bytes))
        }
        None => {
            let blob = state.blobs.open_range(sha256, start, len).await?;
            match blob.bytes {
                Some(bytes) => (Body::from(bytes.clone()), Some(bytes)),
                None => (
                    Body::from_stream(super::chunks::Chunks::new(
                        blob.body,
                        len,
                        state.download_buffers.clone(),
                    )),
                    None,
                ),
            }
        }
    };
    let mut response = builder
        .body(body)
        .map_err(|e| AppError::Internal(e.into()))?;
    if let Some(bytes) = whole {
        ready::mark(&mut response, identity, owner, entity, bytes);
    }
    Ok(response)
}

/// Deletes a package file (a noarch one through any architecture). When it answers 204
/// the index no longer lists the package.
#[utoipa::path(delete, path = "/{owner}/{branch}/{repository}/{arch}/{file}", tag = "apk",
    operation_id = "delete_package",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A repository, such as main"),
        ("arch" = String, Path, description = "An architecture, such as x86_64"),
        ("file" = String, Path, description = "{name}-{version}.apk")),
    responses(
        (status = 204, description = "Deleted, and gone from the index",
            headers(("X-Alpine-Registry-Warning" = String,
                description = "With the dependency check at warn: a package left behind \
                               that depends on what only the deleted one provided (one per \
                               such dependency)"))),
        (status = 400, body = ErrorBody,
            description = "Invalid owner, branch, repository, architecture or file name"),
        (status = 401, description = "No credentials, or bad ones", body = ErrorBody),
        (status = 403, description = "Credentials without write access to this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner or package file", body = ErrorBody),
        (status = 405, body = ErrorBody,
            description = "A remote or virtual repository, or a view of one's history: they \
                           take no deletes"),
        (status = 422, body = ErrorBody,
            description = "The dependency check of the repository is refuse and packages of \
                           the repository depend on what only this one provides (listed in \
                           `unsatisfied`); nothing is deleted"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    at: FileAddress,
) -> AppResult<(StatusCode, HeaderMap)> {
    if let Some(view) = &at.at {
        return Err(super::paths::read_only_view(&at.repo, view));
    }
    let RepoFile::Package(file) = &at.file else {
        return Err(AppError::BadRequest(format!(
            "{at} cannot be deleted: delete packages, and the index follows"
        )));
    };
    let owner = super::authorize(&state, &identity, &at.repo.owner, Role::Write).await?;
    let actor = Actor::of(&identity, client);
    let deleted = publish::delete_checked(&state, &actor, &owner, &at.repo, &at.arch, file).await?;
    Ok((StatusCode::NO_CONTENT, warning_headers(&deleted.warnings)))
}
