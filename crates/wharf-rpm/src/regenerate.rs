//! Metadata Wharf writes for a mirror whose package set is not upstream's
//! (a filtered remote, or an additive one keeping packages upstream dropped):
//! primary, filelists and other regenerated from the stored packages'
//! headers with the hosted repositories' writer (one package at a time into
//! gzip streams on temporary files, so memory is flat in the number of
//! packages), upstream's comps, updateinfo and modules kept as they are, and
//! a repomd.xml naming them, signed with Wharf's key.

use std::io::{Seek, Write as _};

use bytes::Bytes;
use wharf_blob::BlobStore;
use wharf_core::{Digest, TreePath};
use wharf_meta::SnapshotEntry;
use wharf_snapshot::Staged;

use crate::createrepo::{self, Kind, MetadataWriter, PackageRecord, RepomdEntry};
use crate::package::stored_header;
use crate::RpmError;

const PAGE: u32 = 1000;

/// The upstream `<data>` types a regenerated mirror keeps as they are: none
/// of them lists the package set in a way dnf checks against primary.
pub(crate) fn kept_kind(kind: &str) -> bool {
    matches!(
        kind,
        "group" | "group_gz" | "group_xz" | "updateinfo" | "modules"
    )
}

/// An upstream data file kept in the regenerated repomd.xml.
#[derive(Debug, Clone)]
pub(crate) struct KeptRecord {
    /// Its `type`.
    pub kind: String,
    /// Where it is in the snapshot (upstream's location).
    pub path: TreePath,
    /// Upstream's open-checksum and open-size, when the checksum is SHA-256
    /// (the one kind this repomd.xml writes).
    pub open: Option<(String, u64)>,
    /// Upstream's timestamp.
    pub timestamp: i64,
}

fn store(what: &str, e: impl std::fmt::Display) -> RpmError {
    RpmError::Store(format!("{what}: {e}"))
}

fn is_package(entry: &SnapshotEntry) -> bool {
    let p = entry.path.as_str();
    p.ends_with(".rpm") && !p.starts_with("repodata/")
}

/// Every package of the staged snapshot, a page at a time.
async fn packages_page(
    staged: &Staged,
    after: Option<&TreePath>,
) -> Result<(Vec<SnapshotEntry>, Option<TreePath>), RpmError> {
    let page = staged
        .entries(None, after, PAGE)
        .await
        .map_err(|e| store("list the staged snapshot", e))?;
    let next = (page.len() == PAGE as usize)
        .then(|| page.last().map(|e| e.path.clone()))
        .flatten();
    Ok((page.into_iter().filter(is_package).collect(), next))
}

/// Writes primary, filelists, other and repomd.xml (+ `.asc` with a signer)
/// for every package in `staged`; returns the number of packages.
pub(crate) async fn write_metadata(
    blobs: &BlobStore,
    staged: &Staged,
    kept: &[KeptRecord],
    signer: Option<&wharf_sign::SigningKeys>,
    now: i64,
) -> Result<u64, RpmError> {
    let io = |e: std::io::Error| RpmError::Store(format!("writing metadata: {e}"));
    let mut count = 0u64;
    let mut after = None;
    loop {
        let (page, next) = packages_page(staged, after.as_ref()).await?;
        count += page.len() as u64;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let temp = || -> Result<_, RpmError> {
        Ok(std::io::BufWriter::new(tempfile::tempfile().map_err(io)?))
    };
    let mut primary = MetadataWriter::start(Kind::Primary, count, temp()?).map_err(io)?;
    let mut filelists = MetadataWriter::start(Kind::Filelists, count, temp()?).map_err(io)?;
    let mut other = MetadataWriter::start(Kind::Other, count, temp()?).map_err(io)?;
    let mut written = 0u64;
    let mut after = None;
    loop {
        let (page, next) = packages_page(staged, after.as_ref()).await?;
        for entry in &page {
            let (header, _) =
                stored_header(blobs, &entry.blob, entry.size, entry.path.as_str()).await?;
            let record = PackageRecord {
                header: &header,
                sha256: entry.blob.hex(),
                size: entry.size,
                file_time: entry.modified_at,
                href: entry.path.as_str(),
            };
            primary.package(&record).map_err(io)?;
            filelists.package(&record).map_err(io)?;
            other.package(&record).map_err(io)?;
            written += 1;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if written != count {
        return Err(RpmError::Store(format!(
            "the package list changed while metadata was written ({count} then {written})"
        )));
    }
    let mut records = Vec::new();
    for writer in [primary, filelists, other] {
        let kind = writer.kind();
        let (out, w) = writer.finish().map_err(io)?;
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.flush().map_err(io)?;
        file.rewind().map_err(io)?;
        let digest = Digest::parse(&format!("sha256:{}", w.checksum))
            .map_err(|e| RpmError::Store(e.to_string()))?;
        let href = format!("repodata/{}-{}.xml.gz", w.checksum, kind.name());
        let path = TreePath::new(&href).map_err(|e| store(&href, e))?;
        staged
            .put_reader(&path, tokio::fs::File::from_std(file), Some(&digest), now)
            .await
            .map_err(|e| store(&href, e))?;
        records.push(RepomdEntry {
            kind: kind.name().to_string(),
            href,
            checksum: w.checksum,
            size: w.size,
            open: Some((w.open_checksum, w.open_size)),
            timestamp: now,
        });
    }
    for k in kept {
        let entry = staged
            .entry(&k.path)
            .await
            .map_err(|e| store(k.path.as_str(), e))?
            .ok_or_else(|| RpmError::Store(format!("{} vanished from the snapshot", k.path)))?;
        records.push(RepomdEntry {
            kind: k.kind.clone(),
            href: k.path.as_str().to_string(),
            checksum: entry.blob.hex().to_string(),
            size: entry.size,
            open: k.open.clone(),
            timestamp: k.timestamp,
        });
    }
    let repomd = createrepo::repomd_xml(now, &records);
    let put = |path: &'static str, bytes: Vec<u8>| async move {
        staged
            .put_bytes(
                &TreePath::new(path).expect("constant"),
                Bytes::from(bytes),
                None,
                now,
            )
            .await
            .map_err(|e| store(path, e))
    };
    if let Some(signer) = signer {
        let asc = signer
            .sign_openpgp_armored(&repomd)
            .map_err(|e| RpmError::Store(format!("signing repomd.xml: {e}")))?;
        put("repodata/repomd.xml.asc", asc.into_bytes()).await?;
    }
    put("repodata/repomd.xml", repomd).await?;
    Ok(count)
}
