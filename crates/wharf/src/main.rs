//! The `wharf` binary: command-line parsing and wiring, nothing else.
//!
//! Configuration flows one way: the TOML file (or the embedded defaults) →
//! command-line overrides → validation → per-crate settings handed to the blob
//! store, the metadata database, the registry and the HTTP layer. `anyhow`
//! and exit codes live here and nowhere else.

mod admin;
mod serve;
#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use wharf_blob::{fs::FsBlobStore, BlobStore};
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
    /// Configuration file (TOML); without it every default applies.
    #[arg(long, short = 'c', env = "WHARF_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl CommonArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        Ok(config)
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's own notices ("relation already exists, skipping") are not ours to report.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{},sqlx::postgres::notice=warn",
                config.log.level
            ))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Opens the stores named by the configuration.
pub(crate) async fn open_stores(config: &Config) -> anyhow::Result<(Arc<dyn BlobStore>, Meta)> {
    let dir = &config.storage.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let blobs = FsBlobStore::open(dir.join("blobs"))
        .await
        .with_context(|| format!("cannot open the blob store in {}", dir.display()))?;
    let meta = Meta::connect(&config.database_url())
        .await
        .context("cannot open the metadata database")?;
    Ok((Arc::new(blobs), meta))
}

/// Opens only the metadata database (for the account and grant commands).
async fn open_meta(common: &CommonArgs) -> anyhow::Result<Meta> {
    let config = common.load()?;
    let dir = &config.storage.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    Meta::connect(&config.database_url())
        .await
        .context("cannot open the metadata database")
}

pub(crate) fn gc_policy(config: &Config) -> wharf_jobs::GcPolicy {
    wharf_jobs::GcPolicy {
        grace_period: Duration::from_secs(config.gc.grace_period_secs),
        upload_expiry: Duration::from_secs(config.gc.upload_expiry_secs),
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
            init_logging(&config);
            serve::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            common,
            grace_period_secs,
        } => {
            let mut config = common.load()?;
            if let Some(g) = grace_period_secs {
                config.gc.grace_period_secs = g;
            }
            init_logging(&config);
            let (blobs, meta) = open_stores(&config).await?;
            let mut policy = gc_policy(&config);
            // The command line may ask for a shorter grace period than the file allows.
            if let Some(g) = grace_period_secs {
                policy.grace_period = Duration::from_secs(g);
            }
            let report = wharf_jobs::collect_garbage(&*blobs, &meta, policy).await?;
            println!(
                "deleted {} blobs ({} bytes), kept {}, expired {} uploads",
                report.blobs_deleted, report.bytes_freed, report.blobs_kept, report.uploads_expired
            );
            meta.close().await;
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
        Command::Check { common } => {
            let config = common.load()?;
            init_logging(&config);
            let (blobs, meta) = open_stores(&config).await?;
            let report = wharf_jobs::check_store(&*blobs, &meta).await?;
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
