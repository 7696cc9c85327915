//! The apk version grammar and ordering.

use std::cmp::Ordering;

/// Whether `v` is a valid apk version.
pub fn is_valid(v: &str) -> bool {
    let _ = v;
    todo!()
}

/// apk's version ordering (`apk version -t`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let _ = (a, b);
    todo!()
}
