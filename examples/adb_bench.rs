//! Benchmark: what a publish and a delete cost the `Packages.adb` of a repository, built
//! in full against updated in place.
//!
//! ```sh
//! cargo run --release --example adb_bench -- --sizes 10000,100000
//! ```
//!
//! For each size, packages like the benchmark's (about 1 KiB `.PKGINFO` each, shared
//! license, arch and dependencies) are indexed, then `--samples` times one package is
//! published and one deleted, each followed by a render signed with a 4096-bit key:
//! in full (`IncrementalAdb::new` and `render`, what every publish cost before) and in
//! place (`insert` or `remove`, then `render`). One 4096-bit RSA signature alone is timed
//! too: both include one. Prints p50 and max in milliseconds, and the file's size.

use std::time::{Duration, Instant};

use alpine_registry::apk::adb::incremental::IncrementalAdb;
use alpine_registry::apk::adb::IndexPackage;
use alpine_registry::apk::sign::{SignatureAlgorithm, SigningKey};

fn package(i: u64) -> IndexPackage {
    let name = format!("package-{i:06}");
    IndexPackage {
        version: format!("1.{}.{}-r{}", i % 7, i % 13, i % 3),
        hashes: (0..20).map(|b| (i >> (b % 8)) as u8 ^ b as u8).collect(),
        description: Some(format!("The {name} package, built for the benchmark")),
        arch: Some("x86_64".into()),
        license: Some("MIT".into()),
        origin: Some(name.clone()),
        maintainer: Some("Bench <bench@example.org>".into()),
        url: Some(format!("https://example.org/{name}")),
        repo_commit: None,
        build_time: Some(1_700_000_000 + i),
        installed_size: Some(4096 + i),
        file_size: Some(1024 + i % 512),
        provider_priority: None,
        depends: vec![
            "so:libc.musl-x86_64.so.1".into(),
            format!("package-{:06}", i / 2),
        ],
        provides: vec![format!("cmd:{name}=1.0-r0")],
        replaces: Vec::new(),
        install_if: Vec::new(),
        name,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:>7.2} ms  max {:>7.2} ms",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<u64> = arg("--sizes")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.parse().expect("--sizes N,N"))
        .collect();
    let samples: usize = arg("--samples").map_or(30, |s| s.parse().expect("--samples N"));
    let key = SigningKey::generate("bench", 4096).expect("key");
    let keys = [&key];
    let rsa: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            key.sign(SignatureAlgorithm::Rsa512, b"message").unwrap();
            t.elapsed()
        })
        .collect();
    println!("one RSA-4096 signature: {}", summary(rsa));
    for &size in &sizes {
        let packages: Vec<IndexPackage> = (0..size).map(package).collect();
        let rows: Vec<(i64, &IndexPackage)> = packages
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i64, p))
            .collect();
        let t = Instant::now();
        let mut adb = IncrementalAdb::new("bench/v3.21/main", rows.clone(), 1).unwrap();
        let file = adb.render(&keys).unwrap();
        let full = t.elapsed();
        println!(
            "{size} packages: Packages.adb {} KiB; full build {:.1} ms",
            file.len() / 1024,
            ms(full)
        );
        let full_samples: Vec<Duration> = (0..samples.min(10))
            .map(|_| {
                let t = Instant::now();
                let mut again = IncrementalAdb::new("bench/v3.21/main", rows.clone(), 1).unwrap();
                std::hint::black_box(again.render(&keys).unwrap());
                t.elapsed()
            })
            .collect();
        println!("  full build and render:  {}", summary(full_samples));
        let extra: Vec<IndexPackage> = (0..samples as u64).map(|i| package(size + i)).collect();
        let mut publish = Vec::new();
        let mut delete = Vec::new();
        for (i, p) in extra.iter().enumerate() {
            let id = (size as usize + i) as i64;
            let t = Instant::now();
            adb.insert(id, p).unwrap();
            std::hint::black_box(adb.render(&keys).unwrap());
            publish.push(t.elapsed());
            let t = Instant::now();
            adb.remove(i as i64 * 7);
            std::hint::black_box(adb.render(&keys).unwrap());
            delete.push(t.elapsed());
        }
        println!("  publish, in place:      {}", summary(publish));
        println!("  delete, in place:       {}", summary(delete));
    }
}
