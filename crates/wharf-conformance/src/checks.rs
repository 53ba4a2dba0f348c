//! The catalogue of checks, grouped by the spec area they cover.
//!
//! Each submodule exposes `checks()`; [`all`] concatenates them in the order a client would
//! meet the features (base, blob push, blob pull, manifests, discovery, deletion), which is also
//! the order of the output.

mod base;
mod blob_pull;
mod blob_push;
mod catalog;
mod deletes;
mod manifest_errors;
mod manifests;
mod mount;
mod names;
mod paging;
mod referrers;
mod tag_param;
mod tags;
mod token_mount;
mod uploads;

use crate::runner::Check;

/// Every check, in output order.
pub fn all() -> Vec<Check> {
    [
        base::checks(),
        blob_push::checks(),
        uploads::checks(),
        blob_pull::checks(),
        mount::checks(),
        token_mount::checks(),
        manifests::checks(),
        manifest_errors::checks(),
        tag_param::checks(),
        names::checks(),
        tags::checks(),
        catalog::checks(),
        referrers::checks(),
        deletes::checks(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn check_ids_are_unique_and_dotted() {
        let checks = all();
        let mut seen = HashSet::new();
        for check in &checks {
            assert!(seen.insert(check.id), "duplicate check id {}", check.id);
            assert!(
                check
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'),
                "check id {} has characters outside [a-z0-9.-]",
                check.id
            );
            assert!(!check.description.contains('\n'));
        }
    }
}
