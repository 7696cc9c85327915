//! Login sessions of the web pages, kept in memory, and their CSRF tokens.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Lax` cookie (`Secure` when the
//! visitor came over https); the server keeps, under the SHA-256 of that id, who logged
//! in, with what right, and the session's CSRF token. Sessions end at logout, after
//! `auth.session_lifetime_secs`, when the server restarts, when the token they were made with is
//! revoked or expires, and when the user's password changes. Only the web pages read the
//! cookie: the apk routes take credentials in the `Authorization` header alone, so a
//! browser's cookie never acts on them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::{Identity, Principal};
use crate::error::AppError;
use crate::store::Role;
use crate::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "alpine_registry_session";
/// The login form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_CSRF_COOKIE: &str = "alpine_registry_login";
/// How long the login form's CSRF cookie lives.
const LOGIN_CSRF_LIFETIME: Duration = Duration::from_secs(3600);

/// What the server remembers of one login.
#[derive(Clone)]
struct Session {
    user: String,
    scope: Role,
    only_owner: Option<i64>,
    /// The digest of the token logged in with; None for a password login.
    token_hash: Option<String>,
    /// SHA-256 of the user's password hash at login: another password ends the session.
    password_fingerprint: Option<[u8; 32]>,
    csrf: String,
    expires: Instant,
}

/// The sessions of one server.
pub struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions {
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session of `lifetime` for `principal` (logged in with the token whose
    /// digest is `token_hash`, if any) and returns its id, for the cookie. With `max`
    /// sessions held already, the one nearest its end is dropped.
    pub fn create(
        &self,
        principal: &Principal,
        token_hash: Option<String>,
        lifetime: Duration,
        max: usize,
    ) -> String {
        let id = random_token();
        let session = Session {
            user: principal.user.name.clone(),
            scope: principal.scope,
            only_owner: principal.only_owner,
            password_fingerprint: match token_hash {
                Some(_) => None,
                None => principal.user.password_hash.as_deref().map(fingerprint),
            },
            token_hash,
            csrf: random_token(),
            expires: Instant::now() + lifetime,
        };
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= max {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= max {
                let nearest = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(key, _)| *key);
                if let Some(key) = nearest {
                    sessions.remove(&key);
                }
            }
        }
        sessions.insert(key(&id), session);
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let key = key(id);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(id));
    }
}

/// Sessions are looked up by the digest of their id: the map holds nothing a visitor
/// could send back, and a lookup takes no time that depends on how much of an id matched.
fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn fingerprint(password_hash: &str) -> [u8; 32] {
    Sha256::digest(password_hash.as_bytes()).into()
}

/// 32 bytes from the OS RNG, in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

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
    /// The address the request came from, for the failure throttle.
    pub address: Option<std::net::IpAddr>,
    /// The sessions of the web routes.
    pub sessions: Option<Arc<Sessions>>,
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
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let sessions = parts.extensions.get::<Arc<Sessions>>().cloned();
        if let (Some(sessions), Some(id)) = (&sessions, cookie(&parts.headers, SESSION_COOKIE)) {
            if let Some(session) = sessions.get(id) {
                if let Some(identity) = still_valid(state, &session).await? {
                    return Ok(Visitor {
                        identity,
                        session: Some(SessionView {
                            id: id.to_string(),
                            csrf: session.csrf,
                        }),
                        address,
                        sessions: Some(sessions.clone()),
                    });
                }
                sessions.remove(id);
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
            sessions,
        })
    }
}

/// The identity of a session, read again from the database: None when its user is gone,
/// its token revoked or expired, or its user's password changed.
async fn still_valid(state: &AppState, session: &Session) -> Result<Option<Identity>, AppError> {
    if let Some(hash) = &session.token_hash {
        return match super::super::identity::token_hash_identity(state, hash).await {
            Ok(identity) => Ok(Some(identity)),
            Err(AppError::Unauthorized(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let Some(user) = state.store.user_by_name(&session.user).await? else {
        return Ok(None);
    };
    let current = user.password_hash.as_deref().map(fingerprint);
    if current.is_none() || current != session.password_fingerprint {
        return Ok(None);
    }
    Ok(Some(Identity::User(Principal {
        user,
        scope: session.scope,
        only_owner: session.only_owner,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::User;

    const HOUR: Duration = Duration::from_secs(3600);

    fn principal() -> Principal {
        Principal {
            user: User {
                id: 1,
                name: "alice".into(),
                is_admin: false,
                password_hash: Some("$argon2id$x".into()),
            },
            scope: Role::Admin,
            only_owner: None,
        }
    }

    #[test]
    fn a_session_is_found_by_its_id_only() {
        let sessions = Sessions::new();
        let id = sessions.create(&principal(), None, HOUR, 10);
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.get(&id).unwrap().user, "alice");
        assert!(sessions.get(&id[..63]).is_none());
        assert!(sessions.get("").is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn past_the_cap_the_session_nearest_its_end_goes() {
        let sessions = Sessions::new();
        let short = sessions.create(&principal(), None, HOUR, 2);
        let long = sessions.create(&principal(), None, 2 * HOUR, 2);
        let newest = sessions.create(&principal(), None, HOUR * 3, 2);
        assert!(sessions.get(&short).is_none());
        assert!(sessions.get(&long).is_some());
        assert!(sessions.get(&newest).is_some());
        let expired = sessions.create(&principal(), None, Duration::ZERO, 10);
        assert!(sessions.get(&expired).is_none());
    }

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
