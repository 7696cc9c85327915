//! Repositories: created explicitly or by the first upload, listed, removed.

use crate::error::AppError;
use crate::names::{BranchName, OwnerName, RepoName};

/// The answer to an upload into a repository that does not exist while
/// `repositories.auto_create` is off.
pub fn missing_for_upload(
    owner: &OwnerName,
    branch: &BranchName,
    repository: &RepoName,
) -> AppError {
    AppError::NotFound(format!(
        "no repository {owner}/{branch}/{repository}: an administrator creates it with \
         \"alpine-registry repository create {owner}/{branch}/{repository}\" \
         (repositories.auto_create is off)"
    ))
}
