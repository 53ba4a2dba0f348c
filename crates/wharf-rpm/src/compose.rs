//! Composed repositories: the union of other rpm repositories, hosted or
//! mirrored, in inheritance order — the first member holding a
//! `NAME-VERSION-RELEASE.ARCH` wins, as a Koji tag inherits from its parents
//! — with optional filters (arches, excluded names). Packages are recorded by
//! blob (nothing is copied) at `Packages/NVRA.rpm`, and the metadata is
//! written and signed like a hosted repository's. A composition is made again
//! whenever a member publishes through [`Hosted`] (uploads, removals,
//! promotions, and mirror runs that call [`Hosted::refresh_composed`]), or by
//! hand.

use std::collections::HashSet;

use wharf_core::{RepoName, TreePath};
use wharf_meta::SnapshotEntry;

use crate::hosted::{Hosted, Op, Session, PACKAGES_DIR, PAGE};
use crate::RpmError;

/// One composed repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composition {
    /// The composed repository.
    pub repository: RepoName,
    /// Its members, first wins.
    pub members: Vec<RepoName>,
    /// Only these arches (and `noarch` only if listed); empty: all.
    pub arches: Vec<String>,
    /// Package names left out; a trailing `*` matches any rest.
    pub exclude: Vec<String>,
}

impl Composition {
    fn takes(&self, name: &str, arch: &str) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == arch))
            && !self.exclude.iter().any(|x| match x.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == x,
            })
    }
}

/// What a composition took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// Packages taken.
    pub packages: u64,
    /// Packages a member earlier in the order already held.
    pub shadowed: u64,
    /// Packages the filters left out.
    pub filtered: u64,
    /// Members with nothing published (skipped).
    pub empty_members: Vec<RepoName>,
}

impl Session {
    /// Replaces the snapshot's content with the union of `plan`'s members'
    /// published packages.
    pub async fn compose(&self, plan: &Composition) -> Result<Composed, RpmError> {
        let snapshots = self.hosted().snapshots().clone();
        let store = |e: String| RpmError::Store(e);
        self.clear().await?;
        self.ops.lock().expect("ops").push(Op::Clear);
        let mut seen: HashSet<TreePath> = HashSet::new();
        let mut summary = Composed {
            packages: 0,
            shadowed: 0,
            filtered: 0,
            empty_members: Vec::new(),
        };
        for member in &plan.members {
            let Some(published) = snapshots
                .published(member)
                .await
                .map_err(|e| store(e.to_string()))?
            else {
                summary.empty_members.push(member.clone());
                continue;
            };
            let mut after: Option<TreePath> = None;
            loop {
                // Every .rpm of the member, wherever its metadata puts it.
                let page = snapshots
                    .meta()
                    .snapshot_entries(&published.id, None, after.as_ref(), PAGE)
                    .await
                    .map_err(|e| store(e.to_string()))?;
                let full = page.len() == PAGE as usize;
                after = page.last().map(|e| e.path.clone());
                let mut chosen = Vec::new();
                for entry in page.iter().filter(|e| e.path.as_str().ends_with(".rpm")) {
                    let h = self.stored_header(entry).await?;
                    if !plan.takes(h.name(), h.arch()) {
                        summary.filtered += 1;
                        continue;
                    }
                    let path = TreePath::new(&format!("{PACKAGES_DIR}/{}.rpm", h.nvra()))
                        .map_err(|e| RpmError::Package(format!("{}: {e}", h.nvra())))?;
                    if !seen.insert(path.clone()) {
                        summary.shadowed += 1;
                        continue;
                    }
                    chosen.push(SnapshotEntry {
                        path,
                        blob: entry.blob.clone(),
                        size: entry.size,
                        modified_at: entry.modified_at,
                    });
                }
                summary.packages += chosen.len() as u64;
                self.put_existing(&chosen).await?;
                self.ops
                    .lock()
                    .expect("ops")
                    .extend(chosen.into_iter().map(Op::Put));
                if !full {
                    break;
                }
            }
        }
        Ok(summary)
    }
}

impl Hosted {
    /// Makes again, and publishes, every composition `member` is part of.
    /// A failure is logged, not returned: the member's own change is already
    /// published.
    pub fn refresh_composed<'a>(
        &'a self,
        member: &'a RepoName,
    ) -> futures_util::future::BoxFuture<'a, Vec<(RepoName, Result<Composed, RpmError>)>> {
        // Boxed and `Send` here: a composition's own publish comes back
        // through `Session::finish`, so the future's type is recursive.
        Box::pin(async move {
            let plans: Vec<Composition> = self
                .compositions()
                .iter()
                .filter(|p| p.members.contains(member))
                .cloned()
                .collect();
            let mut out = Vec::new();
            for plan in plans {
                let result = self.recompose(&plan).await;
                if let Err(e) = &result {
                    tracing::warn!(repository = %plan.repository, %member, "refreshing the composition: {e}");
                }
                out.push((plan.repository.clone(), result));
            }
            out
        })
    }

    /// Makes `plan`'s composition again and publishes it.
    pub async fn recompose(&self, plan: &Composition) -> Result<Composed, RpmError> {
        let session = self.begin_composed(&plan.repository, "composition").await?;
        let composed = match session.compose(plan).await {
            Ok(c) => c,
            Err(e) => {
                session.abort().await?;
                return Err(e);
            }
        };
        session.finish(true).await?;
        Ok(composed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_arches_and_leave_out_names() {
        let plan = Composition {
            repository: RepoName::parse("c/all").unwrap(),
            members: vec![],
            arches: vec!["x86_64".into(), "noarch".into()],
            exclude: vec!["debug*".into(), "junk".into()],
        };
        assert!(plan.takes("hello", "noarch"));
        assert!(!plan.takes("hello", "aarch64"));
        assert!(!plan.takes("debuginfo-x", "x86_64"));
        assert!(!plan.takes("junk", "x86_64"));
        assert!(plan.takes("junky", "x86_64"));
    }
}
