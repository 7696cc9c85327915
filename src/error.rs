//! The one place that decides HTTP status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::apk::ApkError;
use crate::blob::BlobError;
use crate::store::{Package, StoreError};

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
    /// An upload of a file that is stored already: 409, saying whether the stored file has
    /// the upload's very bytes.
    #[error("{}", .0.message)]
    Exists(Box<Exists>),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A change the dependency check refuses: 422, listing what would be unsatisfied.
    #[error("{message}")]
    UnsatisfiedDependencies {
        message: String,
        unsatisfied: Vec<String>,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RangeNotSatisfiable(u64),
    /// `If-Match` or `If-Unmodified-Since` does not hold for what would be served.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Unavailable(String),
    /// The upstream of a remote repository failed, and nothing verified of it is stored
    /// to serve instead: 502.
    #[error("{0}")]
    BadGateway(String),
    /// The client was too slow sending its request: 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// One client asks too often; it may retry after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// The server has no capacity for this now; retry after `retry_after` seconds.
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    /// The database or blob storage cannot be reached now: 503 with `Retry-After`
    /// (`BACKEND_RETRY_AFTER_SECS`), logged as a warning with `cause`, which clients never
    /// see.
    #[error("{message}")]
    BackendUnavailable { message: String, cause: String },
    /// Data the registry serves is missing from blob storage (a restore that copied the
    /// blobs before the database dump): 503 without `Retry-After`, logged as an error.
    #[error("{0}")]
    Damaged(String),
    /// A fault of the server: 500. `From<anyhow::Error>` gives `BackendUnavailable`
    /// instead when an unreachable backend is found anywhere in the error's chain.
    #[error(transparent)]
    Internal(anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

/// What a 409 to an upload says about the file stored under its name.
#[derive(Debug)]
pub struct Exists {
    pub message: String,
    /// The stored package, when its bytes are the upload's (a retry of the upload that
    /// stored it): the body says `"identical": true`, else false.
    pub identical: Option<Package>,
    /// Fields the body carries beside `error`, `message` and `identical`: the stored file
    /// as its own upload was answered, filled in by the adapter, which knows the URLs.
    pub answer: serde_json::Map<String, serde_json::Value>,
}

/// Seconds clients are told to wait (`Retry-After`) while a backend is unreachable.
pub const BACKEND_RETRY_AFTER_SECS: u64 = 5;

/// Which backend an error says is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Database,
    BlobStorage,
}

/// The backend that `err` itself (not its sources) says is unreachable.
fn backend_of(err: &(dyn std::error::Error + 'static)) -> Option<Backend> {
    if let Some(store) = err.downcast_ref::<StoreError>() {
        store.is_unavailable().then_some(Backend::Database)
    } else if let Some(sqlx) = err.downcast_ref::<sqlx::Error>() {
        crate::store::is_unavailable(sqlx).then_some(Backend::Database)
    } else if let Some(BlobError::Unavailable(_)) = err.downcast_ref::<BlobError>() {
        Some(Backend::BlobStorage)
    } else if let Some(io) = err.downcast_ref::<std::io::Error>() {
        // A stream's error carries the store's inside: `source` would skip it.
        io.get_ref().and_then(|inner| backend_of(inner))
    } else {
        None
    }
}

/// The backend that `err`, or any error in its chain of sources, says is unreachable.
pub fn unreachable_backend(err: &(dyn std::error::Error + 'static)) -> Option<Backend> {
    std::iter::successors(Some(err), |e| e.source()).find_map(backend_of)
}

/// Like `unreachable_backend`, for an `anyhow::Error` (its context layers included).
pub fn unreachable_backend_of(err: &anyhow::Error) -> Option<Backend> {
    err.chain().find_map(backend_of)
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) | AppError::Exists(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsatisfiedDependencies { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BackendUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Damaged(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl AppError {
    /// 503 with `Retry-After`: `backend` cannot be reached; `cause` is logged only.
    pub fn unreachable(backend: Backend, cause: impl std::fmt::Display) -> AppError {
        let message = match backend {
            Backend::Database => "the database is unreachable: retry shortly",
            Backend::BlobStorage => "blob storage is unreachable: retry shortly",
        };
        AppError::BackendUnavailable {
            message: message.to_string(),
            cause: cause.to_string(),
        }
    }

    /// Whether this answers that the database or blob storage is unreachable.
    pub fn is_backend_unavailable(&self) -> bool {
        matches!(self, AppError::BackendUnavailable { .. })
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        match unreachable_backend_of(&err) {
            Some(backend) => AppError::unreachable(backend, format!("{err:#}")),
            None => AppError::Internal(err),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(message) => AppError::Conflict(message),
            StoreError::NotFound(message) => AppError::NotFound(message),
            other if other.is_unavailable() => AppError::unreachable(Backend::Database, other),
            other => AppError::Internal(other.into()),
        }
    }
}

impl From<BlobError> for AppError {
    fn from(err: BlobError) -> Self {
        // A passing outage of remote storage, also when a stream that broke off says so:
        // the client may retry; the detail (which names the server) is logged, not sent.
        match (unreachable_backend(&err), err) {
            (Some(backend), err) => AppError::unreachable(backend, err),
            // Blobs are asked for by the digests of rows: one that is not there is damage
            // that no retry mends, but not a fault of the code either.
            (None, BlobError::NotFound(sha256)) => AppError::Damaged(format!(
                "the file of this package (sha256 {sha256}) is missing from blob storage: \
                 the registry's data is damaged; an administrator can list what is missing \
                 with `alpine-registry fsck`"
            )),
            (None, err) => AppError::Internal(err.into()),
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
            AppError::Damaged(message) => {
                tracing::error!("{message}");
                message.clone()
            }
            AppError::BackendUnavailable { message, cause } => {
                // An outage, not a bug: a warning, once per refused request.
                tracing::warn!(error = %cause, "{message}");
                message.clone()
            }
            AppError::RangeNotSatisfiable(_) => "requested range not satisfiable".to_string(),
            other => other.to_string(),
        };
        let mut body = json!({
            "error": status.canonical_reason().unwrap_or("error"),
            "message": message,
        });
        if let (AppError::Exists(exists), Some(fields)) = (&self, body.as_object_mut()) {
            fields.insert("identical".into(), exists.identical.is_some().into());
            for (key, value) in &exists.answer {
                fields.entry(key.as_str()).or_insert_with(|| value.clone());
            }
        }
        if let (AppError::UnsatisfiedDependencies { unsatisfied, .. }, Some(fields)) =
            (&self, body.as_object_mut())
        {
            fields.insert("unsatisfied".into(), unsatisfied.clone().into());
        }
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
            AppError::BackendUnavailable { .. } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(BACKEND_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}
