//! A person's controls of a running agent: messages (`runner send`), stored by any process and
//! delivered by the attempt's manager loop, which types each into Aider once and records it as
//! an event; and pause and resume (`runner pause`, `runner resume`), a flag on the job.

use super::jobs::{job_from_row, JOB_COLUMNS};
use super::{EventBody, Result, Store};
use crate::state::{now_rfc3339, JobId, JobState};
use rusqlite::params;

/// What became of a message ([`Store::send_message`]) or a pause or resume ([`Store::set_paused`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlResult {
    /// Stored for attempt `attempt`; its manager loop acts on it before its next decision.
    Stored { attempt: u32 },
    /// The job is not running (queued, starting or finished): nothing was stored.
    NotRunning(JobState),
    /// A plain `command:` job has no agent to talk to: nothing was stored.
    NotAgent,
}

/// What became of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Its attempt runs and has not typed it yet.
    Waiting,
    /// Typed into Aider.
    Delivered,
    /// Its attempt ended before typing it (recorded as a `message_dropped` event).
    Dropped,
}

/// A message to a job (`runner send`), as `runner show` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MessageRecord {
    pub seq: i64,
    /// The attempt it was sent to.
    pub attempt: u32,
    /// RFC 3339, UTC.
    pub sent_at: String,
    pub status: MessageStatus,
    pub delivered_at: Option<String>,
    /// As stored: redacted by the sender, and again by the attempt once delivered.
    pub text: String,
}

/// What the store asks of one job's current attempt, for the dispatcher to forward
/// ([`Store::control_requests`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlRequests {
    pub job: JobId,
    /// The job's current attempt.
    pub attempt: u32,
    /// `runner cancel` asked for the job to stop.
    pub cancel: bool,
    /// `runner pause` holds the job's manager.
    pub paused: bool,
    /// The attempt's messages not delivered yet, by `seq`, oldest first.
    pub messages: Vec<i64>,
}

impl Store {
    /// For every job that is starting or running: what its attempt is asked to do.
    pub fn control_requests(&self) -> Result<Vec<ControlRequests>> {
        // The current attempt of each active job; every active candidate of a best-of-N job.
        let mut stmt = self.conn.prepare(
            "SELECT j.id, a.n, j.cancel_requested, j.paused FROM jobs j JOIN attempts a ON a.job_id = j.id
             WHERE j.state IN ('starting','running')
               AND (a.n = j.attempts OR (a.candidate IS NOT NULL AND a.state IN ('starting','running')))
             ORDER BY j.id, a.n",
        )?;
        let mut jobs = stmt
            .query_map([], |r| {
                Ok(ControlRequests {
                    job: JobId(r.get(0)?),
                    attempt: r.get(1)?,
                    cancel: r.get(2)?,
                    paused: r.get(3)?,
                    messages: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT m.job_id, m.attempt, m.seq FROM jobs j JOIN messages m ON m.job_id = j.id
             WHERE j.state IN ('starting','running') AND m.delivered_at IS NULL ORDER BY m.seq",
        )?;
        let messages = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (job, attempt, seq) in messages {
            if let Some(j) = jobs
                .iter_mut()
                .find(|j| j.job.as_str() == job && j.attempt == attempt)
            {
                j.messages.push(seq);
            }
        }
        // A candidate whose round chose another is asked to stop, like a cancelled job.
        for j in &mut jobs {
            if !j.cancel && super::candidates::lost(&self.conn, &j.job, j.attempt)? {
                j.cancel = true;
            }
        }
        Ok(jobs)
    }

    /// Every message sent to job `id`, oldest first.
    pub fn messages(&self, id: &JobId) -> Result<Vec<MessageRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT m.seq, m.attempt, m.sent_at, m.delivered_at, a.finished_at IS NOT NULL, m.text
             FROM messages m LEFT JOIN attempts a ON a.job_id = m.job_id AND a.n = m.attempt
             WHERE m.job_id = ?1 ORDER BY m.seq",
        )?;
        let rows = stmt
            .query_map([id.as_str()], |r| {
                let delivered_at: Option<String> = r.get(3)?;
                let ended: bool = r.get(4)?;
                Ok(MessageRecord {
                    seq: r.get(0)?,
                    attempt: r.get(1)?,
                    sent_at: r.get(2)?,
                    status: match (&delivered_at, ended) {
                        (Some(_), _) => MessageStatus::Delivered,
                        (None, true) => MessageStatus::Dropped,
                        (None, false) => MessageStatus::Waiting,
                    },
                    delivered_at,
                    text: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Stores `text` for the current attempt of job `id`, only if that job is a running agent
    /// (checked in the same transaction as the insert).
    pub fn send_message(&mut self, id: &JobId, text: &str) -> Result<ControlResult> {
        self.write(|tx| {
            let job = match running_agent(tx, id)? {
                Ok(job) => job,
                Err(refused) => return Ok(refused),
            };
            tx.execute(
                "INSERT INTO messages (job_id, attempt, text, sent_at) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_str(), job.attempts, text, now_rfc3339()],
            )?;
            Ok(ControlResult::Stored {
                attempt: job.attempts,
            })
        })
    }

    /// Pauses (or resumes) the manager of running agent job `id`: the attempt's manager loop
    /// finishes the current turn, then issues none while paused.
    pub fn set_paused(&mut self, id: &JobId, paused: bool) -> Result<ControlResult> {
        self.write(|tx| {
            let job = match running_agent(tx, id)? {
                Ok(job) => job,
                Err(refused) => return Ok(refused),
            };
            tx.execute(
                "UPDATE jobs SET paused = ?1 WHERE id = ?2",
                params![paused, id.as_str()],
            )?;
            Ok(ControlResult::Stored {
                attempt: job.attempts,
            })
        })
    }

    /// Whether `runner pause` holds job `id`'s manager.
    pub fn paused(&self, id: &JobId) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT paused FROM jobs WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )?)
    }

    /// Records that attempt `n`'s manager loop stopped issuing turns (`paused`) or started again.
    pub fn add_pause_event(&mut self, id: &JobId, n: u32, paused: bool) -> Result<()> {
        let body = if paused {
            EventBody::Paused
        } else {
            EventBody::Resumed
        };
        self.add_event(id, n, &body)
    }

    /// Messages of attempt `n` not delivered yet: (seq, text), oldest first.
    pub fn undelivered_messages(&self, id: &JobId, n: u32) -> Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, text FROM messages WHERE job_id = ?1 AND attempt = ?2 AND delivered_at IS NULL ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![id.as_str(), n], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Marks message `seq` delivered, keeping `text` (the attempt's redaction of it), records it
    /// as an event of kind `message`, and records where the attempt's session stands with it
    /// typed (`checkpoint`), all in one transaction: a message is either typed by this attempt
    /// (once, even across a restart) or still waiting. False if it was delivered already
    /// (nothing is written then).
    pub fn deliver_message(
        &mut self,
        id: &JobId,
        n: u32,
        seq: i64,
        text: &str,
        checkpoint: &super::Checkpoint,
    ) -> Result<bool> {
        self.write(|tx| {
            let now = now_rfc3339();
            let changed = tx.execute(
                "UPDATE messages SET delivered_at = ?1, text = ?2 WHERE seq = ?3 AND job_id = ?4 AND delivered_at IS NULL",
                params![now, text, seq, id.as_str()],
            )?;
            if changed != 1 {
                return Ok(false);
            }
            let data = serde_json::json!({ "text": text }).to_string();
            tx.execute(
                "INSERT INTO events (job_id, attempt, at, state, kind, data) VALUES (?1, ?2, ?3, 'running', 'message', ?4)",
                params![id.as_str(), n, now, data],
            )?;
            super::checkpoints::write_checkpoint(tx, id, n, checkpoint)?;
            Ok(true)
        })
    }
}

/// Job `id` if it is a running agent, else why a control request is refused.
fn running_agent(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
) -> Result<std::result::Result<crate::store::JobRecord, ControlResult>> {
    let job = tx.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        [id.as_str()],
        job_from_row,
    )??;
    Ok(if !job.spec.is_agent() {
        Err(ControlResult::NotAgent)
    } else if job.state != JobState::Running {
        Err(ControlResult::NotRunning(job.state))
    } else {
        Ok(job)
    })
}

/// Records each message of attempt `n` still waiting as dropped (an event of kind
/// `message_dropped`, at `at`): the attempt is ending, in the same transaction, and never types
/// them. A message is dropped when it is undelivered and its attempt has ended, so the rows stay
/// as they are.
pub(super) fn record_dropped(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
    n: u32,
    at: &str,
) -> Result<usize> {
    let mut stmt = tx.prepare(
        "SELECT text FROM messages WHERE job_id = ?1 AND attempt = ?2 AND delivered_at IS NULL ORDER BY seq",
    )?;
    let texts = stmt
        .query_map(params![id.as_str(), n], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for text in &texts {
        let data = serde_json::json!({ "text": text }).to_string();
        tx.execute(
            "INSERT INTO events (job_id, attempt, at, state, kind, data) VALUES (?1, ?2, ?3, 'running', 'message_dropped', ?4)",
            params![id.as_str(), n, at, data],
        )?;
    }
    Ok(texts.len())
}
