//! Operations on the registry, callable from every adapter (the command line today, the
//! JSON API later): each is written once here, with its checks and invariants, and the
//! adapters only parse their input and print or serialise the result.

pub mod accounts;
pub mod fsck;
pub mod keys;
pub mod publish;
pub mod repositories;
