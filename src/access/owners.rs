//! Access to owners: whether an identity may do something on one named owner (with the
//! refusal the apk routes give otherwise), and the owners it may read, for queries over
//! many. Both follow the rules of `policy`.

use crate::access::{self, Access, Identity};
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::store::{Owner, Role};
use crate::AppState;

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
    // A mistyped owner reaches apk users as a bare 401, so the message names both causes
    // (and, to stay the same for both, never says which).
    let need_credentials = || {
        AppError::Unauthorized(match need {
            Role::Read => format!(
                "unknown or private owner {}: check the spelling, or send credentials with \
                 read access",
                owner.as_str()
            ),
            _ => format!(
                "credentials with {} access to {} are required",
                need.as_str(),
                owner.as_str()
            ),
        })
    };
    let Some(record) = state.store.owner_by_name(owner.as_str()).await? else {
        // To an anonymous caller an unknown owner answers exactly like a private one
        // (401, same message), so anonymous requests cannot tell which private owners
        // exist.
        if matches!(identity, Identity::Anonymous) {
            return Err(need_credentials());
        }
        return Err(not_found());
    };
    let member_role = match identity {
        Identity::User(p) => state.store.member_role(record.id, p.user.id).await?,
        Identity::Anonymous => None,
    };
    match access::decide(
        identity,
        member_role,
        &record,
        need,
        state.config.auth.anonymous_read,
    ) {
        Access::Granted => Ok(record),
        Access::NeedCredentials => Err(need_credentials()),
        Access::Denied => Err(AppError::Forbidden(format!(
            "these credentials lack {} access to {}",
            need.as_str(),
            owner.as_str()
        ))),
        Access::Hidden => Err(not_found()),
    }
}
