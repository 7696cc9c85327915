//! Who is asking, and who may do what on an owner.

use crate::store::{Owner, Role, TokenRecord, User};

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
}

impl Principal {
    pub fn from_token(user: User, token: &TokenRecord) -> Principal {
        Principal {
            user,
            scope: token.scope,
            only_owner: token.owner_id,
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
}
