//! The jobs this scheduler runs: starting an attempt's task, forwarding what the store asks of
//! it (cancel, messages, pause and resume) through its [`AttemptHandle`], and freeing its slot
//! when the task ends (recording a panicked one as `infra`).

use super::dispatch::Dispatcher;
use super::SchedulerError;
use crate::attempt::{Attempt, AttemptHandle, Control, LlmAccess};
use crate::job::JobSpec;
use crate::sandbox::Sandbox;
use crate::state::{JobId, Outcome, Reason};
use crate::store::{AttemptRecord, FinishResult, JobRecord};
use tokio::task::JoinError;

/// A job this scheduler is running.
pub(super) struct Running {
    pub spec: JobSpec,
    /// Its attempt: what to record and remove if the attempt's task panics.
    pub attempt: AttemptRecord,
    /// Whether the attempt was given the LLM gateway (its tokens are revoked at the end).
    pub llm: bool,
    /// Sends the attempt its controls.
    pub handle: AttemptHandle,
}

impl<S: Sandbox> Dispatcher<S> {
    /// An attempt task ended: its slot and what it held are free again. One that panicked could
    /// not record its outcome or clean up, so that is done here: the attempt ends `infra`.
    pub(super) async fn finished(
        &mut self,
        done: Result<(tokio::task::Id, FinishResult), JoinError>,
    ) {
        let (task, panicked) = match done {
            Ok((task, _)) => (task, None),
            Err(e) => (e.id(), Some(e)),
        };
        let Some(key) = self.task_jobs.remove(&task) else {
            return;
        };
        let Some(job) = self.running.remove(&key) else {
            return;
        };
        let id = key.0;
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
        // Retries count rounds of candidates for a best-of-N job: 1 + retries either way.
        let (jid, n, max) = (id.clone(), job.attempt.n, 1 + job.spec.retries);
        let recorded = outcome.clone();
        let result = self
            .store
            .call(move |s| s.finish_attempt(&jid, n, &recorded, max))
            .await;
        match result {
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
        if let Some(calls) = self.config.llm_concurrency {
            gateway.limit_concurrency(calls);
        }
        if let Some(addr) = self.config.gateway_listen {
            gateway
                .serve_network(addr)
                .await
                .map_err(|e| e.to_string())?;
        }
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
        let (mut handle, control) = crate::attempt::handle::channel();
        if job.cancel_requested {
            handle.send(Control::Cancel);
        }
        self.held.take(&job.spec);
        let key = (job.id.clone(), attempt.n);
        self.running.insert(
            key.clone(),
            Running {
                spec: job.spec.clone(),
                attempt: attempt.clone(),
                llm: llm.is_some(),
                handle,
            },
        );
        let task = Attempt {
            store: self.store.clone(),
            sandbox: self.sandbox.clone(),
            config: self.attempt_config.clone(),
            job,
            attempt,
            control,
            llm,
        };
        let handle = self.tasks.spawn(task.run());
        self.task_jobs.insert(handle.id(), key);
    }

    /// Forwards what the store newly asks of each running attempt (`runner cancel`, `send`,
    /// `pause`, `resume`, from any process) to its handle.
    pub(super) async fn forward_controls(&mut self) -> Result<(), SchedulerError> {
        if self.running.is_empty() {
            return Ok(());
        }
        let requested = self.store.call(|s| s.control_requests()).await?;
        for requests in requested {
            let key = (requests.job.clone(), requests.attempt);
            let Some(job) = self.running.get_mut(&key) else {
                continue;
            };
            for control in job.handle.forward(&requests) {
                tracing::debug!(job = %requests.job, ?control, "forwarded");
            }
        }
        Ok(())
    }
}
