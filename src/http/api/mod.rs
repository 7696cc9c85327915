//! The JSON API under `/api/v1`: the catalog (owners, repositories, package search,
//! packages, indexes) for anyone the access rules let read, the administration of users,
//! owners, members and tokens for site administrators, and the OpenAPI document of it
//! all, generated from the handlers below. The document also describes the routes apk
//! and CI use (keys, indexes, packages: `src/http/{keys,indexes,packages}.rs`) and the
//! server's own (health, metrics), from the annotations of their handlers.
//!
//! Every route is registered through `utoipa_axum::routes!`, which takes its path and
//! method from the handler's `#[utoipa::path]`: a route cannot exist without being in the
//! document.

mod admin;
mod audit;
mod catalog;
mod copy;
mod document;
mod keys;
mod retention;
mod settings;
mod upstream;
mod virtuals;
mod webhooks;

use std::sync::OnceLock;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::registry::audit::Actor;
use crate::store::Role;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "alpine-registry",
        description = "A self-hosted registry for Alpine Linux (.apk) packages: its catalog \
                       and its administration. Errors answer {\"error\", \"message\"}.",
    ),
    modifiers(&Security),
    paths(
        super::keys::get,
        super::keys::get_named,
        super::indexes::get,
        super::indexes::get_adb,
        super::packages::download,
        super::packages::get_view,
        super::packages::upload,
        super::packages::delete,
        super::health::healthz,
        super::health::readyz,
        super::metrics::get_guarded,
    ),
    tags(
        (name = "apk",
            description = "What apk and CI jobs use: signing keys, signed indexes, package \
                           files, uploads and deletes. Served under /{owner}/... and, in \
                           Gitea's and Forgejo's layout, under /api/packages/{owner}/alpine/..."),
        (name = "catalog",
            description = "What the caller may read: owners, repositories, packages, indexes"),
        (name = "retention",
            description = "Rules that delete old package versions (owner admins), their \
                           plan and apply, and pins that keep a file from them"),
        (name = "keys",
            description = "An owner's signing keys: rotation, import of an abuild key, \
                           retirement (site administrators and the owner's administrators)"),
        (name = "webhooks",
            description = "URLs an owner's package and index events are POSTed to (owner \
                           admins), and their deliveries"),
        (name = "admin",
            description = "Users, owners, members and tokens; site administrators only"),
        (name = "server", description = "Liveness, readiness and metrics"),
    )
)]
struct ApiDoc;

/// HTTP Basic (user name and password or token) and Bearer tokens.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::default(),
            utoipa::openapi::security::SecurityRequirement::new("basic", Vec::<String>::new()),
            utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// Every route of the API with its documentation.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(document))
        .routes(routes!(catalog::owners))
        .routes(routes!(catalog::owner))
        .routes(routes!(catalog::repositories))
        .routes(routes!(catalog::search))
        .routes(routes!(catalog::package))
        .routes(routes!(catalog::indexes))
        .routes(routes!(catalog::index))
        .routes(routes!(copy::copy))
        .routes(routes!(retention::list, retention::set, retention::remove))
        .routes(routes!(retention::plan))
        .routes(routes!(retention::apply))
        .routes(routes!(retention::pin, retention::unpin))
        .routes(routes!(settings::get, settings::set))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::import))
        .routes(routes!(keys::retire))
        .routes(routes!(upstream::get, upstream::create))
        .routes(routes!(virtuals::get, virtuals::create))
        .routes(routes!(virtuals::list, virtuals::create_snapshot))
        .routes(routes!(virtuals::remove_snapshot))
        .routes(routes!(keys::keyring))
        .routes(routes!(webhooks::list, webhooks::add))
        .routes(routes!(webhooks::remove))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(admin::delete_user))
        .routes(routes!(admin::set_password))
        .routes(routes!(admin::list_owners, admin::create_owner))
        .routes(routes!(admin::delete_owner))
        .routes(routes!(admin::set_visibility))
        .routes(routes!(admin::list_members))
        .routes(routes!(admin::add_member, admin::remove_member))
        .routes(routes!(admin::list_tokens, admin::create_token))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(audit::list_all))
        .routes(routes!(audit::list_owner))
}

/// The owner named `owner`, when the caller administers it (site administrators
/// administer every owner).
async fn owner_admin(
    state: &AppState,
    identity: &crate::access::Identity,
    owner: &str,
) -> crate::error::AppResult<crate::store::Owner> {
    crate::access::authorize(
        state,
        identity,
        &crate::names::OwnerName::parse(owner)?,
        crate::store::Role::Admin,
    )
    .await
}

/// The routes of the API, for the server's router.
pub fn routes() -> Router<AppState> {
    api().split_for_parts().0
}

/// The OpenAPI 3.1 document of the API and of the apk routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api().split_for_parts().1;
    utoipa::Modify::modify(&document::Shared, &mut document);
    document
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "catalog", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document",
        content_type = "application/json")))]
async fn document() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| openapi().to_json().unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.as_str(),
    )
        .into_response()
}

/// The bytes of a file: a package, an index.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBytes(Vec<u8>);

/// The shape of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The status's reason phrase, e.g. "Bad Request".
    pub error: String,
    /// What was wrong, in words a user can act on.
    pub message: String,
}

/// Query parameters, refused with a 400 in the usual error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| AppError::BadRequest(format!("bad query parameters: {}", e.body_text())))
    }
}

/// Path parameters, refused with a 400 in the usual error shape.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| AppError::BadRequest(format!("bad path: {}", e.body_text())))
    }
}

/// A JSON body, refused with a 400 (415 without the JSON content type, 413 past
/// `limits.max_json_bytes`) in the usual error shape.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> AppResult<Self> {
        use axum::extract::rejection::JsonRejection;
        let over_limit = super::body_limit::BodyLimit::refusal_in(request.extensions());
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|j| Json(j.0))
            .map_err(|e| match e {
                JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType(
                    "send the body as JSON, with Content-Type: application/json".into(),
                ),
                other if other.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => over_limit,
                other => AppError::BadRequest(format!("bad JSON body: {}", other.body_text())),
            })
    }
}

/// A caller who may administer the registry: a site administrator with a password, or
/// with a token of scope admin that is not limited to one owner; who it is, for the audit
/// log.
pub struct SiteAdmin(pub Actor);

impl FromRequestParts<AppState> for SiteAdmin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Self> {
        match Identity::from_request_parts(parts, state).await? {
            Identity::Anonymous => Err(AppError::Unauthorized(
                "administration needs a site administrator's credentials".into(),
            )),
            Identity::User(p) if !p.user.is_admin => Err(AppError::Forbidden(format!(
                "{} is not a site administrator",
                p.user.name
            ))),
            Identity::User(p) if p.scope != Role::Admin || p.only_owner.is_some() => {
                Err(AppError::Forbidden(
                    "administration needs a token of scope admin that is not limited to an \
                     owner"
                        .into(),
                ))
            }
            Identity::User(p) => Ok(SiteAdmin(Actor::user(
                &p,
                super::client::ClientAddr::of(&parts.extensions),
            ))),
        }
    }
}
