//! Writing jobs: submissions, the state transitions of a job and its attempts (each a conditional
//! update recorded as an event), cancellation and artifact rows.

use super::{AttemptRecord, CancelResult, FinishResult, NewJob, Result, Store, StoreError};
use crate::job::JobSpec;
use crate::state::{now_rfc3339, JobId, JobState, Outcome, Reason};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Stores jobs as queued, all in one transaction; returns their ids in order.
    pub fn submit(&mut self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        self.write(|tx| {
            let now = now_rfc3339();
            jobs.iter().map(|job| insert_job(tx, job, &now)).collect()
        })
    }

    /// Submits a job file of the jobs dir unless this path was already submitted with this
    /// content; returns the new id, or `None` when it had been seen.
    pub fn submit_from_jobs_dir(
        &mut self,
        path: &str,
        content_hash: &str,
        spec: &JobSpec,
    ) -> Result<Option<JobId>> {
        self.write(|tx| {
            let seen: bool = tx
                .query_row(
                    "SELECT 1 FROM jobs_dir_files WHERE path = ?1 AND content_hash = ?2",
                    params![path, content_hash],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if seen {
                return Ok(None);
            }
            let now = now_rfc3339();
            let job = NewJob {
                spec: spec.clone(),
                source: Some(path.to_string()),
            };
            let id = insert_job(tx, &job, &now)?;
            tx.execute(
                "INSERT INTO jobs_dir_files (path, content_hash, job_id, seen_at) VALUES (?1, ?2, ?3, ?4)",
                params![path, content_hash, id.as_str(), now],
            )?;
            Ok(Some(id))
        })
    }

    /// Records an artifact of attempt `n`.
    pub fn add_artifact(&mut self, id: &JobId, n: u32, kind: &str, path: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO artifacts (job_id, attempt, kind, path, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id.as_str(), n, kind, path, now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// Moves a queued job to `starting` and opens its next attempt, whose container name comes from
    /// `container_name(n)`. `None` when the job is no longer queued (cancelled or claimed meanwhile).
    pub fn claim(
        &mut self,
        id: &JobId,
        container_name: impl Fn(u32) -> String,
    ) -> Result<Option<AttemptRecord>> {
        Ok(self
            .claim_round(id, 1, container_name)?
            .and_then(|mut round| round.pop()))
    }

    /// Like [`Store::claim`] for `candidates` attempts at once, all in one transaction: with
    /// more than one, a round of best-of-N candidates (marked 1 to `candidates`).
    pub fn claim_round(
        &mut self,
        id: &JobId,
        candidates: u32,
        container_name: impl Fn(u32) -> String,
    ) -> Result<Option<Vec<AttemptRecord>>> {
        self.write(|tx| {
            let attempts: Option<u32> = tx
                .query_row(
                    "SELECT attempts FROM jobs WHERE id = ?1 AND state = 'queued' AND cancel_requested = 0",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(attempts) = attempts else {
                return Ok(None);
            };
            let now = now_rfc3339();
            let mut round = Vec::new();
            for candidate in 1..=candidates.max(1) {
                let n = attempts + candidate;
                let container = container_name(n);
                tx.execute(
                    "INSERT INTO attempts (job_id, n, container, state, started_at, candidate) VALUES (?1, ?2, ?3, 'starting', ?4, ?5)",
                    params![id.as_str(), n, container, now, (candidates > 1).then_some(candidate)],
                )?;
                add_event(tx, id, Some(n), &now, JobState::Starting, None, Some(&container))?;
                round.push(AttemptRecord {
                    job_id: id.clone(),
                    n,
                    container,
                    state: JobState::Starting,
                    reason: None,
                    exit_code: None,
                    detail: None,
                    started_at: now.clone(),
                    finished_at: None,
                });
            }
            tx.execute(
                "UPDATE jobs SET state = 'starting', attempts = ?2, started_at = coalesce(started_at, ?3) WHERE id = ?1",
                params![id.as_str(), attempts + candidates.max(1), now],
            )?;
            Ok(Some(round))
        })
    }

    /// Records that attempt `n`'s container is running. False when the job or the attempt is no
    /// longer active.
    pub fn mark_running(&mut self, id: &JobId, n: u32) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE jobs SET state = 'running' WHERE id = ?1 AND state IN ('starting','running')
                 AND EXISTS (SELECT 1 FROM attempts WHERE job_id = ?1 AND n = ?2 AND state IN ('starting','running'))",
                params![id.as_str(), n],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE attempts SET state = 'running' WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n],
            )?;
            add_event(tx, id, Some(n), &now_rfc3339(), JobState::Running, None, None)?;
            Ok(true)
        })
    }

    /// Ends attempt `n` with `outcome`. An infrastructure failure (`Reason::is_retryable`) with
    /// attempts left (`max_attempts` = 1 + retries) queues the job again; anything else ends the job.
    /// Messages the attempt never typed are recorded as dropped, before the state change.
    /// For a candidate of a best-of-N job `max_attempts` counts rounds, and the job ends with the
    /// last candidate of its round (see `store/candidates.rs`).
    pub fn finish_attempt(
        &mut self,
        id: &JobId,
        n: u32,
        outcome: &Outcome,
        max_attempts: u32,
    ) -> Result<FinishResult> {
        self.write(|tx| {
            let current: Option<(String, u32)> = tx
                .query_row(
                    "SELECT state, attempts FROM jobs WHERE id = ?1",
                    [id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((state, attempts)) = current else {
                return Err(StoreError::NotFound(id.to_string()));
            };
            let state: JobState = state.parse().map_err(|message| StoreError::Corrupt {
                id: id.to_string(),
                message,
            })?;
            if state.is_terminal() {
                return Ok(FinishResult::AlreadyFinished);
            }
            if super::candidates::candidate_of(tx, id, n)?.is_some() {
                return super::candidates::finish_candidate(tx, id, n, outcome, max_attempts);
            }
            if attempts != n {
                return Ok(FinishResult::AlreadyFinished);
            }
            let now = now_rfc3339();
            let detail = match outcome {
                Outcome::Failed { detail, .. } => Some(detail.as_str()),
                Outcome::Succeeded => None,
                Outcome::Cancelled => Some("cancelled"),
            };
            let reason = outcome.reason().map(|r| r.as_str());
            super::messages::record_dropped(tx, id, n, &now)?;
            tx.execute(
                "UPDATE attempts SET state = ?3, reason = ?4, exit_code = ?5, detail = ?6, finished_at = ?7 WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n, outcome.state().as_str(), reason, outcome.exit_code(), detail, now],
            )?;
            let retry = outcome.retryable() && n < max_attempts;
            if retry {
                tx.execute(
                    "UPDATE jobs SET state = 'queued', reason = ?2, detail = ?3 WHERE id = ?1",
                    params![id.as_str(), reason, detail],
                )?;
                let why = format!("retrying (attempt {} of {max_attempts}) after {}", n + 1, detail.unwrap_or("an infrastructure failure"));
                add_event(tx, id, Some(n), &now, JobState::Queued, outcome.reason(), Some(&why))?;
                return Ok(FinishResult::Requeued);
            }
            tx.execute(
                "UPDATE jobs SET state = ?2, reason = ?3, exit_code = ?4, detail = ?5, finished_at = ?6 WHERE id = ?1",
                params![id.as_str(), outcome.state().as_str(), reason, outcome.exit_code(), detail, now],
            )?;
            add_event(tx, id, Some(n), &now, outcome.state(), outcome.reason(), detail)?;
            Ok(FinishResult::Finished(outcome.state()))
        })
    }

    /// Ends a job that has no attempt to finish (a queued job that can never run, say).
    pub fn fail_queued(&mut self, id: &JobId, reason: Reason, detail: &str) -> Result<bool> {
        self.write(|tx| {
            let now = now_rfc3339();
            let changed = tx.execute(
                "UPDATE jobs SET state = 'failed', reason = ?2, detail = ?3, finished_at = ?4 WHERE id = ?1 AND state = 'queued'",
                params![id.as_str(), reason.as_str(), detail, now],
            )?;
            if changed > 0 {
                add_event(tx, id, None, &now, JobState::Failed, Some(reason), Some(detail))?;
            }
            Ok(changed > 0)
        })
    }

    /// Cancels a queued job at once, or asks the scheduler to stop an active one.
    pub fn cancel(&mut self, id: &JobId) -> Result<CancelResult> {
        self.write(|tx| {
            let state: String = tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id.as_str()], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let state: JobState = state.parse().map_err(|message| StoreError::Corrupt {
                id: id.to_string(),
                message,
            })?;
            let now = now_rfc3339();
            match state {
                JobState::Queued => {
                    tx.execute(
                        "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?2 WHERE id = ?1",
                        params![id.as_str(), now],
                    )?;
                    add_event(tx, id, None, &now, JobState::Cancelled, None, Some("cancelled before it started"))?;
                    Ok(CancelResult::Cancelled)
                }
                JobState::Starting | JobState::Running => {
                    tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id.as_str()])?;
                    add_event(tx, id, None, &now, state, None, Some("cancel requested"))?;
                    Ok(CancelResult::Requested)
                }
                done => Ok(CancelResult::AlreadyFinished(done)),
            }
        })
    }

    /// Drops a job's artifact rows (their files are gone).
    pub fn forget_artifacts(&mut self, id: &JobId) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM artifacts WHERE job_id = ?1", [id.as_str()])?;
            Ok(())
        })
    }
}

fn insert_job(tx: &rusqlite::Transaction<'_>, job: &NewJob, now: &str) -> Result<JobId> {
    let id = JobId::new();
    let spec = serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO jobs (id, name, spec, source, grp, state, submitted_at) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
        params![id.as_str(), job.spec.name, spec, job.source, job.spec.group, now],
    )?;
    add_event(tx, &id, None, now, JobState::Queued, None, None)?;
    Ok(id)
}

/// Records a state event of the job (or of its attempt `attempt`) in the transaction `tx`.
pub(super) fn add_event(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
    attempt: Option<u32>,
    at: &str,
    state: JobState,
    reason: Option<Reason>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (job_id, attempt, at, state, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id.as_str(), attempt, at, state.as_str(), reason.map(|r| r.as_str()), detail],
    )?;
    Ok(())
}
