//! `.PKGINFO` parsing and validation.
//!
//! The line grammar follows apk-tools: `key = value` split at the first `" = "`, lines
//! starting with `#` and lines without `" = "` ignored, a repeated scalar key overrides
//! the earlier one, `depend`/`provides`/`install_if` accumulate space-separated tokens.
//! Unlike apk, which silently drops what it cannot parse, every value the index would
//! carry is validated here, so a bad package is refused at upload with a reason.

use super::names::{is_valid_arch, is_valid_pkgname};
use super::{version, ApkError, ApkResult};

/// The fields of `.PKGINFO` that the registry uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PkgInfo {
    pub pkgname: String,
    pub pkgver: String,
    pub arch: String,
    pub pkgdesc: Option<String>,
    pub url: Option<String>,
    pub license: Option<String>,
    pub origin: Option<String>,
    pub maintainer: Option<String>,
    pub builddate: Option<u64>,
    /// `Some("")` when the line is present but empty: apk still writes `c:` for it.
    pub commit: Option<String>,
    pub provider_priority: Option<u64>,
    /// Installed size in bytes.
    pub size: u64,
    /// Dependencies, normalised the way `apk index` re-writes them (`D:`).
    pub depends: Vec<String>,
    /// Provided names (`p:`), normalised like `depends`.
    pub provides: Vec<String>,
    /// Install-if conditions (`i:`), normalised like `depends`.
    pub install_if: Vec<String>,
    /// Lowercase hex SHA-256 of the compressed data member, if the package declares it.
    pub datahash: Option<String>,
    pub packager: Option<String>,
    pub replaces: Vec<String>,
    pub replaces_priority: Option<u64>,
    pub triggers: Vec<String>,
}

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

impl PkgInfo {
    /// Parses and validates: pkgname/pkgver/arch present and valid, numbers numeric,
    /// dependencies well-formed, no NUL or control characters, valid UTF-8.
    pub fn parse(text: &[u8]) -> ApkResult<PkgInfo> {
        if text.contains(&0) {
            return Err(malformed(".PKGINFO contains a NUL byte"));
        }
        let text =
            std::str::from_utf8(text).map_err(|_| malformed(".PKGINFO is not valid UTF-8"))?;
        let mut info = PkgInfo::default();
        let (mut name, mut ver, mut arch, mut size) = (None, None, None, None);
        for line in text.split('\n') {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(malformed(format!(
                    ".PKGINFO {key} contains a control character"
                )));
            }
            let owned = || Some(value.to_string());
            match key {
                "pkgname" => name = owned(),
                "pkgver" => ver = owned(),
                "arch" => arch = owned(),
                "size" => size = Some(number(key, value)?),
                "pkgdesc" => info.pkgdesc = owned(),
                "url" => info.url = owned(),
                "license" => info.license = owned(),
                "origin" => info.origin = owned(),
                "maintainer" => info.maintainer = owned(),
                "packager" => info.packager = owned(),
                "commit" => info.commit = owned(),
                "builddate" => info.builddate = Some(number(key, value)?),
                "provider_priority" => info.provider_priority = Some(number(key, value)?),
                "replaces_priority" => info.replaces_priority = Some(number(key, value)?),
                "depend" => push_deps(key, value, &mut info.depends)?,
                "provides" => push_deps(key, value, &mut info.provides)?,
                "install_if" => push_deps(key, value, &mut info.install_if)?,
                "replaces" => push_deps(key, value, &mut info.replaces)?,
                "triggers" => info
                    .triggers
                    .extend(value.split(' ').filter(|t| !t.is_empty()).map(String::from)),
                "datahash" => {
                    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(malformed(
                            ".PKGINFO datahash is not a hex SHA-256 (64 hex digits)",
                        ));
                    }
                    info.datahash = Some(value.to_ascii_lowercase());
                }
                _ => {}
            }
        }
        info.pkgname = name.ok_or_else(|| malformed(".PKGINFO has no pkgname"))?;
        info.pkgver = ver.ok_or_else(|| malformed(".PKGINFO has no pkgver"))?;
        info.arch = arch.ok_or_else(|| malformed(".PKGINFO has no arch"))?;
        // apk reads a missing size as 0; abuild always writes one.
        info.size = size.unwrap_or(0);
        if !is_valid_pkgname(&info.pkgname) {
            return Err(malformed(format!(
                ".PKGINFO pkgname {:?} is not a valid package name \
                 (letters, digits and + . _ -, starting with a letter or digit)",
                info.pkgname
            )));
        }
        if !version::is_valid(&info.pkgver) {
            return Err(malformed(format!(
                ".PKGINFO pkgver {:?} is not a valid apk version",
                info.pkgver
            )));
        }
        if !is_valid_arch(&info.arch) {
            return Err(malformed(format!(
                ".PKGINFO arch {:?} is not a valid architecture",
                info.arch
            )));
        }
        Ok(info)
    }
}

fn number(key: &str, value: &str) -> ApkResult<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(".PKGINFO {key} is not a number")));
    }
    value
        .parse()
        .map_err(|_| malformed(format!(".PKGINFO {key} is too large")))
}

fn push_deps(key: &str, value: &str, out: &mut Vec<String>) -> ApkResult<()> {
    for token in value.split(' ').filter(|t| !t.is_empty()) {
        let dep = normalize_dependency(token).ok_or_else(|| {
            malformed(format!(
                ".PKGINFO {key} entry {token:?} is not a valid dependency"
            ))
        })?;
        out.push(dep);
    }
    Ok(())
}

const LESS: u8 = 1;
const EQUAL: u8 = 2;
const GREATER: u8 = 4;
const FUZZY: u8 = 8;

/// Parses one dependency token `[!]name[@tag][op version]` and writes it back the way
/// `apk index` does: the operator spelled canonically, the repository tag dropped
/// (apk writes index entries without a database, so it has no tag names to print).
fn normalize_dependency(token: &str) -> Option<String> {
    let (conflict, rest) = match token.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let is_op = |c: char| matches!(c, '<' | '>' | '=' | '~');
    let (name, constraint) = match rest.find(is_op) {
        Some(at) => {
            let (name, tail) = rest.split_at(at);
            let op_len = tail.find(|c: char| !is_op(c)).unwrap_or(tail.len());
            let (op, ver) = tail.split_at(op_len);
            let mask = op.chars().fold(0u8, |m, c| {
                m | match c {
                    '<' => LESS,
                    '>' => GREATER,
                    '~' => FUZZY | EQUAL,
                    _ => EQUAL,
                }
            });
            let op = match mask {
                LESS => "<",
                m if m == LESS | EQUAL => "<=",
                m if m == LESS | EQUAL | FUZZY => "<~",
                m if m == EQUAL | FUZZY => "~",
                EQUAL => "=",
                m if m == GREATER | EQUAL => ">=",
                m if m == GREATER | EQUAL | FUZZY => ">~",
                GREATER => ">",
                m if m == LESS | GREATER => "><",
                _ => return None,
            };
            // `><` pins a package checksum rather than a version. Whitespace in it would
            // split the token in the index's space-separated `D:` line.
            let ver_ok = if op == "><" {
                !ver.is_empty() && !ver.chars().any(|c| c.is_whitespace() || c.is_control())
            } else {
                version::is_valid(ver)
            };
            if !ver_ok {
                return None;
            }
            (name, Some((op, ver)))
        }
        None => (rest, None),
    };
    let name = name.split('@').next().unwrap_or_default();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut out = String::with_capacity(token.len());
    if conflict {
        out.push('!');
    }
    out.push_str(name);
    if let Some((op, ver)) = constraint {
        out.push_str(op);
        out.push_str(ver);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "pkgname = foo\npkgver = 1.0-r0\narch = x86_64\nsize = 1\n";

    fn with(extra: &str) -> ApkResult<PkgInfo> {
        PkgInfo::parse(format!("{MINIMAL}{extra}").as_bytes())
    }

    fn message(r: ApkResult<PkgInfo>) -> String {
        match r {
            Err(ApkError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn abuild_pkginfo_is_parsed() {
        let text = "# Generated by abuild 3.12.0-r0\n# using fakeroot version 1.32.1\n\
            # Thu Jan  1 00:00:00 UTC 2024\npkgname = foo\npkgver = 1.2.3-r4\n\
            pkgdesc = A = test\nurl = https://example.org\nbuilddate = 1707660311\n\
            packager = Someone <s@example.org>\nsize = 20480\narch = noarch\n\
            origin = foo-src\ncommit = \nmaintainer = M <m@example.org>\nlicense = MIT\n\
            replaces = bar\nprovider_priority = 10\ndepend = so:libc.musl-x86_64.so.1  /bin/sh\n\
            depend = !conflicting\nprovides = cmd:foo=1.2.3-r4\ninstall_if = a b=1\n\
            triggers = /usr/share/foo\ndatahash = ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n\
            no separator line\n";
        let info = PkgInfo::parse(text.as_bytes()).expect("parses");
        assert_eq!(info.pkgname, "foo");
        assert_eq!(info.pkgver, "1.2.3-r4");
        assert_eq!(info.pkgdesc.as_deref(), Some("A = test"));
        assert_eq!(info.arch, "noarch");
        assert_eq!(info.size, 20480);
        assert_eq!(info.builddate, Some(1707660311));
        assert_eq!(info.commit.as_deref(), Some(""));
        assert_eq!(info.provider_priority, Some(10));
        assert_eq!(
            info.depends,
            ["so:libc.musl-x86_64.so.1", "/bin/sh", "!conflicting"]
        );
        assert_eq!(info.provides, ["cmd:foo=1.2.3-r4"]);
        assert_eq!(info.install_if, ["a", "b=1"]);
        assert_eq!(info.replaces, ["bar"]);
        assert_eq!(info.triggers, ["/usr/share/foo"]);
        assert_eq!(
            info.datahash.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
    }

    #[test]
    fn later_scalar_lines_override_earlier_ones_like_apk() {
        let info = with("pkgdesc = one\npkgdesc = two\n").expect("parses");
        assert_eq!(info.pkgdesc.as_deref(), Some("two"));
    }

    #[test]
    fn dependencies_are_normalised_like_apk_index() {
        let info = with("depend = a=>1.0 b=~2 c<=3 d>4 e@testing f@t>=1 g><Q1abc= h<~2 i>~3\n")
            .expect("parses");
        assert_eq!(
            info.depends,
            [
                "a>=1.0",
                "b~2",
                "c<=3",
                "d>4",
                "e",
                "f>=1",
                "g><Q1abc=",
                "h<~2",
                "i>~3"
            ]
        );
    }

    #[test]
    fn missing_pkgname_is_rejected() {
        let m = message(PkgInfo::parse(
            b"pkgver = 1.0-r0\narch = x86_64\nsize = 1\n",
        ));
        assert_eq!(m, ".PKGINFO has no pkgname");
    }

    #[test]
    fn missing_pkgver_is_rejected() {
        let m = message(PkgInfo::parse(b"pkgname = a\narch = x86_64\nsize = 1\n"));
        assert_eq!(m, ".PKGINFO has no pkgver");
    }

    #[test]
    fn missing_arch_is_rejected() {
        let m = message(PkgInfo::parse(b"pkgname = a\npkgver = 1.0-r0\nsize = 1\n"));
        assert_eq!(m, ".PKGINFO has no arch");
    }

    #[test]
    fn path_traversal_in_pkgname_is_rejected() {
        for name in ["../../etc/passwd", "a/b", "a..b", ".hidden", "a b"] {
            let text = MINIMAL.replace("pkgname = foo", &format!("pkgname = {name}"));
            assert!(message(PkgInfo::parse(text.as_bytes())).contains("pkgname"));
        }
    }

    #[test]
    fn nul_in_pkgname_is_rejected() {
        let text = MINIMAL.replace("pkgname = foo", "pkgname = fo\0o");
        assert!(message(PkgInfo::parse(text.as_bytes())).contains("NUL"));
    }

    #[test]
    fn invalid_version_is_rejected() {
        for v in ["1.0-1", "latest", "1.0/../2", ""] {
            let text = MINIMAL.replace("pkgver = 1.0-r0", &format!("pkgver = {v}"));
            assert!(message(PkgInfo::parse(text.as_bytes())).contains("pkgver"));
        }
    }

    #[test]
    fn path_traversal_in_arch_is_rejected() {
        let text = MINIMAL.replace("arch = x86_64", "arch = ../x86_64");
        assert!(message(PkgInfo::parse(text.as_bytes())).contains("arch"));
    }

    #[test]
    fn non_numeric_numbers_are_rejected() {
        for line in [
            "size = 12abc\n",
            "size = -1\n",
            "builddate = soon\n",
            "provider_priority = \n",
            "size = 99999999999999999999999\n",
        ] {
            let text = format!("pkgname = foo\npkgver = 1.0-r0\narch = x86\n{line}");
            let _ = message(PkgInfo::parse(text.as_bytes()));
        }
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_rejected() {
        assert!(message(with("pkgdesc = a\rb\n")).contains("control"));
        assert!(message(PkgInfo::parse(b"pkgname = \xff\n")).contains("UTF-8"));
    }

    #[test]
    fn invalid_dependencies_are_rejected() {
        for dep in ["a>=notaversion", "=1.0", "!", "a<>=1", "a>=", "@tag"] {
            assert!(
                message(with(&format!("depend = {dep}\n"))).contains("depend"),
                "{dep}"
            );
        }
    }

    #[test]
    fn tab_in_checksum_dependency_is_rejected() {
        // Found by fuzzing: the tab survived into the index's `D:` line.
        for dep in ["g><\turlc=", "g><Q1\tabc=", "g><Q1abc=\t"] {
            assert!(
                message(with(&format!("depend = {dep}\n"))).contains("depend"),
                "{dep:?}"
            );
        }
        for field in ["provides", "install_if", "replaces"] {
            assert!(message(with(&format!("{field} = a><Q1\tx\n"))).contains(field));
        }
    }

    #[test]
    fn malformed_datahash_is_rejected() {
        assert!(message(with("datahash = abc\n")).contains("datahash"));
    }
}
