//! `wharf export` and `wharf import`: the CLI side of air-gap bundles
//! (`wharf-bundle` does the work). Both run in the foreground against the
//! stores, safely beside running servers: export only reads through the
//! registry, import writes through the same `Registry` operations a push uses.
//! One progress line per file or step, then one summary line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use wharf_blob::BlobStore;
use wharf_bundle::{ExportOptions, ImportOptions, Progress};
use wharf_config::Config;
use wharf_core::{RepoName, Tag};
use wharf_meta::Meta;
use wharf_oci::{Registry, RegistryLimits};

use wharf_mirror::run::human_bytes;

fn plural(n: usize, what: &str) -> String {
    wharf_mirror::run::plural(n as u64, what)
}

fn registry(config: &Config, blobs: Arc<BlobStore>, meta: Meta) -> Registry {
    Registry::new(
        blobs,
        meta,
        RegistryLimits {
            max_manifest_bytes: config.oci.max_manifest_bytes,
            manifest_cache_bytes: config.oci.manifest_cache_bytes,
        },
    )
}

fn short(digest: &wharf_core::Digest) -> String {
    let s = digest.to_string();
    s.chars().take(7 + 16).collect()
}

fn print_progress(event: Progress<'_>) {
    match event {
        Progress::Wrote { digest, size } => {
            println!("wrote {} ({})", short(digest), human_bytes(size))
        }
        Progress::Kept { digest, size } => {
            println!(
                "kept {} ({}, complete from an earlier run)",
                short(digest),
                human_bytes(size)
            )
        }
        Progress::Verified { files, bytes } => {
            println!(
                "verified {} ({})",
                plural(files, "file"),
                human_bytes(bytes)
            )
        }
        Progress::StoredBlob {
            repository,
            digest,
            size,
        } => println!(
            "stored blob {repository}@{} ({})",
            short(digest),
            human_bytes(size)
        ),
        Progress::StoredManifest { repository, digest } => {
            println!("stored manifest {repository}@{digest}")
        }
        Progress::Tagged {
            repository,
            tag,
            digest,
        } => println!("tagged {repository}:{tag} {digest}"),
    }
}

/// `wharf export DIR [--repository PATTERN …] [--since OLD]`.
pub(crate) async fn export(
    config: &Config,
    blobs: Arc<BlobStore>,
    meta: Meta,
    dir: &Path,
    patterns: &[String],
    since: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    for p in patterns {
        wharf_auth::glob::validate_pattern(p).map_err(anyhow::Error::msg)?;
    }
    let select = |repo: &RepoName| {
        patterns.is_empty()
            || patterns
                .iter()
                .any(|p| wharf_auth::glob::matches(p, repo.as_str()))
    };
    let registry = registry(config, blobs, meta);
    let started = Instant::now();
    let options = ExportOptions {
        dir: dir.to_owned(),
        select: &select,
        since: since.clone(),
        source: format!(
            "wharf {} from {}",
            env!("CARGO_PKG_VERSION"),
            config.storage.data_dir.display()
        ),
    };
    let summary = wharf_bundle::export(&registry, &options, &mut print_progress)
        .await
        .with_context(|| format!("export to {} failed", dir.display()))?;
    if summary.tags == 0 {
        eprintln!(
            "warning: no tagged repository matched{}; the bundle is empty",
            if patterns.is_empty() {
                String::new()
            } else {
                format!(" {}", patterns.join(", "))
            }
        );
    }
    let parent = match &since {
        Some(old) => format!(", {} left to {}", summary.in_parent, old.display()),
        None => String::new(),
    };
    println!(
        "exported {}, {}, {}, {} to {}: {} written ({}), {} kept{parent}; bundle {} ({}) in {:.1} s",
        repositories(summary.repositories),
        plural(summary.tags, "tag"),
        plural(summary.manifests, "manifest"),
        plural(summary.blobs, "blob"),
        dir.display(),
        plural(summary.files_written, "file"),
        human_bytes(summary.bytes_written),
        summary.files_kept,
        summary.id,
        human_bytes(summary.bundle_bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn repositories(n: usize) -> String {
    if n == 1 {
        "1 repository".to_owned()
    } else {
        format!("{n} repositories")
    }
}

/// Parses `NAME` or `NAME:TAG`.
fn repository_arg(arg: &str) -> anyhow::Result<(RepoName, Option<Tag>)> {
    let (name, tag) = match arg.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (arg, None),
    };
    let repo = RepoName::parse(name).map_err(|e| {
        anyhow::anyhow!("--repository {arg:?}: {name:?} is not a repository name: {e}")
    })?;
    let tag = match tag {
        Some(t) => Some(
            Tag::parse(t)
                .map_err(|e| anyhow::anyhow!("--repository {arg:?}: {t:?} is not a tag: {e}"))?,
        ),
        None => None,
    };
    Ok((repo, tag))
}

/// `wharf import DIR [--repository NAME[:TAG]]`.
pub(crate) async fn import(
    config: &Config,
    blobs: Arc<BlobStore>,
    meta: Meta,
    dir: &Path,
    repository: Option<&str>,
    verify_keys: &[std::path::PathBuf],
) -> anyhow::Result<ExitCode> {
    let trusted_keys = crate::sync::cosign_keys(verify_keys)?;
    let repository = match repository {
        Some(arg) => Some(repository_arg(arg)?),
        None => None,
    };
    if !dir.exists() {
        bail!("{}: no such directory", dir.display());
    }
    let registry = registry(config, blobs.clone(), meta);
    let started = Instant::now();
    let options = ImportOptions {
        dir: dir.to_owned(),
        repository,
        trusted_keys,
    };
    let summary = wharf_bundle::import(&registry, &blobs, &options, &mut print_progress)
        .await
        .with_context(|| format!("import of {} refused", dir.display()))?;
    let what = format!(
        "{} {}: {}, {}",
        summary.kind,
        dir.display(),
        repositories(summary.repositories),
        plural(summary.tags, "tag")
    );
    if summary.changed() {
        println!(
            "imported {what}: {} stored ({}), {} linked, {} recorded, {} set, in {:.1} s",
            plural(summary.blobs_stored, "blob"),
            human_bytes(summary.bytes_stored),
            summary.blobs_linked,
            plural(summary.manifests_stored, "manifest"),
            plural(summary.tags_moved, "tag"),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("nothing to import: {what}, already in the store (nothing changed)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_arguments() {
        let (r, t) = super::repository_arg("team/app:v1").unwrap();
        assert_eq!((r.as_str(), t.unwrap().as_str()), ("team/app", "v1"));
        let (r, t) = super::repository_arg("team/app").unwrap();
        assert_eq!((r.as_str(), t), ("team/app", None));
        assert!(super::repository_arg("Team/App").is_err());
        assert!(super::repository_arg("team/app:-x").is_err());
    }
}
