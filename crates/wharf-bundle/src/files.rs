//! File plumbing shared by export and import: hashing a file (on a blocking
//! thread, so a big layer never stalls the runtime), and writing a file under a
//! temporary name that is renamed into place only after its digest checked, so
//! an interrupted export leaves only complete files under their final names.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use wharf_blob::ByteStream;
use wharf_core::{Algorithm, Digest};

use crate::format::{self, PARTIAL_DIR};
use crate::BundleError;

/// What hashing a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hashed {
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// The digest in the algorithm asked for (SHA-256 unless a blob is sha512).
    pub digest: Digest,
}

/// Hashes `path` with SHA-256 and, if different, `algorithm`.
pub(crate) async fn hash_file(path: &Path, algorithm: Algorithm) -> Result<Hashed, BundleError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned).map_err(BundleError::io(&owned))?;
        let mut sha256 = Sha256::new();
        let mut other = (algorithm != Algorithm::Sha256).then(|| algorithm.hasher());
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(BundleError::io(&owned))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            sha256.update(&buf[..n]);
            if let Some(h) = other.as_mut() {
                h.update(&buf[..n]);
            }
        }
        Ok(finish(size, sha256, other))
    })
    .await
    .map_err(|e| BundleError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?
}

fn finish(size: u64, sha256: Sha256, other: Option<wharf_core::Hasher>) -> Hashed {
    let sha256 = hex::encode(sha256.finalize());
    let digest = match other {
        Some(h) => h.finish(),
        None => Digest::parse(&format!("sha256:{sha256}")).expect("sha256 hex is a digest"),
    };
    Hashed {
        size,
        sha256,
        digest,
    }
}

/// Checks `path` against a size and SHA-256; a mismatch is the error import reports.
pub(crate) async fn verify_file(path: &Path, size: u64, sha256: &str) -> Result<(), BundleError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(BundleError::io(path))?;
    if !meta.is_file() {
        return Err(BundleError::NotABundle {
            path: path.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    if meta.len() != size {
        return Err(BundleError::SizeMismatch {
            path: path.to_owned(),
            expected: size,
            actual: meta.len(),
        });
    }
    let hashed = hash_file(path, Algorithm::Sha256).await?;
    if hashed.sha256 != sha256 {
        return Err(BundleError::DigestMismatch {
            path: path.to_owned(),
            expected: format!("sha256:{sha256}"),
            actual: format!("sha256:{}", hashed.sha256),
        });
    }
    Ok(())
}

/// Whether `path` already holds exactly the blob `digest` of `size` bytes (a
/// resumed export keeps it); its SHA-256 when it does.
pub(crate) async fn existing_blob(
    path: &Path,
    digest: &Digest,
    size: u64,
) -> Result<Option<Hashed>, BundleError> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_file() && meta.len() == size => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BundleError::Io {
                path: path.to_owned(),
                source: e,
            })
        }
    }
    let hashed = hash_file(path, digest.algorithm()).await?;
    Ok((&hashed.digest == digest).then_some(hashed))
}

fn partial_path(dir: &Path, relative: &str) -> PathBuf {
    dir.join(PARTIAL_DIR).join(relative.replace('/', "_"))
}

/// Streams `body` into `dir/relative` through a temporary file; renamed into
/// place (and fsynced) only when the bytes hash to `digest`.
pub(crate) async fn write_blob(
    dir: &Path,
    relative: &str,
    digest: &Digest,
    mut body: ByteStream,
) -> Result<Hashed, BundleError> {
    let temp = partial_path(dir, relative);
    let target = format::join(dir, relative);
    let mut file = std::fs::File::create(&temp).map_err(BundleError::io(&temp))?;
    let mut sha256 = Sha256::new();
    let mut other = (digest.algorithm() != Algorithm::Sha256).then(|| digest.algorithm().hasher());
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(BundleError::io(&target))?;
        size += chunk.len() as u64;
        sha256.update(&chunk);
        if let Some(h) = other.as_mut() {
            h.update(&chunk);
        }
        // Chunks are at most a MiB: writing them inline costs less than a hand-off.
        file.write_all(&chunk).map_err(BundleError::io(&temp))?;
    }
    let hashed = finish(size, sha256, other);
    if &hashed.digest != digest {
        let _ = std::fs::remove_file(&temp);
        return Err(BundleError::DigestMismatch {
            path: target,
            expected: digest.to_string(),
            actual: hashed.digest.to_string(),
        });
    }
    file.sync_all().map_err(BundleError::io(&temp))?;
    drop(file);
    std::fs::rename(&temp, &target).map_err(BundleError::io(&target))?;
    Ok(hashed)
}

/// Writes a small file (an index) through a temporary name; its SHA-256 and size.
pub(crate) fn write_small(
    dir: &Path,
    relative: &str,
    bytes: &[u8],
) -> Result<FileSum, BundleError> {
    let temp = partial_path(dir, relative);
    let target = format::join(dir, relative);
    let mut file = std::fs::File::create(&temp).map_err(BundleError::io(&temp))?;
    file.write_all(bytes).map_err(BundleError::io(&temp))?;
    file.sync_all().map_err(BundleError::io(&temp))?;
    drop(file);
    std::fs::rename(&temp, &target).map_err(BundleError::io(&target))?;
    Ok(FileSum {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

/// Size and SHA-256 of written bytes.
pub(crate) struct FileSum {
    pub size: u64,
    pub sha256: String,
}

/// Fsyncs a directory so the renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BundleError::io(dir))
}

/// A file's bytes as a stream.
pub(crate) async fn file_stream(path: &Path) -> Result<ByteStream, BundleError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(BundleError::io(path))?;
    Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
        file,
        1 << 20,
    )))
}
