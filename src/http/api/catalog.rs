//! The catalog routes: what the caller may read, under the access rules of the apk
//! routes (a private owner is 401 to anonymous callers and 404 to non-members, and never
//! listed, matched or counted).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Path, Query};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::registry::catalog::{
    self, IndexStatus, OwnerDetail, OwnerOverview, PackageDetail, PackageFile, PackageQuery,
    PackageSummary, Page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
use crate::store::RepositorySummary;
use crate::AppState;

/// Every owner the caller may read, by name.
#[utoipa::path(get, path = "/api/v1/owners", tag = "catalog",
    responses(
        (status = 200, body = Vec<OwnerOverview>),
        (status = 401, description = "Credentials that do not authenticate", body = ErrorBody),
    ))]
pub async fn owners(
    State(state): State<AppState>,
    identity: Identity,
) -> AppResult<axum::Json<Vec<OwnerOverview>>> {
    Ok(axum::Json(catalog::owners(&state, &identity).await?))
}

/// One owner with its repositories and signing key.
#[utoipa::path(get, path = "/api/v1/owners/{owner}", tag = "catalog",
    params(("owner" = String, Path)),
    responses(
        (status = 200, body = OwnerDetail),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, description = "Unknown or private owner, no credentials", body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
    ))]
pub async fn owner(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<axum::Json<OwnerDetail>> {
    Ok(axum::Json(catalog::owner(&state, &identity, &owner).await?))
}

/// The repositories of one owner: architectures, package counts, last publication.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/repositories", tag = "catalog",
    params(("owner" = String, Path)),
    responses(
        (status = 200, body = Vec<RepositorySummary>),
        (status = 400, description = "Invalid owner name", body = ErrorBody),
        (status = 401, description = "Unknown or private owner, no credentials", body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
    ))]
pub async fn repositories(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<axum::Json<Vec<RepositorySummary>>> {
    let owner = catalog::owner(&state, &identity, &owner).await?;
    Ok(axum::Json(owner.overview.repositories))
}

/// The query of a package search.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// A glob (`*`, `?`, `[...]`) when it contains `*` or `?`, otherwise a
    /// case-insensitive substring, of the package name or of what it provides
    /// (`so:libfoo.so.1`, `cmd:foo`, `pc:foo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Files of this architecture, and noarch files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// A case-insensitive substring of the maintainer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
    /// The `next` cursor of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Results per page, 1 to 100 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

fn page_size(limit: Option<&str>) -> AppResult<usize> {
    let Some(limit) = limit.filter(|l| !l.is_empty()) else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    limit
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_PAGE_SIZE}, not {:?}",
                limit.chars().take(20).collect::<String>()
            ))
        })
}

/// Packages of the owners the caller may read, one row per owner and package name, in
/// the stable order (name, owner). Pages follow the `Link: <...>; rel="next"` header (or
/// the `next` cursor as `after`); `X-Total-Count` and `total` count every page.
#[utoipa::path(get, path = "/api/v1/packages", tag = "catalog",
    params(SearchParams),
    responses(
        (status = 200, body = Page<PackageSummary>,
            headers(
                ("X-Total-Count" = u64, description = "Results over all pages"),
                ("Link" = String,
                    description = "The next page: <URL>; rel=\"next\"; absent on the last"),
            )),
        (status = 400, description = "A bad parameter, limit or cursor", body = ErrorBody),
        (status = 401, description = "Credentials that do not authenticate", body = ErrorBody),
    ))]
pub async fn search(
    State(state): State<AppState>,
    identity: Identity,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
    uri: Uri,
    extensions: axum::http::Extensions,
) -> AppResult<Response> {
    let limit = page_size(params.limit.as_deref())?;
    let query = PackageQuery {
        q: params.q.clone(),
        owner: params.owner.clone(),
        branch: params.branch.clone(),
        repository: params.repository.clone(),
        arch: params.arch.clone(),
        maintainer: params.maintainer.clone(),
    };
    let page = catalog::search(&state, &identity, &query, params.after.as_deref(), limit).await?;
    let mut response = axum::Json(&page).into_response();
    let out = response.headers_mut();
    out.insert("x-total-count", HeaderValue::from(page.total));
    if let Some(next) = &page.next {
        let base = crate::http::origin::base_url(
            &state.config,
            &crate::http::origin::Origin {
                headers: &headers,
                uri: &uri,
                peer: extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|info| info.0.ip()),
            },
        );
        let next_params = SearchParams {
            after: Some(next.clone()),
            limit: Some(limit.to_string()),
            ..params
        };
        let query = serde_urlencoded::to_string(&next_params).map_err(anyhow::Error::from)?;
        let link = format!("<{base}/api/v1/packages?{query}>; rel=\"next\"");
        if let Ok(value) = HeaderValue::from_str(&link) {
            out.insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// One package of an owner: every version (newest first, apk order) and every file with
/// all its Alpine fields, dependencies resolved among the owner's packages, required-by.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/packages/{name}", tag = "catalog",
    params(("owner" = String, Path), ("name" = String, Path, description = "Package name")),
    responses(
        (status = 200, body = PackageDetail),
        (status = 400, description = "Invalid owner or package name", body = ErrorBody),
        (status = 401, description = "Unknown or private owner, no credentials", body = ErrorBody),
        (status = 404, description = "No such package the caller may read", body = ErrorBody),
    ))]
pub async fn package(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, name)): Path<(String, String)>,
) -> AppResult<axum::Json<PackageDetail>> {
    Ok(axum::Json(
        catalog::package(&state, &identity, &owner, &name).await?,
    ))
}

/// The served index of every architecture of a repository: generation, build time,
/// sha256, size, entries, signatures.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/index/{branch}/{repository}", tag = "catalog",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path)),
    responses(
        (status = 200, body = Vec<IndexStatus>),
        (status = 400, description = "Invalid owner, branch or repository", body = ErrorBody),
        (status = 401, description = "Unknown or private owner, no credentials", body = ErrorBody),
        (status = 404, description = "No such repository the caller may read", body = ErrorBody),
    ))]
pub async fn indexes(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository)): Path<(String, String, String)>,
) -> AppResult<axum::Json<Vec<IndexStatus>>> {
    Ok(axum::Json(
        catalog::index_status(&state, &identity, &owner, &branch, &repository).await?,
    ))
}

/// The index of one branch, repository and architecture, as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IndexListing {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    pub arch: String,
    /// What the APKINDEX lists (noarch files included), by name, newest version first.
    pub packages: Vec<PackageFile>,
}

/// The index of one branch, repository and architecture as JSON: every file it lists,
/// with all its fields.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/index/{branch}/{repository}/{arch}",
    tag = "catalog",
    params(("owner" = String, Path), ("branch" = String, Path), ("repository" = String, Path),
        ("arch" = String, Path)),
    responses(
        (status = 200, body = IndexListing),
        (status = 400, body = ErrorBody,
            description = "Invalid owner, branch, repository or architecture"),
        (status = 401, description = "Unknown or private owner, no credentials", body = ErrorBody),
        (status = 404, body = ErrorBody,
            description = "No such repository or index the caller may read"),
    ))]
pub async fn index(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, branch, repository, arch)): Path<(String, String, String, String)>,
) -> AppResult<axum::Json<IndexListing>> {
    let packages =
        catalog::index_files(&state, &identity, &owner, &branch, &repository, &arch).await?;
    Ok(axum::Json(IndexListing {
        owner,
        branch,
        repository,
        arch,
        packages,
    }))
}
