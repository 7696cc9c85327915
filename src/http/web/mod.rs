//! The web pages: server-rendered HTML (templates under `templates/`, compiled into the
//! binary by askama), one embedded style sheet, login sessions and CSRF-protected forms.
//! Every page reads through the same access rules as the apk routes.
//!
//! Routes (none shadows an apk route: `-` can be neither an owner nor a branch):
//! `GET /`, `GET /-/search`, `GET|POST /-/login`, `POST /-/logout`, `GET /-/static/{file}`,
//! `GET /{owner}`, `GET /{owner}/-/setup/{branch}/{repository}`,
//! `GET /{owner}/-/packages/{name}`, `GET|POST /{owner}/-/packages/{name}/delete`,
//! `GET /{owner}/-/index/{branch}/{repository}`, `GET /{owner}/-/activity` and `GET /{owner}/-/webhooks` (its admins).

mod activity;
mod delete;
mod login;
mod pages;
pub mod session;
mod view;
mod webhooks;

use askama::Template;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::AppError;
use crate::AppState;
use session::Visitor;

/// The web pages' routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/-/search", get(pages::search))
        .route("/-/login", get(login::form).post(login::submit))
        .route("/-/logout", axum::routing::post(login::logout))
        .route("/-/static/{file}", get(static_file))
        .route("/{owner}", get(pages::owner))
        .route("/{owner}/-/setup/{branch}/{repository}", get(pages::setup))
        .route("/{owner}/-/packages/{name}", get(pages::package))
        .route(
            "/{owner}/-/packages/{name}/delete",
            get(delete::confirm).post(delete::submit),
        )
        .route(
            "/{owner}/-/index/{branch}/{repository}",
            get(pages::index_status),
        )
        .route("/{owner}/-/activity", get(activity::show))
        .route("/{owner}/-/webhooks", get(webhooks::show))
        .layer(axum::middleware::map_response(page_headers))
}

/// What every page answers with: no framing, no scripts, nothing from elsewhere, and no
/// shared caching of a page that depends on who is logged in.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    response
}

/// The style sheet, the one file under `/-/static/`.
const STYLE: &str = include_str!("style.css");

async fn static_file(Path(file): Path<String>) -> Result<Response, PageError> {
    if file != "style.css" {
        return Err(AppError::NotFound(format!("no file /-/static/{file}")).into());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response())
}

/// The header of every page: who is logged in, and the token of the logout form.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// Whether the visitor is known: an error page, answered before that is, shows
    /// neither a user nor a login link.
    pub known: bool,
    pub user: Option<String>,
    pub csrf: Option<String>,
}

impl Nav {
    pub fn of(visitor: &Visitor) -> Nav {
        Nav {
            known: true,
            user: visitor.user_name().map(str::to_string),
            csrf: visitor.session.as_ref().map(|s| s.csrf.clone()),
        }
    }
}

/// Renders a page template as a 200 answer.
pub fn render(page: &impl Template) -> Result<Response, PageError> {
    render_status(StatusCode::OK, page)
}

pub fn render_status(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    let html = page
        .render()
        .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("rendering a page")))?;
    Ok((status, Html(html)).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

/// An error answered as an HTML page, with the status (and `Retry-After`) the JSON
/// answer of the same error would have.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(err: AppError) -> Self {
        PageError(err)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let message = match &self.0 {
            AppError::Internal(_) => "Something went wrong on the server.".to_string(),
            AppError::BackendUnavailable { message, .. } => message.clone(),
            other => other.to_string(),
        };
        // Status, headers, and the logging of server faults, as for any other answer.
        let (mut parts, _) = self.0.into_response().into_parts();
        // A browser would answer this with its own password prompt, which logs nobody into
        // the pages.
        parts.headers.remove(header::WWW_AUTHENTICATE);
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        let title = parts
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let page = ErrorPage {
            nav: Nav::default(),
            title,
            message,
        };
        let html = page
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title>".to_string());
        (parts, Html(html)).into_response()
    }
}

/// A form body, refused as a page: 413 past `limits.max_form_bytes`, else 400.
pub struct Form<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Form<T> {
    type Rejection = PageError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, PageError> {
        let over_limit = super::body_limit::BodyLimit::refusal_in(request.extensions());
        axum::Form::<T>::from_request(request, state)
            .await
            .map(|form| Form(form.0))
            .map_err(|e| {
                PageError(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    over_limit
                } else {
                    AppError::BadRequest(format!("bad form: {}", e.body_text()))
                })
            })
    }
}
