//! The `Identity` extractor (HTTP Basic, Bearer, Gitea's `token`).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

use crate::access::{
    self, Identity, Outcome, Principal, Refusal, TOKEN_PREFIX, TOKEN_USE_RESOLUTION_SECS,
};
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::store::{Role, User};
use crate::AppState;

fn bad_credentials() -> AppError {
    AppError::Unauthorized(
        "invalid credentials: check the user name and the password or token".into(),
    )
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Identity> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Identity::Anonymous);
        };
        // Malformed credentials and impossible user names are refused before anything
        // is looked up, hashed or remembered.
        let credentials = Credentials::parse(value)?;
        let address = super::client::ClientAddr::of(&parts.extensions);
        authenticate(state, address, credentials).await
    }
}

/// Checks `credentials` from `address` through the failure throttle and the password
/// check limiter: the one way in for every credential, header or login form.
pub(crate) async fn authenticate(
    state: &AppState,
    address: Option<IpAddr>,
    credentials: Credentials,
) -> AppResult<Identity> {
    let attempt = match address {
        Some(ip) => Some(
            state
                .throttle
                .begin(ip, credentials.throttle_name(), credentials.is_password())
                .await?
                .map_err(refused)?,
        ),
        None => None,
    };
    let result = match credentials {
        Credentials::Token(secret) => token_identity(state, &secret).await,
        Credentials::Password { user, password } => password_identity(state, &user, password).await,
    };
    if let Some(attempt) = attempt {
        attempt
            .finish(match &result {
                Ok(_) => Outcome::Success,
                Err(AppError::Unauthorized(_)) => Outcome::Failure,
                Err(_) => Outcome::Undecided,
            })
            .await;
    }
    match &result {
        Ok(Identity::User(principal)) => {
            tracing::Span::current().record(
                "user",
                tracing::field::display(principal.user.name.as_str()),
            );
        }
        // The reason, never the secret; the request span names the client.
        Err(AppError::Unauthorized(reason)) => {
            tracing::warn!(reason = %reason, "authentication failed");
        }
        _ => {}
    }
    result
}

fn refused(refusal: Refusal) -> AppError {
    tracing::warn!(?refusal, "authentication attempt refused unchecked");
    match refusal {
        Refusal::Failures(wait) => {
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            AppError::TooManyRequests {
                message: format!(
                    "too many failed authentication attempts from this address: retry in \
                     {retry_after} s with the right credentials"
                ),
                retry_after,
            }
        }
        Refusal::Checking => AppError::TooManyRequests {
            message: "too many password checks under way from this address: send fewer \
                      requests at once, or use a token for parallel requests"
                .into(),
            retry_after: 1,
        },
    }
}

/// What an `Authorization` header (or the login form) carries.
pub(crate) enum Credentials {
    Token(String),
    Password { user: String, password: String },
}

impl Credentials {
    fn parse(value: &axum::http::HeaderValue) -> AppResult<Credentials> {
        let value = value.to_str().map_err(|_| bad_credentials())?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(bad_credentials)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| bad_credentials())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad_credentials())?;
            let (user, secret) = decoded.split_once(':').ok_or_else(bad_credentials)?;
            Credentials::from_pair(user, secret)
        } else if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            Ok(Credentials::Token(rest.to_string()))
        } else {
            Err(bad_credentials())
        }
    }

    /// A user name with a password or a token, as Basic credentials and the login form
    /// give them.
    pub(crate) fn from_pair(user: &str, secret: &str) -> AppResult<Credentials> {
        if secret.starts_with(TOKEN_PREFIX) {
            // The token alone identifies its user; the user name is not checked, so
            // `token:<secret>` works in URLs too.
            return Ok(Credentials::Token(secret.to_string()));
        }
        // A name no user can have (user names are owner names: at most 64
        // characters) is refused at once: no throttle entry, no hashing.
        if OwnerName::parse(user).is_err() {
            return Err(bad_credentials());
        }
        Ok(Credentials::Password {
            user: user.to_string(),
            password: secret.to_string(),
        })
    }

    fn is_password(&self) -> bool {
        matches!(self, Credentials::Password { .. })
    }

    /// Failures are counted per address and user name; tokens (which cannot be
    /// guessed) share one count per address.
    fn throttle_name(&self) -> &str {
        match self {
            Credentials::Token(_) => "",
            Credentials::Password { user, .. } => user,
        }
    }
}

async fn token_identity(state: &AppState, secret: &str) -> AppResult<Identity> {
    token_hash_identity(state, &access::hash_token(secret)).await
}

/// The identity of the token whose digest is `hash`, if it is still valid: for a login
/// session made with a token, which keeps the digest and never the secret.
pub(crate) async fn token_hash_identity(state: &AppState, hash: &str) -> AppResult<Identity> {
    let record = state
        .store
        .token_by_hash(hash)
        .await?
        .ok_or_else(bad_credentials)?;
    let now = state.clock.unix_secs();
    // The lookup is by digest; comparing it again in constant time keeps the decision
    // itself free of early exits.
    if !access::digests_equal(&record.token_hash, hash) {
        return Err(bad_credentials());
    }
    // Whoever holds the secret may learn why it no longer works.
    if record.revoked_at.is_some() {
        return Err(AppError::Unauthorized(
            "this token was revoked: create a new one (alpine-registry token create)".into(),
        ));
    }
    if let Some(at) = record.expires_at.filter(|at| *at <= now) {
        let when = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0)),
        );
        return Err(AppError::Unauthorized(format!(
            "this token expired on {when}: create a new one (alpine-registry token create)"
        )));
    }
    let user = state
        .store
        .user_by_name(&record.user_name)
        .await?
        .ok_or_else(bad_credentials)?;
    // Kept to the minute, off the request's path: most requests write nothing.
    if record
        .last_used_at
        .is_none_or(|at| now - at >= TOKEN_USE_RESOLUTION_SECS)
    {
        let (store, id) = (state.store.clone(), record.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(id, now).await {
                tracing::warn!(token = id, error = %e, "could not record the token's use");
            }
        });
    }
    Ok(Identity::User(Principal::from_token(user, &record)))
}

async fn password_identity(state: &AppState, name: &str, password: String) -> AppResult<Identity> {
    let user: Option<User> = state.store.user_by_name(name).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| access::dummy_password_hash().to_string());
    let ok = state
        .password_checks
        .verify(password, hash)
        .await
        .map_err(|access::Busy| AppError::Overloaded {
            message: "too many password checks in progress: retry shortly, or use a token \
                      (tokens are not slowed down by this)"
                .into(),
            retry_after: 1,
        })?;
    match user {
        Some(user) if ok && user.password_hash.is_some() => Ok(Identity::User(Principal {
            user,
            scope: Role::Admin,
            only_owner: None,
            token: None,
        })),
        _ => Err(bad_credentials()),
    }
}
