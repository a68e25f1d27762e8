//! The dispatcher loop: the single owner of what runs. It admits queued jobs, starts their
//! attempts (`running`), forwards what `runner cancel`, `send`, `pause` and `resume` stored, scans the jobs dir, and turns signals into a drain or a kill.

use super::admission::{admit, Admission, Held, Limits};
use super::running::Running;
use super::{SchedulerConfig, SchedulerError, Scope, Shutdown};
use crate::attempt::{AttemptConfig, Control, LlmAccess};
use crate::job;
use crate::sandbox::Sandbox;
use crate::state::{JobId, JobState, Reason};
use crate::store::{FinishResult, SharedStore};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::task::JoinSet;

/// How many queued jobs one pass looks at.
const QUEUE_WINDOW: usize = 512;

pub(crate) struct Dispatcher<S: Sandbox> {
    pub store: SharedStore,
    pub sandbox: Arc<S>,
    pub config: Arc<SchedulerConfig>,
    /// `config.attempt`, shared by the attempts.
    pub(super) attempt_config: Arc<AttemptConfig>,
    limits: Limits,
    pub(super) held: Held,
    /// The attempts running, by job and attempt number (a best-of-N job runs several).
    pub(super) running: HashMap<(JobId, u32), Running>,
    /// One task per attempt. A task that panics is known by its id, so its slot is freed.
    pub(super) tasks: JoinSet<FinishResult>,
    /// The job and attempt each attempt task runs.
    pub(super) task_jobs: HashMap<tokio::task::Id, (JobId, u32)>,
    /// Jobs-dir files already reported as invalid (path and message), so each is said once.
    reported: HashSet<String>,
    /// The LLM gateway, started when the first `network: llm` job needs it.
    pub(super) llm: Option<LlmAccess>,
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
) -> Result<(), SchedulerError> {
    // This process runs the gateway of its LLM jobs: `/metrics` counts its refusals from 0.
    crate::llm::gateway::runs_in_this_process();
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
        attempt_config: Arc::new(config.attempt.clone()),
        config: Arc::new(config),
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
                for job in self.running.values_mut() {
                    job.handle.send(Control::Cancel);
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
            self.forward_controls().await?;
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
        tracing::debug!(jobs = cancelled.len(), "cancelled queued jobs");
        Ok(())
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
            // A best-of-N job starts all its candidates at once, each holding a slot.
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
                        tracing::info!(job = %job.id, "cannot ever start: {why}");
                    }
                }
                Admission::Start => {
                    let state_id = self.store.state_id();
                    let id = job.id.clone();
                    let candidates = job.spec.candidates;
                    let claimed = self
                        .store
                        .call(move |s| {
                            s.claim_round(&id, candidates, |n| {
                                crate::sandbox::Labels {
                                    state: state_id.clone(),
                                    job: id.to_string(),
                                    attempt: n,
                                }
                                .container_name()
                            })
                        })
                        .await?;
                    for attempt in claimed.unwrap_or_default() {
                        self.start(job.clone(), attempt).await;
                    }
                    if self.held.jobs >= self.limits.parallel {
                        break;
                    }
                }
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
