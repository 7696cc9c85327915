//! Users, owners, memberships and tokens: every administrative operation on accounts,
//! with its checks, written once for the command line and the HTTP API alike.
//!
//! Owner and user names are unique regardless of ASCII case (`Acme` cannot join `acme`),
//! so that nobody can pose as another owner; lookups use the exact spelling, and a miss
//! names the owner spelled differently when there is one.

use crate::access;
use crate::error::{AppError, AppResult};
use crate::names::OwnerName;
use crate::registry::audit::Actor;
use crate::store::{Member, NewToken, Owner, OwnerSummary, Role, TokenRecord, User, UserSummary};
use crate::AppState;
use serde_json::json;

/// Environment variable that fixes the first admin token instead of generating one.
pub const BOOTSTRAP_TOKEN_ENV: &str = "ALPINE_REGISTRY_BOOTSTRAP_TOKEN";

/// The user named exactly `name`.
pub async fn user(state: &AppState, name: &str) -> AppResult<User> {
    if let Some(user) = state.store.user_by_name(name).await? {
        return Ok(user);
    }
    let hint = match state.store.user_by_name_ignoring_case(name).await? {
        Some(other) => format!(" (did you mean {}?)", other.name),
        None => String::new(),
    };
    Err(AppError::NotFound(format!("no user named {name:?}{hint}")))
}

/// The owner named exactly `name`.
pub async fn owner(state: &AppState, name: &str) -> AppResult<Owner> {
    if let Some(owner) = state.store.owner_by_name(name).await? {
        return Ok(owner);
    }
    let hint = match state.store.owner_by_name_ignoring_case(name).await? {
        Some(other) => format!(" (did you mean {}?)", other.name),
        None => String::new(),
    };
    Err(AppError::NotFound(format!("no owner named {name:?}{hint}")))
}

/// Refuses `name` for a new owner when an owner of that name exists in any case.
async fn owner_name_free(state: &AppState, name: &OwnerName) -> AppResult<()> {
    match state
        .store
        .owner_by_name_ignoring_case(name.as_str())
        .await?
    {
        Some(existing) if existing.name == name.as_str() => {
            Err(AppError::Conflict(format!("owner {name} already exists")))
        }
        Some(existing) => Err(AppError::Conflict(format!(
            "owner name {name} is taken: {} exists, and owner names are unique regardless \
             of case",
            existing.name
        ))),
        None => Ok(()),
    }
}

/// Creates a user and its namespace (an owner of the same name, the user its admin).
/// With `generate_key`, the namespace's signing key is made now (seconds for 4096 bits);
/// otherwise the server makes it in the background (`Keys::spawn_create_missing`) or on
/// first use.
pub async fn create_user(
    state: &AppState,
    actor: &Actor,
    name: &str,
    password_hash: Option<&str>,
    admin: bool,
    generate_key: bool,
) -> AppResult<User> {
    let name = OwnerName::parse(name)?;
    if let Some(existing) = state
        .store
        .user_by_name_ignoring_case(name.as_str())
        .await?
    {
        return Err(AppError::Conflict(if existing.name == name.as_str() {
            format!("user {name} already exists")
        } else {
            format!(
                "user name {name} is taken: {} exists, and names are unique regardless of case",
                existing.name
            )
        }));
    }
    owner_name_free(state, &name).await?;
    let user = state
        .store
        .create_user(
            name.as_str(),
            password_hash,
            admin,
            Some(&actor.entry(
                state,
                "user.create",
                None,
                name.as_str(),
                json!({ "admin": admin, "password": password_hash.is_some() }),
            )),
        )
        .await?;
    if generate_key {
        let namespace = owner(state, name.as_str()).await?;
        state.keys.get_or_create(&namespace).await?;
    }
    Ok(user)
}

/// Creates an owner (namespace). With `generate_key`, its signing key is made now
/// (seconds for 4096 bits) and its file name returned; otherwise the server makes it in
/// the background (`Keys::spawn_create_missing`) or on first use.
pub async fn create_owner(
    state: &AppState,
    actor: &Actor,
    name: &str,
    private: bool,
    org: bool,
    generate_key: bool,
) -> AppResult<(Owner, Option<String>)> {
    let name = OwnerName::parse(name)?;
    owner_name_free(state, &name).await?;
    let owner = state
        .store
        .create_owner(
            name.as_str(),
            private,
            org,
            Some(&actor.entry(
                state,
                "owner.create",
                None,
                name.as_str(),
                json!({ "private": private, "organisation": org }),
            )),
        )
        .await?;
    let key_name = if generate_key {
        Some(
            state
                .keys
                .get_or_create(&owner)
                .await?
                .key_name()
                .to_string(),
        )
    } else {
        None
    };
    Ok((owner, key_name))
}

pub async fn list_users(state: &AppState) -> AppResult<Vec<UserSummary>> {
    Ok(state.store.list_users().await?)
}

pub async fn list_owners(state: &AppState) -> AppResult<Vec<OwnerSummary>> {
    Ok(state.store.list_owners().await?)
}

async fn owner_summary(state: &AppState, owner: &Owner) -> AppResult<OwnerSummary> {
    state
        .store
        .list_owners()
        .await?
        .into_iter()
        .find(|o| o.id == owner.id)
        .ok_or_else(|| AppError::NotFound(format!("no owner named {:?}", owner.name)))
}

/// What deleting a user took with it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeletedUser {
    pub name: String,
    /// The namespace of the same name, deleted with the user.
    pub namespace_deleted: bool,
}

/// Deletes a user, its tokens and memberships, and its namespace (owner of the same
/// name) when that holds no repositories. Refused for the last site administrator, and
/// while the namespace still holds repositories (they go first, or with
/// `delete_owner(.., force)`).
pub async fn delete_user(state: &AppState, actor: &Actor, name: &str) -> AppResult<DeletedUser> {
    let user = user(state, name).await?;
    if user.is_admin {
        let admins = state
            .store
            .list_users()
            .await?
            .iter()
            .filter(|u| u.is_admin)
            .count();
        if admins <= 1 {
            return Err(AppError::Conflict(format!(
                "{name} is the last site administrator: create another one first \
                 (user create NAME --admin)"
            )));
        }
    }
    let namespace = match state.store.owner_by_name(name).await? {
        Some(owner) if !owner.is_org => {
            let summary = owner_summary(state, &owner).await?;
            if summary.repositories > 0 {
                return Err(AppError::Conflict(format!(
                    "the namespace {name} holds {} ({} packages): remove them first \
                     (repository list --owner {name}), or delete the namespace with them \
                     (owner delete {name} --force)",
                    plural(summary.repositories, "repository", "repositories"),
                    summary.packages
                )));
            }
            Some(owner.id)
        }
        _ => None,
    };
    let entry = actor.entry(
        state,
        "user.delete",
        None,
        user.name.as_str(),
        json!({ "namespace_deleted": namespace.is_some() }),
    );
    state
        .store
        .delete_user(user.id, namespace, Some(&entry))
        .await?;
    Ok(DeletedUser {
        name: user.name,
        namespace_deleted: namespace.is_some(),
    })
}

/// Deletes an owner with its signing key, members and owner-limited tokens. An owner
/// holding repositories is deleted only with `force`, and then they go with it (their
/// indexes at once; files no longer referenced are collected after
/// `storage.orphan_grace_secs`). Returns what the owner held.
pub async fn delete_owner(
    state: &AppState,
    actor: &Actor,
    name: &str,
    force: bool,
) -> AppResult<OwnerSummary> {
    let owner = owner(state, name).await?;
    if let Some(user) = state.store.user_by_name(name).await? {
        if !owner.is_org {
            return Err(AppError::Conflict(format!(
                "{name} is the namespace of user {}: delete the user instead (user delete {})",
                user.name, user.name
            )));
        }
    }
    let summary = owner_summary(state, &owner).await?;
    if summary.repositories > 0 && !force {
        return Err(AppError::Conflict(format!(
            "owner {name} holds {} ({} packages): pass --force to delete them with it",
            plural(summary.repositories, "repository", "repositories"),
            summary.packages
        )));
    }
    let entry = actor.entry(
        state,
        "owner.delete",
        Some(&owner),
        owner.name.as_str(),
        json!({ "repositories": summary.repositories, "packages": summary.packages }),
    );
    state.store.delete_owner(owner.id, Some(&entry)).await?;
    Ok(summary)
}

/// Makes an owner private (only members read) or public.
pub async fn set_visibility(
    state: &AppState,
    actor: &Actor,
    name: &str,
    private: bool,
) -> AppResult<Owner> {
    let mut owner = owner(state, name).await?;
    let entry = actor.entry(
        state,
        "owner.visibility",
        Some(&owner),
        owner.name.as_str(),
        json!({ "private": private }),
    );
    state
        .store
        .set_owner_private(owner.id, private, Some(&entry))
        .await?;
    owner.is_private = private;
    Ok(owner)
}

/// Hashes a new password (argon2) through the password check limiter, which bounds how
/// many run at once and reuses their working memory: 503 when too many passwords are being
/// checked or set.
pub async fn hash_password(state: &AppState, password: String) -> AppResult<String> {
    if password.is_empty() {
        return Err(AppError::BadRequest("the password is empty".into()));
    }
    let hashed = state
        .password_checks
        .hash(password)
        .await
        .map_err(|access::Busy| AppError::Overloaded {
            message: "too many passwords are being checked or set: retry shortly".into(),
            retry_after: 1,
        })?;
    Ok(hashed?)
}

/// Sets (or, with `None`, removes) a user's password, hashed by `hash_password`.
pub async fn set_password(
    state: &AppState,
    actor: &Actor,
    name: &str,
    password: Option<String>,
) -> AppResult<()> {
    let user = user(state, name).await?;
    let hash = match password {
        Some(password) => Some(hash_password(state, password).await?),
        None => None,
    };
    // Whether a password is set, never the password or its hash.
    let entry = actor.entry(
        state,
        "user.password",
        None,
        user.name.as_str(),
        json!({ "password": hash.is_some() }),
    );
    state
        .store
        .set_password(user.id, hash.as_deref(), Some(&entry))
        .await?;
    Ok(())
}

/// Gives `user` `role` on `owner`, replacing any previous role.
pub async fn add_member(
    state: &AppState,
    actor: &Actor,
    owner_name: &str,
    user_name: &str,
    role: Role,
) -> AppResult<()> {
    let owner = owner(state, owner_name).await?;
    let user = user(state, user_name).await?;
    let entry = actor.entry(
        state,
        "member.set",
        Some(&owner),
        format!("{}/{}", owner.name, user.name),
        json!({ "role": role.as_str() }),
    );
    state
        .store
        .set_member(owner.id, user.id, role, Some(&entry))
        .await?;
    Ok(())
}

pub async fn list_members(state: &AppState, owner_name: &str) -> AppResult<Vec<Member>> {
    let owner = owner(state, owner_name).await?;
    Ok(state.store.list_members(owner.id).await?)
}

/// Takes `user`'s role on `owner` away. The last admin of an organisation stays (an
/// organisation nobody administers could only be repaired by a site administrator).
pub async fn remove_member(
    state: &AppState,
    actor: &Actor,
    owner_name: &str,
    user_name: &str,
) -> AppResult<()> {
    let owner = owner(state, owner_name).await?;
    let user = user(state, user_name).await?;
    let members = state.store.list_members(owner.id).await?;
    let Some(member) = members.iter().find(|m| m.user_id == user.id) else {
        return Err(AppError::NotFound(format!(
            "{user_name} has no role on {owner_name}"
        )));
    };
    let admins = members.iter().filter(|m| m.role == Role::Admin).count();
    if member.role == Role::Admin && admins == 1 && owner.is_org {
        return Err(AppError::Conflict(format!(
            "{user_name} is the last admin of {owner_name}: give another member admin first"
        )));
    }
    let entry = actor.entry(
        state,
        "member.remove",
        Some(&owner),
        format!("{}/{}", owner.name, user.name),
        json!({ "role": member.role.as_str() }),
    );
    state
        .store
        .remove_member(owner.id, user.id, Some(&entry))
        .await?;
    Ok(())
}

/// What a new token may do.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub user: &'a str,
    pub scope: Role,
    /// Limits the token to one owner.
    pub owner: Option<&'a str>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub label: Option<&'a str>,
}

/// Longest token label.
const MAX_LABEL: usize = 100;

/// Creates a token; `secret` fixes its value (bootstrap), else it is random. Returns the
/// secret, which is stored only as its SHA-256.
pub async fn create_token(
    state: &AppState,
    actor: &Actor,
    request: TokenRequest<'_>,
    secret: Option<String>,
) -> AppResult<String> {
    let user = user(state, request.user).await?;
    if let Some(label) = request.label {
        if label.chars().count() > MAX_LABEL || label.chars().any(char::is_control) {
            return Err(AppError::BadRequest(format!(
                "a token label is at most {MAX_LABEL} characters, without control characters"
            )));
        }
    }
    let limited_to = match request.owner {
        Some(name) => {
            let record = owner(state, name).await?;
            let role = state.store.member_role(record.id, user.id).await?;
            // A token limited to an owner its user has no role on could do nothing there
            // (reading a public owner needs no token).
            if !user.is_admin
                && role.is_none()
                && (record.is_private || request.scope != Role::Read)
            {
                return Err(AppError::BadRequest(format!(
                    "{} has no role on {name}: add one first (owner member add {name} {} \
                     --role {}), or create the token without --owner",
                    user.name,
                    user.name,
                    request.scope.as_str()
                )));
            }
            Some(record)
        }
        None => None,
    };
    let owner_id = limited_to.as_ref().map(|o| o.id);
    let token = match secret {
        Some(secret) => access::token_from_secret(secret),
        None => access::generate_token(),
    };
    // The token's id, scope and label; never its secret or hash. The store appends the id
    // to the target.
    let entry = actor.entry(
        state,
        "token.create",
        limited_to.as_ref(),
        user.name.as_str(),
        json!({
            "scope": request.scope.as_str(),
            "label": request.label,
            "expires_at": request.expires_at,
        }),
    );
    state
        .store
        .insert_token(
            NewToken {
                user_id: user.id,
                token_hash: &token.hash,
                prefix: &token.display_prefix,
                scope: request.scope,
                owner_id,
                expires_at: request.expires_at,
                label: request.label.filter(|l| !l.is_empty()),
            },
            Some(&entry),
        )
        .await?;
    Ok(token.secret)
}

/// Every token, or those of one user (never their secrets).
pub async fn list_tokens(state: &AppState, user_name: Option<&str>) -> AppResult<Vec<TokenRecord>> {
    let user_id = match user_name {
        Some(name) => Some(user(state, name).await?.id),
        None => None,
    };
    Ok(state.store.list_tokens(user_id).await?)
}

pub async fn revoke_token(state: &AppState, actor: &Actor, id: i64, now: i64) -> AppResult<()> {
    let token = state
        .store
        .list_tokens(None)
        .await?
        .into_iter()
        .find(|t| t.id == id && t.revoked_at.is_none());
    let Some(token) = token else {
        return Err(AppError::NotFound(format!("no active token with id {id}")));
    };
    let entry = actor.entry(
        state,
        "token.revoke",
        None,
        format!("{}/tokens/{id}", token.user_name),
        json!({ "label": token.label }),
    );
    if !state.store.revoke_token(id, now, Some(&entry)).await? {
        return Err(AppError::NotFound(format!("no active token with id {id}")));
    }
    Ok(())
}

/// On an empty database: user `admin` (site admin, namespace `admin`) and one admin
/// token, `fixed` or random. Returns the token when it was created now; None when the
/// database has users, or another process created `admin` first (instances sharing a
/// database may start together).
pub async fn bootstrap(state: &AppState, fixed: Option<String>) -> AppResult<Option<String>> {
    if state.store.count_users().await? > 0 {
        return Ok(None);
    }
    if let Some(token) = &fixed {
        if !token.starts_with(access::TOKEN_PREFIX) || token.len() < access::TOKEN_PREFIX.len() + 20
        {
            return Err(AppError::BadRequest(format!(
                "{BOOTSTRAP_TOKEN_ENV} must start with {:?} followed by at least 20 characters",
                access::TOKEN_PREFIX
            )));
        }
    }
    let actor = Actor::system();
    match create_user(state, &actor, "admin", None, true, false).await {
        Ok(_) => {}
        // Another instance on the same database is bootstrapping it at the same moment.
        Err(AppError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    let request = TokenRequest {
        user: "admin",
        scope: Role::Admin,
        owner: None,
        expires_at: None,
        label: Some("bootstrap"),
    };
    Ok(Some(create_token(state, &actor, request, fixed).await?))
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
