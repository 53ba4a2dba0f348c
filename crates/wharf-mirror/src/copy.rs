//! [`Mirror`]: copies a tag from an upstream into the store through the same
//! public [`Registry`] operations a push uses, so every invariant of a push
//! (blob claims against GC, references, kinds) holds for mirrored content.
//!
//! Order, as a careful client pushes: the blobs (each verified by the store's
//! upload, or mounted when the store already holds it, or skipped when the
//! repository does), then each child manifest by digest, then the top
//! manifest under the tag — last, so a tag never names something incomplete.
//!
//! With a platform filter only the chosen children of an index are copied and
//! the index is stored unchanged under the upstream's digest (a sparse index,
//! which the store takes because the copy marks the repository as mirrored).
//! With signatures on, each copied manifest's cosign tags and referrers follow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{stream, TryStreamExt};
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_meta::ReferenceKind;
use wharf_oci::{parse_manifest, OciError, Registry};

use crate::client::{FetchedManifest, UpstreamClient};
use crate::select::Platform;
use crate::MirrorError;

/// The tag suffixes cosign stores beside an image, keyed by its digest.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// What a copy takes besides the tag.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Platforms of an index to copy; empty: every one.
    pub platforms: Vec<Platform>,
    /// Also copy each copied manifest's cosign `.sig`/`.att`/`.sbom` tags and
    /// its referrers.
    pub signatures: bool,
    /// When not empty, a tag is copied only if the upstream has a cosign
    /// signature of its digest that one of these keys verifies.
    pub trusted_keys: Vec<wharf_oci::cosign::CosignKey>,
}

/// How deep indexes may nest (an index of indexes of manifests is 2).
const MAX_DEPTH: u32 = 4;

/// What a run fetched, shared by every copy of the run.
#[derive(Debug, Default)]
pub struct Transferred {
    /// Manifests fetched with GET.
    pub manifests: AtomicU64,
    /// Blobs fetched.
    pub blobs: AtomicU64,
    /// Bytes fetched (manifests and blobs).
    pub bytes: AtomicU64,
}

impl Transferred {
    /// `(manifests, blobs, bytes)` so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.manifests.load(Ordering::Relaxed),
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// What happened to one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOutcome {
    /// The tag now names `digest` (it named something else, or nothing).
    Copied {
        /// The manifest digest, identical to the upstream's.
        digest: Digest,
    },
    /// The local tag already named the upstream's digest; nothing was fetched.
    Unchanged {
        /// The manifest digest.
        digest: Digest,
    },
}

/// Copies from one upstream into the registry.
#[derive(Clone)]
pub struct Mirror {
    registry: Registry,
    client: Arc<UpstreamClient>,
    concurrency: usize,
    transferred: Arc<Transferred>,
}

impl Mirror {
    /// A mirror writing into `registry`, fetching `concurrency` blobs at once.
    pub fn new(registry: Registry, client: Arc<UpstreamClient>, concurrency: usize) -> Mirror {
        Mirror {
            registry,
            client,
            concurrency: concurrency.max(1),
            transferred: Arc::new(Transferred::default()),
        }
    }

    /// What this mirror fetched so far.
    pub fn transferred(&self) -> &Transferred {
        &self.transferred
    }

    /// The upstream client.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Copies `upstream:tag` to `local:tag`, unless the local tag already
    /// names the upstream's digest; every platform, no signatures.
    pub async fn copy_tag(
        &self,
        upstream: &str,
        local: &RepoName,
        tag: &Tag,
    ) -> Result<TagOutcome, MirrorError> {
        self.copy_tag_with(upstream, local, tag, &CopyOptions::default())
            .await
    }

    /// [`Mirror::copy_tag`] with a platform filter and, when asked, the
    /// signatures, attestations and referrers of what it copied (looked for
    /// even when the tag is unchanged: a signature may come after its image).
    pub async fn copy_tag_with(
        &self,
        upstream: &str,
        local: &RepoName,
        tag: &Tag,
        options: &CopyOptions,
    ) -> Result<TagOutcome, MirrorError> {
        // Before anything is stored, so the store takes a sparse index here.
        self.registry
            .mark_mirrored(local, &format!("{}/{upstream}", self.client.base_url()))
            .await?;
        let mut copied = Vec::new();
        let outcome = self
            .copy_one(
                upstream,
                local,
                tag,
                &options.platforms,
                &options.trusted_keys,
                &mut copied,
            )
            .await?;
        if options.signatures {
            let digest = match &outcome {
                TagOutcome::Copied { digest } | TagOutcome::Unchanged { digest } => digest.clone(),
            };
            copied.insert(0, digest);
            for digest in &copied {
                self.copy_signatures(upstream, local, digest)
                    .await
                    .map_err(|e| match e {
                        MirrorError::Protocol(m) => {
                            MirrorError::Protocol(format!("signatures of {digest}: {m}"))
                        }
                        other => other,
                    })?;
            }
        }
        Ok(outcome)
    }

    /// The cosign tags and the referrers of `digest`, each copied when the
    /// upstream has it.
    async fn copy_signatures(
        &self,
        upstream: &str,
        local: &RepoName,
        digest: &Digest,
    ) -> Result<(), MirrorError> {
        let schema_tag = digest.to_string().replace(':', "-");
        let mut ignored = Vec::new();
        for suffix in COSIGN_SUFFIXES {
            let Ok(tag) = Tag::parse(&format!("{schema_tag}.{suffix}")) else {
                continue;
            };
            if self.upstream_has(upstream, &tag).await? {
                self.copy_one(upstream, local, &tag, &[], &[], &mut ignored)
                    .await?;
            }
        }
        match self.client.list_referrers(upstream, digest).await? {
            Some(referrers) => {
                for referrer in referrers {
                    self.store_child_manifest(upstream, local, &referrer, 1, &[], &mut ignored)
                        .await?;
                }
            }
            // No referrers API upstream: its clients keep referrers in an
            // index under the `sha256-HEX` tag (OCI 1.1's tag schema).
            None => {
                if let Ok(tag) = Tag::parse(&schema_tag) {
                    if self.upstream_has(upstream, &tag).await? {
                        self.copy_one(upstream, local, &tag, &[], &[], &mut ignored)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Succeeds when the upstream holds a cosign signature of `digest` that one
    /// of `keys` verifies and whose payload names `digest`.
    async fn verify_signed(
        &self,
        upstream: &str,
        digest: &Digest,
        keys: &[wharf_oci::cosign::CosignKey],
    ) -> Result<(), MirrorError> {
        use futures_util::TryStreamExt;
        use wharf_oci::cosign::{self, CosignError};
        let unsigned = || MirrorError::Signature(CosignError::Unsigned(digest.clone()));
        let Some(tag) = cosign::signature_tag(digest) else {
            return Err(unsigned());
        };
        let signatures = match self.fetch(upstream, tag.as_str(), None).await {
            Ok(m) => m,
            Err(MirrorError::NotFound(_)) => return Err(unsigned()),
            Err(e) => return Err(e),
        };
        let layers = cosign::signature_layers(&signatures.bytes);
        if layers.is_empty() {
            return Err(unsigned());
        }
        let mut why = Vec::new();
        for layer in layers {
            if layer.size > cosign::MAX_PAYLOAD_BYTES {
                why.push(format!("a payload of {} bytes is too large", layer.size));
                continue;
            }
            let mut body = self.client.get_blob(upstream, &layer.payload).await?;
            let mut payload = Vec::new();
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| MirrorError::Protocol(format!("signature payload: {e}")))?
            {
                payload.extend_from_slice(&chunk);
                if payload.len() as u64 > cosign::MAX_PAYLOAD_BYTES {
                    break;
                }
            }
            let actual = Digest::sha256_of(&payload);
            if actual != layer.payload {
                return Err(MirrorError::DigestMismatch {
                    what: format!("signature payload of {digest}"),
                    expected: layer.payload,
                    actual,
                });
            }
            match cosign::verify_signature(keys, digest, &payload, &layer.signature) {
                Ok(_) => return Ok(()),
                Err(w) => why.push(w),
            }
        }
        Err(MirrorError::Signature(CosignError::NotVerified {
            digest: digest.clone(),
            why: why.join("; "),
        }))
    }

    /// Whether the upstream has `tag` (a HEAD, so absence costs no GET).
    async fn upstream_has(&self, upstream: &str, tag: &Tag) -> Result<bool, MirrorError> {
        match self.client.head_manifest(upstream, tag.as_str()).await {
            Ok(_) => Ok(true),
            Err(MirrorError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One tag, its children filtered by `platforms`, refused unless one of
    /// `trusted_keys` (when any) verifies its signature; the child manifests it
    /// stored are pushed onto `copied`.
    async fn copy_one(
        &self,
        upstream: &str,
        local: &RepoName,
        tag: &Tag,
        platforms: &[Platform],
        trusted_keys: &[wharf_oci::cosign::CosignKey],
        copied: &mut Vec<Digest>,
    ) -> Result<TagOutcome, MirrorError> {
        let announced = self.client.head_manifest(upstream, tag.as_str()).await?;
        let current = match self
            .registry
            .manifest_record(local, &Reference::Tag(tag.clone()))
            .await
        {
            Ok(record) => Some(record.digest),
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let (Some(up), Some(cur)) = (&announced, &current) {
            if up == cur {
                return Ok(TagOutcome::Unchanged {
                    digest: cur.clone(),
                });
            }
        }
        let manifest = match &announced {
            Some(digest) => self.manifest_by_digest(upstream, local, digest).await?,
            None => self.fetch(upstream, tag.as_str(), None).await?,
        };
        if current.as_ref() == Some(&manifest.digest) {
            return Ok(TagOutcome::Unchanged {
                digest: manifest.digest,
            });
        }
        if !trusted_keys.is_empty() {
            // Before anything of the image is stored.
            self.verify_signed(upstream, &manifest.digest, trusted_keys)
                .await?;
        }
        self.store_children(upstream, local, &manifest, 0, platforms, copied)
            .await?;
        // By the upstream's digest, with the tag in the same transaction: the
        // registry checks the bytes against that digest (whatever its
        // algorithm) before the tag moves, so a tag never names other bytes.
        self.registry
            .put_manifest(
                local,
                &Reference::Digest(manifest.digest.clone()),
                std::slice::from_ref(tag),
                manifest.media_type.as_deref(),
                manifest.bytes.clone(),
            )
            .await?;
        Ok(TagOutcome::Copied {
            digest: manifest.digest,
        })
    }

    /// The manifest `digest`: from the local repository when it is stored
    /// already (another tag names it), else from the upstream.
    async fn manifest_by_digest(
        &self,
        upstream: &str,
        local: &RepoName,
        digest: &Digest,
    ) -> Result<FetchedManifest, MirrorError> {
        match self
            .registry
            .get_manifest(local, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(content) => Ok(FetchedManifest {
                digest: content.digest,
                media_type: Some(content.media_type),
                bytes: content.bytes,
            }),
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {
                self.fetch(upstream, &digest.to_string(), Some(digest))
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn fetch(
        &self,
        upstream: &str,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, MirrorError> {
        let manifest = self
            .client
            .get_manifest(upstream, reference, expected)
            .await?;
        self.transferred.manifests.fetch_add(1, Ordering::Relaxed);
        self.transferred
            .bytes
            .fetch_add(manifest.bytes.len() as u64, Ordering::Relaxed);
        Ok(manifest)
    }

    /// Stores everything `manifest` references: child manifests (each with
    /// its own children, then itself by digest) and blobs.
    async fn store_children(
        &self,
        upstream: &str,
        local: &RepoName,
        manifest: &FetchedManifest,
        depth: u32,
        platforms: &[Platform],
        copied: &mut Vec<Digest>,
    ) -> Result<(), MirrorError> {
        if depth > MAX_DEPTH {
            return Err(MirrorError::Protocol(format!(
                "{upstream}: indexes nest deeper than {MAX_DEPTH}"
            )));
        }
        let parsed = parse_manifest(&manifest.bytes, manifest.media_type.as_deref())
            .map_err(|reason| MirrorError::Store(OciError::ManifestInvalid(reason)))?;
        let chosen = if platforms.is_empty() || !wharf_oci::media::is_index(&parsed.media_type) {
            None
        } else {
            let chosen = chosen_children(&manifest.bytes, platforms)
                .map_err(|reason| MirrorError::Store(OciError::ManifestInvalid(reason)))?;
            if chosen.is_empty() {
                let wanted: Vec<String> = platforms.iter().map(Platform::to_string).collect();
                return Err(MirrorError::NotFound(format!(
                    "platform {} in index {}",
                    wanted.join(" or "),
                    manifest.digest
                )));
            }
            Some(chosen)
        };
        let mut blobs = Vec::new();
        for (digest, kind, _size) in &parsed.references {
            match kind {
                ReferenceKind::Manifest => {
                    if chosen.as_ref().is_some_and(|c| !c.contains(digest)) {
                        continue;
                    }
                    Box::pin(self.store_child_manifest(
                        upstream,
                        local,
                        digest,
                        depth + 1,
                        platforms,
                        copied,
                    ))
                    .await?;
                }
                ReferenceKind::Blob => {
                    if !blobs.contains(digest) {
                        blobs.push(digest.clone());
                    }
                }
            }
        }
        stream::iter(blobs.into_iter().map(Ok::<_, MirrorError>))
            .try_for_each_concurrent(self.concurrency, |digest| async move {
                self.ensure_blob(upstream, local, &digest).await
            })
            .await
    }

    async fn store_child_manifest(
        &self,
        upstream: &str,
        local: &RepoName,
        digest: &Digest,
        depth: u32,
        platforms: &[Platform],
        copied: &mut Vec<Digest>,
    ) -> Result<(), MirrorError> {
        match self
            .registry
            .manifest_record(local, &Reference::Digest(digest.clone()))
            .await
        {
            // Recorded means complete: a manifest is recorded only after
            // everything it references is (a sparse index: what was chosen).
            Ok(_) => {
                copied.push(digest.clone());
                return Ok(());
            }
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let child = self
            .fetch(upstream, &digest.to_string(), Some(digest))
            .await?;
        self.store_children(upstream, local, &child, depth, platforms, copied)
            .await?;
        self.registry
            .put_manifest(
                local,
                &Reference::Digest(digest.clone()),
                &[],
                child.media_type.as_deref(),
                child.bytes,
            )
            .await?;
        copied.push(digest.clone());
        Ok(())
    }

    /// Makes `digest` available in `local`: already linked, mounted from
    /// another repository of the store, or fetched and verified.
    async fn ensure_blob(
        &self,
        upstream: &str,
        local: &RepoName,
        digest: &Digest,
    ) -> Result<(), MirrorError> {
        match self.registry.stat_blob(local, digest).await {
            Ok(_) => return Ok(()),
            Err(OciError::BlobUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if self.registry.mount_blob(local, digest, None).await? {
            return Ok(());
        }
        let body = self.client.get_blob(upstream, digest).await?;
        let counter = self.transferred.clone();
        let counted = Box::pin(body.inspect_ok(move |chunk| {
            counter
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }));
        self.registry.put_blob(local, digest, counted).await?;
        self.transferred.blobs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The children of an index to copy for `platforms`: entries whose platform
/// matches one, and nested indexes (filtered in turn). Entries without a
/// platform (buildx's attestation manifests) are left out with the platforms
/// they describe.
fn chosen_children(index: &[u8], platforms: &[Platform]) -> Result<Vec<Digest>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        media_type: Option<String>,
        digest: String,
        platform: Option<EntryPlatform>,
    }
    #[derive(serde::Deserialize)]
    struct EntryPlatform {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    let index: Index = serde_json::from_slice(index).map_err(|e| format!("index: {e}"))?;
    let mut chosen = Vec::new();
    for entry in index.manifests {
        let keep = match &entry.platform {
            Some(p) => platforms
                .iter()
                .any(|want| want.matches(&p.os, &p.architecture, p.variant.as_deref())),
            None => entry
                .media_type
                .as_deref()
                .is_some_and(wharf_oci::media::is_index),
        };
        if keep {
            chosen.push(Digest::parse(&entry.digest).map_err(|e| format!("index: {e}"))?);
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_choose_children_of_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}},
            {{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":1}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}]}}"#,
            d('a'),
            d('b'),
            d('c'),
            d('e'),
            d('f')
        );
        let pick = |list: &[&str]| {
            let platforms: Vec<Platform> =
                list.iter().map(|p| Platform::parse(p).unwrap()).collect();
            chosen_children(index.as_bytes(), &platforms)
                .unwrap()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(&["linux/amd64"]), [d('a'), d('e')]);
        assert_eq!(
            pick(&["linux/arm64/v8", "linux/amd64"]),
            [d('a'), d('b'), d('e')]
        );
        assert_eq!(pick(&["linux/s390x"]), [d('e')]);
        assert!(chosen_children(b"{}", &[]).is_err());
    }
}
