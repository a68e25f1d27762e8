//! `runner events JOB [-f] [--json]`: what happened to a job, in order, from the store: every
//! state change of every attempt, with its reason and detail, each ended turn of an agent's
//! manager loop and each message a person sent it (`runner send`). `-f` follows until the job ends;
//! `--json` prints one JSON object a line (the shape is in the README, "Events"). On a terminal
//! the detail is shown through [`super::terminal::one_line`]; JSON is as stored.

use super::exit::{CmdResult, SUCCESS};
use crate::store::{EventBody, EventRecord, ExportEvent};
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

/// One event for a person: time, attempt, then what happened on one line.
fn as_line(e: &EventRecord) -> String {
    let attempt = e
        .attempt
        .map(|n| format!("attempt {n}"))
        .unwrap_or_else(|| "-".into());
    format!("{}  {:<9}  {}", e.at, attempt, describe(&e.body))
        .trim_end()
        .to_string()
}

/// What happened, on one line for a person, control characters shown visibly: a state change
/// with its reason and detail, a turn with its number, action, progress, how it ended and its
/// tokens, a verify run's verdict...
pub(crate) fn describe(body: &EventBody) -> String {
    use super::terminal::one_line;
    match body {
        EventBody::State {
            state,
            reason,
            detail,
        } => {
            let mut line = format!("{state:<9}");
            if let Some(reason) = reason {
                line.push_str(&format!(" {reason}:"));
            }
            if let Some(detail) = detail {
                line.push_str(&format!(" {}", one_line(detail)));
            }
            line.trim_end_matches(':').to_string()
        }
        EventBody::Turn(turn) => super::show::turn_line(turn),
        EventBody::Message { text } => format!("message from the operator: {}", one_line(text)),
        EventBody::MessageDropped { text } => format!(
            "message dropped, the attempt ended before typing it: {}",
            one_line(text)
        ),
        EventBody::Paused => "paused: the manager issues no turns until `runner resume`; `runner send` talks to Aider".into(),
        EventBody::Resumed => "resumed: the manager decides again".into(),
        EventBody::Verify(v) => format!(
            "verify {} (exit code {}, {:.1} s, turn {})",
            if v.passed { "passed" } else { "failed" },
            v.exit_code,
            v.duration_ms as f64 / 1000.0,
            v.turn
        ),
        EventBody::Export(ExportEvent::Patch { path }) => {
            format!("exported the patch: {}", one_line(path))
        }
        EventBody::Export(ExportEvent::Bundle { path }) => {
            format!("exported the bundle: {}", one_line(path))
        }
        EventBody::Export(ExportEvent::Branch { branch, commit }) => format!(
            "pushed branch {} at {}",
            one_line(branch),
            one_line(&commit.chars().take(12).collect::<String>())
        ),
        EventBody::Export(ExportEvent::PullRequest { branch, url }) => format!(
            "pull request from {}: {}",
            one_line(branch),
            one_line(url)
        ),
        EventBody::Budget(b) => {
            let limit = match (b.limit_tokens, b.limit_usd) {
                (Some(t), Some(u)) => format!("{t} tokens or ${u:.4}"),
                (Some(t), None) => format!("{t} tokens"),
                (None, Some(u)) => format!("${u:.4}"),
                (None, None) => "none".into(),
            };
            format!(
                "budget spent: the gateway refused {} calls ({} tokens, ${:.4} used; budget {limit})",
                b.role.as_str(),
                b.used_tokens,
                b.used_usd
            )
        }
        EventBody::Waiting(w) => format!(
            "waiting for the provider until {} (HTTP {} to {} call; it is sent again then, retry {})",
            one_line(&w.until),
            w.status,
            match w.role {
                crate::store::Role::Manager => "a manager",
                crate::store::Role::Agent => "an agent",
            },
            w.retry
        ),
        EventBody::Adopted(a) => format!(
            "adopted: a restarted scheduler took over container {}, resuming at turn {}",
            one_line(&a.container),
            a.turn
        ),
        EventBody::Candidate(c) => super::show::candidate_line(c),
    }
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
            requests: 2,
            prompt_tokens: 1500,
            completion_tokens: 20,
            cost_usd: 0.0004,
            edits: vec!["greet.py".into()],
            commits: 1,
            files_changed: 1,
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
                "turn 2/6 instruct: writing greet\\x1b[2J (thought: the test needs it) -> edited greet.py [1520 tokens, $0.0004; 1 file changed]"
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
