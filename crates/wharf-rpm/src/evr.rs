//! RPM's version order: `rpmvercmp` over versions and releases, and
//! `EPOCH:VERSION-RELEASE` compared as rpm and dnf compare them, so
//! "the newest N versions" means what `dnf repoquery --latest-limit N` means.

use std::cmp::Ordering;

/// An `EPOCH:VERSION-RELEASE`, ordered as rpm orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evr {
    /// The epoch (0 when absent).
    pub epoch: u64,
    /// The version.
    pub version: String,
    /// The release.
    pub release: String,
}

impl Ord for Evr {
    fn cmp(&self, other: &Evr) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| vercmp(&self.version, &other.version))
            .then_with(|| vercmp(&self.release, &other.release))
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, other: &Evr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Evr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        write!(f, "{}-{}", self.version, self.release)
    }
}

/// rpm's `rpmvercmp`: alternating runs of digits and letters compared one
/// by one (digits numerically, a number beating letters), separators
/// ignored, `~` sorting before anything (even the end: `1.0~rc1` < `1.0`)
/// and `^` after the end but before anything else (`1.0` < `1.0^git1` < `1.0.1`).
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while one.first().is_some_and(|&c| separator(c)) {
            one = &one[1..];
        }
        while two.first().is_some_and(|&c| separator(c)) {
            two = &two[1..];
        }
        let (x, y) = (one.first().copied(), two.first().copied());
        if x == Some(b'~') || y == Some(b'~') {
            if x != Some(b'~') {
                return Ordering::Greater;
            }
            if y != Some(b'~') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if x == Some(b'^') || y == Some(b'^') {
            if x.is_none() {
                return Ordering::Less;
            }
            if y.is_none() {
                return Ordering::Greater;
            }
            if x != Some(b'^') {
                return Ordering::Greater;
            }
            if y != Some(b'^') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        let (Some(x), Some(_)) = (x, y) else { break };
        let numeric = x.is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let n1 = one.iter().take_while(|c| class(c)).count();
        let n2 = two.iter().take_while(|c| class(c)).count();
        let (s1, s2) = (&one[..n1], &two[..n2]);
        if s2.is_empty() {
            // A number against letters: the number is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let trim = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
            let (t1, t2) = (&s1[trim(s1)..], &s2[trim(s2)..]);
            t1.len().cmp(&t2.len()).then_with(|| t1.cmp(t2))
        } else {
            s1.cmp(s2)
        };
        if order != Ordering::Equal {
            return order;
        }
        one = &one[n1..];
        two = &two[n2..];
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vercmp_agrees_with_rpm() {
        // From rpm's own test suite (rpmvercmp.at).
        let cases: &[(&str, &str, i32)] = &[
            ("1.0", "1.0", 0),
            ("1.0", "2.0", -1),
            ("2.0", "1.0", 1),
            ("2.0.1", "2.0.1", 0),
            ("2.0", "2.0.1", -1),
            ("2.0.1a", "2.0.1", 1),
            ("5.5p1", "5.5p2", -1),
            ("5.5p10", "5.5p1", 1),
            ("10xyz", "10.1xyz", -1),
            ("xyz10", "xyz10.1", -1),
            ("xyz.4", "8", -1),
            ("5.5p1", "5.5.p1", 0),
            ("10b2", "10a1", 1),
            ("1.0aa", "1.0a", 1),
            ("6.0.rc1", "6.0", 1),
            ("10.0001", "10.1", 0),
            ("10.0001", "10.0039", -1),
            ("4.999.9", "5.0", -1),
            ("20101121", "20101122", -1),
            ("2_0", "2_0", 0),
            ("2.0", "2_0", 0),
            ("a", "a", 0),
            ("a+", "a+", 0),
            ("a+", "a_", 0),
            ("+a", "_a", 0),
            ("+", "_", 0),
            ("1.0~rc1", "1.0~rc1", 0),
            ("1.0~rc1", "1.0", -1),
            ("1.0", "1.0~rc1", 1),
            ("1.0~rc1", "1.0~rc2", -1),
            ("1.0~rc1~git123", "1.0~rc1", -1),
            ("1.0^", "1.0", 1),
            ("1.0^git1", "1.0", 1),
            ("1.0^git1", "1.0^git2", -1),
            ("1.0^git1", "1.01", -1),
            ("1.0^20160101", "1.0.1", -1),
            ("1.0~rc1", "1.0^git1", -1),
            ("1.0^git1~pre", "1.0^git1", -1),
        ];
        for &(a, b, want) in cases {
            let got = match vercmp(a, b) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            };
            assert_eq!(got, want, "rpmvercmp({a:?}, {b:?})");
        }
    }

    #[test]
    fn epoch_wins_then_version_then_release() {
        let evr = |e, v: &str, r: &str| Evr {
            epoch: e,
            version: v.into(),
            release: r.into(),
        };
        assert!(evr(1, "1.0", "1") > evr(0, "9.0", "9"));
        assert!(evr(0, "1.10", "1") > evr(0, "1.9", "9"));
        assert!(evr(0, "1.0", "10") > evr(0, "1.0", "9"));
        assert_eq!(evr(0, "1.0", "1").cmp(&evr(0, "1.0", "1")), Ordering::Equal);
        assert_eq!(evr(2, "1", "1").to_string(), "2:1-1");
    }
}
