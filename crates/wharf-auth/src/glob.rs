//! Repository-name patterns used in grants.
//!
//! `*` matches any run of characters within one path component (no `/`), `**`
//! matches anything including `/`, every other character matches itself.
//! So `team/*` covers `team/app` but not `team/app/dev`, and `team/**` covers
//! both. A hand-written matcher: patterns are tiny and a regex engine would
//! cost more to build than to run.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    matches_bytes(pattern.as_bytes(), name.as_bytes())
}

fn matches_bytes(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=n.len()).any(|i| matches_bytes(rest, &n[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let limit = n.iter().position(|&c| c == b'/').unwrap_or(n.len());
            (0..=limit).any(|i| matches_bytes(rest, &n[i..]))
        }
        Some(&c) => n.first() == Some(&c) && matches_bytes(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

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
    }
}
