//! `GET /{owner}/{branch}/{repository}/{arch}/APKINDEX.tar.gz` and `.../Packages.adb`: the
//! signed indexes (apk v2 and apk v3), published together by one build.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use super::api::{ErrorBody, FileBytes};
use super::conditional::{Entity, Plan, Preconditions};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, RepoAddress, View};
use crate::registry::snapshots;
use crate::registry::virtuals::Kind;
use crate::store::Role;
use crate::AppState;

/// Which index of an architecture is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `APKINDEX.tar.gz`.
    V2,
    /// `Packages.adb`.
    Adb,
}

/// The signed `APKINDEX.tar.gz` of one architecture of a repository, as apk fetches it.
/// Served while the repository has packages of that architecture, or once it did; for any
/// Alpine architecture while it holds noarch packages or nothing at all.
#[utoipa::path(method(get, head),
    path = "/{owner}/{branch}/{repository}/{arch}/APKINDEX.tar.gz", tag = "apk",
    operation_id = "get_index",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A repository, such as main"),
        ("arch" = String, Path, description = "An architecture, such as x86_64"),
        Preconditions),
    responses(
        (status = 200, description = "The signed index", content_type = "application/gzip",
            body = FileBytes,
            headers(("ETag" = String, description = "\"<sha256 of the index>\""),
                ("Last-Modified" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified since the copy the validators name",
            headers(("ETag" = String), ("Last-Modified" = String))),
        (status = 400, description = "Invalid owner, branch, repository or architecture",
            body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such repository, or no index of that architecture"),
        (status = 412, description = "If-Match or If-Unmodified-Since does not hold",
            body = ErrorBody),
    ))]
#[allow(clippy::too_many_arguments)]
pub async fn get(
    state: &AppState,
    identity: &Identity,
    at: &RepoAddress,
    view: Option<&View>,
    arch: &Arch,
    which: Which,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let owner = super::authorize(state, identity, &at.owner, Role::Read).await?;
    let not_found = || AppError::NotFound(format!("no index for {at}/{arch}"));
    let repo_ref = crate::registry::repo_ref(owner.id, at);
    let repo = state
        .store
        .repository(&repo_ref)
        .await?
        .ok_or_else(not_found)?;
    if let Some(view) = view {
        let at_ms = snapshots::moment(state, at, &repo, view).await?;
        let rendered = snapshots::view_index(state, &owner, &repo, view, arch, at_ms).await?;
        let (content, sha256, content_type) = match which {
            Which::V2 => (
                rendered.content.clone(),
                rendered.sha256.as_str(),
                "application/gzip",
            ),
            Which::Adb => match &rendered.adb {
                Ok((content, sha256)) => {
                    (content.clone(), sha256.as_str(), "application/octet-stream")
                }
                Err(reason) => return Err(no_adb(&format!("{at}@{view}"), arch, reason)),
            },
        };
        let (response, _) = answer(
            &owner,
            content,
            sha256,
            rendered.modified_ms,
            content_type,
            method,
            headers,
        )?;
        return Ok(response);
    }
    match crate::registry::virtuals::kind_of(state, repo.id).await? {
        Kind::Hosted => {}
        Kind::Remote(upstream) if which == Which::V2 => {
            return super::remote::index(state, &owner, &repo, &upstream, arch, method, headers)
                .await
        }
        Kind::Remote(upstream) => {
            let index =
                crate::registry::remote::adb_index(state, &owner, &repo, &upstream, arch).await?;
            let (content, sha256) = match &index.adb {
                Ok((content, sha256)) => (content.clone(), sha256.as_str()),
                Err(reason) => return Err(no_adb(&at.to_string(), arch, reason)),
            };
            let (response, _) = answer(
                &owner,
                content,
                sha256,
                index.modified_ms,
                "application/octet-stream",
                method,
                headers,
            )?;
            return Ok(response);
        }
        Kind::Virtual(members) => {
            let index =
                crate::registry::virtuals::index(state, &owner, &repo, &members, arch).await?;
            let (content, sha256, content_type) = match which {
                Which::V2 => (index.content, index.sha256, "application/gzip"),
                Which::Adb => match (index.adb, index.adb_sha256) {
                    (Some(content), Some(sha256)) => (content, sha256, "application/octet-stream"),
                    _ => {
                        let reason = index.adb_error.unwrap_or_default();
                        return Err(no_adb(&at.to_string(), arch, &reason));
                    }
                },
            };
            let (response, _) = answer(
                &owner,
                bytes::Bytes::from(content),
                &sha256,
                index.modified_ms,
                content_type,
                method,
                headers,
            )?;
            return Ok(response);
        }
    }
    let index = crate::registry::indexes::hosted(state, &owner, &repo, arch)
        .await?
        .ok_or_else(not_found)?;
    let (content, sha256, content_type) = match which {
        Which::V2 => (index.content, index.sha256, "application/gzip"),
        // Published with the v2 index of the same packages, so dated by it.
        Which::Adb => match index.adb {
            Some((content, sha256)) => (content, sha256, "application/octet-stream"),
            None => {
                return Err(AppError::NotFound(format!(
                    "the apk v3 index of {at}/{arch} has not been built yet; \
                     it comes with the next change to the repository"
                )))
            }
        },
    };
    let (mut response, entity) = answer(
        &owner,
        content.clone(),
        &sha256,
        index.modified_ms,
        content_type,
        method,
        headers,
    )?;
    super::ready::mark(&mut response, identity, &owner, &entity, content);
    Ok(response)
}

/// The 404 of a `Packages.adb` that cannot be made of what an index lists.
fn no_adb(place: &str, arch: &Arch, reason: &str) -> AppError {
    AppError::NotFound(format!(
        "no apk v3 index for {place}/{arch}: a package its APKINDEX.tar.gz lists cannot be \
         written in that format ({reason}); use the APKINDEX.tar.gz"
    ))
}

/// The answer to a request for an index whose bytes are `content`: 200, or 304 and 412 as
/// its validators say.
fn answer(
    owner: &crate::store::Owner,
    content: bytes::Bytes,
    sha256: &str,
    modified_ms: i64,
    content_type: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<(Response, Entity)> {
    let entity = Entity {
        etag: format!("\"{sha256}\""),
        modified_ms,
        size: content.len() as u64,
    };
    let plan = entity.plan(method, headers);
    let builder = Response::builder()
        .header(header::ETAG, &entity.etag)
        .header(header::LAST_MODIFIED, entity.last_modified_http())
        .header(header::CACHE_CONTROL, cache_control(owner.is_private));
    let response = match plan {
        Plan::PreconditionFailed => return Err(super::conditional::precondition_failed()),
        Plan::NotModified => builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()),
        // Indexes are small; ranges over them are not worth supporting.
        _ => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, content.len())
            .body(Body::from(content)),
    };
    Ok((response.map_err(|e| AppError::Internal(e.into()))?, entity))
}

/// The signed apk v3 index (`Packages.adb`, as `apk mkndx` writes it) of one architecture,
/// what a `v3` line of `/etc/apk/repositories` fetches: the packages its
/// `APKINDEX.tar.gz` lists, signed by the same keys in the same order, published by the
/// same build. Served where that index is; 404 for a row built before there was one, until
/// the repository next changes (a new version's first start rebuilds every index).
#[utoipa::path(method(get, head),
    path = "/{owner}/{branch}/{repository}/{arch}/Packages.adb", tag = "apk",
    operation_id = "get_adb_index",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("branch" = String, Path, description = "A branch, such as v3.21 or edge"),
        ("repository" = String, Path, description = "A repository, such as main"),
        ("arch" = String, Path, description = "An architecture, such as x86_64"),
        Preconditions),
    responses(
        (status = 200, description = "The signed apk v3 index",
            content_type = "application/octet-stream", body = FileBytes,
            headers(("ETag" = String, description = "\"<sha256 of the file>\""),
                ("Last-Modified" = String), ("Cache-Control" = String))),
        (status = 304, description = "Not modified since the copy the validators name",
            headers(("ETag" = String), ("Last-Modified" = String))),
        (status = 400, description = "Invalid owner, branch, repository or architecture",
            body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such repository, no index of that architecture, or none built \
                           yet in the v3 format"),
        (status = 412, description = "If-Match or If-Unmodified-Since does not hold",
            body = ErrorBody),
    ))]
#[allow(dead_code)] // documents the shared file route (`get` answers it)
pub(crate) async fn get_adb() {}

/// Clients and proxies must revalidate, so a publish is visible at once.
pub fn cache_control(private: bool) -> HeaderValue {
    if private {
        HeaderValue::from_static("private, no-cache")
    } else {
        HeaderValue::from_static("public, no-cache")
    }
}
