//! The lookaside cache's records: which source file of which package, under
//! which checksum, is which blob.
//!
//! A row is keyed the way dist-git's `sources` file and the download URL name
//! a file — package, file name, checksum type, checksum — and points at the
//! SHA-256 blob that holds the bytes. It is written under the blob's live claim,
//! together with its `blob_refs` row (owner [`RefOwner::Lookaside`]), so a
//! stored source is never garbage; nothing deletes one yet (dist-git never does).

use sqlx::Row;
use wharf_core::{Digest, SourceChecksum, SourceFileName, SourcePackage};

use crate::refs::RefOwner;
use crate::{unix_now, BlobClaim, Meta, MetaError};

/// Migration 10: the `lookaside_sources` table.
pub(crate) const MIGRATION: &[&str] = &[r#"CREATE TABLE lookaside_sources (
    package TEXT NOT NULL,
    filename TEXT NOT NULL,
    hash_type TEXT NOT NULL,
    hash TEXT NOT NULL,
    blob TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime BIGINT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    uploaded_by TEXT,
    PRIMARY KEY (package, filename, hash_type, hash)
)"#];

/// A stored source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookasideSource {
    /// The blob holding its bytes.
    pub blob: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The modification time the uploader gave (unix seconds), else the upload time.
    pub mtime: i64,
    /// When it was stored (unix seconds).
    pub uploaded_at: i64,
}

/// The reference owner of one source file.
fn owner(package: &SourcePackage, file: &SourceFileName, sum: &SourceChecksum) -> RefOwner {
    RefOwner::Lookaside {
        package: package.clone(),
        file: file.clone(),
        checksum: sum.clone(),
    }
}

impl Meta {
    /// The source file `package`/`file` with checksum `sum`, if stored.
    pub async fn lookaside_source(
        &self,
        package: &SourcePackage,
        file: &SourceFileName,
        sum: &SourceChecksum,
    ) -> Result<Option<LookasideSource>, MetaError> {
        let row = sqlx::query(
            "SELECT blob, size, mtime, uploaded_at FROM lookaside_sources \
             WHERE package = $1 AND filename = $2 AND hash_type = $3 AND hash = $4",
        )
        .bind(package.as_str())
        .bind(file.as_str())
        .bind(sum.kind().as_str())
        .bind(sum.hex())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let blob: String = row.try_get(0)?;
        Ok(Some(LookasideSource {
            blob: Digest::parse(&blob)
                .map_err(|e| MetaError::Corrupt(format!("lookaside blob {blob:?}: {e}")))?,
            size: u64::try_from(row.try_get::<i64, _>(1)?)
                .map_err(|_| MetaError::Corrupt("negative lookaside size".into()))?,
            mtime: row.try_get(2)?,
            uploaded_at: row.try_get(3)?,
        }))
    }
}

impl BlobClaim {
    /// Records the claimed blob as the source file `package`/`file` with
    /// checksum `sum`, and its reference, under the claim's transaction.
    /// `false`: that file was already stored (the first upload stays).
    pub async fn record_lookaside_source(
        &mut self,
        package: &SourcePackage,
        file: &SourceFileName,
        sum: &SourceChecksum,
        size: u64,
        mtime: Option<i64>,
        uploaded_by: Option<&str>,
    ) -> Result<bool, MetaError> {
        let now = unix_now();
        let inserted = sqlx::query(
            "INSERT INTO lookaside_sources \
             (package, filename, hash_type, hash, blob, size, mtime, uploaded_at, uploaded_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (package, filename, hash_type, hash) DO NOTHING",
        )
        .bind(package.as_str())
        .bind(file.as_str())
        .bind(sum.kind().as_str())
        .bind(sum.hex())
        .bind(self.digest.to_string())
        .bind(size as i64)
        .bind(mtime.unwrap_or(now))
        .bind(now)
        .bind(uploaded_by)
        .execute(&mut *self.tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            let digest = self.digest.clone();
            crate::refs::add_refs(&mut self.tx, &owner(package, file, sum), &[&digest]).await?;
        }
        Ok(inserted)
    }
}
