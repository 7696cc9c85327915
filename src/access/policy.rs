//! Who is asking, and who may do what on an owner.

use crate::store::{Owner, OwnerScope, Role, TokenRecord, User};

/// Who is asking: nobody, or a user with the scope of the credential used.
#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    User(Principal),
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The token's scope; a password grants everything the user has.
    pub scope: Role,
    /// A token limited to one owner.
    pub only_owner: Option<i64>,
    /// The token authenticated with (directly or by the session it logged in); None for a
    /// password.
    pub token: Option<TokenUse>,
}

/// The token a principal authenticated with, as the audit log names it.
#[derive(Debug, Clone)]
pub struct TokenUse {
    pub id: i64,
    pub label: Option<String>,
}

impl Principal {
    pub fn from_token(user: User, token: &TokenRecord) -> Principal {
        Principal {
            user,
            scope: token.scope,
            only_owner: token.owner_id,
            token: Some(TokenUse {
                id: token.id,
                label: token.label.clone(),
            }),
        }
    }
}

/// The outcome of an access check, before it becomes an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No credentials, and they are needed.
    NeedCredentials,
    /// Authenticated, may see the owner, lacks the right.
    Denied,
    /// Authenticated, may not even know the owner exists.
    Hidden,
}

/// Decides access of `identity` (whose role on the owner is `member_role`) to `owner`.
pub fn decide(
    identity: &Identity,
    member_role: Option<Role>,
    owner: &Owner,
    need: Role,
    anonymous_read: bool,
) -> Access {
    let principal = match identity {
        Identity::Anonymous => {
            return if need == Role::Read && !owner.is_private && anonymous_read {
                Access::Granted
            } else {
                Access::NeedCredentials
            };
        }
        Identity::User(principal) => principal,
    };
    let token_fits = principal.only_owner.is_none_or(|id| id == owner.id);
    let role = if !token_fits {
        // A token limited to another owner carries no role here; but a public owner that
        // anyone may read anonymously is readable with it too (refusing would only make
        // the client drop its credentials to get the same answer).
        (!owner.is_private && anonymous_read).then_some(Role::Read)
    } else if principal.user.is_admin {
        Some(Role::Admin)
    } else if owner.is_private {
        member_role
    } else {
        // Any signed-in user may read a public owner.
        member_role.max(Some(Role::Read))
    };
    let effective = role.map(|r| r.min(principal.scope));
    match effective {
        Some(r) if r >= need => Access::Granted,
        _ if owner.is_private && effective.is_none() => Access::Hidden,
        _ => Access::Denied,
    }
}

/// The owners `identity` may read, as a filter the store applies to whole queries: the
/// owners for which `decide(identity, role, owner, Role::Read, anonymous_read)` grants.
pub fn read_scope(identity: &Identity, anonymous_read: bool) -> OwnerScope {
    match identity {
        Identity::Anonymous => OwnerScope {
            public: anonymous_read,
            ..OwnerScope::default()
        },
        Identity::User(principal) => match principal.only_owner {
            // Every role carries at least read, and every scope is at least read: what
            // the user may see is what the user reads.
            None if principal.user.is_admin => OwnerScope {
                every: true,
                ..OwnerScope::default()
            },
            None => OwnerScope {
                member: Some(principal.user.id),
                ..OwnerScope::default()
            },
            // A token limited to one owner reads that owner as its user would, and the
            // public owners as an anonymous client does.
            Some(only) => OwnerScope {
                every: principal.user.is_admin,
                public: anonymous_read,
                member: (!principal.user.is_admin).then_some(principal.user.id),
                only: Some(only),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(private: bool) -> Owner {
        Owner {
            id: 1,
            name: "acme".into(),
            is_private: private,
            is_org: true,
        }
    }

    fn user(scope: Role, only_owner: Option<i64>) -> Identity {
        Identity::User(Principal {
            user: User {
                id: 7,
                name: "u".into(),
                is_admin: false,
                password_hash: None,
            },
            scope,
            only_owner,
            token: None,
        })
    }

    #[test]
    fn token_scope_caps_member_role() {
        let id = user(Role::Read, None);
        assert_eq!(
            decide(&id, Some(Role::Admin), &owner(false), Role::Write, true),
            Access::Denied
        );
        let id = user(Role::Write, None);
        assert_eq!(
            decide(&id, Some(Role::Write), &owner(true), Role::Write, true),
            Access::Granted
        );
    }

    #[test]
    fn private_owner_is_hidden_from_outsiders() {
        let id = user(Role::Admin, None);
        assert_eq!(
            decide(&id, None, &owner(true), Role::Read, true),
            Access::Hidden
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(true), Role::Read, true),
            Access::NeedCredentials
        );
        let other_owner_token = user(Role::Admin, Some(99));
        assert_eq!(
            decide(
                &other_owner_token,
                Some(Role::Admin),
                &owner(true),
                Role::Read,
                true
            ),
            Access::Hidden
        );
    }

    #[test]
    fn anonymous_reads_public_only_when_allowed() {
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Read, true),
            Access::Granted
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Read, false),
            Access::NeedCredentials
        );
        assert_eq!(
            decide(&Identity::Anonymous, None, &owner(false), Role::Write, true),
            Access::NeedCredentials
        );
    }

    /// The scope admits exactly the owners `decide` lets read, for every kind of caller,
    /// owner and membership.
    #[test]
    fn read_scope_agrees_with_decide() {
        for anonymous_read in [true, false] {
            let mut identities = vec![Identity::Anonymous];
            for is_admin in [false, true] {
                for scope in [Role::Read, Role::Write, Role::Admin] {
                    for only_owner in [None, Some(1), Some(2)] {
                        identities.push(Identity::User(Principal {
                            user: User {
                                id: 7,
                                name: "u".into(),
                                is_admin,
                                password_hash: None,
                            },
                            scope,
                            only_owner,
                            token: None,
                        }));
                    }
                }
            }
            for identity in &identities {
                let scope = read_scope(identity, anonymous_read);
                for private in [false, true] {
                    let mut owner = owner(private);
                    for id in [1, 2] {
                        owner.id = id;
                        for role in [None, Some(Role::Read), Some(Role::Write), Some(Role::Admin)] {
                            let granted =
                                decide(identity, role, &owner, Role::Read, anonymous_read)
                                    == Access::Granted;
                            let is_member = role.is_some() && matches!(identity, Identity::User(_));
                            assert_eq!(
                                scope.admits(&owner, is_member),
                                granted,
                                "{identity:?} {owner:?} {role:?} anonymous_read={anonymous_read}"
                            );
                        }
                    }
                }
            }
        }
    }
}
