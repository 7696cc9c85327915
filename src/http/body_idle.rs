//! Request bodies that stop arriving: a body that sends nothing for
//! `server.body_idle_timeout_secs` while the handler waits for it ends the request with
//! 408, and the connection with it (the rest of the body is never read). The time counts
//! only while the handler asks for more: a handler busy with what it has (writing a chunk
//! to storage) does not make its client late.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use tokio::time::{Instant, Sleep};

use crate::error::AppError;

/// Wraps every route: the body of `request`, if it has one, may not send nothing for
/// `timeout`.
pub async fn enforce(timeout: Duration, request: Request, next: Next) -> Response {
    // Requests without a body (every download) pass as they are.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let idled = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Watched {
            body,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            idled: idled.clone(),
        })
    });
    let response = next.run(request).await;
    if !idled.load(Ordering::Relaxed) {
        return response;
    }
    // Whatever the handler made of a body that broke off, the client was too slow.
    let mut response = AppError::RequestTimeout(format!(
        "the request body sent nothing for {} s (server.body_idle_timeout_secs)",
        timeout.as_secs()
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A body that fails once it has sent nothing for `timeout` while polled.
struct Watched {
    body: Body,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` runs for the current wait (it starts when a poll finds nothing).
    armed: bool,
    idled: Arc<AtomicBool>,
}

/// What a body that sent nothing for too long fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0} s")]
struct Idle(u64);

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame);
        }
        if !this.armed {
            this.sleep.as_mut().reset(Instant::now() + this.timeout);
            this.armed = true;
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.idled.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(Idle(this.timeout.as_secs())))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
