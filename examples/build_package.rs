//! Builds a small valid `.apk` (v2) for trying the registry without abuild:
//!
//! ```sh
//! cargo run --example build_package -- hello 1.0-r0 x86_64 hello-1.0-r0.apk [KEY=VALUE ...]
//! ```
//!
//! Extra `KEY=VALUE` arguments become `.PKGINFO` lines (e.g. `depend=musl`).

use alpine_registry::apk::builder::PackageBuilder;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: build_package NAME VERSION ARCH OUTPUT [KEY=VALUE ...]");
        return std::process::ExitCode::from(2);
    }
    let (name, version, arch, output) = (&args[0], &args[1], &args[2], &args[3]);
    let mut builder = PackageBuilder::new(name, version, arch).file(
        &format!("usr/share/doc/{name}/README"),
        format!("{name} {version}\n").as_bytes(),
    );
    for extra in &args[4..] {
        let Some((key, value)) = extra.split_once('=') else {
            eprintln!("expected KEY=VALUE, got {extra:?}");
            return std::process::ExitCode::from(2);
        };
        builder = builder.field(key, value);
    }
    if let Err(e) = std::fs::write(output, builder.build()) {
        eprintln!("writing {output}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
