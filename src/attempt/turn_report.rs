//! A manager turn's `turn` event: what the manager decided, how the turn ended, and what it cost
//! and changed: the attempt's LLM usage during the turn (the difference of its metered totals,
//! all roles, between the turn's start and its end), the files Aider edited, its commits, and how
//! many files differ from the base commit afterwards.

use super::drive::Drive;
use crate::agent::parse::AiderEvent;
use crate::agent::protocol::{action_name, TurnContext};
use crate::job::ManagerStep;
use crate::sandbox::Sandbox;
use crate::store::{TurnEvent, Usage};

/// Longest `ended` text kept in a turn event.
const ENDED_CHARS: usize = 400;

/// Most edited files listed in one turn event (the count of files changed is always exact).
const MAX_EDITS: usize = 100;

/// A turn being measured: the attempt's usage when it started, and what Aider did in it.
#[derive(Debug, Default)]
pub(super) struct TurnMeter {
    usage_at_start: Usage,
    edits: Vec<String>,
    commits: u32,
}

impl TurnMeter {
    /// Notes the progress markers of Aider's answer in this turn.
    pub(super) fn saw(&mut self, events: &[AiderEvent]) {
        for e in events {
            match e {
                AiderEvent::AppliedEdit(file)
                    if !self.edits.contains(file) && self.edits.len() < MAX_EDITS =>
                {
                    self.edits.push(file.clone())
                }
                AiderEvent::Commit { .. } => self.commits += 1,
                _ => {}
            }
        }
    }
}

/// What the attempt used between `start` and `end`. Cost is rounded to 1e-12 dollars so that
/// subtracting two sums leaves no float noise.
fn used_between(start: &Usage, end: &Usage) -> Usage {
    Usage {
        requests: end.requests.saturating_sub(start.requests),
        prompt_tokens: end.prompt_tokens.saturating_sub(start.prompt_tokens),
        completion_tokens: end
            .completion_tokens
            .saturating_sub(start.completion_tokens),
        cost_usd: ((end.cost_usd - start.cost_usd).max(0.0) * 1e12).round() / 1e12,
        unpriced_requests: end
            .unpriced_requests
            .saturating_sub(start.unpriced_requests),
        estimated_requests: end
            .estimated_requests
            .saturating_sub(start.estimated_requests),
    }
}

impl<S: Sandbox> Drive<'_, S> {
    /// The attempt's LLM usage so far, all roles (zero when the store cannot be read: the turn
    /// then shows more than it used, never an error).
    async fn usage_now(&self) -> Usage {
        let (id, n) = (self.job.clone(), self.attempt);
        match self.store.call(move |s| s.attempt_usage(&id, n)).await {
            Ok(usage) => usage.total(),
            Err(e) => {
                tracing::warn!(job = %self.job, "cannot read the attempt's usage: {e}");
                Usage::default()
            }
        }
    }

    /// Starts measuring a turn, before the manager decides it.
    pub(super) async fn start_turn(&self) -> TurnMeter {
        TurnMeter {
            usage_at_start: self.usage_now().await,
            ..TurnMeter::default()
        }
    }

    /// Records the turn that just ended as an event (`runner events`, `runner show`), its text
    /// redacted. A store error is logged: the turn itself went through.
    pub(super) async fn record_turn(
        &self,
        ctx: &TurnContext,
        step: &ManagerStep,
        ended: &str,
        meter: &TurnMeter,
    ) {
        let text = |t: &str| self.redact.redact_str(t);
        let used = used_between(&meter.usage_at_start, &self.usage_now().await);
        let turn = TurnEvent {
            turn: ctx.turn,
            max_turns: ctx.max_turns,
            action: action_name(step.action).to_string(),
            argument: text(&step.argument),
            progress: text(&step.progress),
            thought: text(&step.thought),
            ended: text(&ended.chars().take(ENDED_CHARS).collect::<String>()),
            requests: used.requests,
            prompt_tokens: used.prompt_tokens,
            completion_tokens: used.completion_tokens,
            cost_usd: used.cost_usd,
            edits: meter.edits.iter().map(|f| text(f)).collect(),
            commits: meter.commits,
            files_changed: u32::try_from(ctx.files_changed.len()).unwrap_or(u32::MAX),
        };
        let (id, n) = (self.job.clone(), self.attempt);
        if let Err(e) = self
            .store
            .call(move |s| s.add_turn_event(&id, n, &turn))
            .await
        {
            tracing::warn!(job = %self.job, "cannot record turn {}: {e}", ctx.turn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_counts_each_edited_file_once_and_every_commit() {
        let mut meter = TurnMeter::default();
        meter.saw(&[
            AiderEvent::AppliedEdit("greet.py".into()),
            AiderEvent::Commit {
                sha: "abc1234".into(),
                message: "add greet".into(),
            },
            AiderEvent::AppliedEdit("greet.py".into()),
            AiderEvent::AppliedEdit("test_greet.py".into()),
            AiderEvent::Commit {
                sha: "def5678".into(),
                message: "test greet".into(),
            },
        ]);
        assert_eq!(meter.edits, ["greet.py", "test_greet.py"]);
        assert_eq!(meter.commits, 2);
    }

    #[test]
    fn a_turn_uses_the_difference_of_the_attempt_totals() {
        let start = Usage {
            requests: 2,
            prompt_tokens: 1000,
            completion_tokens: 50,
            cost_usd: 0.1,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        let end = Usage {
            requests: 4,
            prompt_tokens: 2300,
            completion_tokens: 80,
            cost_usd: 0.3,
            unpriced_requests: 1,
            estimated_requests: 0,
        };
        let used = used_between(&start, &end);
        assert_eq!(
            (used.requests, used.prompt_tokens, used.completion_tokens),
            (2, 1300, 30)
        );
        assert_eq!(used.cost_usd, 0.2, "no float noise from 0.3 - 0.1");
        assert_eq!(used.unpriced_requests, 1);
    }
}
