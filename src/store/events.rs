//! Typed events: what happened to a job, in order, as every front end reads it (`runner events`,
//! `runner show`, `runner run`'s progress). A row of `events` has the columns every event shares
//! (seq, job, attempt, time), a `kind`, and for a state change its state, reason and detail
//! columns; any other kind keeps its fields as JSON in `data`.
//!
//! The JSON shape of an event (`runner events --json`) is [`EventRecord`] serialized: the shared
//! keys `seq`, `job`, `attempt`, `at`, then `type` (the kind) and the kind's own fields. It is
//! stable: fields may be added, none renamed or removed.

use super::jobs::{parse_col, parse_opt_col};
use super::{Result, Store};
use crate::state::{JobId, JobState, Reason};
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One recorded event of a job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Grows with every event of every job: "the events after seq N" is how followers poll.
    pub seq: i64,
    #[serde(rename = "job")]
    pub job_id: JobId,
    /// `None` only for `queued` (before any attempt, or when queued again).
    pub attempt: Option<u32>,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, with the data of its kind (`type` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The job (or its attempt) moved to `state`.
    State {
        state: JobState,
        reason: Option<Reason>,
        /// The outcome in words ("exited with code 3"), or why it was queued again.
        detail: Option<String>,
    },
    /// An agent's manager turn ended.
    Turn(TurnEvent),
    /// A person's message (`runner send`), as typed into Aider (redacted).
    Message { text: String },
    /// A person's message that was still waiting when its attempt ended: never typed (its text
    /// as `runner send` stored it, redacted with the secrets the sender could see).
    MessageDropped { text: String },
    /// `runner pause` took effect: the manager issues no turns.
    Paused,
    /// `runner resume` took effect: the manager decides again.
    Resumed,
    /// An agent's `verify` command ran.
    Verify(VerifyEvent),
    /// A result left the sandbox (a patch or bundle written) or the host (a branch pushed, a
    /// pull request opened).
    Export(ExportEvent),
    /// The LLM gateway refused a call because the job's budget is spent: recorded once per
    /// attempt, at the first refusal.
    Budget(BudgetEvent),
    /// A scheduler that started again took over the attempt's running container.
    Adopted(AdoptedEvent),
    /// The LLM provider limited the rate (429, or 503 with `Retry-After`): the gateway waits
    /// until `until`, then sends the call again.
    Waiting(WaitingEvent),
    /// A candidate of a best-of-N job ended: how, its change's size, turns, tokens and cost.
    Candidate(super::CandidateEvent),
}

impl EventBody {
    /// The `kind` column (and the JSON `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::State { .. } => "state",
            EventBody::Turn(_) => "turn",
            EventBody::Message { .. } => "message",
            EventBody::MessageDropped { .. } => "message_dropped",
            EventBody::Paused => "paused",
            EventBody::Resumed => "resumed",
            EventBody::Verify(_) => "verify",
            EventBody::Export(_) => "export",
            EventBody::Budget(_) => "budget",
            EventBody::Adopted(_) => "adopted",
            EventBody::Waiting(_) => "waiting",
            EventBody::Candidate(_) => "candidate",
        }
    }
}

/// One turn of an agent's manager loop, recorded when it has ended. Text fields are stored as
/// the attempt's redactor left them. The fields after `ended` came later: a turn recorded
/// before them reads back with zeros and an empty list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnEvent {
    pub turn: u32,
    pub max_turns: u32,
    /// `instruct`, `run`, `test`, `add`, `drop`, `undo`, `finish`, `fail`.
    pub action: String,
    pub argument: String,
    /// The manager's one-line account of where the work stands.
    pub progress: String,
    /// The manager's reasoning for this step.
    pub thought: String,
    /// How the turn ended, in a few words (what Aider did, verify's verdict...).
    pub ended: String,
    /// LLM calls the attempt made during the turn (the manager's and Aider's), and their
    /// tokens and cost, as metered by the gateway.
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub cost_usd: f64,
    /// Files Aider applied edits to during the turn, each once, in order.
    #[serde(default)]
    pub edits: Vec<String>,
    /// Commits Aider made during the turn.
    #[serde(default)]
    pub commits: u32,
    /// Files that differ from the commit the work started from, after the turn.
    #[serde(default)]
    pub files_changed: u32,
}

impl TurnEvent {
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One run of an agent job's `verify` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyEvent {
    /// The manager turn that ran it (its `finish`).
    pub turn: u32,
    /// True when it exited with code 0.
    pub passed: bool,
    pub exit_code: i64,
    pub duration_ms: u64,
}

/// What was exported, and where it is (`what` in JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum ExportEvent {
    /// The result as `git format-patch` output, written on the host.
    Patch { path: String },
    /// The result as a git bundle (`base..tip`), written on the host.
    Bundle { path: String },
    /// The result pushed to the job's repository as `branch` at `commit`.
    Branch { branch: String, commit: String },
    /// The pull request opened (or found open) from `branch`.
    PullRequest { branch: String, url: String },
}

/// The gateway refused an LLM call: the job's budget is spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetEvent {
    /// Whose call was refused (`agent` or `manager`).
    pub role: super::Role,
    /// The job's tokens and cost so far, over all its attempts.
    pub used_tokens: u64,
    pub used_usd: f64,
    /// The job's `budget`, as set.
    pub limit_tokens: Option<u64>,
    pub limit_usd: Option<f64>,
}

/// The gateway waits for the provider before sending a call again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingEvent {
    /// Whose call waits (`agent` or `manager`).
    pub role: super::Role,
    /// The provider's answer: 429, or 503 with `Retry-After`.
    pub status: u16,
    /// When the call is sent again (RFC 3339, UTC).
    pub until: String,
    /// Which sending this wait precedes: 1 for the first time the call is sent again.
    pub retry: u32,
}

/// A scheduler adopted the attempt's running container after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedEvent {
    pub container: String,
    /// The manager turn the attempt resumes at.
    pub turn: u32,
}

impl Store {
    /// Records an event of attempt `n` of job `id`, now. (The state changes of jobs and attempts
    /// are recorded by the transitions themselves, in the transaction that makes them.)
    pub fn add_event(&mut self, id: &JobId, n: u32, body: &EventBody) -> Result<()> {
        insert_event(&self.conn, id, n, body)
    }

    /// Records an ended turn of attempt `n` (an event of kind `turn`).
    pub fn add_turn_event(&mut self, id: &JobId, n: u32, turn: &TurnEvent) -> Result<()> {
        self.add_event(id, n, &EventBody::Turn(turn.clone()))
    }

    /// Records that a scheduler adopted attempt `n`'s running container (an event of kind
    /// `adopted`).
    pub fn add_adopted_event(&mut self, id: &JobId, n: u32, adopted: &AdoptedEvent) -> Result<()> {
        self.add_event(id, n, &EventBody::Adopted(adopted.clone()))
    }

    /// Every recorded event of a job, in order.
    pub fn events(&self, id: &JobId) -> Result<Vec<EventRecord>> {
        self.events_after(id, 0)
    }

    /// The newest event's `seq` (0 when there is none): a follower that starts here sees only
    /// what happens from now on.
    pub fn last_event_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// At most `limit` events of any job with a `seq` above `after`, in order: what a follower
    /// of many jobs has not seen (it asks again from the last one while it gets `limit`).
    pub fn events_since(&self, after: i64, limit: usize) -> Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, job_id, attempt, at, state, reason, detail, kind, data FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after, limit], event_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The events of job `id` with a `seq` above `after`, in order: what a follower has not seen.
    /// A row this runner cannot decode (a kind a newer runner wrote) is left out.
    pub fn events_after(&self, id: &JobId, after: i64) -> Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, job_id, attempt, at, state, reason, detail, kind, data FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![id.as_str(), after], event_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// Inserts an event of attempt `n` (not a state change), now; in a transaction when `conn` is
/// one, so that an event is recorded with what it reports.
pub(super) fn insert_event(
    conn: &rusqlite::Connection,
    id: &JobId,
    n: u32,
    body: &EventBody,
) -> Result<()> {
    let now = crate::state::now_rfc3339();
    if let EventBody::State {
        state,
        reason,
        detail,
    } = body
    {
        conn.execute(
            "INSERT INTO events (job_id, attempt, at, state, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id.as_str(), n, now, state.as_str(), reason.map(|r| r.as_str()), detail],
        )?;
        return Ok(());
    }
    let (kind, data) = kind_and_data(body);
    conn.execute(
        "INSERT INTO events (job_id, attempt, at, state, kind, data) VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
        params![id.as_str(), n, now, kind, data],
    )?;
    Ok(())
}

/// The `kind` column and the `data` JSON (the body's fields but `type`; `None` when it has
/// none) of a body that is not a state change.
fn kind_and_data(body: &EventBody) -> (&'static str, Option<String>) {
    let data = match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.remove("type");
            (!fields.is_empty()).then(|| serde_json::Value::Object(fields).to_string())
        }
        _ => None,
    };
    (body.kind(), data)
}

/// Decodes one row of `events`; `None` for a kind or data this runner does not know.
fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<EventRecord>> {
    let kind: String = r.get(7)?;
    let body = if kind == "state" {
        EventBody::State {
            state: parse_col(r, 4)?,
            reason: parse_opt_col(r, 5)?,
            detail: r.get(6)?,
        }
    } else {
        let data: Option<String> = r.get(8)?;
        let mut fields = match data.as_deref().map(serde_json::from_str) {
            Some(Ok(serde_json::Value::Object(fields))) => fields,
            None => serde_json::Map::new(),
            Some(_) => return Ok(None),
        };
        fields.insert("type".into(), serde_json::Value::String(kind));
        match serde_json::from_value(serde_json::Value::Object(fields)) {
            Ok(body) => body,
            Err(_) => return Ok(None),
        }
    };
    Ok(Some(EventRecord {
        seq: r.get(0)?,
        job_id: JobId(r.get(1)?),
        attempt: r.get(2)?,
        at: r.get(3)?,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests_support::submit_one;

    /// The bodies a running attempt records, each read back as written.
    fn round_trip(body: EventBody) -> EventRecord {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "a");
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        store.add_event(&id, 1, &body).unwrap();
        let mut events = store.events(&id).unwrap();
        let last = events.pop().unwrap();
        assert_eq!((last.attempt, &last.body), (Some(1), &body));
        last
    }

    #[test]
    fn a_turn_event_reads_back_as_written() {
        round_trip(EventBody::Turn(TurnEvent {
            turn: 2,
            max_turns: 6,
            action: "instruct".into(),
            argument: "add greet()".into(),
            progress: "writing greet".into(),
            thought: "the test needs it".into(),
            ended: "edited greet.py (1 commit)".into(),
            requests: 3,
            prompt_tokens: 2400,
            completion_tokens: 60,
            cost_usd: 0.000912,
            edits: vec!["greet.py".into()],
            commits: 1,
            files_changed: 2,
        }));
    }

    #[test]
    fn a_turn_recorded_before_its_usage_fields_reads_back_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "a");
        let old = r#"{"turn":1,"max_turns":5,"action":"instruct","argument":"a","progress":"p","thought":"t","ended":"no edits"}"#;
        store
            .conn
            .execute(
                "INSERT INTO events (job_id, attempt, at, state, kind, data) VALUES (?1, 1, 'now', 'running', 'turn', ?2)",
                params![id.as_str(), old],
            )
            .unwrap();
        let events = store.events(&id).unwrap();
        let EventBody::Turn(turn) = &events[1].body else {
            panic!("{events:?}")
        };
        assert_eq!((turn.turn, turn.ended.as_str()), (1, "no edits"));
        assert_eq!((turn.tokens(), turn.cost_usd, turn.commits), (0, 0.0, 0));
        assert!(turn.edits.is_empty());
    }

    #[test]
    fn verify_events_read_back_passed_or_failed() {
        for (passed, exit_code) in [(true, 0), (false, 3)] {
            round_trip(EventBody::Verify(VerifyEvent {
                turn: 4,
                passed,
                exit_code,
                duration_ms: 1234,
            }));
        }
    }

    #[test]
    fn export_events_read_back_for_each_kind_of_result() {
        for export in [
            ExportEvent::Patch {
                path: "/s/artifacts/j/1/result.patch".into(),
            },
            ExportEvent::Bundle {
                path: "/s/artifacts/j/1/result.bundle".into(),
            },
            ExportEvent::Branch {
                branch: "runner/greet".into(),
                commit: "c0ffee".into(),
            },
            ExportEvent::PullRequest {
                branch: "runner/greet".into(),
                url: "https://github.com/o/r/pull/7".into(),
            },
        ] {
            let event = round_trip(EventBody::Export(export));
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], "export", "{json}");
            assert!(json["what"].is_string(), "{json}");
        }
    }

    #[test]
    fn a_budget_event_reads_back_with_the_role_usage_and_limits() {
        let event = round_trip(EventBody::Budget(BudgetEvent {
            role: super::super::Role::Agent,
            used_tokens: 180,
            used_usd: 0.0021,
            limit_tokens: Some(100),
            limit_usd: None,
        }));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["type"], &json["role"], &json["limit_usd"]),
            (
                &serde_json::json!("budget"),
                &serde_json::json!("agent"),
                &serde_json::Value::Null
            )
        );
    }

    #[test]
    fn a_waiting_event_reads_back_with_its_status_and_time() {
        let event = round_trip(EventBody::Waiting(WaitingEvent {
            role: super::super::Role::Manager,
            status: 429,
            until: "2026-12-01T12:00:02.000Z".into(),
            retry: 1,
        }));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["type"], &json["status"], &json["attempt"]),
            (
                &serde_json::json!("waiting"),
                &serde_json::json!(429),
                &serde_json::json!(1)
            )
        );
    }

    #[test]
    fn an_adopted_event_reads_back_with_its_container_and_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "a");
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        let adopted = AdoptedEvent {
            container: "c-1".into(),
            turn: 3,
        };
        store.add_adopted_event(&id, 1, &adopted).unwrap();
        let last = store.events(&id).unwrap().pop().unwrap();
        assert_eq!(
            (last.attempt, last.body),
            (Some(1), EventBody::Adopted(adopted))
        );
    }

    #[test]
    fn a_state_change_added_as_an_event_reads_back_from_its_columns() {
        round_trip(EventBody::State {
            state: JobState::Failed,
            reason: Some(Reason::Budget),
            detail: Some("its LLM budget is spent".into()),
        });
    }

    #[test]
    fn pause_and_resume_events_read_back_with_no_data() {
        round_trip(EventBody::Paused);
        round_trip(EventBody::Resumed);
    }

    #[test]
    fn a_kind_this_runner_does_not_know_is_left_out_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "a");
        store
            .conn
            .execute(
                "INSERT INTO events (job_id, attempt, at, state, kind, data) VALUES (?1, 1, 'now', 'running', 'from_the_future', '{}')",
                [id.as_str()],
            )
            .unwrap();
        store.add_event(&id, 1, &EventBody::Paused).unwrap();
        let kinds: Vec<_> = store
            .events(&id)
            .unwrap()
            .iter()
            .map(|e| e.body.kind())
            .collect();
        assert_eq!(kinds, ["state", "paused"]);
    }

    #[test]
    fn events_since_a_seq_are_those_of_every_job_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let a = submit_one(&mut store, "a");
        let from = store.last_event_seq().unwrap();
        let b = submit_one(&mut store, "b");
        store.claim(&a, |n| format!("a-{n}")).unwrap().unwrap();
        store.add_event(&a, 1, &EventBody::Paused).unwrap();
        let seen: Vec<_> = store
            .events_since(from, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.job_id, e.body.kind()))
            .collect();
        assert_eq!(
            seen,
            [
                (b.clone(), "state"),
                (a.clone(), "state"),
                (a.clone(), "paused")
            ]
        );
        let first_two = store.events_since(from, 2).unwrap();
        assert_eq!(first_two.len(), 2);
        let rest = store.events_since(first_two[1].seq, 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(store.last_event_seq().unwrap(), rest[0].seq);
    }

    #[test]
    fn events_after_a_seq_are_only_the_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "a");
        let first = store.events(&id).unwrap()[0].seq;
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        let newer: Vec<_> = store
            .events_after(&id, first)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(
            newer,
            [EventBody::State {
                state: JobState::Starting,
                reason: None,
                detail: Some("c-1".into())
            }]
        );
    }
}
