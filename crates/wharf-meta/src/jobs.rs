//! The persisted job queue: background work (garbage collection, upload expiry,
//! verification; next sync, publish, retention, export) as rows that any process
//! may claim, with a history that outlives the run.
//!
//! - One run at a time per job key: a partial unique index admits one queued or
//!   running row per key, so enqueueing what is already pending returns the
//!   pending job instead of a second one.
//! - A claim is a lease: the worker renews it while it runs (the same call
//!   records progress and tells it whether cancellation was asked for). A lease
//!   that lapses — the worker crashed or was killed — makes the job claimable
//!   again, so work resumes after a restart.
//! - Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never block
//!   on each other's claimed rows; SQLite's `BEGIN IMMEDIATE` serialises them.
//! - A failed attempt is retried with exponential backoff up to `max_attempts`.
//!
//! The scheduler's own lease (one process schedules at a time) and the
//! schedule's next-run times live here too, so replicas share them.

use sqlx::Row;

use crate::{unix_now, Backend, Meta, MetaError};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to be claimed (possibly until a backoff ends).
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed its last attempt.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl JobState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<JobState, MetaError> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            other => return Err(MetaError::Corrupt(format!("stored job state {other:?}"))),
        })
    }

    /// Whether the job will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What runs it (`gc`, `check`, …); the jobs layer maps kinds to handlers.
    pub kind: String,
    /// At most one queued or running job per key (e.g. `gc`, `sync:quay.io`).
    pub key: String,
    /// Handler parameters, as JSON text.
    pub params: String,
    /// Attempts before the job is failed for good.
    pub max_attempts: u32,
}

/// Progress counters, readable while a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Items (blobs, objects, packages) done.
    pub items_done: u64,
    /// Items expected, if known.
    pub items_total: Option<u64>,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes expected, if known.
    pub bytes_total: Option<u64>,
}

/// A job as stored: its definition, state, counters and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its key.
    pub key: String,
    /// Its parameters (JSON text).
    pub params: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// When it was enqueued (unix seconds).
    pub created_at: i64,
    /// When its first attempt started.
    pub started_at: Option<i64>,
    /// When it finished.
    pub finished_at: Option<i64>,
    /// Counters.
    pub progress: JobProgress,
    /// The last error.
    pub error: Option<String>,
    /// The one-line outcome of a finished run.
    pub summary: Option<String>,
}

/// A job claimed by a worker, which must renew the lease while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Its parameters.
    pub params: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
}

/// What renewing a lease learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still ours; carry on.
    Held,
    /// Still ours, and cancellation was requested: stop at the next safe point.
    CancelRequested,
    /// Lost (it lapsed and another worker took the job): stop without finishing.
    Lost,
}

const JOB_COLUMNS: &str = "id, kind, job_key, params, state, attempts, max_attempts, \
     cancel_requested, created_at, started_at, finished_at, items_done, items_total, \
     bytes_done, bytes_total, error, summary";

fn job_record(r: &sqlx::any::AnyRow) -> Result<JobRecord, MetaError> {
    let opt_u64 = |i: usize| -> Result<Option<u64>, MetaError> {
        Ok(r.try_get::<Option<i64>, _>(i)?.map(|v| v as u64))
    };
    Ok(JobRecord {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        key: r.try_get(2)?,
        params: r.try_get(3)?,
        state: JobState::parse(&r.try_get::<String, _>(4)?)?,
        attempts: r.try_get::<i64, _>(5)? as u32,
        max_attempts: r.try_get::<i64, _>(6)? as u32,
        cancel_requested: r.try_get::<i64, _>(7)? != 0,
        created_at: r.try_get(8)?,
        started_at: r.try_get(9)?,
        finished_at: r.try_get(10)?,
        progress: JobProgress {
            items_done: r.try_get::<i64, _>(11)? as u64,
            items_total: opt_u64(12)?,
            bytes_done: r.try_get::<i64, _>(13)? as u64,
            bytes_total: opt_u64(14)?,
        },
        error: r.try_get(15)?,
        summary: r.try_get(16)?,
    })
}

/// Seconds before retry `attempt` (1-based) of a failed job: 10 s, 20 s, 40 s, … capped at an hour.
pub fn retry_backoff_secs(attempt: u32) -> i64 {
    (10i64 << attempt.saturating_sub(1).min(20)).min(3600)
}

impl Meta {
    /// Enqueues `job` unless one with the same key is queued or running; returns
    /// the id of the job that will run and whether it is the new one.
    pub async fn enqueue_job(&self, job: &NewJob) -> Result<(String, bool), MetaError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, kind, job_key, params, state, attempts, max_attempts, \
             run_after, cancel_requested, created_at, items_done, bytes_done) \
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, 0, $6, 0, 0) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&job.kind)
        .bind(&job.key)
        .bind(&job.params)
        .bind(i64::from(job.max_attempts.max(1)))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let result = if inserted {
            (id, true)
        } else {
            let row = sqlx::query(
                "SELECT id FROM jobs WHERE job_key = $1 AND state IN ('queued', 'running')",
            )
            .bind(&job.key)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => (r.try_get(0)?, false),
                None => {
                    return Err(MetaError::Corrupt(format!(
                        "job {} was refused but no pending job holds its key",
                        job.key
                    )))
                }
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Claims the next runnable job for `worker` with a lease of `lease_secs`:
    /// a queued job whose backoff has passed, or a running one whose lease lapsed.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_secs: i64,
    ) -> Result<Option<ClaimedJob>, MetaError> {
        let now = unix_now();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
             WHERE id = (SELECT id FROM jobs WHERE cancel_requested = 0 AND \
             ((state = 'queued' AND run_after <= $3) OR (state = 'running' AND lease_until < $3)) \
             ORDER BY run_after, created_at LIMIT 1{lock}) \
             RETURNING id, kind, params, attempts"
        ))
        .bind(worker)
        .bind(now + lease_secs)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(ClaimedJob {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                params: r.try_get(2)?,
                attempt: r.try_get::<i64, _>(3)? as u32,
            })
        })
        .transpose()
    }

    /// Renews `worker`'s lease on a job and records its progress.
    pub async fn renew_job(
        &self,
        id: &str,
        worker: &str,
        lease_secs: i64,
        progress: JobProgress,
    ) -> Result<LeaseStatus, MetaError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "UPDATE jobs SET lease_until = $3, items_done = $4, items_total = $5, \
             bytes_done = $6, bytes_total = $7 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested",
        )
        .bind(id)
        .bind(worker)
        .bind(unix_now() + lease_secs)
        .bind(progress.items_done as i64)
        .bind(progress.items_total.map(|v| v as i64))
        .bind(progress.bytes_done as i64)
        .bind(progress.bytes_total.map(|v| v as i64))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            None => LeaseStatus::Lost,
            Some(r) if r.try_get::<i64, _>(0)? != 0 => LeaseStatus::CancelRequested,
            Some(_) => LeaseStatus::Held,
        })
    }

    /// Ends `worker`'s run of a job. `Ok(summary)` succeeds it; `Err(error)`
    /// queues a retry after a backoff, or fails it once its attempts are used up;
    /// a run that stopped because cancellation was asked for ends `cancelled`.
    /// Returns the state the job is left in, or `None` if the lease was lost.
    pub async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        outcome: Result<&str, &str>,
        progress: JobProgress,
    ) -> Result<Option<JobState>, MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT attempts, max_attempts, cancel_requested FROM jobs \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts = row.try_get::<i64, _>(0)? as u32;
        let max_attempts = row.try_get::<i64, _>(1)? as u32;
        let cancelled = row.try_get::<i64, _>(2)? != 0;
        let (state, run_after) = match outcome {
            _ if cancelled => (JobState::Cancelled, now),
            Ok(_) => (JobState::Succeeded, now),
            Err(_) if attempts < max_attempts => {
                (JobState::Queued, now + retry_backoff_secs(attempts))
            }
            Err(_) => (JobState::Failed, now),
        };
        let (summary, error) = match outcome {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        sqlx::query(
            "UPDATE jobs SET state = $2, run_after = $3, lease_owner = NULL, lease_until = NULL, \
             finished_at = $4, summary = COALESCE($5, summary), error = COALESCE($6, error), \
             items_done = $7, items_total = $8, bytes_done = $9, bytes_total = $10 WHERE id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(run_after)
        .bind(state.is_finished().then_some(now))
        .bind(summary)
        .bind(error)
        .bind(progress.items_done as i64)
        .bind(progress.items_total.map(|v| v as i64))
        .bind(progress.bytes_done as i64)
        .bind(progress.bytes_total.map(|v| v as i64))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    /// Hands a running job back to the queue unfinished (its worker is shutting
    /// down), so another process resumes it at once instead of after the lease
    /// lapses; the interrupted attempt does not count. False if the lease was lost.
    pub async fn release_job(&self, id: &str, worker: &str) -> Result<bool, MetaError> {
        let mut tx = self.write_tx().await?;
        let released = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, \
             attempts = attempts - 1 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(worker)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(released)
    }

    /// Asks a job to stop: a queued job is cancelled at once, a running one at
    /// its worker's next safe point. Returns the job's state afterwards, or `None`
    /// if there is no such job.
    pub async fn cancel_job(&self, id: &str) -> Result<Option<JobState>, MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = $2 \
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let state = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| JobState::parse(&r.try_get::<String, _>(0)?))
            .transpose()?;
        tx.commit().await?;
        Ok(state)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, MetaError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| job_record(&r)).transpose()
    }

    /// The newest jobs first, at most `limit`.
    pub async fn jobs(&self, limit: u32) -> Result<Vec<JobRecord>, MetaError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_record).collect()
    }

    /// Appends a log line to a job's history.
    pub async fn job_log(&self, id: &str, line: &str) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO job_log (job_id, seq, at, line) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM job_log WHERE job_id = $1",
        )
        .bind(id)
        .bind(unix_now())
        .bind(line)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A job's log lines, oldest first, as (unix seconds, line).
    pub async fn job_log_lines(&self, id: &str) -> Result<Vec<(i64, String)>, MetaError> {
        let rows = sqlx::query("SELECT at, line FROM job_log WHERE job_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Takes or renews the named lease for `owner` for `secs`; true if `owner`
    /// holds it afterwards. Used so that exactly one process schedules at a time.
    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        secs: i64,
    ) -> Result<bool, MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        let held = sqlx::query(
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until \
             WHERE leases.owner = excluded.owner OR leases.until < $4 RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(now + secs)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        tx.commit().await?;
        Ok(held)
    }

    /// Gives up a lease `owner` holds (on shutdown), so another process takes over at once.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), MetaError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims the scheduled run of `schedule` if it is due: moves its next run
    /// to `next_at` and returns true. A schedule seen for the first time starts
    /// with its first run at `next_at`. Conditional on the stored time, so two
    /// schedulers can never both fire one run.
    pub async fn take_due_schedule(&self, schedule: &str, next_at: i64) -> Result<bool, MetaError> {
        let now = unix_now();
        let mut tx = self.write_tx().await?;
        let first_seen = sqlx::query(
            "INSERT INTO schedules (name, next_run_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(schedule)
        .bind(next_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let due = !first_seen
            && sqlx::query(
                "UPDATE schedules SET next_run_at = $2 WHERE name = $1 AND next_run_at <= $3",
            )
            .bind(schedule)
            .bind(next_at)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
        tx.commit().await?;
        Ok(due)
    }
}
