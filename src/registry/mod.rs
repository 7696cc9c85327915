//! Operations on the registry, callable from every adapter (the command line today, the
//! JSON API later): each is written once here, with its checks and invariants, and the
//! adapters only parse their input and print or serialise the result.

pub mod accounts;
pub mod audit;
pub mod catalog;
pub mod copy;
pub mod dependencies;
pub mod dependency_sources;
pub mod fsck;
pub mod indexes;
pub mod keyring;
pub mod keys;
pub mod migrate;
pub mod publish;
pub mod remote;
pub mod repositories;
pub mod retention;
pub mod snapshots;
pub mod upload_slots;
pub mod virtuals;
pub mod webhooks;

use crate::names::RepoAddress;
use crate::store::RepoRef;

/// The repository `at` names, of the owner whose id is `owner_id`.
pub fn repo_ref(owner_id: i64, at: &RepoAddress) -> RepoRef {
    RepoRef {
        owner_id,
        branch: at.branch.to_string(),
        repository: at.repository.to_string(),
    }
}
