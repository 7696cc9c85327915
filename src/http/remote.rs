//! The downloads of remote repositories (`registry::remote`), virtual repositories
//! (`registry::virtuals`) and views of their histories (`registry::snapshots`): indexes
//! built or re-signed by the registry, and package files from storage or streamed from
//! upstream.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

use super::conditional::{Entity, Plan};
use super::indexes::cache_control;
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, PackageFile, RepoAddress, View};
use crate::registry::remote::{self, Fetched};
use crate::registry::snapshots::{self, ServedPackage};
use crate::registry::virtuals::{kind_of, Kind};
use crate::store::{Owner, Repository, Upstream};
use crate::AppState;

/// The upstream's index of `arch`, signed with the owner's keys. Never kept among the
/// ready answers: each request looks whether it is due for a refresh.
pub async fn index(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    upstream: &Upstream,
    arch: &Arch,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Response> {
    let index = remote::index(state, owner, repo, upstream, arch).await?;
    let entity = Entity {
        etag: format!("\"{}\"", index.signed_sha256),
        modified_ms: index.signed_ms,
        size: index.signed.len() as u64,
    };
    let builder = Response::builder()
        .header(header::ETAG, &entity.etag)
        .header(header::LAST_MODIFIED, entity.last_modified_http())
        .header(header::CACHE_CONTROL, cache_control(owner.is_private));
    let response = match entity.plan(method, headers) {
        Plan::PreconditionFailed => return Err(super::conditional::precondition_failed()),
        Plan::NotModified => builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()),
        _ => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/gzip")
            .header(header::CONTENT_LENGTH, index.signed.len())
            .body(Body::from(index.signed)),
    };
    response.map_err(|e| AppError::Internal(e.into()))
}

/// A package file of the remote or virtual repository `at`, or of a moment `view` of its
/// history; None when `at` is hosted (and no view is asked for).
#[allow(clippy::too_many_arguments)]
pub async fn package(
    state: &AppState,
    identity: &Identity,
    owner: &Owner,
    at: &RepoAddress,
    view: Option<&View>,
    arch: &Arch,
    file: &PackageFile,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Option<Response>> {
    let repo_ref = crate::registry::repo_ref(owner.id, at);
    let Some(repo) = state.store.repository(&repo_ref).await? else {
        return Ok(None);
    };
    let served = match (view, kind_of(state, repo.id).await?) {
        (Some(view), _) => {
            let at_ms = snapshots::moment(state, at, &repo, view).await?;
            snapshots::file(state, owner, &repo, arch, file, Some(at_ms)).await?
        }
        (None, Kind::Hosted) => return Ok(None),
        (None, Kind::Remote(upstream)) => {
            ServedPackage::Fetched(remote::file(state, owner, &repo, &upstream, arch, file).await?)
        }
        (None, Kind::Virtual(_)) => snapshots::file(state, owner, &repo, arch, file, None).await?,
    };
    let mut response = serve(state, identity, owner, served, method, headers).await?;
    if view.is_some() || matches!(kind_of(state, repo.id).await?, Kind::Virtual(_)) {
        // Which file a path of a virtual repository or a view names can change without a
        // change the ready answers are dropped at (a member's upstream refreshed): never
        // kept among them.
        response.extensions_mut().remove::<super::ready::Ready>();
    }
    Ok(Some(response))
}

/// Answers a download of `served`.
async fn serve(
    state: &AppState,
    identity: &Identity,
    owner: &Owner,
    served: ServedPackage,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Response> {
    match served {
        ServedPackage::Blob {
            sha256,
            size,
            modified_ms,
        } => {
            let entity = Entity {
                etag: format!("\"{sha256}\""),
                modified_ms,
                size,
            };
            super::packages::serve_blob(state, identity, owner, &entity, &sha256, method, headers)
                .await
        }
        ServedPackage::Fetched(Fetched::Stored(stored)) => {
            let entity = Entity {
                etag: format!("\"{}\"", stored.sha256),
                modified_ms: stored.stored_ms,
                size: stored.size as u64,
            };
            super::packages::serve_blob(
                state,
                identity,
                owner,
                &entity,
                &stored.sha256,
                method,
                headers,
            )
            .await
        }
        // The whole file, whatever range was asked for: its digest (the ETag) is known
        // only once it is all fetched.
        ServedPackage::Fetched(Fetched::Streaming { size, body }) => {
            let builder = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, size)
                .header(header::CACHE_CONTROL, cache_control(owner.is_private));
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from_stream(tokio_stream_of(body))
            };
            builder.body(body).map_err(|e| AppError::Internal(e.into()))
        }
    }
}

/// The receiver as a stream of body chunks.
fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
