//! The `Identity` extractor (HTTP Basic, Bearer) and the owner access check.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

use crate::auth::{self, Access, Identity, Principal, TOKEN_PREFIX};
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::store::{Owner, Role, User};
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
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        if let Some(delay) = ip.and_then(|ip| state.throttle.delay_for(ip)) {
            tokio::time::sleep(delay).await;
        }
        let result = identify(value, state).await;
        if let Some(ip) = ip {
            match &result {
                Ok(_) => state.throttle.record_success(ip),
                Err(AppError::Unauthorized(_)) => state.throttle.record_failure(ip),
                Err(_) => {}
            }
        }
        result
    }
}

async fn identify(value: &axum::http::HeaderValue, state: &AppState) -> AppResult<Identity> {
    let value = value.to_str().map_err(|_| bad_credentials())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(bad_credentials)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad_credentials())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad_credentials())?;
        let (user, secret) = decoded.split_once(':').ok_or_else(bad_credentials)?;
        if secret.starts_with(TOKEN_PREFIX) {
            // The token alone identifies its user; the user name is not checked, so
            // `token:<secret>` works in URLs too.
            return token_identity(state, secret).await;
        }
        password_identity(state, user, secret).await
    } else if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        token_identity(state, rest).await
    } else {
        Err(bad_credentials())
    }
}

async fn token_identity(state: &AppState, secret: &str) -> AppResult<Identity> {
    let hash = auth::hash_token(secret);
    let record = state
        .store
        .token_by_hash(&hash)
        .await?
        .ok_or_else(bad_credentials)?;
    let now = crate::unix_now();
    // The lookup is by digest; comparing it again in constant time keeps the decision
    // itself free of early exits.
    if !auth::digests_equal(&record.token_hash, &hash) {
        return Err(bad_credentials());
    }
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| at <= now) {
        return Err(bad_credentials());
    }
    let user = state
        .store
        .user_by_name(&record.user_name)
        .await?
        .ok_or_else(bad_credentials)?;
    Ok(Identity::User(Principal::from_token(user, &record)))
}

async fn password_identity(state: &AppState, name: &str, password: &str) -> AppResult<Identity> {
    let user: Option<User> = state.store.user_by_name(name).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| auth::dummy_password_hash().to_string());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    match user {
        Some(user) if ok && user.password_hash.is_some() => Ok(Identity::User(Principal {
            user,
            scope: Role::Admin,
            only_owner: None,
        })),
        _ => Err(bad_credentials()),
    }
}

/// Looks the owner up and checks that `identity` has `need` on it. The status tells apart
/// missing credentials (401), a missing right (403) and an owner the caller may not know
/// of (404).
pub async fn authorize(
    state: &AppState,
    identity: &Identity,
    owner: &OwnerName,
    need: Role,
) -> AppResult<Owner> {
    let not_found =
        || AppError::NotFound(format!("owner {owner:?} not found", owner = owner.as_str()));
    let Some(record) = state.store.owner_by_name(owner.as_str()).await? else {
        if need > Role::Read && matches!(identity, Identity::Anonymous) {
            return Err(AppError::Unauthorized(
                "credentials required to publish or delete".into(),
            ));
        }
        return Err(not_found());
    };
    let member_role = match identity {
        Identity::User(p) => state.store.member_role(record.id, p.user.id).await?,
        Identity::Anonymous => None,
    };
    match auth::decide(
        identity,
        member_role,
        &record,
        need,
        state.config.auth.anonymous_read,
    ) {
        Access::Granted => Ok(record),
        Access::NeedCredentials => Err(AppError::Unauthorized(format!(
            "credentials with {} access to {} are required",
            need.as_str(),
            owner.as_str()
        ))),
        Access::Denied => Err(AppError::Forbidden(format!(
            "these credentials lack {} access to {}",
            need.as_str(),
            owner.as_str()
        ))),
        Access::Hidden => Err(not_found()),
    }
}
