//! Virtual repositories (`registry::virtuals`): created with their members by the owner's
//! administrators, their members read by whoever may read the owner; and the snapshots
//! of remote and virtual repositories (`registry::snapshots`), named moments of what they
//! served, made and removed by the owner's writers.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Json, Path};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::http::client::Client;
use crate::names::{rfc3339_ms, RepoAddress, SnapshotName};
use crate::registry::audit::Actor;
use crate::registry::snapshots;
use crate::registry::virtuals::{self, MemberInfo};
use crate::store::Role;
use crate::AppState;

/// A virtual repository and its members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VirtualInfo {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    /// In order: the first member listing a file name is the one it is served from.
    pub members: Vec<MemberInfo>,
}

/// The members of a virtual repository to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVirtual {
    /// Hosted or remote repositories of the same owner, `OWNER/BRANCH/REPOSITORY`, in
    /// order.
    #[schema(example = json!(["acme/v3.21/main", "acme/v3.21/alpine"]))]
    pub members: Vec<String>,
}

async fn info(state: &AppState, at: &RepoAddress, owner_id: i64) -> AppResult<VirtualInfo> {
    let not_virtual = || AppError::NotFound(format!("{at} is not a virtual repository"));
    let repo = state
        .store
        .repository(&crate::registry::repo_ref(owner_id, at))
        .await?
        .ok_or_else(not_virtual)?;
    Ok(VirtualInfo {
        owner: at.owner.to_string(),
        branch: at.branch.to_string(),
        repository: at.repository.to_string(),
        members: virtuals::members(state, repo.id)
            .await?
            .ok_or_else(not_virtual)?,
    })
}

/// The members of a virtual repository, in order, with their kinds.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/members",
    tag = "catalog", operation_id = "get_virtual_members",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    responses(
        (status = 200, body = VirtualInfo),
        (status = 400, description = "An invalid name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner or repository the caller may read, or not a virtual one"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository)): Path<(String, String, String)>,
) -> AppResult<axum::Json<VirtualInfo>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let owner = crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    Ok(axum::Json(info(&state, &at, owner.id).await?))
}

/// Creates a virtual repository listing `members` (hosted or remote repositories of the
/// same owner) in order. Needs the admin role on the owner.
#[utoipa::path(put, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/members",
    tag = "catalog", operation_id = "create_virtual_repository",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    request_body = NewVirtual,
    responses(
        (status = 201, body = VirtualInfo, description = "Created"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, bad JSON, no member, a member that is not a \
                           repository of the owner, does not exist, is listed twice or is \
                           virtual itself"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without the admin role on this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
        (status = 409, description = "The repository exists already", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    Json(new): Json<NewVirtual>,
) -> AppResult<(StatusCode, axum::Json<VirtualInfo>)> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    let owner = crate::http::authorize(&state, &identity, &at.owner, Role::Admin).await?;
    let members = new
        .members
        .iter()
        .map(|m| RepoAddress::parse_path(m))
        .collect::<AppResult<Vec<_>>>()?;
    virtuals::create(&state, &Actor::of(&identity, client), &at, &members).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(info(&state, &at, owner.id).await?),
    ))
}

/// A snapshot: a named moment of a repository's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    pub name: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The repository path that serves it: `/{owner}/{branch}/{repository}@{name}`
    /// (`/{arch}/APKINDEX.tar.gz` below it).
    pub path: String,
}

fn snapshot_info(at: &RepoAddress, snapshot: crate::store::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        path: format!("/{at}@{}", snapshot.name),
        at: rfc3339_ms(snapshot.at_ms),
        at_ms: snapshot.at_ms,
        name: snapshot.name,
    }
}

/// A snapshot to take.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    /// 1-64 lowercase letters, digits, '.', '_' or '-'; default: the time, as
    /// `20261206t223000z`.
    pub name: Option<String>,
}

/// The snapshots of a remote or virtual repository, oldest first.
#[utoipa::path(get,
    path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/snapshots",
    tag = "catalog", operation_id = "list_snapshots",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    responses(
        (status = 200, body = Vec<SnapshotInfo>),
        (status = 400, body = ErrorBody,
            description = "An invalid name, or a hosted repository (which keeps no history)"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 404, description = "No such owner or repository the caller may read",
            body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository)): Path<(String, String, String)>,
) -> AppResult<axum::Json<Vec<SnapshotInfo>>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    let snapshots = snapshots::list(&state, &at).await?;
    Ok(axum::Json(
        snapshots
            .into_iter()
            .map(|s| snapshot_info(&at, s))
            .collect(),
    ))
}

/// Records the current time under a name: `/{owner}/{branch}/{repository}@{name}/...`
/// serves what the repository serves now, from then on. Needs write access to the owner.
#[utoipa::path(post,
    path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/snapshots",
    tag = "catalog", operation_id = "create_snapshot",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    request_body = NewSnapshot,
    responses(
        (status = 201, body = SnapshotInfo, description = "Taken"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, bad JSON, or a hosted repository (which keeps no \
                           history)"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without write access to this owner",
            body = ErrorBody),
        (status = 404, description = "No such owner or repository the caller may read",
            body = ErrorBody),
        (status = 409, description = "A snapshot of that name exists", body = ErrorBody),
    ))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    Json(new): Json<NewSnapshot>,
) -> AppResult<(StatusCode, axum::Json<SnapshotInfo>)> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Write).await?;
    let name = new.name.as_deref().map(SnapshotName::parse).transpose()?;
    let snapshot = snapshots::create(&state, &Actor::of(&identity, client), &at, name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(snapshot_info(&at, snapshot)),
    ))
}

/// Removes a snapshot's name; the moment stays readable by its time. Needs write access
/// to the owner.
#[utoipa::path(delete,
    path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/snapshots/{snapshot}",
    tag = "catalog", operation_id = "remove_snapshot",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path),
        ("snapshot" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, or a hosted repository (which keeps no history)"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, description = "Credentials without write access to this owner",
            body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such owner, repository or snapshot the caller may read"),
    ))]
pub async fn remove_snapshot(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, branch, repository, snapshot)): Path<(String, String, String, String)>,
) -> AppResult<StatusCode> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let name = SnapshotName::parse(&snapshot)?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    crate::http::authorize(&state, &identity, &at.owner, Role::Write).await?;
    snapshots::remove(&state, &Actor::of(&identity, client), &at, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
