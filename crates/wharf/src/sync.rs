//! `wharf sync [REMOTE]`: copies the configured `[[mirror.sync]]` selections
//! from their upstreams into the store, in the foreground, safely beside
//! running servers (it writes through the same `Registry` operations a push
//! uses). One line per tag, then one summary line; exit 1 when any tag failed,
//! after trying every other.
//!
//! Running it as a job on the shared queue (`sync:<remote>`, scheduled per
//! remote) is the next step.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use wharf_blob::BlobStore;
use wharf_config::{remote_authority, Config, RemoteConfig, SyncConfig};
use wharf_core::{RepoName, Tag};
use wharf_meta::Meta;
use wharf_mirror::{
    names, CopyOptions, Mirror, Platform, TagOutcome, TagSelection, UpstreamClient,
    UpstreamSettings,
};
use wharf_oci::{Registry, RegistryLimits};

/// Runs every sync definition of `remote` (or of every remote).
pub(crate) async fn sync(
    config: &Config,
    blobs: Arc<BlobStore>,
    meta: Meta,
    remote: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let remotes: Vec<&RemoteConfig> = match remote {
        Some(name) => match config.mirror.remotes.iter().find(|r| r.name == name) {
            Some(r) => vec![r],
            None => bail!(
                "no [[mirror.remotes]] is named {name:?} (configured: {})",
                names_of(config)
            ),
        },
        None => config
            .mirror
            .remotes
            .iter()
            .filter(|r| config.mirror.sync.iter().any(|s| s.remote == r.name))
            .collect(),
    };
    if remotes.is_empty() || !remotes.iter().any(|r| has_sync(config, r)) {
        bail!(
            "nothing to sync: no [[mirror.sync]] names {}",
            match remote {
                Some(name) => format!("the remote {name:?}"),
                None => "any [[mirror.remotes]]".to_owned(),
            }
        );
    }
    let registry = Registry::new(
        blobs,
        meta,
        RegistryLimits {
            max_manifest_bytes: config.oci.max_manifest_bytes,
            manifest_cache_bytes: config.oci.manifest_cache_bytes,
        },
    );
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut unchanged = 0u64;
    let mut copied = 0u64;
    let mut fetched = (0u64, 0u64, 0u64);
    for remote in &remotes {
        let mirror = match connect(config, remote, &registry).await {
            Ok(m) => m,
            Err(e) => {
                let line = format!("{}: {e:#}", remote.name);
                println!("failed {line}");
                failures.push(line);
                continue;
            }
        };
        let authority = remote_authority(&remote.url).map(|(_, a)| a).unwrap_or("");
        let prefix = remote
            .prefix
            .clone()
            .unwrap_or_else(|| names::default_prefix(authority));
        for def in config
            .mirror
            .sync
            .iter()
            .filter(|s| s.remote == remote.name)
        {
            let (selection, options) = lower_definition(def)?;
            for repository in &def.repositories {
                let upstream = names::upstream_repository(authority, repository);
                let local_name = names::local_repository(&prefix, &upstream);
                let local = match RepoName::parse(&local_name) {
                    Ok(name) => name,
                    Err(e) => {
                        let line = format!("{local_name}: not a repository name: {e}");
                        println!("failed {line}");
                        failures.push(line);
                        continue;
                    }
                };
                let tags = if selection.needs_listing() {
                    match mirror.client().list_tags(&upstream).await {
                        Ok(listed) => selection.select(&listed),
                        Err(e) => {
                            let line = format!("{local}: listing tags of {upstream}: {e}");
                            println!("failed {line}");
                            failures.push(line);
                            continue;
                        }
                    }
                } else {
                    selection.select(&[])
                };
                for tag in tags {
                    let result = match Tag::parse(&tag) {
                        Ok(t) => mirror
                            .copy_tag_with(&upstream, &local, &t, &options)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(format!("not a tag: {e}")),
                    };
                    match result {
                        Ok(TagOutcome::Copied { digest }) => {
                            copied += 1;
                            println!("copied {local}:{tag} {digest}");
                        }
                        Ok(TagOutcome::Unchanged { digest }) => {
                            unchanged += 1;
                            println!("unchanged {local}:{tag} {digest}");
                        }
                        Err(e) => {
                            let line = format!("{local}:{tag}: {e}");
                            println!("failed {line}");
                            failures.push(line);
                        }
                    }
                }
            }
        }
        let (m, b, bytes) = mirror.transferred().snapshot();
        fetched = (fetched.0 + m, fetched.1 + b, fetched.2 + bytes);
    }
    let names: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
    let failed = if failures.is_empty() {
        String::new()
    } else {
        format!(", {} failed", failures.len())
    };
    println!(
        "synced {}: {}, {}, {} fetched, {} copied, {} unchanged{failed}, in {:.1} s",
        names.join(", "),
        plural(fetched.0 as usize, "manifest"),
        plural(fetched.1 as usize, "blob"),
        human_bytes(fetched.2),
        plural(copied as usize, "tag"),
        plural(unchanged as usize, "tag"),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("wharf: {} failed:", plural(failures.len(), "sync"));
        for f in &failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// One `[[mirror.sync]]` definition as the copy takes it: which tags, and
/// which platforms and extras of each (validated at load; this only converts).
pub(crate) fn lower_definition(def: &SyncConfig) -> anyhow::Result<(TagSelection, CopyOptions)> {
    let selection = TagSelection::new(&def.tags, &def.include, &def.exclude, &def.semver)
        .context("mirror.sync")?;
    let platforms = def
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .context("mirror.sync.platforms")?;
    Ok((
        selection,
        CopyOptions {
            platforms,
            signatures: def.signatures,
        },
    ))
}

fn has_sync(config: &Config, remote: &RemoteConfig) -> bool {
    config.mirror.sync.iter().any(|s| s.remote == remote.name)
}

fn names_of(config: &Config) -> String {
    if config.mirror.remotes.is_empty() {
        return "none".to_owned();
    }
    config
        .mirror
        .remotes
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Builds the remote's client and checks that it answers and takes the credentials.
async fn connect(
    config: &Config,
    remote: &RemoteConfig,
    registry: &Registry,
) -> anyhow::Result<Mirror> {
    let (scheme, authority) = remote_authority(&remote.url)
        .with_context(|| format!("url {:?} is not http(s)://HOST[:PORT]", remote.url))?;
    let credentials = if remote.username.is_empty() {
        None
    } else if let Some(password) = &remote.password {
        // Given inline by a skopeo sync file.
        Some((remote.username.clone(), password.clone()))
    } else {
        let path = &remote.password_file;
        if let Some(mode) = crate::serve::loose_mode(path) {
            eprintln!(
                "warning: mirror.remotes {:?}: password_file {} has mode {mode:o}; \
                 group and others should not read it (chmod 600)",
                remote.name,
                path.display()
            );
        }
        let password = std::fs::read_to_string(path)
            .with_context(|| format!("password_file: cannot read {}", path.display()))?;
        let password = password.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            bail!("password_file: {} is empty", path.display());
        }
        Some((remote.username.clone(), password))
    };
    let ca_bundle =
        if remote.ca_bundle.as_os_str().is_empty() {
            None
        } else {
            Some(std::fs::read(&remote.ca_bundle).with_context(|| {
                format!("ca_bundle: cannot read {}", remote.ca_bundle.display())
            })?)
        };
    let client = UpstreamClient::new(UpstreamSettings {
        base_url: names::endpoint(scheme, authority),
        credentials,
        ca_bundle,
        max_manifest_bytes: config.oci.max_manifest_bytes,
    })?;
    client.ping().await?;
    Ok(Mirror::new(
        registry.clone(),
        Arc::new(client),
        remote.concurrency as usize,
    ))
}

/// `48.2 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plural() {
        assert_eq!(super::plural(1, "tag"), "1 tag");
        assert_eq!(super::plural(0, "blob"), "0 blobs");
    }

    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(
            super::human_bytes(48 * 1024 * 1024 + 200 * 1024),
            "48.2 MiB"
        );
    }
}
