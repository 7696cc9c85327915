//! The webhooks page of an owner: its webhooks and their newest deliveries
//! (`registry::webhooks`), for the owner's admins (as `/api/v1/owners/{owner}/webhooks`).
//! Webhooks are added and removed with the command line or the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;

use super::activity::administered;
use super::session::Visitor;
use super::view;
use super::{render, Nav, PageError};
use crate::registry::webhooks;
use crate::AppState;

/// Deliveries shown per webhook.
const DELIVERIES_SHOWN: i64 = 20;

struct DeliveryRow {
    id: i64,
    time: String,
    event: String,
    state: String,
    attempts: i64,
    status: String,
    latency: String,
    error: String,
}

struct WebhookRow {
    id: i64,
    url: String,
    events: String,
    created: String,
    created_by: String,
    deliveries: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    nav: Nav,
    owner: String,
    webhooks: Vec<WebhookRow>,
}

/// `GET /{owner}/-/webhooks`: as the activity page, for the owner's admins.
pub async fn show(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(owner): Path<String>,
    uri: Uri,
) -> Result<Response, PageError> {
    let owner = match administered(&state, &visitor, &owner, &uri, "webhooks").await? {
        Ok(owner) => owner,
        Err(to_login) => return Ok(to_login),
    };
    let mut rows = Vec::new();
    for webhook in webhooks::list(&state, &owner).await? {
        let deliveries =
            webhooks::deliveries(&state, Some(&owner), webhook.id, Some(DELIVERIES_SHOWN))
                .await?
                .into_iter()
                .map(|d| DeliveryRow {
                    id: d.id,
                    time: view::time_ms(d.created_ms),
                    event: d.event,
                    state: d.state,
                    attempts: d.attempts,
                    status: d.last_status.map_or("–".into(), |s| s.to_string()),
                    latency: d
                        .last_latency_ms
                        .map_or("–".into(), |ms| format!("{ms} ms")),
                    error: d.last_error.unwrap_or_default(),
                })
                .collect();
        rows.push(WebhookRow {
            id: webhook.id,
            events: webhook.events().join(", "),
            url: webhook.url,
            created: view::time_ms(webhook.created_ms),
            created_by: webhook.created_by,
            deliveries,
        });
    }
    render(&WebhooksPage {
        nav: Nav::of(&visitor),
        owner: owner.name,
        webhooks: rows,
    })
}
