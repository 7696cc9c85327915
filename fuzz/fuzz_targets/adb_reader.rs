//! `Packages.adb` bytes: the reader never panics, never inflates past its limit, and an
//! index it reads is written and read back the same.
#![no_main]

use alpine_registry::apk::adb;
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = adb::read_file(data, LIMIT) else {
        return;
    };
    assert!(file.adb.len() as u64 <= LIMIT);
    let Ok(index) = file.index() else {
        return;
    };
    // Dependencies the reader rendered must parse again, unless apk's own writer would
    // refuse them too (the reader takes what another writer put there).
    if let Ok(block) = adb::write_index_block(
        index.description.as_deref().unwrap_or(""),
        &index.packages,
    ) {
        let again = adb::read_file(&adb::signed_file(adb::SCHEMA_INDEX, &block, &[]).unwrap(), LIMIT)
            .expect("own output reads")
            .index()
            .expect("own output is an index");
        assert_eq!(again.packages.len(), index.packages.len());
    }
});
