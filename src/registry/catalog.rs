//! The registry as people browse it: owners, package search, a package with its versions
//! and files, and the indexes of a repository, seen through exactly the access rules of
//! the apk routes (an owner the identity may not read is never listed, counted or
//! matched). The JSON API and the web pages both read the registry through here.
//!
//! Searches are answered by the database from the catalog tables it keeps beside the
//! package rows (see `store::catalog`), a page at a time: what one holds in memory is a
//! page, whatever the size of the registry. A package page reads the files of its one
//! name; an index page, what the index build recorded. What is still parsed (the index
//! entries of one package or one index) is parsed off the connection's thread.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use serde::Serialize;

use crate::access::{self, Identity};
use crate::apk::index::{parse_stanza, StanzaFields};
use crate::apk::names::KNOWN_ARCHES;
use crate::apk::sign::SignatureAlgorithm;
use crate::apk::version;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, BranchName, OwnerName, RepoName};
use crate::store::{
    CatalogFile, Owner, PackageSearch, PatternItem, RepoRef, RepositorySummary, Role,
    SearchCollector, SearchFile, SearchTerm,
};
use crate::AppState;

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 100;
/// Longest search term or maintainer filter.
const MAX_TERM_LEN: usize = 200;

/// An owner with what it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OwnerOverview {
    pub name: String,
    pub is_private: bool,
    /// Package files in all its repositories.
    pub packages: i64,
    /// When the newest package was uploaded, Unix milliseconds.
    pub last_publish_ms: Option<i64>,
    pub repositories: Vec<RepositorySummary>,
}

/// The signing key of an owner, as a user installs and checks it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The exact name apk expects under /etc/apk/keys/.
    pub file_name: String,
    /// Hex SHA-256 of the public key's DER (SPKI) encoding.
    pub fingerprint_sha256: String,
    /// Hex SHA-256 of the key file as `/{owner}/key` serves it, which `sha256sum` checks
    /// on a machine with nothing but busybox.
    pub file_sha256: String,
    pub bits: usize,
    /// What the indexes are signed with, e.g. "RSA256 (SHA-256)".
    pub algorithms: Vec<String>,
    /// Where the key is downloaded: "/{owner}/key".
    pub download_path: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OwnerDetail {
    #[serde(flatten)]
    pub overview: OwnerOverview,
    /// The newest active key, which signs first; None until the first key is generated
    /// (right after the owner is created).
    pub key: Option<KeyInfo>,
    /// Every key the owner ever had, newest first: active ones sign every index, retired
    /// ones are still served under their names.
    pub keys: Vec<crate::registry::keys::KeyView>,
}

/// Filters of a package search. Empty strings count as not given (what an HTML form
/// sends for an empty field).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct PackageQuery {
    /// A glob (`*`, `?`, `[...]`) when it contains `*` or `?`, otherwise a
    /// case-insensitive substring; matched against the package name and what it provides
    /// (`so:libfoo.so.1`, `cmd:foo`, `pc:foo`, plain names).
    pub q: Option<String>,
    pub owner: Option<String>,
    pub branch: Option<String>,
    pub repository: Option<String>,
    /// Files of this architecture, and noarch files (which every architecture installs).
    pub arch: Option<String>,
    /// A case-insensitive substring of the maintainer (`m:`).
    pub maintainer: Option<String>,
}

/// One page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Results over all pages.
    pub total: u64,
    /// Opaque cursor of the next page (`after`), None on the last page.
    pub next: Option<String>,
}

/// One package name of one owner, over its files that match a search.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageSummary {
    pub owner: String,
    pub name: String,
    /// Newest in apk version order.
    pub latest_version: String,
    /// The description of the newest version.
    pub description: String,
    pub branches: Vec<String>,
    pub repositories: Vec<String>,
    pub arches: Vec<String>,
    pub files: usize,
    /// Unix milliseconds.
    pub last_publish_ms: i64,
}

/// Every Alpine index field of one package file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageFile {
    pub owner: String,
    pub branch: String,
    pub repository: String,
    pub arch: String,
    /// Listed in the index of every architecture of its repository.
    pub noarch: bool,
    pub name: String,
    pub version: String,
    pub filename: String,
    pub size: i64,
    pub sha256: String,
    /// `C:`, Q1 followed by the base64 SHA-1 of the control member.
    pub checksum: String,
    pub description: String,
    pub url: String,
    pub license: String,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    /// `t:`, Unix seconds.
    pub build_time: Option<i64>,
    pub commit: Option<String>,
    pub installed_size: Option<u64>,
    pub provider_priority: Option<u64>,
    pub depends: Vec<String>,
    pub provides: Vec<String>,
    pub install_if: Vec<String>,
    /// When this file was uploaded, Unix milliseconds.
    pub uploaded_ms: i64,
    /// "/{owner}/{branch}/{repository}/{arch}/{filename}"
    pub download_path: String,
}

/// A package inside the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PackageRef {
    pub owner: String,
    pub name: String,
}

/// A dependency or install_if atom, resolved among the owner's packages.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Link {
    pub text: String,
    /// The package of that name, or else one providing it; None when the owner has none.
    pub target: Option<PackageRef>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageDetail {
    pub owner: String,
    pub name: String,
    /// Distinct versions, newest first in apk version order.
    pub versions: Vec<String>,
    /// Newest first (apk order), then by branch, repository and architecture.
    pub files: Vec<PackageFile>,
    /// Of the newest version (all its files).
    pub depends: Vec<Link>,
    pub install_if: Vec<Link>,
    pub provides: Vec<String>,
    /// The owner's packages that depend on this one, by name or by what it provides; the
    /// first `limits.max_required_by` by name.
    pub required_by: Vec<String>,
    /// How many packages depend on this one in all.
    pub required_by_total: u64,
}

/// The served index of one architecture.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexStatus {
    pub arch: String,
    pub generation: i64,
    /// Unix seconds.
    pub built_at: i64,
    pub sha256: String,
    pub size: usize,
    /// Packages the index lists.
    pub entries: usize,
    /// Signature entries, e.g. ".SIGN.RSA256.acme-1a2b3c4d.rsa.pub".
    pub signatures: Vec<String>,
    /// "/{owner}/{branch}/{repository}/{arch}/APKINDEX.tar.gz"
    pub download_path: String,
}

/// A place among the catalog queries running at once
/// (`limits.max_concurrent_catalog_queries`): what anonymous visitors can make the server
/// and its database compute at once is bounded; past the cap they wait
/// (`limits.catalog_query_wait_secs`), then get 503 with Retry-After.
async fn query_slot(state: &AppState) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
    let busy = || AppError::Overloaded {
        message: "too many package searches in progress: retry shortly".into(),
        retry_after: 1,
    };
    match tokio::time::timeout(
        std::time::Duration::from_secs(state.config.limits.catalog_query_wait_secs),
        state.catalog_queries.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

/// Runs `work` (parsing, sorting) on a blocking thread, off the connection's worker.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(anyhow::Error::from)?)
}

/// Every owner `identity` may read, by name.
pub async fn owners(state: &AppState, identity: &Identity) -> AppResult<Vec<OwnerOverview>> {
    let readable = readable_owners(state, identity).await?;
    let mut repositories: HashMap<String, Vec<RepositorySummary>> = HashMap::new();
    for summary in state.store.repository_summaries(None).await? {
        repositories
            .entry(summary.owner.clone())
            .or_default()
            .push(summary);
    }
    Ok(readable
        .into_iter()
        .map(|owner| {
            let repos = repositories.remove(&owner.name).unwrap_or_default();
            overview(&owner, repos)
        })
        .collect())
}

/// One owner `identity` may read, with its signing key. The same refusals as the apk
/// routes: 401 or 404 for an owner the identity may not read.
pub async fn owner(state: &AppState, identity: &Identity, owner: &str) -> AppResult<OwnerDetail> {
    let owner = readable(state, identity, owner).await?;
    let repositories = state.store.repository_summaries(Some(owner.id)).await?;
    let key = match state.store.signing_key(owner.id).await? {
        Some(stored) => Some(key_info(
            state,
            &owner.name,
            &stored.key_name,
            &stored.public_pem,
        )?),
        None => None,
    };
    let keys = crate::registry::keys::list(state, &owner).await?;
    Ok(OwnerDetail {
        overview: overview(&owner, repositories),
        key,
        keys,
    })
}

/// Packages matching `query` among the owners `identity` may read: one row per owner and
/// package name, in the stable order (name, owner); `after` is the `next` cursor of the
/// previous page; `limit` is 1..=100.
pub async fn search(
    state: &AppState,
    identity: &Identity,
    query: &PackageQuery,
    after: Option<&str>,
    limit: usize,
) -> AppResult<Page<PackageSummary>> {
    let _slot = query_slot(state).await?;
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}"
        )));
    }
    let after = after
        .filter(|a| !a.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let filter = Filter::parse(query)?;
    refuse_anonymous_without_anonymous_read(state, identity)?;
    let Some(filter) = filter else {
        // A term or maintainer nothing can contain: no package matches.
        return Ok(Page {
            items: Vec::new(),
            total: 0,
            next: None,
        });
    };
    let search = PackageSearch {
        scope: access::read_scope(identity, state.config.auth.anonymous_read),
        term: filter.term,
        owner: filter.owner.map(|o| o.to_string()),
        branch: filter.branch.map(|b| b.to_string()),
        repository: filter.repository.map(|r| r.to_string()),
        arch: filter.arch.map(|a| a.to_string()),
        maintainer: filter.maintainer,
        after,
        limit,
    };
    let mut groups = Groups::default();
    let page = state.store.search_packages(&search, &mut groups).await?;
    let items: Vec<PackageSummary> = page
        .keys
        .iter()
        .map(|(name, owner)| {
            groups
                .by_key
                .remove(&(name.clone(), owner.clone()))
                .unwrap_or_default()
                .summary(owner, name)
        })
        .collect();
    let next = match (page.more, items.last()) {
        (true, Some(last)) => Some(encode_cursor(&last.name, &last.owner)),
        _ => None,
    };
    Ok(Page {
        items,
        total: page.total,
        next,
    })
}

/// Every version and file of one package of `owner`; NotFound when the identity sees no
/// file of that name.
pub async fn package(
    state: &AppState,
    identity: &Identity,
    owner: &str,
    name: &str,
) -> AppResult<PackageDetail> {
    let _slot = query_slot(state).await?;
    let owner = readable(state, identity, owner).await?;
    if !crate::apk::names::is_valid_pkgname(name) {
        return Err(AppError::BadRequest(format!(
            "invalid package name {:?}: use letters, digits, '+', '.', '_' or '-'",
            name.chars().take(130).collect::<String>()
        )));
    }
    let rows = state.store.package_files(owner.id, name).await?;
    if rows.is_empty() {
        return Err(AppError::NotFound(format!(
            "no package {name:?} in {}",
            owner.name
        )));
    }
    let owner_name = owner.name.clone();
    let described = off_thread(move || describe_files(&owner_name, rows)).await?;
    // Dependencies resolve among the owner's packages: by name, else by what they provide.
    let mut wanted: Vec<String> = described
        .depends
        .iter()
        .chain(&described.install_if)
        .map(|atom| atom_name(atom).to_string())
        .collect();
    wanted.sort();
    wanted.dedup();
    let providers: HashMap<String, String> = if wanted.is_empty() {
        HashMap::new()
    } else {
        state
            .store
            .providers(owner.id, &wanted)
            .await?
            .into_iter()
            .collect()
    };
    let resolve = |atoms: Vec<String>| -> Vec<Link> {
        atoms
            .into_iter()
            .map(|text| {
                let target = providers.get(atom_name(&text)).map(|name| PackageRef {
                    owner: owner.name.clone(),
                    name: name.clone(),
                });
                Link { text, target }
            })
            .collect()
    };
    let depends = resolve(described.depends);
    let install_if = resolve(described.install_if);
    let (required_by, required_by_total) = state
        .store
        .required_by(owner.id, name, state.config.limits.max_required_by)
        .await?;
    Ok(PackageDetail {
        owner: owner.name.clone(),
        name: name.to_string(),
        versions: described.versions,
        files: described.files,
        depends,
        install_if,
        provides: described.provides,
        required_by,
        required_by_total,
    })
}

/// What a package page shows of the files of one name.
struct Described {
    files: Vec<PackageFile>,
    versions: Vec<String>,
    /// Of the newest version's files, each atom once, in order.
    depends: Vec<String>,
    install_if: Vec<String>,
    provides: Vec<String>,
}

/// Parses and orders the files of one package name: newest first (apk order), then by
/// branch, repository, architecture and file name.
fn describe_files(owner: &str, rows: Vec<CatalogFile>) -> Described {
    let mut files: Vec<PackageFile> = rows
        .iter()
        .map(|f| package_file(owner, f, &parse_stanza(&f.stanza)))
        .collect();
    drop(rows);
    files.sort_by(|a, b| {
        version::compare(&b.version, &a.version)
            .then_with(|| a.branch.cmp(&b.branch))
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| a.arch.cmp(&b.arch))
            .then_with(|| a.filename.cmp(&b.filename))
    });
    let mut versions: Vec<String> = Vec::new();
    for file in &files {
        if versions.last() != Some(&file.version) && !versions.contains(&file.version) {
            versions.push(file.version.clone());
        }
    }
    let newest: Vec<&PackageFile> = files
        .iter()
        .filter(|f| versions.first() == Some(&f.version))
        .collect();
    let union = |pick: fn(&PackageFile) -> &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut out: Vec<String> = Vec::new();
        for atom in newest.iter().flat_map(|f| pick(f)) {
            if seen.insert(atom.as_str()) {
                out.push(atom.clone());
            }
        }
        out
    };
    let depends = union(|f| &f.depends);
    let install_if = union(|f| &f.install_if);
    let provides = union(|f| &f.provides);
    Described {
        files,
        versions,
        depends,
        install_if,
        provides,
    }
}

/// The served index of every architecture of one repository.
pub async fn index_status(
    state: &AppState,
    identity: &Identity,
    owner: &str,
    branch: &str,
    repository: &str,
) -> AppResult<Vec<IndexStatus>> {
    let (owner, repo) = readable_repository(state, identity, owner, branch, repository).await?;
    let mut out = Vec::new();
    for index in state.store.index_summaries(repo.id).await? {
        let arch = index.arch;
        let (signatures, entries) = match (index.signatures, index.entries) {
            (Some(signatures), Some(entries)) => (signatures, entries.max(0) as usize),
            // Written before the build recorded these (it is rendered again at the first
            // start after the upgrade, or by the next change): read from its bytes.
            _ => match describe_served(state, repo.id, &arch).await? {
                Some(described) => described,
                None => continue,
            },
        };
        out.push(IndexStatus {
            download_path: format!(
                "/{}/{}/{}/{arch}/APKINDEX.tar.gz",
                owner.name, repo.branch, repo.name
            ),
            arch,
            generation: index.generation,
            built_at: index.built_at,
            sha256: index.sha256,
            size: index.size.max(0) as usize,
            entries,
            signatures,
        });
    }
    Ok(out)
}

/// The signature names and entry count of a served index, from its bytes; None when it
/// is gone.
async fn describe_served(
    state: &AppState,
    repository_id: i64,
    arch: &str,
) -> AppResult<Option<(Vec<String>, usize)>> {
    let _slot = query_slot(state).await?;
    let Some(index) = state.store.index(repository_id, arch).await? else {
        return Ok(None);
    };
    let content = index.content;
    let described = off_thread(move || crate::apk::index::describe_signed_index(&content)).await?;
    // The index is the registry's own, like the key: one that does not read is a fault
    // of the server.
    let described = described.map_err(|e| anyhow::anyhow!("the stored index of {arch}: {e}"))?;
    Ok(Some(described))
}

/// The files the index of one branch, repository and architecture lists (noarch files
/// included), by name and then newest version first. NotFound when the apk route would
/// serve no index for that architecture.
pub async fn index_files(
    state: &AppState,
    identity: &Identity,
    owner: &str,
    branch: &str,
    repository: &str,
    arch: &str,
) -> AppResult<Vec<PackageFile>> {
    let _slot = query_slot(state).await?;
    let (owner, repo) = readable_repository(state, identity, owner, branch, repository).await?;
    let arch = Arch::parse(arch)?;
    let rows = state.store.index_files(repo.id, arch.as_str()).await?;
    let owner_name = owner.name.clone();
    let files = off_thread(move || {
        let mut files: Vec<PackageFile> = rows
            .iter()
            .map(|f| package_file(&owner_name, f, &parse_stanza(&f.stanza)))
            .collect();
        files.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| version::compare(&b.version, &a.version))
                .then_with(|| a.arch.cmp(&b.arch))
        });
        files
    })
    .await?;
    // What the apk route serves: an index of an architecture with files of its own, or of
    // any known architecture while the repository holds noarch files or nothing at all
    // (built on demand).
    let known = KNOWN_ARCHES.contains(&arch.as_str());
    let served = files.iter().any(|f| !f.noarch)
        || (known && !files.is_empty())
        || state
            .store
            .index_summaries(repo.id)
            .await?
            .iter()
            .any(|i| i.arch == arch.as_str())
        || (known && state.store.is_empty_repository(repo.id).await?);
    if !served {
        return Err(AppError::NotFound(format!(
            "{}/{}/{} has no index for {arch}",
            owner.name, repo.branch, repo.name
        )));
    }
    Ok(files)
}

/// Without `auth.anonymous_read`, an anonymous caller is asked for credentials (401) as
/// by every apk route, rather than shown an empty registry.
fn refuse_anonymous_without_anonymous_read(state: &AppState, identity: &Identity) -> AppResult<()> {
    if matches!(identity, Identity::Anonymous) && !state.config.auth.anonymous_read {
        return Err(AppError::Unauthorized(
            "this registry is read with credentials only: send a user name with a password \
             or token"
                .into(),
        ));
    }
    Ok(())
}

/// Every owner `identity` may read, by name.
async fn readable_owners(state: &AppState, identity: &Identity) -> AppResult<Vec<Owner>> {
    refuse_anonymous_without_anonymous_read(state, identity)?;
    let scope = access::read_scope(identity, state.config.auth.anonymous_read);
    Ok(state.store.owners_in(&scope).await?)
}

/// The owner, when `identity` may read it; otherwise the apk routes' refusal.
async fn readable(state: &AppState, identity: &Identity, owner: &str) -> AppResult<Owner> {
    let name = OwnerName::parse(owner)?;
    access::authorize(state, identity, &name, Role::Read).await
}

async fn readable_repository(
    state: &AppState,
    identity: &Identity,
    owner: &str,
    branch: &str,
    repository: &str,
) -> AppResult<(Owner, crate::store::Repository)> {
    let owner = readable(state, identity, owner).await?;
    let branch = BranchName::parse(branch)?;
    let repository = RepoName::parse(repository)?;
    let repo = state
        .store
        .repository(&RepoRef {
            owner_id: owner.id,
            branch: branch.to_string(),
            repository: repository.to_string(),
        })
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "no repository {branch}/{repository} in {}",
                owner.name
            ))
        })?;
    Ok((owner, repo))
}

fn overview(owner: &Owner, repositories: Vec<RepositorySummary>) -> OwnerOverview {
    OwnerOverview {
        name: owner.name.clone(),
        is_private: owner.is_private,
        packages: repositories.iter().map(|r| r.packages).sum(),
        last_publish_ms: repositories.iter().filter_map(|r| r.last_publish_ms).max(),
        repositories,
    }
}

fn key_info(state: &AppState, owner: &str, key_name: &str, public_pem: &str) -> AppResult<KeyInfo> {
    // The key is the registry's own: one that does not parse is a fault of the server,
    // not of the request.
    let (fingerprint_sha256, bits) = crate::apk::sign::public_key_fingerprint(public_pem)
        .map_err(|e| anyhow::anyhow!("the stored public key of {owner}: {e}"))?;
    let algorithms = state
        .config
        .signature_algorithms()?
        .into_iter()
        .map(|alg| {
            let digest = match alg {
                SignatureAlgorithm::Rsa => "SHA-1",
                SignatureAlgorithm::Rsa256 => "SHA-256",
                SignatureAlgorithm::Rsa512 => "SHA-512",
            };
            format!("{alg} ({digest})")
        })
        .collect();
    Ok(KeyInfo {
        file_name: key_name.to_string(),
        fingerprint_sha256,
        file_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(public_pem)),
        bits,
        algorithms,
        download_path: format!("/{owner}/key"),
    })
}

fn package_file(owner: &str, file: &CatalogFile, fields: &StanzaFields) -> PackageFile {
    let p = &file.package;
    PackageFile {
        owner: owner.to_string(),
        branch: file.branch.clone(),
        repository: file.repository.clone(),
        arch: p.arch.clone(),
        noarch: p.arch == "noarch",
        name: p.name.clone(),
        version: p.version.clone(),
        filename: p.filename.clone(),
        size: p.size,
        sha256: p.sha256.clone(),
        checksum: p.checksum.clone(),
        description: fields.description.clone(),
        url: fields.url.clone(),
        license: fields.license.clone(),
        origin: fields.origin.clone(),
        maintainer: fields.maintainer.clone(),
        build_time: fields.build_time,
        commit: fields.commit.clone(),
        installed_size: fields.installed_size,
        provider_priority: fields.provider_priority,
        depends: fields.depends.clone(),
        provides: fields.provides.clone(),
        install_if: fields.install_if.clone(),
        uploaded_ms: p.modified_ms,
        download_path: format!(
            "/{owner}/{}/{}/{}/{}",
            file.branch, file.repository, p.arch, p.filename
        ),
    }
}

/// The name an atom (`so:libc.musl-x86_64.so.1`, `foo>=1.2`, `!bar`, `baz=1.0-r0`) is
/// about.
fn atom_name(atom: &str) -> &str {
    let atom = atom.strip_prefix('!').unwrap_or(atom);
    let end = atom.find(['=', '<', '>', '~']).unwrap_or(atom.len());
    &atom[..end]
}

/// A search's filters, validated.
struct Filter {
    term: Option<SearchTerm>,
    owner: Option<OwnerName>,
    branch: Option<BranchName>,
    repository: Option<RepoName>,
    arch: Option<Arch>,
    /// Letters lowercased (ASCII), as the catalog keeps maintainers.
    maintainer: Option<String>,
}

/// The parameter's value, unless it is absent or blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn term_len(what: &str, value: &str) -> AppResult<()> {
    if value.chars().count() > MAX_TERM_LEN {
        return Err(AppError::BadRequest(format!(
            "{what} is longer than {MAX_TERM_LEN} characters"
        )));
    }
    Ok(())
}

impl Filter {
    /// The filters of `query`; None when no package can match them (a term or maintainer
    /// with characters no name, provided name or maintainer holds).
    fn parse(query: &PackageQuery) -> AppResult<Option<Filter>> {
        let term = match given(&query.q) {
            None => None,
            Some(q) => {
                term_len("q", q)?;
                if q.contains(['*', '?']) {
                    match pattern_items(q)? {
                        Some(items) => Some(SearchTerm::Pattern(items)),
                        None => return Ok(None),
                    }
                } else if q.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Ok(None);
                } else {
                    Some(SearchTerm::Substring(q.to_ascii_lowercase()))
                }
            }
        };
        let maintainer = match given(&query.maintainer) {
            None => None,
            Some(m) => {
                term_len("maintainer", m)?;
                if m.chars().any(char::is_control) {
                    return Ok(None);
                }
                Some(m.to_ascii_lowercase())
            }
        };
        Ok(Some(Filter {
            term,
            owner: given(&query.owner).map(OwnerName::parse).transpose()?,
            branch: given(&query.branch).map(BranchName::parse).transpose()?,
            repository: given(&query.repository).map(RepoName::parse).transpose()?,
            arch: given(&query.arch).map(Arch::parse).transpose()?,
            maintainer,
        }))
    }
}

/// A glob (`*`, `?`, `[...]`, `[!...]`) as the items the store matches whole names with,
/// case-insensitive for ASCII letters exactly as the `glob` crate matches with
/// `case_sensitive: false` (each letter, and each range between two letters, stands for
/// both cases). Errors are the `glob` crate's; `**` is refused. None when nothing can
/// match (a NUL character, which no name holds, or a class of nothing).
fn pattern_items(q: &str) -> AppResult<Option<Vec<PatternItem>>> {
    glob::Pattern::new(q)
        .map_err(|e| AppError::BadRequest(format!("q is not a valid pattern: {}", e.msg)))?;
    let chars: Vec<char> = q.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '?' => items.push(PatternItem::AnyChar),
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    return Err(AppError::BadRequest(
                        "q is not a valid pattern: `**` matches paths, not names: use `*`".into(),
                    ));
                }
                items.push(PatternItem::AnySequence);
            }
            '[' => {
                // As the glob crate reads a class: its first character (after `!`) may
                // be `]`, and it ends at the next `]`.
                let negated = chars.get(i + 1) == Some(&'!');
                let first = if negated { i + 2 } else { i + 1 };
                let end = chars
                    .get(first + 1..)
                    .and_then(|rest| rest.iter().position(|&c| c == ']'))
                    .map(|j| first + 1 + j)
                    .ok_or_else(|| {
                        AppError::BadRequest("q is not a valid pattern: invalid range".into())
                    })?;
                let ranges = class_ranges(&chars[first..end]);
                match (ranges.is_empty(), negated) {
                    (true, false) => return Ok(None),
                    (true, true) => items.push(PatternItem::AnyChar),
                    (false, negated) => items.push(PatternItem::Class { negated, ranges }),
                }
                i = end;
            }
            '\0' => return Ok(None),
            c if c.is_ascii_alphabetic() => items.push(PatternItem::Class {
                negated: false,
                ranges: both_cases(c),
            }),
            c => items.push(PatternItem::Char(c)),
        }
        i += 1;
    }
    Ok(Some(items))
}

fn both_cases(c: char) -> Vec<(char, char)> {
    let (lower, upper) = (c.to_ascii_lowercase(), c.to_ascii_uppercase());
    vec![(lower, lower), (upper, upper)]
}

/// The characters a class's specifiers (`a`, `a-z`) admit, as the glob crate reads them
/// with `case_sensitive: false`, as ranges without NUL (which no name holds).
fn class_ranges(specifiers: &[char]) -> Vec<(char, char)> {
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < specifiers.len() {
        if i + 3 <= specifiers.len() && specifiers[i + 1] == '-' {
            let (start, end) = (specifiers[i], specifiers[i + 2]);
            ranges.push((start, end));
            let (low_start, low_end) = (start.to_ascii_lowercase(), end.to_ascii_lowercase());
            // Between two ASCII letters a character also matches by its lowercase.
            if low_start.is_ascii_lowercase() && low_end.is_ascii_lowercase() {
                ranges.push((low_start, low_end));
                ranges.push((low_start.to_ascii_uppercase(), low_end.to_ascii_uppercase()));
            }
            i += 3;
        } else {
            let c = specifiers[i];
            if c.is_ascii_alphabetic() {
                ranges.extend(both_cases(c));
            } else {
                ranges.push((c, c));
            }
            i += 1;
        }
    }
    ranges
        .into_iter()
        .filter_map(|(start, end)| {
            let start = start.max('\u{1}');
            (start <= end).then_some((start, end))
        })
        .collect()
}

/// What a search collects for one owner and package name.
#[derive(Default)]
struct Group {
    /// The newest version among the matching files (apk order; of equal ones, the
    /// first by package id), and that file's id.
    latest: Option<(String, i64)>,
    description: String,
    branches: BTreeSet<String>,
    repositories: BTreeSet<String>,
    arches: BTreeSet<String>,
    files: usize,
    last_publish_ms: i64,
}

impl Group {
    fn add(&mut self, file: SearchFile) {
        let newer = self
            .latest
            .as_ref()
            .is_none_or(|(v, _)| version::compare(&file.version, v).is_gt());
        if newer {
            self.latest = Some((file.version, file.package_id));
        }
        self.branches.insert(file.branch);
        self.repositories.insert(file.repository);
        self.arches.insert(file.arch);
        self.files += 1;
        self.last_publish_ms = self.last_publish_ms.max(file.modified_ms);
    }

    fn summary(self, owner: &str, name: &str) -> PackageSummary {
        PackageSummary {
            owner: owner.to_string(),
            name: name.to_string(),
            latest_version: self.latest.map(|(v, _)| v).unwrap_or_default(),
            description: self.description,
            branches: self.branches.into_iter().collect(),
            repositories: self.repositories.into_iter().collect(),
            arches: self.arches.into_iter().collect(),
            files: self.files,
            last_publish_ms: self.last_publish_ms,
        }
    }
}

/// The groups of one search page, filled as the store reads their files.
#[derive(Default)]
struct Groups {
    by_key: HashMap<(String, String), Group>,
}

impl SearchCollector for Groups {
    fn file(&mut self, file: SearchFile) {
        self.by_key
            .entry((file.name.clone(), file.owner.clone()))
            .or_default()
            .add(file);
    }

    fn wanted_descriptions(&self) -> Vec<i64> {
        self.by_key
            .values()
            .filter_map(|g| g.latest.as_ref().map(|(_, id)| *id))
            .collect()
    }

    fn description(&mut self, package_id: i64, description: String) {
        if let Some(group) = self
            .by_key
            .values_mut()
            .find(|g| g.latest.as_ref().is_some_and(|(_, id)| *id == package_id))
        {
            group.description = description;
        }
    }
}

const CURSOR: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The position after (name, owner), opaque to clients.
fn encode_cursor(name: &str, owner: &str) -> String {
    CURSOR.encode(format!("{name}\n{owner}"))
}

fn decode_cursor(cursor: &str) -> AppResult<(String, String)> {
    let malformed = || {
        AppError::BadRequest(
            "after is not a cursor this server gave: pass the `next` of the previous page \
             unchanged"
                .into(),
        )
    };
    if cursor.len() > 512 {
        return Err(malformed());
    }
    let bytes = CURSOR.decode(cursor).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (name, owner) = text.split_once('\n').ok_or_else(malformed)?;
    if text.chars().filter(|c| c.is_control()).count() != 1 {
        return Err(malformed());
    }
    Ok((name.to_string(), owner.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let cursor = encode_cursor("py3-foo", "acme");
        assert_eq!(
            decode_cursor(&cursor).unwrap(),
            ("py3-foo".to_string(), "acme".to_string())
        );
        let with_nul = CURSOR.encode("a\u{0}\nacme");
        for junk in ["%%%", "bm9uZXdsaW5l", &"A".repeat(600), &with_nul] {
            assert!(matches!(decode_cursor(junk), Err(AppError::BadRequest(_))));
        }
    }

    #[test]
    fn atom_names_drop_operators_and_conflict_marks() {
        assert_eq!(
            atom_name("so:libc.musl-x86_64.so.1"),
            "so:libc.musl-x86_64.so.1"
        );
        assert_eq!(atom_name("foo>=1.2"), "foo");
        assert_eq!(atom_name("!bar"), "bar");
        assert_eq!(atom_name("cmd:baz=1.0-r0"), "cmd:baz");
        assert_eq!(atom_name("qux~1"), "qux");
    }

    fn query(q: &str) -> PackageQuery {
        PackageQuery {
            q: Some(q.to_string()),
            ..PackageQuery::default()
        }
    }

    fn term(q: &str) -> Option<SearchTerm> {
        Filter::parse(&query(q)).unwrap().unwrap().term
    }

    #[test]
    fn a_term_with_wildcards_is_a_glob_otherwise_a_substring() {
        use PatternItem::*;
        let letter = |c: char| Class {
            negated: false,
            ranges: vec![(c, c), (c.to_ascii_uppercase(), c.to_ascii_uppercase())],
        };
        assert_eq!(
            term("Li-?*"),
            Some(SearchTerm::Pattern(vec![
                letter('l'),
                letter('i'),
                Char('-'),
                AnyChar,
                AnySequence
            ]))
        );
        assert_eq!(term("Foo"), Some(SearchTerm::Substring("foo".into())));
        // Lowercased as ASCII, like the maintainers and provided names kept for search.
        assert_eq!(term("ÉFoo"), Some(SearchTerm::Substring("Éfoo".into())));
    }

    #[test]
    fn classes_read_as_the_glob_crate_reads_them_without_case() {
        use PatternItem::*;
        assert_eq!(
            term("[a-cX]?"),
            Some(SearchTerm::Pattern(vec![
                Class {
                    negated: false,
                    ranges: vec![('a', 'c'), ('a', 'c'), ('A', 'C'), ('x', 'x'), ('X', 'X')]
                },
                AnyChar
            ]))
        );
        // `]` first is a member; `!` first negates; a range between other characters
        // is taken as written.
        assert_eq!(
            term("[!]0-9]*"),
            Some(SearchTerm::Pattern(vec![
                Class {
                    negated: true,
                    ranges: vec![(']', ']'), ('0', '9')]
                },
                AnySequence
            ]))
        );
        // A class of nothing matches nothing; its negation, anything.
        assert_eq!(
            Filter::parse(&query("[z-a]*")).unwrap().map(|f| f.term),
            None
        );
        assert_eq!(
            term("[!z-a]*"),
            Some(SearchTerm::Pattern(vec![AnyChar, AnySequence]))
        );
    }

    #[test]
    fn terms_no_name_can_hold_match_nothing() {
        for q in ["foo bar", "a\u{0}b", "x\u{7}", "a\u{0}*"] {
            assert!(Filter::parse(&query(q)).unwrap().is_none(), "{q:?}");
        }
        let maintainer = PackageQuery {
            maintainer: Some("jane\u{0}".into()),
            ..PackageQuery::default()
        };
        assert!(Filter::parse(&maintainer).unwrap().is_none());
    }

    #[test]
    fn bad_filters_are_refused_with_the_reason() {
        for bad in [
            PackageQuery {
                arch: Some("X86".into()),
                ..PackageQuery::default()
            },
            PackageQuery {
                branch: Some("../x".into()),
                ..PackageQuery::default()
            },
            query("[*"),
            query("lib**"),
            query("**"),
            query(&"a".repeat(201)),
        ] {
            assert!(
                matches!(Filter::parse(&bad), Err(AppError::BadRequest(_))),
                "{bad:?}"
            );
        }
        // Blank fields, as an empty form sends them, are no filter.
        let blank = PackageQuery {
            q: Some(" ".into()),
            branch: Some(String::new()),
            ..PackageQuery::default()
        };
        let filter = Filter::parse(&blank).unwrap().unwrap();
        assert!(filter.term.is_none() && filter.branch.is_none());
    }
}
