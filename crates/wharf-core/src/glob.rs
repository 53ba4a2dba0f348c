//! Repository-name patterns used in grants, token scopes, export selections,
//! retention rules and quotas: their grammar and their matcher. It lives here,
//! below every crate that names repositories by pattern, so that there is one
//! grammar (wharf-auth re-exports it as `wharf_auth::glob`).
//!
//! A pattern is `/`-separated components. A component is `**` (any run of
//! characters, `/` included), or repository-name characters (`a-z 0-9 . _ -`)
//! with `*` wildcards that match any run of characters within one component.
//! So `team/*` covers `team/app` but not `team/app/dev`, and `team/**` covers
//! both. [`validate_pattern`] is the one implementation of the grammar, used
//! wherever a grant or scope is made (CLI, configuration, API).
//!
//! The matcher simulates the pattern as a set of positions (a Thompson NFA)
//! instead of backtracking, so it takes at most pattern × name steps whatever
//! the input: a pathological pair cannot stall a request.

/// Longest pattern accepted; no repository name is longer.
pub const MAX_PATTERN_LEN: usize = 255;

/// Why a pattern was refused, in words for the operator.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("invalid repository pattern {pattern:?}: {why}"));
    if pattern.is_empty() {
        return refuse("it is empty");
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return refuse("longer than 255 characters");
    }
    for component in pattern.split('/') {
        if component.is_empty() {
            return refuse("empty path component (a leading, trailing or doubled `/`)");
        }
        if component == "**" {
            continue;
        }
        if component.contains("**") {
            return refuse("`**` must be a whole path component, as in `team/**`");
        }
        if let Some(c) = component
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*".contains(*c)))
        {
            return refuse(&format!(
                "{c:?} cannot appear in a repository name (use lower-case a-z, 0-9, `.`, `_`, `-`, \
                 and `*` or `**` as wildcards)"
            ));
        }
        // A wildcard stands for at least a letter here: the component must be
        // able to match some valid name component, which also rules out `..`.
        if crate::RepoName::parse(&component.replace('*', "x")).is_err() {
            return refuse(&format!(
                "{component:?} cannot match a repository name component (one starts and ends with \
                 a letter or digit; inner separators are `.`, `_`, `__` or dashes)"
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(u8),
    /// `*`: any run without `/`.
    Star,
    /// `**`: any run.
    AnyRun,
}

fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' if pattern.get(i + 1) == Some(&b'*') => {
                out.push(Token::AnyRun);
                i += 2;
            }
            b'*' => {
                out.push(Token::Star);
                i += 1;
            }
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    out
}

/// Adds `state` and every state reachable from it without consuming input.
fn add_state(tokens: &[Token], set: &mut [bool], mut state: usize) {
    while !set[state] {
        set[state] = true;
        match tokens.get(state) {
            Some(Token::Star | Token::AnyRun) => state += 1,
            _ => break,
        }
    }
}

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    // Most grants are an exact name or a literal prefix and a trailing `**`
    // (`**`, `team/**`): answered without building the automaton, since every
    // request asks this of every grant.
    match pattern.find('*') {
        None => return pattern == name,
        Some(at) if &pattern[at..] == "**" => return name.starts_with(&pattern[..at]),
        Some(_) => {}
    }
    let tokens = tokens(pattern.as_bytes());
    let mut current = vec![false; tokens.len() + 1];
    let mut next = vec![false; tokens.len() + 1];
    add_state(&tokens, &mut current, 0);
    for &c in name.as_bytes() {
        next.iter_mut().for_each(|s| *s = false);
        let mut alive = false;
        for (state, token) in tokens.iter().enumerate() {
            if !current[state] {
                continue;
            }
            match *token {
                Token::Literal(l) if l == c => add_state(&tokens, &mut next, state + 1),
                Token::Literal(_) => continue,
                Token::Star if c == b'/' => continue,
                Token::Star | Token::AnyRun => add_state(&tokens, &mut next, state),
            }
            alive = true;
        }
        if !alive {
            return false;
        }
        std::mem::swap(&mut current, &mut next);
    }
    current[tokens.len()]
}

/// A validated repository-name pattern (see the module's grammar).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoPattern(String);

impl RepoPattern {
    /// Validates `pattern`; the error says why, for the operator.
    pub fn parse(pattern: &str) -> Result<RepoPattern, String> {
        validate_pattern(pattern)?;
        Ok(RepoPattern(pattern.to_owned()))
    }

    /// Whether the repository `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        matches(&self.0, name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, validate_pattern};

    #[test]
    fn patterns() {
        assert!(matches("team/*", "team/app"));
        assert!(!matches("team/*", "team/app/dev"));
        assert!(matches("team/**", "team/app/dev"));
        assert!(matches("**", "anything/at/all"));
        assert!(matches("*", "busybox"));
        assert!(!matches("*", "library/busybox"));
        assert!(matches("quay.io/**", "quay.io/coreos/etcd"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("a*c", "abbbc"));
        assert!(!matches("team/*", "teams/app"));
        assert!(matches("team/*-dev", "team/app-dev"));
        assert!(!matches("team/*-dev", "team/x/app-dev"));
        assert!(matches("**/base", "a/b/base"));
        assert!(matches("team/**/x", "team/a/b/x"));
        assert!(matches("*/*", "a/b"));
        assert!(!matches("*/*", "a"));
        assert!(matches("team/**", "team/app"));
        assert!(!matches("team/**", "teams/app"));
        assert!(!matches("team/**", "team"));
        assert!(matches("**", ""));
        assert!(matches("team/**/*", "team/a/b"));
        assert!(!matches("team/**/*", "team/"));
    }

    #[test]
    fn pathological_pairs_finish_fast() {
        // Exponential for a backtracking matcher: many stars and a name that almost matches.
        let pattern = format!("{}b", "a*".repeat(60));
        let name = "a".repeat(200);
        let start = std::time::Instant::now();
        for _ in 0..10 {
            assert!(!matches(&pattern, &name));
        }
        let pattern = format!("{}x", "**/".repeat(80));
        let name = "a/".repeat(120) + "y";
        for _ in 0..10 {
            assert!(!matches(&pattern, &name));
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn grammar() {
        for ok in [
            "team/*",
            "team/**",
            "**",
            "*",
            "team/app",
            "quay.io/coreos/*",
            "team/*-dev",
            "a_b/c__d/e--f",
        ] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Team/App",
            "team//x",
            "/team",
            "team/",
            "..",
            "team/../x",
            "team/.*",
            "team/*..x",
            "team/***",
            "team/a**",
            "team/a b",
            "-team",
            "team/app_",
        ] {
            let err = validate_pattern(bad).unwrap_err();
            assert!(err.contains("invalid repository pattern"), "{bad}: {err}");
        }
        assert!(validate_pattern(&"a".repeat(256)).is_err());
    }
}
