//! Reconciling with the engine when a scheduler starts: the database says which jobs were active,
//! the engine's labels say which containers exist. Active jobs whose container exists are adopted
//! (their attempt task resumes: deadline from the recorded start, log rebuilt from the container);
//! a `starting` job with no container is launched again under the same deterministic name, and
//! an attempt with an exported result still to deliver finishes its delivery; a
//! `running` job whose container vanished ends `lost` (or is retried, per `retries`); containers no
//! active job owns are removed. The candidates of a best-of-N job are not adopted (a candidate may
//! have been waiting for the others, which a restarted manager loop cannot tell): each ends `lost`
//! and its container is removed, so the round ends and is retried per `retries`; only a winner
//! with a result to deliver is adopted, to deliver it.

use super::dispatch::Dispatcher;
use super::SchedulerError;
use crate::sandbox::Sandbox;
use crate::state::{JobState, Outcome, Reason};
use std::collections::HashSet;

impl<S: Sandbox> Dispatcher<S> {
    /// Removes containers of this state dir that no running attempt owns (left behind when the
    /// engine was unreachable at the end of an attempt, say). Called periodically and whenever the
    /// engine comes back.
    pub(crate) async fn sweep_orphans(&mut self) -> Result<(), SchedulerError> {
        let state_id = self.store.state_id();
        let owned = self.sandbox.list_owned(&state_id).await?;
        if owned.is_empty() {
            return Ok(());
        }
        let active: HashSet<String> = self
            .store
            .call(|s| s.active())
            .await?
            .into_iter()
            .filter_map(|(_, a)| a.map(|a| a.container))
            .collect();
        for container in owned {
            // A relay lives as long as the attempt it serves.
            if !active.contains(crate::sandbox::attempt_of(&container.name)) {
                tracing::info!(container = %container.name, "removing a container no job owns");
                if let Err(e) = self.sandbox.remove(&container.name).await {
                    tracing::warn!(container = %container.name, "cannot remove: {e}");
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn reconcile(&mut self) -> Result<(), SchedulerError> {
        let state_id = self.store.state_id();
        let owned = self.sandbox.list_owned(&state_id).await?;
        let active = self.store.call(|s| s.active()).await?;
        let existing: HashSet<&str> = owned
            .iter()
            .filter(|c| !c.leftover)
            .map(|c| c.name.as_str())
            .collect();
        let mut keep = HashSet::new();
        for (job, attempt) in active {
            let Some(attempt) = attempt else {
                tracing::warn!(job = %job.id, "active job without an attempt; leaving it");
                continue;
            };
            let exists = existing.contains(attempt.container.as_str());
            // An exported result still to be delivered needs no container: adopt it to finish.
            let (id, n) = (job.id.clone(), attempt.n);
            let delivering = matches!(
                self.store.call(move |s| s.delivery(&id, n)).await,
                Ok(Some(_))
            );
            let candidate = job.spec.candidates > 1;
            if delivering || (!candidate && (exists || job.state == JobState::Starting)) {
                tracing::info!(job = %job.id, container = %attempt.container, "adopting");
                keep.insert(attempt.container.clone());
                self.start(job, attempt).await;
            } else {
                let (id, n, max) = (job.id.clone(), attempt.n, 1 + job.spec.retries);
                let why = if candidate {
                    "the scheduler restarted while this candidate ran (candidates are not adopted)"
                } else {
                    "the container vanished while no scheduler was watching it"
                };
                let outcome = Outcome::failed(Reason::Lost, None, why);
                self.store
                    .call(move |s| s.finish_attempt(&id, n, &outcome, max))
                    .await?;
            }
        }
        for container in owned {
            if !keep.contains(crate::sandbox::attempt_of(&container.name)) {
                tracing::info!(container = %container.name, "removing a container no job owns");
                if let Err(e) = self.sandbox.remove(&container.name).await {
                    tracing::warn!(container = %container.name, "cannot remove: {e}");
                }
            }
        }
        Ok(())
    }
}
