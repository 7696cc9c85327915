//! The HTTP client of the S3 store: object_store's `HttpService` over reqwest, with the
//! bounds that object_store's `ClientOptions` cannot express. Its `timeout` limits a whole
//! request, body included, so a long download over a slow link would be cut; without it,
//! a server that accepts connections and never answers holds a request forever. Here:
//!
//! - opening a connection is bounded on its own (`connect`);
//! - a request waits at most `wait` for its answer to start, counted from its last
//!   progress: its start, or the last piece of its body the connection took, so an upload
//!   that keeps moving is never cut and one that stalls is;
//! - an answer's body may pause at most `wait` between pieces, however long it lasts;
//! - an answer 5xx, 429 or 408 is returned as a failed request whose source is
//!   [`Answered`]. object_store retries it under its `RetryConfig` as it retries those
//!   statuses (`HttpErrorKind::Request` is retried whatever the method, as a 5xx is), and
//!   once the retries are spent its error still says what the server answered, which
//!   object_store's own error keeps in a private type.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::{ClientConfigKey, ClientOptions};
use reqwest::StatusCode;
use tokio::time::{Instant, Sleep};

/// Largest piece of a request body handed to the connection at once: the finer the pieces,
/// the closer the last progress of an upload is to what went out on the wire.
const PIECE: usize = 64 * 1024;

/// What the server answered instead of doing what was asked, when that may pass: 5xx, 429
/// (slow down) or 408 (request timeout).
#[derive(Debug, thiserror::Error)]
#[error("the server answered {0}")]
pub struct Answered(pub StatusCode);

fn passing(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Makes the bounded clients of an S3 store (object_store asks for one per purpose:
/// requests to the bucket, and to a credentials endpoint when there is one).
#[derive(Debug)]
pub struct BoundedConnector {
    pub connect: Duration,
    pub wait: Duration,
}

impl HttpConnector for BoundedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // The only option object_store sets that matters here: plain http to a local
        // server, or to a credentials endpoint.
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|value| value == "true");
        let client = reqwest::Client::builder()
            .user_agent(concat!("alpine-registry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect)
            // As object_store does by default: HTTP/2 is slower against S3.
            .http1_only()
            .https_only(!allow_http)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(Bounded {
            client,
            wait: self.wait,
        }))
    }
}

#[derive(Debug)]
struct Bounded {
    client: reqwest::Client,
    wait: Duration,
}

/// When a request last made progress.
struct Progress(Mutex<Instant>);

impl Progress {
    fn last(&self) -> Instant {
        *self.0.lock().expect("progress poisoned")
    }

    fn now(&self) {
        *self.0.lock().expect("progress poisoned") = Instant::now();
    }
}

#[async_trait]
impl HttpService for Bounded {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let progress = Arc::new(Progress(Mutex::new(Instant::now())));
        let (parts, body) = request.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let mut outgoing = reqwest::Request::new(parts.method, url);
        *outgoing.headers_mut() = parts.headers;
        *outgoing.body_mut() = Some(reqwest::Body::wrap(Sending {
            body,
            piece: Bytes::new(),
            progress: progress.clone(),
        }));
        let answer = self.client.execute(outgoing);
        tokio::pin!(answer);
        let response = loop {
            let deadline = progress.last() + self.wait;
            tokio::select! {
                result = &mut answer => break result.map_err(failed)?,
                () = tokio::time::sleep_until(deadline) => {
                    if progress.last() + self.wait <= Instant::now() {
                        return Err(timed_out(self.wait, "for the answer to start"));
                    }
                }
            }
        };
        if passing(response.status()) {
            return Err(HttpError::new(
                HttpErrorKind::Request,
                Answered(response.status()),
            ));
        }
        let (parts, body) = hyper::Response::<reqwest::Body>::from(response).into_parts();
        Ok(HttpResponse::from_parts(
            parts,
            HttpResponseBody::new(Receiving {
                body,
                wait: self.wait,
                pause: None,
            }),
        ))
    }
}

fn timed_out(wait: Duration, what: &str) -> HttpError {
    HttpError::new(
        HttpErrorKind::Timeout,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no progress within {} s, waiting {what}", wait.as_secs()),
        ),
    )
}

/// A reqwest failure, by the kind object_store's retries go by: failures to connect or
/// to send are retried, timeouts and broken connections when the request may be repeated.
fn failed(e: reqwest::Error) -> HttpError {
    let mut kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&e);
    while let (HttpErrorKind::Unknown, Some(cause)) = (kind, source) {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_closed() || hyper.is_incomplete_message() || hyper.is_body_write_aborted() {
                kind = HttpErrorKind::Request;
            } else if hyper.is_timeout() {
                kind = HttpErrorKind::Timeout;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                TimedOut => kind = HttpErrorKind::Timeout,
                ConnectionAborted | ConnectionReset | BrokenPipe | UnexpectedEof => {
                    kind = HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        source = cause.source();
    }
    HttpError::new(kind, e.without_url())
}

/// A request body, handed to the connection in pieces of at most `PIECE` bytes, each
/// taken recording progress.
struct Sending {
    body: HttpRequestBody,
    /// What is left of the body's current frame.
    piece: Bytes,
    progress: Arc<Progress>,
}

impl Body for Sending {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.piece.is_empty() {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.piece = data,
                    Err(frame) => {
                        this.progress.now();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                end => {
                    this.progress.now();
                    return Poll::Ready(end);
                }
            }
        }
        let piece = this.piece.split_to(this.piece.len().min(PIECE));
        this.progress.now();
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.piece.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.body.size_hint();
        let piece = self.piece.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + piece);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + piece);
        }
        hint
    }
}

/// An answer's body that fails when it pauses longer than `wait` while read.
struct Receiving {
    body: reqwest::Body,
    wait: Duration,
    /// Running while the body has nothing to give: since the first read that found
    /// nothing after the last piece.
    pause: Option<Pin<Box<Sleep>>>,
}

impl Body for Receiving {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.pause = None;
            return Poll::Ready(frame.map(|result| result.map_err(failed)));
        }
        let wait = this.wait;
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
        ready!(pause.as_mut().poll(cx));
        Poll::Ready(Some(Err(timed_out(wait, "for the rest of the answer"))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
