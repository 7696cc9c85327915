//! A repository's settings (`registry::dependencies`): read by whoever may read the
//! owner, changed by its administrators.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Json, Path};
use crate::access::Identity;
use crate::config::DependencyCheck;
use crate::error::AppResult;
use crate::http::client::Client;
use crate::names::RepoAddress;
use crate::registry::audit::Actor;
use crate::registry::dependencies;
use crate::store::Role;
use crate::AppState;

/// The settings of one repository.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepositorySettings {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    /// The repository's own dependency check, or null when it follows
    /// repositories.dependency_check.
    #[schema(value_type = Option<String>, example = "refuse")]
    pub dependency_check: Option<DependencyCheck>,
    /// The dependency check that applies: its own, else the configured one.
    #[schema(value_type = String, example = "warn")]
    pub effective_dependency_check: DependencyCheck,
}

/// Settings to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSettings {
    /// `off`, `warn` or `refuse`, or null to follow repositories.dependency_check;
    /// required (`{}` is refused, so that a mistyped field name changes nothing).
    // Through `deserialize_with`, a missing field is an error rather than None.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(value_type = Option<String>, required = true)]
    pub dependency_check: Option<DependencyCheck>,
}

fn answer(
    at: &RepoAddress,
    own: Option<DependencyCheck>,
    effective: DependencyCheck,
) -> RepositorySettings {
    RepositorySettings {
        owner: at.owner.to_string(),
        branch: at.branch.to_string(),
        repository: at.repository.to_string(),
        dependency_check: own,
        effective_dependency_check: effective,
    }
}

/// A repository's settings.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/settings",
    tag = "catalog", operation_id = "get_repository_settings",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    responses(
        (status = 200, body = RepositorySettings),
        (status = 400, description = "An invalid name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 404, description = "No such owner or repository the caller may read",
            body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository)): Path<(String, String, String)>,
) -> AppResult<axum::Json<RepositorySettings>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let owner = crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    let (own, effective) = dependencies::get(&state, &owner, &at).await?;
    Ok(axum::Json(answer(&at, own, effective)))
}

/// Changes a repository's settings: its dependency check (null: follow
/// repositories.dependency_check). Needs the admin role on the owner.
#[utoipa::path(put, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/settings",
    tag = "catalog", operation_id = "set_repository_settings",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    request_body = NewSettings,
    responses(
        (status = 200, body = RepositorySettings, description = "Changed"),
        (status = 400, description = "An invalid name, or bad JSON", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner or repository the caller may read",
            body = ErrorBody),
    ))]
pub async fn set(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    Json(new): Json<NewSettings>,
) -> AppResult<axum::Json<RepositorySettings>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Admin).await?;
    let effective = dependencies::set(
        &state,
        &Actor::of(&identity, client),
        &at,
        new.dependency_check,
    )
    .await?;
    Ok(axum::Json(answer(&at, new.dependency_check, effective)))
}
