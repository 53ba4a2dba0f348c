//! `import`: brings a bundle, a skopeo `dir:` tree or an OCI image layout into
//! the registry. Two phases. The plan reads and checks everything first: the
//! bundle index against its checksum file, every file against its size and
//! digest, every manifest parsed, every blob and child manifest found in the
//! source or already in the store. Only then does anything get written, and
//! through the public [`Registry`] operations a push uses, in a push's order:
//! blobs, then manifests by digest (children before the indexes naming them),
//! then tags, each moved with its manifest. So a damaged source changes
//! nothing, and every push invariant (claims against GC, references, kinds)
//! holds for imported content. Whatever is already there is skipped, which
//! makes a second import a no-op.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use wharf_blob::BlobStore;
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_meta::ReferenceKind;
use wharf_oci::{parse_manifest, OciError, Registry};

use crate::files;
use crate::format::{
    self, BundleIndex, LayoutIndex, FORMAT, INDEX_CHECKSUM_FILE, INDEX_FILE, OCI_INDEX_FILE,
    OCI_LAYOUT_FILE, PARTIAL_DIR, REF_NAME, VERSION,
};
use crate::{BundleError, Progress};

/// How deep indexes may nest.
const MAX_DEPTH: u32 = 4;
/// A skopeo `dir:` tree's top manifest.
const DIR_MANIFEST: &str = "manifest.json";

/// What was found in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A `wharf export` bundle.
    Bundle,
    /// A skopeo `dir:` tree.
    SkopeoDir,
    /// An OCI image layout.
    OciLayout,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Bundle => "bundle",
            SourceKind::SkopeoDir => "skopeo dir",
            SourceKind::OciLayout => "OCI layout",
        })
    }
}

/// What to import.
pub struct ImportOptions {
    /// The directory.
    pub dir: PathBuf,
    /// `NAME[:TAG]` for a skopeo `dir:` tree (required, with the tag) or an
    /// OCI layout (the repository its references go to; with a tag, only that one).
    pub repository: Option<(RepoName, Option<Tag>)>,
    /// When not empty, every imported tag (but cosign's own signature,
    /// attestation and SBOM tags) needs a cosign signature in the source that
    /// one of these keys verifies, or nothing is imported.
    pub trusted_keys: Vec<wharf_oci::cosign::CosignKey>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// What the directory held.
    pub kind: SourceKind,
    /// Files checked against their digests before anything was written.
    pub files_verified: usize,
    /// Their bytes.
    pub bytes_verified: u64,
    /// Repositories in the source.
    pub repositories: usize,
    /// Tags in the source.
    pub tags: usize,
    /// Blobs stored from the source's files.
    pub blobs_stored: usize,
    /// Their bytes.
    pub bytes_stored: u64,
    /// Blobs the store already held for another repository, linked here.
    pub blobs_linked: usize,
    /// Manifests recorded.
    pub manifests_stored: usize,
    /// Tags set or moved.
    pub tags_moved: usize,
}

impl ImportSummary {
    /// Whether the import changed anything.
    pub fn changed(&self) -> bool {
        self.blobs_stored + self.blobs_linked + self.manifests_stored + self.tags_moved > 0
    }
}

/// Reads a bundle's index after checking it against its checksum file.
pub async fn read_bundle_index(dir: &Path) -> Result<BundleIndex, BundleError> {
    let index_path = dir.join(INDEX_FILE);
    let checksum_path = dir.join(INDEX_CHECKSUM_FILE);
    if !index_path.is_file() || !checksum_path.is_file() {
        let reason = if dir.join(PARTIAL_DIR).exists() || index_path.exists() {
            "an unfinished export (run the same `wharf export` again to finish it)"
        } else {
            "not a wharf bundle (no wharf-bundle.json and wharf-bundle.json.sha256)"
        };
        return Err(BundleError::NotABundle {
            path: dir.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let bytes = tokio::fs::read(&index_path)
        .await
        .map_err(BundleError::io(&index_path))?;
    let checksum = tokio::fs::read_to_string(&checksum_path)
        .await
        .map_err(BundleError::io(&checksum_path))?;
    let expected = checksum.split_whitespace().next().unwrap_or("");
    let actual = hex::encode(Sha256::digest(&bytes));
    if expected != actual {
        return Err(BundleError::DigestMismatch {
            path: index_path,
            expected: format!("sha256:{expected} (from {INDEX_CHECKSUM_FILE})"),
            actual: format!("sha256:{actual}"),
        });
    }
    let invalid = |reason: String| BundleError::InvalidIndex {
        path: index_path.clone(),
        reason,
    };
    let head: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if head["format"] != FORMAT {
        return Err(invalid(format!("format is not {FORMAT:?}")));
    }
    let version = head["version"].as_u64().unwrap_or(0);
    if version > u64::from(VERSION) || version == 0 {
        return Err(BundleError::UnsupportedVersion {
            path: index_path,
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}

/// One tag to set.
struct WantedTag {
    repo: RepoName,
    tag: Tag,
    digest: Digest,
    media_type: Option<String>,
}

/// Where the source's content is, and what of it was checked.
struct Source {
    kind: SourceKind,
    dir: PathBuf,
    /// Content files by digest, each checked against it.
    verified: HashMap<Digest, PathBuf>,
    /// Digest → the bundle that carries it, for a `--since` bundle's hints.
    absent: HashMap<String, String>,
    files_verified: usize,
    bytes_verified: u64,
}

impl Source {
    /// The checked file of `digest`, if the source has it.
    async fn file(
        &mut self,
        digest: &Digest,
        manifest: bool,
    ) -> Result<Option<PathBuf>, BundleError> {
        if let Some(path) = self.verified.get(digest) {
            return Ok(Some(path.clone()));
        }
        let path = match self.kind {
            // Everything a bundle has was checked up front.
            SourceKind::Bundle => return Ok(None),
            SourceKind::OciLayout => format::join(&self.dir, &format::blob_path(digest)),
            SourceKind::SkopeoDir if manifest => {
                self.dir.join(format!("{}.manifest.json", digest.hex()))
            }
            SourceKind::SkopeoDir => self.dir.join(digest.hex()),
        };
        if !path.is_file() {
            return Ok(None);
        }
        let hashed = files::hash_file(&path, digest.algorithm()).await?;
        if &hashed.digest != digest {
            return Err(BundleError::DigestMismatch {
                path,
                expected: digest.to_string(),
                actual: hashed.digest.to_string(),
            });
        }
        self.files_verified += 1;
        self.bytes_verified += hashed.size;
        self.verified.insert(digest.clone(), path.clone());
        Ok(Some(path))
    }

    fn missing(&self, what: &'static str, digest: &Digest) -> BundleError {
        let hint = match self.absent.get(&digest.to_string()) {
            Some(bundle) => format!(" (bundle {bundle} carries it: import that bundle first)"),
            None => String::new(),
        };
        BundleError::Missing {
            path: self.dir.clone(),
            what,
            digest: digest.clone(),
            hint,
        }
    }
}

/// One repository's part of the plan.
#[derive(Default)]
struct RepoPlan {
    /// Blobs with sizes, in first-seen order.
    blobs: Vec<(Digest, u64)>,
    /// Manifests, children first.
    manifests: Vec<(Digest, String, Bytes)>,
    seen: HashSet<Digest>,
    /// Digest → tags that must name it.
    tags: Vec<(Digest, Vec<Tag>)>,
}

/// Imports the directory into `registry` (whose blob store is `store`).
pub async fn import(
    registry: &Registry,
    store: &BlobStore,
    options: &ImportOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<ImportSummary, BundleError> {
    let dir = &options.dir;
    let (mut source, wanted) = open_source(dir, options.repository.as_ref()).await?;
    if source.kind == SourceKind::Bundle {
        progress(Progress::Verified {
            files: source.files_verified,
            bytes: source.bytes_verified,
        });
    }

    // Plan: everything read and checked before the first write.
    let mut plans: Vec<(RepoName, RepoPlan)> = Vec::new();
    for want in &wanted {
        let index = match plans.iter().position(|(r, _)| r == &want.repo) {
            Some(i) => i,
            None => {
                plans.push((want.repo.clone(), RepoPlan::default()));
                plans.len() - 1
            }
        };
        let plan = &mut plans[index].1;
        plan_manifest(
            &mut source,
            store,
            plan,
            &want.digest,
            want.media_type.as_deref(),
            0,
        )
        .await?;
        match plan.tags.iter_mut().find(|(d, _)| d == &want.digest) {
            Some((_, tags)) => {
                if !tags.contains(&want.tag) {
                    tags.push(want.tag.clone());
                }
            }
            None => plan
                .tags
                .push((want.digest.clone(), vec![want.tag.clone()])),
        }
    }
    if !options.trusted_keys.is_empty() {
        for want in &wanted {
            verify_signed(&source, store, &plans, &wanted, want, &options.trusted_keys).await?;
        }
    }
    if source.kind != SourceKind::Bundle {
        progress(Progress::Verified {
            files: source.files_verified,
            bytes: source.bytes_verified,
        });
    }

    let mut summary = ImportSummary {
        kind: source.kind,
        files_verified: source.files_verified,
        bytes_verified: source.bytes_verified,
        repositories: plans.len(),
        tags: wanted.len(),
        blobs_stored: 0,
        bytes_stored: 0,
        blobs_linked: 0,
        manifests_stored: 0,
        tags_moved: 0,
    };
    // Blobs of every repository first, then manifests, then tags: a failure
    // part-way leaves no tag naming anything new.
    for (repo, plan) in &plans {
        for (digest, _size) in &plan.blobs {
            match registry.stat_blob(repo, digest).await {
                Ok(_) => continue,
                Err(OciError::BlobUnknown(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if registry.mount_blob(repo, digest, None).await? {
                summary.blobs_linked += 1;
                continue;
            }
            let Some(path) = source.verified.get(digest).cloned() else {
                return Err(source.missing("blob", digest));
            };
            let body = files::file_stream(&path).await?;
            let stored = registry.put_blob(repo, digest, body).await?;
            summary.blobs_stored += 1;
            summary.bytes_stored += stored;
            progress(Progress::StoredBlob {
                repository: repo,
                digest,
                size: stored,
            });
        }
    }
    for (repo, plan) in &plans {
        for (digest, media_type, bytes) in &plan.manifests {
            match registry
                .manifest_record(repo, &Reference::Digest(digest.clone()))
                .await
            {
                Ok(_) => continue,
                Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {}
                Err(e) => return Err(e.into()),
            }
            registry
                .put_manifest(
                    repo,
                    &Reference::Digest(digest.clone()),
                    &[],
                    Some(media_type.as_str()),
                    bytes.clone(),
                )
                .await?;
            summary.manifests_stored += 1;
            progress(Progress::StoredManifest {
                repository: repo,
                digest,
            });
        }
    }
    for (repo, plan) in &plans {
        for (digest, tags) in &plan.tags {
            let mut moving = Vec::new();
            for tag in tags {
                match registry
                    .manifest_record(repo, &Reference::Tag(tag.clone()))
                    .await
                {
                    Ok(record) if &record.digest == digest => {}
                    Ok(_) | Err(OciError::ManifestUnknown(_) | OciError::NameUnknown(_)) => {
                        moving.push(tag.clone())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if moving.is_empty() {
                continue;
            }
            let (_, media_type, bytes) = plan
                .manifests
                .iter()
                .find(|(d, _, _)| d == digest)
                .expect("every tagged manifest is planned");
            registry
                .put_manifest(
                    repo,
                    &Reference::Digest(digest.clone()),
                    &moving,
                    Some(media_type.as_str()),
                    bytes.clone(),
                )
                .await?;
            summary.tags_moved += moving.len();
            for tag in &moving {
                progress(Progress::Tagged {
                    repository: repo,
                    tag,
                    digest,
                });
            }
        }
    }
    Ok(summary)
}

/// Whether a tag is one of cosign's own (`sha256-HEX.sig`, `.att`, `.sbom`) or
/// a referrers tag (`sha256-HEX`): those are carried, not signed themselves.
fn is_cosign_tag(tag: &Tag) -> bool {
    let t = tag.as_str();
    let Some(rest) = t.strip_prefix("sha256-") else {
        return false;
    };
    let hex = rest.split('.').next().unwrap_or_default();
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Requires, for `want`, a cosign signature tag among the tags being imported
/// whose payload (read from the source, or the store) a trusted key verifies
/// for `want`'s digest. Runs in the plan, before anything is written.
async fn verify_signed(
    source: &Source,
    store: &BlobStore,
    plans: &[(RepoName, RepoPlan)],
    wanted: &[WantedTag],
    want: &WantedTag,
    keys: &[wharf_oci::cosign::CosignKey],
) -> Result<(), BundleError> {
    use wharf_oci::cosign::{self, CosignError};
    if is_cosign_tag(&want.tag) {
        return Ok(());
    }
    let refuse = |source: CosignError| BundleError::Signature {
        repository: want.repo.to_string(),
        tag: want.tag.to_string(),
        source,
    };
    let unsigned = || refuse(CosignError::Unsigned(want.digest.clone()));
    let sig_tag = cosign::signature_tag(&want.digest).ok_or_else(unsigned)?;
    let Some(sig) = wanted
        .iter()
        .find(|w| w.repo == want.repo && w.tag == sig_tag)
    else {
        return Err(unsigned());
    };
    let bytes = plans
        .iter()
        .filter(|(repo, _)| repo == &want.repo)
        .flat_map(|(_, plan)| plan.manifests.iter())
        .find(|(d, _, _)| d == &sig.digest)
        .map(|(_, _, bytes)| bytes.clone())
        .ok_or_else(unsigned)?;
    let layers = cosign::signature_layers(&bytes);
    if layers.is_empty() {
        return Err(unsigned());
    }
    let mut why = Vec::new();
    for layer in layers {
        if layer.size > cosign::MAX_PAYLOAD_BYTES {
            why.push(format!("a payload of {} bytes is too large", layer.size));
            continue;
        }
        let payload = match source.verified.get(&layer.payload) {
            Some(path) => tokio::fs::read(path).await.map_err(BundleError::io(path))?,
            None => {
                let mut body = store.read(&layer.payload, None).await?;
                let mut all = Vec::new();
                while let Some(chunk) = body.next().await {
                    all.extend_from_slice(&chunk.map_err(wharf_blob::BlobError::Io)?);
                }
                all
            }
        };
        match cosign::verify_signature(keys, &want.digest, &payload, &layer.signature) {
            Ok(_) => return Ok(()),
            Err(w) => why.push(w),
        }
    }
    Err(refuse(CosignError::NotVerified {
        digest: want.digest.clone(),
        why: why.join("; "),
    }))
}

/// Reads `digest` (from the source, else from the store), checks it, and
/// plans its children and blobs before it.
async fn plan_manifest(
    source: &mut Source,
    store: &BlobStore,
    plan: &mut RepoPlan,
    digest: &Digest,
    media_type: Option<&str>,
    depth: u32,
) -> Result<(), BundleError> {
    if plan.seen.contains(digest) {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(BundleError::InvalidManifest {
            digest: digest.clone(),
            reason: format!("indexes nest deeper than {MAX_DEPTH}"),
        });
    }
    let bytes = match source.file(digest, true).await? {
        Some(path) => Bytes::from(
            tokio::fs::read(&path)
                .await
                .map_err(BundleError::io(&path))?,
        ),
        None if store.stat(digest).await?.is_some() => {
            let mut stream = store.read(digest, None).await?;
            let mut buf = BytesMut::new();
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk.map_err(wharf_blob::BlobError::Io)?);
            }
            buf.freeze()
        }
        None => return Err(source.missing("manifest", digest)),
    };
    let parsed =
        parse_manifest(&bytes, media_type).map_err(|reason| BundleError::InvalidManifest {
            digest: digest.clone(),
            reason,
        })?;
    for (child, kind, size) in &parsed.references {
        match kind {
            ReferenceKind::Manifest => {
                Box::pin(plan_manifest(source, store, plan, child, None, depth + 1)).await?;
            }
            ReferenceKind::Blob => {
                if plan.blobs.iter().any(|(d, _)| d == child) {
                    continue;
                }
                if source.file(child, false).await?.is_none() && store.stat(child).await?.is_none()
                {
                    return Err(source.missing("blob", child));
                }
                plan.blobs.push((child.clone(), *size));
            }
        }
    }
    plan.seen.insert(digest.clone());
    plan.manifests
        .push((digest.clone(), parsed.media_type, bytes));
    Ok(())
}

/// Recognises the directory and lists the tags it asks for; a bundle's files
/// are all checked here.
async fn open_source(
    dir: &Path,
    repository: Option<&(RepoName, Option<Tag>)>,
) -> Result<(Source, Vec<WantedTag>), BundleError> {
    if !dir.is_dir() {
        return Err(BundleError::NotABundle {
            path: dir.to_owned(),
            reason: "not a directory".to_owned(),
        });
    }
    let mut source = Source {
        kind: SourceKind::Bundle,
        dir: dir.to_owned(),
        verified: HashMap::new(),
        absent: HashMap::new(),
        files_verified: 0,
        bytes_verified: 0,
    };
    let not = |reason: &str| BundleError::NotABundle {
        path: dir.to_owned(),
        reason: reason.to_owned(),
    };
    if dir.join(INDEX_FILE).exists()
        || dir.join(INDEX_CHECKSUM_FILE).exists()
        || dir.join(PARTIAL_DIR).exists()
    {
        if repository.is_some() {
            return Err(not(
                "a wharf bundle names its own repositories; --repository is for skopeo dir: trees and OCI layouts",
            ));
        }
        let index = read_bundle_index(dir).await?;
        let wanted = open_bundle(&mut source, &index).await?;
        return Ok((source, wanted));
    }
    if dir.join(DIR_MANIFEST).is_file() {
        source.kind = SourceKind::SkopeoDir;
        let Some((repo, Some(tag))) = repository else {
            return Err(not(
                "a skopeo dir: tree holds one image: name it with --repository NAME:TAG",
            ));
        };
        let path = dir.join(DIR_MANIFEST);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(BundleError::io(&path))?;
        let digest = Digest::sha256_of(&bytes);
        source.files_verified += 1;
        source.bytes_verified += bytes.len() as u64;
        source.verified.insert(digest.clone(), path);
        return Ok((
            source,
            vec![WantedTag {
                repo: repo.clone(),
                tag: tag.clone(),
                digest,
                media_type: None,
            }],
        ));
    }
    if dir.join(OCI_LAYOUT_FILE).is_file() && dir.join(OCI_INDEX_FILE).is_file() {
        source.kind = SourceKind::OciLayout;
        let path = dir.join(OCI_INDEX_FILE);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(BundleError::io(&path))?;
        let layout: LayoutIndex =
            serde_json::from_slice(&bytes).map_err(|e| BundleError::InvalidIndex {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let wanted = layout_tags(&path, &layout, repository)?;
        return Ok((source, wanted));
    }
    Err(not(
        "neither a wharf bundle (wharf-bundle.json), a skopeo dir: tree (manifest.json) nor an OCI layout (oci-layout, index.json)",
    ))
}

/// Checks every file of a bundle and lists its tags.
async fn open_bundle(
    source: &mut Source,
    index: &BundleIndex,
) -> Result<Vec<WantedTag>, BundleError> {
    let index_path = source.dir.join(INDEX_FILE);
    let invalid = |reason: String| BundleError::InvalidIndex {
        path: index_path.clone(),
        reason,
    };
    for file in &index.files {
        let digest = format::digest_of_blob_path(&file.path);
        if digest.is_none() && file.path != OCI_INDEX_FILE && file.path != OCI_LAYOUT_FILE {
            return Err(invalid(format!(
                "file {:?} is not a bundle file",
                file.path
            )));
        }
        let path = format::join(&source.dir, &file.path);
        files::verify_file(&path, file.size, &file.sha256).await?;
        if let Some(digest) = digest {
            // The path is the digest: for sha256 blobs the check above was it.
            if digest.algorithm() != wharf_core::Algorithm::Sha256 {
                let hashed = files::hash_file(&path, digest.algorithm()).await?;
                if hashed.digest != digest {
                    return Err(BundleError::DigestMismatch {
                        path,
                        expected: digest.to_string(),
                        actual: hashed.digest.to_string(),
                    });
                }
            }
            source.verified.insert(digest, path);
        }
        source.files_verified += 1;
        source.bytes_verified += file.size;
    }
    for a in &index.absent {
        source.absent.insert(a.digest.clone(), a.bundle.clone());
    }
    let mut wanted = Vec::new();
    for repo in &index.repositories {
        let name = RepoName::parse(&repo.name)
            .map_err(|e| invalid(format!("repository {:?}: {e}", repo.name)))?;
        for (tag, digest) in &repo.tags {
            let t =
                Tag::parse(tag).map_err(|e| invalid(format!("{}: tag {tag:?}: {e}", repo.name)))?;
            let d = Digest::parse(digest)
                .map_err(|e| invalid(format!("{}:{tag}: digest {digest:?}: {e}", repo.name)))?;
            let media_type = repo
                .manifests
                .iter()
                .find(|m| m.digest == *digest)
                .map(|m| m.media_type.clone());
            wanted.push(WantedTag {
                repo: name.clone(),
                tag: t,
                digest: d,
                media_type,
            });
        }
    }
    Ok(wanted)
}

/// The tags an OCI layout's `index.json` names, under `--repository` when given.
fn layout_tags(
    path: &Path,
    layout: &LayoutIndex,
    repository: Option<&(RepoName, Option<Tag>)>,
) -> Result<Vec<WantedTag>, BundleError> {
    let invalid = |reason: String| BundleError::InvalidIndex {
        path: path.to_owned(),
        reason,
    };
    let mut wanted = Vec::new();
    for entry in &layout.manifests {
        let digest = Digest::parse(&entry.digest)
            .map_err(|e| invalid(format!("digest {:?}: {e}", entry.digest)))?;
        let media_type = (!entry.media_type.is_empty()).then(|| entry.media_type.clone());
        let Some(name) = entry.annotations.get(REF_NAME) else {
            // Unnamed: only as the one image of `--repository NAME:TAG`.
            if let (Some((repo, Some(tag))), 1) = (repository, layout.manifests.len()) {
                wanted.push(WantedTag {
                    repo: repo.clone(),
                    tag: tag.clone(),
                    digest,
                    media_type,
                });
            }
            continue;
        };
        let (repo_part, tag_part) = format::split_ref_name(name);
        let tag = Tag::parse(tag_part)
            .map_err(|e| invalid(format!("reference {name:?}: tag {tag_part:?}: {e}")))?;
        let repo = match repository {
            Some((repo, wanted_tag)) => {
                if wanted_tag.as_ref().is_some_and(|t| t != &tag) {
                    continue;
                }
                repo.clone()
            }
            None => match repo_part {
                Some(r) => RepoName::parse(r)
                    .map_err(|e| invalid(format!("reference {name:?}: repository {r:?}: {e}")))?,
                None => {
                    return Err(invalid(format!(
                        "reference {name:?} names no repository: give one with --repository NAME"
                    )))
                }
            },
        };
        wanted.push(WantedTag {
            repo,
            tag,
            digest,
            media_type,
        });
    }
    if wanted.is_empty() {
        return Err(invalid(match repository {
            Some((repo, Some(tag))) => format!("no reference with the tag {tag} (for {repo})"),
            _ => "no manifest with an org.opencontainers.image.ref.name annotation".to_owned(),
        }));
    }
    Ok(wanted)
}
