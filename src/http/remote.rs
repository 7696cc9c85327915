//! The downloads of remote repositories (`registry::remote`): their re-signed upstream
//! indexes, and their package files, from storage or streamed from upstream.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;

use super::conditional::{Entity, Plan};
use super::indexes::cache_control;
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::remote::{self, Fetched};
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

/// A package file of the remote repository `at`; None when `at` is not remote.
#[allow(clippy::too_many_arguments)]
pub async fn package(
    state: &AppState,
    identity: &Identity,
    owner: &Owner,
    at: &RepoAddress,
    arch: &Arch,
    file: &PackageFile,
    method: &Method,
    headers: &HeaderMap,
) -> AppResult<Option<Response>> {
    let repo_ref = crate::registry::repo_ref(owner.id, at);
    let Some(repo) = state.store.repository(&repo_ref).await? else {
        return Ok(None);
    };
    let Some(upstream) = remote::upstream_of(state, repo.id).await? else {
        return Ok(None);
    };
    match remote::file(state, owner, &repo, &upstream, arch, file).await? {
        Fetched::Stored(stored) => {
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
            .map(Some)
        }
        // The whole file, whatever range was asked for: its digest (the ETag) is known
        // only once it is all fetched.
        Fetched::Streaming { size, body } => {
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
            builder
                .body(body)
                .map(Some)
                .map_err(|e| AppError::Internal(e.into()))
        }
    }
}

/// The receiver as a stream of body chunks.
fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
