//! `wharf repo`: create and list repositories of any kind.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use wharf_core::{RepoName, RepositoryKind};
use wharf_meta::Meta;

#[derive(Subcommand)]
pub(crate) enum RepoCommand {
    /// Create a repository; its name may not be taken by a repository of another kind.
    Create {
        /// Repository name (lower case, `/`-separated components).
        name: String,
        /// What it holds: oci, ostree, rpm or files.
        #[arg(long, default_value = "oci")]
        kind: String,
    },
    /// List repositories, optionally of one kind.
    List {
        /// Only this kind: oci, ostree, rpm or files.
        #[arg(long)]
        kind: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn repo(meta: &Meta, cmd: RepoCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RepoCommand::Create { name, kind } => {
            let name =
                RepoName::parse(&name).with_context(|| format!("repository name {name:?}"))?;
            let kind: RepositoryKind = kind.parse()?;
            if meta.create_repository(&name, kind).await? {
                println!("created {kind} repository {name}");
            } else {
                println!("{kind} repository {name} already exists");
            }
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::List { kind, json } => {
            let kind = kind.map(|k| k.parse::<RepositoryKind>()).transpose()?;
            for r in meta.list_repositories(kind).await? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": r.id,
                            "name": r.name.as_str(),
                            "kind": r.kind.as_str(),
                            "created_at": r.created_at,
                        })
                    );
                } else {
                    println!("{:<7} {}", r.kind, r.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
