//! The kinds of repository Wharf serves; one vocabulary in code, CLI, API and docs.

use std::fmt;
use std::str::FromStr;

/// What a repository holds, and so which protocol serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepositoryKind {
    /// Container images and artifacts, served at `/v2/`.
    Oci,
    /// OSTree commits, served at `/ostree/<repo>/`.
    Ostree,
    /// An rpm-md repository, served at `/rpm/<repo>/`.
    Rpm,
    /// A plain file tree, served at `/files/<repo>/`.
    Files,
}

impl RepositoryKind {
    /// Every kind, in a stable order.
    pub const ALL: [RepositoryKind; 4] = [
        RepositoryKind::Oci,
        RepositoryKind::Ostree,
        RepositoryKind::Rpm,
        RepositoryKind::Files,
    ];

    /// The kind's name as stored and as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RepositoryKind::Oci => "oci",
            RepositoryKind::Ostree => "ostree",
            RepositoryKind::Rpm => "rpm",
            RepositoryKind::Files => "files",
        }
    }
}

impl fmt::Display for RepositoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A repository kind name that Wharf does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown repository kind {0:?}: expected oci, ostree, rpm or files")]
pub struct UnknownKind(pub String);

impl FromStr for RepositoryKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepositoryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for kind in RepositoryKind::ALL {
            assert_eq!(kind.as_str().parse::<RepositoryKind>(), Ok(kind));
        }
        assert!("OCI".parse::<RepositoryKind>().is_err());
        assert!("docker".parse::<RepositoryKind>().is_err());
    }
}
