//! The one place that decides HTTP status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::apk::ApkError;
use crate::blob::BlobError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(u64),
    #[error("{0}")]
    Unavailable(String),
    /// One client asks too often; it may retry after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// The server has no capacity for this now; retry after `retry_after` seconds.
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => AppError::Conflict(message),
            StoreError::NotFound(message) => AppError::NotFound(message),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<BlobError> for AppError {
    fn from(err: BlobError) -> Self {
        match err {
            // A passing outage of remote storage: the client may retry; the detail (which
            // names the server) is logged, not sent.
            BlobError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "blob storage unavailable");
                AppError::Overloaded {
                    message: "package storage is unavailable; retry later".into(),
                    retry_after: 5,
                }
            }
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<ApkError> for AppError {
    fn from(err: ApkError) -> Self {
        match err {
            ApkError::UnsupportedV3 => AppError::UnsupportedMediaType(err.to_string()),
            ApkError::Malformed(_) | ApkError::TooLarge { .. } => {
                AppError::BadRequest(format!("invalid package: {err}"))
            }
            ApkError::Io(_) | ApkError::Signing(_) => AppError::Internal(err.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            AppError::Internal(err) => {
                // Logged once here; clients learn nothing internal.
                tracing::error!(error = %format!("{err:#}"), "internal error");
                "internal server error".to_string()
            }
            AppError::RangeNotSatisfiable(_) => "requested range not satisfiable".to_string(),
            other => other.to_string(),
        };
        let body = json!({
            "error": status.canonical_reason().unwrap_or("error"),
            "message": message,
        });
        let mut response = (status, Json(body)).into_response();
        match self {
            AppError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"alpine-registry\", charset=\"UTF-8\""),
                );
            }
            AppError::RangeNotSatisfiable(size) => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
            }
            AppError::TooManyRequests { retry_after, .. }
            | AppError::Overloaded { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}
