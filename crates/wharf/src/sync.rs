//! Mirroring from the binary's side: lowering `[[mirror.remotes]]` and their
//! `[[mirror.sync]]` definitions into a `wharf_mirror::SyncPlan`, the
//! `sync:<remote>` job handler the server's worker runs (scheduled per remote or
//! queued with `wharf jobs run sync:REMOTE`), and `wharf sync [REMOTE]`.
//!
//! `wharf sync` runs in the foreground, in this process, rather than queueing a
//! job and following it: it then works with no server running (a first fill,
//! an air-gapped site) and its output is live. It is safe beside servers and
//! beside a `sync:<remote>` job of the same remote (both write through the same
//! `Registry` operations a push uses; the second to arrive finds the blobs
//! stored). Both print the same lines through `wharf_mirror::run_sync`: on a
//! terminal, progress bars (tags, manifests and blobs, bytes and rate) with the
//! tag lines above them; otherwise one plain line per tag; then one summary
//! line per remote. Exit 1 when any tag failed, after trying every other.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wharf_blob::BlobStore;
use wharf_config::{remote_authority, Config, RemoteConfig};
use wharf_jobs::{HandlerFuture, JobCatalog, JobError, JobHandler, Progress};
use wharf_meta::Meta;
use wharf_mirror::{
    names, run_sync, SyncDefinition, SyncLine, SyncObserver, SyncPlan, SyncSummary,
    UpstreamSettings,
};
use wharf_oci::{Registry, RegistryLimits};

/// The remotes that have something to sync, in configuration order.
fn remotes_with_sync(config: &Config) -> Vec<&RemoteConfig> {
    config
        .mirror
        .remotes
        .iter()
        .filter(|r| config.mirror.sync.iter().any(|s| s.remote == r.name))
        .collect()
}

/// The jobs `wharf jobs run` and the API accept: the built-in ones, `sync:<remote>`
/// and `retention:oci`.
pub(crate) fn job_catalog(config: &Config) -> JobCatalog {
    JobCatalog::new()
        .with(
            "sync",
            remotes_with_sync(config)
                .iter()
                .map(|r| r.name.clone())
                .collect(),
        )
        .with(crate::rpm::JOB_KIND, crate::rpm::remote_names(config))
        .with("ostree-sync", crate::ostree::remote_names(config))
        .with(
            crate::ostree::DELTAS_JOB_KIND,
            crate::ostree::delta_repositories(config),
        )
        .with(
            crate::ostree::SESSIONS_JOB_KIND,
            vec![crate::ostree::SESSIONS_JOB_TARGET.to_owned()],
        )
        .with(crate::files::JOB_KIND, crate::files::remote_names(config))
        .with("retention", crate::retention::job_targets(config))
}

/// The scheduled syncs: one `sync:<remote>` schedule per remote with a cadence and a definition,
/// and one `rpm-sync:<remote>` per rpm remote with a cadence.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    let mut schedules = oci_schedules(config);
    schedules.extend(crate::rpm::schedules(config));
    schedules.extend(crate::files::schedules(config));
    schedules
}

fn oci_schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    remotes_with_sync(config)
        .into_iter()
        .filter_map(|r| {
            crate::serve::remote_schedule(
                "sync",
                &r.name,
                r.interval_secs,
                &r.schedule,
                r.jitter_secs,
            )
        })
        .chain(crate::ostree::schedules(config))
        .collect()
}

/// Lowers one remote and its definitions; reads the password file and CA bundle now,
/// so a job picks up a rotated password at its next run.
pub(crate) fn plan(config: &Config, remote: &RemoteConfig) -> anyhow::Result<SyncPlan> {
    let (scheme, authority) = remote_authority(&remote.url)
        .with_context(|| format!("url {:?} is not http(s)://HOST[:PORT]", remote.url))?;
    let (credentials, ca_bundle) = match &remote.password {
        // Given inline by a skopeo sync file: there is no password file to read.
        Some(password) => {
            let (_, ca) = remote_secrets(
                "mirror.remotes",
                &remote.name,
                "",
                Path::new(""),
                &remote.ca_bundle,
            )?;
            let credentials =
                (!remote.username.is_empty()).then(|| (remote.username.clone(), password.clone()));
            (credentials, ca)
        }
        None => remote_secrets(
            "mirror.remotes",
            &remote.name,
            &remote.username,
            &remote.password_file,
            &remote.ca_bundle,
        )?,
    };
    Ok(SyncPlan {
        remote: remote.name.clone(),
        settings: UpstreamSettings {
            base_url: names::endpoint(scheme, authority),
            credentials,
            ca_bundle,
            max_manifest_bytes: config.oci.max_manifest_bytes,
            requests_per_second: (remote.requests_per_second > 0.0)
                .then_some(remote.requests_per_second),
        },
        authority: authority.to_owned(),
        prefix: remote
            .prefix
            .clone()
            .unwrap_or_else(|| names::default_prefix(authority)),
        concurrency: remote.concurrency as usize,
        definitions: config
            .mirror
            .sync
            .iter()
            .filter(|s| s.remote == remote.name)
            .map(|s| {
                Ok(SyncDefinition {
                    repositories: s.repositories.clone(),
                    tags: s.tags.clone(),
                    include: s.include.clone(),
                    exclude: s.exclude.clone(),
                    semver: s.semver.clone(),
                    platforms: s.platforms.clone(),
                    signatures: s.signatures,
                    trusted_keys: cosign_keys(&s.verify_keys)?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// A user name and its password.
type Credentials = (String, String);

/// The credentials and CA bundle of any kind of remote (`section` names its
/// configuration table in messages), read now so a job picks up a rotated
/// password at its next run: no username means anonymous; a password file
/// others may read gets a warning; an empty one is an error.
pub(crate) fn remote_secrets(
    section: &str,
    name: &str,
    username: &str,
    password_file: &Path,
    ca_bundle: &Path,
) -> anyhow::Result<(Option<Credentials>, Option<Vec<u8>>)> {
    let credentials = if username.is_empty() {
        None
    } else {
        if let Some(mode) = crate::serve::loose_mode(password_file) {
            eprintln!(
                "warning: {section} {name:?}: password_file {} has mode {mode:o}; \
                 group and others should not read it (chmod 600)",
                password_file.display()
            );
        }
        let password = std::fs::read_to_string(password_file)
            .with_context(|| format!("password_file: cannot read {}", password_file.display()))?;
        let password = password.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            bail!("password_file: {} is empty", password_file.display());
        }
        Some((username.to_owned(), password))
    };
    let ca_bundle = if ca_bundle.as_os_str().is_empty() {
        None
    } else {
        Some(
            std::fs::read(ca_bundle)
                .with_context(|| format!("ca_bundle: cannot read {}", ca_bundle.display()))?,
        )
    };
    Ok((credentials, ca_bundle))
}

/// The cosign public keys in `paths`, read at each run (a rotated key takes effect at once).
pub(crate) fn cosign_keys(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<wharf_oci::cosign::CosignKey>> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("verify_keys: cannot read {}", path.display()))?;
            Ok(wharf_oci::cosign::CosignKey::from_pem(
                &path.display().to_string(),
                &pem,
            )?)
        })
        .collect()
}

/// A run that could not start (its plan did not lower): one failure, nothing fetched.
fn not_started(remote: &str, error: &anyhow::Error) -> SyncSummary {
    SyncSummary {
        remote: remote.to_owned(),
        failures: vec![format!("{remote}: {error:#}")],
        ..SyncSummary::default()
    }
}

/// The `sync` job kind: runs one remote's plan on the server's worker.
pub(crate) struct SyncJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Registry,
}

impl JobHandler for SyncJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(remote) = self.config.mirror.remotes.iter().find(|r| r.name == target) else {
                return Err(JobError::Failed(format!(
                    "no [[mirror.remotes]] is named {target:?} in this server's configuration"
                )));
            };
            let observer = JobObserver {
                progress,
                selected: AtomicU64::new(0),
            };
            let summary = match plan(&self.config, remote) {
                Ok(plan) => run_sync(&self.registry, &plan, &observer).await,
                Err(e) => not_started(target, &e),
            };
            let line = summary.line();
            if summary.cancelled {
                tracing::info!(remote = target, "{line}");
                Err(JobError::Cancelled)
            } else if let Some(first) = summary.failures.first() {
                Err(JobError::Failed(format!("{line}; first failure: {first}")))
            } else {
                Ok(line)
            }
        })
    }
}

/// Job progress: items are tags done (of those selected so far), bytes are bytes fetched.
struct JobObserver<'a> {
    progress: &'a dyn Progress,
    selected: AtomicU64,
}

impl SyncObserver for JobObserver<'_> {
    fn tags_selected(&self, n: u64) {
        let total = self.selected.fetch_add(n, Ordering::Relaxed) + n;
        self.progress.set_totals(Some(total), None);
    }
    fn fetched(&self, _manifests: u64, _blobs: u64, bytes: u64) {
        self.progress.advance(0, bytes);
    }
    fn line(&self, line: &SyncLine) {
        self.progress.advance(1, 0);
        match line {
            SyncLine::Failed(_) => tracing::warn!("{line}"),
            _ => tracing::debug!("{line}"),
        }
    }
    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }
}

/// `wharf sync [REMOTE]`: runs `remote` (or every remote) of any kind; each
/// format's remotes run through their own crate (names are unique across kinds).
pub(crate) async fn sync(
    config: &Config,
    blobs: Arc<BlobStore>,
    meta: Meta,
    remote: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let snapshots = crate::snapshot::snapshots(config, &blobs, &meta);
    let code = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    if let Some(name) = remote {
        if config.ostree.remotes.iter().any(|r| r.name == name) {
            return Ok(code(
                crate::ostree::sync(config, &snapshots, Some(name)).await?,
            ));
        }
        if let Some(r) = config.rpm.remotes.iter().find(|r| r.name == name) {
            return Ok(code(
                crate::rpm::sync_foreground(config, &snapshots, r).await,
            ));
        }
        if let Some(r) = config.files.remotes.iter().find(|r| r.name == name) {
            return Ok(code(
                crate::files::sync_foreground(config, &snapshots, r).await,
            ));
        }
        return sync_oci(config, blobs, meta, remote).await;
    }
    let tree_remotes = !config.ostree.remotes.is_empty()
        || !config.rpm.remotes.is_empty()
        || !config.files.remotes.is_empty();
    if !tree_remotes {
        return sync_oci(config, blobs, meta, None).await;
    }
    let mut ok = true;
    if !remotes_with_sync(config).is_empty() {
        ok &= sync_oci(config, blobs.clone(), meta.clone(), None).await? == ExitCode::SUCCESS;
    }
    if !config.ostree.remotes.is_empty() {
        ok &= crate::ostree::sync(config, &snapshots, None).await?;
    }
    for r in &config.rpm.remotes {
        ok &= crate::rpm::sync_foreground(config, &snapshots, r).await;
    }
    for r in &config.files.remotes {
        ok &= crate::files::sync_foreground(config, &snapshots, r).await;
    }
    Ok(code(ok))
}

/// Runs every sync definition of `remote` (or of every OCI remote).
async fn sync_oci(
    config: &Config,
    blobs: Arc<BlobStore>,
    meta: Meta,
    remote: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let remotes: Vec<&RemoteConfig> = match remote {
        Some(name) => match config.mirror.remotes.iter().find(|r| r.name == name) {
            Some(r) => vec![r],
            None => bail!(
                "no [[mirror.remotes]], [[ostree.remotes]], [[rpm.remotes]] or [[files.remotes]] is named {name:?} (configured: {})",
                names_of(config)
            ),
        },
        None => remotes_with_sync(config),
    };
    if !remotes
        .iter()
        .any(|r| config.mirror.sync.iter().any(|s| s.remote == r.name))
    {
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
    // Ctrl-C stops the run between tags, as a cancelled job does; a second one kills.
    let interrupted = crate::interrupt::on_ctrl_c(" after the tags in flight");
    let terminal = std::io::stdout().is_terminal();
    let mut failures: Vec<String> = Vec::new();
    for remote in remotes {
        let summary = match plan(config, remote) {
            Ok(plan) => {
                if terminal {
                    let bars = Bars::new(&remote.name, interrupted.clone());
                    let summary = run_sync(&registry, &plan, &bars).await;
                    bars.finish();
                    summary
                } else {
                    let plain = Plain {
                        interrupted: interrupted.clone(),
                    };
                    run_sync(&registry, &plan, &plain).await
                }
            }
            Err(e) => {
                let summary = not_started(&remote.name, &e);
                for f in &summary.failures {
                    println!("{}", SyncLine::Failed(f.clone()));
                }
                summary
            }
        };
        println!("{}", summary.line());
        failures.extend(summary.failures);
        if summary.cancelled {
            break;
        }
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "wharf: {} failed:",
            wharf_mirror::run::plural(failures.len() as u64, "sync")
        );
        for f in &failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Plain lines, for logs and pipes.
struct Plain {
    interrupted: Arc<AtomicBool>,
}

impl SyncObserver for Plain {
    fn tags_selected(&self, _n: u64) {}
    fn fetched(&self, _manifests: u64, _blobs: u64, _bytes: u64) {}
    fn line(&self, line: &SyncLine) {
        println!("{line}");
    }
    fn cancelled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

/// Progress bars on a terminal: tags done of those selected, and the transfer
/// (manifests, blobs, bytes and rate); tag lines scroll above them.
struct Bars {
    multi: MultiProgress,
    tags: ProgressBar,
    transfer: ProgressBar,
    manifests: AtomicU64,
    blobs: AtomicU64,
    interrupted: Arc<AtomicBool>,
}

impl Bars {
    fn new(remote: &str, interrupted: Arc<AtomicBool>) -> Bars {
        let multi = MultiProgress::new();
        let tags = multi.add(ProgressBar::new(0));
        tags.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} tags  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        tags.set_prefix(remote.to_owned());
        let transfer = multi.add(ProgressBar::new_spinner());
        transfer.set_style(
            ProgressStyle::with_template(
                "{spinner:>12} {msg}, {bytes} fetched at {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        transfer.set_message("0 manifests, 0 blobs");
        transfer.enable_steady_tick(Duration::from_millis(120));
        Bars {
            multi,
            tags,
            transfer,
            manifests: AtomicU64::new(0),
            blobs: AtomicU64::new(0),
            interrupted,
        }
    }

    fn finish(&self) {
        self.tags.finish_and_clear();
        self.transfer.finish_and_clear();
    }
}

impl SyncObserver for Bars {
    fn tags_selected(&self, n: u64) {
        self.tags.inc_length(n);
    }
    fn fetched(&self, manifests: u64, blobs: u64, bytes: u64) {
        let m = self.manifests.fetch_add(manifests, Ordering::Relaxed) + manifests;
        let b = self.blobs.fetch_add(blobs, Ordering::Relaxed) + blobs;
        self.transfer.set_message(format!(
            "{}, {}",
            wharf_mirror::run::plural(m, "manifest"),
            wharf_mirror::run::plural(b, "blob")
        ));
        self.transfer.inc(bytes);
    }
    fn line(&self, line: &SyncLine) {
        self.tags.inc(1);
        let _ = self.multi.println(line.to_string());
    }
    fn cancelled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn names_of(config: &Config) -> String {
    let names: Vec<&str> = config
        .mirror
        .remotes
        .iter()
        .map(|r| r.name.as_str())
        .chain(config.rpm.remotes.iter().map(|r| r.name.as_str()))
        .chain(config.ostree.remotes.iter().map(|r| r.name.as_str()))
        .chain(config.files.remotes.iter().map(|r| r.name.as_str()))
        .collect();
    if names.is_empty() {
        return "none".to_owned();
    }
    names.join(", ")
}

/// The remote's client (credentials read, CA bundle loaded), not yet used;
/// `serve` builds the pull-through cache's clients with it.
pub(crate) fn upstream_client(
    config: &Config,
    remote: &RemoteConfig,
) -> anyhow::Result<wharf_mirror::UpstreamClient> {
    Ok(wharf_mirror::UpstreamClient::new(
        plan(config, remote)?.settings,
    )?)
}

#[cfg(test)]
mod tests {
    use wharf_config::Config;

    #[test]
    fn remotes_lower_into_plans_schedules_and_job_names() {
        let config = Config::parse(
            "[[mirror.remotes]]\nname = \"up\"\nurl = \"https://up.example:5000\"\n\
             interval_secs = 600\njitter_secs = 5\nrequests_per_second = 2.5\n\
             [[mirror.remotes]]\nname = \"idle\"\nurl = \"https://idle.example\"\ninterval_secs = 60\n\
             [[mirror.sync]]\nremote = \"up\"\nrepositories = [\"team/app\"]\ntags = [\"v1\"]\n",
            "x.toml",
        )
        .unwrap();
        let plan = super::plan(&config, &config.mirror.remotes[0]).unwrap();
        assert_eq!(plan.prefix, "up.example_5000");
        assert_eq!(plan.settings.requests_per_second, Some(2.5));
        assert_eq!(plan.definitions.len(), 1);
        // A remote with nothing to sync gets no schedule and no job name.
        let schedules = super::schedules(&config);
        let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
        // Beside it, only the always-on expiry of abandoned OSTree pushes.
        assert_eq!(names, ["sync:up", "ostree-sessions:expire"]);
        assert_eq!(schedules[0].job.to_job().key, "sync:up");
        let catalog = super::job_catalog(&config);
        assert!(catalog.parse("sync:up").is_ok());
        assert!(catalog.parse("sync:idle").is_err());
    }
}
