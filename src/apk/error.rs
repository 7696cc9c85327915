//! The error type of the format layer.

/// What went wrong while reading or writing an apk format.
#[derive(Debug, thiserror::Error)]
pub enum ApkError {
    /// Invalid, truncated or hostile input; the message says what is wrong in user words.
    #[error("{0}")]
    Malformed(String),
    /// An apk v3 (ADB) package was given where only v2 is accepted.
    #[error(
        "this is an apk v3 (ADB) package; only apk v2 packages (.apk made by abuild) are accepted"
    )]
    UnsupportedV3,
    /// A configured limit was exceeded.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    /// A genuine read error of the underlying source (not corrupt data).
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// Producing a signature failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Result alias of the format layer.
pub type ApkResult<T> = Result<T, ApkError>;
