//! Streaming primary.xml: every package's identity, location, checksum and size.
//!
//! Primary of a large distribution is hundreds of MB decompressed, so it is
//! never held whole: quick-xml reads events from a `BufRead` over the
//! decompressor, the fields a mirror needs are picked out of each `<package>`,
//! and the caller gets one [`PackageEntry`] at a time. Everything inside
//! `<format>` (dependencies, file lists) is skipped without being kept.

use std::io::BufRead;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::checksum::Checksum;
use crate::location::Location;
use crate::xml::{attribute, number, xml_error};
use crate::RpmError;

/// What a mirror needs to know of one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    /// `<name>`
    pub name: String,
    /// `<arch>`
    pub arch: String,
    /// `<version epoch=…>`, `0` when absent.
    pub epoch: String,
    /// `<version ver=…>`
    pub version: String,
    /// `<version rel=…>`
    pub release: String,
    /// `<location>`
    pub location: Location,
    /// `<checksum>` of the package file.
    pub checksum: Checksum,
    /// `<size package=…>`: the package file's size.
    pub size: u64,
}

impl PackageEntry {
    /// `name-[epoch:]version-release.arch`, as dnf prints it.
    pub fn nevra(&self) -> String {
        if self.epoch.is_empty() || self.epoch == "0" {
            format!(
                "{}-{}-{}.{}",
                self.name, self.version, self.release, self.arch
            )
        } else {
            format!(
                "{}-{}:{}-{}.{}",
                self.name, self.epoch, self.version, self.release, self.arch
            )
        }
    }
}

#[derive(Default)]
struct Partial {
    name: Option<String>,
    arch: Option<String>,
    epoch: String,
    version: String,
    release: String,
    location: Option<Location>,
    checksum: Option<Checksum>,
    size: Option<u64>,
}

impl Partial {
    fn finish(self, index: u64) -> Result<PackageEntry, RpmError> {
        let who = self
            .name
            .clone()
            .unwrap_or_else(|| format!("package #{index}"));
        let missing = |what: &str| RpmError::Metadata(format!("primary: {who} has no {what}"));
        Ok(PackageEntry {
            arch: self.arch.clone().ok_or_else(|| missing("<arch>"))?,
            location: self.location.clone().ok_or_else(|| missing("<location>"))?,
            checksum: self.checksum.clone().ok_or_else(|| missing("<checksum>"))?,
            size: self.size.ok_or_else(|| missing("<size package=…>"))?,
            name: self.name.ok_or_else(|| missing("<name>"))?,
            epoch: self.epoch,
            version: self.version,
            release: self.release,
        })
    }
}

/// Reads every `<package>` of a decompressed primary.xml, calling `each` with
/// it in document order; returns how many there were. An error from `each`
/// stops the walk and is returned.
pub fn for_each_package<R: BufRead>(
    input: R,
    mut each: impl FnMut(PackageEntry) -> Result<(), RpmError>,
) -> Result<u64, RpmError> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut current: Option<Partial> = None;
    let mut count = 0u64;
    // Depth inside the current <package>: 1 for its own children.
    let mut depth = 0u32;
    let mut element: Vec<u8> = Vec::new();
    let mut checksum_type = String::new();
    let mut text = String::new();
    let mut saw_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| xml_error("primary", e))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = e.name();
                let name = name.as_ref();
                match current.as_mut() {
                    None if name == b"metadata" => saw_root = true,
                    None if name == b"package" => {
                        if empty {
                            return Err(RpmError::Metadata(format!(
                                "primary: package #{} is empty",
                                count + 1
                            )));
                        }
                        current = Some(Partial::default());
                        depth = 0;
                    }
                    Some(p) if depth == 0 => match name {
                        b"version" => {
                            p.epoch = attribute(e, b"epoch")?.unwrap_or_default();
                            p.version = attribute(e, b"ver")?.unwrap_or_default();
                            p.release = attribute(e, b"rel")?.unwrap_or_default();
                        }
                        b"location" => {
                            p.location = Some(Location {
                                href: attribute(e, b"href")?.ok_or_else(|| {
                                    RpmError::Metadata(format!(
                                        "primary: {} has a location without href",
                                        p.name.as_deref().unwrap_or("a package")
                                    ))
                                })?,
                                xml_base: attribute(e, b"xml:base")?,
                            })
                        }
                        b"size" => {
                            if let Some(s) = attribute(e, b"package")? {
                                p.size = Some(number(&s, "primary <size package>")?);
                            }
                        }
                        b"checksum" => checksum_type = attribute(e, b"type")?.unwrap_or_default(),
                        _ => {}
                    },
                    _ => {}
                }
                if current.is_some() && !empty && name != b"package" {
                    if depth == 0 {
                        element.clear();
                        element.extend_from_slice(name);
                        text.clear();
                    }
                    depth += 1;
                }
            }
            Event::Text(t) if current.is_some() && depth == 1 => {
                text.push_str(&t.unescape().map_err(|e| xml_error("primary", e))?);
            }
            Event::CData(t) if current.is_some() && depth == 1 => {
                text.push_str(&String::from_utf8_lossy(&t));
            }
            Event::End(e) => {
                if let Some(p) = current.as_mut() {
                    if depth == 0 {
                        // </package>
                        count += 1;
                        let entry = current.take().map(|p| p.finish(count)).transpose()?;
                        if let Some(entry) = entry {
                            each(entry)?;
                        }
                    } else {
                        depth -= 1;
                        if depth == 0 && e.name().as_ref() == element.as_slice() {
                            let value = text.trim();
                            match element.as_slice() {
                                b"name" => p.name = Some(value.to_owned()),
                                b"arch" => p.arch = Some(value.to_owned()),
                                b"checksum" => {
                                    p.checksum =
                                        Some(Checksum::new(&checksum_type, value).map_err(|e| {
                                            RpmError::Metadata(format!(
                                                "primary: {}: {e}",
                                                p.name.as_deref().unwrap_or("a package")
                                            ))
                                        })?)
                                }
                                _ => {}
                            }
                            text.clear();
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if current.is_some() {
        return Err(RpmError::Metadata(
            "primary: the document ends inside a <package>".into(),
        ));
    }
    if !saw_root {
        return Err(RpmError::Metadata(
            "primary: no <metadata> element (is this primary.xml?)".into(),
        ));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm">
  <name>hello</name>
  <arch>noarch</arch>
  <version epoch="2" ver="1.0" rel="1"/>
  <checksum type="sha256" pkgid="YES">d1c00bdebf73a5a44eab9229e72a3dc88ba49e3163a4977bfc035efad9733bf8</checksum>
  <summary>test &amp; more</summary>
  <size package="6062" installed="3" archive="260"/>
  <location href="noarch/hello-1.0-1.noarch.rpm"/>
  <format>
    <rpm:provides><rpm:entry name="hello" flags="EQ" epoch="2" ver="1.0" rel="1"/></rpm:provides>
    <file>/usr/share/hello/name</file>
  </format>
</package>
<package type="rpm">
  <name>a&amp;b</name>
  <arch>x86_64</arch>
  <version ver="3" rel="4.el9"/>
  <checksum type="sha">da39a3ee5e6b4b0d3255bfef95601890afd80709</checksum>
  <size package="1"/>
  <location xml:base="http://m/" href="Packages/a.rpm"/>
  <format><rpm:license>x</rpm:license></format>
</package>
</metadata>"#;

    #[test]
    fn packages_are_read_one_at_a_time() {
        let mut seen = Vec::new();
        let n = for_each_package(SAMPLE.as_bytes(), |p| {
            seen.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen[0].nevra(), "hello-2:1.0-1.noarch");
        assert_eq!(seen[0].location.href, "noarch/hello-1.0-1.noarch.rpm");
        assert_eq!(seen[0].size, 6062);
        assert_eq!(seen[1].name, "a&b");
        assert_eq!(seen[1].nevra(), "a&b-3-4.el9.x86_64");
        assert_eq!(seen[1].location.xml_base.as_deref(), Some("http://m/"));
    }

    #[test]
    fn incomplete_packages_are_refused_by_name() {
        let doc = "<metadata><package><name>lonely</name><arch>noarch</arch></package></metadata>";
        let err = for_each_package(doc.as_bytes(), |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lonely") && err.contains("location"), "{err}");
        let err = for_each_package("<metadata><package><name>x</name>".as_bytes(), |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends inside"), "{err}");
    }
}
