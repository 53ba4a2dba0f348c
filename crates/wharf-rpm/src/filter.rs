//! Which upstream packages a filtered mirror keeps: arches, name patterns
//! (globs, or regexes written `re:…`) to include and exclude, and the newest
//! N versions of each name.
//!
//! A filter is decided per `<package>` of primary, so it never needs more
//! than one entry at a time, except "newest N", which needs every version of
//! a name first: [`Newest`] is a first pass over primary that keeps, per
//! name, only the N newest versions seen so far (memory in the number of
//! names, not packages).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::primary::PackageEntry;

/// Why a filter setting is not usable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// One name pattern: a shell-style glob (`*`, `?`) or, written `re:…`, a
/// regular expression that must match the whole name.
#[derive(Debug, Clone)]
pub enum NamePattern {
    /// `*` any run of characters, `?` one character, anything else itself.
    Glob(String),
    /// Anchored at both ends.
    Regex(regex::Regex),
}

impl NamePattern {
    /// Parses `re:REGEX` or a glob.
    pub fn parse(text: &str) -> Result<NamePattern, FilterError> {
        match text.strip_prefix("re:") {
            Some(re) => regex::Regex::new(&format!("^(?:{re})$"))
                .map(NamePattern::Regex)
                .map_err(|e| {
                    FilterError(format!("{text:?} is not a valid regular expression: {e}"))
                }),
            None if text.is_empty() => Err(FilterError("an empty name pattern".into())),
            None => Ok(NamePattern::Glob(text.to_string())),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
            NamePattern::Regex(r) => r.is_match(name),
        }
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion
    // depth to exhaust on a long name.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// What a remote keeps of upstream's packages.
#[derive(Debug, Clone, Default)]
pub struct PackageFilter {
    /// Arches kept (`x86_64`, `noarch`, `src`, …); empty: every arch.
    pub arches: Vec<String>,
    /// Names kept; empty: every name.
    pub include: Vec<NamePattern>,
    /// Names dropped, even when `include` matches.
    pub exclude: Vec<NamePattern>,
    /// Versions kept per name, newest first; `None`: all.
    pub newest: Option<u32>,
}

impl PackageFilter {
    /// Whether the filter keeps everything (then the mirror can stay exact).
    pub fn is_everything(&self) -> bool {
        self.arches.is_empty()
            && self.include.is_empty()
            && self.exclude.is_empty()
            && self.newest.is_none()
    }

    /// Arch and name rules (not "newest N", which needs [`Newest`]).
    pub fn admits(&self, entry: &PackageEntry) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == &entry.arch))
            && (self.include.is_empty() || self.include.iter().any(|p| p.matches(&entry.name)))
            && !self.exclude.iter().any(|p| p.matches(&entry.name))
    }

    /// A stable description, so a changed filter is told apart from an
    /// unchanged one (the run then regenerates although upstream did not change).
    pub fn fingerprint(&self) -> String {
        let pats = |ps: &[NamePattern]| {
            ps.iter()
                .map(|p| match p {
                    NamePattern::Glob(g) => g.clone(),
                    NamePattern::Regex(r) => format!("re:{}", r.as_str()),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "arches={};include={};exclude={};newest={}",
            self.arches.join(","),
            pats(&self.include),
            pats(&self.exclude),
            self.newest.map_or("all".to_string(), |n| n.to_string())
        )
    }
}

/// An epoch, version and release, compared as rpm does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evr {
    /// The epoch (0 when absent).
    pub epoch: u64,
    /// The version.
    pub version: String,
    /// The release.
    pub release: String,
}

impl Evr {
    /// The EVR of a primary entry.
    pub fn of(entry: &PackageEntry) -> Evr {
        Evr {
            epoch: entry.epoch.parse().unwrap_or(0),
            version: entry.version.clone(),
            release: entry.release.clone(),
        }
    }
}

impl Ord for Evr {
    fn cmp(&self, other: &Evr) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| rpmvercmp(&self.version, &other.version))
            .then_with(|| rpmvercmp(&self.release, &other.release))
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, other: &Evr) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// rpm's version comparison (`rpmvercmp`): alternating runs of digits and
/// letters, numbers compared as numbers and newer than letters, `~` sorting
/// before anything (pre-releases) and `^` after the end (snapshots).
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    loop {
        while a.first().is_some_and(separator) {
            a = &a[1..];
        }
        while b.first().is_some_and(separator) {
            b = &b[1..];
        }
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'^'), None) => return Ordering::Greater,
            (Some(b'^'), _) => return Ordering::Less,
            (None, Some(b'^')) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, _) | (_, None) => break,
            _ => {}
        }
        let numeric = a[0].is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (na, nb) = (run(a), run(b));
        let (sa, sb) = (&a[..na], &b[..nb]);
        if sb.is_empty() {
            // Different kinds of run: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let trim = |s: &[u8]| {
                let z = s.iter().take_while(|c| **c == b'0').count();
                s[z..].to_vec()
            };
            let (ta, tb) = (trim(sa), trim(sb));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb))
        } else {
            sa.cmp(sb)
        };
        if order != Ordering::Equal {
            return order;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        _ => Ordering::Less,
    }
}

/// "Newest N versions per name": fed every admitted entry of primary in a
/// first pass, it then says which entries the second pass keeps. Every arch
/// of a kept version is kept.
#[derive(Debug)]
pub struct Newest {
    keep: usize,
    by_name: HashMap<String, Vec<Evr>>,
}

impl Newest {
    /// Keeps `keep` versions per name (at least one).
    pub fn new(keep: u32) -> Newest {
        Newest {
            keep: keep.max(1) as usize,
            by_name: HashMap::new(),
        }
    }

    /// Notes one entry of the first pass.
    pub fn see(&mut self, entry: &PackageEntry) {
        let evr = Evr::of(entry);
        let versions = self.by_name.entry(entry.name.clone()).or_default();
        if versions.contains(&evr) {
            return;
        }
        // Newest first; at most `keep`.
        let at = versions.partition_point(|v| v > &evr);
        if at < self.keep {
            versions.insert(at, evr);
            versions.truncate(self.keep);
        }
    }

    /// Whether the second pass keeps `entry`.
    pub fn keeps(&self, entry: &PackageEntry) -> bool {
        self.by_name
            .get(&entry.name)
            .is_some_and(|v| v.contains(&Evr::of(entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Checksum, Location};

    fn entry(name: &str, epoch: &str, version: &str, release: &str, arch: &str) -> PackageEntry {
        PackageEntry {
            name: name.into(),
            arch: arch.into(),
            epoch: epoch.into(),
            version: version.into(),
            release: release.into(),
            location: Location {
                href: format!("{name}.rpm"),
                xml_base: None,
            },
            checksum: Checksum::new("sha256", &"ab".repeat(32)).unwrap(),
            size: 1,
        }
    }

    #[test]
    fn versions_compare_as_rpm_does() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.10", "1.9", Greater),
            ("1.010", "1.10", Equal),
            ("2.0", "2.0a", Less),
            ("2a", "2.0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0", "1_0", Equal),
            ("a", "b", Less),
            ("5.2", "5.10", Less),
        ] {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        let e = |epoch: &str, v: &str| Evr::of(&entry("x", epoch, v, "1", "noarch"));
        assert!(e("1", "0.1") > e("0", "9.9"));
        assert!(e("", "2") == e("0", "2"));
    }

    #[test]
    fn globs_and_regexes_match_whole_names() {
        let g = NamePattern::parse("lib*-devel").unwrap();
        assert!(g.matches("libfoo-devel"));
        assert!(g.matches("lib-devel"));
        assert!(!g.matches("libfoo-devel-doc"));
        assert!(NamePattern::parse("h?llo").unwrap().matches("hello"));
        let r = NamePattern::parse("re:hello|extra").unwrap();
        assert!(r.matches("extra"));
        assert!(!r.matches("extras"), "anchored");
        assert!(NamePattern::parse("re:(").is_err());
        assert!(NamePattern::parse("").is_err());
        assert!(!glob(b"*a*a*a*a*b", &[b'a'; 200]));
    }

    #[test]
    fn arches_names_and_newest_versions() {
        let filter = PackageFilter {
            arches: vec!["x86_64".into(), "noarch".into()],
            include: vec![NamePattern::parse("*").unwrap()],
            exclude: vec![NamePattern::parse("re:.*-debuginfo").unwrap()],
            newest: Some(2),
        };
        assert!(!filter.is_everything());
        assert!(PackageFilter::default().is_everything());
        let all = [
            entry("a", "", "1.0", "1", "noarch"),
            entry("a", "", "1.10", "1", "noarch"),
            entry("a", "", "1.9", "1", "x86_64"),
            entry("a", "", "1.9", "1", "noarch"),
            entry("a", "", "1.9", "1", "i686"),
            entry("a-debuginfo", "", "1.9", "1", "x86_64"),
            entry("b", "1", "0.1", "1", "x86_64"),
            entry("b", "", "9", "1", "x86_64"),
        ];
        let mut newest = Newest::new(2);
        for e in all.iter().filter(|e| filter.admits(e)) {
            newest.see(e);
        }
        let kept: Vec<String> = all
            .iter()
            .filter(|e| filter.admits(e) && newest.keeps(e))
            .map(|e| e.nevra())
            .collect();
        assert_eq!(
            kept,
            [
                "a-1.10-1.noarch",
                "a-1.9-1.x86_64",
                "a-1.9-1.noarch",
                "b-1:0.1-1.x86_64",
                "b-9-1.x86_64"
            ]
        );
    }
}
