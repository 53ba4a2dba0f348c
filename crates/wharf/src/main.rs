//! The `wharf` binary: command-line parsing and wiring, nothing else.
//!
//! Configuration flows one way: the TOML file (or the embedded defaults) →
//! command-line overrides → validation → per-crate settings handed to the blob
//! store, the metadata database, the registry and the HTTP layer. `anyhow`
//! and exit codes live here and nowhere else.

mod admin;
mod bundle;
mod client_config;
mod data_dir;
mod files;
mod interrupt;
mod jobs;
mod log_writer;
mod ostree;
mod ostree_progress;
mod ostree_prune;
mod ostree_push;
mod pull_through;
mod repo;
mod retention;
mod rpm;
mod serve;
mod signing;
mod snapshot;
mod sync;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use wharf_blob::BlobStore;
use wharf_config::Config;
use wharf_meta::Meta;

/// Wharf hosts and mirrors what fleets pull: container images, OSTree trees,
/// RPM repositories and file trees.
#[derive(Parser)]
#[command(name = "wharf", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Delete unreferenced blobs and expired uploads now (safe while the server runs).
    Gc {
        #[command(flatten)]
        common: CommonArgs,
        /// Grace period in seconds (overrides gc.grace_period_secs).
        #[arg(long)]
        grace_period_secs: Option<u64>,
    },
    /// Apply the [[retention.rules]] to OCI repositories now (safe while the
    /// server runs): delete the tags and manifests they let go, and print each,
    /// the bytes the next garbage collection frees, and every quota's usage.
    Retention {
        #[command(flatten)]
        common: CommonArgs,
        /// Only list what would be deleted and the bytes it would free; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy the configured [[mirror.sync]] tags and [[rpm.remotes]] from their
    /// upstreams now (all remotes, or REMOTE); exits 1 when any tag or repository failed.
    Sync {
        #[command(flatten)]
        common: CommonArgs,
        /// The [[mirror.remotes]] or [[rpm.remotes]] name; default: every remote with a
        /// [[mirror.sync]], then every rpm remote.
        remote: Option<String>,
    },
    /// Write the store's images (or those of the matching repositories) to a
    /// bundle directory for an air-gapped site; run again to resume.
    Export {
        #[command(flatten)]
        common: CommonArgs,
        /// The bundle directory (new, empty, or an earlier, interrupted export).
        dir: PathBuf,
        /// Only repositories matching PATTERN (grant syntax: `team/*`, `quay.io/**`); repeatable.
        #[arg(long = "repository", value_name = "PATTERN")]
        repositories: Vec<String>,
        /// Write only what the bundle OLD_BUNDLE_DIR lacks (its index still lists everything).
        #[arg(long, value_name = "OLD_BUNDLE_DIR")]
        since: Option<PathBuf>,
    },
    /// Import a bundle, a skopeo dir: tree or an OCI image layout; every file is
    /// verified before anything becomes visible, and a second import changes nothing.
    Import {
        #[command(flatten)]
        common: CommonArgs,
        /// The directory to import.
        dir: PathBuf,
        /// NAME:TAG for a skopeo dir: tree; NAME (or NAME:TAG for just one) for an OCI layout.
        #[arg(long, value_name = "NAME[:TAG]")]
        repository: Option<String>,
        /// Import only if every tag has a cosign signature (in the source) that this
        /// public key verifies; repeatable (any one key suffices).
        #[arg(long = "verify-key", value_name = "COSIGN_PUB")]
        verify_keys: Vec<PathBuf>,
    },
    /// Print the client configuration that pulls the configured upstreams
    /// through this server: containers-registries.conf, containerd hosts.toml
    /// files and a docker daemon.json.
    ClientConfig {
        #[command(flatten)]
        common: CommonArgs,
        /// Write the files into DIR (registries.conf, certs.d/<host>/hosts.toml
        /// for `--hosts-dir`, daemon.json) instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Instead: the client configuration of one RPM or file repository.
        #[command(subcommand)]
        repo: Option<client_config::RepoClientConfig>,
    },
    /// Wharf's own signing keys (generated on first use in DATA_DIR/keys/, or [signing]).
    SigningKey {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: signing::SigningKeyCommand,
    },
    /// Re-hash every stored blob and cross-check the database; exits 1 on any problem.
    Check {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Manage users and robot accounts.
    User {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: admin::UserCommand,
    },
    /// Manage teams.
    Team {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: admin::TeamCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: admin::TokenCommand,
    },
    /// Manage grants (who may do what on which repositories).
    Grant {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: admin::GrantCommand,
    },
    /// List, inspect, start and cancel background jobs (gc, check) on the shared queue.
    Jobs {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: jobs::JobsCommand,
    },
    /// OSTree repositories: `wharf ostree import|commit|prune|push`.
    Ostree {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: ostree::OstreeCommand,
    },
    /// List, inspect, publish (roll back) and prune the snapshots of OSTree,
    /// RPM and file repositories.
    Snapshot {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: snapshot::SnapshotCommand,
    },
    /// Upload, remove and list the files of file repositories (served at /files/<repo>/).
    Files {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: files::FilesCommand,
    },
    /// Upload packages into and remove them from hosted RPM repositories
    /// (served at /rpm/<repo>/ with metadata Wharf writes).
    Rpm {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: rpm::RpmCommand,
    },
    /// Create and list repositories (oci, ostree, rpm, files).
    Repo {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: repo::RepoCommand,
    },
    /// Start signing registry tokens with a new key; tokens signed by the old key
    /// stay valid until they expire.
    RotateSigningKey {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Sign-in throttling (`wharf auth unlock`).
    Auth {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        cmd: admin::AuthCommand,
    },
    /// Show the audit log of pushes, deletions and denied attempts, newest first.
    Audit {
        #[command(flatten)]
        common: CommonArgs,
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// Configuration file (TOML). Without it, the first of ./wharf.toml and
    /// /etc/wharf/wharf.toml that exists is read; with neither, every default applies.
    #[arg(long, short = 'c', env = "WHARF_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

/// Where a configuration file is looked for when neither `--config` nor
/// `$WHARF_CONFIG` names one, in order (documented in docs/guide.md).
const DEFAULT_CONFIG_PATHS: [&str; 2] = ["./wharf.toml", "/etc/wharf/wharf.toml"];

/// A configuration and where it came from, so that "no store here" can say
/// why Wharf looked there.
struct Loaded {
    config: Config,
    origin: String,
}

impl CommonArgs {
    fn load(&self) -> anyhow::Result<Config> {
        Ok(self.load_with_origin()?.config)
    }

    fn load_with_origin(&self) -> anyhow::Result<Loaded> {
        let found = match &self.config {
            Some(path) => Some(path.clone()),
            None => DEFAULT_CONFIG_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        let (mut config, origin) = match &found {
            Some(path) => (
                Config::load(path)?,
                format!("the configuration {}", path.display()),
            ),
            None => (
                Config::default(),
                format!(
                    "the defaults (no --config, no $WHARF_CONFIG, no {})",
                    DEFAULT_CONFIG_PATHS.join(", no ")
                ),
            ),
        };
        let origin = match &self.data_dir {
            Some(dir) => {
                config.storage.data_dir = dir.clone();
                format!("--data-dir {}, and {origin}", dir.display())
            }
            None => origin,
        };
        Ok(Loaded { config, origin })
    }
}

/// Keeps the log writer's thread alive; dropping it flushes every line still
/// queued. Also hands `wharf serve` the same writer for its access lines.
pub(crate) struct LogGuard {
    _flush: log_writer::LogFlushGuard,
    writer: log_writer::LogWriter,
    format: wharf_http::LineFormat,
}

impl LogGuard {
    /// Access lines in the log's format, into the log's writer thread, so they
    /// interleave whole with every other line.
    pub(crate) fn access_log(&self) -> wharf_http::AccessLogOutput {
        wharf_http::AccessLogOutput {
            format: self.format,
            sink: Arc::new(LogSink(self.writer.clone())),
        }
    }
}

/// The log's writer thread as the HTTP layer's sink for whole lines.
struct LogSink(log_writer::LogWriter);

impl wharf_http::LineSink for LogSink {
    fn write_line(&self, line: &[u8]) {
        self.0.append(line);
    }
}

/// Logs go to standard error through a writer thread (`log_writer`), so a
/// request never waits on a `write(2)` for its access line (measured: most of
/// the line's cost). The returned guard must live until the command ends;
/// dropping it writes out what is queued.
fn init_logging(config: &Config) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's own notices ("relation already exists, skipping") are not ours to report.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{},sqlx::postgres::notice=warn",
                config.log.level
            ))
        });
    let (writer, flush) = log_writer::spawn(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    let format = if config.log.format == "json" {
        // One object per line, fields at the top level, for log collectors.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
        wharf_http::LineFormat::Json
    } else {
        // Colour codes only for a person at a terminal: in a file or a journal they are noise.
        use std::io::IsTerminal;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder.with_ansi(colour).init();
        wharf_http::LineFormat::Text
    };
    LogGuard {
        _flush: flush,
        writer,
        format,
    }
}

/// Creates the data directory owner-only (0700): it holds the database, whose
/// token signing keys let anyone who reads them forge registry tokens.
fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    data_dir::refuse_foreign_owner(dir)?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    // A read-only directory fails here, with its cause, rather than as a database
    // pool time-out later.
    let probe = dir.join(".wharf-write-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Opens the stores named by the configuration, creating them if they do not
/// exist (only `wharf serve` does that).
pub(crate) async fn open_stores(config: &Config) -> anyhow::Result<(Arc<BlobStore>, Meta)> {
    let dir = &config.storage.data_dir;
    create_data_dir(dir)?;
    let blobs = wharf_blob::fs::open(dir.join("blobs"))
        .await
        .with_context(|| format!("cannot open the blob store in {}", dir.display()))?;
    let meta = Meta::connect(&config.database_url())
        .await
        .context("cannot open the metadata database")?;
    Ok((Arc::new(blobs), meta))
}

/// Opens existing stores (for `gc` and `check`); never creates one.
async fn open_existing_stores(loaded: &Loaded) -> anyhow::Result<(Arc<BlobStore>, Meta)> {
    let dir = &loaded.config.storage.data_dir;
    data_dir::refuse_foreign_owner(dir)?;
    let marker = dir.join("blobs").join("layout-version");
    if !marker.is_file() {
        return Err(no_store(
            loaded,
            &format!("no blob store ({} is missing)", marker.display()),
        ));
    }
    let meta = open_existing_meta(loaded).await?;
    let blobs = wharf_blob::fs::open(dir.join("blobs"))
        .await
        .with_context(|| format!("cannot open the blob store in {}", dir.display()))?;
    Ok((Arc::new(blobs), meta))
}

/// Opens only the metadata database of an existing store (for the account and grant commands).
async fn open_existing_meta(loaded: &Loaded) -> anyhow::Result<Meta> {
    data_dir::refuse_foreign_owner(&loaded.config.storage.data_dir)?;
    match Meta::connect_existing(&loaded.config.database_url()).await {
        Ok(meta) => Ok(meta),
        Err(wharf_meta::MetaError::NoStore(why)) => Err(no_store(loaded, &why)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot open the metadata database")),
    }
}

fn no_store(loaded: &Loaded, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no Wharf store in {}: {why}\n  looked there because of {}\n  \
         point --config at the server's configuration file or --data-dir at its data \
         directory; only `wharf serve` creates a new store",
        loaded.config.storage.data_dir.display(),
        loaded.origin
    )
}

async fn open_meta(common: &CommonArgs) -> anyhow::Result<Meta> {
    open_existing_meta(&common.load_with_origin()?).await
}

pub(crate) fn gc_policy(config: &Config) -> wharf_jobs::GcPolicy {
    wharf_jobs::GcPolicy {
        grace_period: Duration::from_secs(config.gc.grace_period_secs),
        upload_expiry: Duration::from_secs(config.gc.upload_expiry_secs),
        // `wharf gc` walks the whole store; the scheduler decides per run.
        full: true,
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { common, listen } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.validate()?;
            let log = init_logging(&config);
            serve::serve(config, Some(log.access_log())).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            common,
            grace_period_secs,
        } => {
            let mut loaded = common.load_with_origin()?;
            if let Some(g) = grace_period_secs {
                loaded.config.gc.grace_period_secs = g;
            }
            let config = &loaded.config;
            let _log = init_logging(config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let mut policy = gc_policy(config);
            // The command line may ask for a shorter grace period than the file allows.
            if let Some(g) = grace_period_secs {
                policy.grace_period = Duration::from_secs(g);
            }
            let report = wharf_jobs::collect_garbage(&blobs, &meta, policy).await?;
            println!(
                "deleted {} blobs ({} bytes), kept {}, expired {} uploads",
                report.blobs_deleted, report.bytes_freed, report.blobs_kept, report.uploads_expired
            );
            meta.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention { common, dry_run } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            let config = &loaded.config;
            let _log = init_logging(config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let registry = wharf_oci::Registry::new(
                blobs,
                meta.clone(),
                wharf_oci::RegistryLimits {
                    max_manifest_bytes: config.oci.max_manifest_bytes,
                    manifest_cache_bytes: config.oci.manifest_cache_bytes,
                },
            )
            .with_quotas(retention::quotas(config)?);
            let res = retention::retention(config, &registry, dry_run).await;
            meta.close().await;
            res
        }
        Command::Sync { common, remote } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            let _log = init_logging(&loaded.config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let res = sync::sync(&loaded.config, blobs, meta.clone(), remote.as_deref()).await;
            meta.close().await;
            res
        }
        // A client of a server: no configuration, no data directory.
        Command::Ostree {
            cmd: ostree::OstreeCommand::Push(args),
            ..
        } => ostree_push::push(args).await,
        Command::Ostree { common, cmd } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            let _log = init_logging(&loaded.config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let snapshots = snapshot::snapshots(&loaded.config, &blobs, &meta);
            let res = ostree::ostree(&loaded.config, &snapshots, cmd).await;
            meta.close().await;
            res
        }
        Command::Export {
            common,
            dir,
            repositories,
            since,
        } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            let _log = init_logging(&loaded.config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let res = bundle::export(
                &loaded.config,
                blobs,
                meta.clone(),
                &dir,
                &repositories,
                since,
            )
            .await;
            meta.close().await;
            res
        }
        Command::Import {
            common,
            dir,
            repository,
            verify_keys,
        } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            let _log = init_logging(&loaded.config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let res = bundle::import(
                &loaded.config,
                blobs,
                meta.clone(),
                &dir,
                repository.as_deref(),
                &verify_keys,
            )
            .await;
            meta.close().await;
            res
        }
        Command::ClientConfig { common, out, repo } => {
            let loaded = common.load_with_origin()?;
            loaded.config.validate()?;
            if let Some(repo) = repo {
                print!(
                    "{}",
                    client_config::repo_client_config(&loaded.config, &repo)?
                );
                return Ok(ExitCode::SUCCESS);
            }
            let files = client_config::ClientFiles::build(&loaded.config)?;
            match out {
                Some(dir) => files.write(&loaded.config, &dir)?,
                None => files.print(&loaded.config),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = admin::user(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::Team { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = admin::team(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::Token { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = admin::token(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::Grant { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = admin::grant(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::Jobs { common, cmd } => {
            let loaded = common.load_with_origin()?;
            let meta = open_existing_meta(&loaded).await?;
            let res = jobs::jobs(&meta, &sync::job_catalog(&loaded.config), cmd).await;
            meta.close().await;
            res
        }
        Command::Snapshot { common, cmd } => {
            let loaded = common.load_with_origin()?;
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let snapshots = snapshot::snapshots(&loaded.config, &blobs, &meta);
            let res = snapshot::snapshot(&loaded.config, &snapshots, cmd).await;
            meta.close().await;
            res
        }
        Command::Files { common, cmd } => {
            let loaded = common.load_with_origin()?;
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let snapshots = snapshot::snapshots(&loaded.config, &blobs, &meta);
            let res = files::files(&loaded.config, &snapshots, cmd).await;
            meta.close().await;
            res
        }
        Command::Rpm { common, cmd } => {
            let loaded = common.load_with_origin()?;
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let snapshots = snapshot::snapshots(&loaded.config, &blobs, &meta);
            let res = rpm::rpm(&loaded.config, &snapshots, cmd).await;
            meta.close().await;
            res
        }
        Command::Repo { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = repo::repo(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::Auth { common, cmd } => {
            let meta = open_meta(&common).await?;
            let res = admin::auth(&meta, cmd).await;
            meta.close().await;
            res
        }
        Command::RotateSigningKey { common } => {
            let meta = open_meta(&common).await?;
            let id = wharf_auth::secret::random_hex(8)?;
            meta.rotate_signing_key(&id, &wharf_auth::secret::random_hex(32)?)
                .await?;
            meta.close().await;
            println!("signing with key {id}; replicas pick it up within seconds");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            common,
            limit,
            json,
        } => {
            let meta = open_meta(&common).await?;
            let res = admin::audit(&meta, limit, json).await;
            meta.close().await;
            res
        }
        Command::SigningKey { common, cmd } => {
            let config = common.load()?;
            config.validate()?;
            signing::command(&config, cmd)
        }
        Command::Check { common } => {
            let loaded = common.load_with_origin()?;
            let _log = init_logging(&loaded.config);
            let (blobs, meta) = open_existing_stores(&loaded).await?;
            let report = wharf_jobs::check_store(&blobs, &meta).await?;
            meta.close().await;
            for problem in &report.problems {
                println!("{problem}");
            }
            println!(
                "verified {} blobs ({} bytes): {} problems",
                report.blobs_verified,
                report.bytes_verified,
                report.problems.len()
            );
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::from(2)
        }
    }
}
