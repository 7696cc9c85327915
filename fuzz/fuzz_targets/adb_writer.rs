//! The `Packages.adb` writer on any field values: it never panics, and what it writes
//! reads back with every value it was given (dependency lists sorted).
#![no_main]

use alpine_registry::apk::adb::{self, IndexPackage};
use libfuzzer_sys::fuzz_target;

/// Field values from NUL-separated chunks of the input.
fn packages(data: &[u8]) -> Vec<IndexPackage> {
    let text = String::from_utf8_lossy(data);
    let mut chunks = text.split('\0');
    let mut next = || chunks.next().map(str::to_string);
    let mut out = Vec::new();
    while let Some(name) = next() {
        let number = |s: Option<String>| s.and_then(|s| s.parse::<u64>().ok());
        let list = |s: Option<String>| -> Vec<String> {
            s.map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let text = |s: Option<String>| s.filter(|s| !s.is_empty());
        out.push(IndexPackage {
            name,
            version: next().unwrap_or_default(),
            hashes: next().unwrap_or_default().into_bytes(),
            description: text(next()),
            arch: text(next()),
            license: text(next()),
            origin: text(next()),
            maintainer: text(next()),
            url: text(next()),
            repo_commit: None,
            build_time: number(next()),
            installed_size: number(next()),
            file_size: number(next()),
            provider_priority: number(next()),
            depends: list(next()),
            provides: list(next()),
            replaces: Vec::new(),
            install_if: list(next()),
        });
        if out.len() >= 64 {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let input = packages(data);
    let Ok(block) = adb::write_index_block("fuzz", &input) else {
        return;
    };
    let file = adb::signed_file(adb::SCHEMA_INDEX, &block, &[]).unwrap();
    let index = adb::read_file(&file, 64 << 20)
        .expect("own output reads")
        .index();
    // A package without a name or version cannot be read back as one: apk refuses those.
    if input.iter().any(|p| p.name.is_empty() || p.version.is_empty()) {
        return;
    }
    // Packages read back are matched to those given by name, version and hashes: two given
    // alike could not be told apart.
    let mut keys: Vec<_> = input.iter().map(|p| (&p.name, &p.version, &p.hashes)).collect();
    keys.sort();
    keys.dedup();
    if keys.len() != input.len() {
        return;
    }
    let index = index.expect("own output is an index");
    assert_eq!(index.description.as_deref(), Some("fuzz"));
    assert_eq!(index.packages.len(), input.len());
    for p in &index.packages {
        let given = input
            .iter()
            .find(|q| q.name == p.name && q.version == p.version && q.hashes == p.hashes)
            .expect("every package read back was given");
        assert_eq!(p.description, given.description);
        assert_eq!(p.url, given.url);
        assert_eq!(p.build_time, given.build_time);
        assert_eq!(p.installed_size, given.installed_size);
        assert_eq!(p.file_size, given.file_size);
        assert!(p.depends.len() <= given.depends.len());
    }
});
