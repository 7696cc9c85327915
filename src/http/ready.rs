//! Complete answers to anonymous downloads, kept in memory by path, so that serving a
//! public index or a small package again costs a lookup and a copy of its headers: no
//! routing, no extractors, no access check, no headers to format.
//!
//! An answer is kept only when the handler marked it [`Ready`] (a public owner, the body
//! whole in memory, a full 200 to a request with no credentials and no conditions), and
//! only for the store's read epoch it was made in: any change to what it was read from
//! moves the epoch (see `store::read_cache`), and every answer of an older epoch is
//! dropped. A request this cannot answer exactly as the handler would (credentials,
//! ranges, conditions other than an exact validator) goes the full way.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;

use crate::AppState;

/// Answers kept at most; past that the table starts over.
const MAX_ANSWERS: usize = 4096;

/// A handler's mark on a response that may be kept: the body it sent, whole, and when
/// what it sent became current (Unix milliseconds), to judge `If-Modified-Since` by.
/// Only a response whose `Last-Modified` is final may be marked (see
/// `conditional::Entity::last_modified_is_final`).
#[derive(Clone)]
pub struct Ready {
    pub body: Bytes,
    pub modified_ms: i64,
}

/// Marks `response` to be kept when it may be: a full 200 that anyone asking without
/// credentials would get the same (an anonymous request to a public owner), whose
/// `Last-Modified` is final, with `body` its whole body.
pub fn mark(
    response: &mut Response,
    identity: &crate::access::Identity,
    owner: &crate::store::Owner,
    entity: &super::conditional::Entity,
    body: Bytes,
) {
    if response.status() == StatusCode::OK
        && matches!(identity, crate::access::Identity::Anonymous)
        && !owner.is_private
        && entity.last_modified_is_final()
    {
        response.extensions_mut().insert(Ready {
            body,
            modified_ms: entity.modified_ms,
        });
    }
}

/// One kept answer.
struct Answer {
    /// Every header of the 200 (ETag, Last-Modified, Cache-Control, Content-Type,
    /// Content-Length, ...).
    headers: HeaderMap,
    /// The same without the body's own headers, for a 304.
    not_modified: HeaderMap,
    etag: Option<HeaderValue>,
    modified_ms: i64,
    body: Bytes,
    /// The route pattern that answered it, for the request counters.
    route: Option<MatchedPath>,
}

#[derive(Default)]
struct Table {
    epoch: u64,
    bytes: usize,
    answers: HashMap<Box<str>, Arc<Answer>>,
}

/// The kept answers, at most `budget` bytes of bodies.
pub struct ReadyAnswers {
    budget: usize,
    table: RwLock<Table>,
}

impl ReadyAnswers {
    pub fn new(budget: usize) -> ReadyAnswers {
        ReadyAnswers {
            budget,
            table: RwLock::new(Table::default()),
        }
    }

    fn get(&self, path: &str, epoch: u64) -> Option<Arc<Answer>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        if table.epoch != epoch {
            return None;
        }
        table.answers.get(path).cloned()
    }

    fn put(
        &self,
        path: &str,
        epoch: u64,
        headers: &HeaderMap,
        ready: Ready,
        route: Option<MatchedPath>,
    ) {
        let Ready { body, modified_ms } = ready;
        if body.len() > self.budget {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.epoch != epoch
            || table.answers.len() >= MAX_ANSWERS
            || table.bytes + body.len() > self.budget
        {
            // Older epochs can only be dropped: an answer made in a newer epoch than the
            // table's replaces it; one from an older epoch is not kept.
            if epoch < table.epoch {
                return;
            }
            *table = Table {
                epoch,
                ..Table::default()
            };
        }
        let mut not_modified = headers.clone();
        not_modified.remove(header::CONTENT_TYPE);
        not_modified.remove(header::CONTENT_LENGTH);
        let answer = Answer {
            etag: headers.get(header::ETAG).cloned(),
            modified_ms,
            headers: headers.clone(),
            not_modified,
            body,
            route,
        };
        table.bytes += answer.body.len();
        if let Some(old) = table.answers.insert(path.into(), Arc::new(answer)) {
            table.bytes -= old.body.len();
        }
    }
}

/// What a request asks of a kept answer.
enum Asked {
    /// The whole file (or its headers, for HEAD).
    Full,
    /// A 304 if this validator is current, else the full way.
    IfNoneMatch(HeaderValue),
    /// Unix seconds.
    IfModifiedSince(i64),
}

/// Whether a request can be answered from a kept answer, and how.
fn asked(method: &Method, headers: &HeaderMap) -> Option<Asked> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    if headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(header::RANGE)
        || headers.contains_key(header::IF_MATCH)
        || headers.contains_key(header::IF_UNMODIFIED_SINCE)
    {
        return None;
    }
    // If-None-Match decides alone when present (RFC 9110, 13.2.2). Repeated or unreadable
    // validators go the full way.
    let single = |name| {
        let mut values = headers.get_all(name).iter();
        values.next().filter(|_| values.next().is_none())
    };
    if headers.contains_key(header::IF_NONE_MATCH) {
        return single(header::IF_NONE_MATCH).map(|tag| Asked::IfNoneMatch(tag.clone()));
    }
    if headers.contains_key(header::IF_MODIFIED_SINCE) {
        let date = single(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
        let since = httpdate::parse_http_date(date).ok()?;
        let secs = since.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        return Some(Asked::IfModifiedSince(i64::try_from(secs).ok()?));
    }
    Some(Asked::Full)
}

fn answer(answer: &Answer, status: StatusCode, head_only: bool) -> Response {
    let (headers, body) = if status == StatusCode::NOT_MODIFIED {
        (answer.not_modified.clone(), Body::empty())
    } else if head_only {
        (answer.headers.clone(), Body::empty())
    } else {
        (answer.headers.clone(), Body::from(answer.body.clone()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

impl ReadyAnswers {
    /// The answer to a request with this method, path and headers, if one is kept and
    /// the request asks nothing of it that only the full way can judge. Called by the
    /// connection for each request before routing; what it answers is counted here.
    pub fn answer(
        &self,
        state: &AppState,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let asked = asked(method, headers)?;
        let epoch = state.store.read_epoch()?;
        // At debug level every download is logged, which only the full way does.
        if tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        let kept = self.get(path, epoch)?;
        let head_only = method == Method::HEAD;
        // The entity tag itself is answered here; any other (a list, a weak tag, another
        // tag) goes the full way, which compares them as RFC 9110 says. A date is judged
        // as the full way does (`conditional::Entity::unchanged_since`).
        let status = match asked {
            Asked::Full => StatusCode::OK,
            Asked::IfNoneMatch(ref tag) if kept.etag.as_ref() == Some(tag) => {
                StatusCode::NOT_MODIFIED
            }
            Asked::IfModifiedSince(since) if kept.modified_ms <= since.saturating_mul(1000) => {
                StatusCode::NOT_MODIFIED
            }
            Asked::IfModifiedSince(_) => StatusCode::OK,
            Asked::IfNoneMatch(_) => return None,
        };
        if let Some(route) = &kept.route {
            state.metrics.request(
                route.as_str(),
                path.ends_with("/APKINDEX.tar.gz") || path.ends_with("/Packages.adb"),
                method,
                status.as_u16(),
            );
        }
        Some(answer(&kept, status, head_only))
    }
}

/// A layer inside the router: keeps what handlers mark, for `ReadyAnswers::answer` to
/// serve next time.
pub async fn keep(state: AppState, request: Request, next: Next) -> Response {
    let keep = request.method() == Method::GET
        && matches!(
            asked(request.method(), request.headers()),
            Some(Asked::Full)
        );
    let Some(epoch) = state.store.read_epoch().filter(|_| keep) else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_string();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    let marked = response.extensions_mut().remove::<Ready>();
    if let (Some(marked), StatusCode::OK) = (marked, response.status()) {
        state
            .ready
            .put(&path, epoch, response.headers(), marked, route);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(etag: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_str(etag).unwrap());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers
    }

    fn body(bytes: &[u8]) -> Ready {
        Ready {
            body: Bytes::copy_from_slice(bytes),
            modified_ms: 0,
        }
    }

    #[test]
    fn answers_live_for_their_epoch_only() {
        let ready = ReadyAnswers::new(1024);
        ready.put("/a", 1, &headers("\"x\""), body(b"abc"), None);
        let kept = ready.get("/a", 1).expect("kept");
        assert_eq!(kept.body, Bytes::from_static(b"abc"));
        assert!(!kept.not_modified.contains_key(header::CONTENT_LENGTH));
        assert!(ready.get("/a", 2).is_none());
        // An answer from an older epoch never replaces newer ones.
        ready.put("/b", 2, &headers("\"y\""), body(b"def"), None);
        ready.put("/c", 1, &headers("\"z\""), body(b"ghi"), None);
        assert!(ready.get("/b", 2).is_some());
        assert!(ready.get("/c", 1).is_none() && ready.get("/c", 2).is_none());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let ready = ReadyAnswers::new(8);
        ready.put("/big", 1, &headers("\"b\""), body(&[0u8; 9]), None);
        assert!(ready.get("/big", 1).is_none());
        ready.put("/a", 1, &headers("\"a\""), body(&[0u8; 5]), None);
        ready.put("/b", 1, &headers("\"b\""), body(&[0u8; 5]), None);
        // Over the budget the table starts over with the newest.
        assert!(ready.get("/a", 1).is_none());
        assert!(ready.get("/b", 1).is_some());
        let table = ready.table.read().unwrap();
        assert_eq!(table.bytes, 5);
    }
}
