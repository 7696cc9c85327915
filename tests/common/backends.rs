//! The backends the test environment names (a PostgreSQL server, an S3 server), for tests
//! that run the binary itself: a fresh database and a fresh bucket prefix, given to the
//! child as environment variables, and the database dropped with this value. Without
//! them, the binary runs on the embedded default (SQLite and files in its data
//! directory).

use std::process::Command;

use alpine_registry::config::{Config, S3Config, StorageBackend};

use super::postgres::{TestDatabase, MASTER_KEY};

pub struct Backends {
    pub database: Option<TestDatabase>,
    pub s3: Option<S3Config>,
}

impl Backends {
    /// A fresh database and bucket prefix on the servers the environment names, if any.
    pub fn from_env() -> Backends {
        Backends {
            database: TestDatabase::from_env(),
            s3: super::s3::config(),
        }
    }

    /// The embedded default whatever the environment says.
    pub fn embedded() -> Backends {
        Backends {
            database: None,
            s3: None,
        }
    }

    /// The variables that point the binary at these backends.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut set = |key: &str, value: &str| {
            env.push((format!("ALPINE_REGISTRY__{key}"), value.to_string()));
        };
        if let Some(database) = &self.database {
            set("DATABASE__URL", &database.url);
            set("SIGNING__MASTER_KEY", MASTER_KEY);
        }
        if let Some(s3) = &self.s3 {
            set("STORAGE__BACKEND", "s3");
            set("STORAGE__S3__BUCKET", &s3.bucket);
            set("STORAGE__S3__ENDPOINT", &s3.endpoint);
            set("STORAGE__S3__REGION", &s3.region);
            set("STORAGE__S3__PREFIX", &s3.prefix);
            set("STORAGE__S3__ACCESS_KEY_ID", &s3.access_key_id);
            set("STORAGE__S3__SECRET_ACCESS_KEY", &s3.secret_access_key);
            set("STORAGE__S3__ALLOW_HTTP", &s3.allow_http.to_string());
            set("STORAGE__S3__PATH_STYLE", &s3.path_style.to_string());
        }
        env
    }

    /// Points `command` at these backends.
    pub fn apply(&self, command: &mut Command) {
        for (key, value) in self.env() {
            command.env(key, value);
        }
    }

    /// Points an in-process configuration at these backends.
    pub fn configure(&self, config: &mut Config) {
        if let Some(database) = &self.database {
            config.database.url = database.url.clone();
            config.signing.master_key = MASTER_KEY.to_string();
        }
        if let Some(s3) = &self.s3 {
            config.storage.backend = StorageBackend::S3;
            config.storage.s3 = s3.clone();
        }
    }

    /// The secrets of these backends that must never be logged: the database password,
    /// the S3 secret key and the configured master key.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let mut secrets = Vec::new();
        if let Some(database) = &self.database {
            if let Some(password) = url_password(&database.url) {
                secrets.push(("database password".to_string(), password));
            }
            secrets.push(("master key".to_string(), MASTER_KEY.to_string()));
        }
        if let Some(s3) = &self.s3 {
            secrets.push(("S3 secret key".to_string(), s3.secret_access_key.clone()));
        }
        secrets
    }

    /// What the backends are, for messages.
    pub fn describe(&self) -> &'static str {
        match (&self.database, &self.s3) {
            (None, None) => "SQLite and files",
            (None, Some(_)) => "SQLite and S3",
            (Some(_), None) => "PostgreSQL and files",
            (Some(_), Some(_)) => "PostgreSQL and S3",
        }
    }
}

/// The password in `postgres://user:password@host/db`, if any.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_string())
}
