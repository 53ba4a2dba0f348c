//! RPM from the binary's side: lowering `[[rpm.remotes]]` into a
//! `wharf_rpm::mirror::MirrorPlan`, the `rpm-sync:<remote>` job handler the
//! server's worker runs (scheduled per remote, or queued with
//! `wharf jobs run rpm-sync:REMOTE`), and the foreground run `wharf sync
//! REMOTE` makes for an rpm remote.
//!
//! Each successful run publishes one snapshot and then prunes the retired
//! ones beyond `publish.keep_retired` (never one inside the grace period).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;
use wharf_config::{Config, RpmPolicy, RpmRemoteConfig};
use wharf_core::RepoName;
use wharf_jobs::{HandlerFuture, JobError, JobHandler, Progress};
use wharf_rpm::mirror::{MirrorObserver, MirrorPlan, MirrorSummary, Policy};
use wharf_rpm::mirrorlist::ListKind;
use wharf_rpm::{RpmError, Source, SourceSettings};
use wharf_snapshot::Snapshots;

/// The job kind of an rpm mirror run: `rpm-sync:<remote>`.
pub(crate) const JOB_KIND: &str = "rpm-sync";

/// The names of the configured rpm remotes, for the job catalog.
pub(crate) fn remote_names(config: &Config) -> Vec<String> {
    config.rpm.remotes.iter().map(|r| r.name.clone()).collect()
}

/// The scheduled runs: one `rpm-sync:<remote>` per remote with a cadence.
pub(crate) fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    config
        .rpm
        .remotes
        .iter()
        .filter_map(|r| {
            crate::serve::remote_schedule(
                JOB_KIND,
                &r.name,
                r.interval_secs,
                &r.schedule,
                r.jitter_secs,
            )
        })
        .collect()
}

/// Lowers one remote; reads the password file and CA bundle now, so a job
/// picks up a rotated password at its next run. A filtered or additive
/// remote gets Wharf's keys, which sign the metadata Wharf writes for it.
pub(crate) fn plan(config: &Config, remote: &RpmRemoteConfig) -> anyhow::Result<MirrorPlan> {
    let (credentials, ca_bundle) = crate::sync::remote_secrets(
        "rpm.remotes",
        &remote.name,
        &remote.username,
        &remote.password_file,
        &remote.ca_bundle,
    )?;
    let settings = SourceSettings {
        credentials,
        ca_bundle,
    };
    let source = if !remote.metalink.is_empty() {
        Source::listed(
            ListKind::Metalink,
            &remote.metalink,
            settings,
            remote.insecure_http,
        )?
    } else if !remote.mirrorlist.is_empty() {
        Source::listed(
            ListKind::Mirrorlist,
            &remote.mirrorlist,
            settings,
            remote.insecure_http,
        )?
    } else {
        Source::new(&remote.url, settings)?
    };
    Ok(MirrorPlan {
        remote: remote.name.clone(),
        source,
        repository: RepoName::parse(&remote.repository)
            .with_context(|| format!("repository {:?}", remote.repository))?,
        policy: match remote.policy {
            RpmPolicy::Exact => Policy::Exact,
            RpmPolicy::Additive => Policy::Additive,
        },
        concurrency: remote.concurrency as usize,
        trust: crate::signing::trust("rpm.remotes", &remote.name, &remote.gpg_keys, &[])?,
        filter: filter(remote)?,
        signer: if remote.regenerates_metadata() {
            Some(crate::signing::keys(config)?)
        } else {
            None
        },
    })
}

fn filter(remote: &RpmRemoteConfig) -> anyhow::Result<wharf_rpm::filter::PackageFilter> {
    let patterns = |key: &str, list: &[String]| {
        list.iter()
            .map(|p| {
                wharf_rpm::filter::NamePattern::parse(p)
                    .with_context(|| format!("rpm.remotes {:?} {key}", remote.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    Ok(wharf_rpm::filter::PackageFilter {
        arches: remote.arches.clone(),
        include: patterns("include", &remote.include)?,
        exclude: patterns("exclude", &remote.exclude)?,
        newest: (remote.newest_versions > 0).then_some(remote.newest_versions),
    })
}

/// One run of `remote`: plan, mirror, publish, prune.
async fn run_remote(
    config: &Config,
    snapshots: &Snapshots,
    remote: &RpmRemoteConfig,
    observer: &dyn MirrorObserver,
) -> anyhow::Result<MirrorSummary> {
    let plan = plan(config, remote)?;
    let summary = wharf_rpm::mirror::run(snapshots, &plan, observer).await?;
    if summary.snapshot.is_some() {
        // Compositions the mirrored repository is part of follow it.
        hosted(config, snapshots)?
            .refresh_composed(&plan.repository)
            .await;
        if let Err(e) = snapshots
            .prune(&plan.repository, config.publish.keep_retired)
            .await
        {
            tracing::warn!(repository = %plan.repository, "pruning retired snapshots: {e}");
        }
    }
    Ok(summary)
}

/// The `rpm-sync` job kind.
pub(crate) struct RpmSyncJobHandler {
    pub(crate) config: Arc<Config>,
    pub(crate) snapshots: Snapshots,
}

impl JobHandler for RpmSyncJobHandler {
    fn run<'a>(&'a self, target: &'a str, progress: &'a dyn Progress) -> HandlerFuture<'a> {
        Box::pin(async move {
            let Some(remote) = self.config.rpm.remotes.iter().find(|r| r.name == target) else {
                return Err(JobError::Failed(format!(
                    "no [[rpm.remotes]] is named {target:?} in this server's configuration"
                )));
            };
            let observer = JobObserver { progress };
            match run_remote(&self.config, &self.snapshots, remote, &observer).await {
                Ok(summary) => Ok(summary.line()),
                Err(e) if is_cancelled(&e) => Err(JobError::Cancelled),
                Err(e) => Err(JobError::Failed(format!("rpm-sync {target}: {e:#}"))),
            }
        })
    }
}

fn is_cancelled(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<RpmError>(), Some(RpmError::Cancelled))
}

struct JobObserver<'a> {
    progress: &'a dyn Progress,
}

impl MirrorObserver for JobObserver<'_> {
    fn fetched(&self, bytes: u64) {
        self.progress.advance(0, bytes);
    }
    fn package_done(&self) {
        self.progress.advance(1, 0);
    }
    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }
}

/// Ctrl-C on a foreground run: stop before publishing.
struct Interruptible(Arc<AtomicBool>);

impl MirrorObserver for Interruptible {
    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `wharf sync REMOTE` for an rpm remote: its summary line; false when it failed.
pub(crate) async fn sync_foreground(
    config: &Config,
    snapshots: &Snapshots,
    remote: &RpmRemoteConfig,
) -> bool {
    let interrupted = crate::interrupt::on_ctrl_c("; nothing will be published");
    match run_remote(config, snapshots, remote, &Interruptible(interrupted)).await {
        Ok(summary) => {
            println!("{}", summary.line());
            true
        }
        Err(e) => {
            println!(
                "rpm-sync {} -> {}: failed, nothing published",
                remote.name, remote.repository
            );
            eprintln!("wharf: rpm-sync {}: {e:#}", remote.name);
            false
        }
    }
}

/// The hosted repositories, as the CLI and the server write them: uploads
/// are refused in the repositories `[[rpm.remotes]]` fill, and every
/// repomd.xml written is signed with Wharf's OpenPGP key
/// (`repodata/repomd.xml.asc`, verifiable with `/keys/wharf.asc`).
pub(crate) fn hosted(
    config: &Config,
    snapshots: &Snapshots,
) -> anyhow::Result<wharf_rpm::hosted::Hosted> {
    let mirrored = config
        .rpm
        .remotes
        .iter()
        .filter_map(|r| RepoName::parse(&r.repository).ok())
        .collect();
    let keys = WharfSigner(crate::signing::keys(config)?);
    let signed_copies: std::collections::HashSet<RepoName> = config
        .rpm
        .hosted
        .iter()
        .filter(|h| h.write_signed_rpms)
        .filter_map(|h| RepoName::parse(&h.repository).ok())
        .collect();
    let package_signer: Arc<dyn wharf_rpm::hosted::PackageSigner> = Arc::new(keys.clone());
    let signer: Arc<dyn wharf_rpm::hosted::MetadataSigner> = Arc::new(keys);
    let keep_versions = config
        .rpm
        .hosted
        .iter()
        .filter(|h| h.keep_versions > 0)
        .filter_map(|h| Some((RepoName::parse(&h.repository).ok()?, h.keep_versions)))
        .collect();
    let hosted = wharf_rpm::hosted::Hosted::new(
        snapshots.clone(),
        mirrored,
        Some(signer),
        config.publish.keep_retired,
    )
    .with_retention(keep_versions)
    .with_signed_copies(signed_copies, package_signer)
    .with_compositions(compositions(config)?)
    .with_max_upload_bytes(
        config
            .rpm
            .max_upload_bytes
            .unwrap_or(wharf_rpm::hosted::DEFAULT_MAX_UPLOAD_BYTES),
    );
    Ok(
        match crate::signing::trust("rpm", "upload_gpg_keys", &config.rpm.upload_gpg_keys, &[])? {
            Some(ring) => hosted.with_package_verifier(Arc::new(TrustedPackages(ring))),
            None => hosted,
        },
    )
}

/// `[[rpm.composed]]`, lowered.
fn compositions(config: &Config) -> anyhow::Result<Vec<wharf_rpm::compose::Composition>> {
    let name = |s: &str| RepoName::parse(s).with_context(|| format!("rpm.composed: {s:?}"));
    config
        .rpm
        .composed
        .iter()
        .map(|c| {
            Ok(wharf_rpm::compose::Composition {
                repository: name(&c.repository)?,
                members: c
                    .members
                    .iter()
                    .map(|m| name(m))
                    .collect::<anyhow::Result<_>>()?,
                arches: c.arches.clone(),
                exclude: c.exclude.clone(),
            })
        })
        .collect()
}

/// `[rpm] upload_gpg_keys` as the check of an uploaded package's signature.
struct TrustedPackages(Arc<wharf_sign::Keyring>);

impl wharf_rpm::hosted::PackageVerifier for TrustedPackages {
    fn verify(&self, signed: &[u8], signature: &[u8]) -> Result<(), wharf_rpm::hosted::SignError> {
        self.0
            .verify_openpgp(signed, signature)
            .map(|_| ())
            .map_err(|e| wharf_rpm::hosted::SignError(e.to_string()))
    }
}

/// Wharf's own key as the signer of hosted repomd.xml files and of the
/// packages of `write_signed_rpms` repositories.
#[derive(Clone)]
struct WharfSigner(Arc<wharf_sign::SigningKeys>);

impl wharf_rpm::hosted::PackageSigner for WharfSigner {
    fn sign_header(&self, header: &[u8]) -> Result<Vec<u8>, wharf_rpm::hosted::SignError> {
        self.0
            .sign_openpgp(header)
            .map_err(|e| wharf_rpm::hosted::SignError(e.to_string()))
    }
}

impl wharf_rpm::hosted::MetadataSigner for WharfSigner {
    fn sign_armored(&self, data: &[u8]) -> Result<Vec<u8>, wharf_rpm::hosted::SignError> {
        self.0
            .sign_openpgp_armored(data)
            .map(String::into_bytes)
            .map_err(|e| wharf_rpm::hosted::SignError(e.to_string()))
    }
}

/// `wharf rpm …`: hosted RPM repositories. Each command is one new snapshot
/// from the published one, with freshly written metadata, published at the
/// end unless `--no-publish` (then `wharf snapshot publish` makes it live).
#[derive(clap::Subcommand)]
pub(crate) enum RpmCommand {
    /// Upload packages (and comps or updateinfo) into a hosted repository.
    Upload {
        /// The repository (created as an `rpm` repository if absent).
        #[arg(long)]
        repo: String,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
        /// A comps (group) file to serve as the repository's `group` metadata, as is.
        #[arg(long)]
        comps: Option<std::path::PathBuf>,
        /// An updateinfo (advisories) file to serve as its `updateinfo` metadata, as is.
        #[arg(long)]
        updateinfo: Option<std::path::PathBuf>,
        /// The .rpm files, or directories whose .rpm files (at any depth) are taken.
        packages: Vec<std::path::PathBuf>,
    },
    /// Keep the newest N versions of each package name (per arch); remove the rest.
    Prune {
        /// The repository.
        #[arg(long)]
        repo: String,
        /// Versions kept per package name and arch.
        #[arg(long)]
        keep: u32,
        /// Print what would be removed and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
    },
    /// Make a composed repository (`[[rpm.composed]]`) again from its members now.
    Compose {
        /// The composed repository.
        #[arg(long)]
        repo: String,
    },
    /// Copy packages, or a whole snapshot, from one hosted repository into another.
    Promote {
        /// The source repository.
        #[arg(long)]
        from: String,
        /// The target repository (created if absent).
        #[arg(long)]
        to: String,
        /// Take from this snapshot of the source instead of the published one;
        /// with no PACKAGE, the target becomes a copy of it.
        #[arg(long)]
        snapshot: Option<i64>,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
        /// Packages: NAME-[EPOCH:]VERSION-RELEASE.ARCH, or NAME for its newest version.
        packages: Vec<String>,
    },
    /// Remove packages, named NAME-[EPOCH:]VERSION-RELEASE.ARCH.
    Rm {
        /// The repository.
        #[arg(long)]
        repo: String,
        /// Leave the new snapshot staged instead of publishing it.
        #[arg(long)]
        no_publish: bool,
        /// The packages.
        #[arg(required = true)]
        packages: Vec<String>,
    },
}

/// Packages uploaded at once by `wharf rpm upload`.
const UPLOADS_AT_ONCE: usize = 8;

/// The files named, with each directory replaced by the `.rpm` files below
/// it (in path order, so a run is repeatable).
fn package_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("read {}", dir.display()))?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "rpm") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

pub(crate) async fn rpm(
    config: &Config,
    snapshots: &Snapshots,
    cmd: RpmCommand,
) -> anyhow::Result<std::process::ExitCode> {
    let hosted = hosted(config, snapshots)?;
    let repo_name = |s: &str| RepoName::parse(s).with_context(|| format!("repository name {s:?}"));
    let (session, no_publish) = match cmd {
        RpmCommand::Compose { repo } => {
            let repo = repo_name(&repo)?;
            let Some(plan) = hosted.compositions().iter().find(|c| c.repository == repo) else {
                anyhow::bail!("no [[rpm.composed]] is {repo}");
            };
            let done = hosted.recompose(plan).await?;
            println!(
                "{repo}: {} packages from {} members ({} shadowed by an earlier member, {} filtered out), published",
                done.packages,
                plan.members.len() - done.empty_members.len(),
                done.shadowed,
                done.filtered
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        RpmCommand::Upload {
            repo,
            no_publish,
            comps,
            updateinfo,
            packages,
        } => {
            anyhow::ensure!(
                !packages.is_empty() || comps.is_some() || updateinfo.is_some(),
                "nothing to upload: name .rpm files, --comps or --updateinfo"
            );
            let repo = repo_name(&repo)?;
            let session = hosted.begin(&repo, "wharf rpm upload").await?;
            let result: anyhow::Result<()> = async {
                let files = package_files(&packages)?;
                // A few at a time: each package's bytes are made durable on
                // their own, and those waits overlap.
                let session = &session;
                let mut added = futures_util::stream::iter(files.iter().map(|path| async move {
                    let file = tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("open {}", path.display()))?;
                    let body: wharf_blob::ByteStream =
                        Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
                    session
                        .add_package(body)
                        .await
                        .with_context(|| format!("{}", path.display()))
                }))
                .buffered(UPLOADS_AT_ONCE);
                while let Some(added) = added.next().await {
                    let added = added?;
                    println!(
                        "{}  {}  {}{}",
                        added.sha256,
                        added.nevra,
                        added.path,
                        if added.signed { "  (signed)" } else { "" }
                    );
                }
                if let Some(path) = &comps {
                    let bytes = tokio::fs::read(path)
                        .await
                        .with_context(|| format!("read {}", path.display()))?;
                    session
                        .put_comps(bytes.into())
                        .await
                        .with_context(|| format!("{}", path.display()))?;
                }
                if let Some(path) = &updateinfo {
                    let bytes = tokio::fs::read(path)
                        .await
                        .with_context(|| format!("read {}", path.display()))?;
                    session
                        .put_updateinfo(bytes.into())
                        .await
                        .with_context(|| format!("{}", path.display()))?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                session.abort().await?;
                return Err(e.context("nothing was published"));
            }
            (session, no_publish)
        }
        RpmCommand::Rm {
            repo,
            no_publish,
            packages,
        } => {
            let repo = repo_name(&repo)?;
            let session = hosted.begin(&repo, "wharf rpm rm").await?;
            for p in &packages {
                if let Err(e) = session.remove_package(p).await {
                    session.abort().await?;
                    return Err(anyhow::Error::new(e).context("nothing was published"));
                }
            }
            (session, no_publish)
        }
        RpmCommand::Prune {
            repo,
            keep,
            dry_run,
            no_publish,
        } => {
            let repo = repo_name(&repo)?;
            let session = hosted.begin(&repo, "wharf rpm prune").await?;
            let dropped = match session.prune(keep).await {
                Ok(d) => d,
                Err(e) => {
                    session.abort().await?;
                    return Err(e.into());
                }
            };
            for d in &dropped {
                println!(
                    "{} {}  {}",
                    if dry_run { "would remove" } else { "removed" },
                    d.nevra,
                    d.path
                );
            }
            if dry_run {
                session.abort().await?;
                println!(
                    "{repo}: {} packages would be removed; nothing changed",
                    dropped.len()
                );
                return Ok(std::process::ExitCode::SUCCESS);
            }
            (session, no_publish)
        }
        RpmCommand::Promote {
            from,
            to,
            snapshot,
            no_publish,
            packages,
        } => {
            anyhow::ensure!(
                !packages.is_empty() || snapshot.is_some(),
                "name the packages to promote, or --snapshot N to promote a whole snapshot"
            );
            let (from, to) = (repo_name(&from)?, repo_name(&to)?);
            let session = hosted
                .begin(&to, &format!("wharf rpm promote from {from}"))
                .await?;
            match session.promote(&from, snapshot, &packages).await {
                Ok(p) => {
                    for path in &p.paths {
                        println!("{from}#{} -> {to}: {path}", p.from_snapshot);
                    }
                }
                Err(e) => {
                    session.abort().await?;
                    return Err(anyhow::Error::new(e).context("nothing was published"));
                }
            }
            (session, no_publish)
        }
    };
    let repo = session.repo().clone();
    let done = session.finish(!no_publish).await?;
    println!(
        "{repo}: {} packages (snapshot {}{})",
        done.packages,
        done.number,
        if done.published {
            ", published"
        } else {
            ", staged"
        }
    );
    Ok(std::process::ExitCode::SUCCESS)
}
