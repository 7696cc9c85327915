//! Repositories: created explicitly or by the first upload, listed, removed.
