//! [`Mirror`]: copies a tag from an upstream into the store through the same
//! public [`Registry`] operations a push uses, so every invariant of a push
//! (blob claims against GC, references, kinds) holds for mirrored content.
//!
//! Order, as a careful client pushes: the blobs (each verified by the store's
//! upload, or mounted when the store already holds it, or skipped when the
//! repository does), then each child manifest by digest, then the top
//! manifest under the tag — last, so a tag never names something incomplete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{stream, TryStreamExt};
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_meta::ReferenceKind;
use wharf_oci::{parse_manifest, OciError, Registry};

use crate::client::{FetchedManifest, UpstreamClient};
use crate::MirrorError;

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
    /// names the upstream's digest.
    pub async fn copy_tag(
        &self,
        upstream: &str,
        local: &RepoName,
        tag: &Tag,
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
        self.store_children(upstream, local, &manifest, 0).await?;
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
    ) -> Result<(), MirrorError> {
        if depth > MAX_DEPTH {
            return Err(MirrorError::Protocol(format!(
                "{upstream}: indexes nest deeper than {MAX_DEPTH}"
            )));
        }
        let parsed = parse_manifest(&manifest.bytes, manifest.media_type.as_deref())
            .map_err(|reason| MirrorError::Store(OciError::ManifestInvalid(reason)))?;
        let mut blobs = Vec::new();
        for (digest, kind, _size) in &parsed.references {
            match kind {
                ReferenceKind::Manifest => {
                    Box::pin(self.store_child_manifest(upstream, local, digest, depth + 1)).await?;
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
    ) -> Result<(), MirrorError> {
        match self
            .registry
            .manifest_record(local, &Reference::Digest(digest.clone()))
            .await
        {
            // Recorded means complete: a manifest is recorded only after
            // everything it references is.
            Ok(_) => return Ok(()),
            Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let child = self
            .fetch(upstream, &digest.to_string(), Some(digest))
            .await?;
        self.store_children(upstream, local, &child, depth).await?;
        self.registry
            .put_manifest(
                local,
                &Reference::Digest(digest.clone()),
                &[],
                child.media_type.as_deref(),
                child.bytes,
            )
            .await?;
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
