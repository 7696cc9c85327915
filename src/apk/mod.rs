//! The Alpine `.apk` formats: package parsing, `.PKGINFO`, index writing (v2
//! `APKINDEX.tar.gz` and v3 `Packages.adb`), signing, versions and names. Pure and
//! synchronous: everything takes `Read` or `&[u8]` and knows nothing of HTTP, databases
//! or async runtimes.

pub mod adb;
pub mod builder;
pub mod depends;
pub mod incremental;
pub mod index;
pub mod names;
pub mod package;
pub mod pkginfo;
pub mod sign;
pub mod upstream;
pub mod version;

mod datatree;
mod error;
mod member;
mod stream;
mod tarwalk;
pub use error::{ApkError, ApkResult};
