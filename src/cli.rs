//! The command line: `serve`, `migrate`, and the administration commands, which work
//! directly on the configured database (the server may be running).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::access;
use crate::config::{Config, ListenAddr};
use crate::names::{Arch, OwnerName, PackageFile, RepoAddress};
use crate::registry::accounts::{self, TokenRequest};
use crate::registry::audit::Actor;
use crate::store::Role;
use crate::AppState;

pub use crate::registry::accounts::BOOTSTRAP_TOKEN_ENV;

#[derive(Debug, Parser)]
#[command(
    name = "alpine-registry",
    version,
    about = "A registry for Alpine Linux packages"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides storage.data_dir.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the registry.
    Serve {
        /// Overrides server.listen: HOST:PORT, e.g. 0.0.0.0:8080, [::]:8080 or
        /// localhost:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<ListenAddr>,
    },
    /// Creates or upgrades the database schema, then exits.
    Migrate,
    /// Manages users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages owners (namespaces).
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Manages API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// An owner's signing keys: rotation, import of an abuild key, retirement, listing.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Rebuilds and re-signs the indexes of all repositories, or of one owner, branch or
    /// repository (OWNER[/BRANCH[/REPOSITORY]]).
    Reindex { target: Option<String> },
    /// Checks package rows against blobs (existence, size, sha256) and every served index
    /// against a fresh render; one line per problem, non-zero exit when any is found.
    Fsck {
        /// Rebuilds differing indexes and removes orphan blobs and temporary files older
        /// than storage.orphan_grace_secs; never deletes a blob a row references.
        #[arg(long)]
        repair: bool,
    },
    /// Prints the default configuration, every key documented.
    PrintDefaultConfig,
    /// Creates, lists and removes repositories (OWNER/BRANCH/REPOSITORY).
    #[command(subcommand)]
    Repository(RepositoryCommand),
    /// Copies and moves package files between repositories, pins and unpins them.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Retention rules: which old package versions the registry deletes.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The audit log: every change, who made it and from where.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Webhooks: URLs each owner's package and index events are POSTed to.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Snapshots: named moments of what a remote or virtual repository served
    /// (OWNER/BRANCH/REPOSITORY@NAME serves what it served then).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Copies this registry (every database row, ids kept, and every package file) into
    /// the empty registry of another configuration file, e.g. from SQLite to PostgreSQL.
    /// Stop the server first; the source is only read.
    MigrateStorage {
        /// Configuration of the target, read from this file alone (no ALPINE_REGISTRY__
        /// variables, no --data-dir; an S3 client reads AWS_* variables for what its
        /// section leaves empty). Its master key (signing.master_key; on SQLite, else
        /// <data_dir>/master.key) must be the source's.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user and its namespace of the same name.
    Create {
        name: String,
        /// Makes the user a site administrator.
        #[arg(long)]
        admin: bool,
        /// Reads the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists users: site administrators, password set, active tokens, memberships.
    List,
    /// Deletes a user with its tokens and memberships, and its namespace when that holds
    /// no repositories.
    Delete { name: String },
    /// Sets a user's password from the first line of standard input.
    Password {
        name: String,
        /// Removes the password instead: the user then signs in with tokens only.
        #[arg(long)]
        remove: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Creates an owner (namespace).
    Create {
        name: String,
        /// Only members may read.
        #[arg(long)]
        private: bool,
        /// Marks the owner as an organisation.
        #[arg(long)]
        org: bool,
    },
    /// Lists owners with their visibility, members, repositories and packages.
    List,
    /// Deletes an owner with its signing key, members and owner-limited tokens.
    Delete {
        name: String,
        /// Also deletes the owner's repositories and packages (refused without it).
        #[arg(long)]
        force: bool,
    },
    /// Makes an owner public (anyone may read) or private (only members may read).
    Visibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Switches the owner's keyring package (<owner>-keys: the public keys of its active
    /// signing keys under /etc/apk/keys) on or off in every repository of the owner.
    Keyring {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Manages members of an owner.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Gives USER a role on OWNER (replacing any previous role).
    Add {
        owner: String,
        user: String,
        #[arg(long, value_parser = ["read", "write", "admin"])]
        role: String,
    },
    /// Lists the members of OWNER and their roles.
    List { owner: String },
    /// Takes USER's role on OWNER away.
    Remove { owner: String, user: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it alone on standard output (shown only once).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        /// Limits the token to one owner.
        #[arg(long)]
        owner: Option<String>,
        /// Expiry: a number with a unit, s m h d w or y (90d, 12h, 30m).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Says what the token is for (shown by token list).
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists tokens (never their secrets): label, creation, last use, expiry, status.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revokes a token by id.
    Revoke { id: i64 },
}

pub const EXAMPLE_CONFIG: &str = include_str!("../config.example.toml");

/// Loads the configuration the CLI flags point at.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = &cli.data_dir {
        config.storage.data_dir = dir.clone();
    }
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        config.server.listen = listen.clone();
    }
    Ok(config)
}

/// Runs one CLI command.
/// Fails, naming the database and how to point at the right one, when the configured
/// SQLite database does not exist.
fn require_existing_database(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url();
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Ok(());
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    bail!(
        "no registry database at {path}: run this where the registry keeps its data, or point \
         at it with --data-dir DIR, --config FILE, or ALPINE_REGISTRY__STORAGE__DATA_DIR / \
         ALPINE_REGISTRY__DATABASE__URL (only `serve` and `migrate` create a database)"
    )
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::PrintDefaultConfig = cli.command {
        print!("{EXAMPLE_CONFIG}");
        return Ok(());
    }
    let config = load_config(&cli)?;
    // Only these create a registry; any other command run from the wrong directory
    // would otherwise act on a new, empty one.
    if !matches!(cli.command, Command::Serve { .. } | Command::Migrate) {
        require_existing_database(&config)?;
    }
    // A server waits a while for its database; other commands fail at once.
    let state = if matches!(cli.command, Command::Serve { .. }) {
        crate::open_when_reachable(config, crate::START_PATIENCE).await?
    } else {
        crate::open(config).await?
    };
    match cli.command {
        Command::PrintDefaultConfig => unreachable!("handled above"),
        Command::Serve { ref listen } => {
            let listen_from = if listen.is_some() {
                "--listen"
            } else {
                "server.listen"
            };
            serve(state, cli.config.as_deref(), listen_from).await
        }
        Command::Migrate => {
            eprintln!("database is up to date");
            Ok(())
        }
        Command::User(command) => user_command(&state, command).await,
        Command::Owner(command) => owner_command(&state, command).await,
        Command::Token(command) => token_command(&state, command).await,
        Command::Key(command) => key_command(&state, command).await,
        Command::Reindex { target } => reindex(&state, target.as_deref()).await,
        Command::Fsck { repair } => {
            let report = crate::registry::fsck::fsck(&state, repair).await?;
            for problem in &report.problems {
                println!("{problem}");
            }
            for fixed in &report.repaired {
                println!("repaired: {fixed}");
            }
            if report.problems.is_empty() {
                eprintln!("no problems found");
                Ok(())
            } else {
                bail!("{} problems found", report.problems.len())
            }
        }
        Command::Repository(command) => repository(&state, command).await,
        Command::Package(command) => package(&state, command).await,
        Command::Retention(command) => retention(&state, command).await,
        Command::Audit(command) => audit(&state, command).await,
        Command::Webhook(command) => webhook(&state, command).await,
        Command::Snapshot(command) => snapshot(&state, command).await,
        Command::MigrateStorage { to } => migrate_storage(&state, &to).await,
    }
}

async fn migrate_storage(state: &AppState, to: &std::path::Path) -> anyhow::Result<()> {
    let target = Config::load_file_only(to)
        .with_context(|| format!("reading the target configuration {}", to.display()))?;
    let summary = crate::registry::migrate::migrate_storage(state, target, to).await?;
    let mut rows: Vec<Vec<String>> = summary
        .tables
        .tables()
        .iter()
        .map(|(table, n)| vec![table.to_string(), n.to_string(), "-".to_string()])
        .collect();
    rows.push(vec![
        "package files".to_string(),
        summary.blobs.to_string(),
        format!("{} bytes", summary.bytes),
    ]);
    print_table(&["COPIED", "COUNT", "SIZE"], rows);
    let files = if summary.blobs_in_place {
        "package files checked in place (the target uses this blob directory)"
    } else {
        "package files copied and verified (sha256)"
    };
    eprintln!(
        "migrated into {}: every table has as many rows as the source; {files}; point the \
         servers at {} to use it",
        summary.database,
        to.display()
    );
    Ok(())
}

/// Reads the first line of standard input as a password.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading password")?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("empty password on standard input");
    }
    Ok(line)
}

async fn user_command(state: &AppState, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            name,
            admin,
            password_stdin,
        } => {
            let hash = if password_stdin {
                Some(accounts::hash_password(state, password_from_stdin()?).await?)
            } else {
                None
            };
            accounts::create_user(state, &Actor::cli(), &name, hash.as_deref(), admin, true)
                .await?;
            eprintln!("created user {name} (namespace {name})");
        }
        UserCommand::List => {
            let rows = accounts::list_users(state).await?.into_iter().map(|u| {
                vec![
                    u.name,
                    yes_no(u.is_admin),
                    yes_no(u.has_password),
                    u.active_tokens.to_string(),
                    u.memberships.to_string(),
                    format_time(Some(u.created_at)),
                ]
            });
            print_table(
                &["USER", "ADMIN", "PASSWORD", "TOKENS", "OWNERS", "CREATED"],
                rows,
            );
        }
        UserCommand::Delete { name } => {
            let deleted = accounts::delete_user(state, &Actor::cli(), &name).await?;
            if deleted.namespace_deleted {
                eprintln!("deleted user {name} and its namespace {name}");
            } else {
                eprintln!("deleted user {name}");
            }
        }
        UserCommand::Password { name, remove } => {
            let password = if remove {
                None
            } else {
                Some(password_from_stdin()?)
            };
            accounts::set_password(state, &Actor::cli(), &name, password).await?;
            if remove {
                eprintln!("removed the password of {name}: it signs in with tokens only");
            } else {
                eprintln!("changed the password of {name}");
            }
        }
    }
    Ok(())
}

async fn owner_command(state: &AppState, command: OwnerCommand) -> anyhow::Result<()> {
    match command {
        OwnerCommand::Create { name, private, org } => {
            let (owner, key_name) =
                accounts::create_owner(state, &Actor::cli(), &name, private, org, true).await?;
            eprintln!(
                "created owner {} (key {})",
                owner.name,
                key_name.unwrap_or_default()
            );
        }
        OwnerCommand::List => {
            let rows = accounts::list_owners(state).await?.into_iter().map(|o| {
                vec![
                    o.name,
                    if o.is_private { "private" } else { "public" }.to_string(),
                    if o.is_org { "organisation" } else { "user" }.to_string(),
                    o.members.to_string(),
                    o.repositories.to_string(),
                    o.packages.to_string(),
                    format_time(Some(o.created_at)),
                ]
            });
            print_table(
                &[
                    "OWNER",
                    "VISIBILITY",
                    "KIND",
                    "MEMBERS",
                    "REPOSITORIES",
                    "PACKAGES",
                    "CREATED",
                ],
                rows,
            );
        }
        OwnerCommand::Delete { name, force } => {
            let held = accounts::delete_owner(state, &Actor::cli(), &name, force).await?;
            eprintln!(
                "deleted owner {name} with its signing key, {} repositories and {} packages \
                 (their files are removed storage.orphan_grace_secs after this)",
                held.repositories, held.packages
            );
        }
        OwnerCommand::Visibility { name, visibility } => {
            let owner =
                accounts::set_visibility(state, &Actor::cli(), &name, visibility == "private")
                    .await?;
            eprintln!(
                "{} is now {}",
                owner.name,
                if owner.is_private {
                    "private: only members read it"
                } else {
                    "public: anyone may read it"
                }
            );
        }
        OwnerCommand::Keyring { name, state: on } => {
            let owner = accounts::owner(state, &name).await?;
            let keyring =
                crate::registry::keyring::switch(state, &Actor::cli(), &owner, on == "on").await?;
            match keyring.version {
                Some(version) => eprintln!(
                    "{} {version} is listed in {} repositories of {}",
                    keyring.package,
                    keyring.repositories.len(),
                    owner.name
                ),
                None => eprintln!(
                    "{} is off: no repository of {} lists it",
                    keyring.package, owner.name
                ),
            }
        }
        OwnerCommand::Member(MemberCommand::Add { owner, user, role }) => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            accounts::add_member(state, &Actor::cli(), &owner, &user, role).await?;
            eprintln!("{user} has {} on {owner}", role.as_str());
        }
        OwnerCommand::Member(MemberCommand::List { owner }) => {
            let rows = accounts::list_members(state, &owner)
                .await?
                .into_iter()
                .map(|m| vec![m.user_name, m.role.as_str().to_string()]);
            print_table(&["USER", "ROLE"], rows);
        }
        OwnerCommand::Member(MemberCommand::Remove { owner, user }) => {
            accounts::remove_member(state, &Actor::cli(), &owner, &user).await?;
            eprintln!("{user} no longer has a role on {owner}");
        }
    }
    Ok(())
}

async fn token_command(state: &AppState, command: TokenCommand) -> anyhow::Result<()> {
    let now = state.clock.unix_secs();
    match command {
        TokenCommand::Create {
            user,
            scope,
            owner,
            expires_in,
            label,
        } => {
            let scope: Role = scope.parse().map_err(anyhow::Error::msg)?;
            let expires_at = expires_in
                .as_deref()
                .map(access::parse_duration)
                .transpose()?
                .map(|secs| now + secs);
            let request = TokenRequest {
                user: &user,
                scope,
                owner: owner.as_deref(),
                expires_at,
                label: label.as_deref(),
            };
            println!(
                "{}",
                accounts::create_token(state, &Actor::cli(), request, None).await?
            );
        }
        TokenCommand::List { user } => {
            let rows = accounts::list_tokens(state, user.as_deref())
                .await?
                .into_iter()
                .map(|t| {
                    let status = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|at| at <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    vec![
                        t.id.to_string(),
                        t.user_name,
                        t.scope.as_str().to_string(),
                        t.owner_name.unwrap_or_else(|| "-".into()),
                        t.label.unwrap_or_else(|| "-".into()),
                        t.prefix,
                        format_time(Some(t.created_at)),
                        format_time(t.last_used_at),
                        t.expires_at
                            .map_or_else(|| "never".into(), |at| format_time(Some(at))),
                        status.to_string(),
                    ]
                });
            print_table(
                &[
                    "ID",
                    "USER",
                    "SCOPE",
                    "OWNER",
                    "LABEL",
                    "PREFIX",
                    "CREATED",
                    "LAST USED",
                    "EXPIRES",
                    "STATUS",
                ],
                rows,
            );
        }
        TokenCommand::Revoke { id } => {
            accounts::revoke_token(state, &Actor::cli(), id, now).await?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

/// Unix seconds as `2026-12-02 10:46 UTC`; `-` for none.
fn format_time(secs: Option<i64>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    secs.and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(format).ok())
        .unwrap_or_else(|| "-".into())
}

/// Prints a header and rows in columns as wide as their widest cell.
fn print_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        println!("{out}");
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn reindex(state: &AppState, target: Option<&str>) -> anyhow::Result<()> {
    let reindexed = crate::registry::repositories::reindex(state, target).await?;
    for name in &reindexed {
        eprintln!("reindexed {name}");
    }
    let count = reindexed.len();
    eprintln!(
        "{count} {} reindexed",
        if count == 1 {
            "repository"
        } else {
            "repositories"
        }
    );
    Ok(())
}

/// `listen_from` names where the listen address was set, for messages.
async fn serve(
    state: AppState,
    config_file: Option<&std::path::Path>,
    listen_from: &str,
) -> anyhow::Result<()> {
    let config = &state.config;
    // Signals are caught from here on: from the moment the port accepts connections a
    // SIGTERM stops the server gracefully.
    let shutdown = crate::shutdown_signal();
    // Before anything is created, so that a wrong name fails at once.
    let listen = &config.server.listen;
    let address = listen.resolve().await.with_context(|| {
        format!(
            "{listen_from}: cannot resolve {:?} to an address to listen on",
            listen.to_string()
        )
    })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.storage.data_dir.display(),
        storage = %config.storage_description(),
        database = %crate::config::without_credentials(&config.database_url()),
        config_file = %config_file.map_or("none (defaults and environment)".into(), |p| p.display().to_string()),
        public_url = %if config.server.public_url.is_empty() {
            "from each request's Host".to_string()
        } else {
            config.server.public_url.clone()
        },
        "starting alpine-registry"
    );
    let fixed = std::env::var(BOOTSTRAP_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let from_env = fixed.is_some();
    if let Some(secret) = accounts::bootstrap(&state, fixed).await? {
        if from_env {
            eprintln!("created user admin with the token from {BOOTSTRAP_TOKEN_ENV}");
        } else {
            // Printed, never logged: the only time this secret is shown.
            println!(
                "created user admin; admin token (shown once, store it now):\n{secret}\n\
                 use it as: curl --user admin:{secret} ..."
            );
        }
    }
    crate::recover(&state).await?;
    let listener = crate::http::connections::bind(address).with_context(|| {
        if listen.host().parse::<std::net::IpAddr>().is_ok() {
            format!("binding {address} ({listen_from})")
        } else {
            format!("binding {address}, the first address of {listen} ({listen_from})")
        }
    })?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening on http://{local}");
    if let Some(metrics_listen) = &config.server.metrics_listen {
        let address = metrics_listen.resolve().await.with_context(|| {
            format!("server.metrics_listen: cannot resolve {metrics_listen} to an address")
        })?;
        let metrics_listener = crate::http::connections::bind(address)
            .with_context(|| format!("binding {address} (server.metrics_listen)"))?;
        let local = metrics_listener.local_addr()?;
        tracing::info!(address = %local, "metrics on http://{local}/metrics");
        let router = crate::http::metrics::listener_router(state.clone());
        let config = state.config.clone();
        tokio::spawn(async move {
            let served = crate::http::connections::serve(
                metrics_listener,
                router,
                None,
                &config,
                crate::shutdown_signal(),
            )
            .await;
            if let Err(e) = served {
                tracing::error!(error = %format!("{e:#}"), "serving metrics");
            }
        });
    }
    crate::serve(listener, state, shutdown).await
}

// Repositories: a thin adapter over crate::registry::repositories.

#[derive(Debug, Subcommand)]
pub enum RepositoryCommand {
    /// Creates an empty repository OWNER/BRANCH/REPOSITORY of an existing owner (an error
    /// if it exists). Needed before the first upload when repositories.auto_create is off.
    /// With --upstream, a remote repository: a caching proxy of that upstream repository.
    /// With --virtual, a virtual repository: the merged indexes of its members.
    Create {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
        /// The members of a virtual repository, in order (the first listing a file name
        /// wins): hosted or remote repositories of the same owner, comma-separated.
        #[arg(
            long = "virtual",
            value_name = "OWNER/BRANCH/REPOSITORY,...",
            value_delimiter = ',',
            conflicts_with = "upstream"
        )]
        members: Vec<String>,
        /// The upstream repository's base URL, whose {arch}/APKINDEX.tar.gz and packages
        /// are fetched (e.g. https://dl-cdn.alpinelinux.org/alpine/v3.21/main).
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
        /// A public key the upstream's indexes are signed with (repeatable); its file name
        /// is its key name, as in /etc/apk/keys.
        #[arg(long, value_name = "FILE", requires = "upstream")]
        upstream_key: Vec<std::path::PathBuf>,
        /// How old the upstream's index may get before it is fetched again (10m, 1h);
        /// default upstream.default_refresh_secs.
        #[arg(long, value_name = "DURATION", requires = "upstream")]
        refresh: Option<String>,
    },
    /// Lists repositories: kind, architectures served, number of packages, last upload.
    List {
        /// Only the repositories of this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Shows one repository: its kind, the upstream of a remote one or the members of a
    /// virtual one, its architectures and the snapshots of a remote or virtual one.
    Show {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
    },
    /// Removes a repository with all its packages and indexes, in one step; package files
    /// no other package uses are left to orphan collection.
    Remove {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
    },
    /// Changes a repository's settings.
    Set {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
        /// What an upload (or delete) that leaves a dependency unsatisfied gets: off,
        /// warn or refuse; default follows repositories.dependency_check.
        #[arg(long, value_name = "off|warn|refuse|default")]
        dependency_check: String,
    },
}

/// `repository show`: one repository, its kind and what its kind has.
async fn show_repository(state: &AppState, at: &RepoAddress) -> anyhow::Result<()> {
    let owner = crate::registry::accounts::owner(state, at.owner.as_str()).await?;
    let repo = state
        .store
        .repository(&crate::registry::repo_ref(owner.id, at))
        .await?
        .with_context(|| format!("no repository {at}"))?;
    let summary = crate::registry::repositories::list(state, Some(&at.owner))
        .await?
        .into_iter()
        .find(|r| r.branch == at.branch.as_str() && r.repository == at.repository.as_str())
        .with_context(|| format!("no repository {at}"))?;
    let mut rows = vec![
        vec!["repository".to_string(), at.to_string()],
        vec!["kind".to_string(), summary.kind.clone()],
    ];
    match crate::registry::virtuals::kind_of(state, repo.id).await? {
        crate::registry::virtuals::Kind::Hosted => {}
        crate::registry::virtuals::Kind::Remote(upstream) => {
            rows.push(vec!["upstream".to_string(), upstream.url.clone()]);
            rows.push(vec![
                "refresh".to_string(),
                format!("{} s", upstream.refresh_secs),
            ]);
        }
        crate::registry::virtuals::Kind::Virtual(_) => {
            let members = crate::registry::virtuals::members(state, repo.id)
                .await?
                .unwrap_or_default();
            for (i, member) in members.iter().enumerate() {
                rows.push(vec![
                    if i == 0 { "members" } else { "" }.to_string(),
                    format!("{} ({})", member.repository, member.kind),
                ]);
            }
        }
    }
    rows.push(vec![
        "arches".to_string(),
        if summary.arches.is_empty() {
            "-".to_string()
        } else {
            summary.arches.join(",")
        },
    ]);
    rows.push(vec!["packages".to_string(), summary.packages.to_string()]);
    if summary.kind != "hosted" {
        let snapshots = crate::registry::snapshots::list(state, at).await?;
        if snapshots.is_empty() {
            rows.push(vec!["snapshots".to_string(), "-".to_string()]);
        }
        for (i, snapshot) in snapshots.iter().enumerate() {
            rows.push(vec![
                if i == 0 { "snapshots" } else { "" }.to_string(),
                format!(
                    "{} ({})",
                    snapshot.name,
                    crate::names::rfc3339_ms(snapshot.at_ms)
                ),
            ]);
        }
    }
    for row in rows {
        println!("{:<12}{}", row[0], row[1]);
    }
    Ok(())
}

// Snapshots: a thin adapter over crate::registry::snapshots.

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Records the current time under a name: OWNER/BRANCH/REPOSITORY@NAME serves what
    /// the remote or virtual repository serves now, from then on.
    Create {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
        /// Lowercase letters, digits, '.', '_' and '-'; default: the time, as
        /// 20261206t223000z.
        #[arg(long)]
        name: Option<String>,
    },
    /// Lists a repository's snapshots, oldest first.
    List {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
    },
    /// Removes a snapshot's name (the moment stays readable as REPOSITORY@TIME).
    Remove {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY")]
        repository: String,
        name: String,
    },
}

async fn snapshot(state: &AppState, command: SnapshotCommand) -> anyhow::Result<()> {
    use crate::names::{rfc3339_ms, SnapshotName};
    use crate::registry::snapshots;
    match command {
        SnapshotCommand::Create { repository, name } => {
            let at = RepoAddress::parse_path(&repository)?;
            let name = name.as_deref().map(SnapshotName::parse).transpose()?;
            let created = snapshots::create(state, &Actor::cli(), &at, name).await?;
            println!("{at}@{}", created.name);
            eprintln!(
                "snapshot {} of {at}: what it served at {}",
                created.name,
                rfc3339_ms(created.at_ms)
            );
        }
        SnapshotCommand::List { repository } => {
            let at = RepoAddress::parse_path(&repository)?;
            let rows = snapshots::list(state, &at).await?.into_iter().map(|s| {
                vec![
                    s.name.clone(),
                    rfc3339_ms(s.at_ms),
                    format!("{at}@{}", s.name),
                ]
            });
            print_table(&["NAME", "AT", "PATH"], rows);
        }
        SnapshotCommand::Remove { repository, name } => {
            let at = RepoAddress::parse_path(&repository)?;
            let name = SnapshotName::parse(&name)?;
            snapshots::remove(state, &Actor::cli(), &at, &name).await?;
            eprintln!("removed snapshot {name} of {at}");
        }
    }
    Ok(())
}

fn plural(count: i64, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

async fn repository(state: &AppState, command: RepositoryCommand) -> anyhow::Result<()> {
    use crate::registry::repositories;
    match command {
        RepositoryCommand::Create {
            repository,
            upstream: None,
            members,
            ..
        } if !members.is_empty() => {
            let at = RepoAddress::parse_path(&repository)?;
            let members = members
                .iter()
                .map(|m| RepoAddress::parse_path(m.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            crate::registry::virtuals::create(state, &Actor::cli(), &at, &members).await?;
            let names: Vec<String> = members.iter().map(ToString::to_string).collect();
            eprintln!("created virtual repository {at} of {}", names.join(", "));
        }
        RepositoryCommand::Create {
            repository,
            upstream: None,
            ..
        } => {
            let at = RepoAddress::parse_path(&repository)?;
            repositories::create(state, &Actor::cli(), &at).await?;
            eprintln!("created repository {at}");
        }
        RepositoryCommand::Create {
            repository,
            upstream: Some(url),
            upstream_key,
            refresh,
            ..
        } => {
            let at = RepoAddress::parse_path(&repository)?;
            let mut keys = Vec::new();
            for path in &upstream_key {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the upstream key {}", path.display()))?;
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("the key {} has no file name", path.display()))?;
                keys.push(crate::store::UpstreamKey {
                    name: name.to_string(),
                    pem,
                });
            }
            let refresh_secs = refresh
                .as_deref()
                .map(crate::access::tokens::parse_duration)
                .transpose()?
                .map(|secs| secs as u64);
            let new = crate::registry::remote::NewRemote {
                url: url.clone(),
                keys,
                refresh_secs,
            };
            crate::registry::remote::create(state, &Actor::cli(), &at, &new).await?;
            eprintln!("created remote repository {at}, a cache of {url}");
        }
        RepositoryCommand::List { owner } => {
            let owner = owner.as_deref().map(OwnerName::parse).transpose()?;
            let rows = repositories::list(state, owner.as_ref())
                .await?
                .into_iter()
                .map(|r| {
                    vec![
                        format!("{}/{}/{}", r.owner, r.branch, r.repository),
                        if r.members.is_empty() {
                            r.kind.clone()
                        } else {
                            format!("{} of {}", r.kind, r.members.join(","))
                        },
                        if r.arches.is_empty() {
                            "-".to_string()
                        } else {
                            r.arches.join(",")
                        },
                        r.packages.to_string(),
                        format_time(r.last_publish_ms.map(|ms| ms.div_euclid(1000))),
                    ]
                });
            print_table(
                &["REPOSITORY", "KIND", "ARCHES", "PACKAGES", "LAST PUBLISH"],
                rows,
            );
        }
        RepositoryCommand::Show { repository } => {
            let at = RepoAddress::parse_path(&repository)?;
            show_repository(state, &at).await?;
        }
        RepositoryCommand::Remove { repository } => {
            let at = RepoAddress::parse_path(&repository)?;
            let removed = repositories::remove(state, &Actor::cli(), &at).await?;
            let indexes = if removed.arches.is_empty() {
                "no index".to_string()
            } else {
                format!("the indexes of {}", removed.arches.join(", "))
            };
            eprintln!(
                "removed repository {at}: {}, {indexes}",
                plural(removed.packages, "package")
            );
            if removed.packages > 0 {
                eprintln!(
                    "package files no other package uses are left to orphan collection: \
                     the running server deletes them storage.orphan_grace_secs ({} s) \
                     after this, as does fsck --repair",
                    state.config.storage.orphan_grace_secs
                );
            }
        }
        RepositoryCommand::Set {
            repository,
            dependency_check,
        } => {
            let at = RepoAddress::parse_path(&repository)?;
            let check = match dependency_check.as_str() {
                "default" => None,
                other => Some(
                    other
                        .parse::<crate::config::DependencyCheck>()
                        .map_err(|e| anyhow::anyhow!("--dependency-check: {e} (or default)"))?,
                ),
            };
            let effective =
                crate::registry::dependencies::set(state, &Actor::cli(), &at, check).await?;
            match check {
                Some(_) => eprintln!("{at}: dependency check {}", effective.as_str()),
                None => eprintln!(
                    "{at}: dependency check {} (repositories.dependency_check)",
                    effective.as_str()
                ),
            }
        }
    }
    Ok(())
}

// Packages: a thin adapter over crate::registry::copy.

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Copies a package file into another repository, of the same owner or of another,
    /// sharing its stored bytes; returns once the target's signed index lists it (signed
    /// with the target owner's key).
    Copy {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY/ARCH/FILE")]
        source: String,
        /// The target repository; OWNER defaults to the source's.
        #[arg(value_name = "[OWNER/]BRANCH/REPOSITORY")]
        target: String,
        /// Also deletes the source, once the target's index lists the file.
        #[arg(long = "move")]
        remove_source: bool,
    },
    /// Pins a package file: no retention rule deletes it.
    Pin {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY/ARCH/FILE")]
        file: String,
    },
    /// Unpins a package file: retention rules apply to it again.
    Unpin {
        #[arg(value_name = "OWNER/BRANCH/REPOSITORY/ARCH/FILE")]
        file: String,
    },
}

/// Parses `OWNER/BRANCH/REPOSITORY/ARCH/FILE`.
fn parse_file_address(path: &str) -> anyhow::Result<(RepoAddress, Arch, PackageFile)> {
    let parts: Vec<&str> = path.split('/').collect();
    let [owner, branch, repository, arch, file] = parts[..] else {
        bail!(
            "invalid package file {path:?}: expected OWNER/BRANCH/REPOSITORY/ARCH/FILE, e.g. \
             acme/edge/main/x86_64/hello-1.0-r0.apk"
        );
    };
    Ok((
        RepoAddress::parse(owner, branch, repository)?,
        Arch::parse(arch)?,
        PackageFile::parse(file)?,
    ))
}

/// Parses `[OWNER/]BRANCH/REPOSITORY`, the owner `default_owner` when left out.
fn parse_target(path: &str, default_owner: &OwnerName) -> anyhow::Result<RepoAddress> {
    match path.split('/').count() {
        2 => Ok(RepoAddress::parse_path(&format!("{default_owner}/{path}"))?),
        3 => Ok(RepoAddress::parse_path(path)?),
        _ => bail!(
            "invalid target repository {path:?}: expected [OWNER/]BRANCH/REPOSITORY, e.g. \
             v3.21/main"
        ),
    }
}

async fn package(state: &AppState, command: PackageCommand) -> anyhow::Result<()> {
    use crate::registry::copy::{self, Source, Target};
    match command {
        PackageCommand::Copy {
            source,
            target,
            remove_source,
        } => {
            let (source_at, arch, file) = parse_file_address(&source)?;
            let target_at = parse_target(&target, &source_at.owner)?;
            let owner_of = |name: &OwnerName| {
                let name = name.clone();
                async move {
                    state
                        .store
                        .owner_by_name(name.as_str())
                        .await?
                        .with_context(|| format!("no owner named {:?}", name.as_str()))
                }
            };
            let source_owner = owner_of(&source_at.owner).await?;
            let target_owner = owner_of(&target_at.owner).await?;
            let copied = copy::copy(
                state,
                &Actor::cli(),
                &Source {
                    owner: &source_owner,
                    at: &source_at,
                    arch: &arch,
                    file: &file,
                },
                None,
                &Target {
                    owner: &target_owner,
                    at: &target_at,
                },
                remove_source,
            )
            .await?;
            let from = format!(
                "{source_at}/{}/{}",
                copied.source.arch, copied.source.filename
            );
            let done = if copied.published.identical {
                "already held these very bytes"
            } else {
                "lists it, signed"
            };
            let verb = if copied.moved { "moved" } else { "copied" };
            eprintln!("{verb} {from} to {target_at}: its index {done}");
        }
        PackageCommand::Pin { file } => pin(state, &file, true).await?,
        PackageCommand::Unpin { file } => pin(state, &file, false).await?,
    }
    Ok(())
}

async fn pin(state: &AppState, path: &str, pinned: bool) -> anyhow::Result<()> {
    let (at, arch, file) = parse_file_address(path)?;
    let owner = accounts::owner(state, at.owner.as_str()).await?;
    let found =
        crate::registry::retention::pin(state, &Actor::cli(), &owner, &at, &arch, &file, pinned)
            .await?;
    let verb = if pinned { "pinned" } else { "unpinned" };
    eprintln!("{verb} {at}/{}/{}", found.arch, found.filename);
    Ok(())
}

// Signing keys: a thin adapter over crate::registry::keys.

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Makes a new key (signing.key_bits) the owner's first signing key: every index is
    /// signed by it first and by the keys active before after it (clients that know only
    /// an old key keep working), and is signed again before the command returns.
    Rotate { owner: String },
    /// Makes an existing abuild private key the owner's first signing key, as rotate
    /// does, so that clients keep the /etc/apk/keys they have. The key is stored
    /// encrypted with the master key.
    Import {
        owner: String,
        /// abuild's private key file: unencrypted PEM, PKCS#8 or PKCS#1, RSA of
        /// signing.import_min_bits to signing.import_max_bits bits.
        #[arg(long, value_name = "FILE")]
        private_key: PathBuf,
        /// The key's file name as the clients have it (e.g.
        /// ops@example.org-5f3e2a1b.rsa.pub); default <owner>-<8 hex digits>.rsa.pub.
        #[arg(long, value_name = "NAME.rsa.pub")]
        name: Option<String>,
    },
    /// Stops signing with a key (refused for the owner's last active key); its public key
    /// is still served under its name.
    Retire { owner: String, keyname: String },
    /// Lists the owner's keys, newest first: state, creation, retirement, fingerprint.
    List { owner: String },
}

async fn key_command(state: &AppState, command: KeyCommand) -> anyhow::Result<()> {
    use crate::registry::keys;
    let change = match command {
        KeyCommand::List { owner } => {
            let owner = accounts::owner(state, &owner).await?;
            let rows = keys::list(state, &owner).await?.into_iter().map(|k| {
                vec![
                    k.file_name,
                    k.state.to_string(),
                    format_time(Some(k.created_at)),
                    format_time(k.retired_at),
                    k.bits.to_string(),
                    k.fingerprint_sha256,
                ]
            });
            print_table(
                &[
                    "KEY",
                    "STATE",
                    "CREATED",
                    "RETIRED",
                    "BITS",
                    "FINGERPRINT (SHA-256)",
                ],
                rows,
            );
            return Ok(());
        }
        KeyCommand::Rotate { owner } => {
            let owner = accounts::owner(state, &owner).await?;
            keys::rotate(state, &Actor::cli(), &owner).await?
        }
        KeyCommand::Import {
            owner,
            private_key,
            name,
        } => {
            let owner = accounts::owner(state, &owner).await?;
            let pem = std::fs::read_to_string(&private_key)
                .with_context(|| format!("reading {}", private_key.display()))?;
            keys::import(state, &Actor::cli(), &owner, &pem, name.as_deref()).await?
        }
        KeyCommand::Retire { owner, keyname } => {
            let owner = accounts::owner(state, &owner).await?;
            keys::retire(state, &Actor::cli(), &owner, &keyname).await?
        }
    };
    // The new or retired key's name alone on stdout, for scripts.
    println!("{}", change.key.file_name);
    let verb = if change.key.state == "retired" {
        "retired"
    } else {
        "added"
    };
    let count = change.resigned.len();
    eprintln!(
        "{verb} {} (fingerprint {}); indexes are signed by {}; {count} {} signed again",
        change.key.file_name,
        change.key.fingerprint_sha256,
        change.signing.join(" then "),
        if count == 1 {
            "repository"
        } else {
            "repositories"
        }
    );
    Ok(())
}

// The audit log: a thin adapter over crate::registry::audit.

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Lists entries, newest first: time, owner, actor (user and token, retention rule, or
    /// cli and the OS user), client address, action, target, outcome and details.
    List {
        /// Entries of this owner.
        #[arg(long)]
        owner: Option<String>,
        /// Entries of this actor (a user name, an OS user, a retention rule's scope).
        #[arg(long)]
        actor: Option<String>,
        /// Entries of this action, e.g. package.publish.
        #[arg(long)]
        action: Option<String>,
        /// Entries at or after: 2026-01-31T12:00:00Z, 2026-01-31, or 7d back from now.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Entries to print, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Entries older than the one of this id (the next page of a previous listing).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
}

async fn audit(state: &AppState, command: AuditCommand) -> anyhow::Result<()> {
    use crate::registry::audit;
    let AuditCommand::List {
        owner,
        actor,
        action,
        since,
        limit,
        after,
    } = command;
    let owner = match owner {
        Some(name) => Some(accounts::owner(state, &name).await?),
        None => None,
    };
    let since_ms = match since {
        Some(text) => Some(audit::parse_since(&text, state.clock.unix_ms())?),
        None => None,
    };
    let filter = audit::Filter {
        actor,
        action,
        since_ms,
        after,
        limit: Some(limit),
    };
    let page = audit::list(state, owner.as_ref(), filter).await?;
    let rows = page.entries.into_iter().map(|entry| {
        let at = format_ms(entry.at_ms);
        let mut actor = format!("{}:{}", entry.actor_kind, entry.actor);
        if let Some(id) = entry.token_id {
            actor.push_str(&format!(" (token {id}"));
            if let Some(label) = &entry.token_label {
                actor.push_str(&format!(" {label:?}"));
            }
            actor.push(')');
        }
        vec![
            entry.id.to_string(),
            at,
            entry.owner.unwrap_or_else(|| "-".into()),
            actor,
            entry.client.unwrap_or_else(|| "-".into()),
            entry.action,
            entry.target,
            entry.outcome,
            entry.detail.to_string(),
        ]
    });
    print_table(
        &[
            "ID", "TIME", "OWNER", "ACTOR", "CLIENT", "ACTION", "TARGET", "OUTCOME", "DETAIL",
        ],
        rows,
    );
    if let Some(next) = page.next {
        eprintln!("more entries: --after {next}");
    }
    Ok(())
}

/// Unix milliseconds as a UTC time to the millisecond.
fn format_ms(at_ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| at_ms.to_string())
}

// Webhooks: a thin adapter over crate::registry::webhooks.

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Adds a webhook to an owner: its package.published, package.deleted and
    /// index.published events are POSTed to URL, signed with the secret.
    Add {
        owner: String,
        url: String,
        /// The secret the receiver checks X-Alpine-Registry-Signature-256 with.
        #[arg(long, env = "ALPINE_REGISTRY_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The events to send, comma-separated (all three when left out).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Lists the webhooks of an owner.
    List { owner: String },
    /// Removes a webhook; its pending deliveries are not sent.
    Remove { id: i64 },
    /// Lists a webhook's newest deliveries: event, state, attempts, the last status code,
    /// latency and error.
    Deliveries {
        id: i64,
        /// Deliveries to print, 1 to 1000.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

async fn webhook(state: &AppState, command: WebhookCommand) -> anyhow::Result<()> {
    use crate::registry::webhooks;
    let actor = Actor::cli();
    match command {
        WebhookCommand::Add {
            owner,
            url,
            secret,
            events,
        } => {
            let owner = accounts::owner(state, &owner).await?;
            let spec = webhooks::Spec {
                url,
                secret,
                events,
            };
            let webhook = webhooks::add(state, &actor, &owner, spec).await?;
            println!("{}", webhook.id);
            eprintln!(
                "added webhook {} to {}: {} for {}",
                webhook.id,
                owner.name,
                webhook.url,
                webhook.events().join(", ")
            );
        }
        WebhookCommand::List { owner } => {
            let owner = accounts::owner(state, &owner).await?;
            let rows = webhooks::list(state, &owner).await?.into_iter().map(|w| {
                vec![
                    w.id.to_string(),
                    w.url.clone(),
                    w.events().join(","),
                    format_ms(w.created_ms),
                    w.created_by,
                ]
            });
            print_table(&["ID", "URL", "EVENTS", "CREATED", "BY"], rows);
        }
        WebhookCommand::Remove { id } => {
            let removed = webhooks::remove(state, &actor, None, id).await?;
            eprintln!(
                "removed webhook {id} of {} ({})",
                removed.owner, removed.url
            );
        }
        WebhookCommand::Deliveries { id, limit } => {
            let rows = webhooks::deliveries(state, None, id, Some(limit))
                .await?
                .into_iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        format_ms(d.created_ms),
                        d.event,
                        d.state,
                        d.attempts.to_string(),
                        d.last_status.map_or("-".into(), |s| s.to_string()),
                        d.last_latency_ms
                            .map_or("-".into(), |ms| format!("{ms} ms")),
                        d.last_error.unwrap_or_else(|| "-".into()),
                    ]
                });
            print_table(
                &[
                    "ID", "CREATED", "EVENT", "STATE", "ATTEMPTS", "STATUS", "LATENCY", "ERROR",
                ],
                rows,
            );
        }
    }
    Ok(())
}

// Retention: a thin adapter over crate::registry::retention.

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Sets the rule of an owner, a branch or one repository (the most specific rule of a
    /// repository applies), replacing the rule of that scope.
    Set {
        #[arg(value_name = "OWNER[/BRANCH[/REPOSITORY]]")]
        target: String,
        /// Keeps the newest N versions of each package name and architecture.
        #[arg(long, value_name = "N")]
        keep_versions: Option<i64>,
        /// Deletes versions uploaded longer ago than this (90d, 12h, 2w)...
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
        /// ...unless among the newest M (default 0; the last version always stays).
        #[arg(long, value_name = "M", requires = "max_age")]
        keep_min: Option<i64>,
        /// Applies the rule only to package names matching this glob (repeatable).
        #[arg(long = "match", value_name = "GLOB")]
        include: Vec<String>,
        /// Leaves package names matching this glob alone (repeatable).
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
    },
    /// Lists the rules, of every owner or of one.
    Show {
        #[arg(value_name = "OWNER")]
        owner: Option<String>,
    },
    /// Removes the rule of exactly this scope.
    Remove {
        #[arg(value_name = "OWNER[/BRANCH[/REPOSITORY]]")]
        target: String,
    },
    /// Prints what the rules would delete now, and why; changes nothing.
    Plan {
        #[arg(value_name = "OWNER[/BRANCH[/REPOSITORY]]")]
        target: String,
    },
    /// Applies the rules now: deletes what plan prints, each file as a delete does.
    Apply {
        #[arg(value_name = "OWNER[/BRANCH[/REPOSITORY]]")]
        target: String,
    },
}

async fn retention(state: &AppState, command: RetentionCommand) -> anyhow::Result<()> {
    use crate::registry::retention::{self, describe_secs, RuleSpec, Target};
    match command {
        RetentionCommand::Set {
            target,
            keep_versions,
            max_age,
            keep_min,
            include,
            exclude,
        } => {
            let target = Target::parse(&target)?;
            let owner = accounts::owner(state, target.owner.as_str()).await?;
            let spec = RuleSpec {
                keep_versions,
                max_age_secs: max_age.as_deref().map(access::parse_duration).transpose()?,
                keep_min,
                include,
                exclude,
            };
            retention::set(state, &Actor::cli(), &owner, &target, spec).await?;
            eprintln!("set the retention rule of {target}");
        }
        RetentionCommand::Show { owner } => {
            let owner = match owner {
                Some(name) => Some(accounts::owner(state, &name).await?),
                None => None,
            };
            let rows = retention::show(state, owner.as_ref())
                .await?
                .into_iter()
                .map(|rule| {
                    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    let globs =
                        |g: Vec<String>| or_dash(Some(g.join(",")).filter(|s| !s.is_empty()));
                    vec![
                        rule.target,
                        or_dash(rule.keep_versions.map(|n| n.to_string())),
                        or_dash(rule.max_age_secs.map(describe_secs)),
                        rule.keep_min.to_string(),
                        globs(rule.include),
                        globs(rule.exclude),
                    ]
                });
            print_table(
                &[
                    "TARGET",
                    "KEEP VERSIONS",
                    "MAX AGE",
                    "KEEP MIN",
                    "MATCH",
                    "EXCLUDE",
                ],
                rows,
            );
        }
        RetentionCommand::Remove { target } => {
            let target = Target::parse(&target)?;
            let owner = accounts::owner(state, target.owner.as_str()).await?;
            retention::remove(state, &Actor::cli(), &owner, &target).await?;
            eprintln!("removed the retention rule of {target}");
        }
        RetentionCommand::Plan { target } => {
            let target = Target::parse(&target)?;
            let owner = accounts::owner(state, target.owner.as_str()).await?;
            let plans = retention::plan(state, &owner, &target).await?;
            print_retention(&plans, "would delete");
        }
        RetentionCommand::Apply { target } => {
            let target = Target::parse(&target)?;
            let owner = accounts::owner(state, target.owner.as_str()).await?;
            let applied = retention::apply(state, &owner, &target).await?;
            print_retention(&applied, "deleted");
        }
    }
    Ok(())
}

/// One line per file deleted (or to delete) with its rule and reason on standard output;
/// a count per repository on standard error.
fn print_retention(plans: &[crate::registry::retention::RepositoryPlan], verb: &str) {
    for plan in plans {
        let Some(rule) = &plan.rule else {
            eprintln!("{}: no retention rule applies", plan.repository);
            continue;
        };
        for deletion in &plan.deletions {
            println!(
                "{} {} (rule {}: {})",
                verb, deletion.path, rule.target, deletion.why
            );
        }
        for pinned in &plan.pinned {
            println!("kept {pinned} (pinned)");
        }
        eprintln!(
            "{}: {verb} {} (rule {})",
            plan.repository,
            plural(plan.deletions.len() as i64, "file"),
            rule.target
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::without_credentials;

    #[test]
    fn database_urls_are_logged_without_credentials() {
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
