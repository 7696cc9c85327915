//! Access control: credentials (tokens, passwords), login sessions, the failure throttle,
//! and the policy that decides who may do what on an owner. HTTP-free: the `Identity`
//! extractor in `http::identity` turns request headers into the `Identity` decided on here.

pub mod owners;
pub mod passwords;
pub mod policy;
pub mod sessions;
pub mod throttle;
pub mod tokens;

pub use owners::authorize;
pub use passwords::{dummy_password_hash, hash_password, verify_password, Busy, PasswordChecks};
pub use policy::{decide, read_scope, Access, Identity, Principal, TokenUse};
pub use throttle::{Attempt, Outcome, Refusal, Throttle, THROTTLE_CAPACITY};
pub use tokens::{
    digests_equal, generate_token, hash_token, parse_duration, token_from_secret, NewTokenSecret,
    TOKEN_PREFIX, TOKEN_USE_RESOLUTION_SECS,
};
