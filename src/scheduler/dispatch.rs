//! The dispatcher loop: the single owner of what runs. It admits queued jobs, starts their
//! attempts, forwards cancel requests, scans the jobs dir, and turns signals into a drain or a kill.

use super::admission::{admit, Admission, Held, Limits};
use super::{Event, SchedulerConfig, SchedulerError, Scope, Shutdown};
use crate::attempt::{Attempt, LlmAccess};
use crate::job::{self, JobSpec};
use crate::sandbox::Sandbox;
use crate::state::{JobId, JobState, Outcome, Reason};
use crate::store::{AttemptRecord, FinishResult, JobRecord, SharedStore};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// How many queued jobs one pass looks at.
const QUEUE_WINDOW: usize = 512;

/// A job this scheduler is running.
struct Running {
    spec: JobSpec,
    /// Its attempt: what to record and remove if the attempt's task panics.
    attempt: AttemptRecord,
    /// Whether the attempt was given the LLM gateway (its tokens are revoked at the end).
    llm: bool,
    cancel: CancellationToken,
}

pub(crate) struct Dispatcher<S: Sandbox> {
    pub store: SharedStore,
    pub sandbox: Arc<S>,
    pub config: Arc<SchedulerConfig>,
    pub events: Option<UnboundedSender<Event>>,
    limits: Limits,
    held: Held,
    running: HashMap<JobId, Running>,
    /// One task per attempt. A task that panics is known by its id, so its slot is freed.
    tasks: JoinSet<FinishResult>,
    /// The job each attempt task runs.
    task_jobs: HashMap<tokio::task::Id, JobId>,
    /// Jobs-dir files already reported as invalid (path and message), so each is said once.
    reported: HashSet<String>,
    /// The LLM gateway, started when the first `network: llm` job needs it.
    llm: Option<LlmAccess>,
    /// The engine did not answer the last ping: no job starts until it does.
    engine_down: bool,
}

/// How often a long-lived scheduler looks for containers no job owns.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs a scheduler until its scope is done (`Scope::Only`) or it is shut down.
pub async fn run<S: Sandbox>(
    store: SharedStore,
    sandbox: Arc<S>,
    config: SchedulerConfig,
    scope: Scope,
    shutdown: Shutdown,
    events: Option<UnboundedSender<Event>>,
) -> Result<(), SchedulerError> {
    let capacity = sandbox.capacity().await?;
    let limits = Limits {
        parallel: config.parallel.max(1),
        group_limits: config.group_limits.clone(),
        cpus: config.host_cpus.unwrap_or(capacity.cpus),
        memory: config.host_memory.unwrap_or(capacity.memory),
    };
    let mut d = Dispatcher {
        store,
        sandbox,
        config: Arc::new(config),
        events,
        limits,
        held: Held::default(),
        running: HashMap::new(),
        tasks: JoinSet::new(),
        task_jobs: HashMap::new(),
        reported: HashSet::new(),
        llm: None,
        engine_down: false,
    };
    d.reconcile().await?;
    let result = d.run_loop(scope, shutdown).await;
    if let Some(llm) = &d.llm {
        llm.gateway.shutdown();
    }
    result
}

impl<S: Sandbox> Dispatcher<S> {
    async fn run_loop(&mut self, scope: Scope, shutdown: Shutdown) -> Result<(), SchedulerError> {
        let mut draining = false;
        let mut killed = false;
        let mut next_scan = tokio::time::Instant::now();
        let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
        loop {
            if shutdown.drain.is_cancelled() && !draining {
                draining = true;
                tracing::info!(
                    "draining: no new jobs start; {} running",
                    self.running.len()
                );
                if let Scope::Only(ids) = &scope {
                    self.cancel_queued(ids).await?;
                }
            }
            if shutdown.kill.is_cancelled() && !killed {
                killed = true;
                tracing::info!("stopping {} running jobs", self.running.len());
                for job in self.running.values() {
                    job.cancel.cancel();
                }
            }
            if !draining {
                if let Some(dir) = self.config.jobs_dir.clone() {
                    if tokio::time::Instant::now() >= next_scan {
                        self.scan_jobs_dir(&dir).await;
                        next_scan = tokio::time::Instant::now() + self.config.jobs_dir_interval;
                    }
                }
                if self.engine_ready().await {
                    self.dispatch(&scope).await?;
                }
                if tokio::time::Instant::now() >= next_sweep && !self.engine_down {
                    next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
                    if let Err(e) = self.sweep_orphans().await {
                        tracing::warn!("cannot sweep containers: {e}");
                    }
                }
            }
            self.forward_cancels().await?;
            if self.running.is_empty() && (draining || self.scope_done(&scope).await?) {
                return Ok(());
            }
            tokio::select! {
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(done).await
                }
                _ = tokio::time::sleep(self.config.tick) => {}
                _ = shutdown.drain.cancelled(), if !draining => {}
                _ = shutdown.kill.cancelled(), if !killed => {}
            }
        }
    }

    /// Pings the engine; while it is unreachable no job starts (queued jobs wait instead of
    /// failing). When it comes back, containers left behind meanwhile are removed.
    async fn engine_ready(&mut self) -> bool {
        match self.sandbox.ping().await {
            Ok(()) => {
                if self.engine_down {
                    self.engine_down = false;
                    tracing::info!("the engine answers again");
                    if let Err(e) = self.sweep_orphans().await {
                        tracing::warn!("cannot sweep containers: {e}");
                    }
                }
                true
            }
            Err(e) => {
                if !self.engine_down {
                    tracing::warn!("{e}; jobs wait until it answers");
                    self.engine_down = true;
                }
                false
            }
        }
    }

    /// An attempt task ended: its slot and what it held are free again. One that panicked could
    /// not record its outcome or clean up, so that is done here: the attempt ends `infra`.
    async fn finished(&mut self, done: Result<(tokio::task::Id, FinishResult), JoinError>) {
        let (task, panicked) = match done {
            Ok((task, _)) => (task, None),
            Err(e) => (e.id(), Some(e)),
        };
        let Some(id) = self.task_jobs.remove(&task) else {
            return;
        };
        let Some(job) = self.running.remove(&id) else {
            return;
        };
        self.held.release(&job.spec);
        if let Some(e) = panicked {
            self.end_panicked(&id, job, e).await;
        }
    }

    /// Records a panicked attempt as `infra` (retried per `retries`), then removes its
    /// container and relay and revokes its gateway tokens, as the attempt would have.
    async fn end_panicked(&self, id: &JobId, job: Running, e: JoinError) {
        let why = match e.try_into_panic() {
            Ok(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into()),
            Err(e) => e.to_string(),
        };
        tracing::error!(job = %id, "the attempt's task panicked: {why}");
        let outcome = Outcome::failed(
            Reason::Infra,
            None,
            format!("the runner failed while running this attempt (it panicked: {why})"),
        );
        let (jid, n, max) = (id.clone(), job.attempt.n, 1 + job.spec.retries);
        let recorded = outcome.clone();
        let result = self
            .store
            .call(move |s| s.finish_attempt(&jid, n, &recorded, max))
            .await;
        match result {
            Ok(FinishResult::Finished(state)) => {
                if let Outcome::Failed { detail, .. } = outcome {
                    self.emit_for(id, &job.spec.name, state, Some(detail));
                }
            }
            Ok(FinishResult::Requeued) => self.emit_for(
                id,
                &job.spec.name,
                JobState::Queued,
                Some("retrying after an infrastructure failure".into()),
            ),
            Ok(_) => {}
            // Left active: the next scheduler adopts the attempt.
            Err(e) => {
                tracing::error!(job = %id, "cannot record the outcome: {e}");
                return;
            }
        }
        let container = &job.attempt.container;
        if let Err(e) = self.sandbox.remove(container).await {
            tracing::warn!(container = %container, "cannot remove container: {e}");
        }
        if job.llm {
            let relay = crate::sandbox::Labels {
                state: self.store.state_id(),
                job: id.to_string(),
                attempt: n,
            }
            .relay_name();
            if let Err(e) = self.sandbox.remove(&relay).await {
                tracing::warn!(container = %relay, "cannot remove the gateway relay: {e}");
            }
            if let Some(llm) = &self.llm {
                if let Err(e) = llm.gateway.revoke(id, n).await {
                    tracing::warn!(job = %id, "cannot revoke gateway tokens: {e}");
                }
            }
        }
    }

    async fn scope_done(&self, scope: &Scope) -> Result<bool, SchedulerError> {
        match scope {
            Scope::All => Ok(false),
            Scope::Only(ids) => {
                let ids = ids.clone();
                let jobs = self.store.call(move |s| s.jobs(&ids)).await?;
                Ok(jobs.iter().all(|j| j.state.is_terminal()))
            }
        }
    }

    async fn cancel_queued(&self, ids: &[JobId]) -> Result<(), SchedulerError> {
        let ids = ids.to_vec();
        let cancelled = self
            .store
            .call(move |s| {
                let mut cancelled = Vec::new();
                for job in s.jobs(&ids)? {
                    if job.state == JobState::Queued {
                        s.cancel(&job.id)?;
                        cancelled.push(job);
                    }
                }
                Ok(cancelled)
            })
            .await?;
        for job in cancelled {
            self.emit(
                &job,
                JobState::Cancelled,
                Some("interrupted before it started".into()),
            );
        }
        Ok(())
    }

    fn emit(&self, job: &JobRecord, state: JobState, detail: Option<String>) {
        self.emit_for(&job.id, &job.name, state, detail);
    }

    fn emit_for(&self, id: &JobId, name: &str, state: JobState, detail: Option<String>) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Event {
                job: id.clone(),
                name: name.to_string(),
                state,
                detail,
            });
        }
    }

    /// Starts every queued job that fits, oldest first; smaller jobs may pass a blocked larger one.
    async fn dispatch(&mut self, scope: &Scope) -> Result<(), SchedulerError> {
        if self.held.jobs >= self.limits.parallel {
            return Ok(());
        }
        let queued = match scope {
            Scope::Only(ids) => {
                let ids = ids.clone();
                self.store.call(move |s| s.queued_among(&ids)).await?
            }
            Scope::All => self.store.call(|s| s.queued(QUEUE_WINDOW)).await?,
        };
        for job in queued {
            match admit(&job.spec, &self.held, &self.limits) {
                Admission::Wait => continue,
                Admission::Never(why) => {
                    let id = job.id.clone();
                    let detail = why.clone();
                    if self
                        .store
                        .call(move |s| s.fail_queued(&id, Reason::Infra, &detail))
                        .await?
                    {
                        self.emit(&job, JobState::Failed, Some(why));
                    }
                }
                Admission::Start => {
                    let state_id = self.store.state_id();
                    let id = job.id.clone();
                    let claimed = self
                        .store
                        .call(move |s| {
                            s.claim(&id, |n| {
                                crate::sandbox::Labels {
                                    state: state_id,
                                    job: id.to_string(),
                                    attempt: n,
                                }
                                .container_name()
                            })
                        })
                        .await?;
                    if let Some(attempt) = claimed {
                        self.emit(&job, JobState::Starting, None);
                        self.start(job, attempt).await;
                    }
                    if self.held.jobs >= self.limits.parallel {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The gateway for `network: llm` jobs, started on first use.
    async fn llm_access(&mut self) -> Result<LlmAccess, String> {
        if let Some(llm) = &self.llm {
            return Ok(llm.clone());
        }
        let gateway = crate::llm::Gateway::start(
            self.store.clone(),
            self.config.run_dir.clone(),
            self.config.prices.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let access = LlmAccess { gateway };
        self.llm = Some(access.clone());
        Ok(access)
    }

    /// Spawns the task of one attempt and accounts for what it holds.
    pub(crate) async fn start(&mut self, job: JobRecord, attempt: AttemptRecord) {
        let llm = if job.spec.network == crate::job::NetworkMode::Llm || job.spec.is_agent() {
            match self.llm_access().await {
                Ok(access) => Some(access),
                Err(why) => {
                    tracing::error!(job = %job.id, "{why}");
                    None
                }
            }
        } else {
            None
        };
        let cancel = CancellationToken::new();
        if job.cancel_requested {
            cancel.cancel();
        }
        self.held.take(&job.spec);
        self.running.insert(
            job.id.clone(),
            Running {
                spec: job.spec.clone(),
                attempt: attempt.clone(),
                llm: llm.is_some(),
                cancel: cancel.clone(),
            },
        );
        let id = job.id.clone();
        let task = Attempt {
            store: self.store.clone(),
            sandbox: self.sandbox.clone(),
            config: self.config.clone(),
            job,
            attempt,
            cancel,
            llm,
            events: self.events.clone(),
        };
        let handle = self.tasks.spawn(task.run());
        self.task_jobs.insert(handle.id(), id);
    }

    async fn forward_cancels(&self) -> Result<(), SchedulerError> {
        if self.running.is_empty() {
            return Ok(());
        }
        let requested = self.store.call(|s| s.cancel_requests()).await?;
        for id in requested {
            if let Some(job) = self.running.get(&id) {
                job.cancel.cancel();
            }
        }
        Ok(())
    }

    /// Submits each new or changed job file of the jobs dir once; reports invalid files once.
    async fn scan_jobs_dir(&mut self, dir: &std::path::Path) {
        let files = match job::job_files_in(dir) {
            Ok(files) => files,
            Err(e) => {
                let msg = format!("cannot read jobs dir {}: {e}", dir.display());
                if self.reported.insert(msg.clone()) {
                    tracing::warn!("{msg}");
                }
                return;
            }
        };
        for path in files {
            let loaded = match job::load_file(&path) {
                Ok(loaded) => loaded,
                Err(errors) => {
                    for e in errors {
                        if self.reported.insert(e.to_string()) {
                            tracing::warn!("skipping invalid job file: {e}");
                        }
                    }
                    continue;
                }
            };
            let key = loaded.path.display().to_string();
            let result = self
                .store
                .call(move |s| s.submit_from_jobs_dir(&key, &loaded.content_hash, &loaded.spec))
                .await;
            match result {
                Ok(Some(id)) => {
                    tracing::info!(job = %id, file = %path.display(), "submitted from jobs dir")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(file = %path.display(), "cannot submit: {e}"),
            }
        }
    }
}
