//! Builds valid (or deliberately invalid) `.apk` files for tests and benchmarks.

use super::sign::SigningKey;

/// A package under construction.
#[derive(Debug, Clone)]
pub struct PackageBuilder {
    name: String,
    version: String,
    fields: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>)>,
    datahash: bool,
    key: Option<SigningKey>,
}

impl PackageBuilder {
    pub fn new(name: &str, version: &str, arch: &str) -> Self {
        let _ = arch;
        PackageBuilder {
            name: name.to_string(),
            version: version.to_string(),
            fields: Vec::new(),
            files: Vec::new(),
            datahash: true,
            key: None,
        }
    }
    pub fn field(mut self, key: &str, value: &str) -> Self {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }
    pub fn without_field(mut self, key: &str) -> Self {
        self.fields.retain(|(k, _)| k != key);
        self
    }
    pub fn file(mut self, path: &str, contents: &[u8]) -> Self {
        self.files.push((path.to_string(), contents.to_vec()));
        self
    }
    pub fn with_datahash(mut self, yes: bool) -> Self {
        self.datahash = yes;
        self
    }
    pub fn signed_with(mut self, key: &SigningKey) -> Self {
        self.key = Some(key.clone());
        self
    }
    pub fn build(&self) -> Vec<u8> {
        let _ = (&self.key, &self.fields, &self.files, self.datahash);
        todo!()
    }
    pub fn filename(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }
}
