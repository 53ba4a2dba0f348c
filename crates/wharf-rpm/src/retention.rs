//! Retention of hosted repositories: keep the newest N versions of each
//! package name, per arch (`wharf rpm prune --keep N`, or `keep_versions` of
//! `[[rpm.hosted]]` on every change). Versions are ordered as rpm orders
//! them ([`crate::evr`]), read from the stored packages' headers; what is
//! dropped stays in older snapshots for the publish grace period and is then
//! reclaimed by garbage collection.

use std::collections::HashMap;

use wharf_core::TreePath;

use crate::evr::Evr;
use crate::hosted::{Op, Session, PAGE};
use crate::RpmError;

/// A package dropped by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `NAME-[EPOCH:]VERSION-RELEASE.ARCH`.
    pub nevra: String,
    /// Its path in the repository.
    pub path: String,
}

/// One stored version of a package: its EVR, NEVRA and path.
type Version = (Evr, String, TreePath);

impl Session {
    /// Keeps the newest `keep` versions of each package name and arch and
    /// removes the others; returns what it removed. `keep` 0 is refused.
    pub async fn prune(&self, keep: u32) -> Result<Vec<Dropped>, RpmError> {
        if keep == 0 {
            return Err(RpmError::Package(
                "--keep 0 would remove every package; keep at least 1".into(),
            ));
        }
        let dropped = self.keep_newest(keep).await?;
        self.ops.lock().expect("ops").push(Op::KeepNewest(keep));
        Ok(dropped)
    }

    /// [`prune`](Session::prune) without recording the change (replayed ones).
    pub(crate) async fn keep_newest(&self, keep: u32) -> Result<Vec<Dropped>, RpmError> {
        self.flush().await?;
        // (name, arch) → every version: one small record per package.
        let mut by_name: HashMap<(String, String), Vec<Version>> = HashMap::new();
        let mut after: Option<TreePath> = None;
        loop {
            let page = self.package_entries(after.as_ref()).await?;
            for entry in &page {
                let h = self.stored_header(entry).await?;
                let evr = Evr {
                    epoch: h.epoch(),
                    version: h.version().to_string(),
                    release: h.release().to_string(),
                };
                by_name
                    .entry((h.name().to_string(), h.arch().to_string()))
                    .or_default()
                    .push((evr, h.nevra(), entry.path.clone()));
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => break,
            }
        }
        let mut dropped = Vec::new();
        for versions in by_name.values_mut() {
            versions.sort_by(|a, b| b.0.cmp(&a.0));
            for (_, nevra, path) in versions.drain(..).skip(keep as usize) {
                dropped.push(Dropped {
                    nevra,
                    path: path.as_str().to_string(),
                });
            }
        }
        dropped.sort_by(|a, b| a.path.cmp(&b.path));
        let paths = dropped
            .iter()
            .map(|d| TreePath::new(&d.path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RpmError::Store(e.to_string()))?;
        self.staged_remove(&paths).await?;
        Ok(dropped)
    }
}
