//! Lowers `[[mirror.remotes]]` into the pull-through cache `serve` hands the
//! `/v2` surface: every remote is a `?ns=` namespace, and the ones with a
//! `[mirror.remotes.pull_through]` table fetch on demand.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wharf_config::{remote_authority, Config};
use wharf_meta::Meta;
use wharf_mirror::{names, ProxyRemote, PullThrough, PullThroughPolicy};
use wharf_oci::Registry;

/// The cache, or `None` when no remote is configured. Nothing is contacted
/// here: an upstream that is down at start is only a pull that fails later.
pub(crate) fn build(
    config: &Config,
    registry: &Registry,
    meta: &Meta,
) -> anyhow::Result<Option<Arc<PullThrough>>> {
    if config.mirror.remotes.is_empty() {
        return Ok(None);
    }
    let mut remotes = Vec::new();
    for remote in &config.mirror.remotes {
        let (_, authority) = remote_authority(&remote.url)
            .with_context(|| format!("mirror.remotes {:?}: url", remote.name))?;
        let prefix = remote
            .prefix
            .clone()
            .unwrap_or_else(|| names::default_prefix(authority));
        let pull_through = match &remote.pull_through {
            None => None,
            Some(pt) => {
                let client = crate::sync::upstream_client(config, remote)
                    .with_context(|| format!("mirror.remotes {:?}", remote.name))?;
                Some(PullThroughPolicy {
                    client: Arc::new(client),
                    repositories: pt.repositories.clone(),
                    tag_ttl: Duration::from_secs(pt.tag_ttl_secs),
                    upstream_timeout: Duration::from_secs(pt.upstream_timeout_secs),
                    concurrency: remote.concurrency as usize,
                })
            }
        };
        remotes.push(ProxyRemote {
            name: remote.name.clone(),
            authority: authority.to_owned(),
            prefix,
            pull_through,
        });
    }
    Ok(Some(PullThrough::new(
        registry.clone(),
        meta.clone(),
        remotes,
    )))
}
