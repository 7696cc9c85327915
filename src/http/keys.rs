//! The owner's public signing key, under the file name the index's signatures name.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::api::ErrorBody;
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::store::Role;
use crate::AppState;

async fn serve_key(
    state: &AppState,
    identity: &Identity,
    owner: &str,
    wanted: Option<&str>,
) -> AppResult<Response> {
    let owner = OwnerName::parse(owner)?;
    let owner = super::authorize(state, identity, &owner, Role::Read).await?;
    let key = state.keys.get_or_create(&owner).await?;
    if wanted.is_some_and(|name| name != key.key_name()) {
        return Err(AppError::NotFound(format!(
            "no key of that name; the current key is {}",
            key.key_name()
        )));
    }
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", key.key_name()))
            .map_err(|e| AppError::Internal(e.into()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        key.public_key_pem()?,
    )
        .into_response())
}

/// The owner's public signing key, in PEM, to save in `/etc/apk/keys/` under the file
/// name that `Content-Disposition` gives (the name the index signatures refer to).
#[utoipa::path(get, path = "/{owner}/key", tag = "apk", operation_id = "get_key",
    params(("owner" = String, Path, description = "A user or an organisation")),
    responses(
        (status = 200, description = "The public key", content_type = "application/x-pem-file",
            body = String,
            headers(("Content-Disposition" = String,
                description = "attachment; filename=\"<owner>-<8 hex digits>.rsa.pub\""))),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<Response> {
    serve_key(&state, &identity, &owner, None).await
}

/// The owner's public signing key under its file name; 404 for any other name.
#[utoipa::path(get, path = "/{owner}/keys/{keyname}", tag = "apk", operation_id = "get_named_key",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("keyname" = String, Path, description = "The key's file name")),
    responses(
        (status = 200, description = "The public key", content_type = "application/x-pem-file",
            body = String,
            headers(("Content-Disposition" = String,
                description = "attachment; filename=\"<owner>-<8 hex digits>.rsa.pub\""))),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or not the key's name"),
    ))]
pub async fn get_named(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, keyname)): Path<(String, String)>,
) -> AppResult<Response> {
    serve_key(&state, &identity, &owner, Some(&keyname)).await
}
