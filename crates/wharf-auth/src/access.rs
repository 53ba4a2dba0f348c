//! Actions, grants, principals, and the one function that decides.
//!
//! Evaluation order, documented in `docs/security.md`:
//! 1. A server administrator may do everything everywhere.
//! 2. Anyone else gets the union of the grants whose pattern matches the
//!    repository and whose subject is `anonymous` (these apply to everyone),
//!    the principal itself, or one of its teams. `admin` implies the others.
//! 3. A scoped API token narrows the result to the token's own scopes.
//! 4. An anonymous principal never gets more than `pull`, whatever a grant
//!    says: there is no configuration in which anonymous clients write.
//! 5. The server itself (accounts, grants, jobs: the management API) is a
//!    resource only administrators may act on, and not through a scoped token.
//!
//! Nothing is allowed unless a rule above allows it.
//!
//! Grants name repositories, not kinds: names are one namespace across kinds
//! (a name is either an OCI repository or an OSTree one, never both), so a
//! pattern covers whatever kind the repository has. The kind travels in
//! [`Resource`] for the audit log and for the surfaces' error messages.

use wharf_core::RepositoryKind;

use crate::glob;

/// What a request acts on: the one vocabulary every surface's guard speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A repository, by kind and name.
    Repository {
        /// Which protocol the request came through.
        kind: RepositoryKind,
        /// The repository's name.
        name: String,
    },
    /// The server itself: accounts, teams, grants, tokens, jobs.
    Server,
}

impl Resource {
    /// A repository resource.
    pub fn repository(kind: RepositoryKind, name: impl Into<String>) -> Resource {
        Resource::Repository {
            kind,
            name: name.into(),
        }
    }

    /// The repository's name, or `None` for the server.
    pub fn repository_name(&self) -> Option<&str> {
        match self {
            Resource::Repository { name, .. } => Some(name),
            Resource::Server => None,
        }
    }
}

/// Something a principal may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, tags and blobs.
    Pull,
    /// Upload blobs and manifests, move tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// Everything, including managing the repository.
    Admin,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    /// The action's name in grants, tokens and scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    /// Parses an action name; Docker's `*` means every action.
    pub fn parse_many(s: &str) -> Option<Actions> {
        match s {
            "pull" => Some(Actions::of(Action::Pull)),
            "push" => Some(Actions::of(Action::Push)),
            "delete" => Some(Actions::of(Action::Delete)),
            "admin" | "*" => Some(Actions::ALL),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Every action.
    pub const ALL: Actions = Actions(0b1111);

    /// The set holding one action (admin implies all).
    pub fn of(action: Action) -> Actions {
        match action {
            Action::Admin => Actions::ALL,
            other => Actions(other.bit()),
        }
    }

    /// Parses a comma-separated list; unknown names are returned as errors.
    pub fn parse_list(s: &str) -> Result<Actions, String> {
        let mut res = Actions::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            res = res.union(Action::parse_many(part).ok_or_else(|| part.to_owned())?);
        }
        Ok(res)
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// Union.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Intersection.
    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// Whether no action is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// Comma-separated names, e.g. `pull,push`.
    pub fn to_list(self) -> String {
        self.iter()
            .map(Action::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Everyone, signed in or not (only `pull` takes effect for anonymous clients).
    Anonymous,
    /// One user or robot account, by name.
    Account(String),
    /// Every member of a team.
    Team(String),
}

/// `subject` may do `actions` on repositories matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who.
    pub subject: Subject,
    /// Repository name pattern (see [`crate::glob`]).
    pub pattern: String,
    /// What.
    pub actions: Actions,
}

/// A scope of an API token: it may do at most `actions` on `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    /// Repository name pattern.
    pub pattern: String,
    /// The most the token may do there.
    pub actions: Actions,
}

/// The authenticated party of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Account name; `None` for anonymous requests.
    pub account: Option<String>,
    /// Teams the account belongs to.
    pub teams: Vec<String>,
    /// Server administrator.
    pub is_admin: bool,
    /// Set when the credential was a scoped API token.
    pub token_scopes: Option<Vec<TokenScope>>,
}

impl Principal {
    /// The principal of a request without credentials.
    pub fn anonymous() -> Principal {
        Principal {
            account: None,
            teams: Vec::new(),
            is_admin: false,
            token_scopes: None,
        }
    }

    /// Whether the request carried no credentials.
    pub fn is_anonymous(&self) -> bool {
        self.account.is_none()
    }
}

/// Everything `principal` may do on `resource`. The only authorization decision.
pub fn allowed_actions(principal: &Principal, grants: &[Grant], resource: &Resource) -> Actions {
    let repo = match resource {
        Resource::Repository { name, .. } => name.as_str(),
        Resource::Server if principal.is_admin && principal.token_scopes.is_none() => {
            return Actions::ALL
        }
        Resource::Server => return Actions::NONE,
    };
    let mut res = if principal.is_admin {
        Actions::ALL
    } else {
        grants
            .iter()
            .filter(|g| applies_to(&g.subject, principal) && glob::matches(&g.pattern, repo))
            .fold(Actions::NONE, |acc, g| acc.union(g.actions))
    };
    if let Some(scopes) = &principal.token_scopes {
        let ceiling = scopes
            .iter()
            .filter(|s| glob::matches(&s.pattern, repo))
            .fold(Actions::NONE, |acc, s| acc.union(s.actions));
        res = res.intersect(ceiling);
    }
    if principal.is_anonymous() {
        res = res.intersect(Actions::of(Action::Pull));
    }
    res
}

fn applies_to(subject: &Subject, principal: &Principal) -> bool {
    match subject {
        Subject::Anonymous => true,
        Subject::Account(name) => principal.account.as_deref() == Some(name.as_str()),
        Subject::Team(team) => principal.teams.iter().any(|t| t == team),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: Subject, pattern: &str, actions: &str) -> Grant {
        Grant {
            subject,
            pattern: pattern.into(),
            actions: Actions::parse_list(actions).unwrap(),
        }
    }

    fn allowed_actions(principal: &Principal, grants: &[Grant], repo: &str) -> Actions {
        super::allowed_actions(
            principal,
            grants,
            &Resource::repository(RepositoryKind::Oci, repo),
        )
    }

    fn user(name: &str, teams: &[&str]) -> Principal {
        Principal {
            account: Some(name.into()),
            teams: teams.iter().map(|t| t.to_string()).collect(),
            is_admin: false,
            token_scopes: None,
        }
    }

    #[test]
    fn evaluation_order() {
        let grants = vec![
            grant(Subject::Anonymous, "public/**", "pull,push"),
            grant(Subject::Account("alice".into()), "team/*", "push"),
            grant(Subject::Team("ops".into()), "team/**", "delete"),
        ];
        let anon = Principal::anonymous();
        // Anonymous write is impossible even when a grant says push.
        assert_eq!(
            allowed_actions(&anon, &grants, "public/x").to_list(),
            "pull"
        );
        assert!(allowed_actions(&anon, &grants, "team/app").is_empty());
        let alice = user("alice", &["ops"]);
        assert_eq!(
            allowed_actions(&alice, &grants, "team/app").to_list(),
            "push,delete"
        );
        assert_eq!(
            allowed_actions(&alice, &grants, "team/app/dev").to_list(),
            "delete"
        );
        assert_eq!(
            allowed_actions(&alice, &grants, "public/x").to_list(),
            "pull,push"
        );
        let bob = user("bob", &[]);
        assert!(allowed_actions(&bob, &grants, "team/app").is_empty());
        let mut admin = user("root", &[]);
        admin.is_admin = true;
        assert_eq!(allowed_actions(&admin, &grants, "any/thing"), Actions::ALL);
        admin.token_scopes = Some(vec![TokenScope {
            pattern: "ci/**".into(),
            actions: Actions::parse_list("pull,push").unwrap(),
        }]);
        assert_eq!(
            allowed_actions(&admin, &grants, "ci/build").to_list(),
            "pull,push"
        );
        assert!(allowed_actions(&admin, &grants, "other").is_empty());
        assert_eq!(Actions::parse_list("admin").unwrap(), Actions::ALL);
        assert!(Actions::parse_list("pull,fly").is_err());
    }

    #[test]
    fn only_unscoped_administrators_act_on_the_server() {
        let grants = vec![grant(Subject::Account("alice".into()), "**", "admin")];
        let server = Resource::Server;
        // A grant on every repository is not a right over the server.
        let alice = user("alice", &[]);
        assert!(super::allowed_actions(&alice, &grants, &server).is_empty());
        assert!(super::allowed_actions(&Principal::anonymous(), &grants, &server).is_empty());
        let mut root = user("root", &[]);
        root.is_admin = true;
        assert_eq!(
            super::allowed_actions(&root, &grants, &server),
            Actions::ALL
        );
        // A scoped token of an administrator is limited to its repositories.
        root.token_scopes = Some(vec![TokenScope {
            pattern: "**".into(),
            actions: Actions::ALL,
        }]);
        assert!(super::allowed_actions(&root, &grants, &server).is_empty());
    }

    #[test]
    fn grants_cover_a_name_whatever_its_kind() {
        let grants = vec![grant(Subject::Account("alice".into()), "os/**", "pull")];
        let alice = user("alice", &[]);
        for kind in RepositoryKind::ALL {
            let repo = Resource::repository(kind, "os/fedora");
            assert_eq!(
                super::allowed_actions(&alice, &grants, &repo).to_list(),
                "pull"
            );
        }
    }
}
