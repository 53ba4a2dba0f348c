//! Manifest parsing and validation.
//!
//! The stored bytes are always exactly the bytes pushed; parsing only extracts
//! what the registry must check (references, subject) and index (artifact type,
//! annotations). Unknown fields are allowed, as the image spec requires.

use std::collections::BTreeMap;

use serde::Deserialize;
use wharf_core::{Digest, Tag};
use wharf_meta::ReferenceKind;

use crate::{media, OciError};

/// What the registry needs to know of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// Its media type, from the body or else the request's `Content-Type`.
    pub media_type: String,
    /// Blobs and child manifests it references, with their claimed sizes.
    pub references: Vec<(Digest, ReferenceKind, u64)>,
    /// Its `subject`, if any.
    pub subject: Option<Digest>,
    /// `artifactType`, or for image manifests the config's media type.
    pub artifact_type: Option<String>,
    /// `annotations` re-encoded as JSON text.
    pub annotations: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    /// `None`: absent (then inferred); `Some(None)`: an explicit `null`, which
    /// is not a media type and is refused rather than mistaken for absence.
    #[serde(default, deserialize_with = "present")]
    media_type: Option<Option<String>>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Deserializes a field that is present (possibly `null`) as `Some`.
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

fn invalid(msg: impl Into<String>) -> String {
    msg.into()
}

fn descriptor(d: &RawDescriptor, what: &str) -> Result<(Digest, u64), String> {
    let digest = Digest::parse(&d.digest)
        .map_err(|e| invalid(format!("{what}: digest {:?}: {e}", d.digest)))?;
    if d.size < 0 {
        return Err(invalid(format!("{what}: negative size")));
    }
    match &d.media_type {
        Some(mt) if !mt.is_empty() => {}
        _ => return Err(invalid(format!("{what}: missing mediaType"))),
    }
    Ok((digest, d.size as u64))
}

/// Parses and validates manifest bytes; errors are human-readable reasons for
/// a `MANIFEST_INVALID` response.
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, String> {
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(invalid(
            "schemaVersion must be 2 (schema 1 manifests are not supported)",
        ));
    }
    let header_type = content_type
        .map(media::essence)
        .filter(|ct| media::is_manifest(ct));
    let media_type = match (&raw.media_type, header_type) {
        (Some(None), _) => return Err(invalid("mediaType is null; it must be a string")),
        (Some(Some(mt)), _) => mt.clone(),
        (None, Some(ct)) => ct.to_owned(),
        // The OCI image spec made mediaType optional early on; infer from shape.
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => media::OCI_MANIFEST.to_owned(),
        (None, None) => return Err(invalid("cannot tell the manifest's media type")),
    };
    if !media::is_manifest(&media_type) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type:?}"
        )));
    }
    let mut references = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    if media::is_index(&media_type) {
        let manifests = raw
            .manifests
            .as_ref()
            .ok_or_else(|| invalid("index without a manifests array"))?;
        for (i, d) in manifests.iter().enumerate() {
            let (digest, size) = descriptor(d, &format!("manifests[{i}]"))?;
            references.push((digest, ReferenceKind::Manifest, size));
        }
    } else {
        let config = raw
            .config
            .as_ref()
            .ok_or_else(|| invalid("image manifest without a config"))?;
        let (digest, size) = descriptor(config, "config")?;
        references.push((digest, ReferenceKind::Blob, size));
        if artifact_type.is_none() {
            artifact_type = config.media_type.clone();
        }
        let layers = raw
            .layers
            .as_ref()
            .ok_or_else(|| invalid("image manifest without a layers array"))?;
        for (i, d) in layers.iter().enumerate() {
            let (digest, size) = descriptor(d, &format!("layers[{i}]"))?;
            // Non-distributable layers are fetched from their URLs, never pushed.
            let foreign =
                !d.urls.is_empty() || d.media_type.as_deref() == Some(media::DOCKER_FOREIGN_LAYER);
            if !foreign {
                references.push((digest, ReferenceKind::Blob, size));
            }
        }
    }
    let subject = match &raw.subject {
        Some(d) => Some(descriptor(d, "subject")?.0),
        None => None,
    };
    let annotations = match &raw.annotations {
        Some(a) if !a.is_empty() => {
            Some(serde_json::to_string(a).map_err(|e| invalid(e.to_string()))?)
        }
        _ => None,
    };
    references.sort_by(|a, b| a.0.cmp(&b.0));
    references.dedup_by(|a, b| a.0 == b.0);
    Ok(ParsedManifest {
        media_type,
        references,
        subject,
        artifact_type,
        annotations,
    })
}

/// The most `?tag=` tags one manifest push may carry. The spec asks for at
/// least 10 and lets a registry answer 414 past its limit; a hundred keeps the
/// request line and the one transaction that moves them all small.
pub const MAX_TAG_PARAMS: usize = 100;

/// Validates the `?tag=` values of a manifest push (spec: end-7b), in request
/// order and without repeats. One bad value refuses the whole push, so a client
/// never has a manifest that carries only some of the tags it asked for.
pub fn tag_params<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Tag>, OciError> {
    let mut tags: Vec<Tag> = Vec::new();
    let mut count = 0;
    for value in values {
        count += 1;
        let tag = Tag::parse(value).map_err(|_| {
            OciError::TagInvalid(format!(
                "{value:?} is not a tag (one of [a-zA-Z0-9_] then up to 127 of [a-zA-Z0-9._-])"
            ))
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if count > MAX_TAG_PARAMS {
        return Err(OciError::TooManyTags {
            count,
            limit: MAX_TAG_PARAMS,
        });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_params_keep_order_drop_repeats_and_refuse_bad_values() {
        let tags = tag_params(["1.2.3", "1.2", "latest", "1.2"]).unwrap();
        let names: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        assert_eq!(names, ["1.2.3", "1.2", "latest"]);
        assert!(tag_params([]).unwrap().is_empty());
        let too_long = "a".repeat(129);
        for bad in ["", ".dot", "-dash", "a/b", "a:b", "a b", too_long.as_str()] {
            assert!(
                matches!(tag_params(["ok", bad]), Err(OciError::TagInvalid(_))),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_TAG_PARAMS).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            tag_params(many.iter().map(String::as_str)),
            Err(OciError::TooManyTags { count, .. }) if count == MAX_TAG_PARAMS + 1
        ));
        assert_eq!(
            tag_params(many[..MAX_TAG_PARAMS].iter().map(String::as_str))
                .unwrap()
                .len(),
            MAX_TAG_PARAMS
        );
    }

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn image_manifest_with_subject_and_foreign_layer() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{CFG}","size":2}},
            "layers":[{{"mediaType":"x","digest":"{CFG}","size":2,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{}","digest":"{CFG}","size":2}},"annotations":{{"a":"b"}}}}"#,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        let m = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(m.references.len(), 1);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.empty.v1+json")
        );
        assert!(m.subject.is_some());
        assert_eq!(m.annotations.as_deref(), Some(r#"{"a":"b"}"#));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "not json",
            "{}",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#,
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"a","digest":"sha256:00","size":1}]}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":-1},"layers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":null,"config":{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#,
        ] {
            assert!(parse_manifest(bad.as_bytes(), None).is_err(), "{bad}");
        }
    }
}
