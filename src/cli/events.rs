//! `runner events JOB [-f] [--json]`: what happened to a job, in order, from the store: every
//! state change of every attempt, with its reason and detail, each ended turn of an agent's
//! manager loop and each message a person sent it (`runner send`). `-f` follows until the job ends;
//! `--json` prints one JSON object a line (the shape is in the README, "Events"). On a terminal
//! the detail is shown through [`super::terminal::one_line`]; JSON is as stored.

use super::exit::{CmdResult, SUCCESS};
use crate::store::{EventBody, EventRecord};
use std::path::Path;
use std::time::Duration;

/// How often `-f` looks for new events.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(state_dir: &Path, query: &str, follow: bool, json: bool) -> CmdResult {
    let store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    let mut last = 0;
    loop {
        // Read the state first: events recorded before a final state are then all seen below.
        let done = store.job(&id)?.state.is_terminal();
        for event in store.events_after(&id, last)? {
            last = event.seq;
            println!(
                "{}",
                if json {
                    as_json(&event)
                } else {
                    as_line(&event)
                }
            );
        }
        if !follow || done {
            return Ok(SUCCESS);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One event as a JSON line: [`EventRecord`] serialized, `{"seq", "job", "attempt", "at",
/// "type", ...the type's fields}` (documented in the README, "Events").
fn as_json(e: &EventRecord) -> String {
    serde_json::to_string(e).expect("an event serializes")
}

/// One event for a person: time, attempt, then what happened on one line (a state change with
/// its reason and detail; a turn with its number, action, progress and how it ended...).
fn as_line(e: &EventRecord) -> String {
    let attempt = e
        .attempt
        .map(|n| format!("attempt {n}"))
        .unwrap_or_else(|| "-".into());
    let what = match &e.body {
        EventBody::State {
            state,
            reason,
            detail,
        } => {
            let mut line = format!("{state:<9}");
            if let Some(reason) = reason {
                line.push_str(&format!(" {reason}"));
            }
            if let Some(detail) = detail {
                line.push_str(&format!(": {}", super::terminal::one_line(detail)));
            }
            line
        }
        EventBody::Turn(turn) => super::show::turn_line(turn),
        EventBody::Message { text } => format!(
            "message from the operator: {}",
            super::terminal::one_line(text)
        ),
        EventBody::Paused => "paused: the manager issues no turns until `runner resume`; `runner send` talks to Aider".into(),
        EventBody::Resumed => "resumed: the manager decides again".into(),
    };
    format!("{}  {:<9}  {what}", e.at, attempt)
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{JobId, JobState, Reason};
    use serde_json::json;

    fn event(detail: Option<&str>) -> EventRecord {
        EventRecord {
            seq: 7,
            job_id: JobId("01JOB".into()),
            attempt: Some(2),
            at: "2026-12-01T04:00:00.000Z".into(),
            body: EventBody::State {
                state: JobState::Failed,
                reason: Some(Reason::ExitCode),
                detail: detail.map(str::to_string),
            },
        }
    }

    #[test]
    fn a_message_event_is_one_json_object_and_one_safe_line() {
        let mut e = event(None);
        e.body = EventBody::Message {
            text: "use tabs\x1b[2J".into(),
        };
        let value: serde_json::Value = serde_json::from_str(&as_json(&e)).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["text"], "use tabs\x1b[2J");
        assert!(value.get("state").is_none(), "{value}");
        let line = as_line(&e);
        assert!(
            line.ends_with("attempt 2  message from the operator: use tabs\\x1b[2J"),
            "{line}"
        );
    }

    #[test]
    fn a_turn_event_is_one_json_object_and_one_safe_line() {
        let mut e = event(None);
        e.body = EventBody::Turn(crate::store::TurnEvent {
            turn: 2,
            max_turns: 6,
            action: "instruct".into(),
            argument: "add greet()".into(),
            progress: "writing greet\x1b[2J".into(),
            thought: "the test needs it".into(),
            ended: "edited greet.py".into(),
        });
        let value: serde_json::Value = serde_json::from_str(&as_json(&e)).unwrap();
        assert_eq!(value["type"], "turn");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["turn"], 2);
        assert_eq!(value["ended"], "edited greet.py");
        assert!(value.get("state").is_none(), "{value}");
        let line = as_line(&e);
        assert!(!line.contains('\x1b'), "{line:?}");
        assert!(
            line.contains(
                "turn 2/6 instruct: writing greet\\x1b[2J (thought: the test needs it) -> edited greet.py"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_json_event_has_the_documented_keys() {
        let value: serde_json::Value =
            serde_json::from_str(&as_json(&event(Some("exited with code 3")))).unwrap();
        assert_eq!(
            value,
            json!({"seq": 7, "job": "01JOB", "attempt": 2, "at": "2026-12-01T04:00:00.000Z",
                   "type": "state", "state": "failed", "reason": "exit_code",
                   "detail": "exited with code 3"})
        );
    }

    #[test]
    fn a_line_shows_control_characters_in_the_detail_visibly() {
        let line = as_line(&event(Some("\x1b]0;title\x07\rother-job succeeded")));
        assert!(!line.contains('\x1b') && !line.contains('\r'), "{line:?}");
        assert!(
            line.contains("\\x1b]0;title\\x07\\x0dother-job succeeded"),
            "{line}"
        );
        assert!(
            line.starts_with("2026-12-01T04:00:00.000Z  attempt 2  failed"),
            "{line}"
        );
    }
}
