//! The activity page of an owner: its audit log entries (`registry::audit`), newest first,
//! for the owner's admins (as the JSON route `/api/v1/owners/{owner}/audit`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Visitor;
use super::view::{self, query_value};
use super::{render, Nav, PageError};
use crate::access::Identity;
use crate::error::AppError;
use crate::names::OwnerName;
use crate::registry::audit;
use crate::store::{Owner, Role};
use crate::AppState;

/// Entries per page.
const PAGE_SIZE: usize = 50;

#[derive(Debug, Deserialize)]
pub struct ActivityParams {
    after: Option<String>,
}

struct EntryRow {
    time: String,
    actor: String,
    client: String,
    action: String,
    target: String,
    outcome: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "activity.html")]
struct ActivityPage {
    nav: Nav,
    owner: String,
    retention_days: u64,
    entries: Vec<EntryRow>,
    paged: bool,
    next: Option<String>,
}

/// The owner of an admins' page (`what` it shows): Err with the way to the login form for
/// a visitor who is not logged in; refused (403) for one who may read the owner without
/// administering it; not found (404) for one who may not read it.
pub(super) async fn administered(
    state: &AppState,
    visitor: &Visitor,
    owner: &str,
    uri: &Uri,
    what: &str,
) -> Result<Result<Owner, Response>, PageError> {
    if matches!(visitor.identity, Identity::Anonymous) {
        let here = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        return Ok(Err(Redirect::to(&format!(
            "/-/login?next={}",
            query_value(here)
        ))
        .into_response()));
    }
    let name = OwnerName::parse(owner)?;
    let owner = crate::access::authorize(state, &visitor.identity, &name, Role::Admin)
        .await
        .map_err(|err| match err {
            AppError::Forbidden(_) => {
                AppError::Forbidden(format!("only admins of {name} see its {what}"))
            }
            AppError::Unauthorized(_) => AppError::NotFound("not found".into()),
            other => other,
        })?;
    Ok(Ok(owner))
}

/// `GET /{owner}/-/activity`: a visitor who is not logged in goes to the login form; one
/// who may read the owner without administering it is refused (403); one who may not
/// read it finds nothing (404).
pub async fn show(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(owner): Path<String>,
    Query(params): Query<ActivityParams>,
    uri: Uri,
) -> Result<Response, PageError> {
    let owner = match administered(&state, &visitor, &owner, &uri, "activity").await? {
        Ok(owner) => owner,
        Err(to_login) => return Ok(to_login),
    };
    let paged = params.after.as_deref().is_some_and(|a| !a.is_empty());
    let filter = audit::Filter {
        after: params.after,
        limit: Some(PAGE_SIZE),
        ..audit::Filter::default()
    };
    let page = audit::list(&state, Some(&owner), filter).await?;
    let entries = page
        .entries
        .into_iter()
        .map(|entry| {
            let mut actor = match entry.actor_kind.as_str() {
                "user" => entry.actor.clone(),
                kind => format!("{kind}: {}", entry.actor),
            };
            if let Some(id) = entry.token_id {
                actor.push_str(&format!(" (token {id}"));
                if let Some(label) = &entry.token_label {
                    actor.push_str(&format!(", {label}"));
                }
                actor.push(')');
            }
            EntryRow {
                time: view::time_ms(entry.at_ms),
                actor,
                client: entry.client.unwrap_or_else(|| "–".into()),
                action: entry.action,
                target: entry.target,
                outcome: entry.outcome,
                detail: entry.detail.to_string(),
            }
        })
        .collect();
    render(&ActivityPage {
        nav: Nav::of(&visitor),
        owner: owner.name,
        retention_days: state.config.audit.retention_days,
        entries,
        paged,
        next: page.next,
    })
}
