//! Login (user name with a password, or a token with or without a user name) into a
//! session, and logout.
//!
//! The login form is protected by a double submit: `GET /-/login` sets a random value in
//! a cookie and the same value in the form; `POST /-/login` proceeds only when both are
//! there and equal. The credentials then go through the same failure throttle and
//! password check limiter as those of an `Authorization` header.

use super::Form;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{self, Visitor, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use super::{render_status, Nav, PageError};
use crate::access::{self, sessions, Identity, TOKEN_PREFIX};
use crate::error::AppError;
use crate::http::identity::{authenticate, Credentials};
use crate::http::origin::{base_url, Origin};
use crate::AppState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    csrf: String,
    next: String,
    user: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Whether the visitor reached the registry over https (directly as configured in
/// `server.public_url`, or as a trusted proxy says): the cookies are then `Secure`.
fn over_https(state: &AppState, visitor: &Visitor, headers: &HeaderMap, uri: &Uri) -> bool {
    base_url(
        &state.config,
        &Origin {
            headers,
            uri,
            peer: visitor.peer,
        },
    )
    .starts_with("https://")
}

/// A path on this site to return to after login; anything else (another site, a
/// scheme-relative `//host`) goes home.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(char::is_control) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

/// `GET /-/login`: the form, with a fresh CSRF cookie unless the visitor has one.
pub async fn form(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let existing = session::cookie(&headers, LOGIN_CSRF_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let csrf = existing.map_or_else(session::random_token, str::to_string);
    let page = LoginPage {
        nav: Nav::of(&visitor),
        csrf: csrf.clone(),
        next: local_path(query.next.as_deref()),
        user: String::new(),
        error: None,
    };
    let mut response = render_status(StatusCode::OK, &page)?;
    let secure = over_https(&state, &visitor, &headers, &uri);
    response.headers_mut().append(
        header::SET_COOKIE,
        session::login_csrf_cookie(&csrf, secure),
    );
    Ok(response)
}

/// `POST /-/login`: checks the double-submitted token, then the credentials; on success
/// a new session and a redirect to `next`.
pub async fn submit(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let expected = session::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if !session::tokens_match(expected, &form.csrf) {
        return Err(AppError::Forbidden(
            "the login form's security token is missing or stale: open the login page again \
             (cookies must be enabled)"
                .into(),
        )
        .into());
    }
    let next = local_path(Some(&form.next));
    let again = |status: StatusCode, error: String| {
        render_status(
            status,
            &LoginPage {
                nav: Nav::of(&visitor),
                csrf: form.csrf.clone(),
                next: next.clone(),
                user: form.user.clone(),
                error: Some(error),
            },
        )
    };
    // What refuses a login is answered with the form again, and its status.
    let refused = |err: AppError| -> Result<Response, PageError> {
        match err {
            AppError::Unauthorized(message) => again(StatusCode::UNAUTHORIZED, message),
            AppError::TooManyRequests {
                message,
                retry_after,
            } => retry_later(again(StatusCode::TOO_MANY_REQUESTS, message)?, retry_after),
            AppError::Overloaded {
                message,
                retry_after,
            } => retry_later(
                again(StatusCode::SERVICE_UNAVAILABLE, message)?,
                retry_after,
            ),
            other => Err(other.into()),
        }
    };
    // A token needs no user name (the field may stay empty); a password does.
    if form.user.trim().is_empty() && !form.secret.starts_with(TOKEN_PREFIX) {
        return refused(AppError::Unauthorized(
            "enter your user name with the password (a token needs none)".into(),
        ));
    }
    let checked = match Credentials::from_pair(form.user.trim(), &form.secret) {
        Ok(credentials) => authenticate(&state, visitor.address, credentials).await,
        Err(e) => Err(e),
    };
    let principal = match checked {
        Ok(Identity::User(principal)) => principal,
        Ok(Identity::Anonymous) => {
            return Err(AppError::Internal(anyhow::anyhow!("login gave no user")).into())
        }
        Err(e) => return refused(e),
    };
    let token_hash = form
        .secret
        .starts_with(TOKEN_PREFIX)
        .then(|| access::hash_token(&form.secret));
    let id = match sessions::start(&state, &principal, token_hash.as_deref()).await {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    // A session id is never reused across logins.
    if let Some(old) = &visitor.session {
        sessions::end(&state, &old.id).await?;
    }
    let lifetime = std::time::Duration::from_secs(state.config.auth.session_lifetime_secs);
    let secure = over_https(&state, &visitor, &headers, &uri);
    let mut response = Redirect::to(&next).into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, &id, lifetime, secure),
    );
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(LOGIN_CSRF_COOKIE, "", std::time::Duration::ZERO, secure),
    );
    tracing::info!(user = %principal.user.name, "logged in to the web pages");
    Ok(response)
}

/// `POST /-/logout`: ends the session, on every instance (the form carries its CSRF
/// token).
pub async fn logout(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let session = visitor.check_csrf(&form.csrf)?;
    sessions::end(&state, &session.id).await?;
    let secure = over_https(&state, &visitor, &headers, &uri);
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO, secure),
    );
    Ok(response)
}

fn retry_later(mut response: Response, retry_after: u64) -> Result<Response, PageError> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn login_returns_only_to_paths_of_this_site() {
        assert_eq!(local_path(Some("/acme/-/packages/x")), "/acme/-/packages/x");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(None), "/");
    }
}
