//! The index a hosted repository serves for an architecture: never older than an
//! acknowledged change, and published first for an architecture it may serve but has not
//! yet (noarch packages, an empty repository). What `GET .../APKINDEX.tar.gz` answers, and
//! what a virtual repository reads of a hosted member.

use crate::error::{AppError, AppResult};
use crate::names::Arch;
use crate::store::{Owner, Repository, StoredIndex};
use crate::AppState;

/// The published index of `arch` of the hosted repository `repo`, built first when a
/// change is waiting for it; None when the repository serves no index for `arch` (or was
/// removed meanwhile).
pub async fn hosted(
    state: &AppState,
    owner: &Owner,
    repo: &Repository,
    arch: &Arch,
) -> AppResult<Option<StoredIndex>> {
    let removed_or_err = |e: anyhow::Error| -> AppError {
        if crate::indexer::is_removed(&e) {
            AppError::NotFound(format!(
                "repository {}/{}/{} was removed",
                repo.owner_name, repo.branch, repo.name
            ))
        } else {
            e.into()
        }
    };
    let removed = |e: &AppError| matches!(e, AppError::NotFound(_));
    // Never serve an index older than an acknowledged change (e.g. after a crash).
    if repo.built_gen < repo.wanted_gen {
        match state
            .indexer
            .wait_built(owner, repo, repo.wanted_gen)
            .await
            .map_err(removed_or_err)
        {
            Ok(()) => {}
            Err(e) if removed(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    if let Some(index) = state.store.index(repo.id, arch.as_str()).await? {
        return Ok(Some(index));
    }
    match state
        .indexer
        .ensure_arch(owner, repo, arch.as_str())
        .await
        .map_err(removed_or_err)
    {
        Ok(true) => Ok(state.store.index(repo.id, arch.as_str()).await?),
        Ok(false) => Ok(None),
        Err(e) if removed(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
