//! Where a file sits in an rpm-md tree, and which locations an exact mirror refuses.
//!
//! An exact mirror stores every file at the same relative path as upstream, so a
//! location must name a file *inside* the tree: `xml:base` (which points a
//! client elsewhere, and which some mirrors silently strip, breaking
//! repositories), absolute paths, URLs and `..` components are refused with a
//! message naming what carried them.

use crate::RpmError;

/// A location read from repomd.xml or primary: the `href` and any `xml:base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The `href` attribute as written (XML-unescaped).
    pub href: String,
    /// The `xml:base` attribute, when present.
    pub xml_base: Option<String>,
}

impl Location {
    /// The relative path inside the tree, or why an exact mirror cannot keep
    /// this location; `what` names the record or package for the message.
    pub fn relative_path(&self, what: &str) -> Result<&str, RpmError> {
        if let Some(base) = &self.xml_base {
            return Err(RpmError::Location(format!(
                "{what}: location has xml:base={base:?}, which points outside the repository; \
                 an exact mirror keeps only files inside the tree"
            )));
        }
        let href = self.href.as_str();
        let refuse = |why: &str| {
            Err(RpmError::Location(format!(
                "{what}: location href {href:?} {why}; an exact mirror keeps only relative paths inside the tree"
            )))
        };
        if href.contains("://") {
            return refuse("is a URL");
        }
        if href.starts_with('/') {
            return refuse("is absolute");
        }
        if href.split('/').any(|c| c == "..") {
            return refuse("climbs out with ..");
        }
        let bad_component = href
            .split('/')
            .any(|c| c.is_empty() || c == "." || c.len() > 255);
        if bad_component || href.contains(['\0', '\\']) || href.len() > 4096 {
            return refuse("is not a plain relative path");
        }
        Ok(href)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(href: &str) -> Location {
        Location {
            href: href.into(),
            xml_base: None,
        }
    }

    #[test]
    fn hostile_locations_are_refused_naming_the_package() {
        assert_eq!(
            at("Packages/h/hello-1.0-1.noarch.rpm")
                .relative_path("hello")
                .unwrap(),
            "Packages/h/hello-1.0-1.noarch.rpm"
        );
        for bad in [
            "../evil.rpm",
            "a/../../b.rpm",
            "/etc/passwd",
            "http://elsewhere/x.rpm",
            "a//b.rpm",
            "",
        ] {
            let err = at(bad).relative_path("pkg-9").unwrap_err().to_string();
            assert!(err.contains("pkg-9"), "{err}");
        }
        let based = Location {
            href: "x.rpm".into(),
            xml_base: Some("http://other/".into()),
        };
        let err = based.relative_path("hello-1.0").unwrap_err().to_string();
        assert!(
            err.contains("xml:base") && err.contains("hello-1.0"),
            "{err}"
        );
    }
}
