//! Validated path parameters: handlers receive `RepoAddress` / `FileAddress`, never raw
//! strings, so no handler parses names by hand. A repository segment may name a moment of
//! the repository's history after an `@` (`main@2026-12-01T00:00:00Z`, `main@release`).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::AppError;
use crate::names::{Arch, FileAddress, RepoAddress, RepoFile, View};

#[derive(Debug, Deserialize)]
struct RepoParams {
    owner: String,
    branch: String,
    repository: String,
}

#[derive(Debug, Deserialize)]
struct FileParams {
    owner: String,
    branch: String,
    repository: String,
    arch: String,
    file: String,
}

fn bad_path(e: axum::extract::rejection::PathRejection) -> AppError {
    AppError::BadRequest(format!("invalid path: {e}"))
}

/// `REPOSITORY` or `REPOSITORY@VIEW`: the repository's name and the moment of its history
/// named.
fn repository_and_view(segment: &str) -> Result<(&str, Option<View>), AppError> {
    match segment.split_once('@') {
        None => Ok((segment, None)),
        Some((repository, view)) => Ok((repository, Some(View::parse(view)?))),
    }
}

/// The upload route's repository. A view of a repository's history takes no uploads.
impl<S: Send + Sync> FromRequestParts<S> for RepoAddress {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(p) = Path::<RepoParams>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        let (repository, view) = repository_and_view(&p.repository)?;
        let at = RepoAddress::parse(&p.owner, &p.branch, repository)?;
        match view {
            None => Ok(at),
            Some(view) => Err(read_only_view(&at, &view)),
        }
    }
}

/// The answer to a change through a view of a repository's history.
pub fn read_only_view(at: &RepoAddress, view: &View) -> AppError {
    AppError::MethodNotAllowed(format!(
        "{at}@{view} is what {at} served at a moment of its history: it is read only; \
         uploads and deletes go to a repository of your own"
    ))
}

impl<S: Send + Sync> FromRequestParts<S> for FileAddress {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(p) = Path::<FileParams>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        let (repository, at) = repository_and_view(&p.repository)?;
        Ok(FileAddress {
            repo: RepoAddress::parse(&p.owner, &p.branch, repository)?,
            at,
            arch: Arch::parse(&p.arch)?,
            file: RepoFile::parse(&p.file)?,
        })
    }
}
