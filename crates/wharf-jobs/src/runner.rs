//! Running the persisted queue: a worker loop that claims jobs and runs their
//! handlers under a renewed lease, and a scheduler that enqueues due runs.
//!
//! Every `wharf serve` runs one worker and one scheduler. The queue itself
//! (`wharf_meta`'s jobs module) guarantees one run per job key and hands a job
//! whose worker died to another; the scheduler holds a lease so that exactly
//! one process enqueues scheduled runs, and each due run is claimed in the
//! database, so replicas never run the same sweep twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_blob::BlobStore;
use wharf_core::CronExpr;
use wharf_meta::{unix_now, ClaimedJob, JobProgress, LeaseStatus, Meta, NewJob};

use crate::{check_store_with, collect_garbage_with, GcPolicy, Handlers, JobError};

/// Where a running job reports its progress and learns that it should stop.
pub trait Progress: Send + Sync {
    /// `items` more items done, `bytes` more bytes.
    fn advance(&self, items: u64, bytes: u64);
    /// What the whole run will cover, when known.
    fn set_totals(&self, items: Option<u64>, bytes: Option<u64>);
    /// True once the job should stop at its next safe point.
    fn cancelled(&self) -> bool;
}

/// Progress that goes nowhere and never cancels: for direct calls such as `wharf gc`.
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _items: u64, _bytes: u64) {}
    fn set_totals(&self, _items: Option<u64>, _bytes: Option<u64>) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// The progress of one claimed job, read by its lease renewals.
#[derive(Default)]
struct RunProgress {
    items_done: AtomicU64,
    bytes_done: AtomicU64,
    totals: Mutex<(Option<u64>, Option<u64>)>,
    cancelled: AtomicBool,
}

impl RunProgress {
    fn snapshot(&self) -> JobProgress {
        let (items_total, bytes_total) = *self.totals.lock().unwrap_or_else(|e| e.into_inner());
        JobProgress {
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total,
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total,
        }
    }
}

impl Progress for RunProgress {
    fn advance(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn set_totals(&self, items: Option<u64>, bytes: Option<u64>) {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner()) = (items, bytes);
    }
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// The kinds of job this build runs, with their parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Garbage collection (with upload expiry); `full` also walks the store.
    Gc {
        /// Walk the whole store for orphans and rebuild the candidate list.
        full: bool,
    },
    /// Re-hash every blob and cross-check the database.
    Check,
    /// A kind this crate does not know, run by the [`JobHandler`](crate::JobHandler)
    /// registered for it (`sync:quay`): one run at a time per target.
    Handled {
        /// The kind (`sync`).
        kind: String,
        /// What it runs on (a remote's name).
        target: String,
    },
}

/// Attempts of a handled job: a run that failed (an upstream down) is retried after the
/// queue's backoff, twice.
const HANDLED_ATTEMPTS: u32 = 3;

impl JobKind {
    /// The job to enqueue for this kind; each kind runs one at a time.
    pub fn to_job(&self) -> NewJob {
        match self {
            // A full collection has its own key, so a pending quick one never
            // swallows it; two collectors at once are safe (see wharf_meta's gc).
            JobKind::Gc { full } => NewJob {
                kind: "gc".into(),
                key: if *full { "gc-full" } else { "gc" }.into(),
                params: format!("{{\"full\":{full}}}"),
                max_attempts: 3,
            },
            JobKind::Check => NewJob {
                kind: "check".into(),
                key: "check".into(),
                params: "{}".into(),
                max_attempts: 1,
            },
            JobKind::Handled { kind, target } => NewJob {
                kind: kind.clone(),
                key: format!("{kind}:{target}"),
                params: serde_json::json!({ "target": target }).to_string(),
                max_attempts: HANDLED_ATTEMPTS,
            },
        }
    }

    /// Reads a claimed job back into its kind.
    pub fn from_claimed(job: &ClaimedJob) -> Result<JobKind, String> {
        match job.kind.as_str() {
            "gc" => {
                let params: serde_json::Value = serde_json::from_str(&job.params)
                    .map_err(|e| format!("gc parameters {:?}: {e}", job.params))?;
                Ok(JobKind::Gc {
                    full: params
                        .get("full")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false),
                })
            }
            "check" => Ok(JobKind::Check),
            other => {
                let params: serde_json::Value = serde_json::from_str(&job.params)
                    .map_err(|e| format!("{other} parameters {:?}: {e}", job.params))?;
                let target = params
                    .get("target")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| format!("{other} parameters {:?}: no target", job.params))?;
                Ok(JobKind::Handled {
                    kind: other.to_owned(),
                    target: target.to_owned(),
                })
            }
        }
    }

    /// The kind named on the command line or in the API (`gc`, `gc-full`, `check`).
    pub fn parse(name: &str) -> Option<JobKind> {
        match name {
            "gc" => Some(JobKind::Gc { full: false }),
            "gc-full" => Some(JobKind::Gc { full: true }),
            "check" => Some(JobKind::Check),
            _ => None,
        }
    }
}

/// What a worker needs to run any job.
#[derive(Clone)]
pub struct Worker {
    /// The blob store.
    pub blobs: Arc<BlobStore>,
    /// The metadata database (and the queue).
    pub meta: Meta,
    /// Garbage-collection settings; a job's `full` flag overrides `full`.
    pub gc: GcPolicy,
    /// This process's identity as a lease owner.
    pub id: String,
    /// The kinds beyond gc and check that this process runs.
    pub handlers: Handlers,
}

/// How long a claim lasts between renewals; a dead worker's job is taken over after this.
pub const JOB_LEASE_SECS: i64 = 30;
/// How often an idle worker looks for work.
const POLL: Duration = Duration::from_secs(1);

impl Worker {
    /// Claims and runs jobs until `cancel` fires; a job in flight is stopped at
    /// its next safe point and left for the next claimer to resume.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match self.meta.claim_job(&self.id, JOB_LEASE_SECS).await {
                Ok(Some(job)) => self.run_one(job, &cancel).await,
                Ok(None) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a job");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(POLL * 5) => {}
                    }
                }
            }
        }
    }

    /// Runs one claimed job to its end, renewing the lease meanwhile.
    pub async fn run_one(&self, job: ClaimedJob, shutdown: &CancellationToken) {
        let progress = Arc::new(RunProgress::default());
        let lost = Arc::new(AtomicBool::new(false));
        let renewals = {
            let (meta, id, worker) = (self.meta.clone(), job.id.clone(), self.id.clone());
            let (progress, lost, shutdown) = (progress.clone(), lost.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(JOB_LEASE_SECS as u64 / 3)).await;
                    if shutdown.is_cancelled() {
                        // Stop at the next safe point; the lease lapses and another
                        // process (or this one after its restart) resumes the job.
                        progress.cancelled.store(true, Ordering::Relaxed);
                        lost.store(true, Ordering::Relaxed);
                    }
                    match meta
                        .renew_job(&id, &worker, JOB_LEASE_SECS, progress.snapshot())
                        .await
                    {
                        Ok(LeaseStatus::Held) => {}
                        Ok(LeaseStatus::CancelRequested) => {
                            progress.cancelled.store(true, Ordering::Relaxed)
                        }
                        Ok(LeaseStatus::Lost) => {
                            lost.store(true, Ordering::Relaxed);
                            progress.cancelled.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, job.id = %id, "cannot renew a job lease")
                        }
                    }
                }
            })
        };
        tracing::info!(job.id = %job.id, job.kind = %job.kind, job.attempt = job.attempt, "job started");
        // Shutdown stops the handler at its next safe point (between blobs), and
        // the job is handed back below rather than left for its lease to lapse.
        let stop_on_shutdown = {
            let (progress, shutdown) = (progress.clone(), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                progress.cancelled.store(true, Ordering::Relaxed);
            })
        };
        let outcome = self.handle(&job, &*progress).await;
        stop_on_shutdown.abort();
        renewals.abort();
        if shutdown.is_cancelled() {
            match self.meta.release_job(&job.id, &self.id).await {
                Ok(true) => {
                    tracing::info!(job.id = %job.id, "job handed back to the queue at shutdown")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, job.id = %job.id, "cannot hand a job back; it resumes when its lease lapses")
                }
            }
            return;
        }
        if lost.load(Ordering::Relaxed) {
            tracing::warn!(job.id = %job.id, "job stopped without finishing; it will be resumed");
            return;
        }
        let outcome_ref = outcome.as_deref().map_err(String::as_str);
        match self
            .meta
            .finish_job(&job.id, &self.id, outcome_ref, progress.snapshot())
            .await
        {
            Ok(Some(state)) => match &outcome {
                Ok(summary) => tracing::info!(job.id = %job.id, job.state = %state, "{summary}"),
                Err(error) => {
                    tracing::error!(job.id = %job.id, job.state = %state, %error, "job failed")
                }
            },
            Ok(None) => {
                tracing::warn!(job.id = %job.id, "lost the job's lease before finishing it")
            }
            Err(e) => tracing::error!(error = %e, job.id = %job.id, "cannot record a job's end"),
        }
    }

    async fn handle(&self, job: &ClaimedJob, progress: &dyn Progress) -> Result<String, String> {
        let kind = JobKind::from_claimed(job)?;
        let result = match kind {
            JobKind::Gc { full } => {
                let policy = GcPolicy { full, ..self.gc };
                collect_garbage_with(&self.blobs, &self.meta, policy, progress)
                    .await
                    .map(|r| {
                        format!(
                            "deleted {} blobs ({} bytes), kept {}, expired {} uploads",
                            r.blobs_deleted, r.bytes_freed, r.blobs_kept, r.uploads_expired
                        )
                    })
            }
            JobKind::Check => check_store_with(&self.blobs, &self.meta, progress)
                .await
                .and_then(|r| {
                    for problem in &r.problems {
                        tracing::error!(%problem, "check found a problem");
                    }
                    let line = format!(
                        "verified {} blobs ({} bytes): {} problems",
                        r.blobs_verified,
                        r.bytes_verified,
                        r.problems.len()
                    );
                    if r.problems.is_empty() {
                        Ok(line)
                    } else {
                        Err(JobError::Problems(line))
                    }
                }),
            JobKind::Handled { kind, target } => match self.handlers.get(&kind) {
                Some(handler) => handler.run(&target, progress).await,
                None => Err(JobError::Failed(format!(
                    "no handler for job kind {kind:?} in this build"
                ))),
            },
        };
        match result {
            Ok(summary) => Ok(summary),
            Err(JobError::Cancelled) => Err("cancelled".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// When a schedule's runs fall due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// A fixed time after the run before.
    Every(Duration),
    /// At the times a cron expression names, in UTC.
    Cron(CronExpr),
}

/// One scheduled job: enqueued at each time of its cadence, give or take `jitter`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Stable name, shared by every replica (`gc`).
    pub name: String,
    /// What to run.
    pub job: JobKind,
    /// When it falls due.
    pub cadence: Cadence,
    /// Up to this much is added at random to each run's time, so replicas' timers and
    /// neighbouring schedules do not hit upstreams and the store in lock-step. Never more
    /// than half the gap to the run after, so a delayed run cannot slide past its successor.
    pub jitter: Duration,
}

impl Schedule {
    /// When the run after `now` is due, in Unix seconds: the cadence's next time plus a
    /// jitter that `random` picks (`random % (jitter + 1)` seconds, the jitter capped at half
    /// the gap to the time after). `None` for a cron expression with no time left.
    pub fn next_run_at(&self, now: i64, random: u64) -> Option<i64> {
        let (at, gap) = match &self.cadence {
            Cadence::Every(interval) => {
                let secs = interval.as_secs().min(i64::MAX as u64 / 4) as i64;
                (now.saturating_add(secs), secs)
            }
            Cadence::Cron(expr) => {
                let at = expr.next_after(now)?;
                let after = expr.next_after(at).unwrap_or(at);
                (at, after - at)
            }
        };
        let jitter = self.jitter.as_secs().min((gap / 2).max(0) as u64);
        Some(at.saturating_add((random % (jitter + 1)) as i64))
    }
}

/// The scheduler lease's name and length.
const SCHEDULER_LEASE: &str = "scheduler";
const SCHEDULER_LEASE_SECS: i64 = 30;
const SCHEDULER_TICK: Duration = Duration::from_secs(2);

/// Enqueues due runs of `schedules` while this process holds the scheduler
/// lease, until `cancel` fires; then gives the lease up.
pub async fn run_scheduler(
    meta: Meta,
    schedules: Vec<Schedule>,
    owner: String,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(SCHEDULER_TICK) => {}
        }
        match meta
            .acquire_lease(SCHEDULER_LEASE, &owner, SCHEDULER_LEASE_SECS)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the scheduler lease");
                continue;
            }
        }
        for schedule in &schedules {
            let Some(next_at) = schedule.next_run_at(unix_now(), spread()) else {
                tracing::warn!(schedule = %schedule.name, "schedule has no time left to run");
                continue;
            };
            match meta.take_due_schedule(&schedule.name, next_at).await {
                Ok(true) => match meta.enqueue_job(&schedule.job.to_job()).await {
                    Ok((id, true)) => {
                        tracing::info!(job.id = %id, schedule = %schedule.name, "scheduled job queued")
                    }
                    Ok((id, false)) => {
                        tracing::info!(job.id = %id, schedule = %schedule.name, "scheduled job already pending")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, schedule = %schedule.name, "cannot queue a scheduled job")
                    }
                },
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, schedule = %schedule.name, "cannot read a schedule")
                }
            }
        }
    }
    if let Err(e) = meta.release_lease(SCHEDULER_LEASE, &owner).await {
        tracing::warn!(error = %e, "cannot release the scheduler lease");
    }
}

/// A pseudo-random number for the jitter; spread, not secrecy, is the point.
fn spread() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs().rotate_left(17))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 11:33:00 UTC.
    const NOW: i64 = 1_796_124_780;

    fn schedule(cadence: Cadence, jitter_secs: u64) -> Schedule {
        Schedule {
            name: "t".into(),
            job: JobKind::Check,
            cadence,
            jitter: Duration::from_secs(jitter_secs),
        }
    }

    fn cron(text: &str) -> Cadence {
        Cadence::Cron(CronExpr::parse(text).unwrap())
    }

    #[test]
    fn interval_runs_follow_now_with_bounded_jitter() {
        let hourly = schedule(Cadence::Every(Duration::from_secs(3600)), 300);
        assert_eq!(hourly.next_run_at(NOW, 0), Some(NOW + 3600));
        assert_eq!(hourly.next_run_at(NOW, 300), Some(NOW + 3900));
        assert_eq!(hourly.next_run_at(NOW, 301), Some(NOW + 3600));
        for random in [0, 7, 299, 300, u64::MAX] {
            let at = hourly.next_run_at(NOW, random).unwrap();
            assert!((NOW + 3600..=NOW + 3900).contains(&at), "{random}: {at}");
        }
        // The jitter never exceeds half the interval: a 1 s interval has none.
        let fast = schedule(Cadence::Every(Duration::from_secs(1)), 300);
        assert_eq!(fast.next_run_at(NOW, 12_345), Some(NOW + 1));
        let ten = schedule(Cadence::Every(Duration::from_secs(10)), 300);
        assert_eq!(ten.next_run_at(NOW, 5), Some(NOW + 15));
        assert_eq!(ten.next_run_at(NOW, 6), Some(NOW + 10));
    }

    #[test]
    fn cron_runs_fall_on_the_expression_plus_jitter() {
        // 03:00 UTC tomorrow (today's has passed), then up to 10 minutes later.
        let nightly = schedule(cron("0 3 * * *"), 600);
        assert_eq!(nightly.next_run_at(NOW, 0), Some(1_796_180_400));
        assert_eq!(nightly.next_run_at(NOW, 600), Some(1_796_181_000));
        // Every minute with no jitter: the next whole minute.
        let minutely = schedule(cron("* * * * *"), 0);
        assert_eq!(minutely.next_run_at(NOW, 99), Some(NOW + 60));
        assert_eq!(minutely.next_run_at(NOW + 59, 99), Some(NOW + 60));
        // Jitter is capped at half the gap to the run after (30 s of a minute).
        let capped = schedule(cron("* * * * *"), 600);
        assert_eq!(capped.next_run_at(NOW, 30), Some(NOW + 90));
        assert_eq!(capped.next_run_at(NOW, 31), Some(NOW + 60));
        // Uneven gaps: 00:00 then 00:05 caps the first run's jitter at 150 s.
        let uneven = schedule(cron("0,5 0 * * *"), 3600);
        let midnight = 1_796_169_600;
        assert_eq!(uneven.next_run_at(NOW, 150), Some(midnight + 150));
        assert_eq!(uneven.next_run_at(NOW, 151), Some(midnight));
    }

    #[test]
    fn a_due_run_is_followed_by_the_next_slot_not_the_same_one() {
        // The scheduler asks again after the run at 03:00 (+ jitter) was taken: the next one
        // is the following day's, however late in its jitter window it was taken.
        let nightly = schedule(cron("0 3 * * *"), 600);
        let first = nightly.next_run_at(NOW, 600).unwrap();
        let second = nightly.next_run_at(first, 0).unwrap();
        assert_eq!(second, 1_796_180_400 + 86_400);
    }
}
