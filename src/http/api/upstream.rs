//! Remote repositories (`registry::remote`): created with their upstream by site
//! administrators (the server then makes requests to that URL: as with the configured
//! dependency sources, an administrator's decision, never an owner's), and their upstream
//! and its freshness read by whoever may read the owner.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Json, Path, SiteAdmin};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::RepoAddress;
use crate::registry::remote::{self, NewRemote};
use crate::store::{Role, UpstreamFreshness, UpstreamKey};
use crate::AppState;

/// A remote repository's upstream and how fresh its indexes are.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpstreamInfo {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    /// The upstream repository's base URL.
    pub url: String,
    /// The names of the keys its indexes must be signed with.
    pub keys: Vec<String>,
    /// An index older than this is fetched again when asked for.
    pub refresh_secs: i64,
    /// Each architecture fetched so far; `error` set means the last refresh failed and
    /// the last verified index is served (stale).
    pub indexes: Vec<UpstreamFreshness>,
}

/// A key the upstream signs its indexes with.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpstreamKey {
    /// Its apk key name (its file name in /etc/apk/keys).
    pub name: String,
    /// The RSA public key, PEM.
    pub pem: String,
}

/// The upstream of a remote repository to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpstream {
    /// The upstream repository's base URL, whose `{arch}/APKINDEX.tar.gz` is fetched.
    #[schema(example = "https://dl-cdn.alpinelinux.org/alpine/v3.21/main")]
    pub url: String,
    pub keys: Vec<NewUpstreamKey>,
    /// Seconds after which an index is fetched again; upstream.default_refresh_secs when
    /// left out.
    pub refresh_secs: Option<u64>,
}

async fn info(state: &AppState, at: &RepoAddress, owner_id: i64) -> AppResult<UpstreamInfo> {
    let not_remote = || AppError::NotFound(format!("{at} is not a remote repository"));
    let repo = state
        .store
        .repository(&crate::registry::repo_ref(owner_id, at))
        .await?
        .ok_or_else(not_remote)?;
    let upstream = remote::upstream_of(state, repo.id)
        .await?
        .ok_or_else(not_remote)?;
    Ok(UpstreamInfo {
        owner: at.owner.to_string(),
        branch: at.branch.to_string(),
        repository: at.repository.to_string(),
        url: upstream.url.clone(),
        keys: upstream.keys.iter().map(|k| k.name.clone()).collect(),
        refresh_secs: upstream.refresh_secs,
        indexes: state.store.upstream_freshness(repo.id).await?,
    })
}

/// The upstream of a remote repository, and how fresh each of its indexes is.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/upstream",
    tag = "catalog", operation_id = "get_upstream",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    responses(
        (status = 200, body = UpstreamInfo),
        (status = 400, description = "An invalid name", body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner or repository the caller may read, or not a remote one"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository)): Path<(String, String, String)>,
) -> AppResult<axum::Json<UpstreamInfo>> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let owner = crate::http::authorize(&state, &identity, &at.owner, Role::Read).await?;
    Ok(axum::Json(info(&state, &at, owner.id).await?))
}

/// Creates a remote repository: a caching proxy of the upstream repository at `url`, whose
/// indexes must be signed by one of `keys`. Site administrators only.
#[utoipa::path(put, path = "/api/v1/owners/{owner}/repositories/{branch}/{repository}/upstream",
    tag = "catalog", operation_id = "create_remote_repository",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    request_body = NewUpstream,
    responses(
        (status = 201, body = UpstreamInfo, description = "Created"),
        (status = 400, body = ErrorBody,
            description = "An invalid name, bad JSON, a URL that is not http(s), no key or a \
                           key that is not an RSA public key"),
        (status = 401, description = "No credentials, or bad ones", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner", body = ErrorBody),
        (status = 409, description = "The repository exists already", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path((owner, branch, repository)): Path<(String, String, String)>,
    Json(new): Json<NewUpstream>,
) -> AppResult<(StatusCode, axum::Json<UpstreamInfo>)> {
    let at = RepoAddress::parse(&owner, &branch, &repository)?;
    let new = NewRemote {
        url: new.url,
        keys: new
            .keys
            .into_iter()
            .map(|k| UpstreamKey {
                name: k.name,
                pem: k.pem,
            })
            .collect(),
        refresh_secs: new.refresh_secs,
    };
    let repository = remote::create(&state, &actor, &at, &new).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(info(&state, &at, repository.owner_id).await?),
    ))
}
