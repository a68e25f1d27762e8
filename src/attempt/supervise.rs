//! Supervising a running attempt: one `select!` over its work, the container's exit, the
//! deadline, cancellation, the LLM budget and the provider's lasting refusals; and how an engine exit status becomes an outcome.

use super::{Attempt, Ending};
use crate::job::JobSpec;
use crate::sandbox::{ExitStatus, Sandbox, SandboxError};
use crate::state::{parse_rfc3339, Outcome, Reason};
use std::time::Duration;

impl<S: Sandbox> Attempt<S> {
    /// Waits for `work` (the agent's manager loop; `None` when Aider exited) or the container's
    /// exit, enforcing the deadline and honouring cancellation and the budget. The container is
    /// stopped when this returns.
    pub(super) async fn supervise(
        &self,
        name: &str,
        agent: bool,
        work: impl std::future::Future<Output = Option<Ending>>,
    ) -> Ending {
        let spec = &self.job.spec;
        let started =
            parse_rfc3339(&self.attempt.started_at).unwrap_or_else(time::OffsetDateTime::now_utc);
        let elapsed = (time::OffsetDateTime::now_utc() - started)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let remaining = spec.timeout.saturating_sub(elapsed);
        let deadline = tokio::time::Instant::now() + remaining;

        enum Why {
            Done(Ending),
            Exited(Result<ExitStatus, SandboxError>),
            Timeout,
            Cancelled,
            Budget,
            Provider,
        }
        let budget = self
            .llm
            .as_ref()
            .map(|l| l.gateway.budget_signal(&self.job.id))
            .unwrap_or_default();
        let provider = self
            .llm
            .as_ref()
            .map(|l| l.gateway.provider_stop(&self.job.id))
            .unwrap_or_default();
        let why = tokio::select! {
            biased;
            _ = self.control.cancelled() => Why::Cancelled,
            _ = budget.cancelled() => Why::Budget,
            _ = provider.fired() => Why::Provider,
            _ = tokio::time::sleep_until(deadline) => Why::Timeout,
            end = work => match end {
                Some(ending) => Why::Done(ending),
                None => Why::Exited(self.sandbox.wait(name).await),
            },
            status = self.sandbox.wait(name) => Why::Exited(status),
        };
        let status = match why {
            Why::Exited(status) => status,
            Why::Done(_) | Why::Timeout | Why::Cancelled | Why::Budget | Why::Provider => {
                if let Err(e) = self.sandbox.stop(name, self.config.stop_grace).await {
                    tracing::warn!(container = %name, "stop failed: {e}");
                }
                // The stop returns once the container is gone or killed; wait to be sure.
                let _ = self.sandbox.wait(name).await;
                let outcome = match why {
                    Why::Done(ending) => return ending,
                    Why::Cancelled => Outcome::Cancelled,
                    Why::Budget => budget_outcome(spec),
                    Why::Provider => provider_outcome(&provider),
                    _ => Outcome::failed(
                        Reason::Timeout,
                        None,
                        format!(
                            "ran past its {} timeout and was stopped",
                            crate::job::units::format_duration(spec.timeout)
                        ),
                    ),
                };
                return Ending::Done(outcome);
            }
        };
        // A job that ended on its own after the gateway refused it for budget failed for budget.
        if budget.is_cancelled() {
            return Ending::Done(budget_outcome(spec));
        }
        if provider.why().is_some() {
            return Ending::Done(provider_outcome(&provider));
        }
        Ending::Done(match status {
            // Aider leaving before the manager finished is a failure, whatever its exit code.
            Ok(status) if agent && !status.oom_killed => Outcome::failed(
                Reason::ExitCode,
                Some(status.code),
                format!(
                    "aider exited (code {}) before the work was finished",
                    status.code
                ),
            ),
            Ok(status) => exit_outcome(status, spec),
            Err(SandboxError::NoSuchContainer(_)) => Outcome::failed(
                Reason::Lost,
                None,
                "the container vanished while the job was running",
            ),
            Err(e) => Outcome::failed(
                Reason::Lost,
                None,
                format!("lost track of the container: {e}"),
            ),
        })
    }
}

fn provider_outcome(stop: &crate::llm::gateway::ProviderStop) -> Outcome {
    Outcome::failed(
        Reason::ProviderError,
        None,
        stop.why()
            .unwrap_or_else(|| "the LLM provider refused a call".into()),
    )
}

fn budget_outcome(spec: &JobSpec) -> Outcome {
    let mut limits = Vec::new();
    if let Some(t) = spec.budget.tokens {
        limits.push(format!("{t} tokens"));
    }
    if let Some(u) = spec.budget.usd {
        limits.push(format!("${u}"));
    }
    Outcome::failed(
        Reason::Budget,
        None,
        format!(
            "its LLM budget ({}) is spent; the gateway refused further calls",
            limits.join(", ")
        ),
    )
}

/// Maps an engine exit status to an outcome. OOM comes only from the engine's flag.
pub(crate) fn exit_outcome(status: ExitStatus, spec: &JobSpec) -> Outcome {
    if status.oom_killed {
        return Outcome::failed(
            Reason::Oom,
            Some(status.code),
            format!(
                "killed for running out of memory (limit {})",
                spec.resources.memory
            ),
        );
    }
    match status.code {
        0 => Outcome::Succeeded,
        code if code > 128 && code < 160 => Outcome::failed(
            Reason::ExitCode,
            Some(code),
            format!(
                "killed by signal {} ({})",
                code - 128,
                signal_name(code - 128)
            ),
        ),
        code => Outcome::failed(
            Reason::ExitCode,
            Some(code),
            format!("exited with code {code}"),
        ),
    }
}

fn signal_name(n: i64) -> &'static str {
    match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}
