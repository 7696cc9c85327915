//! The command line: `serve`, `migrate`, and the administration commands, which work
//! directly on the configured database (the server may be running).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::auth;
use crate::config::{Config, ListenAddr};
use crate::names::{BranchName, OwnerName, RepoName};
use crate::store::{NewToken, Role};
use crate::AppState;

/// Environment variable that fixes the first admin token instead of generating one.
pub const BOOTSTRAP_TOKEN_ENV: &str = "ALPINE_REGISTRY_BOOTSTRAP_TOKEN";

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
        /// Expiry, e.g. 90d, 12h, 30m.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Lists tokens (never their secrets).
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
    let state = crate::open(config).await?;
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
        Command::User(UserCommand::Create {
            name,
            admin,
            password_stdin,
        }) => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading password")?;
                let line = text.lines().next().unwrap_or("").to_string();
                if line.is_empty() {
                    bail!("empty password on standard input");
                }
                Some(auth::hash_password(&line)?)
            } else {
                None
            };
            create_user(&state, &name, password.as_deref(), admin, true).await?;
            eprintln!("created user {name} (namespace {name})");
            Ok(())
        }
        Command::Owner(OwnerCommand::Create { name, private, org }) => {
            let name = OwnerName::parse(&name)?;
            let owner = state
                .store
                .create_owner(name.as_str(), private, org)
                .await?;
            let key = state.keys.get_or_create(&owner).await?;
            eprintln!("created owner {name} (key {})", key.key_name());
            Ok(())
        }
        Command::Owner(OwnerCommand::Member(MemberCommand::Add { owner, user, role })) => {
            let owner_record = state
                .store
                .owner_by_name(&owner)
                .await?
                .with_context(|| format!("no owner named {owner:?}"))?;
            let user_record = state
                .store
                .user_by_name(&user)
                .await?
                .with_context(|| format!("no user named {user:?}"))?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            state
                .store
                .set_member(owner_record.id, user_record.id, role)
                .await?;
            eprintln!("{user} has {} on {owner}", role.as_str());
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            user,
            scope,
            owner,
            expires_in,
        }) => {
            let scope: Role = scope.parse().map_err(anyhow::Error::msg)?;
            let expires_at = expires_in
                .as_deref()
                .map(auth::parse_duration)
                .transpose()?
                .map(|secs| crate::unix_now() + secs);
            let secret =
                create_token(&state, &user, scope, owner.as_deref(), expires_at, None).await?;
            println!("{secret}");
            Ok(())
        }
        Command::Token(TokenCommand::List { user }) => list_tokens(&state, user.as_deref()).await,
        Command::Token(TokenCommand::Revoke { id }) => {
            if !state.store.revoke_token(id, crate::unix_now()).await? {
                bail!("no active token with id {id}");
            }
            eprintln!("revoked token {id}");
            Ok(())
        }
        Command::Reindex { target } => reindex(&state, target.as_deref()).await,
        Command::Fsck { repair } => {
            let report = crate::fsck::fsck(&state, repair).await?;
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
    }
}

/// Creates a user and its namespace. With `generate_key`, the namespace's signing key
/// is made now; otherwise the server makes it in the background.
pub async fn create_user(
    state: &AppState,
    name: &str,
    password_hash: Option<&str>,
    admin: bool,
    generate_key: bool,
) -> anyhow::Result<()> {
    let name = OwnerName::parse(name)?;
    state
        .store
        .create_user(name.as_str(), password_hash, admin)
        .await?;
    if generate_key {
        let owner = state
            .store
            .owner_by_name(name.as_str())
            .await?
            .context("namespace of new user")?;
        state.keys.get_or_create(&owner).await?;
    }
    Ok(())
}

/// Creates a token for `user`; `secret` fixes its value (bootstrap), else it is random.
pub async fn create_token(
    state: &AppState,
    user: &str,
    scope: Role,
    owner: Option<&str>,
    expires_at: Option<i64>,
    secret: Option<String>,
) -> anyhow::Result<String> {
    let user = state
        .store
        .user_by_name(user)
        .await?
        .with_context(|| format!("no user named {user:?}"))?;
    let owner_id = match owner {
        Some(name) => {
            let record = state
                .store
                .owner_by_name(name)
                .await?
                .with_context(|| format!("no owner named {name:?}"))?;
            let role = state.store.member_role(record.id, user.id).await?;
            // A token limited to an owner its user has no role on could do nothing there
            // (reading a public owner needs no token).
            if !user.is_admin && role.is_none() && (record.is_private || scope != Role::Read) {
                bail!(
                    "{} has no role on {name}: add one first (owner member add {name} {} \
                     --role {}), or create the token without --owner",
                    user.name,
                    user.name,
                    scope.as_str()
                );
            }
            Some(record.id)
        }
        None => None,
    };
    let token = match secret {
        Some(secret) => auth::token_from_secret(secret),
        None => auth::generate_token(),
    };
    state
        .store
        .insert_token(NewToken {
            user_id: user.id,
            token_hash: &token.hash,
            prefix: &token.display_prefix,
            scope,
            owner_id,
            expires_at,
        })
        .await?;
    Ok(token.secret)
}

async fn owner_id(state: &AppState, name: &str) -> anyhow::Result<i64> {
    Ok(state
        .store
        .owner_by_name(name)
        .await?
        .with_context(|| format!("no owner named {name:?}"))?
        .id)
}

async fn list_tokens(state: &AppState, user: Option<&str>) -> anyhow::Result<()> {
    let user_id = match user {
        Some(name) => Some(
            state
                .store
                .user_by_name(name)
                .await?
                .with_context(|| format!("no user named {name:?}"))?
                .id,
        ),
        None => None,
    };
    let now = crate::unix_now();
    println!(
        "{:<6} {:<16} {:<6} {:<16} {:<16} {:<12} STATUS",
        "ID", "USER", "SCOPE", "OWNER", "PREFIX", "EXPIRES"
    );
    for t in state.store.list_tokens(user_id).await? {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let expires = t
            .expires_at
            .map(|at| {
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64),
                )
            })
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<6} {:<16} {:<6} {:<16} {:<16} {:<12} {status}",
            t.id,
            t.user_name,
            t.scope.as_str(),
            t.owner_name.as_deref().unwrap_or("-"),
            t.prefix,
            expires
        );
    }
    Ok(())
}

async fn reindex(state: &AppState, target: Option<&str>) -> anyhow::Result<()> {
    let mut parts = target.unwrap_or("").split('/').filter(|p| !p.is_empty());
    let owner = parts.next().map(OwnerName::parse).transpose()?;
    let branch = parts.next().map(BranchName::parse).transpose()?;
    let repository = parts.next().map(RepoName::parse).transpose()?;
    if parts.next().is_some() {
        bail!("reindex takes OWNER[/BRANCH[/REPOSITORY]]");
    }
    let owner_id = match &owner {
        Some(name) => Some(owner_id(state, name.as_str()).await?),
        None => None,
    };
    let repositories = state
        .store
        .list_repositories(
            owner_id,
            branch.as_ref().map(BranchName::as_str),
            repository.as_ref().map(RepoName::as_str),
        )
        .await?;
    if let (Some(target), true) = (target.filter(|t| !t.is_empty()), repositories.is_empty()) {
        bail!("no repository matches {target}: check the owner, branch and repository names");
    }
    for repo in &repositories {
        let owner = state
            .store
            .owner_by_name(&repo.owner_name)
            .await?
            .context("repository without owner")?;
        let generation = state.store.bump_generation(repo.id).await?;
        state.indexer.wait_built(&owner, repo, generation).await?;
        eprintln!(
            "reindexed {}/{}/{}",
            repo.owner_name, repo.branch, repo.name
        );
    }
    let count = repositories.len();
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

/// On an empty database: user `admin` (site admin, namespace `admin`) and one admin
/// token, `fixed` or random. Returns the token when it was created now.
pub async fn bootstrap(state: &AppState, fixed: Option<String>) -> anyhow::Result<Option<String>> {
    if state.store.count_users().await? > 0 {
        return Ok(None);
    }
    if let Some(token) = &fixed {
        if !token.starts_with(auth::TOKEN_PREFIX) || token.len() < auth::TOKEN_PREFIX.len() + 20 {
            bail!(
                "{BOOTSTRAP_TOKEN_ENV} must start with {:?} followed by at least 20 characters",
                auth::TOKEN_PREFIX
            );
        }
    }
    create_user(state, "admin", None, true, false).await?;
    let secret = create_token(state, "admin", Role::Admin, None, None, fixed).await?;
    Ok(Some(secret))
}

/// `listen_from` names where the listen address was set, for messages.
async fn serve(
    state: AppState,
    config_file: Option<&std::path::Path>,
    listen_from: &str,
) -> anyhow::Result<()> {
    let config = &state.config;
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
        database = %without_credentials(&config.database_url()),
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
    if let Some(secret) = bootstrap(&state, fixed).await? {
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
    crate::serve(listener, state, crate::shutdown_signal()).await
}

/// A database URL fit for the log: any `user:password@` replaced.
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
