//! An agent attempt: upload the workspace, start the Aider session, write its transcript and let
//! the manager loop ([`super::drive`]) drive it under supervision.

use super::drive::{Drive, DriveEnd};
use super::redact::Redactor;
use super::workspace::Prepared;
use super::{artifacts_path, Attempt, Ending};
use crate::agent::session::{Session, QUIET};
use crate::sandbox::{Launched, Sandbox};
use crate::state::{JobState, Outcome, Reason};
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
        let (Some(output), Some(input), Some(llm)) = (launched.output, launched.input, &self.llm)
        else {
            // Adopted after a restart: Aider's session cannot be picked up again.
            let _ = self.sandbox.stop(name, self.config.stop_grace).await;
            return (
                Ending::Done(Outcome::failed(
                    Reason::Lost,
                    None,
                    "the agent session cannot be resumed after the runner restarted",
                )),
                false,
            );
        };
        let base = match super::workspace::upload(self.sandbox.as_ref(), name, prepared).await {
            Ok(base) => base,
            Err(outcome) => {
                let _ = self.sandbox.stop(name, self.config.stop_grace).await;
                return (Ending::Done(outcome), false);
            }
        };
        self.record_base(&base).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = tokio::spawn(super::transcript::write_transcript(
            rx,
            path.to_path_buf(),
            self.config.log_cap,
            self.store.clone(),
            self.job.id.clone(),
            self.attempt.n,
            redact.fresh(),
        ));
        let session = Session::start(output, input, tx, QUIET)
            .watch_llm_calls(llm.gateway.agent_calls(&self.job.id, self.attempt.n));
        // The manager's progress text may quote what Aider printed.
        let progress = |state: JobState, detail: Option<String>| {
            self.emit(state, detail.map(|d| redact.redact_str(&d)))
        };
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
            progress: &progress,
            redact,
            control: &self.control,
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
}
