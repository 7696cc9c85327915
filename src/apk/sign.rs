//! RSA signing keys, their apk key names, and signature members.
//!
//! apk verifies a `.SIGN.<ALG>.<keyname>` entry with the public key stored as
//! `/etc/apk/keys/<keyname>`, so the key name is part of the format: it is derived from
//! the public key itself and recomputed whenever a key is loaded.
//!
//! Signatures and key generation go through OpenSSL (several times faster than the `rsa`
//! crate for 4096-bit keys, and on the publish path); the `rsa` crate parses and encodes
//! keys, names them and verifies. PKCS#1 v1.5 is deterministic, so both give the same
//! signature bytes.

use super::{ApkError, ApkResult};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// The signature types apk knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// `RSA`: PKCS#1 v1.5 over SHA-1 (abuild's default, Alpine's own repositories).
    Rsa,
    /// `RSA256`: PKCS#1 v1.5 over SHA-256.
    Rsa256,
    /// `RSA512`: PKCS#1 v1.5 over SHA-512.
    Rsa512,
}

impl SignatureAlgorithm {
    /// The name used in `.SIGN.<ALG>.<keyname>`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::Rsa => "RSA",
            SignatureAlgorithm::Rsa256 => "RSA256",
            SignatureAlgorithm::Rsa512 => "RSA512",
        }
    }

    fn scheme_and_digest(self, message: &[u8]) -> (Pkcs1v15Sign, Vec<u8>) {
        match self {
            SignatureAlgorithm::Rsa => {
                (Pkcs1v15Sign::new::<Sha1>(), Sha1::digest(message).to_vec())
            }
            SignatureAlgorithm::Rsa256 => (
                Pkcs1v15Sign::new::<Sha256>(),
                Sha256::digest(message).to_vec(),
            ),
            SignatureAlgorithm::Rsa512 => (
                Pkcs1v15Sign::new::<Sha512>(),
                Sha512::digest(message).to_vec(),
            ),
        }
    }

    fn message_digest(self) -> MessageDigest {
        match self {
            SignatureAlgorithm::Rsa => MessageDigest::sha1(),
            SignatureAlgorithm::Rsa256 => MessageDigest::sha256(),
            SignatureAlgorithm::Rsa512 => MessageDigest::sha512(),
        }
    }
}

impl std::fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SignatureAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "RSA" => Ok(SignatureAlgorithm::Rsa),
            "RSA256" => Ok(SignatureAlgorithm::Rsa256),
            "RSA512" => Ok(SignatureAlgorithm::Rsa512),
            _ => Err(format!(
                "unknown signature algorithm {s:?} (expected RSA, RSA256 or RSA512)"
            )),
        }
    }
}

/// Longest owner accepted in a key name; `.SIGN.RSA512.<owner>-xxxxxxxx.rsa.pub` must fit
/// the 100-byte ustar name field.
const MAX_OWNER_LEN: usize = 64;

/// A private RSA key with its apk key name. `Debug` shows only the name.
///
/// The key is held twice: as an `rsa` key (encoding, naming) and as an OpenSSL key
/// (signing), both built once when the key is generated or loaded. Cloning shares the
/// OpenSSL key (reference counted).
#[derive(Clone)]
pub struct SigningKey {
    key: RsaPrivateKey,
    pkey: PKey<Private>,
    name: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn signing(msg: impl std::fmt::Display) -> ApkError {
    ApkError::Signing(msg.to_string())
}

/// Longest key file name: `.SIGN.RSA512.<name>` must fit the 100-byte ustar name field.
pub const MAX_KEY_NAME_LEN: usize = 100 - ".SIGN.RSA512.".len();

/// Checks a key file name given from outside (an imported key keeps the name its clients
/// have in `/etc/apk/keys`): abuild's `<name>.rsa.pub`, of letters, digits and `._-+@`,
/// not starting with a dot, at most [`MAX_KEY_NAME_LEN`] bytes.
pub fn check_key_file_name(name: &str) -> ApkResult<()> {
    let stem = name.strip_suffix(".rsa.pub").unwrap_or_default();
    let valid = !stem.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'));
    if valid {
        Ok(())
    } else {
        Err(ApkError::Malformed(format!(
            "key name {name:?} is not a key file name: it must end in .rsa.pub, hold only \
             letters, digits and ._-+@, not start with a dot, and be at most \
             {MAX_KEY_NAME_LEN} characters"
        )))
    }
}

/// `<owner>-<first 8 hex digits of SHA-256(SPKI DER)>.rsa.pub`.
fn key_name(owner: &str, public: &RsaPublicKey) -> ApkResult<String> {
    let valid_owner = !owner.is_empty()
        && owner.len() <= MAX_OWNER_LEN
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
        && !owner.starts_with('.');
    if !valid_owner {
        return Err(signing(format!(
            "key owner {owner:?} cannot be used in a key file name"
        )));
    }
    let der = public.to_public_key_der().map_err(signing)?;
    let digest = Sha256::digest(der.as_bytes());
    Ok(format!("{owner}-{}.rsa.pub", hex::encode(&digest[..4])))
}

/// The OpenSSL form of a key, from its PKCS#8 DER encoding.
fn openssl_key(key: &RsaPrivateKey) -> ApkResult<PKey<Private>> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| signing(format!("encoding the private key: {e}")))?;
    PKey::private_key_from_pkcs8(der.as_bytes())
        .map_err(|e| signing(format!("loading the private key into OpenSSL: {e}")))
}

impl SigningKey {
    /// Generates a new key of `bits` bits (public exponent 65537) with OpenSSL's random
    /// number generator.
    pub fn generate(owner: &str, bits: usize) -> ApkResult<SigningKey> {
        let bits = u32::try_from(bits)
            .map_err(|_| signing(format!("cannot generate a {bits}-bit RSA key")))?;
        let rsa = Rsa::generate(bits)
            .map_err(|e| signing(format!("generating a {bits}-bit RSA key: {e}")))?;
        let der = Zeroizing::new(
            rsa.private_key_to_der()
                .map_err(|e| signing(format!("encoding the generated key: {e}")))?,
        );
        let key = RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| signing(format!("reading the generated key: {e}")))?;
        let pkey = PKey::from_rsa(rsa).map_err(signing)?;
        let name = key_name(owner, &key.to_public_key())?;
        Ok(SigningKey { key, pkey, name })
    }

    /// Loads a PKCS#8 PEM private key (PKCS#1 `BEGIN RSA PRIVATE KEY`, as older
    /// `abuild-keygen` writes, is accepted too) and recomputes its key name.
    pub fn from_pkcs8_pem(owner: &str, pem: &str) -> ApkResult<SigningKey> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| signing("not an RSA private key in PKCS#8 or PKCS#1 PEM form"))?;
        key.validate().map_err(signing)?;
        let name = key_name(owner, &key.to_public_key())?;
        let pkey = openssl_key(&key)?;
        Ok(SigningKey { key, pkey, name })
    }

    /// Loads a private key as `from_pkcs8_pem` does, under the file name `name` (a stored
    /// key keeps the name it was stored with, an imported one the name its clients know).
    pub fn from_pem_named(name: &str, pem: &str) -> ApkResult<SigningKey> {
        check_key_file_name(name)?;
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| signing("not an RSA private key in PKCS#8 or PKCS#1 PEM form"))?;
        key.validate().map_err(signing)?;
        let pkey = openssl_key(&key)?;
        Ok(SigningKey {
            key,
            pkey,
            name: name.to_string(),
        })
    }

    /// The same key under the file name `name`.
    pub fn renamed(mut self, name: &str) -> ApkResult<SigningKey> {
        check_key_file_name(name)?;
        self.name = name.to_string();
        Ok(self)
    }

    /// The size of the key's modulus in bits.
    pub fn bits(&self) -> usize {
        use rsa::traits::PublicKeyParts;
        self.key.n().bits()
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn private_pkcs8_pem(&self) -> ApkResult<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| ApkError::Signing(format!("encoding the private key: {e}")))
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the form apk reads
    /// from `/etc/apk/keys`.
    pub fn public_key_pem(&self) -> ApkResult<String> {
        self.key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| ApkError::Signing(format!("encoding the public key: {e}")))
    }

    /// The key file name, e.g. `acme-1a2b3c4d.rsa.pub`.
    pub fn key_name(&self) -> &str {
        &self.name
    }

    /// RSA PKCS#1 v1.5 signature over the algorithm's digest of `message`.
    pub fn sign(&self, alg: SignatureAlgorithm, message: &[u8]) -> ApkResult<Vec<u8>> {
        let fail = |e: openssl::error::ErrorStack| signing(format!("{alg} signature: {e}"));
        let mut signer =
            openssl::sign::Signer::new(alg.message_digest(), &self.pkey).map_err(fail)?;
        signer.set_rsa_padding(Padding::PKCS1).map_err(fail)?;
        signer.update(message).map_err(fail)?;
        signer.sign_to_vec().map_err(fail)
    }
}

/// Verifies an RSA PKCS#1 v1.5 signature with a public key in SPKI (or PKCS#1) PEM form.
pub fn verify(
    public_key_pem: &str,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> ApkResult<()> {
    let public = RsaPublicKey::from_public_key_pem(public_key_pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(public_key_pem))
        .map_err(|_| ApkError::Malformed("not an RSA public key in PEM form".into()))?;
    let (scheme, digest) = alg.scheme_and_digest(message);
    public
        .verify(scheme, &digest, signature)
        .map_err(|_| ApkError::Malformed(format!("{alg} signature does not verify")))
}

/// What a public key (PEM, SPKI or PKCS#1) is, for people comparing it: the hex SHA-256
/// of its SPKI DER encoding, and its size in bits.
pub fn public_key_fingerprint(pem: &str) -> ApkResult<(String, usize)> {
    use rsa::traits::PublicKeyParts;
    let key = RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| ApkError::Malformed(format!("public key: {e}")))?;
    let der = key.to_public_key_der().map_err(signing)?;
    Ok((hex::encode(Sha256::digest(der.as_bytes())), key.n().bits()))
}

/// The size in bits of an RSA private key in PEM form (PKCS#8 or PKCS#1), read without
/// checking the key: what an import looks at before it takes the key.
pub fn private_key_bits(pem: &str) -> ApkResult<usize> {
    use rsa::traits::PublicKeyParts;
    let key = RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| ApkError::Malformed("not an RSA private key in PEM form".into()))?;
    Ok(key.n().bits())
}

/// Decompressed size allowed for an index signature member.
const MAX_SIGNATURE_MEMBER: u64 = 1 << 20;

/// Splits a signed index into its signature entries `(entry name, signature bytes)` and
/// the signed remainder (the exact bytes after the signature member).
#[allow(clippy::type_complexity)]
pub fn split_signed(data: &[u8]) -> ApkResult<(Vec<(String, Vec<u8>)>, &[u8])> {
    let (files, member_len) = super::member::read_first_member(data, MAX_SIGNATURE_MEMBER)?;
    if files.is_empty() || !files.iter().all(|f| f.name.starts_with(".SIGN.")) {
        return Err(ApkError::Malformed(
            "the first gzip member is not a signature member".into(),
        ));
    }
    let rest = data
        .get(member_len..)
        .ok_or_else(|| ApkError::Malformed("signature member is truncated".into()))?;
    Ok((files.into_iter().map(|f| (f.name, f.data)).collect(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_key() -> SigningKey {
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-signing-key.pem"
        ))
        .expect("fixture present");
        SigningKey::from_pkcs8_pem("test", &pem).expect("valid key")
    }

    #[test]
    fn key_name_is_owner_and_spki_fingerprint() {
        // `openssl pkey -in test-signing-key.pem -pubout -outform DER | sha256sum`
        assert_eq!(committed_key().key_name(), "test-90b210e7.rsa.pub");
    }

    #[test]
    fn public_key_fingerprint_is_sha256_of_spki() {
        // `openssl pkey -in test-signing-key.pem -pubout -outform DER | sha256sum`
        let pem = committed_key().public_key_pem().unwrap();
        assert_eq!(
            public_key_fingerprint(&pem).unwrap(),
            (
                "90b210e780641681f3eda59d090bb80dee6601f5e8a6e1e40e94f34b0856c055".to_string(),
                1024
            )
        );
        assert!(public_key_fingerprint("not a key").is_err());
    }

    #[test]
    fn pem_round_trip_keeps_the_key_name() {
        let key = committed_key();
        let pem = key.private_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pkcs8_pem("test", &pem).expect("round trip");
        assert_eq!(again.key_name(), key.key_name());
        assert!(key
            .public_key_pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn generated_key_signs_and_verifies() {
        let key = SigningKey::generate("acme", 1024).expect("keygen");
        assert!(key.key_name().starts_with("acme-"));
        assert!(key.key_name().ends_with(".rsa.pub"));
        assert_eq!(key.key_name().len(), "acme-".len() + 8 + ".rsa.pub".len());
        let sig = key.sign(SignatureAlgorithm::Rsa512, b"msg").expect("sign");
        verify(
            &key.public_key_pem().unwrap(),
            SignatureAlgorithm::Rsa512,
            b"msg",
            &sig,
        )
        .expect("ok");
    }

    #[test]
    fn signature_does_not_verify_for_other_message_algorithm_or_key() {
        let key = committed_key();
        let pem = key.public_key_pem().unwrap();
        let sig = key.sign(SignatureAlgorithm::Rsa, b"message").expect("sign");
        verify(&pem, SignatureAlgorithm::Rsa, b"message", &sig).expect("verifies");
        assert!(verify(&pem, SignatureAlgorithm::Rsa, b"messagE", &sig).is_err());
        assert!(verify(&pem, SignatureAlgorithm::Rsa256, b"message", &sig).is_err());
        let other = SigningKey::generate("other", 1024).expect("keygen");
        assert!(verify(
            &other.public_key_pem().unwrap(),
            SignatureAlgorithm::Rsa,
            b"message",
            &sig
        )
        .is_err());
        assert!(verify("not a key", SignatureAlgorithm::Rsa, b"message", &sig).is_err());
    }

    const ALGORITHMS: [SignatureAlgorithm; 3] = [
        SignatureAlgorithm::Rsa,
        SignatureAlgorithm::Rsa256,
        SignatureAlgorithm::Rsa512,
    ];

    /// The same signature made by the `rsa` crate.
    fn rsa_crate_signature(key: &SigningKey, alg: SignatureAlgorithm, message: &[u8]) -> Vec<u8> {
        let (scheme, digest) = alg.scheme_and_digest(message);
        key.key.sign(scheme, &digest).expect("rsa crate signs")
    }

    /// OpenSSL signs with the key `rsa` holds, byte for byte as `rsa` would, and the
    /// signature verifies.
    fn assert_same_signatures_as_rsa_crate(key: &SigningKey) {
        let public = key.public_key_pem().unwrap();
        for message in [&b""[..], b"message", &[0xa5; 100_000]] {
            for alg in ALGORITHMS {
                let sig = key.sign(alg, message).expect("sign");
                assert_eq!(sig, rsa_crate_signature(key, alg, message), "{alg}");
                verify(&public, alg, message, &sig).expect("verifies");
            }
        }
    }

    #[test]
    fn openssl_signatures_equal_rsa_crate_signatures_with_the_committed_key() {
        let key = committed_key();
        assert_same_signatures_as_rsa_crate(&key);
        // A clone shares the OpenSSL key and signs the same.
        let clone = key.clone();
        assert_eq!(
            clone.sign(SignatureAlgorithm::Rsa256, b"m").unwrap(),
            key.sign(SignatureAlgorithm::Rsa256, b"m").unwrap()
        );
    }

    #[test]
    fn generated_key_signs_like_rsa_crate_and_round_trips_through_pem() {
        let key = SigningKey::generate("acme", 2048).expect("keygen");
        assert_eq!(key.pkey.bits(), 2048);
        // Both forms of the key are the same key: the name, from the `rsa` public key,
        // is the fingerprint of OpenSSL's SPKI too.
        let spki = key.pkey.public_key_to_der().unwrap();
        assert_eq!(
            key.key_name(),
            format!("acme-{}.rsa.pub", hex::encode(&Sha256::digest(&spki)[..4]))
        );
        assert_same_signatures_as_rsa_crate(&key);

        let again = SigningKey::from_pkcs8_pem("acme", &key.private_pkcs8_pem().unwrap())
            .expect("round trip");
        assert_eq!(again.key_name(), key.key_name());
        assert_eq!(
            again.public_key_pem().unwrap(),
            key.public_key_pem().unwrap()
        );
        for alg in ALGORITHMS {
            assert_eq!(
                again.sign(alg, b"index").unwrap(),
                key.sign(alg, b"index").unwrap()
            );
        }
    }

    #[test]
    fn impossible_key_sizes_are_errors() {
        assert!(SigningKey::generate("acme", 0).is_err());
        assert!(SigningKey::generate("acme", usize::MAX).is_err());
    }

    #[test]
    fn debug_does_not_print_the_private_key() {
        let key = committed_key();
        let shown = format!("{key:?}");
        assert!(shown.contains("test-90b210e7.rsa.pub"));
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.len() < 100, "{shown}");
    }

    #[test]
    fn hostile_owner_names_are_rejected() {
        let pem = committed_key().private_pkcs8_pem().unwrap();
        for owner in ["", "../x", "a/b", "a b", ".hidden", "a\0b", &"x".repeat(65)] {
            assert!(
                SigningKey::from_pkcs8_pem(owner, &pem).is_err(),
                "{owner:?}"
            );
        }
        assert!(SigningKey::from_pkcs8_pem("test", "garbage").is_err());
    }

    #[test]
    fn a_named_key_keeps_its_name_and_signs_the_same() {
        let key = committed_key();
        let pem = key.private_pkcs8_pem().unwrap();
        let named = SigningKey::from_pem_named("ops@example.org-5f3e2a1b.rsa.pub", &pem).unwrap();
        assert_eq!(named.key_name(), "ops@example.org-5f3e2a1b.rsa.pub");
        assert_eq!(named.bits(), 1024);
        assert_eq!(
            named.sign(SignatureAlgorithm::Rsa, b"m").unwrap(),
            key.sign(SignatureAlgorithm::Rsa, b"m").unwrap()
        );
        let too_long = format!("{}.rsa.pub", "x".repeat(MAX_KEY_NAME_LEN));
        for name in [
            "",
            ".rsa.pub",
            "key.pub",
            "../x.rsa.pub",
            "a/b.rsa.pub",
            "a b.rsa.pub",
            ".hidden.rsa.pub",
            "a\"b.rsa.pub",
            too_long.as_str(),
        ] {
            assert!(SigningKey::from_pem_named(name, &pem).is_err(), "{name:?}");
            assert!(key.clone().renamed(name).is_err(), "{name:?}");
        }
        let longest = format!("{}.rsa.pub", "x".repeat(MAX_KEY_NAME_LEN - 8));
        assert!(key.clone().renamed(&longest).is_ok());
        assert_eq!(format!(".SIGN.RSA512.{longest}").len(), 100);
    }

    #[test]
    fn algorithm_names_parse_case_insensitively() {
        for (s, alg) in [
            ("RSA", SignatureAlgorithm::Rsa),
            ("rsa256", SignatureAlgorithm::Rsa256),
            ("Rsa512", SignatureAlgorithm::Rsa512),
        ] {
            assert_eq!(s.parse::<SignatureAlgorithm>(), Ok(alg));
            assert_eq!(alg.as_str().parse::<SignatureAlgorithm>(), Ok(alg));
        }
        assert!("DSA".parse::<SignatureAlgorithm>().is_err());
    }

    #[test]
    fn split_signed_rejects_unsigned_and_garbage() {
        let unsigned = crate::apk::index::write_unsigned_index("", &["P:x\n\n"]).unwrap();
        assert!(split_signed(&unsigned).is_err());
        assert!(split_signed(b"").is_err());
        assert!(split_signed(b"not gzip").is_err());
        assert!(split_signed(&unsigned[..10]).is_err());
    }
}
