//! A plain command job: its repository uploaded if it names one, its output copied into the
//! attempt's capped log while it runs (or read back from the engine for an adopted container).

use super::logfile::CappedLog;
use super::redact::Redactor;
use super::workspace::Prepared;
use super::{Attempt, Ending};
use crate::sandbox::{Launched, OutputStream, Sandbox};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl<S: Sandbox> Attempt<S> {
    /// A plain command: copy its output while it runs; returns how it ended and whether the log
    /// was stored.
    pub(super) async fn run_command(
        &self,
        name: &str,
        launched: Launched,
        prepared: Option<Prepared>,
        path: &Path,
        redact: &Redactor,
    ) -> (Ending, bool) {
        if let Some(prepared) = prepared {
            // The command waits for its repository; an adopted container may have it already.
            let sandbox = self.sandbox.as_ref();
            let needed =
                launched.output.is_some() || !super::workspace::uploaded(sandbox, name).await;
            if needed {
                match super::workspace::upload(sandbox, name, prepared).await {
                    Ok(base) => self.record_base(&base).await,
                    Err(outcome) => {
                        let _ = self.sandbox.stop(name, self.config.stop_grace).await;
                        return (Ending::Done(outcome), false);
                    }
                }
            }
        }
        // An adopted container's output is read back from the engine: follow it live, and once
        // it has exited read it whole again (following can miss the last output).
        let adopted = launched.output.is_none();
        if adopted {
            // Recorded once the gateway serves the attempt again (`connect_llm` came first).
            let (id, n) = (self.job.id.clone(), self.attempt.n);
            let event = crate::store::AdoptedEvent {
                container: name.to_string(),
                turn: 0,
            };
            if let Err(e) = self
                .store
                .call(move |s| s.add_adopted_event(&id, n, &event))
                .await
            {
                tracing::warn!(job = %self.job.id, "cannot record the adoption: {e}");
            }
        }
        let output = launched
            .output
            .unwrap_or_else(|| self.sandbox.logs(name, true));
        let copy = tokio::spawn(copy_output(
            output,
            path.to_path_buf(),
            self.config.log_cap,
            redact.fresh(),
        ));
        let ending = self
            .supervise(name, false, std::future::pending::<Option<Ending>>())
            .await;
        let mut stored = match tokio::time::timeout(Duration::from_secs(30), copy).await {
            Ok(Ok(stored)) => stored,
            _ => {
                tracing::warn!(job = %self.job.id, "output copy did not finish within 30s");
                false
            }
        };
        // Read again only while the container is there: a stopped Kubernetes pod is gone with
        // its log, and an empty read would replace the copy made while following.
        if adopted && matches!(self.sandbox.inspect(name).await, Ok(Some(_))) {
            stored = copy_output(
                self.sandbox.logs(name, false),
                path.to_path_buf(),
                self.config.log_cap,
                redact.fresh(),
            )
            .await;
        }
        (ending, stored)
    }
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
