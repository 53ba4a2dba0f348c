//! `export`: writes the selected repositories of a registry into a bundle
//! directory. Manifests and blobs go to `blobs/<algorithm>/<hex>` (the OCI
//! layout's blob store, so each is one file), each through a temporary name
//! renamed after its digest checked; a file already there with the right
//! digest is kept, which is how an interrupted export resumes. The index files
//! are written last, after their old versions were removed at the start, so a
//! directory with `wharf-bundle.json.sha256` is always a complete bundle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wharf_core::{Digest, Reference, RepoName, Tag};
use wharf_meta::ReferenceKind;
use wharf_oci::{parse_manifest, OciError, Registry};

use crate::files::{self, sync_dir, write_small};
use crate::format::{
    self, blob_path, AbsentEntry, BundleIndex, Descriptor, FileEntry, LayoutIndex, ManifestEntry,
    RepositoryEntry, FORMAT, INDEX_CHECKSUM_FILE, INDEX_FILE, OCI_INDEX_FILE, OCI_LAYOUT_CONTENT,
    OCI_LAYOUT_FILE, PARTIAL_DIR, REF_NAME, VERSION,
};
use crate::import::read_bundle_index;
use crate::{BundleError, Progress};

/// How deep indexes may nest.
const MAX_DEPTH: u32 = 4;
/// Page size for listing repositories and tags.
const PAGE: u64 = 1000;

/// What to export.
pub struct ExportOptions<'a> {
    /// The bundle directory (created if missing; must be empty or an earlier export).
    pub dir: PathBuf,
    /// Which repositories to include.
    pub select: &'a (dyn Fn(&RepoName) -> bool + Sync),
    /// An earlier bundle: content it carries (or names) is left out and named.
    pub since: Option<PathBuf>,
    /// Recorded as the bundle's `source`.
    pub source: String,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// The new bundle's id.
    pub id: String,
    /// Repositories, tags, manifests and blobs listed in the index.
    pub repositories: usize,
    /// Tags listed.
    pub tags: usize,
    /// Distinct manifests listed.
    pub manifests: usize,
    /// Distinct blobs listed (configs and layers).
    pub blobs: usize,
    /// Files written now.
    pub files_written: usize,
    /// Bytes written now.
    pub bytes_written: u64,
    /// Files found complete from an earlier, interrupted run and kept.
    pub files_kept: usize,
    /// Manifests and blobs left to the `--since` bundle.
    pub in_parent: usize,
    /// Bytes of the bundle's content files (written and kept).
    pub bundle_bytes: u64,
}

/// One repository's content, as collected.
struct Collected {
    name: RepoName,
    tags: BTreeMap<String, Digest>,
    /// Children first.
    manifests: Vec<(Digest, String, Bytes)>,
}

/// Exports what `options.select` picks from `registry`.
pub async fn export(
    registry: &Registry,
    options: &ExportOptions<'_>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<ExportSummary, BundleError> {
    let dir = &options.dir;
    if let Some(old) = &options.since {
        let same = std::fs::canonicalize(old)
            .ok()
            .is_some_and(|o| std::fs::canonicalize(dir).is_ok_and(|d| d == o));
        if same {
            return Err(BundleError::NotABundle {
                path: dir.to_owned(),
                reason: "--since names the directory being written; export into a new one"
                    .to_owned(),
            });
        }
    }
    prepare_dir(dir)?;
    let parent = match &options.since {
        Some(old) => Some(read_bundle_index(old).await?),
        None => None,
    };
    // Digest → the id of the bundle that carries it.
    let mut held: HashMap<String, String> = HashMap::new();
    if let Some(old) = &parent {
        for f in &old.files {
            if let Some(d) = format::digest_of_blob_path(&f.path) {
                held.insert(d.to_string(), old.id.clone());
            }
        }
        for a in &old.absent {
            held.insert(a.digest.clone(), a.bundle.clone());
        }
    }

    let collected = collect(registry, options.select).await?;
    let mut summary = ExportSummary {
        id: uuid::Uuid::new_v4().simple().to_string(),
        repositories: collected.len(),
        ..ExportSummary::default()
    };
    let mut files: Vec<FileEntry> = Vec::new();
    let mut absent: Vec<AbsentEntry> = Vec::new();
    let mut done: HashSet<Digest> = HashSet::new();
    // Blob digest → (size, a repository holding it).
    let mut blobs: BTreeMap<Digest, (u64, RepoName)> = BTreeMap::new();
    for repo in &collected {
        summary.tags += repo.tags.len();
        for (digest, _media_type, bytes) in &repo.manifests {
            if !done.insert(digest.clone()) {
                continue;
            }
            summary.manifests += 1;
            let size = bytes.len() as u64;
            if let Some(bundle) = held.get(&digest.to_string()) {
                absent.push(AbsentEntry {
                    digest: digest.to_string(),
                    size,
                    bundle: bundle.clone(),
                });
                summary.in_parent += 1;
                continue;
            }
            let body = wharf_blob::bytes_stream(bytes.clone());
            files.push(place(dir, digest, size, body, &mut summary, progress).await?);
        }
        for (digest, media_type, bytes) in &repo.manifests {
            let parsed = parse_manifest(bytes, Some(media_type.as_str())).map_err(|reason| {
                BundleError::InvalidManifest {
                    digest: digest.clone(),
                    reason,
                }
            })?;
            for (d, kind, size) in parsed.references {
                if kind == ReferenceKind::Blob {
                    blobs.entry(d).or_insert((size, repo.name.clone()));
                }
            }
        }
    }
    for (digest, (size, repo)) in &blobs {
        if done.contains(digest) {
            // A manifest that is also a layer (rare, but legal): one file.
            continue;
        }
        summary.blobs += 1;
        if let Some(bundle) = held.get(&digest.to_string()) {
            absent.push(AbsentEntry {
                digest: digest.to_string(),
                size: *size,
                bundle: bundle.clone(),
            });
            summary.in_parent += 1;
            continue;
        }
        let path = format::join(dir, &blob_path(digest));
        if let Some(kept) = files::existing_blob(&path, digest, *size).await? {
            summary.files_kept += 1;
            summary.bundle_bytes += kept.size;
            progress(Progress::Kept {
                digest,
                size: kept.size,
            });
            files.push(FileEntry {
                path: blob_path(digest),
                size: kept.size,
                sha256: kept.sha256,
            });
            continue;
        }
        let read = registry.read_blob(repo, digest, None).await?;
        files.push(place(dir, digest, read.size, read.body, &mut summary, progress).await?);
    }
    sync_dir(&dir.join("blobs").join("sha256"))?;

    // The layout view: one reference per tag, `REPOSITORY:TAG`.
    let mut layout = LayoutIndex {
        schema_version: 2,
        media_type: Some(wharf_oci::media::OCI_INDEX.to_owned()),
        manifests: Vec::new(),
    };
    let mut repositories = Vec::new();
    for repo in &collected {
        let media: HashMap<&Digest, (&str, u64)> = repo
            .manifests
            .iter()
            .map(|(d, m, b)| (d, (m.as_str(), b.len() as u64)))
            .collect();
        for (tag, digest) in &repo.tags {
            let (media_type, size) = media[digest];
            layout.manifests.push(Descriptor {
                media_type: media_type.to_owned(),
                digest: digest.to_string(),
                size,
                annotations: BTreeMap::from([(
                    REF_NAME.to_owned(),
                    format::ref_name(repo.name.as_str(), tag),
                )]),
            });
        }
        repositories.push(RepositoryEntry {
            name: repo.name.to_string(),
            tags: repo
                .tags
                .iter()
                .map(|(t, d)| (t.clone(), d.to_string()))
                .collect(),
            manifests: repo
                .manifests
                .iter()
                .map(|(d, m, b)| ManifestEntry {
                    digest: d.to_string(),
                    media_type: m.clone(),
                    size: b.len() as u64,
                })
                .collect(),
        });
    }
    let layout_bytes = to_json(&layout)?;
    let sum = write_small(dir, OCI_INDEX_FILE, &layout_bytes)?;
    files.push(FileEntry {
        path: OCI_INDEX_FILE.to_owned(),
        size: sum.size,
        sha256: sum.sha256,
    });
    let sum = write_small(dir, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT.as_bytes())?;
    files.push(FileEntry {
        path: OCI_LAYOUT_FILE.to_owned(),
        size: sum.size,
        sha256: sum.sha256,
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    absent.sort_by(|a, b| a.digest.cmp(&b.digest));

    let index = BundleIndex {
        format: FORMAT.to_owned(),
        version: VERSION,
        id: summary.id.clone(),
        created: format::rfc3339(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        ),
        source: options.source.clone(),
        since: parent.map(|p| p.id),
        repositories,
        files,
        absent,
    };
    let index_bytes = to_json(&index)?;
    let sum = write_small(dir, INDEX_FILE, &index_bytes)?;
    // Last: its presence says the bundle is complete.
    write_small(
        dir,
        INDEX_CHECKSUM_FILE,
        format!("{}  {INDEX_FILE}\n", sum.sha256).as_bytes(),
    )?;
    sync_dir(dir)?;
    let partial = dir.join(PARTIAL_DIR);
    std::fs::remove_dir_all(&partial).map_err(BundleError::io(&partial))?;
    Ok(summary)
}

/// Writes one manifest or blob unless an earlier run left it complete.
async fn place(
    dir: &Path,
    digest: &Digest,
    size: u64,
    body: wharf_blob::ByteStream,
    summary: &mut ExportSummary,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<FileEntry, BundleError> {
    let relative = blob_path(digest);
    let path = format::join(dir, &relative);
    let hashed = match files::existing_blob(&path, digest, size).await? {
        Some(kept) => {
            summary.files_kept += 1;
            progress(Progress::Kept { digest, size });
            kept
        }
        None => {
            let written = files::write_blob(dir, &relative, digest, body).await?;
            summary.files_written += 1;
            summary.bytes_written += written.size;
            progress(Progress::Wrote {
                digest,
                size: written.size,
            });
            written
        }
    };
    summary.bundle_bytes += hashed.size;
    Ok(FileEntry {
        path: relative,
        size: hashed.size,
        sha256: hashed.sha256,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, BundleError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| BundleError::Io {
        path: PathBuf::from(INDEX_FILE),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Creates the directory, or checks that it is empty or an earlier export,
/// and removes the index files so that it reads as incomplete until done.
fn prepare_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::create_dir_all(dir).map_err(BundleError::io(dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(BundleError::io(dir))?;
    let is_export = [INDEX_FILE, PARTIAL_DIR, INDEX_CHECKSUM_FILE]
        .iter()
        .any(|f| dir.join(f).exists());
    if !is_export && entries.next().is_some() {
        return Err(BundleError::NotABundle {
            path: dir.to_owned(),
            reason:
                "not empty and not an earlier wharf export; export into a new or empty directory"
                    .to_owned(),
        });
    }
    for f in [INDEX_CHECKSUM_FILE, INDEX_FILE] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BundleError::Io {
                    path: dir.join(f),
                    source: e,
                })
            }
        }
    }
    for sub in [PARTIAL_DIR, "blobs/sha256", "blobs/sha512"] {
        let path = format::join(dir, sub);
        std::fs::create_dir_all(&path).map_err(BundleError::io(&path))?;
    }
    Ok(())
}

/// Every selected repository with its tags and their manifests.
async fn collect(
    registry: &Registry,
    select: &(dyn Fn(&RepoName) -> bool + Sync),
) -> Result<Vec<Collected>, BundleError> {
    let mut names = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = registry.catalog(Some(PAGE), last.as_deref()).await?;
        for name in &page.items {
            if let Ok(repo) = RepoName::parse(name) {
                if select(&repo) {
                    names.push(repo);
                }
            }
        }
        if !page.more || page.items.is_empty() {
            break;
        }
        last = page.items.last().cloned();
    }
    let mut out = Vec::new();
    for name in names {
        let mut tags = BTreeMap::new();
        let mut manifests = Vec::new();
        let mut seen = HashSet::new();
        let mut last: Option<Tag> = None;
        loop {
            let page = match registry.tags(&name, Some(PAGE), last.as_ref()).await {
                Ok(p) => p,
                Err(OciError::NameUnknown(_)) => break,
                Err(e) => return Err(e.into()),
            };
            for tag in &page.items {
                let Ok(t) = Tag::parse(tag) else { continue };
                let content = match registry.get_manifest(&name, &Reference::Tag(t)).await {
                    Ok(c) => c,
                    // Deleted since the listing.
                    Err(OciError::ManifestUnknown(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                tags.insert(tag.clone(), content.digest.clone());
                walk(registry, &name, content, &mut seen, &mut manifests, 0).await?;
            }
            if !page.more || page.items.is_empty() {
                break;
            }
            last = page.items.last().and_then(|t| Tag::parse(t).ok());
        }
        if !tags.is_empty() {
            out.push(Collected {
                name,
                tags,
                manifests,
            });
        }
    }
    Ok(out)
}

/// Adds `content` and, before it, every child manifest it names.
async fn walk(
    registry: &Registry,
    repo: &RepoName,
    content: wharf_oci::ManifestContent,
    seen: &mut HashSet<Digest>,
    out: &mut Vec<(Digest, String, Bytes)>,
    depth: u32,
) -> Result<(), BundleError> {
    if !seen.insert(content.digest.clone()) {
        return Ok(());
    }
    let parsed =
        parse_manifest(&content.bytes, Some(content.media_type.as_str())).map_err(|reason| {
            BundleError::InvalidManifest {
                digest: content.digest.clone(),
                reason,
            }
        })?;
    for (child, kind, _) in &parsed.references {
        if *kind != ReferenceKind::Manifest {
            continue;
        }
        if depth >= MAX_DEPTH {
            return Err(BundleError::InvalidManifest {
                digest: content.digest.clone(),
                reason: format!("indexes nest deeper than {MAX_DEPTH}"),
            });
        }
        let child_content = registry
            .get_manifest(repo, &Reference::Digest(child.clone()))
            .await?;
        Box::pin(walk(registry, repo, child_content, seen, out, depth + 1)).await?;
    }
    out.push((content.digest, content.media_type, content.bytes));
    Ok(())
}
