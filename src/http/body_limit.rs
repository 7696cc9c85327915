//! Request bodies: each route reads at most what it needs.
//!
//! Only the upload takes a large body, and it enforces `limits.max_upload_bytes` itself
//! while streaming the package to storage. Every other route is wrapped here: forms take
//! at most `limits.max_form_bytes`, JSON bodies `limits.max_json_bytes`. A body declared
//! larger (`Content-Length`) is refused with 413 before a byte of it is read; one that
//! grows past the limit while streaming (chunked) is cut there, and its extractor
//! answers 413. Either way the answer says `Connection: close`, so the rest of the body
//! is never read.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// What a route's body is, for the message of a refusal.
#[derive(Debug, Clone, Copy)]
pub enum BodyKind {
    Form,
    Json,
}

/// The limit of a route's body: set by [`enforce`] as a request extension, so that an
/// extractor whose body was cut can say why.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub kind: BodyKind,
    pub bytes: u64,
}

impl BodyLimit {
    /// The refusal of a body over this limit.
    pub fn refusal(self) -> AppError {
        let (what, key) = match self.kind {
            BodyKind::Form => ("a form", "limits.max_form_bytes"),
            BodyKind::Json => ("a JSON body", "limits.max_json_bytes"),
        };
        AppError::PayloadTooLarge(format!(
            "{what} may have at most {} bytes here ({key}); packages are uploaded with PUT \
             /{{owner}}/{{branch}}/{{repository}}",
            self.bytes
        ))
    }

    /// The refusal an extractor gives when its body was cut at the limit.
    pub fn refusal_in(extensions: &axum::http::Extensions) -> AppError {
        match extensions.get::<BodyLimit>() {
            Some(limit) => limit.refusal(),
            None => AppError::PayloadTooLarge("the request body is too large".into()),
        }
    }
}

/// Wraps every route of a router: bodies over `limit` are refused.
pub async fn enforce(limit: BodyLimit, mut request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit.bytes) {
        return closing(limit.refusal().into_response());
    }
    request.extensions_mut().insert(limit);
    let bytes = usize::try_from(limit.bytes).unwrap_or(usize::MAX);
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, bytes)));
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return closing(response);
    }
    response
}

/// The client is still sending a body nobody will read: the connection ends with this
/// answer, rather than reading the rest to reach the next request.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
