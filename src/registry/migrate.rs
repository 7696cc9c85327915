//! Moving an installation to other storage (`migrate-storage`): every row of this
//! registry's database, ids preserved, and every package file its rows reference, into
//! another registry whose database and blob storage are empty; e.g. from the embedded
//! SQLite database to PostgreSQL, and back. The source is only read.
//!
//! Signing keys are copied as they are, sealed with the master key and their owner's id,
//! so the target must use the source's master key: that is checked before anything is
//! opened or written. Package files are streamed through the target's blob store (staged,
//! hashed, committed) before the rows that reference them are written in one transaction;
//! then the copy is checked: rows per table, and every file's size. A failure midway
//! leaves the source as it was and says that the target must be emptied before another
//! attempt.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::blob::BlobStore;
use crate::config::{without_credentials, Config, DatabaseBackend};
use crate::registry::keys::MasterKey;
use crate::store::{Dump, TableCounts};
use crate::AppState;

/// What `migrate_storage` copied.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The target's database URL, without credentials.
    pub database: String,
    /// Rows copied, per table (equal in source and target).
    pub tables: TableCounts,
    /// Package files the rows reference, and their total size in bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// The target uses the source's blob directory: the files stayed where they were and
    /// were only checked.
    pub blobs_in_place: bool,
}

/// Said after any failure once the target may hold something.
const EMPTY_TARGET_FIRST: &str = "the source is unchanged, but the target may be partly \
     written: empty it (a new SQLite file or a newly created PostgreSQL database, and an \
     empty blob directory) before trying again";

/// Copies everything of `source` into the registry `target_config` describes (read from
/// `target_file`, named in messages). Refuses, writing nothing, when the target's master
/// key differs from the source's or when its database or blob storage holds anything.
pub async fn migrate_storage(
    source: &AppState,
    target_config: Config,
    target_file: &Path,
) -> anyhow::Result<Summary> {
    // Before the target is opened: opening it would create a new master key file.
    check_master_key(&source.config, &target_config, target_file)?;
    let database = without_credentials(&target_config.database_url());
    let target = crate::open(target_config)
        .await
        .with_context(|| format!("opening the target of {}", target_file.display()))?;
    let blobs_in_place = same_blob_dir(&source.config, &target.config);

    let held = target.store.table_counts().await?;
    if !held.is_empty() {
        bail!(
            "the target database {database} is not empty ({held}): migrate-storage copies into \
             an empty database only (a new SQLite file, or a newly created PostgreSQL database)"
        );
    }
    if !blobs_in_place {
        let stored = target.blobs.list().await?.len();
        if stored > 0 {
            bail!(
                "the target blob storage ({}) is not empty ({stored} files): migrate-storage \
                 copies into an empty one only (or into the source's own blob storage, \
                 where the files stay)",
                target.config.storage_description()
            );
        }
    }

    let dump = source
        .store
        .export()
        .await
        .context("reading the source database")?;
    let blobs = referenced_blobs(&dump)?;
    if let Err(e) = copy(source, &target, &dump, &blobs, blobs_in_place).await {
        bail!("{e:#}\n{EMPTY_TARGET_FIRST}");
    }
    // The rows were read in one snapshot; a server still writing to the source would have
    // made the copy stale.
    let now = source.store.table_counts().await?;
    if now != dump.counts() {
        bail!(
            "the source changed while it was copied (is a server still running on it? stop \
             it first)\n{EMPTY_TARGET_FIRST}"
        );
    }
    Ok(Summary {
        database,
        tables: dump.counts(),
        blobs: blobs.len() as u64,
        bytes: blobs.values().sum(),
        blobs_in_place,
    })
}

/// Files first, then the rows that reference them (as an upload does), then the check.
async fn copy(
    source: &AppState,
    target: &AppState,
    dump: &Dump,
    blobs: &BTreeMap<String, u64>,
    in_place: bool,
) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; 256 * 1024];
    for (sha256, &size) in blobs {
        if in_place {
            check_blob(target, sha256, size).await?;
        } else {
            copy_blob(
                source.blobs.as_ref(),
                target.blobs.as_ref(),
                sha256,
                size,
                &mut buffer,
            )
            .await?;
        }
    }
    target
        .store
        .import(dump)
        .await
        .context("writing the rows into the target database")?;

    let copied = target.store.table_counts().await?;
    if copied != dump.counts() {
        bail!(
            "the copy is incomplete: the target holds {copied}, the source {}",
            dump.counts()
        );
    }
    for (sha256, &size) in blobs {
        check_blob(target, sha256, size).await?;
    }
    Ok(())
}

/// Every blob the package rows, the files cached of remote repositories and the histories
/// of virtual repositories reference, with its size; rows that disagree on a blob's size make the source inconsistent.
fn referenced_blobs(dump: &Dump) -> anyhow::Result<BTreeMap<String, u64>> {
    let packages = dump
        .packages
        .iter()
        .map(|p| (format!("package row {}", p.id), &p.sha256, p.size));
    let cached = dump.upstream_files.iter().map(|f| {
        let row = format!(
            "cached file {}/{} of repository {}",
            f.arch, f.filename, f.repository_id
        );
        (row, &f.sha256, f.size)
    });
    // A file a virtual repository's history names keeps its blob after its package went;
    // its size is the `S:` of the entry it was listed with.
    let served = dump.served_history.iter().filter_map(|h| {
        let sha256 = h.sha256.as_ref()?;
        let size = crate::apk::index::parse_stanza(&h.stanza)
            .size
            .map_or(-1, |size| i64::try_from(size).unwrap_or(-1));
        Some((format!("history row {}", h.id), sha256, size))
    });
    let mut blobs = BTreeMap::new();
    for (row, sha256, size) in packages.chain(cached).chain(served) {
        let size =
            u64::try_from(size).with_context(|| format!("{row} has no size or a negative one"))?;
        if let Some(other) = blobs.insert(sha256.clone(), size) {
            if other != size {
                bail!(
                    "the source's rows give file {sha256} two sizes ({other} and {size}): \
                     `alpine-registry fsck` on the source says which is wrong"
                );
            }
        }
    }
    Ok(blobs)
}

/// Streams one blob from `from` into `to` (staged, then committed under its digest),
/// checking its size and sha256 on the way.
async fn copy_blob(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    sha256: &str,
    size: u64,
    buffer: &mut [u8],
) -> anyhow::Result<()> {
    let fsck = "`alpine-registry fsck` on the source lists such files";
    let mut reader = from
        .open_range(sha256, 0, size)
        .await
        .with_context(|| format!("reading package file {sha256} of the source ({fsck})"))?;
    if reader.size != size {
        bail!(
            "package file {sha256} of the source is {} bytes, its rows say {size} ({fsck})",
            reader.size
        );
    }
    let mut staged = to
        .stage()
        .await
        .context("staging a file in the target blob storage")?;
    let mut hasher = Sha256::new();
    let mut copied = 0u64;
    loop {
        let n = reader
            .body
            .read(buffer)
            .await
            .with_context(|| format!("reading package file {sha256} of the source"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        staged
            .write_all(&buffer[..n])
            .await
            .context("writing into the target blob storage")?;
        copied += n as u64;
    }
    staged
        .flush()
        .await
        .context("writing into the target blob storage")?;
    let actual = hex::encode(hasher.finalize());
    if copied != size || actual != sha256 {
        bail!(
            "package file {sha256} of the source is damaged: read {copied} bytes with sha256 \
             {actual} ({fsck})"
        );
    }
    to.commit(staged, sha256)
        .await
        .with_context(|| format!("storing package file {sha256} in the target"))?;
    Ok(())
}

/// The target holds the blob at its size.
async fn check_blob(target: &AppState, sha256: &str, size: u64) -> anyhow::Result<()> {
    let stored = target
        .blobs
        .size(sha256)
        .await
        .with_context(|| format!("package file {sha256} in the target"))?;
    if stored != size {
        bail!("package file {sha256} in the target is {stored} bytes, its rows say {size}");
    }
    Ok(())
}

/// Refuses a target whose master key is not the source's: sealed private keys are copied
/// as they are and open only with the key that sealed them. A PostgreSQL target takes its
/// key from `signing.master_key` alone (a key file of each instance's own would not be
/// shared), so for it the key file is neither read nor offered.
fn check_master_key(source: &Config, target: &Config, target_file: &Path) -> anyhow::Result<()> {
    let file = target_file.display();
    let wanted = MasterKey::existing(&source.signing.master_key, &source.storage.data_dir)?
        .context("the source has no master key")?;
    let key_file_counts = target.database_backend()? == DatabaseBackend::Sqlite;
    let have = if key_file_counts || !target.signing.master_key.is_empty() {
        MasterKey::existing(&target.signing.master_key, &target.storage.data_dir)
            .with_context(|| format!("the master key of {file}"))?
    } else {
        None
    };
    if have.as_deref() == Some(wanted.as_slice()) {
        return Ok(());
    }
    let source_key_file = source.storage.data_dir.join("master.key");
    let how = if !source.signing.master_key.is_empty() {
        format!("set signing.master_key in {file} to the source's signing.master_key")
    } else if key_file_counts {
        format!(
            "set signing.master_key in {file} to the content of {} (or copy that file to {})",
            source_key_file.display(),
            target.storage.data_dir.join("master.key").display()
        )
    } else {
        format!(
            "set signing.master_key in {file} to the content of {} (a PostgreSQL registry \
             takes its key from signing.master_key only)",
            source_key_file.display()
        )
    };
    let problem = match (&have, key_file_counts) {
        (Some(_), _) => "another master key than the source",
        (None, true) => {
            "no master key yet (signing.master_key is empty and its data directory has no \
             master.key)"
        }
        (None, false) => "no master key (signing.master_key is empty)",
    };
    bail!(
        "the target of {file} has {problem}: the signing keys are copied sealed with the \
         source's master key, so the target must use the same one: {how}"
    )
}

/// Whether both configurations keep blobs in the same directory.
fn same_blob_dir(source: &Config, target: &Config) -> bool {
    use crate::config::StorageBackend;
    match (source.storage.backend, target.storage.backend) {
        (StorageBackend::Fs, StorageBackend::Fs) => match (
            std::fs::canonicalize(source.blob_dir()),
            std::fs::canonicalize(target.blob_dir()),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        (StorageBackend::S3, StorageBackend::S3) => {
            let (a, b) = (&source.storage.s3, &target.storage.s3);
            a.endpoint == b.endpoint
                && a.bucket == b.bucket
                && a.prefix.trim_matches('/') == b.prefix.trim_matches('/')
        }
        _ => false,
    }
}
