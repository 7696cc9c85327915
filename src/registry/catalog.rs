//! The registry as people browse it: owners, package search, a package with its versions
//! and files, and the indexes of a repository, seen through exactly the access rules of
//! the apk routes (an owner the identity may not read is never listed, counted or
//! matched). The JSON API and the web pages both read the registry through here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use base64::Engine;
use serde::Serialize;

use crate::access::{self, Access, Identity};
use crate::apk::index::{parse_stanza, StanzaFields};
use crate::apk::names::KNOWN_ARCHES;
use crate::apk::sign::SignatureAlgorithm;
use crate::apk::version;
use crate::error::{AppError, AppResult};
use crate::names::{Arch, BranchName, OwnerName, RepoName};
use crate::store::{CatalogFile, Owner, RepoRef, RepositorySummary, Role};
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
    /// None until the key is generated (right after the owner is created).
    pub key: Option<KeyInfo>,
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
    /// The owner's packages that depend on this one, by name or by what it provides.
    pub required_by: Vec<String>,
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

/// Every owner `identity` may read, by name.
/// How long a query waits for a slot before the answer is 503.
const QUERY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A place among the catalog queries running at once (`Shared::catalog_queries`, one per
/// core). A search or a package page reads and parses every file of the owners it covers,
/// so what anonymous visitors can make the server hold and compute at once is bounded;
/// past the cap they wait, then get 503 with Retry-After.
async fn query_slot(state: &AppState) -> AppResult<tokio::sync::OwnedSemaphorePermit> {
    let busy = || AppError::Overloaded {
        message: "too many package searches in progress: retry shortly".into(),
        retry_after: 1,
    };
    match tokio::time::timeout(
        QUERY_PATIENCE,
        state.catalog_queries.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

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
    Ok(OwnerDetail {
        overview: overview(&owner, repositories),
        key,
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
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for owner in readable_owners(state, identity).await? {
        if filter
            .owner
            .as_ref()
            .is_some_and(|o| o.as_str() != owner.name)
        {
            continue;
        }
        for file in state.store.owner_files(owner.id).await? {
            // The place is checked first: it needs no parsing.
            if !filter.matches_place(&file) {
                continue;
            }
            let fields = parse_stanza(&file.stanza);
            if filter.matches_fields(&file, &fields) {
                groups
                    .entry((file.package.name.clone(), owner.name.clone()))
                    .or_default()
                    .add(&file, fields);
            }
        }
    }
    let total = groups.len() as u64;
    let start = match &after {
        Some(key) => Bound::Excluded(key),
        None => Bound::Unbounded,
    };
    let mut rows = groups.range((start, Bound::Unbounded));
    let items: Vec<PackageSummary> = rows
        .by_ref()
        .take(limit)
        .map(|((name, owner), group)| group.summary(owner, name))
        .collect();
    let next = match (rows.next(), items.last()) {
        (Some(_), Some(last)) => Some(encode_cursor(&last.name, &last.owner)),
        _ => None,
    };
    Ok(Page { items, total, next })
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
    let all: Vec<(CatalogFile, StanzaFields)> = state
        .store
        .owner_files(owner.id)
        .await?
        .into_iter()
        .map(|f| {
            let fields = parse_stanza(&f.stanza);
            (f, fields)
        })
        .collect();
    let mut files: Vec<PackageFile> = all
        .iter()
        .filter(|(f, _)| f.package.name == name)
        .map(|(f, fields)| package_file(&owner.name, f, fields))
        .collect();
    if files.is_empty() {
        return Err(AppError::NotFound(format!(
            "no package {name:?} in {}",
            owner.name
        )));
    }
    files.sort_by(|a, b| {
        version::compare(&b.version, &a.version)
            .then_with(|| a.branch.cmp(&b.branch))
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| a.arch.cmp(&b.arch))
            .then_with(|| a.filename.cmp(&b.filename))
    });
    let mut versions: Vec<String> = Vec::new();
    for file in &files {
        if !versions.contains(&file.version) {
            versions.push(file.version.clone());
        }
    }
    let newest: Vec<&PackageFile> = files.iter().filter(|f| f.version == versions[0]).collect();
    let union = |pick: fn(&PackageFile) -> &Vec<String>| {
        let mut out: Vec<String> = Vec::new();
        for atom in newest.iter().flat_map(|f| pick(f)) {
            if !out.contains(atom) {
                out.push(atom.clone());
            }
        }
        out
    };
    let resolve = |atoms: Vec<String>| -> Vec<Link> {
        atoms
            .into_iter()
            .map(|text| {
                let target = provider(&all, atom_name(&text)).map(|name| PackageRef {
                    owner: owner.name.clone(),
                    name,
                });
                Link { text, target }
            })
            .collect()
    };
    let depends = resolve(union(|f| &f.depends));
    let install_if = resolve(union(|f| &f.install_if));
    let provides = union(|f| &f.provides);
    // Whatever any version of it answers to.
    let mut answers_to: BTreeSet<&str> = BTreeSet::from([name]);
    for file in &files {
        answers_to.extend(file.provides.iter().map(|p| atom_name(p)));
    }
    let required_by: BTreeSet<String> = all
        .iter()
        .filter(|(f, fields)| {
            f.package.name != name
                && fields
                    .depends
                    .iter()
                    .any(|d| !d.starts_with('!') && answers_to.contains(atom_name(d)))
        })
        .map(|(f, _)| f.package.name.clone())
        .collect();
    Ok(PackageDetail {
        owner: owner.name.clone(),
        name: name.to_string(),
        versions,
        files,
        depends,
        install_if,
        provides,
        required_by: required_by.into_iter().collect(),
    })
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
    let arches = state
        .store
        .repository_summaries(Some(owner.id))
        .await?
        .into_iter()
        .find(|s| s.branch == repo.branch && s.repository == repo.name)
        .map(|s| s.arches)
        .unwrap_or_default();
    let mut out = Vec::new();
    for arch in arches {
        let Some(index) = state.store.index(repo.id, &arch).await? else {
            // "noarch" is listed for repositories holding noarch packages; it has no
            // index of its own.
            continue;
        };
        let content = index.content.clone();
        let (signatures, entries) =
            tokio::task::spawn_blocking(move || crate::apk::index::describe_signed_index(&content))
                .await
                .map_err(anyhow::Error::from)?
                // The index is the registry's own, like the key: one that does not read is
                // a fault of the server.
                .map_err(|e| anyhow::anyhow!("the stored index of {arch}: {e}"))?;
        out.push(IndexStatus {
            download_path: format!(
                "/{}/{}/{}/{arch}/APKINDEX.tar.gz",
                owner.name, repo.branch, repo.name
            ),
            arch,
            generation: index.generation,
            built_at: index.built_at,
            sha256: index.sha256,
            size: index.content.len(),
            entries,
            signatures,
        });
    }
    Ok(out)
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
    let mut files: Vec<PackageFile> = state
        .store
        .owner_files(owner.id)
        .await?
        .iter()
        .filter(|f| {
            f.branch == repo.branch
                && f.repository == repo.name
                && (f.package.arch == arch.as_str() || f.package.arch == "noarch")
        })
        .map(|f| package_file(&owner.name, f, &parse_stanza(&f.stanza)))
        .collect();
    // What the apk route serves: an index of an architecture with files of its own, or of
    // any known architecture while the repository holds noarch files or nothing at all
    // (built on demand).
    let known = KNOWN_ARCHES.contains(&arch.as_str());
    let served = files.iter().any(|f| !f.noarch)
        || (known && !files.is_empty())
        || state.store.index(repo.id, arch.as_str()).await?.is_some()
        || (known && state.store.is_empty_repository(repo.id).await?);
    if !served {
        return Err(AppError::NotFound(format!(
            "{}/{}/{} has no index for {arch}",
            owner.name, repo.branch, repo.name
        )));
    }
    files.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| version::compare(&b.version, &a.version))
            .then_with(|| a.arch.cmp(&b.arch))
    });
    Ok(files)
}

/// Every owner `identity` may read, by name: the decision of `access::decide` for each.
/// Without `auth.anonymous_read`, an anonymous caller is asked for credentials (401) as
/// by every apk route, rather than shown an empty registry.
async fn readable_owners(state: &AppState, identity: &Identity) -> AppResult<Vec<Owner>> {
    if matches!(identity, Identity::Anonymous) && !state.config.auth.anonymous_read {
        return Err(AppError::Unauthorized(
            "this registry is read with credentials only: send a user name with a password \
             or token"
                .into(),
        ));
    }
    let mut out = Vec::new();
    let mut owners = state.store.list_owners().await?;
    owners.sort_by(|a, b| a.name.cmp(&b.name));
    for summary in owners {
        let owner = Owner {
            id: summary.id,
            name: summary.name,
            is_private: summary.is_private,
            is_org: summary.is_org,
        };
        // Reading a public owner does not depend on a role (every user, and anonymous
        // callers when allowed, may), so the role is asked for private owners only.
        let member_role = match identity {
            access::Identity::User(p) if owner.is_private => {
                state.store.member_role(owner.id, p.user.id).await?
            }
            _ => None,
        };
        let decision = access::decide(
            identity,
            member_role,
            &owner,
            Role::Read,
            state.config.auth.anonymous_read,
        );
        if decision == Access::Granted {
            out.push(owner);
        }
    }
    Ok(out)
}

/// The owner, when `identity` may read it; otherwise the apk routes' refusal.
async fn readable(state: &AppState, identity: &Identity, owner: &str) -> AppResult<Owner> {
    let name = OwnerName::parse(owner)?;
    crate::http::authorize(state, identity, &name, Role::Read).await
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

/// The package among `files` named `name`, or else the first (by name) providing it.
fn provider(files: &[(CatalogFile, StanzaFields)], name: &str) -> Option<String> {
    if files.iter().any(|(f, _)| f.package.name == name) {
        return Some(name.to_string());
    }
    files
        .iter()
        .filter(|(_, fields)| fields.provides.iter().any(|p| atom_name(p) == name))
        .map(|(f, _)| f.package.name.clone())
        .min()
}

/// A search's filters, validated.
struct Filter {
    term: Option<Term>,
    owner: Option<OwnerName>,
    branch: Option<BranchName>,
    repository: Option<RepoName>,
    arch: Option<Arch>,
    maintainer: Option<String>,
}

enum Term {
    Glob(glob::Pattern),
    /// Lowercase.
    Substring(String),
}

impl Term {
    fn matches(&self, s: &str) -> bool {
        match self {
            Term::Glob(pattern) => pattern.matches_with(
                s,
                glob::MatchOptions {
                    case_sensitive: false,
                    require_literal_separator: false,
                    require_literal_leading_dot: false,
                },
            ),
            Term::Substring(needle) => s.to_lowercase().contains(needle.as_str()),
        }
    }
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
    fn parse(query: &PackageQuery) -> AppResult<Filter> {
        let term = match given(&query.q) {
            None => None,
            Some(q) => {
                term_len("q", q)?;
                if q.contains(['*', '?']) {
                    Some(Term::Glob(glob::Pattern::new(q).map_err(|e| {
                        AppError::BadRequest(format!("q is not a valid pattern: {}", e.msg))
                    })?))
                } else {
                    Some(Term::Substring(q.to_lowercase()))
                }
            }
        };
        let maintainer = match given(&query.maintainer) {
            None => None,
            Some(m) => {
                term_len("maintainer", m)?;
                Some(m.to_lowercase())
            }
        };
        Ok(Filter {
            term,
            owner: given(&query.owner).map(OwnerName::parse).transpose()?,
            branch: given(&query.branch).map(BranchName::parse).transpose()?,
            repository: given(&query.repository).map(RepoName::parse).transpose()?,
            arch: given(&query.arch).map(Arch::parse).transpose()?,
            maintainer,
        })
    }

    /// Branch, repository and architecture.
    fn matches_place(&self, file: &CatalogFile) -> bool {
        let arch = &file.package.arch;
        self.branch
            .as_ref()
            .is_none_or(|b| b.as_str() == file.branch)
            && self
                .repository
                .as_ref()
                .is_none_or(|r| r.as_str() == file.repository)
            && self
                .arch
                .as_ref()
                .is_none_or(|a| a.as_str() == arch || arch == "noarch")
    }

    /// Maintainer, and the term against the name and what the package provides.
    fn matches_fields(&self, file: &CatalogFile, fields: &StanzaFields) -> bool {
        self.maintainer.as_ref().is_none_or(|m| {
            fields
                .maintainer
                .as_ref()
                .is_some_and(|fm| fm.to_lowercase().contains(m.as_str()))
        }) && self.term.as_ref().is_none_or(|t| {
            t.matches(&file.package.name)
                || fields.provides.iter().any(|pr| t.matches(atom_name(pr)))
        })
    }
}

/// What a search collects for one owner and package name.
#[derive(Default)]
struct Group {
    latest: Option<(String, String)>,
    branches: BTreeSet<String>,
    repositories: BTreeSet<String>,
    arches: BTreeSet<String>,
    files: usize,
    last_publish_ms: i64,
}

impl Group {
    fn add(&mut self, file: &CatalogFile, fields: StanzaFields) {
        let p = &file.package;
        let newer = self
            .latest
            .as_ref()
            .is_none_or(|(v, _)| version::compare(&p.version, v).is_gt());
        if newer {
            self.latest = Some((p.version.clone(), fields.description));
        }
        self.branches.insert(file.branch.clone());
        self.repositories.insert(file.repository.clone());
        self.arches.insert(p.arch.clone());
        self.files += 1;
        self.last_publish_ms = self.last_publish_ms.max(p.modified_ms);
    }

    fn summary(&self, owner: &str, name: &str) -> PackageSummary {
        let (latest_version, description) = self.latest.clone().unwrap_or_default();
        PackageSummary {
            owner: owner.to_string(),
            name: name.to_string(),
            latest_version,
            description,
            branches: self.branches.iter().cloned().collect(),
            repositories: self.repositories.iter().cloned().collect(),
            arches: self.arches.iter().cloned().collect(),
            files: self.files,
            last_publish_ms: self.last_publish_ms,
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
        for junk in ["%%%", "bm9uZXdsaW5l", &"A".repeat(600)] {
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

    #[test]
    fn a_term_with_wildcards_is_a_glob_otherwise_a_substring() {
        let glob = Filter::parse(&query("lib*")).unwrap().term.unwrap();
        assert!(glob.matches("libfoo"));
        assert!(glob.matches("LIBfoo"));
        assert!(!glob.matches("xlibfoo"));
        let sub = Filter::parse(&query("Foo")).unwrap().term.unwrap();
        assert!(sub.matches("libfoo-dev"));
        assert!(!sub.matches("bar"));
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
        let filter = Filter::parse(&blank).unwrap();
        assert!(filter.term.is_none() && filter.branch.is_none());
    }
}
