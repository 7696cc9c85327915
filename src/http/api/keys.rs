//! An owner's signing keys (`registry::keys`): rotation to a new key, import of an
//! abuild key, retirement of an old one. For site administrators and the owner's
//! administrators, who control what its clients install anyway; the keys are listed by
//! `GET /api/v1/owners/{owner}`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ErrorBody, Json, Path};
use crate::access::Identity;
use crate::error::AppResult;
use crate::http::client::Client;
use crate::names::OwnerName;
use crate::registry::audit::Actor;
use crate::registry::keyring::{self, KeyringState};
use crate::registry::keys::{self, KeyChange};
use crate::store::{Owner, Role};
use crate::AppState;

/// The owner, for a caller with the admin role on it (404 or 401 first for an owner the
/// caller may not read, as everywhere).
async fn administered(state: &AppState, identity: &Identity, owner: &str) -> AppResult<Owner> {
    let owner = OwnerName::parse(owner)?;
    crate::http::authorize(state, identity, &owner, Role::Read).await?;
    crate::http::authorize(state, identity, &owner, Role::Admin).await
}

/// A private key to import.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKey {
    /// abuild's private key file: unencrypted PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`), RSA of signing.import_min_bits to
    /// signing.import_max_bits bits.
    pub private_key: String,
    /// The key's file name, as the clients have it in /etc/apk/keys (e.g.
    /// `ops@example.org-5f3e2a1b.rsa.pub`); default `<owner>-<8 hex digits>.rsa.pub`.
    pub name: Option<String>,
}

/// Makes a new key (signing.key_bits) the owner's first signing key: every index is then
/// signed by it first and by the keys active before after it, and is signed again before
/// the answer. Needs the admin role on the owner.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/keys/rotate", tag = "keys",
    operation_id = "rotate_key",
    params(("owner" = String, Path)),
    responses(
        (status = 201, body = KeyChange, description = "The new key; the indexes are signed"),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
        (status = 409, description = "The owner has signing.max_active_keys active keys",
            body = ErrorBody),
    ))]
pub async fn rotate(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
) -> AppResult<(StatusCode, axum::Json<KeyChange>)> {
    let owner = administered(&state, &identity, &owner).await?;
    let change = keys::rotate(&state, &Actor::of(&identity, client), &owner).await?;
    Ok((StatusCode::CREATED, axum::Json(change)))
}

/// Makes an existing abuild private key the owner's first signing key, as rotate does,
/// so that clients keep their /etc/apk/keys. The private key is stored encrypted and
/// never shown again. Needs the admin role on the owner.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/keys", tag = "keys",
    operation_id = "import_key",
    params(("owner" = String, Path)),
    request_body = ImportKey,
    responses(
        (status = 201, body = KeyChange, description = "The imported key; the indexes are signed"),
        (status = 400, body = ErrorBody,
            description = "Invalid owner name, bad JSON, or a key that is malformed, \
                           encrypted, weaker or larger than allowed, or a bad key name"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "A key of that name exists, or the owner has \
                           signing.max_active_keys active keys"),
        (status = 413, description = "A body over limits.max_json_bytes", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
    Json(body): Json<ImportKey>,
) -> AppResult<(StatusCode, axum::Json<KeyChange>)> {
    let owner = administered(&state, &identity, &owner).await?;
    let change = keys::import(
        &state,
        &Actor::of(&identity, client),
        &owner,
        &body.private_key,
        body.name.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(change)))
}

/// Stops signing with one of the owner's keys; its public key is still served under its
/// name, so that a client that trusts only it fails with a signature error. Needs the
/// admin role on the owner.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/keys/{keyname}/retire", tag = "keys",
    operation_id = "retire_key",
    params(("owner" = String, Path), ("keyname" = String, Path)),
    responses(
        (status = 200, body = KeyChange, description = "Retired; the indexes are signed"),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner the caller may read, or no key of that name",
            body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "The owner's only active key, or a key retired before"),
    ))]
pub async fn retire(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, keyname)): Path<(String, String)>,
) -> AppResult<axum::Json<KeyChange>> {
    let owner = administered(&state, &identity, &owner).await?;
    let change = keys::retire(&state, &Actor::of(&identity, client), &owner, &keyname).await?;
    Ok(axum::Json(change))
}

/// The keyring switch of an owner.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyringSwitch {
    /// Whether the owner's repositories list `<owner>-keys`.
    pub enabled: bool,
}

/// Switches the owner's keyring package (`<owner>-keys`, the public keys of its active
/// keys under /etc/apk/keys) on, published into every repository of the owner, or off,
/// removed from each; answers once every index says so. Needs the admin role on the owner.
#[utoipa::path(put, path = "/api/v1/owners/{owner}/keyring", tag = "keys",
    operation_id = "switch_keyring",
    params(("owner" = String, Path)),
    request_body = KeyringSwitch,
    responses(
        (status = 200, body = KeyringState, description = "Switched; the indexes list it or not"),
        (status = 400, description = "Invalid owner name or bad JSON", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
        (status = 413, description = "A body over limits.max_json_bytes", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ))]
pub async fn keyring(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
    Json(body): Json<KeyringSwitch>,
) -> AppResult<axum::Json<KeyringState>> {
    let owner = administered(&state, &identity, &owner).await?;
    let switched =
        keyring::switch(&state, &Actor::of(&identity, client), &owner, body.enabled).await?;
    Ok(axum::Json(switched))
}
