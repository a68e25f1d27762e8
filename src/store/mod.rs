//! The SQLite store: the only code that issues SQL. Jobs, attempts, events (every state change,
//! timestamped), artifacts and the jobs-dir bookkeeping of the daemon.
//!
//! Many processes share one database (the scheduler, `submit`, `cancel`, `ps`...). WAL lets readers
//! run beside the writer; every write is one `BEGIN IMMEDIATE` transaction, so writers queue on
//! the busy timeout instead of failing with "database is locked", and a write is durable
//! (`synchronous=FULL`) when the call returns. State changes are conditional updates, so two
//! processes racing on one job (a cancel and a finish, say) cannot both win.
//!
//! This module opens the database and brings its schema up to date, and shares a store between
//! async tasks; reads of jobs, attempts and artifacts are in `jobs`, typed events in `events`,
//! and the writes that submit jobs and move them between states in `transitions`.

mod candidates;
mod checkpoints;
mod deliveries;
mod events;
mod jobs;
mod listing;
mod live;
mod messages;
pub mod private;
mod records;
mod schema;
mod stats;
mod transitions;
mod usage;

pub use candidates::{select, CandidateEvent, CandidateRow, Selection};
pub use checkpoints::{Checkpoint, Input};
pub use deliveries::{DeliveryKind, DeliveryRecord, DeliveryState};
pub use events::{
    AdoptedEvent, BudgetEvent, EventBody, EventRecord, ExportEvent, TurnEvent, VerifyEvent,
    WaitingEvent,
};
pub use listing::{JobFilter, JobListing, JobTally};
pub use live::TranscriptRecord;
pub use messages::{ControlRequests, ControlResult, MessageRecord, MessageStatus};
pub use records::*;
pub use stats::{Histogram, Stats};
pub use usage::{ModelUsage, Role, RoleUsage, Usage, MODEL_NAME_MAX};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// `tests.rs` takes these through `use super::*`.
#[cfg(test)]
use crate::state::{JobId, JobState, Outcome, Reason};

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
    /// The state dir is made private first (see [`private`]).
    pub fn open(state_dir: &Path) -> Result<Store> {
        private::secure_state_dir(state_dir).map_err(|source| StoreError::CreateDir {
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
        // Switching a new file to WAL needs an exclusive lock, and SQLite reports "busy" for it
        // at once instead of waiting: many processes opening a fresh state dir together retry.
        retry_busy(|| {
            // journal_mode=WAL persists in the file; setting it again is cheap.
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        })
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
    /// Shares `store` between tasks.
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

    /// Runs `f` with the store on this thread, for the paths that cannot await: the usage of an
    /// LLM call whose task is dropped (cut short) is written as it is dropped.
    pub fn call_now<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
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

/// Runs `f` again while SQLite answers "busy" without having waited, for up to the busy timeout.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                let pause = 5 + rand::random::<u64>() % 20;
                std::thread::sleep(Duration::from_millis(pause));
            }
            other => return other,
        }
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

#[cfg(test)]
mod tests;

/// Test helpers shared with other modules' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::stats::tests_support::{add_finished_jobs, backdate_attempt};
    pub(crate) use super::tests::{spec, submit_one};
}
