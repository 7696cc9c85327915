//! Benchmark: RSA index signing through `SigningKey` (OpenSSL) against the `rsa` crate.
//!
//! ```sh
//! cargo run --release --example sign_bench
//! ```
//!
//! For a 4096-bit and a 2048-bit key (generated, or loaded with `--key-4096 PEM` and
//! `--key-2048 PEM`): one RSA256 signature with `SigningKey::sign` and with the `rsa`
//! crate directly, RSA256 then RSA one after the other, and `sign_index` with `[RSA256,
//! RSA]` (the registry's default, the two signatures made in parallel); then 4096-bit key
//! generation with both. Prints min / median / max.
//!
//! Options: `--samples N` signatures per figure (50), `--keygen-runs N` key generations per
//! backend (3), `--message-bytes N` size of the signed message (65536).

use std::time::{Duration, Instant};

use alpine_registry::apk::index::sign_index;
use alpine_registry::apk::sign::{verify, SignatureAlgorithm, SigningKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest, Sha256};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {what:<46} min {:>9.2} ms  median {:>9.2} ms  max {:>9.2} ms  (n={})",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

/// Runs `f` `n` times and returns each run's duration.
fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed()
        })
        .collect()
}

fn bench_key(key: &SigningKey, bits: usize, samples: usize, message: &[u8]) {
    println!("RSA-{bits} key {}", key.key_name());
    let rsa_key = RsaPrivateKey::from_pkcs8_pem(&key.private_pkcs8_pem().expect("encode"))
        .expect("the rsa crate reads the key");
    let rsa_sign = || {
        rsa_key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message))
            .expect("rsa crate signs")
    };

    // Same bytes from both, and they verify.
    let ours = key.sign(SignatureAlgorithm::Rsa256, message).expect("sign");
    assert_eq!(ours, rsa_sign(), "OpenSSL and the rsa crate disagree");
    let public = key.public_key_pem().expect("public key");
    verify(&public, SignatureAlgorithm::Rsa256, message, &ours).expect("verifies");

    report(
        "RSA256, SigningKey::sign (OpenSSL)",
        time(samples, || {
            key.sign(SignatureAlgorithm::Rsa256, message).expect("sign")
        }),
    );
    report("RSA256, rsa crate (Pkcs1v15Sign)", time(samples, rsa_sign));
    report(
        "RSA256 then RSA, SigningKey::sign",
        time(samples, || {
            let a = key.sign(SignatureAlgorithm::Rsa256, message).expect("sign");
            let b = key.sign(SignatureAlgorithm::Rsa, message).expect("sign");
            (a, b)
        }),
    );
    let algorithms = [SignatureAlgorithm::Rsa256, SignatureAlgorithm::Rsa];
    report(
        "sign_index [RSA256, RSA] (parallel)",
        time(samples, || {
            sign_index(message, key, &algorithms).expect("sign_index")
        }),
    );
}

fn load_or_generate(path: Option<&str>, bits: usize) -> SigningKey {
    match path {
        Some(path) => {
            let pem = std::fs::read_to_string(path).expect("read the key file");
            SigningKey::from_pkcs8_pem("bench", &pem).expect("a PKCS#8 or PKCS#1 RSA key")
        }
        None => SigningKey::generate("bench", bits).expect("keygen"),
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (mut samples, mut keygen_runs, mut message_bytes) = (50usize, 3usize, 65536usize);
    let (mut key_4096, mut key_2048) = (None, None);
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--samples" => samples = value.parse().expect("--samples N"),
            "--keygen-runs" => keygen_runs = value.parse().expect("--keygen-runs N"),
            "--message-bytes" => message_bytes = value.parse().expect("--message-bytes N"),
            "--key-4096" => key_4096 = Some(value),
            "--key-2048" => key_2048 = Some(value),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(samples > 0 && keygen_runs > 0, "need at least one run");
    let message: Vec<u8> = (0..message_bytes).map(|i| (i * 31 % 251) as u8).collect();
    println!(
        "{samples} signatures per figure over a {message_bytes}-byte message; {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    for (bits, path) in [(4096, key_4096), (2048, key_2048)] {
        let key = load_or_generate(path.as_deref(), bits);
        bench_key(&key, bits, samples, &message);
    }

    println!("key generation, 4096 bits");
    report(
        "SigningKey::generate (OpenSSL)",
        time(keygen_runs, || {
            SigningKey::generate("bench", 4096).expect("keygen")
        }),
    );
    report(
        "RsaPrivateKey::new (rsa crate)",
        time(keygen_runs, || {
            RsaPrivateKey::new(&mut rand::rngs::OsRng, 4096).expect("keygen")
        }),
    );
}
