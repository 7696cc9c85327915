//! Retention rules, their plan and apply, and package pins (`registry::retention`), over
//! HTTP. Rules need admin on the owner (site administrators have it on every owner); pins
//! need write, as a delete does.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{owner_admin, ErrorBody, Json, Path, Query};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::http::client::Client;
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::Actor;
use crate::registry::retention::{self, RepositoryPlan, Rule, RuleSpec, Target};
use crate::store::Role;
use crate::AppState;

/// A rule to set, for the owner of the path, one of its branches, or one repository.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// The branch the rule applies to; the whole owner when left out.
    pub branch: Option<String>,
    /// The repository (of `branch`) the rule applies to; the whole branch when left out.
    pub repository: Option<String>,
    /// Keeps the newest this many versions of each package name and architecture (at
    /// least 1).
    pub keep_versions: Option<i64>,
    /// Deletes versions uploaded longer ago than this: a number with a unit, s m h d w or
    /// y (`90d`).
    pub max_age: Option<String>,
    /// With `max_age`: keeps the newest this many versions however old (default 0; the
    /// last version is never removed).
    pub keep_min: Option<i64>,
    /// Package name globs (`py3-*`) the rule applies to; every name when empty.
    #[serde(default, rename = "match")]
    pub include: Vec<String>,
    /// Package name globs the rule leaves alone.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Which scope an operation is about: the owner of the path, one branch, or one
/// repository of a branch.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeParams {
    /// A branch of the owner; the whole owner when empty.
    pub branch: Option<String>,
    /// A repository of the branch; the whole branch when empty.
    pub repository: Option<String>,
}

/// A pin as set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pin {
    /// The download path of the file, relative to the registry's root.
    pub path: String,
    pub pinned: bool,
}

fn target(owner: &str, branch: Option<&str>, repository: Option<&str>) -> AppResult<Target> {
    Target::of(owner, given(branch), given(repository))
}

/// A query filter left empty, as a web form sends it, filters nothing.
fn given(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// The retention rules of an owner, its branches and its repositories.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/retention", tag = "retention",
    operation_id = "list_retention_rules",
    params(("owner" = String, Path)),
    responses(
        (status = 200, body = Vec<Rule>),
        (status = 400, body = ErrorBody, description = "An invalid owner name"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody, description = "No such owner the caller may read"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<axum::Json<Vec<Rule>>> {
    let owner = owner_admin(&state, &identity, &owner).await?;
    Ok(axum::Json(retention::show(&state, Some(&owner)).await?))
}

/// Sets the retention rule of the owner, of one branch or of one repository, replacing
/// the rule of that scope. For a repository, the most specific rule applies, alone.
/// Applied after each publish into a repository it covers (when it has keep_versions) and
/// every retention.interval_secs.
#[utoipa::path(put, path = "/api/v1/owners/{owner}/retention", tag = "retention",
    operation_id = "set_retention_rule",
    params(("owner" = String, Path)),
    request_body = RuleRequest,
    responses(
        (status = 200, body = Rule, description = "The rule, as stored"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, duration or glob, neither keep_versions nor \
                           max_age, keep_min without max_age, a repository without its \
                           branch, or bad JSON"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody, description = "No such owner the caller may read"),
    ))]
pub async fn set(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
    Json(request): Json<RuleRequest>,
) -> AppResult<axum::Json<Rule>> {
    let target = target(
        &owner,
        request.branch.as_deref(),
        request.repository.as_deref(),
    )?;
    let max_age_secs = request
        .max_age
        .as_deref()
        .map(crate::access::parse_duration)
        .transpose()
        .map_err(|e| AppError::BadRequest(format!("max_age: {e}")))?;
    let owner = owner_admin(&state, &identity, &owner).await?;
    let spec = RuleSpec {
        keep_versions: request.keep_versions,
        max_age_secs,
        keep_min: request.keep_min,
        include: request.include,
        exclude: request.exclude,
    };
    Ok(axum::Json(
        retention::set(&state, &Actor::of(&identity, client), &owner, &target, spec).await?,
    ))
}

/// Removes the rule of exactly this scope (a broader rule then applies, if any).
#[utoipa::path(delete, path = "/api/v1/owners/{owner}/retention", tag = "retention",
    operation_id = "remove_retention_rule",
    params(("owner" = String, Path), ScopeParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, or a repository without its branch"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no rule of this scope"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
    Query(scope): Query<ScopeParams>,
) -> AppResult<StatusCode> {
    let target = target(&owner, scope.branch.as_deref(), scope.repository.as_deref())?;
    let owner = owner_admin(&state, &identity, &owner).await?;
    retention::remove(&state, &Actor::of(&identity, client), &owner, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the rules would delete now in every repository of the scope, and why; deletes
/// nothing.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/retention/plan", tag = "retention",
    operation_id = "plan_retention",
    params(("owner" = String, Path), ScopeParams),
    responses(
        (status = 200, body = Vec<RepositoryPlan>),
        (status = 400, body = ErrorBody,
            description = "An invalid name, or a repository without its branch"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no repository in the scope"),
    ))]
pub async fn plan(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
    Query(scope): Query<ScopeParams>,
) -> AppResult<axum::Json<Vec<RepositoryPlan>>> {
    let target = target(&owner, scope.branch.as_deref(), scope.repository.as_deref())?;
    let owner = owner_admin(&state, &identity, &owner).await?;
    Ok(axum::Json(retention::plan(&state, &owner, &target).await?))
}

/// Applies the rules to every repository of the scope now, each deletion as a DELETE of
/// the file; answers once the signed indexes no longer list what was deleted.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/retention/apply", tag = "retention",
    operation_id = "apply_retention",
    params(("owner" = String, Path), ScopeParams),
    responses(
        (status = 200, body = Vec<RepositoryPlan>, description = "What was deleted"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, or a repository without its branch"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no repository in the scope"),
    ))]
pub async fn apply(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
    Query(scope): Query<ScopeParams>,
) -> AppResult<axum::Json<Vec<RepositoryPlan>>> {
    let target = target(&owner, scope.branch.as_deref(), scope.repository.as_deref())?;
    let owner = owner_admin(&state, &identity, &owner).await?;
    Ok(axum::Json(retention::apply(&state, &owner, &target).await?))
}

async fn set_pin(
    state: &AppState,
    identity: &Identity,
    client: Option<std::net::IpAddr>,
    (owner, branch, repository, arch, file): (String, String, String, String, String),
    pinned: bool,
) -> AppResult<axum::Json<Pin>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let (arch, file) = (Arch::parse(&arch)?, PackageFile::parse(&file)?);
    let owner = crate::access::authorize(state, identity, &at.owner, Role::Write).await?;
    let found = retention::pin(
        state,
        &Actor::of(identity, client),
        &owner,
        &at,
        &arch,
        &file,
        pinned,
    )
    .await?;
    Ok(axum::Json(Pin {
        path: format!("/{at}/{}/{}", found.arch, found.filename),
        pinned,
    }))
}

/// Pins a package file: no retention rule deletes it (a DELETE still does).
#[utoipa::path(put, path = "/api/v1/owners/{owner}/pins/{branch}/{repository}/{arch}/{file}",
    tag = "retention", operation_id = "pin_package",
    params(("owner" = String, Path), ("branch" = String, Path),
        ("repository" = String, Path), ("arch" = String, Path), ("file" = String, Path)),
    responses(
        (status = 200, body = Pin),
        (status = 400, body = ErrorBody, description = "An invalid name"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "No write access to the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no such file"),
    ))]
pub async fn pin(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(path): Path<(String, String, String, String, String)>,
) -> AppResult<axum::Json<Pin>> {
    set_pin(&state, &identity, client, path, true).await
}

/// Unpins a package file: retention rules apply to it again.
#[utoipa::path(delete, path = "/api/v1/owners/{owner}/pins/{branch}/{repository}/{arch}/{file}",
    tag = "retention", operation_id = "unpin_package",
    params(("owner" = String, Path), ("branch" = String, Path),
        ("repository" = String, Path), ("arch" = String, Path), ("file" = String, Path)),
    responses(
        (status = 200, body = Pin),
        (status = 400, body = ErrorBody, description = "An invalid name"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "No write access to the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no such file"),
    ))]
pub async fn unpin(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(path): Path<(String, String, String, String, String)>,
) -> AppResult<axum::Json<Pin>> {
    set_pin(&state, &identity, client, path, false).await
}
