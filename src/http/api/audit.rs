//! The audit log over HTTP (`registry::audit`): every entry for site administrators, an
//! owner's entries for the owner's admins. Pages go newest first and follow the
//! `Link: <...>; rel="next"` header (or the `next` of the answer, passed as `after`).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Path, Query, SiteAdmin};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::registry::audit::{self, Filter, Page};
use crate::store::Role;
use crate::AppState;

/// Which entries to list; every filter given must match.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries of this owner (site administrators' route only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Entries of this actor: a user name, the OS user of a command, a retention rule's
    /// scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Entries of this action, such as `package.publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Entries at or after: `2026-01-31T12:00:00Z`, `2026-01-31`, or a duration back from
    /// now such as `7d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The `next` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Entries per page, 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

impl AuditParams {
    fn filter(&self, state: &AppState) -> AppResult<Filter> {
        let limit = match self.limit.as_deref().filter(|l| !l.is_empty()) {
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                AppError::BadRequest(format!(
                    "limit must be a whole number from 1 to {}",
                    audit::MAX_PAGE
                ))
            })?),
            None => None,
        };
        let since_ms = match self.since.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => Some(audit::parse_since(text, state.clock.unix_ms())?),
            None => None,
        };
        Ok(Filter {
            actor: self.actor.clone(),
            action: self.action.clone(),
            since_ms,
            after: self.after.clone(),
            limit,
        })
    }
}

/// Every change recorded, newest first: what was done, to what, by whom (user and token,
/// a retention rule, or a command on the server with its OS user), from which address.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin",
    operation_id = "list_audit_log",
    security(("basic" = []), ("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, body = Page,
            headers(("Link" = String,
                description = "The next page: <URL>; rel=\"next\"; absent on the last"))),
        (status = 400, description = "A bad filter, limit or position", body = ErrorBody),
        (status = 401, description = "No credentials, or bad ones", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "The owner filter names no owner", body = ErrorBody),
    ))]
pub async fn list_all(
    State(state): State<AppState>,
    _: SiteAdmin,
    Query(params): Query<AuditParams>,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> AppResult<Response> {
    let filter = params.filter(&state)?;
    let owner = match params.owner.as_deref().filter(|o| !o.is_empty()) {
        Some(name) => Some(crate::registry::accounts::owner(&state, name).await?),
        None => None,
    };
    let page = audit::list(&state, owner.as_ref(), filter).await?;
    answer(
        &state,
        &page,
        "/api/v1/admin/audit",
        params,
        &uri,
        &headers,
        &extensions,
    )
}

/// The changes recorded on one owner (its packages, repositories, members, tokens limited
/// to it, rules and settings), newest first. For admins of the owner.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/audit", tag = "catalog",
    operation_id = "list_owner_audit_log",
    params(("owner" = String, Path), AuditParams),
    responses(
        (status = 200, body = Page,
            headers(("Link" = String,
                description = "The next page: <URL>; rel=\"next\"; absent on the last"))),
        (status = 400, description = "An invalid owner name, a bad filter, limit or \
                                      position, or the owner filter", body = ErrorBody),
        (status = 401, description = "No credentials, or bad ones", body = ErrorBody),
        (status = 403, description = "Not an admin of the owner", body = ErrorBody),
        (status = 404, description = "No such owner the caller may read", body = ErrorBody),
    ))]
pub async fn list_owner(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
    Query(params): Query<AuditParams>,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> AppResult<Response> {
    let name = OwnerName::parse(&owner)?;
    let owner = crate::access::authorize(&state, &identity, &name, Role::Admin).await?;
    if params.owner.is_some() {
        return Err(AppError::BadRequest(
            "owner is the owner of the path here: leave the owner filter out".into(),
        ));
    }
    let filter = params.filter(&state)?;
    let page = audit::list(&state, Some(&owner), filter).await?;
    let path = format!("/api/v1/owners/{}/audit", owner.name);
    answer(&state, &page, &path, params, &uri, &headers, &extensions)
}

/// The page as JSON, with the `Link` of the next one.
fn answer(
    state: &AppState,
    page: &Page,
    path: &str,
    params: AuditParams,
    uri: &Uri,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> AppResult<Response> {
    let mut response = axum::Json(page).into_response();
    if let Some(next) = &page.next {
        let base = crate::http::origin::base_url(
            &state.config,
            &crate::http::origin::Origin {
                headers,
                uri,
                peer: extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|info| info.0.ip()),
            },
        );
        let next_params = AuditParams {
            after: Some(next.clone()),
            ..params
        };
        let query = serde_urlencoded::to_string(&next_params).map_err(anyhow::Error::from)?;
        if let Ok(value) = HeaderValue::from_str(&format!("<{base}{path}?{query}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
