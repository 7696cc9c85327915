//! The administration routes: what the command line does to users, owners, members and
//! tokens, for site administrators over HTTP. Each calls the same function in
//! `registry::accounts` as its command.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Json, Path, Query, SiteAdmin};
use crate::access;
use crate::error::{AppError, AppResult};
use crate::registry::accounts::{self, DeletedUser, TokenRequest};
use crate::store::{Member, OwnerSummary, Role, TokenRecord, UserSummary};
use crate::AppState;

/// A new user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    /// Without one, the user signs in with tokens only.
    #[schema(min_length = 1)]
    pub password: Option<String>,
    /// Makes the user a site administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A user as created.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub name: String,
    pub is_admin: bool,
    pub has_password: bool,
    /// The user's namespace, an owner of the same name.
    pub namespace: String,
}

/// Every user: site administrator, password set, active tokens, memberships.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    responses(
        (status = 200, body = Vec<UserSummary>),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    _: SiteAdmin,
) -> AppResult<axum::Json<Vec<UserSummary>>> {
    Ok(axum::Json(accounts::list_users(&state).await?))
}

/// Creates a user and its namespace (an owner of the same name, the user its admin). The
/// namespace's signing key is generated in the background: the answer does not wait for
/// it, and a publish that comes first does.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 400, description = "Invalid name, empty password or bad JSON", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "The name is taken (names are unique regardless of case)"),
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Json(new): Json<NewUser>,
) -> AppResult<(StatusCode, axum::Json<CreatedUser>)> {
    let hash = match new.password {
        Some(password) => Some(accounts::hash_password(&state, password).await?),
        None => None,
    };
    let user =
        accounts::create_user(&state, &actor, &new.name, hash.as_deref(), new.admin, false).await?;
    // The namespace's key (seconds for 4096 bits) is made in the background: a publish
    // that comes first waits for it.
    state.keys.spawn_create_missing();
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedUser {
            namespace: user.name.clone(),
            has_password: user.password_hash.is_some(),
            is_admin: user.is_admin,
            name: user.name,
        }),
    ))
}

/// Deletes a user with its tokens and memberships, and its namespace when that holds no
/// repositories.
#[utoipa::path(delete, path = "/api/v1/admin/users/{user}", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("user" = String, Path)),
    responses(
        (status = 200, body = DeletedUser),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "The last site administrator, or a namespace holding repositories"),
    ))]
pub async fn delete_user(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path(user): Path<String>,
) -> AppResult<axum::Json<DeletedUser>> {
    Ok(axum::Json(
        accounts::delete_user(&state, &actor, &user).await?,
    ))
}

/// A password to set, or null to remove it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password, or null to remove it; required (`{}` is refused, so that a
    /// mistyped field name never removes a password).
    // Through `deserialize_with`, a missing field is an error rather than None.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true, min_length = 1)]
    pub password: Option<String>,
}

/// Sets a user's password, or removes it (`null`): the user then signs in with tokens
/// only.
#[utoipa::path(put, path = "/api/v1/admin/users/{user}/password", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("user" = String, Path)),
    request_body = NewPassword,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Empty password or bad JSON", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn set_password(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path(user): Path<String>,
    Json(new): Json<NewPassword>,
) -> AppResult<StatusCode> {
    if new.password.as_deref() == Some("") {
        return Err(AppError::BadRequest(
            "the password is empty: send null to remove it".into(),
        ));
    }
    accounts::set_password(&state, &actor, &user, new.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every owner: visibility, kind, members, repositories, packages.
#[utoipa::path(get, path = "/api/v1/admin/owners", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    responses(
        (status = 200, body = Vec<OwnerSummary>),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
    ))]
pub async fn list_owners(
    State(state): State<AppState>,
    _: SiteAdmin,
) -> AppResult<axum::Json<Vec<OwnerSummary>>> {
    Ok(axum::Json(accounts::list_owners(&state).await?))
}

/// A new owner (namespace).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOwner {
    pub name: String,
    /// Only members may read.
    #[serde(default)]
    pub private: bool,
    /// An organisation rather than a user's namespace.
    #[serde(default)]
    pub org: bool,
}

/// An owner as created or changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OwnerInfo {
    pub name: String,
    pub is_private: bool,
    pub is_org: bool,
}

/// Creates an owner. Its signing key is generated in the background: the answer does not
/// wait for it (`GET /api/v1/owners/{owner}` shows it once made), and a publish that
/// comes first does.
#[utoipa::path(post, path = "/api/v1/admin/owners", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    request_body = NewOwner,
    responses(
        (status = 201, body = OwnerInfo),
        (status = 400, description = "Invalid or reserved name, or bad JSON", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "The name is taken (names are unique regardless of case)"),
    ))]
pub async fn create_owner(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Json(new): Json<NewOwner>,
) -> AppResult<(StatusCode, axum::Json<OwnerInfo>)> {
    let (owner, _) =
        accounts::create_owner(&state, &actor, &new.name, new.private, new.org, false).await?;
    state.keys.spawn_create_missing();
    Ok((
        StatusCode::CREATED,
        axum::Json(OwnerInfo {
            name: owner.name,
            is_private: owner.is_private,
            is_org: owner.is_org,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteOwnerParams {
    /// Also deletes the owner's repositories and packages (refused without it).
    #[serde(default)]
    pub force: bool,
}

/// Deletes an owner with its signing key, members and owner-limited tokens; with
/// `force`, its repositories and packages too. Answers what it held.
#[utoipa::path(delete, path = "/api/v1/admin/owners/{owner}", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("owner" = String, Path), DeleteOwnerParams),
    responses(
        (status = 200, body = OwnerSummary),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner", body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "Repositories without force, or a user's namespace"),
    ))]
pub async fn delete_owner(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path(owner): Path<String>,
    Query(params): Query<DeleteOwnerParams>,
) -> AppResult<axum::Json<OwnerSummary>> {
    Ok(axum::Json(
        accounts::delete_owner(&state, &actor, &owner, params.force).await?,
    ))
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVisibility {
    pub visibility: Visibility,
}

/// Makes an owner public (anyone may read) or private (only members may read).
#[utoipa::path(put, path = "/api/v1/admin/owners/{owner}/visibility", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("owner" = String, Path)),
    request_body = NewVisibility,
    responses(
        (status = 200, body = OwnerInfo),
        (status = 400, description = "Bad JSON", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner", body = ErrorBody),
    ))]
pub async fn set_visibility(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path(owner): Path<String>,
    Json(new): Json<NewVisibility>,
) -> AppResult<axum::Json<OwnerInfo>> {
    let private = matches!(new.visibility, Visibility::Private);
    let owner = accounts::set_visibility(&state, &actor, &owner, private).await?;
    Ok(axum::Json(OwnerInfo {
        name: owner.name,
        is_private: owner.is_private,
        is_org: owner.is_org,
    }))
}

/// The members of an owner and their roles.
#[utoipa::path(get, path = "/api/v1/admin/owners/{owner}/members", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("owner" = String, Path)),
    responses(
        (status = 200, body = Vec<Member>),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner", body = ErrorBody),
    ))]
pub async fn list_members(
    State(state): State<AppState>,
    _: SiteAdmin,
    Path(owner): Path<String>,
) -> AppResult<axum::Json<Vec<Member>>> {
    Ok(axum::Json(accounts::list_members(&state, &owner).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    pub role: Role,
}

/// Gives a user a role on an owner, replacing any previous role.
#[utoipa::path(put, path = "/api/v1/admin/owners/{owner}/members/{user}", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("owner" = String, Path), ("user" = String, Path)),
    request_body = NewRole,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "Bad JSON or unknown role", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner or user", body = ErrorBody),
    ))]
pub async fn add_member(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path((owner, user)): Path<(String, String)>,
    Json(new): Json<NewRole>,
) -> AppResult<StatusCode> {
    accounts::add_member(&state, &actor, &owner, &user, new.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a user's role on an owner away (not the last admin of an organisation).
#[utoipa::path(delete, path = "/api/v1/admin/owners/{owner}/members/{user}", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("owner" = String, Path), ("user" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such owner or user, or no role", body = ErrorBody),
        (status = 409, description = "The last admin of an organisation", body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path((owner, user)): Path<(String, String)>,
) -> AppResult<StatusCode> {
    accounts::remove_member(&state, &actor, &owner, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListParams {
    /// Only this user's tokens.
    pub user: Option<String>,
}

/// Every token, or one user's (never their secrets).
#[utoipa::path(get, path = "/api/v1/admin/tokens", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(TokenListParams),
    responses(
        (status = 200, body = Vec<TokenRecord>),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _: SiteAdmin,
    Query(params): Query<TokenListParams>,
) -> AppResult<axum::Json<Vec<TokenRecord>>> {
    Ok(axum::Json(
        accounts::list_tokens(&state, params.user.as_deref()).await?,
    ))
}

/// A new token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    pub scope: Role,
    /// Limits the token to one owner.
    pub owner: Option<String>,
    /// A number with a unit, s m h d w or y: "90d", "12h".
    #[schema(pattern = r"^\s*0*[1-9][0-9]{0,9}[smhdwy]\s*$")]
    pub expires_in: Option<String>,
    /// Says what the token is for: at most 100 characters, no control characters.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub label: Option<String>,
}

/// A token as created: its secret is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub secret: String,
    #[serde(flatten)]
    pub token: TokenRecord,
}

/// Creates a token; the answer holds its secret, which is stored only as a hash.
#[utoipa::path(post, path = "/api/v1/admin/tokens", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    request_body = NewToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, description = "Bad expiry, label, owner or JSON", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No such user or owner", body = ErrorBody),
    ))]
pub async fn create_token(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Json(new): Json<NewToken>,
) -> AppResult<(StatusCode, axum::Json<CreatedToken>)> {
    let expires_at = match new.expires_in.as_deref() {
        Some(text) => Some(
            state.clock.unix_secs()
                + access::parse_duration(text)
                    .map_err(|e| AppError::BadRequest(format!("expires_in: {e}")))?,
        ),
        None => None,
    };
    let request = TokenRequest {
        user: &new.user,
        scope: new.scope,
        owner: new.owner.as_deref(),
        expires_at,
        label: new.label.as_deref(),
    };
    let secret = accounts::create_token(&state, &actor, request, None).await?;
    let hash = access::hash_token(&secret);
    let token = accounts::list_tokens(&state, Some(&new.user))
        .await?
        .into_iter()
        .find(|t| t.token_hash == hash)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the new token is not listed")))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken { secret, token }),
    ))
}

/// Revokes a token by id.
#[utoipa::path(delete, path = "/api/v1/admin/tokens/{id}", tag = "admin",
    security(("basic" = []), ("bearer" = [])),
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No credentials", body = ErrorBody),
        (status = 403, description = "Not a site administrator", body = ErrorBody),
        (status = 404, description = "No active token with that id", body = ErrorBody),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    SiteAdmin(actor): SiteAdmin,
    Path(id): Path<i64>,
) -> AppResult<StatusCode> {
    accounts::revoke_token(&state, &actor, id, state.clock.unix_secs()).await?;
    Ok(StatusCode::NO_CONTENT)
}
