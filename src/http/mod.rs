//! The HTTP interface: routes, layers, and one module per resource.

mod api;
mod body_idle;
mod body_limit;
pub mod chunks;
pub mod client;
mod conditional;
pub mod connections;
mod health;
mod identity;
mod indexes;
mod keys;
pub mod metrics;
pub mod origin;
mod packages;
mod paths;
pub mod ready;
mod remote;
mod web;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::names::{FileAddress, RepoFile};
use crate::AppState;

pub use crate::access::authorize;

/// `{arch}/APKINDEX.tar.gz`, `{arch}/Packages.adb` and `{arch}/{name}-{version}.apk` share
/// one route shape.
async fn get_file(
    State(state): State<AppState>,
    identity: Identity,
    at: FileAddress,
    method: Method,
    headers: HeaderMap,
) -> AppResult<Response> {
    match &at.file {
        RepoFile::Index => {
            let which = indexes::Which::V2;
            indexes::get(
                &state,
                &identity,
                &at.repo,
                at.at.as_ref(),
                &at.arch,
                which,
                &method,
                &headers,
            )
            .await
        }
        RepoFile::AdbIndex => {
            let which = indexes::Which::Adb;
            indexes::get(
                &state,
                &identity,
                &at.repo,
                at.at.as_ref(),
                &at.arch,
                which,
                &method,
                &headers,
            )
            .await
        }
        RepoFile::Package(file) => {
            packages::download(
                &state,
                &identity,
                &at.repo,
                at.at.as_ref(),
                &at.arch,
                file,
                &method,
                &headers,
            )
            .await
        }
    }
}

/// The routes of one owner namespace below `base`, but the upload.
fn owner_routes(base: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{base}/key"), get(keys::get))
        .route(&format!("{base}/keys/{{keyname}}"), get(keys::get_named))
        .route(
            &format!("{base}/{{branch}}/{{repository}}/{{arch}}/{{file}}"),
            get(get_file).delete(packages::delete),
        )
}

/// The upload into a repository of an owner namespace below `base`: the one route that
/// takes a large body (`limits.max_upload_bytes`, enforced while it streams).
fn upload_route(base: &str) -> Router<AppState> {
    Router::new().route(
        &format!("{base}/{{branch}}/{{repository}}"),
        axum::routing::put(packages::upload),
    )
}

/// `router`'s routes, with bodies over `limit` refused.
fn limited(router: Router<AppState>, limit: body_limit::BodyLimit) -> Router<AppState> {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            body_limit::enforce(limit, request, next)
        },
    ))
}

/// How to publish, for answers to requests that look like a misdirected upload.
const UPLOAD_HINT: &str =
    "upload with PUT /{owner}/{branch}/{repository}, the .apk as the body (curl --upload-file \
     FILE URL, with no trailing slash: curl appends the file name to a URL ending in /)";

/// What to do instead, for a request that matched no route or not its method.
fn hint(method: &Method, path: &str) -> String {
    if *method == Method::PUT || *method == Method::POST {
        return UPLOAD_HINT.to_string();
    }
    if path.len() > 1 && path.ends_with('/') {
        return "remove the trailing slash".to_string();
    }
    "packages and indexes are at /{owner}/{branch}/{repository}/{arch}/{file}, the signing \
     key at /{owner}/key; see the README for every endpoint"
        .to_string()
}

/// Every unmatched path answers in the same JSON shape as every other error.
async fn no_route(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!(
        "no endpoint at {method} {}: {}",
        truncated(uri.path()),
        hint(&method, uri.path())
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!(
        "{method} is not allowed on {} (the Allow header lists what is): {}",
        truncated(uri.path()),
        hint(&method, uri.path())
    ))
}

/// Keeps hostile paths from flooding error messages.
fn truncated(path: &str) -> String {
    path.chars().take(200).collect()
}

/// One line per answered request, in a span that carries it into the handler's own
/// lines: at the default level for every change (PUT, DELETE), every error (4xx, 5xx)
/// and every request with credentials; an anonymous download answered 2xx/3xx only at
/// `debug`, so that serving at full speed does not cost a formatted line per file (the
/// proxy or CDN in front usually logs those).
async fn log_request(request: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    // With credentials the span is made whatever the answer: an authentication failure
    // is logged inside it, naming the client.
    let quiet = matches!(*request.method(), Method::GET | Method::HEAD)
        && !request
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
        && !tracing::enabled!(tracing::Level::DEBUG);
    let method = request.method().clone();
    let uri = request.uri().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let client = client::ClientAddr::of(request.extensions());
    // The path only: a query string is the one place a client could put a secret of its
    // own accord.
    let span = || {
        tracing::info_span!(
            "request",
            method = %method,
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            path = %truncated(uri.path()),
            client = client.map(tracing::field::display),
            user = tracing::field::Empty,
        )
    };
    let answered = |response: &Response, span: tracing::Span| {
        use axum::body::HttpBody;
        // Known for every answer but a streamed one of unknown length.
        let bytes = response.body().size_hint().exact();
        let ms = started.elapsed().as_millis() as u64;
        let status = response.status().as_u16();
        span.in_scope(|| tracing::info!(status, ms, bytes, "answered"));
    };
    if quiet {
        // No span unless there is something to log.
        let response = next.run(request).await;
        if response.status().is_client_error() || response.status().is_server_error() {
            answered(&response, span());
        }
        return response;
    }
    let request_span = span();
    let response = next.run(request).instrument(request_span.clone()).await;
    answered(&response, request_span);
    response
}

pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let body_idle = Duration::from_secs(state.config.server.body_idle_timeout_secs);
    let keep = {
        let state = state.clone();
        move |request: Request, next: axum::middleware::Next| {
            ready::keep(state.clone(), request, next)
        }
    };
    let form = body_limit::BodyLimit {
        kind: body_limit::BodyKind::Form,
        bytes: state.config.limits.max_form_bytes,
    };
    let json = body_limit::BodyLimit {
        kind: body_limit::BodyKind::Json,
        bytes: state.config.limits.max_json_bytes,
    };
    let mut routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    // On a listener of its own when one is configured (and then a 404 here that says
    // where), else here for administrators.
    routes = match &state.config.server.metrics_listen {
        None => routes.route("/metrics", get(metrics::get_guarded)),
        Some(elsewhere) => {
            let message = format!("metrics are served on server.metrics_listen ({elsewhere})");
            routes.route(
                "/metrics",
                get(move || async move { AppError::NotFound(message) }),
            )
        }
    };
    // Gitea/Forgejo's layout beside the registry's own, so their users switch by changing
    // the host name only.
    let bases = ["/{owner}", "/api/packages/{owner}/alpine"];
    for base in bases {
        routes = routes.merge(owner_routes(base));
    }
    routes = limited(routes.merge(web::routes()), form).merge(limited(api::routes(), json));
    for base in bases {
        routes = routes.merge(upload_route(base));
    }
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Each route's own limit applies (`body_limit`, and the upload's while it streams).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                body_idle::enforce(body_idle, request, next)
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Only a body that fails after its head was sent is logged here: a 5xx status is
        // in the line of `log_request`, and error.rs logs its cause at the level it
        // deserves (a fault as an error, an unreachable database or an overload as a
        // warning).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|_: &Request| tracing::Span::none())
                .on_request(())
                .on_response(())
                .on_failure(
                    |class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span| {
                        if let ServerErrorsFailureClass::Error(error) = class {
                            tracing::error!(
                                error,
                                ms = latency.as_millis() as u64,
                                "response failed"
                            );
                        }
                    },
                ),
        )
        .layer(axum::middleware::from_fn(log_request))
        // Answers to keep in memory (`ready`), served before routing from then on.
        .layer(axum::middleware::from_fn(keep))
        // Outside the routes: every answer is counted.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        // Outermost: who the client is, for every layer and handler inside.
        .layer(axum::middleware::map_request_with_state(
            std::sync::Arc::new(client::Proxies::from_config(&state.config)),
            client::resolve,
        ))
        .with_state(state)
}
