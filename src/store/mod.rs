//! The SQLite store: the only code that issues SQL. Jobs, attempts, events (every state change,
//! timestamped), artifacts and the jobs-dir bookkeeping of the daemon.
//!
//! Many processes share one database (the scheduler, `submit`, `cancel`, `ps`...). WAL lets readers
//! run beside the writer; every write is one `BEGIN IMMEDIATE` transaction, so writers queue on
//! the busy timeout instead of failing with "database is locked", and a write is durable
//! (`synchronous=FULL`) when the call returns. State changes are conditional updates, so two
//! processes racing on one job (a cancel and a finish, say) cannot both win.

mod records;
mod schema;
mod usage;

pub use records::*;
pub use usage::{Role, RoleUsage, Usage};

use crate::job::JobSpec;
use crate::state::{now_rfc3339, JobId, JobState, Outcome, Reason};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// File name of the database inside the state dir.
pub const DB_FILE: &str = "runner.db";

/// How long a writer waits for another before giving up (far beyond any real transaction).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source} (check that the state dir is writable, or pass --state-dir)")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the state dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state database {path} has schema version {found}, newer than this runner knows ({known}): upgrade runner")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("no job matches {0:?} (see `runner ps --all`)")]
    NotFound(String),
    #[error("{query:?} matches several jobs ({candidates}); give more of the id")]
    Ambiguous { query: String, candidates: String },
    #[error("stored job {id} is unreadable: {message}")]
    Corrupt { id: String, message: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection to one state dir's database.
pub struct Store {
    conn: Connection,
    /// Random id of this state dir, used in Docker labels and container names.
    state_id: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("state_id", &self.state_id)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // journal_mode=WAL persists in the file; setting it again is cheap.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn, &path)?;
        let state_id = ensure_state_id(&mut conn)?;
        Ok(Store { conn, state_id })
    }

    /// This state dir's id (12 hex digits).
    pub fn state_id(&self) -> &str {
        &self.state_id
    }

    fn write<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

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

    /// Jobs in `starting` or `running` with their latest attempt (what a scheduler must own).
    pub fn active(&self) -> Result<Vec<(JobRecord, Option<AttemptRecord>)>> {
        let jobs = self.jobs_where(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('starting','running') ORDER BY rowid"),
            [],
        )?;
        jobs.into_iter()
            .map(|job| {
                let attempt = self.attempt(&job.id, job.attempts)?;
                Ok((job, attempt))
            })
            .collect()
    }

    /// Active jobs that `runner cancel` asked to stop.
    pub fn cancel_requests(&self) -> Result<Vec<JobId>> {
        let mut stmt = self.conn.prepare(
            "SELECT id FROM jobs WHERE cancel_requested = 1 AND state IN ('starting','running')",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.into_iter().map(JobId).collect())
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

    /// Every recorded state change of a job, in order.
    pub fn events(&self, id: &JobId) -> Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, job_id, attempt, at, state, reason, detail FROM events WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([id.as_str()], |r| {
                Ok(EventRecord {
                    seq: r.get(0)?,
                    job_id: JobId(r.get(1)?),
                    attempt: r.get(2)?,
                    at: r.get(3)?,
                    state: parse_col(r, 4)?,
                    reason: parse_opt_col(r, 5)?,
                    detail: r.get(6)?,
                })
            })?
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
        container_name: impl FnOnce(u32) -> String,
    ) -> Result<Option<AttemptRecord>> {
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
            let n = attempts + 1;
            let now = now_rfc3339();
            let container = container_name(n);
            tx.execute(
                "INSERT INTO attempts (job_id, n, container, state, started_at) VALUES (?1, ?2, ?3, 'starting', ?4)",
                params![id.as_str(), n, container, now],
            )?;
            tx.execute(
                "UPDATE jobs SET state = 'starting', attempts = ?2, started_at = coalesce(started_at, ?3) WHERE id = ?1",
                params![id.as_str(), n, now],
            )?;
            add_event(tx, id, Some(n), &now, JobState::Starting, None, Some(&container))?;
            Ok(Some(AttemptRecord {
                job_id: id.clone(),
                n,
                container,
                state: JobState::Starting,
                reason: None,
                exit_code: None,
                detail: None,
                started_at: now,
                finished_at: None,
            }))
        })
    }

    /// Records that attempt `n`'s container is running. False when the job is no longer active.
    pub fn mark_running(&mut self, id: &JobId, n: u32) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE jobs SET state = 'running' WHERE id = ?1 AND attempts = ?2 AND state IN ('starting','running')",
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
            if state.is_terminal() || attempts != n {
                return Ok(FinishResult::AlreadyFinished);
            }
            let now = now_rfc3339();
            let detail = match outcome {
                Outcome::Failed { detail, .. } => Some(detail.as_str()),
                Outcome::Succeeded => None,
                Outcome::Cancelled => Some("cancelled"),
            };
            let reason = outcome.reason().map(|r| r.as_str());
            tx.execute(
                "UPDATE attempts SET state = ?3, reason = ?4, exit_code = ?5, detail = ?6, finished_at = ?7 WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n, outcome.state().as_str(), reason, outcome.exit_code(), detail, now],
            )?;
            let retry = outcome.reason().is_some_and(Reason::is_retryable) && n < max_attempts;
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

    /// Drops a job's artifact rows (their files are gone).
    pub fn forget_artifacts(&mut self, id: &JobId) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM artifacts WHERE job_id = ?1", [id.as_str()])?;
            Ok(())
        })
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// A store shared by async tasks: each call runs on the blocking pool, one at a time.
#[derive(Clone, Debug)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> Self {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    /// Runs `f` with the store on the blocking pool (SQLite calls may wait on the busy timeout).
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Store) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .expect("store task panicked")
    }

    /// The state dir id (cheap; no SQL).
    pub fn state_id(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .state_id
            .clone()
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = schema::MIGRATIONS.len() as i64;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == known {
        return Ok(());
    }
    // Re-read the version inside the write lock: another process may have migrated meanwhile.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

fn ensure_state_id(conn: &mut Connection) -> Result<String> {
    let read = |c: &Connection| -> rusqlite::Result<Option<String>> {
        c.query_row("SELECT value FROM meta WHERE key = 'state_id'", [], |r| {
            r.get(0)
        })
        .optional()
    };
    if let Some(id) = read(conn)? {
        return Ok(id);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let fresh = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('state_id', ?1)",
        [&fresh],
    )?;
    let id = read(&tx)?.expect("state_id was just inserted");
    tx.commit()?;
    Ok(id)
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

fn add_event(
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

const JOB_COLUMNS: &str = "id, name, spec, source, state, reason, exit_code, detail, cancel_requested, attempts, submitted_at, started_at, finished_at";
const ATTEMPT_COLUMNS: &str =
    "job_id, n, container, state, reason, exit_code, detail, started_at, finished_at";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Result<JobRecord>> {
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

fn parse_col<T: std::str::FromStr<Err = String>>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

fn parse_opt_col<T: std::str::FromStr<Err = String>>(
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

#[cfg(test)]
mod tests;

/// Test helpers shared with other modules' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::{spec, submit_one};
}
