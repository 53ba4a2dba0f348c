//! `wharf jobs`: list, inspect, start and cancel background jobs on the shared queue.
//!
//! The CLI only writes to the queue; a running `wharf serve` (any replica)
//! claims and runs the job. `run --wait` follows it to its end.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use wharf_jobs::JobCatalog;
use wharf_meta::{JobRecord, JobState, Meta};

#[derive(Subcommand)]
pub(crate) enum JobsCommand {
    /// The newest jobs first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One job: state, counters, outcome and log.
    Show {
        /// The job's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a job now (gc, gc-full, check, sync:REMOTE, retention:oci, ostree-deltas:REPO, …); a running server picks it up.
    Run {
        /// What to run: gc, gc-full, check, sync:REMOTE (a `[[mirror.remotes]]` with a
        /// `[[mirror.sync]]`), or retention:oci (with `[[retention.rules]]`).
        kind: String,
        /// Follow the job until it ends; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a queued job, or stop a running one at its next safe point.
    Cancel {
        /// The job's id.
        id: String,
    },
}

pub(crate) async fn jobs(
    meta: &Meta,
    catalog: &JobCatalog,
    cmd: JobsCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::List { limit, json } => {
            for job in meta.jobs(limit).await? {
                if json {
                    println!("{}", wharf_http::job_json(&job, &[]));
                } else {
                    println!(
                        "{}  {:<9}  {:<6}  {}",
                        job.id,
                        job.state,
                        job.kind,
                        job.summary
                            .as_deref()
                            .or(job.error.as_deref())
                            .unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show { id, json } => {
            let Some(job) = meta.job(&id).await? else {
                bail!("no job {id}");
            };
            let log = meta.job_log_lines(&id).await?;
            if json {
                println!("{}", wharf_http::job_json(&job, &log));
            } else {
                print_job(&job, &log);
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Run { kind, wait } => {
            let kind = catalog.parse(&kind).map_err(anyhow::Error::msg)?;
            let (id, new) = meta.enqueue_job(&kind.to_job()).await?;
            if new {
                println!("queued job {id}");
            } else {
                println!("job {id} of that kind is already pending");
            }
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(job) = meta.job(&id).await? else {
                    bail!("job {id} vanished");
                };
                if job.state.is_finished() {
                    print_job(&job, &meta.job_log_lines(&id).await?);
                    return Ok(if job.state == JobState::Succeeded {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
            }
        }
        JobsCommand::Cancel { id } => match meta.cancel_job(&id).await? {
            None => bail!("no job {id}"),
            Some(JobState::Running) => {
                println!("job {id} will stop at its next safe point");
                Ok(ExitCode::SUCCESS)
            }
            Some(state) => {
                println!("job {id} is {state}");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

fn print_job(job: &JobRecord, log: &[(i64, String)]) {
    println!("job       {}", job.id);
    println!("kind      {} (key {})", job.kind, job.key);
    println!("state     {}", job.state);
    println!("attempts  {} of {}", job.attempts, job.max_attempts);
    let total = |t: Option<u64>| t.map(|t| format!(" of {t}")).unwrap_or_default();
    println!(
        "progress  {} items{}, {} bytes{}",
        job.progress.items_done,
        total(job.progress.items_total),
        job.progress.bytes_done,
        total(job.progress.bytes_total)
    );
    if let Some(summary) = &job.summary {
        println!("summary   {summary}");
    }
    if let Some(error) = &job.error {
        println!("error     {error}");
    }
    for (at, line) in log {
        println!("log       {at} {line}");
    }
}
