//! Configuration: one `Config`, layered defaults < TOML file < environment < CLI flags.
//!
//! Environment variables are `ALPINE_REGISTRY__SECTION__KEY` (double underscore between
//! levels). Errors name the key as written and where (file or variable), echo a bad
//! value with what was expected, and suggest the closest valid key for an unknown one.

mod errors;
mod listen;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::apk::sign::SignatureAlgorithm;

pub use listen::{ListenAddr, ListenAddrError};

/// Prefix of the environment variables that override the configuration file.
pub const ENV_PREFIX: &str = "ALPINE_REGISTRY__";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub limits: LimitsConfig,
    pub signing: SigningConfig,
    pub auth: AuthConfig,
    pub repositories: RepositoriesConfig,
    pub retention: RetentionConfig,
    pub audit: AuditConfig,
    pub webhooks: WebhooksConfig,
    pub upstream: UpstreamConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address (or host name) and port to listen on; a name is resolved at start.
    pub listen: ListenAddr,
    /// URL under which clients reach the registry (used in responses); derived from
    /// `listen` when empty.
    pub public_url: String,
    /// Seconds a client may take to send the headers and body of one request.
    pub request_timeout_secs: u64,
    /// Seconds to let in-flight requests finish after SIGTERM / ctrl-c.
    pub shutdown_grace_secs: u64,
    /// Seconds a client may take to send a request's headers; also how long a connection
    /// may stay open with no request in flight (from accept, or since its last answer).
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing before the request is answered 408.
    pub body_idle_timeout_secs: u64,
    /// Seconds an answer's body may wait for the client to take more of it before the
    /// connection is closed.
    pub send_timeout_secs: u64,
    /// Open connections at most (HTTP/1 and HTTP/2); 0 derives it from the open-file limit
    /// at start. When full, the connection idle longest makes room.
    pub max_connections: u32,
    /// Open connections per client address at most (IPv6: per /64); its answered idle
    /// connections make room first. Behind a trusted proxy: requests in flight per client.
    pub max_connections_per_ip: u32,
    /// Connections refused over a cap that are answered 503 and drained at once; others
    /// over a cap are closed at once.
    pub max_lingering_refusals: u32,
    /// Seconds a refused connection is drained after its 503, so that the client reads
    /// the answer rather than a reset.
    pub refusal_linger_secs: u64,
    /// Bytes of package file chunks being sent, in all; beyond it, downloads are read in
    /// small chunks.
    pub download_buffer_bytes: usize,
    /// Proxies (addresses or CIDR networks) whose forwarding headers are believed: the
    /// client's address from `X-Forwarded-For` / `Forwarded`, and how clients reach the
    /// registry (`X-Forwarded-Proto` / `X-Forwarded-Host` / `Forwarded`) when `public_url`
    /// is empty.
    pub trusted_proxies: Vec<String>,
    /// Elements of `X-Forwarded-For` (or `Forwarded`) read at most, from the right, to find
    /// the client behind a chain of trusted proxies.
    pub max_forwarded_hops: usize,
    /// Threads answering HTTP requests, each with a runtime of its own accepting from the
    /// same socket; 0 is one per CPU.
    pub workers: usize,
    /// Where `/metrics` is served to anyone who reaches it, instead of to site
    /// administrators on `listen`; unset: on `listen`.
    pub metrics_listen: Option<ListenAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddr::from(SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: String::new(),
            request_timeout_secs: 3600,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 30,
            send_timeout_secs: 60,
            max_connections: 0,
            max_connections_per_ip: 64,
            max_lingering_refusals: 16,
            refusal_linger_secs: 2,
            download_buffer_bytes: 64 << 20,
            trusted_proxies: Vec::new(),
            max_forwarded_hops: 16,
            workers: 0,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding the database and the blobs, unless they are configured elsewhere.
    pub data_dir: PathBuf,
    /// Where package blobs live, and uploads while they are received; `<data_dir>/blobs`
    /// when empty.
    pub blob_dir: Option<PathBuf>,
    /// Blobs no package references are removed once they are this old (seconds), so that
    /// an upload in progress is never harmed.
    pub orphan_grace_secs: u64,
    /// Where package blobs are kept: `fs` (`blob_dir`) or `s3` (the bucket of `s3`).
    pub backend: StorageBackend,
    /// The bucket when `backend` is `s3`.
    pub s3: S3Config,
    /// Bytes of small package files (up to 64 KiB each) kept in memory for downloads;
    /// 0 keeps none.
    pub memory_cache_bytes: usize,
    /// Seconds `/readyz` waits for blob storage to answer before it says 503.
    pub ready_timeout_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            blob_dir: None,
            orphan_grace_secs: 3600,
            backend: StorageBackend::Fs,
            s3: S3Config::default(),
            memory_cache_bytes: 32 * 1024 * 1024,
            ready_timeout_secs: 3,
        }
    }
}

/// The blob store behind the registry.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `storage.blob_dir`.
    #[default]
    Fs,
    /// Objects in an S3-compatible bucket (`storage.s3`); uploads are received into
    /// `<data_dir>/staging` first.
    S3,
}

/// An S3-compatible bucket. Empty credentials are taken from the standard `AWS_*`
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, ...), as are an empty region and endpoint.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// `https://host:port` of a server other than AWS; empty: AWS for `region`.
    pub endpoint: String,
    /// Empty: `AWS_DEFAULT_REGION` / `AWS_REGION`, else `us-east-1`.
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers
    /// want; false: virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Whether a plain `http://` endpoint is accepted.
    pub allow_http: bool,
    /// Key prefix under which blobs are kept (`<prefix>/sha256/...`); empty: none.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Seconds to open a connection to the endpoint.
    pub connect_timeout_secs: u64,
    /// Seconds a request waits for the first byte of its answer once it is sent, and
    /// longest pause of a transfer (a body sent or received) before it is given up: a
    /// long download that keeps moving is never cut.
    pub first_byte_timeout_secs: u64,
    /// Times a failed request (5xx, 429, a dropped or refused connection, a timeout of a
    /// request that may be repeated) is tried again, with exponential backoff.
    pub max_retries: usize,
    /// Seconds after a request's first attempt past which it is not tried again.
    pub retry_timeout_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            path_style: true,
            allow_http: false,
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            connect_timeout_secs: 5,
            first_byte_timeout_secs: 10,
            max_retries: 3,
            retry_timeout_secs: 5,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("first_byte_timeout_secs", &self.first_byte_timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/registry.db` or `postgres://user:password@host:5432/db`;
    /// `<data_dir>/registry.db` when empty.
    pub url: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// PostgreSQL: seconds a request waits for a working connection before it is answered
    /// 503 (the database is unreachable, or every connection is busy).
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 8,
            acquire_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted `.apk` upload, in bytes (413 above it).
    pub max_upload_bytes: u64,
    /// Largest decompressed control (and signature) member of a package.
    pub max_control_bytes: u64,
    /// Largest `.PKGINFO`.
    pub max_pkginfo_bytes: u64,
    /// Largest decompressed data member (guards against gzip bombs).
    pub max_data_bytes: u64,
    /// Largest APKINDEX stanza of one package: every index of its repository carries
    /// it, so a huge description would slow every later publish.
    pub max_stanza_bytes: u64,
    /// Uploads received and checked at once; one more is answered 503 with
    /// `Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Of those, uploads of one user at once; one more is answered 429 with
    /// `Retry-After`. 0: half of `max_concurrent_uploads`, rounded up.
    pub max_concurrent_uploads_per_user: usize,
    /// Largest body of a web form (login, logout, delete); 413 above it.
    pub max_form_bytes: u64,
    /// Largest JSON body of the API; 413 above it.
    pub max_json_bytes: u64,
    /// Packages a package page lists as requiring it (by name; the page counts the rest).
    pub max_required_by: usize,
    /// Catalog queries (searches, package pages, index listings) answered at once; `0`:
    /// one per core.
    pub max_concurrent_catalog_queries: usize,
    /// Seconds a catalog query waits for its turn before it is answered 503.
    pub catalog_query_wait_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_upload_bytes: 1 << 30,
            max_control_bytes: 16 << 20,
            max_pkginfo_bytes: 1 << 20,
            max_data_bytes: 64 << 30,
            max_stanza_bytes: 64 << 10,
            max_concurrent_uploads: 64,
            max_concurrent_uploads_per_user: 0,
            max_form_bytes: 16 << 10,
            max_json_bytes: 64 << 10,
            max_required_by: 1000,
            max_concurrent_catalog_queries: 0,
            catalog_query_wait_secs: 5,
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signatures written into every index, in this order: `RSA256`, `RSA`, `RSA512`.
    pub algorithms: Vec<String>,
    /// Size of newly generated owner keys.
    pub key_bits: usize,
    /// Smallest key `key import` takes, in bits (at least 2048).
    pub import_min_bits: usize,
    /// Largest key `key import` takes, in bits: every index build signs with it.
    pub import_max_bits: usize,
    /// Keys an owner may have active at once (every index build signs with each); a
    /// rotation or import past it is refused until one is retired.
    pub max_active_keys: usize,
    /// Whether each owner's repositories list its keyring package `<owner>-keys` (the
    /// public keys of its active keys under /etc/apk/keys), unless switched per owner
    /// with `owner keyring OWNER on|off`.
    pub keyring: bool,
    /// Base64 of 32 bytes that encrypt owner private keys in the database; when empty,
    /// `<data_dir>/master.key` (created with mode 0600) is used. Required with PostgreSQL,
    /// whose database several instances may share.
    pub master_key: String,
}

impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningConfig")
            .field("algorithms", &self.algorithms)
            .field("key_bits", &self.key_bits)
            .field("import_min_bits", &self.import_min_bits)
            .field("import_max_bits", &self.import_max_bits)
            .field("max_active_keys", &self.max_active_keys)
            .field("keyring", &self.keyring)
            .field(
                "master_key",
                &if self.master_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            algorithms: vec!["RSA256".into(), "RSA".into()],
            key_bits: 4096,
            import_min_bits: 2048,
            import_max_bits: 8192,
            max_active_keys: 3,
            keyring: true,
            master_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether anonymous clients may read public owners.
    pub anonymous_read: bool,
    /// Authentication failures from one address, within `failure_window_secs`, before
    /// further attempts from it are slowed down.
    pub max_failures: u32,
    pub failure_window_secs: u64,
    /// Delay of the first slowed-down attempt; doubles per further failure, up to 30 s.
    /// 0 disables slowing down.
    pub failure_delay_ms: u64,
    /// Authentication failures from one address, whatever the user name, before it is
    /// slowed down like a single user name.
    pub max_failures_per_address: u32,
    /// Password verifications and hashes of new passwords (argon2, about 19 MiB each)
    /// running at once; 0 means one per core. A few more wait briefly; the rest get 503
    /// with `Retry-After`.
    pub max_concurrent_password_checks: usize,
    /// How long a login session of the web pages lasts, whatever it does meanwhile.
    pub session_lifetime_secs: u64,
    /// Live login sessions in all; past this, a new login is refused (503) rather than
    /// another user's session ended.
    pub max_sessions: usize,
    /// Live login sessions per user; a new login ends that user's oldest past this.
    pub max_sessions_per_user: usize,
    /// Successful logins per user within `login_window_secs` (a burst of that many, then
    /// one per window / this); past this, 429 with `Retry-After`.
    pub max_logins_per_user: u32,
    pub login_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_read: true,
            max_failures: 10,
            failure_window_secs: 300,
            failure_delay_ms: 1000,
            max_failures_per_address: 100,
            max_concurrent_password_checks: 0,
            session_lifetime_secs: 12 * 3600,
            max_sessions: 100_000,
            max_sessions_per_user: 32,
            max_logins_per_user: 10,
            login_window_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoriesConfig {
    /// Whether an upload into a repository that does not exist creates it; when false,
    /// repositories are created with `alpine-registry repository create` first.
    pub auto_create: bool,
    /// How an upload of a file that is stored already with the very same bytes (a
    /// retried upload whose answer was lost) is answered.
    pub identical_reupload: IdenticalReupload,
    /// What an upload whose dependencies nothing provides (or a delete that leaves others
    /// so) gets, unless its repository has a setting of its own.
    pub dependency_check: DependencyCheck,
    /// Indexes of other repositories (Alpine's own) that dependencies may be resolved in.
    pub dependency_sources: Vec<DependencySource>,
    /// Seconds between looks at the dependency sources: files by modification time, URLs
    /// with conditional requests.
    pub dependency_refresh_secs: u64,
    /// Seconds a dependency source URL may take to answer, body included.
    pub dependency_fetch_timeout_secs: u64,
    /// Largest dependency source, compressed as fetched and decompressed.
    pub dependency_source_max_bytes: u64,
}

impl Default for RepositoriesConfig {
    fn default() -> Self {
        RepositoriesConfig {
            auto_create: true,
            identical_reupload: IdenticalReupload::Conflict,
            dependency_check: DependencyCheck::Warn,
            dependency_sources: Vec::new(),
            dependency_refresh_secs: 600,
            dependency_fetch_timeout_secs: 30,
            dependency_source_max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between the passes that apply every retention rule (age rules need them;
    /// count rules are also applied after each publish). One instance at a time runs it.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days an audit log entry is kept; older ones are pruned in the background.
    pub retention_days: u64,
    /// Seconds between the prunes of old entries.
    pub prune_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 365,
            prune_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Whether webhooks may target loopback, link-local, private and other non-public
    /// addresses (refused by default: server-side request forgery).
    pub allow_private_targets: bool,
    /// Seconds an attempt may take, connecting included.
    pub timeout_secs: u64,
    /// Seconds after its event that a failing delivery is still retried; then it fails.
    pub retry_for_secs: u64,
    /// Seconds before the first retry; each next wait doubles, up to
    /// `retry_max_interval_secs`.
    pub retry_base_secs: u64,
    pub retry_max_interval_secs: u64,
    /// Milliseconds between looks for due deliveries (a change made through this instance
    /// wakes the sender at once).
    pub poll_interval_ms: u64,
    /// Deliveries sent at once by an instance.
    pub concurrency: usize,
    /// Webhooks one owner may have.
    pub max_per_owner: u64,
    /// Finished deliveries kept per webhook (the newest), to be listed.
    pub keep_deliveries: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private_targets: false,
            timeout_secs: 10,
            retry_for_secs: 3 * 86_400,
            retry_base_secs: 10,
            retry_max_interval_secs: 3600,
            poll_interval_ms: 1000,
            concurrency: 8,
            max_per_owner: 20,
            keep_deliveries: 100,
        }
    }
}

/// How remote repositories reach their upstream (see `registry::remote`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Seconds to connect to an upstream.
    pub connect_timeout_secs: u64,
    /// Seconds an upstream index may take to answer, body included.
    pub index_timeout_secs: u64,
    /// Seconds a package download from upstream may send nothing before it is given up.
    pub read_timeout_secs: u64,
    /// Largest upstream index, compressed as fetched and decompressed.
    pub max_index_bytes: u64,
    /// Largest package fetched from upstream (its index's `S:` is checked too).
    pub max_package_bytes: u64,
    /// `--refresh` when `repository create --upstream` is not given one.
    pub default_refresh_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_secs: 10,
            index_timeout_secs: 60,
            read_timeout_secs: 30,
            max_index_bytes: 64 << 20,
            max_package_bytes: 1 << 30,
            default_refresh_secs: 600,
        }
    }
}

/// What the publish-time dependency check does with a dependency nothing provides.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DependencyCheck {
    /// No check.
    Off,
    /// Accepted, the answer naming what is unsatisfied.
    #[default]
    Warn,
    /// Refused (422), nothing changed.
    Refuse,
}

impl DependencyCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCheck::Off => "off",
            DependencyCheck::Warn => "warn",
            DependencyCheck::Refuse => "refuse",
        }
    }
}

impl std::str::FromStr for DependencyCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(DependencyCheck::Off),
            "warn" => Ok(DependencyCheck::Warn),
            "refuse" => Ok(DependencyCheck::Refuse),
            other => Err(format!(
                "unknown dependency check {other:?}: use off, warn or refuse"
            )),
        }
    }
}

/// An index dependencies may be resolved in: an `APKINDEX.tar.gz` file or URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DependencySource {
    /// `https://...`, `http://...`, or a file path (`file://` allowed).
    pub location: String,
    /// The branches whose uploads it serves (`v3.21`); empty: every branch.
    pub branches: Vec<String>,
    /// A public key file (PEM) the index must be signed with, by its file name as apk
    /// names keys; unset: the index is read unverified.
    pub key: Option<PathBuf>,
}

/// The answer to an upload whose file is stored already with the same bytes. Either way
/// nothing changes; another file under that name is always a conflict.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdenticalReupload {
    /// 409, as Gitea answers any second upload of a file name, saying that the bytes are
    /// identical and describing the stored file.
    #[default]
    Conflict,
    /// 200 with what the first upload was answered.
    Accept,
}

impl Config {
    /// Loads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Self::load_layers(file, true)
    }

    /// Loads defaults, then `file`, without the environment: the configuration of another
    /// installation (`migrate-storage --to`), which variables meant for this one must not
    /// change.
    pub fn load_file_only(file: &Path) -> anyhow::Result<Config> {
        Self::load_layers(Some(file), false)
    }

    fn load_layers(file: Option<&Path>, environment: bool) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            // Exactly this file: `Toml::file` would also look in parent directories.
            figment = figment.merge(Toml::file_exact(file));
        }
        if environment {
            figment = figment.merge(env_provider());
        }
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("{}", errors::describe(e, &figment)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.signature_algorithms()?;
        if self.signing.key_bits < 1024 || self.signing.key_bits > 16384 {
            anyhow::bail!("signing.key_bits must be between 1024 and 16384");
        }
        let import = (self.signing.import_min_bits, self.signing.import_max_bits);
        if import.0 < 2048 || import.0 > import.1 || import.1 > 16384 {
            anyhow::bail!(
                "signing.import_min_bits must be at least 2048, and at most \
                 signing.import_max_bits, which must be at most 16384"
            );
        }
        if !(2..=16).contains(&self.signing.max_active_keys) {
            anyhow::bail!(
                "signing.max_active_keys must be between 2 (an old and a new key during a \
                 rotation) and 16"
            );
        }
        if self.server.max_connections_per_ip == 0 {
            anyhow::bail!("server.max_connections_per_ip must be at least 1");
        }
        if self.database.acquire_timeout_secs == 0 {
            anyhow::bail!("database.acquire_timeout_secs must be at least 1");
        }
        if self.storage.ready_timeout_secs == 0 {
            anyhow::bail!("storage.ready_timeout_secs must be at least 1");
        }
        if self.limits.max_upload_bytes == 0 {
            anyhow::bail!("limits.max_upload_bytes must be positive");
        }
        for entry in &self.server.trusted_proxies {
            parse_network(entry).map_err(|_| {
                anyhow::anyhow!(
                    "server.trusted_proxies: {entry:?} is neither an address nor a network \
                     such as 10.0.0.0/8"
                )
            })?;
        }
        if self.server.max_forwarded_hops == 0 {
            anyhow::bail!("server.max_forwarded_hops must be at least 1");
        }
        if self.limits.max_concurrent_uploads == 0 {
            anyhow::bail!("limits.max_concurrent_uploads must be positive");
        }
        if self.limits.max_concurrent_uploads_per_user > self.limits.max_concurrent_uploads {
            anyhow::bail!(
                "limits.max_concurrent_uploads_per_user must be at most \
                 limits.max_concurrent_uploads ({})",
                self.limits.max_concurrent_uploads
            );
        }
        if self.server.body_idle_timeout_secs == 0 || self.server.send_timeout_secs == 0 {
            anyhow::bail!(
                "server.body_idle_timeout_secs and server.send_timeout_secs must be at least 1"
            );
        }
        if self.limits.max_form_bytes == 0 || self.limits.max_json_bytes == 0 {
            anyhow::bail!("limits.max_form_bytes and limits.max_json_bytes must be positive");
        }
        if self.limits.max_required_by == 0 {
            anyhow::bail!("limits.max_required_by must be positive");
        }
        if self.limits.catalog_query_wait_secs == 0 {
            anyhow::bail!("limits.catalog_query_wait_secs must be positive");
        }
        if self.auth.session_lifetime_secs == 0 || self.auth.max_sessions == 0 {
            anyhow::bail!("auth.session_lifetime_secs and auth.max_sessions must be positive");
        }
        if self.auth.max_sessions_per_user == 0
            || self.auth.max_logins_per_user == 0
            || self.auth.login_window_secs == 0
        {
            anyhow::bail!(
                "auth.max_sessions_per_user, auth.max_logins_per_user and \
                 auth.login_window_secs must be positive"
            );
        }
        if self.retention.interval_secs == 0 {
            anyhow::bail!("retention.interval_secs must be at least 1");
        }
        let webhooks = &self.webhooks;
        if webhooks.timeout_secs == 0
            || webhooks.retry_base_secs == 0
            || webhooks.retry_max_interval_secs < webhooks.retry_base_secs
            || webhooks.poll_interval_ms < 10
            || !(1..=256).contains(&webhooks.concurrency)
            || webhooks.max_per_owner == 0
        {
            anyhow::bail!(
                "webhooks: timeout_secs, retry_base_secs and max_per_owner must be at least 1, \
                 retry_max_interval_secs at least retry_base_secs, poll_interval_ms at least \
                 10, concurrency from 1 to 256"
            );
        }
        if self.audit.retention_days == 0 || self.audit.prune_interval_secs == 0 {
            anyhow::bail!("audit.retention_days and audit.prune_interval_secs must be at least 1");
        }
        let upstream = &self.upstream;
        if upstream.connect_timeout_secs == 0
            || upstream.index_timeout_secs == 0
            || upstream.read_timeout_secs == 0
            || upstream.max_index_bytes == 0
            || upstream.max_package_bytes == 0
            || upstream.default_refresh_secs == 0
        {
            anyhow::bail!(
                "upstream.connect_timeout_secs, index_timeout_secs, read_timeout_secs, \
                 max_index_bytes, max_package_bytes and default_refresh_secs must be positive"
            );
        }
        self.validate_dependency_sources()?;
        self.database_backend()?;
        if self.storage.backend == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            if s3.bucket.trim().is_empty() {
                anyhow::bail!(
                    "storage.backend is \"s3\" but storage.s3.bucket is not set: name the \
                     bucket (ALPINE_REGISTRY__STORAGE__S3__BUCKET), or use backend \"fs\""
                );
            }
            if s3.endpoint.starts_with("http://") && !s3.allow_http {
                anyhow::bail!(
                    "storage.s3.endpoint {:?} is plain http: set storage.s3.allow_http = true \
                     to use it",
                    s3.endpoint
                );
            }
            if s3.connect_timeout_secs == 0 || s3.first_byte_timeout_secs == 0 {
                anyhow::bail!(
                    "storage.s3.connect_timeout_secs and storage.s3.first_byte_timeout_secs \
                     must be at least 1"
                );
            }
        }
        Ok(())
    }

    fn validate_dependency_sources(&self) -> anyhow::Result<()> {
        let repositories = &self.repositories;
        if repositories.dependency_refresh_secs == 0
            || repositories.dependency_fetch_timeout_secs == 0
            || repositories.dependency_source_max_bytes == 0
        {
            anyhow::bail!(
                "repositories.dependency_refresh_secs, dependency_fetch_timeout_secs and \
                 dependency_source_max_bytes must be positive"
            );
        }
        for source in &repositories.dependency_sources {
            let location = source.location.trim();
            if location.is_empty() {
                anyhow::bail!(
                    "repositories.dependency_sources: an entry has no location (an \
                     APKINDEX.tar.gz URL or file)"
                );
            }
            if location.contains("://")
                && !["http://", "https://", "file://"]
                    .iter()
                    .any(|scheme| location.starts_with(scheme))
            {
                anyhow::bail!(
                    "repositories.dependency_sources: {location:?} is neither an http(s) URL \
                     nor a file"
                );
            }
        }
        Ok(())
    }

    pub fn signature_algorithms(&self) -> anyhow::Result<Vec<SignatureAlgorithm>> {
        if self.signing.algorithms.is_empty() {
            anyhow::bail!("signing.algorithms must name at least one algorithm");
        }
        self.signing
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<SignatureAlgorithm>()
                    .map_err(|e| anyhow::anyhow!("signing.algorithms: {e}"))
            })
            .collect()
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.storage
            .blob_dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("blobs"))
    }

    /// Where blobs are kept, for the start message: the directory, or the bucket, prefix
    /// and endpoint (never a credential).
    pub fn storage_description(&self) -> String {
        match self.storage.backend {
            StorageBackend::Fs => format!("fs {}", self.blob_dir().display()),
            StorageBackend::S3 => {
                let s3 = &self.storage.s3;
                let mut text = format!("s3 bucket {}", s3.bucket);
                if !s3.prefix.is_empty() {
                    text += &format!(", prefix {}", s3.prefix);
                }
                if !s3.endpoint.is_empty() {
                    text += &format!(", endpoint {}", s3.endpoint);
                }
                text
            }
        }
    }

    /// Where uploads are received before they go to the bucket when `storage.backend` is
    /// `s3`.
    pub fn s3_staging_dir(&self) -> PathBuf {
        self.storage.data_dir.join("staging")
    }

    /// The backend `database.url` names by its scheme: `sqlite:` (or empty) or
    /// `postgres://` / `postgresql://`; anything else is refused, naming the value without
    /// its credentials.
    pub fn database_backend(&self) -> anyhow::Result<DatabaseBackend> {
        let url = &self.database.url;
        if url.is_empty() || url.starts_with("sqlite:") {
            Ok(DatabaseBackend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseBackend::Postgres)
        } else {
            anyhow::bail!(
                "database.url {:?} names no supported database: use sqlite:PATH (empty: \
                 sqlite://<data_dir>/registry.db) or postgres://user:password@host:5432/db \
                 (postgresql:// also works)",
                without_credentials(url)
            )
        }
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}",
                self.storage.data_dir.join("registry.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// `server.trusted_proxies` as networks (an address alone is a network of one);
    /// entries that do not parse are left out (`validate` refuses them at load).
    pub fn trusted_proxies(&self) -> Vec<ipnet::IpNet> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|entry| parse_network(entry).ok())
            .collect()
    }

    /// `limits.max_concurrent_uploads_per_user`, half of the uploads when it is 0: a CI job
    /// with 32 parallel uploads works by default, and others keep as many slots.
    pub fn uploads_per_user(&self) -> usize {
        match self.limits.max_concurrent_uploads_per_user {
            0 => self.limits.max_concurrent_uploads.div_ceil(2),
            n => n,
        }
    }

    pub fn apk_limits(&self) -> crate::apk::package::Limits {
        crate::apk::package::Limits {
            max_control_bytes: self.limits.max_control_bytes,
            max_pkginfo_bytes: self.limits.max_pkginfo_bytes,
            max_data_bytes: self.limits.max_data_bytes,
            max_stanza_bytes: self.limits.max_stanza_bytes,
        }
    }
}

/// The database behind the `Store`, chosen by the scheme of `database.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite,
    Postgres,
}

/// A database URL fit for logs and messages: any `user:password@` replaced.
pub fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// The environment variables that override the file.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).split("__")
}

fn parse_network(entry: &str) -> Result<ipnet::IpNet, ipnet::AddrParseError> {
    let entry = entry.trim();
    entry.parse::<ipnet::IpNet>().or_else(|e| {
        entry
            .parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> Config {
        let mut config = Config::default();
        config.database.url = url.to_string();
        config
    }

    #[test]
    fn the_database_url_scheme_chooses_the_backend() {
        for (url, backend) in [
            ("", DatabaseBackend::Sqlite),
            ("sqlite://./data/registry.db", DatabaseBackend::Sqlite),
            ("sqlite:registry.db", DatabaseBackend::Sqlite),
            ("postgres://reg:pw@db:5432/reg", DatabaseBackend::Postgres),
            ("postgresql://reg@localhost/reg", DatabaseBackend::Postgres),
        ] {
            let config = with_url(url);
            config.validate().unwrap();
            assert_eq!(config.database_backend().unwrap(), backend, "{url}");
        }
    }

    #[test]
    fn other_database_urls_are_refused_naming_the_value_and_the_schemes() {
        for url in ["mysql://reg:s3cret@db/reg", "registry.db", "postgres:reg"] {
            let message = with_url(url).validate().unwrap_err().to_string();
            assert!(message.contains("database.url"), "{message}");
            assert!(message.contains("sqlite:"), "{message}");
            assert!(message.contains("postgres://"), "{message}");
            assert!(message.contains("postgresql://"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        let message = with_url("mysql://reg:s3cret@db/reg")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"mysql://***@db/reg\""), "{message}");
        let message = with_url("registry.db").validate().unwrap_err().to_string();
        assert!(message.contains("\"registry.db\""), "{message}");
    }

    #[test]
    fn the_s3_secret_is_not_shown() {
        let mut config = Config::default();
        config.storage.backend = StorageBackend::S3;
        config.storage.s3.bucket = "packages".into();
        config.storage.s3.access_key_id = "AKIDEXAMPLE".into();
        config.storage.s3.secret_access_key = "wJalrXUtnFEMI-s3cret".into();
        config.validate().unwrap();
        let shown = format!("{config:?} {}", config.storage_description());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("packages"), "{shown}");
    }

    #[test]
    fn the_s3_backend_needs_a_bucket() {
        let mut config = Config::default();
        config.storage.backend = StorageBackend::S3;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("storage.s3.bucket"), "{message}");
        config.storage.s3.bucket = "packages".into();
        config.storage.s3.endpoint = "http://127.0.0.1:9000".into();
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("allow_http"), "{message}");
        config.storage.s3.allow_http = true;
        config.validate().unwrap();
    }

    #[test]
    fn session_and_login_limits_must_be_positive() {
        for zero in [
            |c: &mut Config| c.auth.max_sessions_per_user = 0,
            |c: &mut Config| c.auth.max_logins_per_user = 0,
            |c: &mut Config| c.auth.login_window_secs = 0,
        ] {
            let mut config = Config::default();
            zero(&mut config);
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("auth.max_sessions_per_user"), "{message}");
        }
        Config::default().validate().unwrap();
    }

    #[test]
    fn storage_timeouts_must_be_positive() {
        let mut config = Config::default();
        config.storage.backend = StorageBackend::S3;
        config.storage.s3.bucket = "packages".into();
        config.validate().unwrap();
        for (set, key) in [
            (
                (|c: &mut Config| c.storage.s3.connect_timeout_secs = 0) as fn(&mut Config),
                "storage.s3.connect_timeout_secs",
            ),
            (
                |c: &mut Config| c.storage.s3.first_byte_timeout_secs = 0,
                "storage.s3.first_byte_timeout_secs",
            ),
            (
                |c: &mut Config| c.storage.ready_timeout_secs = 0,
                "storage.ready_timeout_secs",
            ),
        ] {
            let mut zero = config.clone();
            set(&mut zero);
            let message = zero.validate().unwrap_err().to_string();
            assert!(message.contains(key), "{message}");
        }
        // No retries at all is a choice.
        config.storage.s3.max_retries = 0;
        config.storage.s3.retry_timeout_secs = 0;
        config.validate().unwrap();
    }

    #[test]
    fn a_user_gets_half_of_the_upload_slots_unless_told() {
        let mut config = Config::default();
        assert_eq!(config.uploads_per_user(), 32);
        config.limits.max_concurrent_uploads = 2;
        assert_eq!(config.uploads_per_user(), 1);
        config.limits.max_concurrent_uploads_per_user = 2;
        assert_eq!(config.uploads_per_user(), 2);
        config.validate().unwrap();
        config.limits.max_concurrent_uploads_per_user = 3;
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("max_concurrent_uploads_per_user"),
            "{message}"
        );
    }

    #[test]
    fn database_urls_are_shown_without_credentials() {
        assert_eq!(
            without_credentials("postgres://reg:s3cret@db:5432/reg"),
            "postgres://***@db:5432/reg"
        );
        assert_eq!(
            without_credentials("sqlite://./data/registry.db"),
            "sqlite://./data/registry.db"
        );
    }
}
