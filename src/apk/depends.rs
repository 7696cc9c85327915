//! Dependency atoms as an index's `D:` and `p:` lines carry them (`name`, `so:libfoo.so.1`,
//! `cmd:foo`, `pc:foo`, each optionally with an operator and a version, `!name` a
//! conflict), and whether a provided name and version satisfies one, as apk decides it.
//!
//! The atoms read here were normalised by [`PkgInfo`](super::pkginfo::PkgInfo) at upload
//! (or written by `apk index`): operators are spelled `< <= <~ ~ = >= >~ > ><` and no
//! repository tag is left.

use std::cmp::Ordering;

use super::version;

/// One atom of a `D:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependency<'a> {
    /// `!name`: the package must not be installed; not a dependency.
    pub conflict: bool,
    pub name: &'a str,
    /// The operator and the version it compares with; None for any version.
    pub constraint: Option<(Operator, &'a str)>,
}

/// A version operator, as the set of comparison results it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator {
    less: bool,
    equal: bool,
    greater: bool,
    /// A version matching the constraint's as a prefix counts as equal (`~`).
    fuzzy: bool,
}

impl Operator {
    fn parse(op: &str) -> Option<Operator> {
        let mut out = Operator {
            less: false,
            equal: false,
            greater: false,
            fuzzy: false,
        };
        for c in op.chars() {
            match c {
                '<' => out.less = true,
                '>' => out.greater = true,
                '=' => out.equal = true,
                '~' => {
                    out.fuzzy = true;
                    out.equal = true;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// `><`: a package checksum, not a version.
    pub fn is_checksum(&self) -> bool {
        self.less && self.greater && !self.equal
    }
}

impl<'a> Dependency<'a> {
    /// Reads one atom; None for an empty one or an operator apk does not know.
    pub fn parse(atom: &'a str) -> Option<Dependency<'a>> {
        let (conflict, rest) = match atom.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, atom),
        };
        let is_op = |c: char| matches!(c, '<' | '>' | '=' | '~');
        let (name, constraint) = match rest.find(is_op) {
            Some(at) => {
                let (name, tail) = rest.split_at(at);
                let op_len = tail.find(|c: char| !is_op(c)).unwrap_or(tail.len());
                let (op, ver) = tail.split_at(op_len);
                (name, Some((Operator::parse(op)?, ver)))
            }
            None => (rest, None),
        };
        let name = name.split('@').next().unwrap_or_default();
        (!name.is_empty()).then_some(Dependency {
            conflict,
            name,
            constraint,
        })
    }

    /// Whether a package or provided name at `version` satisfies this dependency (of the
    /// same name). A name provided without a version (`p:cmd:foo`) satisfies only a
    /// dependency on any version, as in apk. A checksum pin (`><`) is taken as satisfied
    /// by any version: an index entry's checksum is not what is compared here.
    pub fn allows(&self, version: Option<&str>) -> bool {
        let Some((op, wanted)) = self.constraint else {
            return true;
        };
        if op.is_checksum() {
            return true;
        }
        let Some(version) = version else {
            return false;
        };
        let order = if op.fuzzy {
            version::compare_prefix(version, wanted)
        } else {
            version::compare(version, wanted)
        };
        match order {
            Ordering::Less => op.less,
            Ordering::Equal => op.equal,
            Ordering::Greater => op.greater,
        }
    }
}

/// A provided name and its version, from one atom of a `p:` line (`so:libfoo.so.1=1.2`
/// or `cmd:foo`).
pub fn provided(atom: &str) -> (&str, Option<&str>) {
    match atom.split_once('=') {
        Some((name, version)) => (name, Some(version)),
        None => (atom, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(atom: &str, version: Option<&str>) -> bool {
        Dependency::parse(atom).expect("parses").allows(version)
    }

    #[test]
    fn atoms_are_read_with_their_operator_and_version() {
        let dep = Dependency::parse("so:libfoo.so.1").unwrap();
        assert_eq!(
            (dep.name, dep.conflict, dep.constraint),
            ("so:libfoo.so.1", false, None)
        );
        let dep = Dependency::parse("!bar>=2").unwrap();
        assert!(dep.conflict);
        assert_eq!(dep.name, "bar");
        assert_eq!(dep.constraint.unwrap().1, "2");
        assert_eq!(Dependency::parse("pc:zlib@edge").unwrap().name, "pc:zlib");
        assert!(Dependency::parse("").is_none());
        assert!(Dependency::parse(">=1").is_none());
    }

    #[test]
    fn versions_satisfy_constraints_as_apk_compares_them() {
        assert!(allows("foo", Some("1.0-r0")));
        assert!(allows("foo", None));
        assert!(!allows("foo>=2", Some("1.0-r0")));
        assert!(allows("foo>=2", Some("2.0-r0")));
        assert!(allows("foo>=2", Some("10.1")));
        assert!(allows("foo<2", Some("1.9.9")));
        assert!(!allows("foo<2", Some("2.0")));
        assert!(allows("foo=1.0-r0", Some("1.0-r0")));
        assert!(!allows("foo=1.0-r0", Some("1.0-r1")));
        assert!(allows("foo~1.2", Some("1.2.7-r3")));
        assert!(!allows("foo~1.2", Some("1.3")));
        assert!(allows("foo>~1.2", Some("1.3")));
        assert!(allows("foo<~1.2", Some("1.2.9")));
        assert!(!allows("foo<~1.2", Some("1.3")));
        // A name provided without a version satisfies only an unversioned dependency.
        assert!(!allows("cmd:foo>=1", None));
        assert!(allows("foo><Q1abc=", Some("1")));
    }

    #[test]
    fn provided_atoms_split_at_their_version() {
        assert_eq!(
            provided("so:libfoo.so.1=1.2"),
            ("so:libfoo.so.1", Some("1.2"))
        );
        assert_eq!(provided("cmd:foo"), ("cmd:foo", None));
    }
}
