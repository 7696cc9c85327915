//! apk versions: `is_valid` and `compare` never panic; on valid versions `compare` is
//! reflexive, antisymmetric and transitive.
#![no_main]

use alpine_registry::apk::version::{compare, is_valid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Up to three versions, one per line.
    let parts: Vec<&str> = text.splitn(3, '\n').collect();
    let valid: Vec<&str> = parts.iter().copied().filter(|v| is_valid(v)).collect();
    for a in &parts {
        for b in &parts {
            // Any input, valid or not, must be comparable without a panic.
            let _ = compare(a, b);
        }
    }
    for a in &valid {
        assert_eq!(compare(a, a), std::cmp::Ordering::Equal, "reflexive: {a:?}");
        for b in &valid {
            assert_eq!(
                compare(a, b),
                compare(b, a).reverse(),
                "antisymmetric: {a:?} vs {b:?}"
            );
            for c in &valid {
                if compare(a, b).is_le() && compare(b, c).is_le() {
                    assert!(compare(a, c).is_le(), "transitive: {a:?} <= {b:?} <= {c:?}");
                }
            }
        }
    }
});
