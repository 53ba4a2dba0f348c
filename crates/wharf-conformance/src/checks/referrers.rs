//! The referrers API (end-12a, end-12b) and the `OCI-Subject` header on pushes with `subject`.
//!
//! Each check pushes a fresh subject, so the exact set of referrers is known. A registry
//! without the API answers 404 ("If the registry supports the referrers API, the registry MUST
//! NOT return a 404"), which is reported under the `referrers` feature.

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::manifests::empty_descriptor;
use crate::assert;
use crate::client::Resp;
use crate::content::{self, fields, media, Blob, Manifest};
use crate::context::Ctx;
use crate::fixtures::{next_link, push_blob, push_image, push_manifest, put_manifest, repo_path};
use crate::outcome::{ensure, fail, Failure, Feature, Outcome};
use crate::runner::{check, Check};

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIGNATURE: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "referrers.push.oci-subject",
            "PUT of a manifest with subject answers 201 with OCI-Subject: <subject digest>",
            oci_subject
        ),
        check!(
            "referrers.push.subject-missing",
            "a manifest whose subject does not exist yet is accepted (201) and listed",
            subject_missing
        ),
        check!(
            "referrers.list",
            "referrers answers an image index listing each referrer with artifactType and annotations",
            list
        ),
        check!(
            "referrers.list.index",
            "an index with subject is listed with its annotations and without artifactType",
            list_index
        ),
        check!(
            "referrers.filter",
            "?artifactType= returns only matches and sets OCI-Filters-Applied: artifactType",
            filter
        ),
        check!(
            "referrers.empty",
            "referrers of a digest without referrers answers 200 with manifests: []",
            empty
        ),
        check!(
            "referrers.after-delete",
            "a deleted referrer disappears from the referrers list",
            after_delete
        ),
        check!(
            "referrers.invalid-digest",
            "referrers of a malformed digest answers 400",
            invalid_digest
        ),
    ]
}

/// A referrer and the descriptor the referrers list must show for it.
struct Referrer {
    manifest: Manifest,
    artifact_type: Option<&'static str>,
    annotations: Value,
}

fn repo(ctx: &Ctx) -> String {
    ctx.sub_repo("referrers")
}

/// Pushes a subject image and returns its manifest.
async fn subject(ctx: &Ctx) -> Result<Manifest, Failure> {
    Ok(push_image(ctx, &repo(ctx), None).await?.manifest)
}

/// An artifact manifest (empty config, one payload layer) pointing at `subject`.
async fn artifact(
    ctx: &Ctx,
    subject: &Value,
    artifact_type: &'static str,
) -> Result<Referrer, Failure> {
    let repo = repo(ctx);
    push_blob(ctx, &repo, &Blob::empty_json()).await?;
    let payload = Blob::layer("application/vnd.example.payload", 128);
    push_blob(ctx, &repo, &payload).await?;
    let annotations = json!({
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "org.example.conformance.kind": artifact_type,
    });
    let manifest = content::image_manifest(
        media::OCI_MANIFEST,
        &empty_descriptor(),
        &[payload.descriptor()],
        fields([
            ("artifactType", json!(artifact_type)),
            ("subject", subject.clone()),
            ("annotations", annotations.clone()),
        ]),
    );
    Ok(Referrer {
        manifest,
        artifact_type: Some(artifact_type),
        annotations,
    })
}

/// Pushes a referrer by digest and checks the `OCI-Subject` header.
async fn push_referrer(ctx: &Ctx, referrer: &Referrer, subject_digest: &str) -> Outcome {
    let resp = push_manifest(
        ctx,
        &repo(ctx),
        &referrer.manifest.digest,
        &referrer.manifest,
    )
    .await?;
    oci_subject_header(ctx, &resp, subject_digest)
}

fn oci_subject_header(ctx: &Ctx, resp: &Resp, subject_digest: &str) -> Outcome {
    // "a registry implementation that supports the referrers API MUST respond with the
    // response header OCI-Subject: <subject digest>".
    match resp.header("OCI-Subject") {
        Some(got) => {
            ensure!(
                got == subject_digest,
                "{}: OCI-Subject is {got}, expected {subject_digest}",
                resp.summary()
            );
            Ok(())
        }
        None => ctx.missing(
            Feature::Referrers,
            format!("{}: no OCI-Subject header", resp.summary()),
        ),
    }
}

/// GETs the referrers list through every `Link` page; `None` when the API is absent and that
/// is allowed.
async fn referrers(
    ctx: &Ctx,
    digest: &str,
    query: &str,
) -> Result<Option<(Resp, Vec<Value>)>, Failure> {
    let path = repo_path(&repo(ctx), &format!("referrers/{digest}{query}"));
    let first = ctx.client.call(Method::GET, &path).await?;
    if first.status == 404 {
        ctx.missing(
            Feature::Referrers,
            format!("{}: {}", first.summary(), first.snippet()),
        )?;
        return Ok(None);
    }
    let mut descriptors = index_page(&first)?;
    let mut next = next_link(&first)?;
    for _ in 0..20 {
        let Some(link) = next else {
            return Ok(Some((first, descriptors)));
        };
        let url = ctx.client.resolve(&link)?;
        let resp = ctx
            .client
            .send(ctx.client.request_url(Method::GET, url))
            .await?;
        descriptors.extend(index_page(&resp)?);
        next = next_link(&resp)?;
    }
    fail!("referrers list still paginating after 20 pages")
}

/// One referrers response: 200, the index content type, and an index body.
fn index_page(resp: &Resp) -> Result<Vec<Value>, Failure> {
    assert::status(resp, &[200])?;
    let content_type = resp.content_type().unwrap_or("(none)");
    ensure!(
        content_type == media::OCI_INDEX,
        "{}: Content-Type {content_type}, expected {}",
        resp.summary(),
        media::OCI_INDEX
    );
    let value = resp.json()?;
    ensure!(
        value.get("schemaVersion") == Some(&json!(2)),
        "{}: index schemaVersion is not 2",
        resp.summary()
    );
    if let Some(media_type) = value.get("mediaType") {
        ensure!(
            media_type == media::OCI_INDEX,
            "{}: index mediaType is {media_type}",
            resp.summary()
        );
    }
    match value.get("manifests").and_then(|it| it.as_array()) {
        Some(list) => Ok(list.clone()),
        None => fail!(
            "{}: no \"manifests\" array: {}",
            resp.summary(),
            resp.snippet()
        ),
    }
}

/// The list must hold exactly the expected referrers, each described as the spec requires.
fn expect_referrers(found: &[Value], expected: &[&Referrer]) -> Outcome {
    let found_digests: Vec<&str> = found
        .iter()
        .filter_map(|it| it.get("digest").and_then(|d| d.as_str()))
        .collect();
    let expected_digests: Vec<&str> = expected
        .iter()
        .map(|it| it.manifest.digest.as_str())
        .collect();
    ensure!(
        found.len() == expected.len()
            && expected_digests.iter().all(|it| found_digests.contains(it)),
        "referrers are {found_digests:?}, expected {expected_digests:?}"
    );
    for referrer in expected {
        let manifest = &referrer.manifest;
        let Some(desc) = found
            .iter()
            .find(|it| it.get("digest").and_then(|d| d.as_str()) == Some(&manifest.digest))
        else {
            fail!("referrer {} missing", manifest.digest);
        };
        ensure!(
            desc.get("mediaType").and_then(|it| it.as_str()) == Some(manifest.media_type.as_str()),
            "descriptor of {} has mediaType {:?}, expected {}",
            manifest.digest,
            desc.get("mediaType"),
            manifest.media_type
        );
        ensure!(
            desc.get("size").and_then(|it| it.as_u64()) == Some(manifest.bytes.len() as u64),
            "descriptor of {} has size {:?}, expected {}",
            manifest.digest,
            desc.get("size"),
            manifest.bytes.len()
        );
        let artifact_type = desc.get("artifactType").and_then(|it| it.as_str());
        ensure!(
            artifact_type == referrer.artifact_type,
            "descriptor of {} has artifactType {artifact_type:?}, expected {:?}",
            manifest.digest,
            referrer.artifact_type
        );
        // "The descriptors MUST include annotations from the image manifest or index."
        let empty = Value::Object(Map::new());
        let annotations = desc.get("annotations").unwrap_or(&empty);
        ensure!(
            annotations == &referrer.annotations,
            "descriptor of {} has annotations {annotations}, expected {}",
            manifest.digest,
            referrer.annotations
        );
    }
    Ok(())
}

async fn oci_subject(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    let referrer = artifact(ctx, &subject.descriptor(), SBOM).await?;
    push_referrer(ctx, &referrer, &subject.digest).await
}

async fn subject_missing(ctx: &Ctx) -> Outcome {
    // A subject that is never pushed: "A registry MUST initially accept an otherwise valid
    // manifest with a subject field that references a manifest that does not exist".
    let absent = Manifest::from_bytes(media::OCI_MANIFEST, content::unique_bytes(200));
    let referrer = artifact(ctx, &absent.descriptor(), SBOM).await?;
    let resp = put_manifest(
        ctx,
        &repo(ctx),
        &referrer.manifest.digest,
        &referrer.manifest,
    )
    .await?;
    assert::status(&resp, &[201])?;
    oci_subject_header(ctx, &resp, &absent.digest)?;
    let Some((_, found)) = referrers(ctx, &absent.digest, "").await? else {
        return Ok(());
    };
    expect_referrers(&found, &[&referrer])
}

async fn list(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    let sbom = artifact(ctx, &subject.descriptor(), SBOM).await?;
    let signature = artifact(ctx, &subject.descriptor(), SIGNATURE).await?;
    // An image manifest without artifactType: "the value of artifactType MUST be set to the
    // config descriptor mediaType value".
    let repo = repo(ctx);
    let config = Blob::new(CUSTOM_CONFIG, content::unique_bytes(64));
    let layer = Blob::layer(media::OCI_LAYER, 64);
    push_blob(ctx, &repo, &config).await?;
    push_blob(ctx, &repo, &layer).await?;
    let annotations = json!({ "org.example.conformance.kind": "no-artifact-type" });
    let plain = Referrer {
        manifest: content::image_manifest(
            media::OCI_MANIFEST,
            &config.descriptor(),
            &[layer.descriptor()],
            fields([
                ("subject", subject.descriptor()),
                ("annotations", annotations.clone()),
            ]),
        ),
        artifact_type: Some(CUSTOM_CONFIG),
        annotations,
    };
    for referrer in [&sbom, &signature, &plain] {
        push_referrer(ctx, referrer, &subject.digest).await?;
    }
    let Some((_, found)) = referrers(ctx, &subject.digest, "").await? else {
        return Ok(());
    };
    expect_referrers(&found, &[&sbom, &signature, &plain])
}

async fn list_index(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    let child = push_image(ctx, &repo(ctx), None).await?.manifest;
    let annotations = json!({ "org.example.conformance.kind": "index" });
    let index = Referrer {
        manifest: content::index_manifest(
            media::OCI_INDEX,
            &[&child],
            fields([
                ("subject", subject.descriptor()),
                ("annotations", annotations.clone()),
            ]),
        ),
        // "If the artifactType is empty or missing in an index, the artifactType MUST be
        // omitted."
        artifact_type: None,
        annotations,
    };
    push_referrer(ctx, &index, &subject.digest).await?;
    let Some((_, found)) = referrers(ctx, &subject.digest, "").await? else {
        return Ok(());
    };
    expect_referrers(&found, &[&index])
}

async fn filter(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    let sbom = artifact(ctx, &subject.descriptor(), SBOM).await?;
    let signature = artifact(ctx, &subject.descriptor(), SIGNATURE).await?;
    for referrer in [&sbom, &signature] {
        push_referrer(ctx, referrer, &subject.digest).await?;
    }
    let Some((resp, found)) =
        referrers(ctx, &subject.digest, &format!("?artifactType={SBOM}")).await?
    else {
        return Ok(());
    };
    let applied = resp
        .header_all("OCI-Filters-Applied")
        .iter()
        .flat_map(|it| it.split(','))
        .any(|it| it.trim() == "artifactType");
    if applied {
        return expect_referrers(&found, &[&sbom]);
    }
    // "The registry SHOULD support filtering"; without the header the list must be the
    // unfiltered one, since "If filtering is requested and applied, the response MUST include"
    // the header.
    expect_referrers(&found, &[&sbom, &signature]).map_err(|it| {
        it.context("no OCI-Filters-Applied header, so the list must be unfiltered")
    })?;
    ctx.missing(
        Feature::ReferrersFilter,
        format!("{}: artifactType filter not applied", resp.summary()),
    )
}

async fn empty(ctx: &Ctx) -> Outcome {
    // The repository must exist, so the answer is about the digest.
    subject(ctx).await?;
    let Some((_, found)) = referrers(ctx, &content::unknown_digest(), "").await? else {
        return Ok(());
    };
    // "If a query results in no matching referrers, an empty manifest list MUST be returned."
    ensure!(found.is_empty(), "expected no referrers, got {found:?}");
    Ok(())
}

async fn invalid_digest(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    // Only a registry that has the API can be held to its 400.
    if referrers(ctx, &subject.digest, "").await?.is_none() {
        return Ok(());
    }
    let path = repo_path(&repo(ctx), "referrers/sha256:not-hex");
    let resp = ctx.client.call(Method::GET, &path).await?;
    // "If the request is invalid, such as a <digest> with an invalid syntax, a 400 Bad Request
    // MUST be returned." The spec names no code; DIGEST_INVALID is the natural one but is not
    // required.
    assert::status(&resp, &[400])
}

async fn after_delete(ctx: &Ctx) -> Outcome {
    let subject = subject(ctx).await?;
    let kept = artifact(ctx, &subject.descriptor(), SBOM).await?;
    let dropped = artifact(ctx, &subject.descriptor(), SIGNATURE).await?;
    for referrer in [&kept, &dropped] {
        push_referrer(ctx, referrer, &subject.digest).await?;
    }
    let path = repo_path(
        &repo(ctx),
        &format!("manifests/{}", dropped.manifest.digest),
    );
    let resp = ctx.client.call(Method::DELETE, &path).await?;
    if matches!(resp.status.as_u16(), 400 | 405) {
        return ctx.missing(
            Feature::Delete,
            format!("{}: {}", resp.summary(), resp.snippet()),
        );
    }
    assert::status(&resp, &[202])?;
    // The list holds manifests "in the same <name> namespace with a subject field"; a deleted
    // manifest is no longer in the namespace.
    let Some((_, found)) = referrers(ctx, &subject.digest, "").await? else {
        return Ok(());
    };
    expect_referrers(&found, &[&kept])
}
