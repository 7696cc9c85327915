//! Validated names from the outside world: owners, branches, repositories, architectures
//! and package file names. Checked once when parsed, so no handler can forget.

use std::fmt;

use crate::error::AppError;

/// Names that would collide with the registry's own routes.
const RESERVED_OWNERS: &[&str] = &[
    "api",
    "healthz",
    "readyz",
    "metrics",
    "-",
    "_",
    "key",
    "keys",
    "static",
    "assets",
    "admin-api",
    "login",
    "logout",
    "v2",
    "v3",
];

fn is_segment(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !s.contains("..")
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, AppError> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(AppError::BadRequest(format!(
                        concat!("invalid ", $what, " {:?}: {}"),
                        truncate(s),
                        Self::rule_for(s)
                    )))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A namespace: a user or an organisation.
    OwnerName,
    "owner",
    |s| is_segment(s, 64) && !RESERVED_OWNERS.contains(&s.to_ascii_lowercase().as_str())
);
name_type!(
    /// A branch such as `v3.21` or `edge`.
    BranchName,
    "branch",
    |s| is_segment(s, 64) && s != "keys"
);
name_type!(
    /// A repository such as `main` or `community`.
    RepoName,
    "repository",
    |s| is_segment(s, 64)
);
name_type!(
    /// An architecture such as `x86_64`, or `noarch`.
    Arch,
    "architecture",
    crate::apk::names::is_valid_arch
);
name_type!(
    /// A package file name, `{name}-{version}.apk`.
    PackageFile,
    "package file name",
    |s| s.len() <= 255
        && s.len() > 4
        && s.ends_with(".apk")
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-' | b'~'))
        && !s.contains("..")
);

impl OwnerName {
    const RULE: &'static str =
        "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";

    /// Names the reserved word rather than leaving the user to guess which it is.
    fn rule_for(s: &str) -> String {
        let lower = s.to_ascii_lowercase();
        if RESERVED_OWNERS.contains(&lower.as_str()) {
            format!(
                "{lower:?} is reserved for the registry's own paths (reserved: {})",
                RESERVED_OWNERS.join(", ")
            )
        } else {
            Self::RULE.to_string()
        }
    }
}
impl BranchName {
    const RULE: &'static str =
        "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";

    fn rule_for(s: &str) -> String {
        if s == "keys" {
            "\"keys\" is reserved: it would clash with /{owner}/keys/{name}".to_string()
        } else {
            Self::RULE.to_string()
        }
    }
}
impl RepoName {
    const RULE: &'static str =
        "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";

    fn rule_for(_: &str) -> String {
        Self::RULE.to_string()
    }
}
impl Arch {
    const RULE: &'static str = "use an architecture name such as x86_64, aarch64 or noarch";

    fn rule_for(_: &str) -> String {
        Self::RULE.to_string()
    }
}
impl PackageFile {
    const RULE: &'static str = "expected {name}-{version}.apk";

    fn rule_for(_: &str) -> String {
        Self::RULE.to_string()
    }
}

impl Arch {
    pub fn is_noarch(&self) -> bool {
        self.0 == "noarch"
    }
}

/// A repository as a URL or a command names it: owner, branch and repository, each
/// validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoAddress {
    pub owner: OwnerName,
    pub branch: BranchName,
    pub repository: RepoName,
}

impl RepoAddress {
    pub fn parse(owner: &str, branch: &str, repository: &str) -> Result<Self, AppError> {
        Ok(RepoAddress {
            owner: OwnerName::parse(owner)?,
            branch: BranchName::parse(branch)?,
            repository: RepoName::parse(repository)?,
        })
    }

    /// Parses `OWNER/BRANCH/REPOSITORY`.
    pub fn parse_path(path: &str) -> Result<Self, AppError> {
        let parts: Vec<&str> = path.split('/').collect();
        let [owner, branch, repository] = parts[..] else {
            return Err(AppError::BadRequest(format!(
                "invalid repository {:?}: expected OWNER/BRANCH/REPOSITORY, e.g. \
                 acme/v3.21/main",
                truncate(path)
            )));
        };
        Self::parse(owner, branch, repository)
    }
}

impl fmt::Display for RepoAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.owner, self.branch, self.repository)
    }
}

/// The file name of every architecture's index.
pub const INDEX_FILE: &str = "APKINDEX.tar.gz";

/// What a repository serves under an architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RepoFile {
    Index,
    Package(PackageFile),
}

impl RepoFile {
    pub fn parse(s: &str) -> Result<Self, AppError> {
        if s == INDEX_FILE {
            Ok(RepoFile::Index)
        } else {
            PackageFile::parse(s).map(RepoFile::Package)
        }
    }
}

impl fmt::Display for RepoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoFile::Index => f.write_str(INDEX_FILE),
            RepoFile::Package(file) => file.fmt(f),
        }
    }
}

/// A file of a repository: `{owner}/{branch}/{repository}/{arch}/{file}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileAddress {
    pub repo: RepoAddress,
    pub arch: Arch,
    pub file: RepoFile,
}

impl fmt::Display for FileAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.arch, self.file)
    }
}

/// Keeps hostile names from flooding error messages.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_traversal_names_are_rejected() {
        for bad in [
            "api", "healthz", "READYZ", "metrics", "-", "..", "a/b", "", "a..b", ".x",
        ] {
            assert!(OwnerName::parse(bad).is_err(), "{bad}");
        }
        assert!(OwnerName::parse("acme").is_ok());
        assert!(BranchName::parse("v3.21").is_ok());
        assert!(BranchName::parse("keys").is_err());
        assert!(RepoName::parse("main").is_ok());
        assert!(RepoName::parse("ma\0in").is_err());
        assert!(PackageFile::parse("hello-1.0-r0.apk").is_ok());
        assert!(PackageFile::parse("../x.apk").is_err());
        assert!(PackageFile::parse(".apk").is_err());
        assert!(Arch::parse("x86_64").is_ok());
        assert!(Arch::parse("x86/64").is_err());
    }

    #[test]
    fn a_reserved_name_is_named_in_the_refusal() {
        let message = OwnerName::parse("API").unwrap_err().to_string();
        assert!(
            message.contains("\"api\" is reserved") && message.contains("healthz"),
            "{message}"
        );
        let message = OwnerName::parse("a b").unwrap_err().to_string();
        assert!(!message.contains("reserved"), "{message}");
        let message = BranchName::parse("keys").unwrap_err().to_string();
        assert!(message.contains("\"keys\" is reserved"), "{message}");
    }
}
