//! Promotion between hosted repositories (testing → stable): packages, or a
//! whole snapshot, copied from another repository's snapshot into a
//! session's. Only references are copied — the target records the source's
//! blobs, claimed in its own transaction — so no package byte is read or
//! written; the session then writes and signs the target's metadata and
//! publishes it in one step like any other change.

use std::collections::HashMap;

use wharf_core::{RepoName, TreePath};
use wharf_meta::SnapshotEntry;

use crate::evr::Evr;
use crate::hosted::{Op, Session, PACKAGES_DIR, PAGE};
use crate::RpmError;

/// What a promotion copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// The source snapshot's number.
    pub from_snapshot: i64,
    /// The packages' paths, in path order.
    pub paths: Vec<String>,
}

/// `NAME-VERSION-RELEASE.ARCH` of a package path, split: (name, arch).
fn name_and_arch(path: &TreePath) -> Option<(&str, &str)> {
    let stem = path.file_name().strip_suffix(".rpm")?;
    let (nvr, arch) = stem.rsplit_once('.')?;
    let (nv, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = nv.rsplit_once('-')?;
    Some((name, arch))
}

/// `NAME-[EPOCH:]VERSION-RELEASE.ARCH[.rpm]` as the path's file stem (the
/// path carries no epoch).
fn file_stem(spec: &str) -> String {
    let spec = spec.strip_suffix(".rpm").unwrap_or(spec);
    match spec.split_once(':') {
        Some((left, right)) => match left.rsplit_once('-') {
            Some((name, epoch)) if epoch.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{name}-{right}")
            }
            _ => spec.to_string(),
        },
        None => spec.to_string(),
    }
}

impl Session {
    /// Copies from `from`'s published snapshot (or its snapshot `number`):
    /// with `packages` empty, the whole snapshot (the target then holds
    /// exactly its packages, comps and updateinfo); else each package named,
    /// as `NAME-[EPOCH:]VERSION-RELEASE.ARCH` (that build) or `NAME` (its
    /// newest version of each arch). A package the target holds with other
    /// bytes is refused.
    pub async fn promote(
        &self,
        from: &RepoName,
        number: Option<i64>,
        packages: &[String],
    ) -> Result<Promoted, RpmError> {
        if from == self.repo() {
            return Err(RpmError::Package(format!(
                "{from} cannot be promoted into itself"
            )));
        }
        let snapshots = self.hosted().snapshots().clone();
        let store = |e: wharf_snapshot::SnapshotError| RpmError::Store(e.to_string());
        let source = match number {
            Some(n) => snapshots.by_number(from, n).await.map_err(|e| match e {
                wharf_snapshot::SnapshotError::NoSuchNumber { .. } => {
                    RpmError::NotFound(e.to_string())
                }
                e => store(e),
            })?,
            None => snapshots
                .published(from)
                .await
                .map_err(store)?
                .ok_or_else(|| RpmError::NotFound(format!("{from} has published nothing")))?,
        };
        let read_all = |dir: &'static str| {
            let snapshots = snapshots.clone();
            let id = source.id.clone();
            async move {
                let dir = TreePath::new(dir).map_err(|e| RpmError::Store(e.to_string()))?;
                let mut out: Vec<SnapshotEntry> = Vec::new();
                let mut after: Option<TreePath> = None;
                loop {
                    let page = snapshots
                        .meta()
                        .snapshot_entries(&id, Some(&dir), after.as_ref(), PAGE)
                        .await
                        .map_err(|e| RpmError::Store(e.to_string()))?;
                    let full = page.len() == PAGE as usize;
                    after = page.last().map(|e| e.path.clone());
                    out.extend(page);
                    if !full {
                        return Ok::<_, RpmError>(out);
                    }
                }
            }
        };
        let available: Vec<SnapshotEntry> = read_all(PACKAGES_DIR)
            .await?
            .into_iter()
            .filter(|e| e.path.as_str().ends_with(".rpm"))
            .collect();
        let chosen: Vec<SnapshotEntry> = if packages.is_empty() {
            self.clear().await?;
            self.ops.lock().expect("ops").push(Op::Clear);
            for entry in read_all("repodata").await? {
                let name = entry.path.file_name();
                let suffix = if name.ends_with("-comps.xml") {
                    "comps.xml"
                } else if name.ends_with("-updateinfo.xml") {
                    "updateinfo.xml"
                } else {
                    continue;
                };
                self.put_existing(std::slice::from_ref(&entry)).await?;
                self.ops
                    .lock()
                    .expect("ops")
                    .push(Op::Extra { suffix, entry });
            }
            available
        } else {
            let mut chosen = Vec::new();
            for spec in packages {
                let stem = file_stem(spec);
                if let Some(e) = available
                    .iter()
                    .find(|e| e.path.file_name().strip_suffix(".rpm") == Some(stem.as_str()))
                {
                    chosen.push(e.clone());
                    continue;
                }
                // A name: its newest version of each arch.
                let mut newest: HashMap<String, (Evr, SnapshotEntry)> = HashMap::new();
                let candidates: Vec<&SnapshotEntry> = available
                    .iter()
                    .filter(|e| name_and_arch(&e.path).is_some_and(|(n, _)| n == spec))
                    .collect();
                for e in candidates {
                    let h = self.stored_header(e).await?;
                    let evr = Evr {
                        epoch: h.epoch(),
                        version: h.version().to_string(),
                        release: h.release().to_string(),
                    };
                    let slot = newest.entry(h.arch().to_string());
                    match slot {
                        std::collections::hash_map::Entry::Occupied(mut o) => {
                            if evr > o.get().0 {
                                o.insert((evr, e.clone()));
                            }
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert((evr, e.clone()));
                        }
                    }
                }
                if newest.is_empty() {
                    return Err(RpmError::NotFound(format!(
                        "snapshot {} of {from} has no package {spec}",
                        source.number
                    )));
                }
                chosen.extend(newest.into_values().map(|(_, e)| e));
            }
            chosen.sort_by(|a, b| a.path.cmp(&b.path));
            chosen.dedup_by(|a, b| a.path == b.path);
            chosen
        };
        self.put_existing(&chosen).await?;
        self.ops
            .lock()
            .expect("ops")
            .extend(chosen.iter().cloned().map(Op::Put));
        Ok(Promoted {
            from_snapshot: source.number,
            paths: chosen.iter().map(|e| e.path.as_str().to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_split_into_name_and_arch() {
        let p = |s: &str| TreePath::new(s).unwrap();
        assert_eq!(
            name_and_arch(&p("Packages/python3-foo-bar-1.2-3.el9.x86_64.rpm")),
            Some(("python3-foo-bar", "x86_64"))
        );
        assert_eq!(name_and_arch(&p("Packages/junk.rpm")), None);
        assert_eq!(file_stem("hello-2:1.0-1.noarch"), "hello-1.0-1.noarch");
        assert_eq!(file_stem("hello-1.0-1.noarch.rpm"), "hello-1.0-1.noarch");
    }
}
