//! Repositories: created explicitly or by the first upload, listed, removed.

use crate::error::{AppError, AppResult};
use crate::names::{OwnerName, RepoAddress};
use crate::store::{Owner, RemovedRepository, RepoRef, Repository, RepositorySummary, StoreError};
use crate::AppState;

/// The answer to an upload into a repository that does not exist while
/// `repositories.auto_create` is off.
pub fn missing_for_upload(at: &RepoAddress) -> AppError {
    AppError::NotFound(format!(
        "no repository {at}: an administrator creates it with \
         \"alpine-registry repository create {at}\" (repositories.auto_create is off)"
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
pub async fn create(state: &AppState, at: &RepoAddress) -> AppResult<Repository> {
    let owner = owner(state, &at.owner).await?;
    let repo = RepoRef::new(owner.id, at);
    state
        .store
        .create_repository(&repo)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AppError::Conflict(format!("repository {at} already exists"))
            }
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
pub async fn remove(state: &AppState, at: &RepoAddress) -> AppResult<RemovedRepository> {
    let owner = owner(state, &at.owner).await?;
    let repo = RepoRef::new(owner.id, at);
    state.store.delete_repository(&repo).await?.ok_or_else(|| {
        AppError::NotFound(format!(
            "no repository {at} (\"alpine-registry repository list --owner {}\" lists those \
             of {})",
            at.owner, at.owner
        ))
    })
}
