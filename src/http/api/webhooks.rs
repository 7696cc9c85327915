//! Webhooks of an owner and their deliveries (`registry::webhooks`), over HTTP: for admins
//! of the owner (site administrators are admins of every owner).

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::{owner_admin, ErrorBody, Json, Path, Query};
use crate::access::Identity;
use crate::error::AppResult;
use crate::http::client::Client;
use crate::registry::audit::Actor;
use crate::registry::webhooks::{self, Spec};
use crate::store::{Delivery, Webhook};
use crate::AppState;

/// A webhook to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where to POST the events: http or https, on a public address unless the server
    /// allows others (webhooks.allow_private_targets).
    pub url: String,
    /// The receiver checks each delivery's `X-Alpine-Registry-Signature-256:
    /// sha256=<hex HMAC-SHA256 of the body>` with it. Never shown again.
    pub secret: String,
    /// Any of package.published, package.deleted, index.published; all three when left
    /// out.
    #[serde(default)]
    pub events: Vec<String>,
}

/// How many deliveries to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesParams {
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

/// The owner's webhooks (never their secrets).
#[utoipa::path(get, path = "/api/v1/owners/{owner}/webhooks", tag = "webhooks",
    operation_id = "list_webhooks",
    params(("owner" = String, Path)),
    responses(
        (status = 200, body = Vec<Webhook>),
        (status = 400, body = ErrorBody, description = "An invalid owner name"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody, description = "No such owner the caller may read"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    identity: Identity,
    Path(owner): Path<String>,
) -> AppResult<axum::Json<Vec<Webhook>>> {
    let owner = owner_admin(&state, &identity, &owner).await?;
    Ok(axum::Json(webhooks::list(&state, &owner).await?))
}

/// Adds a webhook: from now on the owner's events it asks for are POSTed to its URL.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/webhooks", tag = "webhooks",
    operation_id = "add_webhook",
    params(("owner" = String, Path)),
    request_body = WebhookRequest,
    responses(
        (status = 201, body = Webhook),
        (status = 400, body = ErrorBody,
            description = "A URL that is not http(s), holds credentials or targets a \
                           loopback, link-local or private address; an empty or overlong \
                           secret; an unknown event; bad JSON"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody, description = "No such owner the caller may read"),
        (status = 409, body = ErrorBody,
            description = "The owner has webhooks.max_per_owner webhooks already"),
    ))]
pub async fn add(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path(owner): Path<String>,
    Json(request): Json<WebhookRequest>,
) -> AppResult<(StatusCode, axum::Json<Webhook>)> {
    let owner = owner_admin(&state, &identity, &owner).await?;
    let spec = Spec {
        url: request.url,
        secret: request.secret,
        events: request.events,
    };
    let webhook = webhooks::add(&state, &Actor::of(&identity, client), &owner, spec).await?;
    Ok((StatusCode::CREATED, axum::Json(webhook)))
}

/// Removes a webhook with its deliveries; pending ones are not sent.
#[utoipa::path(delete, path = "/api/v1/owners/{owner}/webhooks/{id}", tag = "webhooks",
    operation_id = "remove_webhook",
    params(("owner" = String, Path), ("id" = i64, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = ErrorBody, description = "An invalid owner name or id"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no such webhook of it"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    identity: Identity,
    Client(client): Client,
    Path((owner, id)): Path<(String, i64)>,
) -> AppResult<StatusCode> {
    let owner = owner_admin(&state, &identity, &owner).await?;
    webhooks::remove(&state, &Actor::of(&identity, client), Some(&owner), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's newest deliveries, newest first: event, state (pending, delivered,
/// failed), attempts, the last attempt's status code, latency and error.
#[utoipa::path(get, path = "/api/v1/owners/{owner}/webhooks/{id}/deliveries",
    tag = "webhooks", operation_id = "list_webhook_deliveries",
    params(("owner" = String, Path), ("id" = i64, Path), DeliveriesParams),
    responses(
        (status = 200, body = Vec<Delivery>),
        (status = 400, body = ErrorBody, description = "An invalid owner name, id or limit"),
        (status = 401, body = ErrorBody, description = "No credentials, or bad ones"),
        (status = 403, body = ErrorBody, description = "Not an admin of the owner"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, or no such webhook of it"),
    ))]
pub async fn deliveries(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, id)): Path<(String, i64)>,
    Query(params): Query<DeliveriesParams>,
) -> AppResult<axum::Json<Vec<Delivery>>> {
    let owner = owner_admin(&state, &identity, &owner).await?;
    Ok(axum::Json(
        webhooks::deliveries(&state, Some(&owner), id, params.limit).await?,
    ))
}
