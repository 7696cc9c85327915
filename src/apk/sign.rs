//! RSA signing keys, their apk key names, and signature members.

use super::ApkResult;

/// The signature types apk knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// `RSA`: PKCS#1 v1.5 over SHA-1.
    Rsa,
    /// `RSA256`: PKCS#1 v1.5 over SHA-256.
    Rsa256,
    /// `RSA512`: PKCS#1 v1.5 over SHA-512.
    Rsa512,
}

impl SignatureAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::Rsa => "RSA",
            SignatureAlgorithm::Rsa256 => "RSA256",
            SignatureAlgorithm::Rsa512 => "RSA512",
        }
    }
}

impl std::str::FromStr for SignatureAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

/// A private RSA key with its apk key name.
#[derive(Clone)]
pub struct SigningKey {
    key: rsa::RsaPrivateKey,
    name: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate(owner: &str, bits: usize) -> ApkResult<SigningKey> {
        let _ = (owner, bits);
        todo!()
    }
    pub fn from_pkcs8_pem(owner: &str, pem: &str) -> ApkResult<SigningKey> {
        let _ = (owner, pem);
        todo!()
    }
    pub fn private_pkcs8_pem(&self) -> String {
        let _ = &self.key;
        todo!()
    }
    pub fn public_key_pem(&self) -> String {
        todo!()
    }
    pub fn key_name(&self) -> &str {
        &self.name
    }
    pub fn sign(&self, alg: SignatureAlgorithm, message: &[u8]) -> ApkResult<Vec<u8>> {
        let _ = (alg, message);
        todo!()
    }
}

/// Verifies an RSA PKCS#1 v1.5 signature with a SPKI PEM public key.
pub fn verify(
    public_key_pem: &str,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> ApkResult<()> {
    let _ = (public_key_pem, alg, message, signature);
    todo!()
}

/// Splits a signed index into its signature entries and the signed remainder.
#[allow(clippy::type_complexity)]
pub fn split_signed(data: &[u8]) -> ApkResult<(Vec<(String, Vec<u8>)>, &[u8])> {
    let _ = data;
    todo!()
}
