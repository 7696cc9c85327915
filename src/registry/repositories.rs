//! Repositories: created explicitly or by the first upload, listed, removed.

use crate::error::{AppError, AppResult};
use crate::names::{BranchName, OwnerName, RepoName};
use crate::store::{Owner, RemovedRepository, RepoRef, Repository, RepositorySummary, StoreError};
use crate::AppState;

/// Parses `OWNER/BRANCH/REPOSITORY`.
pub fn parse_path(path: &str) -> AppResult<(OwnerName, BranchName, RepoName)> {
    let parts: Vec<&str> = path.split('/').collect();
    let [owner, branch, repository] = parts[..] else {
        return Err(AppError::BadRequest(format!(
            "invalid repository {:?}: expected OWNER/BRANCH/REPOSITORY, e.g. acme/v3.21/main",
            path.chars().take(200).collect::<String>()
        )));
    };
    Ok((
        OwnerName::parse(owner)?,
        BranchName::parse(branch)?,
        RepoName::parse(repository)?,
    ))
}

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

async fn owner(state: &AppState, name: &OwnerName) -> AppResult<Owner> {
    state
        .store
        .owner_by_name(name.as_str())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no owner named {:?}", name.as_str())))
}

/// Creates an empty repository of an existing owner; an error when it exists.
pub async fn create(
    state: &AppState,
    owner_name: &OwnerName,
    branch: &BranchName,
    repository: &RepoName,
) -> AppResult<Repository> {
    let owner = owner(state, owner_name).await?;
    let repo = RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    state
        .store
        .create_repository(&repo)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => AppError::Conflict(format!(
                "repository {owner_name}/{branch}/{repository} already exists"
            )),
            other => other.into(),
        })
}

/// Every repository, or those of `owner`, with the architectures served, the number of
/// packages and when the newest was uploaded; ordered by owner, branch and name.
pub async fn list(
    state: &AppState,
    owner_name: Option<&OwnerName>,
) -> AppResult<Vec<RepositorySummary>> {
    let owner_id = match owner_name {
        Some(name) => Some(owner(state, name).await?.id),
        None => None,
    };
    Ok(state.store.repository_summaries(owner_id).await?)
}

/// Deletes the repository with its packages and every index, in one transaction: all of
/// its `APKINDEX.tar.gz` and package downloads answer 404 from then on. Blobs no package
/// references any more are left to orphan collection (`storage.orphan_grace_secs`).
pub async fn remove(
    state: &AppState,
    owner_name: &OwnerName,
    branch: &BranchName,
    repository: &RepoName,
) -> AppResult<RemovedRepository> {
    let owner = owner(state, owner_name).await?;
    let repo = RepoRef {
        owner_id: owner.id,
        branch: branch.to_string(),
        repository: repository.to_string(),
    };
    state.store.delete_repository(&repo).await?.ok_or_else(|| {
        AppError::NotFound(format!(
            "no repository {owner_name}/{branch}/{repository} (\"alpine-registry repository \
             list --owner {owner_name}\" lists those of {owner_name})"
        ))
    })
}
