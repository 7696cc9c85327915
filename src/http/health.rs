//! Liveness and readiness probes.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{AppError, AppResult};
use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers and blob storage is reachable.
pub async fn readyz(State(state): State<AppState>) -> AppResult<Json<Value>> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "database not ready");
        return Err(AppError::Unavailable("database unreachable".into()));
    }
    if let Err(e) = state.blobs.ping().await {
        tracing::warn!(error = %e, "blob storage not ready");
        return Err(AppError::Unavailable("blob storage unreachable".into()));
    }
    Ok(Json(json!({ "status": "ready" })))
}
