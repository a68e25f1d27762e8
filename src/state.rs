//! Job identity, lifecycle states and failure reasons: the vocabulary shared by the store, the
//! scheduler and the CLI. States and reasons have one spelling, used in the database and in JSON.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A job id: a ULID (26 characters, sortable by submission time).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(ulid::Ulid::new().to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job (or one attempt of it) is in its life: `queued → starting → running → terminal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// A job in an active state has (or is about to have) a container.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Starting | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// Why a job (or attempt) failed. `cancelled` jobs carry no reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The command exited non-zero (the code is recorded beside it).
    ExitCode,
    /// The engine reported the container OOM-killed (never inferred from 137).
    Oom,
    /// The job ran past its `timeout`.
    Timeout,
    VerifyFailed,
    Budget,
    Stuck,
    MaxTurns,
    ManagerError,
    /// The LLM provider refused a call in a way that waiting cannot cure (a bad key, an unknown
    /// model, a prompt longer than the model's context, a spent quota).
    ProviderError,
    /// The engine or the runner failed (not the job's fault); retried per `retries`.
    Infra,
    /// The container vanished while the job was active.
    Lost,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::ExitCode,
        Reason::Oom,
        Reason::Timeout,
        Reason::VerifyFailed,
        Reason::Budget,
        Reason::Stuck,
        Reason::MaxTurns,
        Reason::ManagerError,
        Reason::ProviderError,
        Reason::Infra,
        Reason::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ExitCode => "exit_code",
            Reason::Oom => "oom",
            Reason::Timeout => "timeout",
            Reason::VerifyFailed => "verify_failed",
            Reason::Budget => "budget",
            Reason::Stuck => "stuck",
            Reason::MaxTurns => "max_turns",
            Reason::ManagerError => "manager_error",
            Reason::ProviderError => "provider_error",
            Reason::Infra => "infra",
            Reason::Lost => "lost",
        }
    }

    /// Infrastructure failures are the only ones `retries` applies to.
    pub fn is_retryable(self) -> bool {
        matches!(self, Reason::Infra | Reason::Lost)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reason {s:?}"))
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed {
        reason: Reason,
        exit_code: Option<i64>,
        /// A human sentence for the event log ("exited with code 3", "engine error: ...").
        detail: String,
    },
    Cancelled,
}

impl Outcome {
    pub fn failed(reason: Reason, exit_code: Option<i64>, detail: impl Into<String>) -> Self {
        Outcome::Failed {
            reason,
            exit_code,
            detail: detail.into(),
        }
    }

    /// Whether `retries` may run the job again after this outcome (the attempt decides before
    /// that whether a new attempt could cure it at all: `attempt::Ending`).
    pub fn retryable(&self) -> bool {
        matches!(self, Outcome::Failed { reason, .. } if reason.is_retryable())
    }

    pub fn state(&self) -> JobState {
        match self {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::Failed { .. } => JobState::Failed,
            Outcome::Cancelled => JobState::Cancelled,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Failed { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub fn exit_code(&self) -> Option<i64> {
        match self {
            Outcome::Failed { exit_code, .. } => *exit_code,
            _ => None,
        }
    }
}

/// Current time as RFC 3339 UTC with millisecond precision, the format of every stored timestamp.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format_rfc3339(now)
}

pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt)
        .expect("formatting a UTC timestamp cannot fail")
}

pub fn parse_rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_reasons_round_trip_through_their_names() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_and_parse_back() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert!(parse_rfc3339(&s).is_some(), "{s}");
    }
}
