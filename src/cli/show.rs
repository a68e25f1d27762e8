//! `runner show JOB [--json]`. Details (which may quote the job or the manager) are shown on
//! one line each, control characters as visible escapes; `--json` has them as stored.

use super::exit::{CmdResult, SUCCESS};
use super::output;
use super::terminal::one_line;
use crate::store::{EventBody, MessageStatus};
use std::path::Path;

pub fn run(state_dir: &Path, query: &str, json: bool) -> CmdResult {
    let store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    let job = store.job(&id)?;
    if json {
        println!("{}", output::job_json(&store, &job)?);
        return Ok(SUCCESS);
    }
    println!("id:        {}", job.id);
    println!("name:      {}", job.name);
    if let Some(source) = &job.source {
        println!("source:    {source}");
    }
    println!("state:     {}", job.state);
    if let Some(reason) = job.reason {
        println!("reason:    {reason}");
    }
    if let Some(code) = job.exit_code {
        println!("exit code: {code}");
    }
    if let Some(detail) = &job.detail {
        println!("detail:    {}", one_line(detail));
    }
    println!("submitted: {}", job.submitted_at);
    if let Some(t) = &job.started_at {
        println!("started:   {t}");
    }
    if let Some(t) = &job.finished_at {
        println!("finished:  {t}");
    }
    for a in store.attempts(&id)? {
        println!(
            "attempt {}: {} {} {}{}",
            a.n,
            a.container,
            a.state,
            a.reason.map(|r| r.to_string()).unwrap_or_default(),
            a.detail
                .map(|d| format!(" ({})", one_line(&d)))
                .unwrap_or_default()
        );
    }
    let candidates = store.candidates(&id)?;
    if !candidates.is_empty() {
        println!("candidates ({}):", job.spec.select.as_str());
        for (n, c) in &candidates {
            println!("  attempt {n}  {}", candidate_line(c));
        }
    }
    let usage = store.job_usage(&id)?;
    if usage.total().requests > 0 {
        println!("usage:");
        for (role, u) in [("manager", &usage.manager), ("agent", &usage.agent)] {
            println!("  {}", usage_line(role, u));
        }
    }
    for a in store.artifacts(&id)? {
        println!("artifact:  {} {}", a.kind, a.path);
    }
    let messages = store.messages(&id)?;
    if !messages.is_empty() {
        println!("messages:");
        for m in &messages {
            println!("  {}", message_line(m));
        }
    }
    let events = store.events(&id)?;
    let turns: Vec<_> = events
        .iter()
        .filter_map(|e| match (&e.body, e.attempt) {
            (EventBody::Turn(turn), Some(n)) => Some((n, turn)),
            _ => None,
        })
        .collect();
    if !turns.is_empty() {
        println!("turns:");
        for (n, turn) in turns {
            println!("  attempt {n}  {}", turn_line(turn));
        }
    }
    println!("events:");
    for e in &events {
        if !matches!(e.body, EventBody::Turn(_)) {
            println!("  {}  {}", e.at, super::events::describe(&e.body));
        }
    }
    Ok(SUCCESS)
}

/// One turn on one line: number, action, the manager's progress (or the argument), how the
/// turn ended, and its tokens, cost and the files changed so far, with control characters shown
/// visibly.
pub(super) fn turn_line(turn: &crate::store::TurnEvent) -> String {
    let what = if turn.progress.is_empty() {
        &turn.argument
    } else {
        &turn.progress
    };
    let mut line = format!(
        "turn {}/{} {}: {}",
        turn.turn,
        turn.max_turns,
        turn.action,
        one_line(what)
    );
    if !turn.thought.is_empty() {
        let thought: String = turn.thought.chars().take(120).collect();
        line.push_str(&format!(" (thought: {})", one_line(&thought)));
    }
    if !turn.ended.is_empty() {
        line.push_str(&format!(" -> {}", one_line(&turn.ended)));
    }
    if turn.requests > 0 || turn.files_changed > 0 {
        line.push_str(&format!(
            " [{} tokens, ${:.4}; {} file{} changed]",
            turn.tokens(),
            turn.cost_usd,
            turn.files_changed,
            if turn.files_changed == 1 { "" } else { "s" }
        ));
    }
    line
}

/// One message (`runner send`) on one line: when it was sent, to which attempt, what became of
/// it, and its first line (with `...` when there is more).
fn message_line(m: &crate::store::MessageRecord) -> String {
    let status = match m.status {
        MessageStatus::Waiting => "waiting",
        MessageStatus::Delivered => "delivered",
        MessageStatus::Dropped => "dropped",
    };
    let text = m.text.trim();
    let first = text.lines().next().unwrap_or_default();
    let more = if first.len() < text.len() { " ..." } else { "" };
    format!(
        "{}  attempt {}  {status:<9}  {}{more}",
        m.sent_at,
        m.attempt,
        one_line(first)
    )
}

/// One candidate of a best-of-N job on one line: its place, how it ended, its change's size,
/// turns, tokens and cost, and whether it won.
pub(crate) fn candidate_line(c: &crate::store::CandidateEvent) -> String {
    let mut line = format!("candidate {} of {}: {}", c.candidate, c.of, c.state);
    if let Some(reason) = c.reason {
        line.push_str(&format!(" {reason}"));
    }
    if let Some(detail) = &c.detail {
        line.push_str(&format!(" ({})", one_line(detail)));
    }
    if let Some(lines) = c.diff_lines {
        line.push_str(&format!(", passed verify with {lines} changed lines"));
    }
    line.push_str(&format!(
        ", {} turns, {} tokens, ${:.4}",
        c.turns, c.tokens, c.cost_usd
    ));
    if c.selected {
        line.push_str(", chosen");
    }
    line
}

/// One role's LLM usage on one line: calls, tokens in and out, cost (and unpriced calls).
fn usage_line(role: &str, u: &crate::store::Usage) -> String {
    let mut line = format!(
        "{role:<8} {} requests, {} prompt + {} completion tokens, ${:.4}",
        u.requests, u.prompt_tokens, u.completion_tokens, u.cost_usd
    );
    if u.unpriced_requests > 0 {
        line.push_str(&format!(" ({} unpriced)", u.unpriced_requests));
    }
    if u.estimated_requests > 0 {
        line.push_str(&format!(" ({} estimated)", u.estimated_requests));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_line_has_time_attempt_status_and_the_first_line_shown_safely() {
        let m = crate::store::MessageRecord {
            seq: 4,
            attempt: 2,
            sent_at: "2026-12-01T04:00:00.000Z".into(),
            status: MessageStatus::Dropped,
            delivered_at: None,
            text: "use tabs\x1b[2J\nand spaces nowhere".into(),
        };
        assert_eq!(
            message_line(&m),
            "2026-12-01T04:00:00.000Z  attempt 2  dropped    use tabs\\x1b[2J ..."
        );
    }

    #[test]
    fn a_usage_line_names_requests_tokens_cost_and_unpriced_calls() {
        let u = crate::store::Usage {
            requests: 3,
            prompt_tokens: 120,
            completion_tokens: 30,
            cost_usd: 0.00012,
            unpriced_requests: 1,
            estimated_requests: 0,
        };
        assert_eq!(
            usage_line("agent", &u),
            "agent    3 requests, 120 prompt + 30 completion tokens, $0.0001 (1 unpriced)"
        );
    }
}
