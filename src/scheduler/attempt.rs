//! One attempt of one job, from launch to a recorded outcome. The same code adopts a container
//! found running after a restart: launching is idempotent (deterministic names), the deadline is
//! counted from the attempt's recorded start, and the log is rebuilt from the container's output.

use super::logfile::CappedLog;
use super::redact::Redactor;
use super::{Event, SchedulerConfig};
use crate::job::{JobKind, JobSpec, NetworkMode};
use crate::sandbox::{
    ContainerPlan, ExitStatus, Labels, Launched, OutputStream, RelayPlan, Sandbox, SandboxError,
    Secret, RELAY_PORT,
};
use crate::state::{parse_rfc3339, JobState, Outcome, Reason};
use crate::store::{AttemptRecord, FinishResult, JobRecord, SharedStore};
use futures_util::StreamExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Everything one attempt needs.
pub(crate) struct Attempt<S: Sandbox> {
    pub store: SharedStore,
    pub sandbox: Arc<S>,
    pub config: Arc<SchedulerConfig>,
    pub job: JobRecord,
    pub attempt: AttemptRecord,
    /// Fired by `runner cancel` or by a second interrupt.
    pub cancel: CancellationToken,
    /// The LLM gateway, for `network: llm` jobs.
    pub llm: Option<LlmAccess>,
    pub events: Option<UnboundedSender<Event>>,
}

/// What a `network: llm` attempt needs: the gateway, which serves each attempt on its own socket.
#[derive(Clone, Debug)]
pub(crate) struct LlmAccess {
    pub gateway: crate::llm::Gateway,
}

/// Where attempt `n` of a job keeps its results: each attempt its own, so a retry never
/// overwrites what an earlier attempt made (and may already have delivered).
pub fn artifacts_path(artifacts_dir: &Path, job: &str, n: u32) -> PathBuf {
    artifacts_dir.join(job).join(n.to_string())
}

/// How an attempt begins.
enum Start {
    /// The operator does not allow what the job names, or a secret is missing: not retried.
    Refused(Outcome),
    /// A result stored before a crash was delivered (or failed to be); nothing else runs.
    Delivered(Outcome),
    /// The job runs, with these secrets.
    Run(Vec<(String, Secret)>),
}

/// Where attempt `n` of a job writes its output.
pub fn log_path(logs_dir: &std::path::Path, job: &str, n: u32) -> PathBuf {
    logs_dir.join(job).join(format!("{n}.log"))
}

impl<S: Sandbox> Attempt<S> {
    fn emit(&self, state: JobState, detail: Option<String>) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Event {
                job: self.job.id.clone(),
                name: self.job.name.clone(),
                state,
                detail,
            });
        }
    }

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
        let (outcome, max_attempts, redact) = match start {
            Start::Delivered(outcome) => (outcome, 1 + self.job.spec.retries, Redactor::default()),
            Start::Run(secrets) => {
                let redact = redactor(&secrets);
                match self.execute(secrets, &redact).await {
                    Ok(outcome) => (outcome, 1 + self.job.spec.retries, redact),
                    Err(permanent) => (permanent, n, redact),
                }
            }
            Start::Refused(permanent) => (permanent, n, Redactor::default()),
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
            Ok(FinishResult::Finished(state)) => {
                let detail = match &outcome {
                    Outcome::Failed { detail, .. } => Some(detail.clone()),
                    _ => None,
                };
                self.emit(state, detail);
                FinishResult::Finished(state)
            }
            Ok(FinishResult::Requeued) => {
                self.emit(
                    JobState::Queued,
                    Some("retrying after an infrastructure failure".into()),
                );
                FinishResult::Requeued
            }
            Ok(other) => other,
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

    /// Runs the attempt; `Err` is a failure that no retry can cure. The container is left for
    /// [`Attempt::clean_up`].
    async fn execute(
        &self,
        secrets: Vec<(String, Secret)>,
        redact: &Redactor,
    ) -> Result<Outcome, Outcome> {
        let spec = &self.job.spec;
        let labels = self.labels();
        let grace = self.config.stop_grace.as_secs() as i64;
        let mut plan = match &spec.kind {
            JobKind::Command { command } if spec.repo.is_some() => ContainerPlan::for_command(
                spec,
                &crate::agent::run::after_upload(command),
                labels,
                secrets,
                grace,
            ),
            JobKind::Command { command } => {
                ContainerPlan::for_command(spec, command, labels, secrets, grace)
            }
            JobKind::Task { .. } => {
                if spec.network != NetworkMode::Llm {
                    return Err(Outcome::failed(
                        Reason::Infra,
                        None,
                        "agent jobs reach their model only through the LLM gateway: use network: llm",
                    ));
                }
                crate::agent::run::plan(spec, labels, secrets, grace)
            }
        };
        if let Some(outcome) = self.connect_llm(&mut plan).await? {
            return Ok(outcome);
        }
        // The repository (agents always get a workspace; plain jobs when they name a repo).
        let prepared = if spec.is_agent() || spec.repo.is_some() {
            let work = self
                .config
                .work_dir
                .join(format!("{}-{}", self.job.id, self.attempt.n));
            Some(crate::agent::run::prepare(spec, &self.config.cache_dir, &work).await?)
        } else {
            None
        };
        let name = self.attempt.container.clone();
        debug_assert_eq!(plan.name, name);
        if self.cancel.is_cancelled() {
            return Ok(Outcome::Cancelled);
        }
        let launched = match self.sandbox.launch(&plan).await {
            Ok(launched) => launched,
            Err(e) => {
                let missing_image = matches!(
                    e,
                    SandboxError::ImageMissing { .. } | SandboxError::RuntimeMissing { .. }
                );
                let outcome = launch_failure(e);
                return if missing_image {
                    Err(outcome)
                } else {
                    Ok(outcome)
                };
            }
        };
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        match self.store.call(move |s| s.mark_running(&id, n)).await {
            Ok(true) => self.emit(JobState::Running, None),
            Ok(false) => {}
            Err(e) => tracing::warn!(job = %self.job.id, "cannot record running: {e}"),
        }
        let path = log_path(&self.config.logs_dir, self.job.id.as_str(), self.attempt.n);
        let (outcome, stored) = match prepared {
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
        match outcome {
            Outcome::Succeeded => Ok(self.deliver().await.unwrap_or(Outcome::Succeeded)),
            outcome => Ok(outcome),
        }
    }

    /// Pushes the attempt's result and opens its pull request, if it has a delivery.
    async fn deliver(&self) -> Option<Outcome> {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let pending = self.store.call(move |s| s.delivery(&id, n)).await;
        if !matches!(pending, Ok(Some(_))) {
            return None;
        }
        self.emit(JobState::Running, Some("delivering the result".into()));
        super::deliver::deliver(
            &self.store,
            &self.job.spec,
            &self.config.cache_dir,
            &self.job.id,
            self.attempt.n,
        )
        .await
    }

    /// An attempt adopted after a crash whose result was already exported: its delivery is
    /// finished from the stored result (the work is not redone). `None` for any other attempt.
    async fn resume_delivery(&self) -> Option<Outcome> {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let stored = self.store.call(move |s| s.delivery(&id, n)).await;
        if !matches!(stored, Ok(Some(_))) {
            return None;
        }
        tracing::info!(job = %self.job.id, attempt = n, "finishing the delivery of a stored result");
        // The crash may have come before the container was stopped.
        let name = &self.attempt.container;
        if let Err(e) = self.sandbox.stop(name, self.config.stop_grace).await {
            tracing::debug!(container = %name, "stop before delivery: {e}");
        }
        self.deliver().await
    }

    /// A plain command: copy its output while it runs; returns the outcome and whether the log
    /// was stored.
    async fn run_command(
        &self,
        name: &str,
        launched: Launched,
        prepared: Option<crate::agent::run::Prepared>,
        path: &Path,
        redact: &Redactor,
    ) -> (Outcome, bool) {
        if let Some(prepared) = prepared {
            // The command waits for its repository; an adopted container may have it already.
            let sandbox = self.sandbox.as_ref();
            let needed =
                launched.output.is_some() || !crate::agent::run::uploaded(sandbox, name).await;
            if needed {
                match crate::agent::run::upload(sandbox, name, prepared).await {
                    Ok(base) => self.record_base(&base).await,
                    Err(outcome) => {
                        let _ = self.sandbox.stop(name, self.config.stop_grace).await;
                        return (outcome, false);
                    }
                }
            }
        }
        // An adopted container's output is read back from the engine: follow it live, and once
        // it has exited read it whole again (following can miss the last output).
        let adopted = launched.output.is_none();
        let output = launched
            .output
            .unwrap_or_else(|| self.sandbox.logs(name, true));
        let copy = tokio::spawn(copy_output(
            output,
            path.to_path_buf(),
            self.config.log_cap,
            redact.fresh(),
        ));
        let outcome = self
            .supervise(name, false, std::future::pending::<Option<Outcome>>())
            .await;
        let mut stored = match tokio::time::timeout(Duration::from_secs(30), copy).await {
            Ok(Ok(stored)) => stored,
            _ => {
                tracing::warn!(job = %self.job.id, "output copy did not finish within 30s");
                false
            }
        };
        if adopted {
            stored = copy_output(
                self.sandbox.logs(name, false),
                path.to_path_buf(),
                self.config.log_cap,
                redact.fresh(),
            )
            .await;
        }
        (outcome, stored)
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

    /// An agent: upload the workspace, start the Aider session and let the manager drive it.
    async fn run_agent(
        &self,
        name: &str,
        launched: Launched,
        prepared: crate::agent::run::Prepared,
        path: &Path,
        redact: &Redactor,
    ) -> (Outcome, bool) {
        let (Some(output), Some(input), Some(llm)) = (launched.output, launched.input, &self.llm)
        else {
            // Adopted after a restart: Aider's session cannot be picked up again.
            let _ = self.sandbox.stop(name, self.config.stop_grace).await;
            return (
                Outcome::failed(
                    Reason::Lost,
                    None,
                    "the agent session cannot be resumed after the runner restarted",
                ),
                false,
            );
        };
        let base = match crate::agent::run::upload(self.sandbox.as_ref(), name, prepared).await {
            Ok(base) => base,
            Err(outcome) => {
                let _ = self.sandbox.stop(name, self.config.stop_grace).await;
                return (outcome, false);
            }
        };
        self.record_base(&base).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(crate::agent::run::write_transcript(
            rx,
            path.to_path_buf(),
            self.config.log_cap,
            self.store.clone(),
            self.job.id.clone(),
            self.attempt.n,
            redact.fresh(),
        ));
        let session =
            crate::agent::session::Session::start(output, input, tx, crate::agent::run::QUIET)
                .watch_llm_calls(llm.gateway.agent_calls(&self.job.id, self.attempt.n));
        // The manager's progress text may quote what Aider printed.
        let progress = |state: JobState, detail: Option<String>| {
            self.emit(state, detail.map(|d| redact.redact_str(&d)))
        };
        let drive = crate::agent::run::Drive {
            sandbox: self.sandbox.as_ref(),
            store: &self.store,
            gateway: &llm.gateway,
            spec: &self.job.spec,
            job: &self.job.id,
            attempt: self.attempt.n,
            container: name,
            base,
            artifacts: artifacts_path(
                &self.config.artifacts_dir,
                self.job.id.as_str(),
                self.attempt.n,
            ),
            progress: &progress,
            redact,
        };
        let work = async move {
            match drive.run(session).await {
                crate::agent::run::DriveEnd::Done(outcome) => Some(outcome),
                crate::agent::run::DriveEnd::AiderExited => None,
            }
        };
        let outcome = self.supervise(name, true, work).await;
        // The container is stopped by now: the session's output has ended, so the writer ends.
        let stored = match tokio::time::timeout(Duration::from_secs(30), writer).await {
            Ok(Ok(stored)) => stored,
            _ => false,
        };
        (outcome, stored)
    }

    /// For `network: llm`: gives the container a fresh token and its own way to the gateway (a
    /// relay whose network namespace it joins). `Ok(Some(..))` is a failure a retry may cure.
    async fn connect_llm(&self, plan: &mut ContainerPlan) -> Result<Option<Outcome>, Outcome> {
        if self.job.spec.network != NetworkMode::Llm {
            return Ok(None);
        }
        let spec = &self.job.spec;
        let Some(llm) = &self.llm else {
            return Err(Outcome::failed(
                Reason::Infra,
                None,
                "the LLM gateway is not available",
            ));
        };
        if spec.llm.replay.is_none() && crate::llm::upstream_base(spec).is_none() {
            return Err(Outcome::failed(
                Reason::Infra,
                None,
                "no LLM upstream: set llm.base_url in the job, or OPENAI_BASE_URL where the runner runs (or replay a cassette with llm.replay)",
            ));
        }
        let infra = |what: &str, e: &dyn std::fmt::Display| {
            Outcome::failed(Reason::Infra, None, format!("{what}: {e}"))
        };
        let token = llm
            .gateway
            .grant(&self.job.id, self.attempt.n, spec)
            .await
            .map_err(|e| infra("cannot grant a gateway token", &e))?;
        let socket_dir = llm
            .gateway
            .serve_attempt(&self.job.id, self.attempt.n)
            .await
            .map_err(|e| infra("cannot serve the LLM gateway", &e))?;
        let user = match std::fs::metadata(&socket_dir) {
            Ok(meta) => format!("{}:{}", meta.uid(), meta.gid()),
            Err(e) => return Err(infra("cannot read the gateway socket's directory", &e)),
        };
        let relay = RelayPlan {
            name: self.labels().relay_name(),
            labels: self.labels(),
            socket_dir,
            user,
        };
        if let Err(e) = self.sandbox.start_relay(&relay).await {
            let missing = matches!(e, SandboxError::ImageMissing { .. });
            let outcome = infra("cannot start the gateway relay", &e);
            return if missing {
                Err(outcome)
            } else {
                Ok(Some(outcome))
            };
        }
        let base = format!("http://127.0.0.1:{RELAY_PORT}/v1");
        plan.llm_relay = Some(relay.name);
        plan.env.0.insert("OPENAI_API_BASE".into(), base.clone());
        plan.env.0.insert("OPENAI_BASE_URL".into(), base);
        plan.env.0.insert("OPENAI_API_KEY".into(), token);
        Ok(None)
    }

    /// Waits for `work` (the agent's manager loop; `None` when Aider exited) or the container's
    /// exit, enforcing the deadline and honouring cancellation and the budget. The container is
    /// stopped when this returns.
    async fn supervise(
        &self,
        name: &str,
        agent: bool,
        work: impl std::future::Future<Output = Option<Outcome>>,
    ) -> Outcome {
        let spec = &self.job.spec;
        let started =
            parse_rfc3339(&self.attempt.started_at).unwrap_or_else(time::OffsetDateTime::now_utc);
        let elapsed = (time::OffsetDateTime::now_utc() - started)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let remaining = spec.timeout.saturating_sub(elapsed);
        let deadline = tokio::time::Instant::now() + remaining;

        enum Why {
            Done(Outcome),
            Exited(Result<ExitStatus, SandboxError>),
            Timeout,
            Cancelled,
            Budget,
        }
        let budget = self
            .llm
            .as_ref()
            .map(|l| l.gateway.budget_signal(&self.job.id))
            .unwrap_or_default();
        let why = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Why::Cancelled,
            _ = budget.cancelled() => Why::Budget,
            _ = tokio::time::sleep_until(deadline) => Why::Timeout,
            end = work => match end {
                Some(outcome) => Why::Done(outcome),
                None => Why::Exited(self.sandbox.wait(name).await),
            },
            status = self.sandbox.wait(name) => Why::Exited(status),
        };
        let status = match why {
            Why::Exited(status) => status,
            Why::Done(_) | Why::Timeout | Why::Cancelled | Why::Budget => {
                if let Err(e) = self.sandbox.stop(name, self.config.stop_grace).await {
                    tracing::warn!(container = %name, "stop failed: {e}");
                }
                // The stop returns once the container is gone or killed; wait to be sure.
                let _ = self.sandbox.wait(name).await;
                return match why {
                    Why::Done(outcome) => outcome,
                    Why::Cancelled => Outcome::Cancelled,
                    Why::Budget => budget_outcome(spec),
                    _ => Outcome::failed(
                        Reason::Timeout,
                        None,
                        format!(
                            "ran past its {} timeout and was stopped",
                            crate::job::units::format_duration(spec.timeout)
                        ),
                    ),
                };
            }
        };
        // A job that ended on its own after the gateway refused it for budget failed for budget.
        if budget.is_cancelled() {
            return budget_outcome(spec);
        }
        match status {
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
        }
    }
}

/// A redactor for the job's secret values.
pub(crate) fn redactor(secrets: &[(String, Secret)]) -> Redactor {
    Redactor::new(secrets.iter().map(|(n, s)| (n.as_str(), s.expose())))
}

/// Copies a container's output into its capped log file (recreated); true when stored.
async fn copy_output(
    mut output: OutputStream,
    path: PathBuf,
    cap: u64,
    redactor: Redactor,
) -> bool {
    let mut log = match CappedLog::create(&path, cap).await {
        Ok(log) => log.redacting(redactor),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot write log: {e}");
            return false;
        }
    };
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(e) = log.write(&bytes).await {
                    tracing::error!(path = %path.display(), "cannot write log: {e}");
                    break;
                }
            }
            Err(e) => {
                tracing::debug!("output stream ended: {e}");
                break;
            }
        }
    }
    match log.finish().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot finish log: {e}");
            false
        }
    }
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

fn launch_failure(e: SandboxError) -> Outcome {
    Outcome::failed(
        Reason::Infra,
        None,
        format!("cannot start the container: {e}"),
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
