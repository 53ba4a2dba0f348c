//! Metalinks and mirrorlists (`[[rpm.remotes]] metalink` / `mirrorlist`),
//! read as dnf's librepo reads them, so a remote can name a distribution's
//! mirror service (Fedora's `metalink?repo=…&arch=…`) instead of one mirror.
//!
//! - A **metalink** (XML, `<file name="repomd.xml">`) lists mirrors as
//!   `<url protocol preference>` of their `repodata/repomd.xml`, and vouches
//!   for repomd.xml with `<verification><hash type>` (and, for the few
//!   previous versions mirrors may still serve, `<mm0:alternates>`). A mirror
//!   is taken only if the repomd.xml it serves matches one of those sets:
//!   every strong hash (SHA-256, SHA-384, SHA-512) of the set equal. MD5 and
//!   SHA-1 are ignored, and a metalink with no strong hash is refused. Since
//!   repomd.xml names every other file by checksum, that one match makes the
//!   mirror's whole tree verifiable.
//! - A **mirrorlist** (text) is one base URL per line (`#` comments). It
//!   vouches for nothing: the first mirror that serves a repomd.xml is taken,
//!   and `gpg_keys` (repomd.xml.asc) is what makes such a remote trustworthy.
//!
//! Mirrors are tried in order (a metalink's by `preference`, highest first);
//! plain-HTTP ones only when the remote permits plain HTTP; ftp and rsync
//! never. The chosen mirror serves the whole run.

use crate::checksum::{ChecksumHasher, ChecksumKind};
use crate::xml::{attribute, xml_error};
use crate::RpmError;

/// Which kind of list names the mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `metalink` (XML, with repomd.xml's hashes).
    Metalink,
    /// `mirrorlist` (base URLs, one per line).
    Mirrorlist,
}

impl ListKind {
    /// The configuration key's name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Metalink => "metalink",
            ListKind::Mirrorlist => "mirrorlist",
        }
    }
}

/// One set of hashes a metalink vouches repomd.xml by (lowercase hex).
pub type RepomdHashes = Vec<(ChecksumKind, String)>;

/// What a list says: the mirrors' base URLs (ending in `/`), in the order to
/// try them, and the hash sets of which repomd.xml must match one (empty for
/// a mirrorlist, which vouches for nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorList {
    /// Mirror roots, best first.
    pub bases: Vec<String>,
    /// Acceptable repomd.xml versions (the current one first).
    pub repomd_hashes: Vec<RepomdHashes>,
}

impl MirrorList {
    /// Whether `repomd` (a mirror's repomd.xml) is one the list vouches for;
    /// always true for a mirrorlist.
    pub fn vouches_for(&self, kind: ListKind, repomd: &[u8]) -> bool {
        if kind == ListKind::Mirrorlist {
            return true;
        }
        self.repomd_hashes.iter().any(|set| {
            set.iter().all(|(kind, want)| {
                let mut hasher = ChecksumHasher::new(*kind);
                hasher.update(repomd);
                hasher.finish().hex() == want
            })
        })
    }
}

fn strong(kind: ChecksumKind) -> bool {
    matches!(
        kind,
        ChecksumKind::Sha256 | ChecksumKind::Sha384 | ChecksumKind::Sha512
    )
}

/// Whether a mirror URL's scheme may be used.
fn usable(url: &str, allow_http: bool) -> bool {
    url.starts_with("https://") || (allow_http && url.starts_with("http://"))
}

/// Reads a mirrorlist: every usable base URL, in order, each ending in `/`.
pub fn parse_mirrorlist(text: &str, allow_http: bool) -> Result<MirrorList, RpmError> {
    let bases: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| usable(l, allow_http))
        .map(|l| {
            if l.ends_with('/') {
                l.to_owned()
            } else {
                format!("{l}/")
            }
        })
        .collect();
    if bases.is_empty() {
        return Err(RpmError::Upstream(format!(
            "the mirrorlist names no {} mirror",
            if allow_http { "http(s)" } else { "https" }
        )));
    }
    Ok(MirrorList {
        bases,
        repomd_hashes: Vec::new(),
    })
}

/// Reads a metalink's `<file name="repomd.xml">`: its mirrors (by
/// preference, highest first) and the hash sets of repomd.xml.
pub fn parse_metalink(xml: &[u8], allow_http: bool) -> Result<MirrorList, RpmError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut in_repomd = false;
    let mut saw_repomd = false;
    // The set being read: the file's own, or an alternate's.
    let mut current: RepomdHashes = Vec::new();
    let mut alternates: Vec<RepomdHashes> = Vec::new();
    let mut main: RepomdHashes = Vec::new();
    let mut in_alternate = false;
    let mut hash_kind: Option<Option<ChecksumKind>> = None;
    let mut url: Option<(String, u32)> = None;
    let mut urls: Vec<(String, u32)> = Vec::new();
    let mut text = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_error("the metalink", e))?;
        match event {
            Event::Start(ref e) => {
                let name = e.local_name();
                match name.as_ref() {
                    b"file" => {
                        in_repomd = attribute(e, b"name")?.as_deref() == Some("repomd.xml");
                        saw_repomd |= in_repomd;
                    }
                    b"alternate" if in_repomd => {
                        in_alternate = true;
                        current.clear();
                    }
                    b"hash" if in_repomd => {
                        hash_kind = Some(
                            attribute(e, b"type")?
                                .and_then(|t| ChecksumKind::parse(&t).ok())
                                .filter(|k| strong(*k)),
                        );
                        text.clear();
                    }
                    b"url" if in_repomd => {
                        let protocol = attribute(e, b"protocol")?.unwrap_or_default();
                        let preference = attribute(e, b"preference")?
                            .and_then(|p| p.trim().parse().ok())
                            .unwrap_or(0);
                        url = matches!(protocol.as_str(), "http" | "https" | "")
                            .then(|| (String::new(), preference));
                        text.clear();
                    }
                    _ => {}
                }
            }
            Event::Text(ref t) if hash_kind.is_some() || url.is_some() => {
                let t = t
                    .unescape()
                    .map_err(|e| RpmError::Upstream(format!("the metalink: {e}")))?;
                text.push_str(&t);
            }
            Event::End(ref e) => match e.local_name().as_ref() {
                b"file" => in_repomd = false,
                b"hash" => {
                    if let Some(Some(kind)) = hash_kind.take() {
                        let hex = text.trim().to_ascii_lowercase();
                        if in_alternate {
                            current.push((kind, hex));
                        } else {
                            main.push((kind, hex));
                        }
                    }
                }
                b"alternate" if in_alternate => {
                    in_alternate = false;
                    if !current.is_empty() {
                        alternates.push(std::mem::take(&mut current));
                    }
                }
                b"url" => {
                    if let Some((_, preference)) = url.take() {
                        let full = text.trim();
                        if let Some(base) = full.strip_suffix("repodata/repomd.xml") {
                            if usable(base, allow_http) {
                                urls.push((base.to_owned(), preference));
                            }
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_repomd {
        return Err(RpmError::Upstream(
            "the metalink has no <file name=\"repomd.xml\">".into(),
        ));
    }
    if main.is_empty() {
        return Err(RpmError::Upstream(
            "the metalink vouches for repomd.xml with no SHA-256, SHA-384 or SHA-512 hash".into(),
        ));
    }
    // Highest preference first; the list's own order among equals.
    urls.sort_by_key(|u| std::cmp::Reverse(u.1));
    let bases: Vec<String> = urls.into_iter().map(|(u, _)| u).collect();
    if bases.is_empty() {
        return Err(RpmError::Upstream(format!(
            "the metalink names no {} mirror of repodata/repomd.xml",
            if allow_http { "http(s)" } else { "https" }
        )));
    }
    let mut repomd_hashes = vec![main];
    repomd_hashes.extend(alternates);
    Ok(MirrorList {
        bases,
        repomd_hashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> String {
        let mut h = ChecksumHasher::new(ChecksumKind::Sha256);
        h.update(b);
        h.finish().hex().to_owned()
    }

    fn metalink(current: &[u8], older: &[u8]) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="other.xml"><resources><url protocol="https" preference="100">https://wrong.test/repodata/repomd.xml</url></resources></file>
  <file name="repomd.xml">
   <mm0:timestamp>1700000000</mm0:timestamp>
   <size>{}</size>
   <verification>
    <hash type="md5">00000000000000000000000000000000</hash>
    <hash type="sha256">{}</hash>
   </verification>
   <mm0:alternates>
    <mm0:alternate>
     <mm0:timestamp>1690000000</mm0:timestamp>
     <verification><hash type="sha256">{}</hash></verification>
    </mm0:alternate>
   </mm0:alternates>
   <resources maxconnections="1">
    <url protocol="rsync" type="rsync" preference="100">rsync://a.test/os/repodata/repomd.xml</url>
    <url protocol="http" type="http" location="DE" preference="99">http://b.test/os/repodata/repomd.xml</url>
    <url protocol="https" type="https" location="US" preference="98">https://c.test/os/repodata/repomd.xml</url>
    <url protocol="https" type="https" location="US" preference="100">https://d.test/os/repodata/repomd.xml</url>
   </resources>
  </file>
 </files>
</metalink>"#,
            current.len(),
            sha256(current),
            sha256(older)
        )
    }

    #[test]
    fn a_metalink_lists_its_mirrors_by_preference_and_vouches_by_strong_hashes() {
        let xml = metalink(b"current", b"older");
        let list = parse_metalink(xml.as_bytes(), false).unwrap();
        assert_eq!(list.bases, ["https://d.test/os/", "https://c.test/os/"]);
        let with_http = parse_metalink(xml.as_bytes(), true).unwrap();
        assert_eq!(
            with_http.bases,
            [
                "https://d.test/os/",
                "http://b.test/os/",
                "https://c.test/os/"
            ]
        );
        // The md5 is ignored: only the SHA-256 decides.
        assert_eq!(list.repomd_hashes[0].len(), 1);
        assert!(list.vouches_for(ListKind::Metalink, b"current"));
        assert!(list.vouches_for(ListKind::Metalink, b"older"));
        assert!(!list.vouches_for(ListKind::Metalink, b"tampered"));
    }

    #[test]
    fn a_metalink_without_repomd_strong_hashes_or_usable_mirrors_is_refused() {
        assert!(parse_metalink(b"<metalink><files/></metalink>", true).is_err());
        let weak = r#"<metalink><files><file name="repomd.xml"><verification>
            <hash type="md5">00</hash><hash type="sha1">00</hash></verification>
            <resources><url protocol="https">https://a.test/repodata/repomd.xml</url></resources>
            </file></files></metalink>"#;
        let e = parse_metalink(weak.as_bytes(), true).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        let xml = metalink(b"a", b"b").replace("https://", "ftp://");
        assert!(parse_metalink(xml.as_bytes(), false).is_err());
        assert!(parse_metalink(b"<metalink><files><file", true).is_err());
    }

    #[test]
    fn a_mirrorlist_is_base_urls_in_order() {
        let text = "# repo = fedora-40 arch = x86_64\n\nhttps://a.test/os\nhttp://b.test/os/\nftp://c.test/os/\n";
        let list = parse_mirrorlist(text, true).unwrap();
        assert_eq!(list.bases, ["https://a.test/os/", "http://b.test/os/"]);
        assert!(list.vouches_for(ListKind::Mirrorlist, b"anything"));
        assert!(parse_mirrorlist("http://b.test/os/\n", false).is_err());
    }
}
