//! The owner's public signing keys, under the file names the index's signatures name: the
//! newest active one, and any one by its name (retired ones too, so that a client told to
//! fetch an old key gets it, and then a clear signature error rather than a 404).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::api::ErrorBody;
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::registry::keys;
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
    // Also makes the owner's first key when it has none yet.
    let newest = state.keys.get_or_create(&owner).await?;
    let (name, pem) = match wanted {
        None => (newest.key_name().to_string(), newest.public_key_pem()?),
        Some(name) => match keys::public_key(state, &owner, name).await? {
            Some(record) => (record.key_name, record.public_pem),
            None => {
                return Err(AppError::NotFound(format!(
                    "{} has no key named {name}; its current key is {}",
                    owner.name,
                    newest.key_name()
                )))
            }
        },
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        pem,
    )
        .into_response())
}

/// The owner's newest active public signing key, in PEM, to save in `/etc/apk/keys/`
/// under the file name that `Content-Disposition` gives (the name the index signatures
/// refer to).
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

/// One of the owner's public signing keys by its file name, active or retired; 404 for a
/// name the owner never had.
#[utoipa::path(get, path = "/{owner}/keys/{keyname}", tag = "apk", operation_id = "get_named_key",
    params(("owner" = String, Path, description = "A user or an organisation"),
        ("keyname" = String, Path, description = "The key's file name")),
    responses(
        (status = 200, description = "The public key", content_type = "application/x-pem-file",
            body = String,
            headers(("Content-Disposition" = String,
                description = "attachment; filename=\"<keyname>\""))),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "Unknown or private owner and no credentials, or bad credentials"),
        (status = 403, description = "Credentials that may not read this owner", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no key of that name"),
    ))]
pub async fn get_named(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, keyname)): Path<(String, String)>,
) -> AppResult<Response> {
    serve_key(&state, &identity, &owner, Some(&keyname)).await
}
