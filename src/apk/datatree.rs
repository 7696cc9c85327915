//! The entries of a data member checked against each other, in archive order, the way
//! apk-tools will install them: no entry outside the package root or below an earlier
//! symbolic link (apk would write through it), hard links only to earlier regular files
//! of the package, no name twice, and no control file name at the top (apk-tools before
//! 2.12 reads a `.PKGINFO` and runs install scripts found there, after the registry has
//! read the control member).

use super::tarwalk::{Entry, DIRECTORY, HARD_LINK, SYMLINK};
use super::{ApkError, ApkResult};
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Entries of one data member the registry keeps track of. The largest real packages
/// have tens of thousands; this bounds the memory (a table of about 20 MB) and the time
/// a hostile one can take.
pub(crate) const MAX_ENTRIES: usize = 500_000;

/// Install scripts apk-tools knows (`apk_script_types`), with their leading dot.
const SCRIPTS: &[&str] = &[
    ".pre-install",
    ".post-install",
    ".pre-upgrade",
    ".post-upgrade",
    ".pre-deinstall",
    ".post-deinstall",
    ".trigger",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Symlink,
    Other,
}

/// A path as the tree remembers it: a 128-bit keyed hash of its normalised form. Its
/// size does not depend on the name's, and the keys are random per tree, so two names
/// cannot be made to collide on purpose (a chance collision is as likely as guessing a
/// 128-bit key, and would only refuse a valid package).
type Key = [u8; 16];

fn malformed(msg: impl Into<String>) -> ApkError {
    ApkError::Malformed(msg.into())
}

/// The components of a path as a file system resolves them: empty and `.` components
/// dropped, so `./usr//bin/x/` is `usr/bin/x`.
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

fn has_dotdot(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|c| c == b"..")
}

/// What a control file of this name is, if the path is one at the top of the tree.
fn control_file(path: &[u8]) -> Option<&'static str> {
    let mut parts = components(path);
    let (Some(name), None) = (parts.next(), parts.next()) else {
        return None;
    };
    match name {
        b".PKGINFO" => Some("the package metadata"),
        b".INSTALL" => Some("an old-style install script"),
        _ if name.starts_with(b".SIGN.") => Some("a signature"),
        _ if SCRIPTS.iter().any(|s| s.as_bytes() == name) => Some("an install script"),
        _ => None,
    }
}

/// Two independently keyed hashers, random per tree.
struct Seeds([RandomState; 2]);

impl Seeds {
    /// The key of `path`, normalised; with `ancestors`, also the keys of its proper
    /// ancestors below the root, outermost first. One pass: each prefix's key is the
    /// state of the same hashers part way, as if that prefix had been hashed on its own.
    fn key(&self, path: &[u8], mut ancestors: Option<&mut Vec<Key>>) -> Key {
        let mut h: [DefaultHasher; 2] = [self.0[0].build_hasher(), self.0[1].build_hasher()];
        let finish = |h: &[DefaultHasher; 2]| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&h[0].finish().to_le_bytes());
            key[8..].copy_from_slice(&h[1].finish().to_le_bytes());
            key
        };
        for (i, component) in components(path).enumerate() {
            if i > 0 {
                if let Some(a) = ancestors.as_deref_mut() {
                    a.push(finish(&h));
                }
            }
            for h in &mut h {
                if i > 0 {
                    h.write(b"/");
                }
                h.write(component);
            }
        }
        finish(&h)
    }
}

/// The data member's entries so far.
pub(crate) struct DataTree {
    seeds: Seeds,
    seen: HashMap<Key, Kind>,
    symlinks: usize,
    max_entries: usize,
    /// Scratch space for an entry's ancestors.
    ancestors: Vec<Key>,
}

impl DataTree {
    pub fn new(max_entries: usize) -> Self {
        DataTree {
            seeds: Seeds([RandomState::new(), RandomState::new()]),
            seen: HashMap::new(),
            symlinks: 0,
            max_entries,
            ancestors: Vec::new(),
        }
    }

    /// Checks one entry against the ones before it, then records it.
    pub fn add(&mut self, entry: &Entry) -> ApkResult<()> {
        let shown = entry.display_path();
        let path = &entry.path;
        if path.first() == Some(&b'/') || path.contains(&0) || has_dotdot(path) {
            return Err(malformed(format!(
                "data member entry {shown:?} leaves the package root"
            )));
        }
        if components(path).next().is_none() && entry.typeflag != DIRECTORY {
            return Err(malformed(format!(
                "data member entry {shown:?} names the package root but is not a directory"
            )));
        }
        if let Some(what) = control_file(path) {
            return Err(malformed(format!(
                "data member entry {shown:?} has the name of a control file ({what}); \
                 control files belong in the control member (apk-tools before 2.12 reads \
                 .PKGINFO and runs install scripts found at the top of the data member)"
            )));
        }
        if let Some(target) = &entry.link {
            let target_shown = String::from_utf8_lossy(target);
            if target.contains(&0) {
                return Err(malformed(format!(
                    "data member entry {shown:?} has a link target with a NUL byte \
                     ({target_shown:?}); apk would cut it there"
                )));
            }
            // An absolute target or one with `..` never names a file of the package.
            let earlier_file = target.first() != Some(&b'/')
                && !has_dotdot(target)
                && self.seen.get(&self.seeds.key(target, None)) == Some(&Kind::Regular);
            if entry.typeflag == HARD_LINK && !earlier_file {
                return Err(malformed(format!(
                    "data member entry {shown:?} is a hard link to {target_shown:?}, which \
                     is not an earlier regular file of the package"
                )));
            }
        }
        self.ancestors.clear();
        // Ancestors only matter once there is a symbolic link.
        let ancestors = (self.symlinks > 0).then_some(&mut self.ancestors);
        let key = self.seeds.key(path, ancestors);
        if let Some(depth) = self
            .ancestors
            .iter()
            .position(|a| self.seen.get(a) == Some(&Kind::Symlink))
        {
            let link: Vec<&[u8]> = components(path).take(depth + 1).collect();
            return Err(malformed(format!(
                "data member entry {shown:?} lies below the symbolic link {:?} earlier in \
                 the package; apk would write through the link",
                String::from_utf8_lossy(&link.join(&b'/'))
            )));
        }
        if self.seen.contains_key(&key) {
            return Err(malformed(format!(
                "data member entry {shown:?} is a duplicate of an earlier entry"
            )));
        }
        if self.seen.len() >= self.max_entries {
            return Err(malformed(format!(
                "the data member has more than {} entries",
                self.max_entries
            )));
        }
        let kind = match entry.typeflag {
            _ if entry.is_regular() => Kind::Regular,
            SYMLINK => Kind::Symlink,
            _ => Kind::Other,
        };
        if kind == Kind::Symlink {
            self.symlinks += 1;
        }
        self.seen.insert(key, kind);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apk::tarwalk::REGULAR;

    fn entry(path: &str, typeflag: u8, link: Option<&str>) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            typeflag,
            size: 0,
            link: link.map(|l| l.as_bytes().to_vec()),
        }
    }

    fn message(r: ApkResult<()>) -> String {
        match r {
            Err(ApkError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn prefix_keys_equal_the_keys_of_the_prefixes() {
        let tree = DataTree::new(10).seeds;
        let mut ancestors = Vec::new();
        let key = tree.key(b"./usr//lib/./x/", Some(&mut ancestors));
        assert_eq!(key, tree.key(b"usr/lib/x", None));
        assert_eq!(
            ancestors,
            [tree.key(b"usr", None), tree.key(b"usr/lib/", None)]
        );
        assert_ne!(tree.key(b"usr/lib", None), tree.key(b"usrlib", None));
        assert_ne!(tree.key(b"a/bc", None), tree.key(b"ab/c", None));
    }

    #[test]
    fn more_entries_than_the_limit_are_rejected() {
        let mut tree = DataTree::new(3);
        for name in ["a/", "a/b", "a/c"] {
            tree.add(&entry(name, REGULAR, None)).expect(name);
        }
        let m = message(tree.add(&entry("a/d", REGULAR, None)));
        assert!(m.contains("more than 3 entries"), "{m}");
    }

    #[test]
    fn file_or_link_naming_the_root_is_rejected() {
        for (path, typeflag) in [(".", SYMLINK), ("./", REGULAR), ("", SYMLINK)] {
            let mut tree = DataTree::new(10);
            let m = message(tree.add(&entry(path, typeflag, Some("/etc"))));
            assert!(m.contains("package root"), "{m}");
        }
        let mut tree = DataTree::new(10);
        tree.add(&entry("./", DIRECTORY, None))
            .expect("root directory");
    }

    #[test]
    fn symlink_below_a_symlink_is_rejected_too() {
        let mut tree = DataTree::new(10);
        tree.add(&entry("usr", SYMLINK, Some("/"))).expect("link");
        let m = message(tree.add(&entry("usr/etc", SYMLINK, Some("/etc"))));
        assert!(m.contains("symbolic link \"usr\""), "{m}");
    }
}
