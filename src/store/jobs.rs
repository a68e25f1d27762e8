//! Reading jobs: finding one by id, prefix or name, the lists the scheduler and the CLI need, a
//! job's attempts and artifacts, and decoding their rows.

use super::{ArtifactRecord, AttemptRecord, JobRecord, Result, Store, StoreError};
use crate::job::JobSpec;
use crate::state::{JobId, JobState};
use rusqlite::{params, OptionalExtension, Row};

impl Store {
    /// Finds a job by full id, unique id prefix (4+ characters) or name (the newest job of that name).
    pub fn resolve(&self, query: &str) -> Result<JobId> {
        if let Some(id) = self
            .conn
            .query_row("SELECT id FROM jobs WHERE id = ?1", [query], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        {
            return Ok(JobId(id));
        }
        if query.len() >= 4 && query.chars().all(|c| c.is_ascii_alphanumeric()) {
            let prefix = query.to_ascii_uppercase();
            let mut stmt = self
                .conn
                .prepare("SELECT id FROM jobs WHERE substr(id, 1, length(?1)) = ?1 LIMIT 6")?;
            let ids: Vec<String> = stmt
                .query_map([&prefix], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            match ids.len() {
                0 => {}
                1 => return Ok(JobId(ids[0].clone())),
                _ => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_string(),
                        candidates: ids.join(", "),
                    })
                }
            }
        }
        self.conn
            .query_row(
                "SELECT id FROM jobs WHERE name = ?1 ORDER BY rowid DESC LIMIT 1",
                [query],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(JobId)
            .ok_or_else(|| StoreError::NotFound(query.to_string()))
    }

    /// One job.
    pub fn job(&self, id: &JobId) -> Result<JobRecord> {
        self.conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id.as_str()],
                job_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?
    }

    /// Jobs in submission order; only the active and queued ones unless `all`.
    pub fn list(&self, all: bool) -> Result<Vec<JobRecord>> {
        let sql = if all {
            format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY rowid")
        } else {
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued','starting','running') ORDER BY rowid")
        };
        self.jobs_where(&sql, [])
    }

    /// The jobs with these ids, in the given order.
    pub fn jobs(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        ids.iter().map(|id| self.job(id)).collect()
    }

    /// Queued jobs not asked to cancel, oldest first.
    pub fn queued(&self, limit: usize) -> Result<Vec<JobRecord>> {
        self.jobs_where(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY rowid LIMIT ?1"
            ),
            [limit as i64],
        )
    }

    /// Which of these jobs are queued, in the order given.
    pub fn queued_among(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        Ok(self
            .jobs(ids)?
            .into_iter()
            .filter(|j| j.state == JobState::Queued)
            .collect())
    }

    /// Jobs in `starting` or `running` with their latest attempt (what a scheduler must own); a
    /// best-of-N job once per candidate still active.
    pub fn active(&self) -> Result<Vec<(JobRecord, Option<AttemptRecord>)>> {
        let jobs = self.jobs_where(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('starting','running') ORDER BY rowid"),
            [],
        )?;
        let mut active = Vec::new();
        for job in jobs {
            let candidates: Vec<AttemptRecord> = self
                .attempts(&job.id)?
                .into_iter()
                .filter(|a| a.state.is_active())
                .collect();
            if job.spec.candidates > 1 && !candidates.is_empty() {
                active.extend(candidates.into_iter().map(|a| (job.clone(), Some(a))));
            } else {
                let attempt = self.attempt(&job.id, job.attempts)?;
                active.push((job, attempt));
            }
        }
        Ok(active)
    }

    fn jobs_where<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<JobRecord>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt
            .query_map(p, job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().collect()
    }

    /// Attempt `n` of a job.
    pub fn attempt(&self, id: &JobId, n: u32) -> Result<Option<AttemptRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ?1 AND n = ?2"),
                params![id.as_str(), n],
                attempt_from_row,
            )
            .optional()?)
    }

    /// All attempts of a job, first to last.
    pub fn attempts(&self, id: &JobId) -> Result<Vec<AttemptRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ?1 ORDER BY n"
        ))?;
        let rows = stmt
            .query_map([id.as_str()], attempt_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Artifacts of a job.
    pub fn artifacts(&self, id: &JobId) -> Result<Vec<ArtifactRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT attempt, kind, path FROM artifacts WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([id.as_str()], |r| {
                Ok(ArtifactRecord {
                    attempt: r.get(0)?,
                    kind: r.get(1)?,
                    path: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Terminal jobs that finished before `cutoff` (RFC 3339).
    pub fn ended_before(&self, cutoff: &str) -> Result<Vec<JobId>> {
        let mut stmt = self.conn.prepare(
            "SELECT id FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished_at < ?1 ORDER BY rowid",
        )?;
        let ids = stmt
            .query_map([cutoff], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.into_iter().map(JobId).collect())
    }
}

pub(super) const JOB_COLUMNS: &str = "id, name, spec, source, state, reason, exit_code, detail, cancel_requested, attempts, submitted_at, started_at, finished_at";
const ATTEMPT_COLUMNS: &str =
    "job_id, n, container, state, reason, exit_code, detail, started_at, finished_at";

pub(super) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Result<JobRecord>> {
    let id: String = r.get(0)?;
    let spec_json: String = r.get(2)?;
    let spec = match serde_json::from_str::<JobSpec>(&spec_json) {
        Ok(spec) => spec,
        Err(e) => {
            return Ok(Err(StoreError::Corrupt {
                id,
                message: e.to_string(),
            }))
        }
    };
    Ok(Ok(JobRecord {
        id: JobId(id),
        name: r.get(1)?,
        spec,
        source: r.get(3)?,
        state: parse_col(r, 4)?,
        reason: parse_opt_col(r, 5)?,
        exit_code: r.get(6)?,
        detail: r.get(7)?,
        cancel_requested: r.get::<_, i64>(8)? != 0,
        attempts: r.get(9)?,
        submitted_at: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
    }))
}

fn attempt_from_row(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        job_id: JobId(r.get(0)?),
        n: r.get(1)?,
        container: r.get(2)?,
        state: parse_col(r, 3)?,
        reason: parse_opt_col(r, 4)?,
        exit_code: r.get(5)?,
        detail: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
    })
}

pub(super) fn parse_col<T: std::str::FromStr<Err = String>>(
    r: &Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

pub(super) fn parse_opt_col<T: std::str::FromStr<Err = String>>(
    r: &Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| {
        s.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    })
    .transpose()
}
