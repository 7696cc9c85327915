//! Liveness and readiness probes.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{AppError, AppResult, Backend};
use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers and blob storage is reachable; else 503 with
/// `Retry-After`, within `database.acquire_timeout_secs`. Ready again once both are back,
/// without a restart: the database pool reconnects by itself.
pub async fn readyz(State(state): State<AppState>) -> AppResult<Json<Value>> {
    if let Err(e) = state.store.ping().await {
        return Err(AppError::unreachable(Backend::Database, e));
    }
    if let Err(e) = state.blobs.ping().await {
        return Err(AppError::unreachable(Backend::BlobStorage, e));
    }
    Ok(Json(json!({ "status": "ready" })))
}
