//! The file formats' glue: the lookaside cache's and file repositories' values
//! built from the configuration for the HTTP layer.

use std::sync::Arc;

use wharf_blob::BlobStore;
use wharf_config::Config;
use wharf_meta::Meta;

/// What `/lookaside` (and the file-repository writes) serve from.
pub(crate) fn surface(config: &Config, meta: &Meta, blobs: &Arc<BlobStore>) -> wharf_files::Files {
    wharf_files::Files {
        lookaside: wharf_files::Lookaside::new(
            meta.clone(),
            blobs.clone(),
            config.lookaside.max_upload_bytes,
        ),
    }
}
