//! One attempt of one job, from launch to a recorded outcome: the attempt's whole lifecycle,
//! for plain commands and agents alike. The same code adopts a container found running after a
//! restart: launching is idempotent (deterministic names), the deadline is counted from the
//! attempt's recorded start, and the log is rebuilt from the container's output.
//!
//! `run` (here) checks the operator's policy, reads secrets, plans the container, prepares the
//! repository (`workspace`), connects the gateway (`llm`), launches, then runs the work
//! (`command`, or `agent` with its manager loop in `drive` ending in `finish`) inside
//! `supervise`, delivers the result (`deliver`), records the outcome and cleans up. Output goes
//! to capped logs (`logfile`) through streaming secret redaction (`redact`); an agent's output
//! also to its transcript (`transcript`).

mod agent;
mod command;
mod deliver;
mod drive;
mod finish;
pub(crate) mod handle;
mod llm;
pub mod logfile;
pub mod redact;
mod supervise;
mod transcript;
mod turn_report;
mod workspace;

pub(crate) use handle::{AttemptHandle, Control, Controls};
pub(crate) use llm::LlmAccess;

use crate::job::{JobKind, JobSpec, NetworkMode};
use crate::sandbox::{ContainerPlan, Labels, Sandbox, SandboxError, Secret};
use crate::scheduler::policy::Policy;
use crate::state::{Outcome, Reason};
use crate::store::{AttemptRecord, FinishResult, JobRecord, SharedStore};
use redact::Redactor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How attempts run; the scheduler's configuration holds one.
#[derive(Clone, Debug)]
pub struct AttemptConfig {
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    pub stop_grace: std::time::Duration,
    /// Where job logs go (`<logs_dir>/<job>/<attempt>.log`).
    pub logs_dir: PathBuf,
    /// Where results go (`<artifacts_dir>/<job>/<attempt>/`).
    pub artifacts_dir: PathBuf,
    /// Repository mirrors.
    pub cache_dir: PathBuf,
    /// Scratch work trees (`<work_dir>/<job>-<attempt>`), removed once uploaded.
    pub work_dir: PathBuf,
    /// Cap of each stored log, bytes.
    pub log_cap: u64,
    /// The operator's allow-lists: host variables jobs may name, and where credentials may go.
    pub policy: Policy,
}

impl AttemptConfig {
    /// Defaults for a state dir.
    pub fn new(state_dir: &Path) -> Self {
        AttemptConfig {
            stop_grace: std::time::Duration::from_secs(10),
            logs_dir: state_dir.join("logs"),
            artifacts_dir: state_dir.join("artifacts"),
            cache_dir: state_dir.join("cache").join("repos"),
            work_dir: state_dir.join("work"),
            log_cap: logfile::DEFAULT_LOG_CAP,
            policy: Policy::default(),
        }
    }
}

/// Everything one attempt needs.
pub(crate) struct Attempt<S: Sandbox> {
    pub store: SharedStore,
    pub sandbox: Arc<S>,
    pub config: Arc<AttemptConfig>,
    pub job: JobRecord,
    pub attempt: AttemptRecord,
    /// The dispatcher's controls: cancel (`runner cancel`, a second interrupt), and wake-ups
    /// for the manager loop (`runner send`, `pause`, `resume`).
    pub control: Controls,
    /// The LLM gateway, for `network: llm` jobs.
    pub llm: Option<LlmAccess>,
}

/// Where attempt `n` of a job keeps its results: each attempt its own, so a retry never
/// overwrites what an earlier attempt made (and may already have delivered).
pub fn artifacts_path(artifacts_dir: &Path, job: &str, n: u32) -> PathBuf {
    artifacts_dir.join(job).join(n.to_string())
}

/// How an attempt ended, and whether `retries` may run the job again. The choice is made where
/// the failure is understood and carried as this value, so no `?` can make it by accident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The attempt's outcome; a retryable failure (`infra`, `lost`) runs the job again while it
    /// has attempts left.
    Done(Outcome),
    /// A failure no new attempt can cure (the job as written cannot run here: refused by the
    /// operator's policy, a missing image or secret, a bad ref, a branch that exists): never
    /// retried, whatever its reason.
    Permanent(Outcome),
}

impl Ending {
    /// A failure no new attempt can cure.
    fn permanent(reason: Reason, detail: impl Into<String>) -> Self {
        Ending::Permanent(Outcome::failed(reason, None, detail))
    }
}

impl From<Outcome> for Ending {
    fn from(outcome: Outcome) -> Self {
        Ending::Done(outcome)
    }
}

/// How an attempt begins.
enum Start {
    /// The operator does not allow what the job names, or a secret is missing: not retried.
    Refused(Outcome),
    /// A result stored before a crash was delivered (or failed to be); nothing else runs.
    Delivered(Ending),
    /// The job runs, with these secrets.
    Run(Vec<(String, Secret)>),
}

/// Where attempt `n` of a job writes its output.
pub fn log_path(logs_dir: &std::path::Path, job: &str, n: u32) -> PathBuf {
    logs_dir.join(job).join(format!("{n}.log"))
}

impl<S: Sandbox> Attempt<S> {
    /// Runs the attempt to its end and records the outcome. Returns the job's resulting state.
    pub async fn run(self) -> FinishResult {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        // A job that can never start as written (no image, no secret...) is not retried.
        // The operator's allow-lists come first: the job file may not be the operator's.
        // A result stored before a crash only needs delivering: the job's secrets (which the
        // restarted scheduler's environment may lack) are not read for it.
        let start = match self.allowed() {
            Err(refused) => Start::Refused(refused),
            Ok(()) => match self.resume_delivery().await {
                Some(delivered) => Start::Delivered(delivered),
                None => match read_secrets(&self.job.spec) {
                    Ok(secrets) => Start::Run(secrets),
                    Err(refused) => Start::Refused(refused),
                },
            },
        };
        let (ending, redact) = match start {
            Start::Delivered(ending) => (ending, Redactor::default()),
            Start::Run(secrets) => {
                let redact = redactor(&secrets);
                (self.execute(secrets, &redact).await, redact)
            }
            Start::Refused(refused) => (Ending::Permanent(refused), Redactor::default()),
        };
        // A permanent failure ends the job now: no attempt (or round of candidates) after this
        // one. A best-of-N job's attempts come in rounds of `candidates`, and retries count rounds.
        let round = (n - 1) / self.job.spec.candidates.max(1) + 1;
        let (outcome, max_attempts) = match ending {
            Ending::Done(outcome) => (outcome, 1 + self.job.spec.retries),
            Ending::Permanent(outcome) => (outcome, round),
        };
        // A detail may quote what the job or the manager printed (the manager's last words).
        let mut outcome = outcome;
        if let Outcome::Failed { detail, .. } = &mut outcome {
            *detail = redact.redact_str(detail);
        }
        let recorded = outcome.clone();
        let result = self
            .store
            .call(move |s| s.finish_attempt(&id, n, &recorded, max_attempts))
            .await;
        // Only now, with the outcome durable: a crash before this point (or an outcome that could
        // not be stored) leaves the container for the next scheduler to adopt and finish, instead
        // of a job whose container vanished.
        if result.is_ok() {
            self.clean_up().await;
        }
        match result {
            Ok(finished) => finished,
            Err(e) => {
                tracing::error!(job = %self.job.id, "cannot record the outcome: {e}");
                FinishResult::AlreadyFinished
            }
        }
    }

    /// Removes the attempt's container (and its gateway relay) and revokes its gateway tokens,
    /// once its outcome is recorded.
    async fn clean_up(&self) {
        let name = &self.attempt.container;
        if let Err(e) = self.sandbox.remove(name).await {
            tracing::warn!(container = %name, "cannot remove container: {e}");
        }
        if let Some(llm) = &self.llm {
            let relay = self.labels().relay_name();
            if let Err(e) = self.sandbox.remove(&relay).await {
                tracing::warn!(container = %relay, "cannot remove the gateway relay: {e}");
            }
            if let Err(e) = llm.gateway.revoke(&self.job.id, self.attempt.n).await {
                tracing::warn!(job = %self.job.id, "cannot revoke gateway tokens: {e}");
            }
        }
    }

    /// Whether the operator lets this job have what it names (secrets, where its LLM key and
    /// pull-request token go); checked before anything is read, sent or created.
    fn allowed(&self) -> Result<(), Outcome> {
        self.config
            .policy
            .check(&self.job.spec, |var| std::env::var_os(var).is_some())
            .map_err(|e| Outcome::failed(Reason::Infra, None, e.to_string()))
    }

    /// The labels of this attempt's Docker objects.
    fn labels(&self) -> Labels {
        Labels {
            state: self.store.state_id(),
            job: self.job.id.to_string(),
            attempt: self.attempt.n,
        }
    }

    /// Runs the attempt. The container is left for [`Attempt::clean_up`].
    async fn execute(&self, secrets: Vec<(String, Secret)>, redact: &Redactor) -> Ending {
        let spec = &self.job.spec;
        let labels = self.labels();
        let grace = self.config.stop_grace.as_secs() as i64;
        let mut plan = match &spec.kind {
            JobKind::Command { command } if spec.repo.is_some() => ContainerPlan::for_command(
                spec,
                &workspace::after_upload(command),
                labels,
                secrets,
                grace,
            ),
            JobKind::Command { command } => {
                ContainerPlan::for_command(spec, command, labels, secrets, grace)
            }
            JobKind::Task { .. } => {
                if spec.network != NetworkMode::Llm {
                    return Ending::permanent(
                        Reason::Infra,
                        "agent jobs reach their model only through the LLM gateway: use network: llm",
                    );
                }
                crate::agent::plan::plan(spec, labels, secrets, grace)
            }
        };
        if let Some(why) = self.sandbox.refuse_network(spec.network) {
            return Ending::permanent(Reason::Infra, why);
        }
        if let Err(ending) = self.connect_llm(&mut plan).await {
            return ending;
        }
        // The repository (agents always get a workspace; plain jobs when they name a repo).
        let prepared = if spec.is_agent() || spec.repo.is_some() {
            let work = self
                .config
                .work_dir
                .join(format!("{}-{}", self.job.id, self.attempt.n));
            let pinned = self.round_base().await;
            let spec = match &pinned {
                Some(base) => &JobSpec {
                    git_ref: Some(base.clone()),
                    ..spec.clone()
                },
                None => spec,
            };
            match workspace::prepare(spec, &self.config.cache_dir, &work).await {
                Ok(prepared) => {
                    if let (true, Some(base)) = (self.first_of_round(), &prepared.base) {
                        // The other candidates start from this commit.
                        self.record_base(base).await;
                    }
                    Some(prepared)
                }
                Err(ending) => return ending,
            }
        } else {
            None
        };
        let name = self.attempt.container.clone();
        debug_assert_eq!(plan.name, name);
        if self.control.is_cancelled() {
            return Ending::Done(Outcome::Cancelled);
        }
        // A pod may wait long for a node: a cancel does not wait for it (the objects made so far
        // are removed with the attempt).
        let launch = tokio::select! {
            launched = self.sandbox.launch(&plan) => launched,
            _ = self.control.cancelled() => return Ending::Done(Outcome::Cancelled),
        };
        let launched = match launch {
            Ok(launched) => launched,
            Err(e) => {
                let missing_image = matches!(
                    e,
                    SandboxError::ImageMissing { .. }
                        | SandboxError::RuntimeMissing { .. }
                        | SandboxError::Refused(_)
                );
                let outcome = launch_failure(e);
                return if missing_image {
                    Ending::Permanent(outcome)
                } else {
                    Ending::Done(outcome)
                };
            }
        };
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        if let Err(e) = self.store.call(move |s| s.mark_running(&id, n)).await {
            tracing::warn!(job = %self.job.id, "cannot record running: {e}");
        }
        let path = log_path(&self.config.logs_dir, self.job.id.as_str(), self.attempt.n);
        let (ending, stored) = match prepared {
            Some(prepared) if spec.is_agent() => {
                self.run_agent(&name, launched, prepared, &path, redact)
                    .await
            }
            prepared => {
                self.run_command(&name, launched, prepared, &path, redact)
                    .await
            }
        };
        if stored {
            let (id, n) = (self.job.id.clone(), self.attempt.n);
            let path = path.display().to_string();
            let _ = self
                .store
                .call(move |s| {
                    let known = s.artifacts(&id)?.iter().any(|a| a.path == path);
                    if !known {
                        s.add_artifact(&id, n, "log", &path)?;
                    }
                    Ok(())
                })
                .await;
        }
        // The result leaves the runner only now, with the container stopped: see `deliver`.
        match ending {
            Ending::Done(Outcome::Succeeded) => self
                .deliver()
                .await
                .unwrap_or(Ending::Done(Outcome::Succeeded)),
            ending => ending,
        }
    }

    /// The first attempt of this attempt's round of candidates (itself for a job with one).
    fn round_start(&self) -> u32 {
        let size = self.job.spec.candidates.max(1);
        (self.attempt.n - 1) / size * size + 1
    }

    fn first_of_round(&self) -> bool {
        self.job.spec.candidates > 1 && self.round_start() == self.attempt.n
    }

    /// For a later candidate of a best-of-N job with a repository: the commit the round's first
    /// candidate checked out, so that every candidate starts from the same commit even if the
    /// ref moves meanwhile. Waits while the first prepares; `None` (its own checkout) when the
    /// first ended without one.
    async fn round_base(&self) -> Option<String> {
        let first = self.round_start();
        if self.job.spec.candidates < 2 || first == self.attempt.n || self.job.spec.repo.is_none() {
            return None;
        }
        loop {
            let id = self.job.id.clone();
            let (base, first_active) = self
                .store
                .call(move |s| {
                    let base = s.base_commit(&id, first)?;
                    let active = s.attempt(&id, first)?.is_some_and(|a| a.state.is_active());
                    Ok((base, active))
                })
                .await
                .ok()?;
            if base.is_some() || !first_active || self.control.is_cancelled() {
                return base;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Records the commit the attempt's work starts from.
    async fn record_base(&self, base: &str) {
        let (id, n, base) = (self.job.id.clone(), self.attempt.n, base.to_string());
        if let Err(e) = self
            .store
            .call(move |s| s.set_base_commit(&id, n, &base))
            .await
        {
            tracing::warn!(job = %self.job.id, "cannot record the base commit: {e}");
        }
    }
}

/// An infrastructure failure (retryable).
fn infra(detail: String) -> Outcome {
    Outcome::failed(Reason::Infra, None, detail)
}

/// A redactor for the job's secret values.
pub(crate) fn redactor(secrets: &[(String, Secret)]) -> Redactor {
    Redactor::new(secrets.iter().map(|(n, s)| (n.as_str(), s.expose())))
}

/// Reads each named secret from the host environment.
fn read_secrets(spec: &JobSpec) -> Result<Vec<(String, Secret)>, Outcome> {
    spec.secrets
        .iter()
        .map(|name| match std::env::var(name) {
            Ok(value) => Ok((name.clone(), Secret::new(value))),
            Err(_) => Err(Outcome::failed(
                Reason::Infra,
                None,
                format!("secret {name}: the host environment variable {name} is not set (export it where the scheduler runs)"),
            )),
        })
        .collect()
}

fn launch_failure(e: SandboxError) -> Outcome {
    Outcome::failed(
        Reason::Infra,
        None,
        format!("cannot start the container: {e}"),
    )
}
