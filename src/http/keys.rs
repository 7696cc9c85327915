//! The owner's public signing key, under the file name the index's signatures name.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

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

/// `GET /{owner}/key`
pub async fn get(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<Response> {
    serve_key(&state, &identity, &owner, None).await
}

/// `GET /{owner}/keys/{keyname}`
pub async fn get_named(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, keyname)): Path<(String, String)>,
) -> AppResult<Response> {
    serve_key(&state, &identity, &owner, Some(&keyname)).await
}
