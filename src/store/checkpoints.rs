//! Where an agent attempt stands in its Aider session (migration 9): written by the manager loop
//! before it types anything into Aider, read by a restarted scheduler that adopts the attempt.

use super::{Result, Store};
use crate::job::ManagerStep;
use crate::state::JobId;
use rusqlite::{params, OptionalExtension};

/// An agent attempt's place in its session. Offsets count bytes of Aider's output (stdout and
/// stderr as the engine stores them) from the container's start.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The manager's turn whose step was typed last (0 before the first).
    pub turn: u32,
    /// That turn's step: recorded as a turn event when the turn ends.
    pub step: Option<ManagerStep>,
    /// Where the output the manager has not seen yet begins (its next request shows it).
    pub unseen_from: u64,
    /// The offsets at which inputs were typed since `unseen_from`, in order: Aider answers each
    /// with output ending in its prompt.
    pub inputs: Vec<u64>,
    /// The last input, typed (or about to be) at the last of `inputs`.
    pub last: Option<Input>,
    /// The operator's messages (redacted) typed since the manager's last decision.
    pub operator: Vec<String>,
}

/// An input the runner types into Aider.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// The step of [`Checkpoint::step`].
    Step,
    /// The operator's message of this sequence number (`runner send`).
    Message(i64),
    /// The task itself (`manager.mode: none`).
    Task,
}

/// Records `checkpoint` for attempt `n` inside a transaction (replacing what was recorded).
pub(super) fn write_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
    n: u32,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let data = serde_json::to_string(checkpoint).expect("a checkpoint serializes");
    tx.execute(
        "INSERT INTO agent_checkpoints (job_id, attempt, data) VALUES (?1, ?2, ?3)
         ON CONFLICT (job_id, attempt) DO UPDATE SET data = excluded.data",
        params![id.as_str(), n, data],
    )?;
    Ok(())
}

impl Store {
    /// Records where attempt `n` stands (replacing what was recorded).
    pub fn save_checkpoint(&mut self, id: &JobId, n: u32, checkpoint: &Checkpoint) -> Result<()> {
        self.write(|tx| write_checkpoint(tx, id, n, checkpoint))
    }

    /// Where attempt `n` stands; `None` before its first input (or for a checkpoint written by
    /// another version that this one cannot read).
    pub fn checkpoint(&self, id: &JobId, n: u32) -> Result<Option<Checkpoint>> {
        let data: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM agent_checkpoints WHERE job_id = ?1 AND attempt = ?2",
                params![id.as_str(), n],
                |r| r.get(0),
            )
            .optional()?;
        Ok(data.and_then(|d| serde_json::from_str(&d).ok()))
    }

    /// The text of the operator's message `seq` of job `id` (redacted once delivered).
    pub fn message_text(&self, id: &JobId, seq: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT text FROM messages WHERE job_id = ?1 AND seq = ?2",
                params![id.as_str(), seq],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// How many bytes of attempt `n`'s output its stored transcript holds.
    pub fn transcript_offset(&self, id: &JobId, n: u32) -> Result<u64> {
        let offset: Option<i64> = self
            .conn
            .query_row(
                "SELECT transcript_offset FROM attempts WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n],
                |r| r.get(0),
            )
            .optional()?;
        Ok(offset.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ManagerAction;

    #[test]
    fn a_checkpoint_round_trips_and_a_message_is_delivered_with_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests::running_agent(&mut store, "cp");
        assert_eq!(store.checkpoint(&id, 1).unwrap(), None);
        let cp = Checkpoint {
            turn: 2,
            step: Some(ManagerStep {
                action: ManagerAction::Run,
                argument: "make test".into(),
                progress: "p".into(),
                thought: "t".into(),
            }),
            unseen_from: 120,
            inputs: vec![120],
            last: Some(Input::Step),
            operator: vec![],
        };
        store.save_checkpoint(&id, 1, &cp).unwrap();
        assert_eq!(store.checkpoint(&id, 1).unwrap(), Some(cp.clone()));
        store.send_message(&id, "also fix the README").unwrap();
        let seq = store.undelivered_messages(&id, 1).unwrap()[0].0;
        let mut next = cp.clone();
        next.inputs.push(300);
        next.last = Some(Input::Message(seq));
        next.operator.push("also fix the README".into());
        assert!(store
            .deliver_message(&id, 1, seq, "also fix the README", &next)
            .unwrap());
        assert_eq!(store.checkpoint(&id, 1).unwrap(), Some(next.clone()));
        // Delivered once: a second delivery writes nothing, not even the checkpoint.
        assert!(!store
            .deliver_message(&id, 1, seq, "also fix the README", &cp)
            .unwrap());
        assert_eq!(store.checkpoint(&id, 1).unwrap(), Some(next));
        assert!(store.undelivered_messages(&id, 1).unwrap().is_empty());
    }
}
