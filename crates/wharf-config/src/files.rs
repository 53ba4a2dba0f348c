//! `[files]` (file repositories) and `[lookaside]` (dist-git's source cache),
//! with their validation.
//!
//! Kept apart from `lib.rs` so that the file formats' keys grow in one place
//! that no other format's work touches.

use serde::{Deserialize, Serialize};

/// `[lookaside]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookasideConfig {
    /// Largest source file `upload.cgi` accepts, in bytes.
    pub max_upload_bytes: u64,
}

/// Default of `lookaside.max_upload_bytes`: 20 GiB, above the largest
/// tarballs distributions keep (kernel and browser sources are a few GB).
pub const DEFAULT_LOOKASIDE_MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024 * 1024;

impl Default for LookasideConfig {
    fn default() -> LookasideConfig {
        LookasideConfig {
            max_upload_bytes: DEFAULT_LOOKASIDE_MAX_UPLOAD_BYTES,
        }
    }
}

impl LookasideConfig {
    /// Appends every problem, with its TOML path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_upload_bytes == 0 {
            problems.push("lookaside.max_upload_bytes: must be at least 1".into());
        }
    }
}
