//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{AppError, AppResult, Backend};
use crate::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "server", operation_id = "healthz",
    responses((status = 200, description = "Alive", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers and blob storage is reachable; else 503 with
/// `Retry-After`, within `database.acquire_timeout_secs` and then
/// `storage.ready_timeout_secs` (a probe must not wait as long as a request would). Ready
/// again once both are back, without a restart: the database pool reconnects by itself.
#[utoipa::path(get, path = "/readyz", tag = "server", operation_id = "readyz",
    responses(
        (status = 200, description = "The database and blob storage answer", body = Object),
        (status = 503, description = "The database or blob storage is unreachable",
            body = super::api::ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> AppResult<Json<Value>> {
    if let Err(e) = state.store.ping().await {
        return Err(AppError::unreachable(Backend::Database, e));
    }
    let bound = Duration::from_secs(state.config.storage.ready_timeout_secs);
    match tokio::time::timeout(bound, state.blobs.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(AppError::unreachable(Backend::BlobStorage, e)),
        Err(_) => Err(AppError::unreachable(
            Backend::BlobStorage,
            format!(
                "no answer within {} s (storage.ready_timeout_secs)",
                bound.as_secs()
            ),
        )),
    }
}
