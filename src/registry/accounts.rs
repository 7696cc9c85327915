//! Users, owners, memberships and tokens.
