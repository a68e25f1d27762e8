//! Rows as the rest of the program sees them, decoded from SQLite.

use crate::job::JobSpec;
use crate::state::{JobId, JobState, Outcome, Reason};

/// A job as stored.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub id: JobId,
    pub name: String,
    pub spec: JobSpec,
    /// The job file it came from, if any.
    pub source: Option<String>,
    pub state: JobState,
    pub reason: Option<Reason>,
    pub exit_code: Option<i64>,
    /// The last outcome in words ("exited with code 3").
    pub detail: Option<String>,
    /// `runner cancel` asked for this running job to stop.
    pub cancel_requested: bool,
    /// Number of attempts started so far.
    pub attempts: u32,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One run of a job in one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub job_id: JobId,
    pub n: u32,
    /// Deterministic container name (`runner-<state id>-<job id>-<n>`).
    pub container: String,
    pub state: JobState,
    pub reason: Option<Reason>,
    pub exit_code: Option<i64>,
    pub detail: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// A file produced by a job (log, patch, bundle...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub attempt: u32,
    pub kind: String,
    pub path: String,
}

/// A job about to be submitted.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub spec: JobSpec,
    pub source: Option<String>,
}

impl From<crate::job::LoadedJob> for NewJob {
    /// A job file as loaded: its spec, and its path as the source.
    fn from(loaded: crate::job::LoadedJob) -> Self {
        NewJob {
            source: Some(loaded.path.display().to_string()),
            spec: loaded.spec,
        }
    }
}

/// What `cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// The job was queued and is now cancelled; it never starts.
    Cancelled,
    /// The job is starting or running; its scheduler will stop it.
    Requested,
    /// The job had already ended in this state.
    AlreadyFinished(JobState),
}

/// What `finish_attempt` decided for the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishResult {
    /// The job ended in this state.
    Finished(JobState),
    /// An infrastructure failure with retries left: the job is queued again.
    Requeued,
    /// The job had already ended (for example cancelled meanwhile); nothing changed.
    AlreadyFinished,
    /// One candidate of a best-of-N job ended; the job goes on with the others.
    CandidateEnded,
}

impl JobRecord {
    /// The outcome a terminal job ended with.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            JobState::Succeeded => Some(Outcome::Succeeded),
            JobState::Cancelled => Some(Outcome::Cancelled),
            JobState::Failed => Some(Outcome::failed(
                self.reason.unwrap_or(Reason::Infra),
                self.exit_code,
                self.detail.clone().unwrap_or_default(),
            )),
            _ => None,
        }
    }
}
