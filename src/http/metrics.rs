//! `GET /metrics`: Prometheus' text format. On the main listener only site administrators
//! may read it; on `server.metrics_listen` (a port kept for the monitoring network) anyone
//! who reaches it may.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::AppState;

/// The route on the main listener.
#[utoipa::path(get, path = "/metrics", tag = "server", operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus' text format 0.0.4",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "No credentials, or bad ones",
            body = super::api::ErrorBody),
        (status = 403, description = "Not a site administrator", body = super::api::ErrorBody),
        (status = 404, body = super::api::ErrorBody,
            description = "Served on server.metrics_listen instead (the message says where)"),
    ))]
pub async fn get_guarded(State(state): State<AppState>, identity: Identity) -> AppResult<Response> {
    match &identity {
        Identity::User(principal) if principal.user.is_admin && principal.only_owner.is_none() => {}
        Identity::User(_) => {
            return Err(AppError::Forbidden(
                "metrics are for site administrators (or serve them on server.metrics_listen)"
                    .into(),
            ))
        }
        Identity::Anonymous => {
            return Err(AppError::Unauthorized(
                "metrics need a site administrator's credentials (or serve them on \
                 server.metrics_listen)"
                    .into(),
            ))
        }
    }
    Ok(text(&state).await)
}

async fn text(state: &AppState) -> Response {
    let body = state.metrics.render(state.store.as_ref()).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// The router of `server.metrics_listen`: `/metrics` to anyone, nothing else.
pub fn listener_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { text(&state).await }),
        )
        .with_state(state)
}

/// Counts every answer by its matched route, method and status (the outermost layer, so
/// that answers from memory count too).
pub async fn count(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    // Index and package downloads share a route.
    let path = request.uri().path();
    let index_file = path.ends_with("/APKINDEX.tar.gz") || path.ends_with("/Packages.adb");
    let response = next.run(request).await;
    state.metrics.request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        index_file,
        &method,
        response.status().as_u16(),
    );
    response
}
