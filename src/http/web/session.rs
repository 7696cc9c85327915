//! The web pages' side of login sessions: the cookies, the CSRF check of forms, and the
//! `Visitor` extractor. The sessions themselves are kept in the database by
//! `access::sessions`, so any instance answers for any session.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when the
//! visitor came over https); the database keeps the SHA-256 of that id, who logged in and
//! with what. Only the web pages read the cookie: the apk routes take credentials in the
//! `Authorization` header alone, so a browser's cookie never acts on them.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

pub use crate::access::sessions::random_token;
use crate::access::{sessions, Identity};
use crate::error::AppError;
use crate::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "alpine_registry_session";
/// The login form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_CSRF_COOKIE: &str = "alpine_registry_login";
/// How long the login form's CSRF cookie lives.
const LOGIN_CSRF_LIFETIME: Duration = Duration::from_secs(3600);

/// Whether a submitted CSRF token is the expected one, in constant time.
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, for the whole site, `Secure` when
/// the visitor came over https. `max_age` zero removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    ))
    .expect("cookie values are hex")
}

/// The login form's CSRF cookie, for `value`.
pub fn login_csrf_cookie(value: &str, secure: bool) -> HeaderValue {
    set_cookie(LOGIN_CSRF_COOKIE, value, LOGIN_CSRF_LIFETIME, secure)
}

/// Who is looking at a page: the identity the access rules judge, and the session it came
/// from, if any.
pub struct Visitor {
    pub identity: Identity,
    pub session: Option<SessionView>,
    /// The client's address (behind a trusted proxy, the one it reports), for the
    /// failure throttle.
    pub address: Option<std::net::IpAddr>,
    /// The connection's peer, which decides whether forwarding headers are believed.
    pub peer: Option<std::net::IpAddr>,
}

/// A session as a page uses it: its id, and the token its forms must carry.
#[derive(Clone)]
pub struct SessionView {
    pub id: String,
    pub csrf: String,
}

impl Visitor {
    pub fn user_name(&self) -> Option<&str> {
        match &self.identity {
            Identity::User(p) => Some(p.user.name.as_str()),
            Identity::Anonymous => None,
        }
    }

    /// Refuses a form whose `csrf` field is not this session's token: 403, before
    /// anything is changed.
    pub fn check_csrf(&self, submitted: &str) -> Result<&SessionView, AppError> {
        match &self.session {
            Some(session) if tokens_match(&session.csrf, submitted) => Ok(session),
            Some(_) => Err(AppError::Forbidden(
                "the form's security token is missing or stale: reload the page and submit \
                 it again"
                    .into(),
            )),
            None => Err(AppError::Forbidden(
                "this form needs a login session: log in, then submit it again".into(),
            )),
        }
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = AppError;

    /// The session cookie, or else an `Authorization` header (as on the apk routes, for
    /// scripts), or else nobody.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let address = crate::http::client::ClientAddr::of(&parts.extensions);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE) {
            if let Some(principal) = sessions::resume(state, id).await? {
                return Ok(Visitor {
                    identity: Identity::User(principal),
                    session: Some(SessionView {
                        id: id.to_string(),
                        csrf: sessions::csrf_token(id),
                    }),
                    address,
                    peer,
                });
            }
        }
        let identity = if parts.headers.contains_key(AUTHORIZATION) {
            Identity::from_request_parts(parts, state).await?
        } else {
            Identity::Anonymous
        };
        Ok(Visitor {
            identity,
            session: None,
            address,
            peer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn csrf_tokens_are_compared_whole() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("x_alpine_registry_session=bad; alpine_registry_session=good"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("good"));
        assert_eq!(cookie(&headers, LOGIN_CSRF_COOKIE), None);
    }

    #[test]
    fn session_cookies_are_http_only_and_same_site() {
        let plain = set_cookie(SESSION_COOKIE, "ab", HOUR, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Lax"));
        assert!(!plain.contains("Secure"));
        let secure = set_cookie(SESSION_COOKIE, "ab", HOUR, true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }
}
