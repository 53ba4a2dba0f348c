//! `repodata/repomd.xml`: the index of a repository's metadata files.
//!
//! Every `<data type=…>` record is kept, known type or not (primary,
//! filelists, other, their sqlite and zchunk forms, group, updateinfo,
//! modules, and whatever comes next): a mirror copies each byte for byte and
//! needs only its location, checksum and size. Only primary is ever parsed.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::checksum::Checksum;
use crate::location::Location;
use crate::xml::{attribute, number, xml_error};
use crate::RpmError;

/// The largest repomd.xml read (real ones are a few KiB).
pub const MAX_REPOMD_BYTES: u64 = 16 << 20;

/// A parsed repomd.xml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repomd {
    /// `<revision>`, when present.
    pub revision: Option<String>,
    /// Every `<data>` record, in document order.
    pub records: Vec<DataRecord>,
}

/// One `<data type=…>` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    /// The `type` attribute (`primary`, `filelists`, `group`, `updateinfo`, …).
    pub kind: String,
    /// `<location href=… xml:base=…>`.
    pub location: Location,
    /// `<checksum>` of the file as stored.
    pub checksum: Checksum,
    /// `<open-checksum>` of the decompressed file.
    pub open_checksum: Option<Checksum>,
    /// `<size>` of the file as stored.
    pub size: Option<u64>,
    /// `<open-size>` decompressed.
    pub open_size: Option<u64>,
    /// `<timestamp>` (unix seconds; createrepo_c may write a fraction, which is dropped).
    pub timestamp: Option<i64>,
}

#[derive(Default)]
struct Partial {
    kind: String,
    location: Option<Location>,
    checksum: Option<Checksum>,
    open_checksum: Option<Checksum>,
    size: Option<u64>,
    open_size: Option<u64>,
    timestamp: Option<i64>,
}

impl Repomd {
    /// Parses a repomd.xml document.
    pub fn parse(bytes: &[u8]) -> Result<Repomd, RpmError> {
        let mut reader = Reader::from_reader(bytes);
        let mut buf = Vec::new();
        let mut revision = None;
        let mut records = Vec::new();
        let mut current: Option<Partial> = None;
        // The element whose text is being read, and the checksum type it announced.
        let mut element: Vec<u8> = Vec::new();
        let mut checksum_type = String::new();
        let mut text = String::new();
        let mut saw_root = false;
        loop {
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| xml_error("repomd.xml", e))?;
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let name = e.name().as_ref().to_vec();
                    let empty = matches!(event, Event::Empty(_));
                    match (name.as_slice(), current.as_mut()) {
                        (b"repomd", None) => saw_root = true,
                        (b"data", None) => {
                            current = Some(Partial {
                                kind: attribute(e, b"type")?.ok_or_else(|| {
                                    RpmError::Metadata("repomd.xml: a <data> has no type".into())
                                })?,
                                ..Partial::default()
                            })
                        }
                        (b"location", Some(record)) => {
                            record.location = Some(Location {
                                href: attribute(e, b"href")?.ok_or_else(|| {
                                    RpmError::Metadata(format!(
                                        "repomd.xml: <data type={:?}> has a location without href",
                                        record.kind
                                    ))
                                })?,
                                xml_base: attribute(e, b"xml:base")?,
                            })
                        }
                        (b"checksum" | b"open-checksum", Some(_)) => {
                            checksum_type = attribute(e, b"type")?.unwrap_or_default();
                        }
                        _ => {}
                    }
                    if !empty {
                        element = name;
                        text.clear();
                    }
                }
                Event::Text(t) => {
                    text.push_str(&t.unescape().map_err(|e| xml_error("repomd.xml", e))?);
                }
                Event::End(e) => {
                    let name = e.name();
                    let name = name.as_ref();
                    if name == b"data" {
                        if let Some(p) = current.take() {
                            records.push(finish(p)?);
                        }
                    } else if name == element.as_slice() {
                        let value = text.trim();
                        match (name, current.as_mut()) {
                            (b"revision", None) => revision = Some(value.to_owned()),
                            (b"checksum", Some(r)) => {
                                r.checksum = Some(Checksum::new(&checksum_type, value)?)
                            }
                            (b"open-checksum", Some(r)) => {
                                r.open_checksum = Some(Checksum::new(&checksum_type, value)?)
                            }
                            (b"size", Some(r)) => r.size = Some(number(value, "repomd.xml size")?),
                            (b"open-size", Some(r)) => {
                                r.open_size = Some(number(value, "repomd.xml open-size")?)
                            }
                            (b"timestamp", Some(r)) => {
                                let whole = value.split('.').next().unwrap_or(value);
                                r.timestamp = Some(number(whole, "repomd.xml timestamp")?)
                            }
                            _ => {}
                        }
                        element.clear();
                    }
                    text.clear();
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if !saw_root {
            return Err(RpmError::Metadata(
                "repomd.xml: no <repomd> element (is this an rpm-md repository?)".into(),
            ));
        }
        Ok(Repomd { revision, records })
    }

    /// The record of a type, if any.
    pub fn record(&self, kind: &str) -> Option<&DataRecord> {
        self.records.iter().find(|r| r.kind == kind)
    }
}

fn finish(p: Partial) -> Result<DataRecord, RpmError> {
    let missing = |what: &str| {
        RpmError::Metadata(format!(
            "repomd.xml: <data type={:?}> has no {what}",
            p.kind
        ))
    };
    Ok(DataRecord {
        location: p.location.clone().ok_or_else(|| missing("location"))?,
        checksum: p.checksum.clone().ok_or_else(|| missing("checksum"))?,
        open_checksum: p.open_checksum,
        size: p.size,
        open_size: p.open_size,
        timestamp: p.timestamp,
        kind: p.kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1796146667</revision>
  <tags><content>binary-x86_64</content></tags>
  <data type="primary">
    <checksum type="sha256">a9262944f538ef6d5c92910d77e11d4af2ee6f78ae547ec31662929d44120ae7</checksum>
    <open-checksum type="sha256">fcc1d5492fba6968756dfe27c00adca6f20a4c42a16dd2c40170616d99c9877b</open-checksum>
    <location href="repodata/a9-primary.xml.gz"/>
    <timestamp>1796146665</timestamp>
    <size>556</size>
    <open-size>1096</open-size>
  </data>
  <data type="x-future">
    <checksum type="sha">da39a3ee5e6b4b0d3255bfef95601890afd80709</checksum>
    <location xml:base="http://elsewhere/" href="repodata/future.bin"/>
    <timestamp>1796146665.25</timestamp>
  </data>
</repomd>"#;

    #[test]
    fn every_record_is_read_including_unknown_types() {
        let md = Repomd::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(md.revision.as_deref(), Some("1796146667"));
        assert_eq!(md.records.len(), 2);
        let primary = md.record("primary").unwrap();
        assert_eq!(primary.location.href, "repodata/a9-primary.xml.gz");
        assert_eq!(primary.size, Some(556));
        assert_eq!(primary.open_size, Some(1096));
        assert_eq!(primary.timestamp, Some(1796146665));
        assert!(primary.open_checksum.is_some());
        let future = md.record("x-future").unwrap();
        assert_eq!(
            future.location.xml_base.as_deref(),
            Some("http://elsewhere/")
        );
        assert_eq!(future.timestamp, Some(1796146665));
        assert_eq!(future.size, None);
    }

    #[test]
    fn broken_documents_are_refused_with_a_message() {
        for (doc, needle) in [
            ("<html></html>", "no <repomd>"),
            ("<repomd><data type=\"primary\"><location href=\"x\"/></data></repomd>", "no checksum"),
            ("<repomd><data type=\"primary\"><checksum type=\"sha256\">zz</checksum></data></repomd>", "hex"),
            ("<repomd><data type=\"primary\"></repomd>", "XML"),
        ] {
            let err = Repomd::parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
