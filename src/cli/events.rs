//! `runner events JOB [-f] [--json]`: what happened to a job, in order, from the store: every
//! state change of every attempt, with its reason and detail, each ended turn of an agent's
//! manager loop and each message a person sent it (`runner send`). `-f` follows until the job ends;
//! `--json` prints one JSON object a line (the shape is in the README, "Events"). On a terminal
//! the detail is shown through [`super::terminal::one_line`]; JSON is as stored.

use super::exit::{CmdResult, SUCCESS};
use crate::store::EventRecord;
use serde_json::json;
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
        let seen = last;
        for event in store.events(&id)?.into_iter().filter(|e| e.seq > seen) {
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

/// One event as a JSON line: `{"seq", "job", "attempt", "at", "type": "state", "state",
/// "reason", "detail"}`, or `{..., "type": "turn", "turn", "max_turns", "action", "argument",
/// "progress", "thought", "ended"}`, or `{..., "type": "message", "text"}` (a person's message
/// typed into Aider), or `{..., "type": "paused"}` / `{..., "type": "resumed"}`. Every type
/// shares the first five keys.
fn as_json(e: &EventRecord) -> String {
    if let Some(paused) = e.paused {
        return json!({
            "seq": e.seq,
            "job": e.job_id.as_str(),
            "attempt": e.attempt,
            "at": e.at,
            "type": if paused { "paused" } else { "resumed" },
        })
        .to_string();
    }
    if let Some(text) = &e.message {
        return json!({
            "seq": e.seq,
            "job": e.job_id.as_str(),
            "attempt": e.attempt,
            "at": e.at,
            "type": "message",
            "text": text,
        })
        .to_string();
    }
    if let Some(turn) = &e.turn {
        let mut value = json!({
            "seq": e.seq,
            "job": e.job_id.as_str(),
            "attempt": e.attempt,
            "at": e.at,
            "type": "turn",
        });
        if let (Some(map), Ok(serde_json::Value::Object(fields))) =
            (value.as_object_mut(), serde_json::to_value(turn))
        {
            map.extend(fields);
        }
        return value.to_string();
    }
    json!({
        "seq": e.seq,
        "job": e.job_id.as_str(),
        "attempt": e.attempt,
        "at": e.at,
        "type": "state",
        "state": e.state.as_str(),
        "reason": e.reason.map(|r| r.as_str()),
        "detail": e.detail,
    })
    .to_string()
}

/// One event for a person: time, attempt, state, reason and detail on one line (for a turn:
/// its number, action, progress and how it ended).
fn as_line(e: &EventRecord) -> String {
    let attempt = e
        .attempt
        .map(|n| format!("attempt {n}"))
        .unwrap_or_else(|| "-".into());
    if let Some(turn) = &e.turn {
        return format!("{}  {:<9}  {}", e.at, attempt, super::show::turn_line(turn));
    }
    if let Some(paused) = e.paused {
        return format!(
            "{}  {:<9}  {}",
            e.at,
            attempt,
            if paused {
                "paused: the manager issues no turns until `runner resume`; `runner send` talks to Aider"
            } else {
                "resumed: the manager decides again"
            }
        );
    }
    if let Some(text) = &e.message {
        return format!(
            "{}  {:<9}  message from the operator: {}",
            e.at,
            attempt,
            super::terminal::one_line(text)
        );
    }
    let mut line = format!("{}  {:<9}  {:<9}", e.at, attempt, e.state);
    if let Some(reason) = e.reason {
        line.push_str(&format!(" {reason}"));
    }
    if let Some(detail) = &e.detail {
        line.push_str(&format!(": {}", super::terminal::one_line(detail)));
    }
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{JobId, JobState, Reason};

    fn event(detail: Option<&str>) -> EventRecord {
        EventRecord {
            seq: 7,
            job_id: JobId("01JOB".into()),
            attempt: Some(2),
            at: "2026-12-01T04:00:00.000Z".into(),
            state: JobState::Failed,
            reason: Some(Reason::ExitCode),
            detail: detail.map(str::to_string),
            turn: None,
            message: None,
            paused: None,
        }
    }

    #[test]
    fn a_message_event_is_one_json_object_and_one_safe_line() {
        let mut e = event(None);
        e.message = Some("use tabs\x1b[2J".into());
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
        e.turn = Some(crate::store::TurnEvent {
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
