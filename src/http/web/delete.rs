//! Deleting one package file from its page: a confirmation page, then a CSRF-protected
//! POST that runs the registry's delete (which answers once the re-signed index no longer
//! lists the file).

use super::Form;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Visitor;
use super::view::{self, query_value};
use super::{render, Nav, PageError};
use crate::error::AppError;
use crate::http::client::Client;
use crate::names::{Arch, PackageFile, RepoAddress};
use crate::registry::audit::Actor;
use crate::registry::publish;
use crate::store::{Owner, Package, Role};
use crate::AppState;

/// Which file: the fields of the confirmation link and of the form.
#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    #[serde(default)]
    branch: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    file: String,
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    csrf: String,
}

#[derive(Template)]
#[template(path = "delete.html")]
struct ConfirmPage {
    nav: Nav,
    owner: String,
    name: String,
    branch: String,
    repository: String,
    arch: String,
    file: String,
    version: String,
    size: String,
    sha256: String,
    csrf: String,
}

#[derive(Template)]
#[template(path = "deleted.html")]
struct DeletedPage {
    nav: Nav,
    owner: String,
    name: String,
    path: String,
}

struct Resolved {
    owner: Owner,
    at: RepoAddress,
    arch: Arch,
    file: PackageFile,
    package: Package,
}

/// The file `target` names, of package `name` of `owner`, which the visitor may write.
async fn resolve(
    state: &AppState,
    visitor: &Visitor,
    owner: &str,
    name: &str,
    target: &Target,
) -> Result<Resolved, AppError> {
    let record = view::readable_owner(state, &visitor.identity, owner).await?;
    let at = RepoAddress::parse(owner, &target.branch, &target.repository)?;
    let owner = crate::http::authorize(state, &visitor.identity, &at.owner, Role::Write)
        .await
        .map_err(|e| match e {
            AppError::Unauthorized(_) | AppError::Forbidden(_) => AppError::Forbidden(format!(
                "deleting needs write access to {}: log in as a user who has it",
                record.name
            )),
            other => other,
        })?;
    let arch = Arch::parse(&target.arch)?;
    let file = PackageFile::parse(&target.file)?;
    let package = publish::find(state, &owner, &at, &arch, &file).await?;
    if package.name != name {
        return Err(AppError::NotFound(format!(
            "{}/{}/{} is not a file of package {name}",
            at, arch, file
        )));
    }
    Ok(Resolved {
        owner,
        at,
        arch,
        file,
        package,
    })
}

/// `GET /{owner}/-/packages/{name}/delete?branch=&repository=&arch=&file=`: what would be
/// deleted, and the button. Without a session, the login page first.
pub async fn confirm(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((owner, name)): Path<(String, String)>,
    Query(target): Query<Target>,
    uri: Uri,
) -> Result<Response, PageError> {
    // An owner the visitor may not see is not found, logged in or not.
    view::readable_owner(&state, &visitor.identity, &owner).await?;
    let Some(session) = &visitor.session else {
        let here = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        return Ok(Redirect::to(&format!("/-/login?next={}", query_value(here))).into_response());
    };
    let found = resolve(&state, &visitor, &owner, &name, &target).await?;
    render(&ConfirmPage {
        nav: Nav::of(&visitor),
        owner: found.owner.name.clone(),
        name: found.package.name.clone(),
        branch: found.at.branch.to_string(),
        repository: found.at.repository.to_string(),
        arch: found.arch.to_string(),
        file: found.file.to_string(),
        version: found.package.version.clone(),
        size: view::size(found.package.size),
        sha256: found.package.sha256.clone(),
        csrf: session.csrf.clone(),
    })
}

/// `POST /{owner}/-/packages/{name}/delete`: the session's CSRF token is checked before
/// anything else, then the right to write, then the file is deleted.
pub async fn submit(
    State(state): State<AppState>,
    visitor: Visitor,
    Client(client): Client,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, PageError> {
    visitor.check_csrf(&form.csrf)?;
    let found = resolve(&state, &visitor, &owner, &name, &form.target).await?;
    let deleted = publish::delete_checked(
        &state,
        &Actor::of(&visitor.identity, client),
        &found.owner,
        &found.at,
        &found.arch,
        &found.file,
    )
    .await?
    .package;
    tracing::info!(
        user = visitor.user_name().unwrap_or(""),
        file = %format!("{}/{}/{}", found.at, deleted.arch, deleted.filename),
        "package deleted from the web pages"
    );
    render(&DeletedPage {
        nav: Nav::of(&visitor),
        owner: found.owner.name,
        name,
        path: format!("{}/{}/{}", found.at, found.arch, found.file),
    })
}
