//! An agent attempt: upload the workspace, start the Aider session, write its transcript and let
//! the manager loop ([`super::drive`]) drive it under supervision.

use super::drive::{Drive, DriveEnd, Resumed};
use super::redact::Redactor;
use super::workspace::Prepared;
use super::{artifacts_path, infra, Attempt, Ending};
use crate::agent::session::{Replay, Session, QUIET};
use crate::sandbox::{Launched, Reattached, Sandbox, SandboxError};
use crate::state::Outcome;
use crate::store::{AdoptedEvent, EventBody, Input};
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;

impl<S: Sandbox> Attempt<S> {
    /// An agent: upload the workspace, start the Aider session and let the manager drive it.
    pub(super) async fn run_agent(
        &self,
        name: &str,
        launched: Launched,
        prepared: Prepared,
        path: &Path,
        redact: &Redactor,
    ) -> (Ending, bool) {
        let sandbox = self.sandbox.as_ref();
        let Some(llm) = &self.llm else {
            let _ = sandbox.stop(name, self.config.stop_grace).await;
            return (
                Ending::Done(infra("the LLM gateway is not available".into())),
                false,
            );
        };
        // Adopted after a restart: the session goes on where its checkpoint left it.
        let adopted = !launched.started;
        let base = match self.workspace_base(name, prepared, adopted).await {
            Ok(base) => base,
            Err(outcome) => {
                let _ = sandbox.stop(name, self.config.stop_grace).await;
                return (Ending::Done(outcome), false);
            }
        };
        let (output, input, replay, resume) = match (launched.output, launched.input) {
            (Some(output), Some(input)) => (output, input, Replay::default(), None),
            _ => match self.resume_point(name).await {
                Ok((reattached, replay, resumed)) => {
                    (reattached.output, reattached.input, replay, Some(resumed))
                }
                Err(e) => {
                    let _ = sandbox.stop(name, self.config.stop_grace).await;
                    return (
                        Ending::Done(infra(format!("cannot attach to Aider again: {e}"))),
                        false,
                    );
                }
            },
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let target = super::transcript::Target {
            path: path.to_path_buf(),
            cap: self.config.log_cap,
            store: self.store.clone(),
            job: self.job.id.clone(),
            attempt: self.attempt.n,
            resume: adopted,
        };
        let writer = tokio::spawn(super::transcript::write_transcript(
            rx,
            target,
            redact.fresh(),
        ));
        let session = Session::resume(output, input, tx, QUIET, replay)
            .watch_llm_calls(llm.gateway.agent_calls(&self.job.id, self.attempt.n));
        let drive = Drive {
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
            redact,
            control: &self.control,
            resume,
        };
        let work = async move {
            match drive.run(session).await {
                DriveEnd::Done(ending) => Some(ending),
                DriveEnd::AiderExited => None,
            }
        };
        let ending = self.supervise(name, true, work).await;
        // The container is stopped by now: the session's output has ended, so the writer ends.
        let stored = match tokio::time::timeout(Duration::from_secs(30), writer).await {
            Ok(Ok(stored)) => stored,
            _ => false,
        };
        (ending, stored)
    }

    /// The commit the work starts from: the workspace is uploaded now, unless an adopted
    /// container has it already (its base was recorded when it was uploaded).
    async fn workspace_base(
        &self,
        name: &str,
        prepared: Prepared,
        adopted: bool,
    ) -> Result<String, Outcome> {
        let sandbox = self.sandbox.as_ref();
        if adopted && super::workspace::uploaded(sandbox, name).await {
            let (id, n) = (self.job.id.clone(), self.attempt.n);
            match self.store.call(move |s| s.base_commit(&id, n)).await {
                Ok(Some(base)) => return Ok(base),
                Ok(None) => {}
                Err(e) => return Err(infra(format!("cannot read the base commit: {e}"))),
            }
        }
        let base = super::workspace::upload(sandbox, name, prepared).await?;
        self.record_base(&base).await;
        Ok(base)
    }

    /// Where an adopted attempt's session stood: its checkpoint and turns from the store, how
    /// much output its stored transcript holds, and whether the last input recorded reached
    /// Aider (it printed a line after it; it does at once); then its stdio attached again.
    async fn resume_point(
        &self,
        name: &str,
    ) -> Result<(Reattached, Replay, Resumed), SandboxError> {
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let stored = self
            .store
            .call(move |s| {
                let checkpoint = s.checkpoint(&id, n)?.unwrap_or_default();
                let turns = s
                    .events(&id)?
                    .into_iter()
                    .filter(|e| e.attempt == Some(n))
                    .filter_map(|e| match e.body {
                        EventBody::Turn(turn) => Some(turn),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                let message = match checkpoint.last {
                    Some(Input::Message(seq)) => s.message_text(&id, seq)?,
                    _ => None,
                };
                let offset = s.transcript_offset(&id, n)?;
                Ok((checkpoint, turns, message, offset))
            })
            .await;
        let (checkpoint, turns, message, transcript_from) = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(job = %self.job.id, "cannot read where the session stood: {e}");
                Default::default()
            }
        };
        let last = checkpoint.inputs.last().copied();
        if let Some(at) = last {
            if self.logged_length(name).await <= at {
                // Nothing printed after the last input yet: give Aider a moment to show it
                // read it.
                tokio::time::sleep(UNTYPED_GRACE).await;
            }
        }
        let reattached = self.sandbox.reattach(name).await?;
        let typed = last.is_none_or(|at| reattached.logged > at);
        let (id, n) = (self.job.id.clone(), self.attempt.n);
        let adopted = AdoptedEvent {
            container: name.to_string(),
            turn: checkpoint.turn,
        };
        if let Err(e) = self
            .store
            .call(move |s| s.add_adopted_event(&id, n, &adopted))
            .await
        {
            tracing::warn!(job = %self.job.id, "cannot record the adoption: {e}");
        }
        tracing::info!(
            job = %self.job.id,
            turn = checkpoint.turn,
            typed,
            "adopting an agent session"
        );
        let replay = Replay {
            session_from: checkpoint.unseen_from,
            transcript_from,
            inputs: checkpoint.inputs.clone(),
            until: reattached.logged,
        };
        let resumed = Resumed {
            checkpoint,
            turns,
            typed,
            message,
        };
        Ok((reattached, replay, resumed))
    }

    /// How many bytes of output the engine's log holds (complete lines).
    async fn logged_length(&self, name: &str) -> u64 {
        let mut logs = self.sandbox.logs(name, false);
        let mut length = 0u64;
        while let Some(Ok(chunk)) = logs.next().await {
            length += chunk.len() as u64;
        }
        length
    }
}

/// How long an adopted session waits for Aider to show that it read the last input recorded
/// before the restart; after that the input is typed (again: it never arrived).
const UNTYPED_GRACE: Duration = Duration::from_secs(3);
