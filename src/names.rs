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

name_type!(
    /// The name of a snapshot of a remote or virtual repository: `REPOSITORY@name`.
    SnapshotName,
    "snapshot name",
    |s| !s.is_empty()
        && s.len() <= 64
        && matches!(s.as_bytes()[0], b'a'..=b'z' | b'0'..=b'9')
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
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

impl SnapshotName {
    const RULE: &'static str = "use 1-64 lowercase letters, digits, '.', '_' or '-', \
         starting with a letter or digit";

    fn rule_for(_: &str) -> String {
        Self::RULE.to_string()
    }
}

/// A moment of a remote or virtual repository's history, after the `@` of
/// `OWNER/BRANCH/REPOSITORY@...`: an RFC 3339 time with any offset
/// (`2026-12-01T00:00:00Z`, `2026-12-01T01:00:00+01:00`), or a snapshot's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum View {
    /// Unix milliseconds.
    Time(i64),
    Snapshot(SnapshotName),
}

impl View {
    /// A time when the text has a `:` (which no snapshot name has), else a name.
    pub fn parse(s: &str) -> Result<View, AppError> {
        use time::format_description::well_known::Rfc3339;
        if !s.contains(':') {
            return SnapshotName::parse(s).map(View::Snapshot);
        }
        let bad = || {
            AppError::BadRequest(format!(
                "{:?} is neither an RFC 3339 time (such as 2026-12-01T00:00:00Z) nor a \
                 snapshot name",
                truncate(s)
            ))
        };
        let at = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
        i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000))
            .map(View::Time)
            .map_err(|_| bad())
    }
}

/// Unix milliseconds as an RFC 3339 time in UTC (`2026-12-01T00:00:00Z`, with the
/// milliseconds when there are any): the canonical form of a time view.
pub fn rfc3339_ms(at_ms: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
    else {
        return at_ms.to_string();
    };
    let seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let mut text = at.format(&seconds).unwrap_or_default();
    let millis = at_ms.rem_euclid(1000);
    if millis != 0 {
        text.push_str(&format!(".{millis:03}"));
    }
    text.push('Z');
    text
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            View::Time(at_ms) => f.write_str(&rfc3339_ms(*at_ms)),
            View::Snapshot(name) => name.fmt(f),
        }
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
/// The file name of every architecture's apk v3 index (a `v3` repository line).
pub const ADB_INDEX_FILE: &str = "Packages.adb";

/// What a repository serves under an architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RepoFile {
    Index,
    AdbIndex,
    Package(PackageFile),
}

impl RepoFile {
    pub fn parse(s: &str) -> Result<Self, AppError> {
        if s == INDEX_FILE {
            Ok(RepoFile::Index)
        } else if s == ADB_INDEX_FILE {
            Ok(RepoFile::AdbIndex)
        } else {
            PackageFile::parse(s).map(RepoFile::Package)
        }
    }
}

impl fmt::Display for RepoFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoFile::Index => f.write_str(INDEX_FILE),
            RepoFile::AdbIndex => f.write_str(ADB_INDEX_FILE),
            RepoFile::Package(file) => file.fmt(f),
        }
    }
}

/// A file of a repository: `{owner}/{branch}/{repository}/{arch}/{file}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileAddress {
    pub repo: RepoAddress,
    /// `OWNER/BRANCH/REPOSITORY@...`: a moment of the repository's history rather than
    /// what it serves now.
    pub at: Option<View>,
    pub arch: Arch,
    pub file: RepoFile,
}

impl fmt::Display for FileAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(view) => write!(f, "{}@{view}/{}/{}", self.repo, self.arch, self.file),
            None => write!(f, "{}/{}/{}", self.repo, self.arch, self.file),
        }
    }
}

/// The rule of each name above as a JSON Schema pattern (ECMA-262, without look-around)
/// and length bounds, for the OpenAPI document. A name outside them is refused with 400;
/// the reserved words (owners: [`RESERVED_OWNERS`], branches: `keys`) fit them and are
/// refused all the same.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    pub pattern: &'static str,
    pub min_length: usize,
    pub max_length: usize,
    /// The rule in words.
    pub description: &'static str,
}

impl NameRule {
    /// Owners, branches and repositories (and user names, which are owner names): letters,
    /// digits, `.`, `_`, `-`, starting with a letter or digit, no `..`.
    pub const SEGMENT: NameRule = NameRule {
        pattern: r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$",
        min_length: 1,
        max_length: 64,
        description: "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, \
                      without '..'",
    };
    /// An architecture: `noarch`, or a lower-case name such as `x86_64`.
    pub const ARCH: NameRule = NameRule {
        pattern: r"^[a-z][a-z0-9_]*$",
        min_length: 1,
        max_length: 32,
        description: "an architecture such as x86_64, aarch64 or noarch",
    };
    /// A package file, `{name}-{version}.apk`.
    pub const PACKAGE_FILE: NameRule = NameRule {
        pattern: r"^[A-Za-z0-9](?:\.?[A-Za-z0-9+_~-])*\.apk$",
        min_length: 5,
        max_length: 255,
        description: "a package file name, {name}-{version}.apk",
    };
    /// A package name (`crate::apk::names::is_valid_pkgname`).
    pub const PACKAGE_NAME: NameRule = NameRule {
        pattern: r"^[A-Za-z0-9](?:\.?[A-Za-z0-9+_-])*\.?$",
        min_length: 1,
        max_length: 128,
        description: "a package name: letters, digits, '+', '.', '_' or '-', starting with a \
                      letter or digit, without '..'",
    };
    /// A signing key's file name (`crate::apk::sign::check_key_file_name`): a generated
    /// key's `<owner>-<8 hex digits>.rsa.pub`, or the name an imported key was given.
    pub const KEY_NAME: NameRule = NameRule {
        pattern: r"^[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*\.rsa\.pub$",
        min_length: 9,
        max_length: crate::apk::sign::MAX_KEY_NAME_LEN,
        description: "a key file name, NAME.rsa.pub: letters, digits and ._-+@, not \
                      starting with a dot (a generated key's is <owner>-<8 hex digits>.rsa.pub)",
    };
    /// A snapshot's name (`SnapshotName`).
    pub const SNAPSHOT: NameRule = NameRule {
        pattern: r"^[a-z0-9][a-z0-9._-]*$",
        min_length: 1,
        max_length: 64,
        description: "a snapshot name: 1-64 lowercase letters, digits, '.', '_' or '-', \
                      starting with a letter or digit",
    };
    /// A moment of a repository's history (`View`): an RFC 3339 time, or a snapshot's
    /// name.
    pub const VIEW: NameRule = NameRule {
        pattern: r"^(?:[a-z0-9][a-z0-9._-]*|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))$",
        min_length: 1,
        max_length: 64,
        description: "an RFC 3339 time such as 2026-12-01T00:00:00Z (any offset), or a \
                      snapshot's name",
    };
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
    fn views_are_times_with_any_offset_or_snapshot_names() {
        let utc = View::parse("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(utc, View::Time(1_796_083_200_000));
        assert_eq!(View::parse("2026-12-01T01:00:00+01:00").unwrap(), utc);
        assert_eq!(utc.to_string(), "2026-12-01T00:00:00Z");
        assert_eq!(
            View::parse("2026-12-01T00:00:00.250-00:30")
                .unwrap()
                .to_string(),
            "2026-12-01T00:30:00.250Z"
        );
        assert_eq!(
            View::parse("release-1.0").unwrap(),
            View::Snapshot(SnapshotName::parse("release-1.0").unwrap())
        );
        for bad in ["2026-13-01T00:00:00Z", "Release", "-x", "", "a/b", "x:y"] {
            assert!(View::parse(bad).is_err(), "{bad}");
        }
    }

    /// Every string of up to four characters over an alphabet of what names hold and
    /// what they must not, and a few longer ones: the document's pattern and length
    /// bounds accept exactly what the parser accepts (reserved words aside).
    #[test]
    fn the_documented_patterns_are_the_rules_of_the_parsers() {
        fn agrees(rule: NameRule, parses: impl Fn(&str) -> bool, reserved: &[&str]) {
            let pattern = regex::Regex::new(rule.pattern).unwrap();
            let documented = |s: &str| {
                pattern.is_match(s)
                    && (rule.min_length..=rule.max_length).contains(&s.chars().count())
            };
            let alphabet = ['a', 'Z', '7', '.', '_', '-', '+', '~', '/', ' ', '\0', 'é'];
            let mut candidates = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..4 {
                last = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                candidates.extend(last.iter().cloned());
            }
            for suffix in [
                ".apk",
                "-1.0-r0.apk",
                "-0123abcd.rsa.pub",
                "-0123ABCD.rsa.pub",
                ".rsa.pub",
            ] {
                for stem in [
                    "a",
                    "a.",
                    "a..b",
                    "a.b",
                    "-a",
                    "a+b",
                    "acme-corp",
                    "a~1",
                    "o@x.org",
                    ".a",
                ] {
                    candidates.push(format!("{stem}{suffix}"));
                }
            }
            for long in [63, 64, 65, 127, 128, 129, 250, 251, 252] {
                candidates.push("a".repeat(long));
                candidates.push(format!("{}.apk", "a".repeat(long)));
            }
            candidates.push(format!("{}-0123abcd.rsa.pub", "a".repeat(64)));
            for long in [78, 79, 80] {
                candidates.push(format!("{}.rsa.pub", "a".repeat(long)));
            }
            candidates.push(format!("{}-0123abcd.rsa.pub", "a".repeat(65)));
            for s in &candidates {
                if reserved.contains(&s.to_ascii_lowercase().as_str()) {
                    continue;
                }
                assert_eq!(documented(s), parses(s), "{s:?} against {}", rule.pattern);
            }
        }
        agrees(
            NameRule::SEGMENT,
            |s| OwnerName::parse(s).is_ok(),
            RESERVED_OWNERS,
        );
        agrees(
            NameRule::SEGMENT,
            |s| BranchName::parse(s).is_ok(),
            &["keys"],
        );
        agrees(NameRule::SEGMENT, |s| RepoName::parse(s).is_ok(), &[]);
        agrees(NameRule::ARCH, |s| Arch::parse(s).is_ok(), &[]);
        agrees(
            NameRule::PACKAGE_FILE,
            |s| PackageFile::parse(s).is_ok(),
            &[],
        );
        agrees(
            NameRule::PACKAGE_NAME,
            crate::apk::names::is_valid_pkgname,
            &[],
        );
        agrees(NameRule::SNAPSHOT, |s| SnapshotName::parse(s).is_ok(), &[]);
        // Key names: what an import takes (a generated key's name is one of them).
        agrees(
            NameRule::KEY_NAME,
            |s| crate::apk::sign::check_key_file_name(s).is_ok(),
            &[],
        );
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
