//! Copying and moving a package file between repositories (`registry::copy`), over HTTP.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use super::{ErrorBody, Json, Path};
use crate::access::Identity;
use crate::error::{AppError, AppResult};
use crate::http::packages::{describe_stored, Uploaded};
use crate::names::{Arch, OwnerName, PackageFile, RepoAddress};
use crate::registry::audit::Actor;
use crate::registry::copy::{self, Source, Target};
use crate::store::Role;
use crate::AppState;

/// The file to copy (of the owner and package of the path) and where to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The branch the file is in.
    pub branch: String,
    /// The repository the file is in.
    pub repository: String,
    /// The file's architecture (a noarch file is found under any).
    pub arch: String,
    /// The file name, `{name}-{version}.apk`; give it or `version`, not both.
    pub file: Option<String>,
    /// The version (`1.2.3-r0`), for the file `{name}-{version}.apk`; give it or `file`,
    /// not both.
    pub version: Option<String>,
    pub to: CopyTarget,
    /// Also deletes the file from where it is, once the target's index lists it.
    #[serde(default, rename = "move")]
    pub remove_source: bool,
}

/// The repository to copy into.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyTarget {
    /// Another owner, whose key then signs the index that lists the copy; by default the
    /// owner of the path.
    pub owner: Option<String>,
    pub branch: String,
    pub repository: String,
}

/// What a copy answers: the file in the target, as an upload of it answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Copied {
    #[serde(flatten)]
    pub file: Uploaded,
    /// The download path of the file copied, relative to the registry's root.
    pub source: String,
    /// Whether the source was deleted (`move`).
    pub moved: bool,
}

/// Copies a package file into another repository of this owner or of another, sharing its
/// stored bytes (nothing is uploaded again); with `move`, also deletes the source. Answers
/// 201 once the target's signed index lists the file (the target owner's key signs it) and,
/// for a move, the source's no longer does. A file of the same name and version in the
/// target answers as an upload of it would: 409 saying whether its bytes are identical, or
/// 200 for identical bytes when repositories.identical_reupload is accept (a move then
/// deletes the source). Needs read access to this owner and write access to the target's.
#[utoipa::path(post, path = "/api/v1/owners/{owner}/packages/{name}/copy", tag = "catalog",
    operation_id = "copy_package",
    params(("owner" = String, Path, description = "The owner of the file to copy"),
        ("name" = String, Path, description = "Package name")),
    request_body = CopyRequest,
    responses(
        (status = 200, body = Copied,
            description = "The target holds these very bytes under this name already, and \
                           repositories.identical_reupload is accept: nothing was copied (a \
                           move deleted the source)"),
        (status = 201, description = "Copied (or moved), and listed by the target's index",
            body = Copied),
        (status = 400, body = ErrorBody,
            description = "An invalid name, neither or both of file and version, the target \
                           the source's repository, or bad JSON"),
        (status = 401, body = ErrorBody,
            description = "No credentials, or bad ones; or an unknown or private owner"),
        (status = 403, body = ErrorBody,
            description = "Credentials that may read the source but lack write access to the \
                           target's owner (or, for a move, to the source's)"),
        (status = 404, body = ErrorBody,
            description = "No such owner the caller may read, no such file of the package, \
                           or no target repository while repositories.auto_create is off"),
        (status = 409, body = ErrorBody,
            description = "The same name and version is already in the target repository \
                           (the body says whether its bytes are the source's, \"identical\", \
                           and describes the stored file)"),
    ))]
pub async fn copy(
    State(state): State<AppState>,
    identity: Identity,
    Path((owner, name)): Path<(String, String)>,
    uri: Uri,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Json(request): Json<CopyRequest>,
) -> AppResult<(StatusCode, axum::Json<Copied>)> {
    let source_at = RepoAddress::parse(&owner, &request.branch, &request.repository)?;
    let arch = Arch::parse(&request.arch)?;
    let file = match (&request.file, &request.version) {
        (Some(file), None) => PackageFile::parse(file)?,
        (None, Some(version)) => PackageFile::parse(&format!("{name}-{version}.apk"))?,
        _ => {
            return Err(AppError::BadRequest(
                "name the file to copy by \"file\" or by \"version\", one of them".into(),
            ))
        }
    };
    let target_owner = match &request.to.owner {
        Some(other) => OwnerName::parse(other)?,
        None => source_at.owner.clone(),
    };
    let target_at = RepoAddress {
        owner: target_owner,
        branch: crate::names::BranchName::parse(&request.to.branch)?,
        repository: crate::names::RepoName::parse(&request.to.repository)?,
    };
    // A move deletes the source: it needs write there too.
    let need = if request.remove_source {
        Role::Write
    } else {
        Role::Read
    };
    let source_owner =
        crate::http::authorize(&state, &identity, &source_at.owner, Role::Read).await?;
    if need > Role::Read {
        crate::http::authorize(&state, &identity, &source_at.owner, need).await?;
    }
    let target_owner =
        crate::http::authorize(&state, &identity, &target_at.owner, Role::Write).await?;
    let base_url = crate::http::origin::base_url(
        &state.config,
        &crate::http::origin::Origin {
            headers: &headers,
            uri: &uri,
            peer: extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        },
    );
    let source = Source {
        owner: &source_owner,
        at: &source_at,
        arch: &arch,
        file: &file,
    };
    let target = Target {
        owner: &target_owner,
        at: &target_at,
    };
    match copy::copy(
        &state,
        &Actor::of(&identity, crate::http::client::ClientAddr::of(&extensions)),
        &source,
        Some(&name),
        &target,
        request.remove_source,
    )
    .await
    {
        Ok(copied) => {
            let status = if copied.published.identical {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let answer = Copied {
                source: format!(
                    "/{source_at}/{}/{}",
                    copied.source.arch, copied.source.filename
                ),
                file: Uploaded::new(
                    &target_at,
                    copied.published.package,
                    &base_url,
                    copied.published.repository_created,
                ),
                moved: copied.moved,
            };
            Ok((status, axum::Json(answer)))
        }
        Err(other) => Err(describe_stored(other, &target_at, &base_url)),
    }
}
