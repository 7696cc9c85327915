//! RSA signing keys, their apk key names, and signature members.
//!
//! apk verifies a `.SIGN.<ALG>.<keyname>` entry with the public key stored as
//! `/etc/apk/keys/<keyname>`, so the key name is part of the format: it is derived from
//! the public key itself and recomputed whenever a key is loaded.

use super::{ApkError, ApkResult};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
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
#[derive(Clone)]
pub struct SigningKey {
    key: RsaPrivateKey,
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

impl SigningKey {
    /// Generates a new key of `bits` bits from the OS random number generator.
    pub fn generate(owner: &str, bits: usize) -> ApkResult<SigningKey> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(signing)?;
        let name = key_name(owner, &key.to_public_key())?;
        Ok(SigningKey { key, name })
    }

    /// Loads a PKCS#8 PEM private key (PKCS#1 `BEGIN RSA PRIVATE KEY`, as older
    /// `abuild-keygen` writes, is accepted too) and recomputes its key name.
    pub fn from_pkcs8_pem(owner: &str, pem: &str) -> ApkResult<SigningKey> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| signing("not an RSA private key in PKCS#8 or PKCS#1 PEM form"))?;
        key.validate().map_err(signing)?;
        let name = key_name(owner, &key.to_public_key())?;
        Ok(SigningKey { key, name })
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
        let (scheme, digest) = alg.scheme_and_digest(message);
        self.key.sign(scheme, &digest).map_err(signing)
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
