//! One reference model for every format: which owners hold which blobs.
//!
//! Garbage collection knows nothing of manifests, trees or packages. An owner —
//! an OCI manifest today; an OSTree object, an RPM package, a file, a snapshot
//! or an export bundle next — records the blobs it needs in `blob_refs`, in the
//! same transaction that records the owner itself, and drops them in the
//! transaction that deletes it. A blob with no reference that was last used
//! before the grace period is garbage; a new format adds rows, never clauses to
//! the sweep.
//!
//! So that a sweep costs in proportion to the garbage and not to the store,
//! every blob that may have become garbage — one just stored, or one whose last
//! reference was just dropped — is put on the `gc_candidates` list, and the
//! sweep looks only there (see gc.rs).

use wharf_core::{Digest, RepoName, SourceChecksum, SourceFileName, SourcePackage};

use crate::MetaError;

/// Who holds references, named one way everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefOwner {
    /// An OCI manifest (or index) in a repository: its own bytes, its config
    /// and layers, and the child manifests of an index.
    OciManifest {
        /// The repository.
        repo: RepoName,
        /// The manifest's digest.
        digest: Digest,
    },
    /// A snapshot of an OSTree, RPM or file repository: every blob its entries name.
    Snapshot {
        /// The snapshot's id.
        id: crate::SnapshotId,
    },
    /// A source file in the lookaside cache, under the checksum it was uploaded with.
    Lookaside {
        /// The package (with its namespace, if any).
        package: SourcePackage,
        /// The file name.
        file: SourceFileName,
        /// The checksum it is stored under.
        checksum: SourceChecksum,
    },
}

impl RefOwner {
    /// The owner's key in `blob_refs.owner`: a kind prefix, then its identity.
    /// Migration 4 writes the same form for the manifests it backfills.
    pub fn key(&self) -> String {
        match self {
            RefOwner::OciManifest { repo, digest } => format!("oci-manifest:{repo}@{digest}"),
            RefOwner::Snapshot { id } => format!("snapshot:{}", id.as_str()),
            // `/` cannot occur in a file name, so the key is unambiguous.
            RefOwner::Lookaside {
                package,
                file,
                checksum,
            } => format!("lookaside:{package}/{file}@{checksum}"),
        }
    }
}

/// Records that `owner` needs each of `blobs`, a few hundred to a statement
/// (a blob given twice is harmless: the conflict does nothing).
pub(crate) async fn add_refs(
    conn: &mut sqlx::AnyConnection,
    owner: &RefOwner,
    blobs: &[&Digest],
) -> Result<(), MetaError> {
    let key = owner.key();
    for chunk in blobs.chunks(400) {
        let sql = format!(
            "INSERT INTO blob_refs (blob, owner) VALUES {} ON CONFLICT (blob, owner) DO NOTHING",
            crate::sql_rows(chunk.len(), 2, 1, |p| format!("(${p}, $1)"))
        );
        let mut query = sqlx::query(&sql).bind(&key);
        for blob in chunk {
            query = query.bind(blob.to_string());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops every reference `owner` holds; the blobs it held become candidates.
pub(crate) async fn drop_refs(
    conn: &mut sqlx::AnyConnection,
    owner: &RefOwner,
) -> Result<(), MetaError> {
    let key = owner.key();
    sqlx::query(
        "INSERT INTO gc_candidates (blob) SELECT blob FROM blob_refs WHERE owner = $1 \
         ON CONFLICT (blob) DO NOTHING",
    )
    .bind(&key)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM blob_refs WHERE owner = $1")
        .bind(&key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Puts a blob on the candidate list (it was just stored, or lost a link).
pub(crate) async fn add_candidate(
    conn: &mut sqlx::AnyConnection,
    blob: &Digest,
) -> Result<(), MetaError> {
    sqlx::query("INSERT INTO gc_candidates (blob) VALUES ($1) ON CONFLICT (blob) DO NOTHING")
        .bind(blob.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
