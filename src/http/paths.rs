//! Validated path parameters: handlers receive `RepoAddress` / `FileAddress`, never raw
//! strings, so no handler parses names by hand.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::AppError;
use crate::names::{Arch, FileAddress, RepoAddress, RepoFile};

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

impl<S: Send + Sync> FromRequestParts<S> for RepoAddress {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(p) = Path::<RepoParams>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        RepoAddress::parse(&p.owner, &p.branch, &p.repository)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FileAddress {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(p) = Path::<FileParams>::from_request_parts(parts, state)
            .await
            .map_err(bad_path)?;
        Ok(FileAddress {
            repo: RepoAddress::parse(&p.owner, &p.branch, &p.repository)?,
            arch: Arch::parse(&p.arch)?,
            file: RepoFile::parse(&p.file)?,
        })
    }
}
