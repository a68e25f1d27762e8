//! The end of an agent attempt: verify the work, export it as a patch (and bundle), and for
//! `output.mode: branch | pr` record the pending delivery (pushing the branch and opening the
//! pull request happen after the container stops, in `deliver`).
//!
//! A candidate of a best-of-N job that passes `verify` writes its patch and bundle, records its
//! change's size and waits for the round's selection (`store/candidates.rs`): the winner records
//! its result as the job's and goes on to deliver it; a loser removes its files and ends
//! `cancelled`. With `select: first-pass` the first to pass wins at once; with
//! `select: smallest-diff` the candidate waits, container kept, until no other may still pass.

use super::drive::Drive;
use super::{infra, Ending};
use crate::agent::protocol::TurnContext;
use crate::job::OutputMode;
use crate::sandbox::Sandbox;
use crate::state::{Outcome, Reason};
use crate::store::{
    DeliveryKind, DeliveryRecord, DeliveryState, EventBody, Selection, VerifyEvent,
};
use std::path::Path;

/// Output kept from one verify run.
const VERIFY_OUTPUT: usize = 64 << 10;

/// How often a candidate that passed asks whether the round has chosen.
const SELECTION_POLL: std::time::Duration = std::time::Duration::from_millis(250);

impl<S: Sandbox> Drive<'_, S> {
    /// Verifies, then exports. `Err` carries a verification failure to tell the manager, while
    /// turns remain; on the last turn it becomes the outcome `verify_failed`.
    pub(super) async fn finish(&self, ctx: &mut TurnContext) -> Result<Ending, String> {
        if let Some(argv) = &self.spec.verify {
            let started = std::time::Instant::now();
            let result = match crate::result::verify(
                self.sandbox,
                self.container,
                argv,
                VERIFY_OUTPUT,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return Ok(Ending::Done(infra(format!("cannot run verify: {e}")))),
            };
            self.record_verify(ctx.turn, &result, started.elapsed())
                .await;
            self.keep_verify_output(ctx.turn, &result).await;
            if !result.passed {
                let summary = format!(
                    "verification failed (exit code {}):\n{}",
                    result.code,
                    crate::agent::protocol::trim_middle(&result.output, 1_000, 3_000)
                );
                ctx.last_verify = Some(format!("failed with exit code {}", result.code));
                if ctx.turn >= ctx.max_turns {
                    return Ok(Ending::Done(Outcome::failed(
                        Reason::VerifyFailed,
                        Some(result.code),
                        format!("verify failed on the last turn (exit code {})", result.code),
                    )));
                }
                return Err(summary);
            }
            ctx.last_verify = Some("passed".into());
        }
        Ok(self.export().await)
    }

    /// Records a verify run as an event; a store error is logged (the verdict still counts).
    async fn record_verify(
        &self,
        turn: u32,
        result: &crate::result::VerifyResult,
        took: std::time::Duration,
    ) {
        let verify = EventBody::Verify(VerifyEvent {
            turn,
            passed: result.passed,
            exit_code: result.code,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        });
        let (job, n) = (self.job.clone(), self.attempt);
        if let Err(e) = self
            .store
            .call(move |s| s.add_event(&job, n, &verify))
            .await
        {
            tracing::warn!(job = %self.job, "cannot record the verify run: {e}");
        }
    }

    /// Keeps each verify run's output as an artifact (`verify-<turn>.log`).
    async fn keep_verify_output(&self, turn: u32, result: &crate::result::VerifyResult) {
        let path = self.artifacts.join(format!("verify-{turn}.log"));
        let text = format!(
            "exit code {}\n{}",
            result.code,
            self.redact.redact_str(&result.output)
        );
        let written = tokio::fs::create_dir_all(&self.artifacts).await.is_ok()
            && tokio::fs::write(&path, text).await.is_ok();
        if written {
            let (job, n, path) = (self.job.clone(), self.attempt, path.display().to_string());
            let _ = self
                .store
                .call(move |s| s.add_artifact(&job, n, "verify", &path))
                .await;
        }
    }

    /// Exports the result and records it; for `output.mode: branch | pr` also its pending
    /// delivery, which the attempt carries out once the container is stopped.
    async fn export(&self) -> Ending {
        let exported =
            match crate::result::export(self.sandbox, self.container, &self.base, &self.artifacts)
                .await
            {
                Ok(e) => e,
                // The job's own work named a path out of bounds: a retry is no cure.
                Err(e @ crate::result::ResultError::UnsafePath { .. }) => {
                    return Ending::permanent(Reason::Infra, format!("result refused: {e}"))
                }
                Err(e) => return infra(format!("cannot export the result: {e}")).into(),
            };
        if self.spec.candidates > 1 {
            match self.chosen(&exported).await {
                Ok(true) => {}
                Ok(false) => {
                    // Only the winner's result is exported.
                    let _ = tokio::fs::remove_file(&exported.patch).await;
                    if let Some(bundle) = &exported.bundle {
                        let _ = tokio::fs::remove_file(bundle).await;
                    }
                    return Ending::Done(Outcome::Cancelled);
                }
                Err(ending) => return ending,
            }
        }
        let mut artifacts = vec![("patch".to_string(), exported.patch.display().to_string())];
        if let Some(bundle) = &exported.bundle {
            artifacts.push(("bundle".into(), bundle.display().to_string()));
        }
        let delivery = match self.spec.output.mode {
            OutputMode::Patch => None,
            OutputMode::Branch | OutputMode::Pr => {
                match self.delivery(exported.bundle.as_deref()).await {
                    Ok(delivery) => Some(delivery),
                    Err(ending) => return ending,
                }
            }
        };
        let (job, n) = (self.job.clone(), self.attempt);
        match self
            .store
            .call(move |s| s.add_result(&job, n, &artifacts, delivery.as_ref()))
            .await
        {
            Ok(()) => Ending::Done(Outcome::Succeeded),
            Err(e) => infra(format!("cannot record the result: {e}")).into(),
        }
    }

    /// Records that this candidate passed with its change's size, then waits for the round's
    /// selection (the deadline and a cancel still apply: this runs under `supervise`). True when
    /// this candidate won.
    async fn chosen(&self, exported: &crate::result::Exported) -> Result<bool, Ending> {
        let patch = tokio::fs::read(&exported.patch)
            .await
            .map_err(|e| Ending::Done(infra(format!("cannot read the patch: {e}"))))?;
        let lines = changed_lines(&String::from_utf8_lossy(&patch));
        let (job, n, mode) = (self.job.clone(), self.attempt, self.spec.select);
        let store_error = |e: crate::store::StoreError| {
            Ending::Done(infra(format!("cannot record the candidate's result: {e}")))
        };
        let mut selection = self
            .store
            .call(move |s| s.candidate_passed(&job, n, lines, mode))
            .await
            .map_err(store_error)?;
        loop {
            match selection {
                Selection::Won(winner) => return Ok(winner == self.attempt),
                Selection::NonePassed => return Ok(false),
                Selection::Pending => tokio::time::sleep(SELECTION_POLL).await,
            }
            let job = self.job.clone();
            selection = self
                .store
                .call(move |s| s.candidate_selection(&job, mode))
                .await
                .map_err(store_error)?;
        }
    }

    /// The delivery of `bundle` for `output.mode: branch | pr`, with the bundle's hash, so that a
    /// file changed after the export is never delivered.
    /// Nothing to push is permanent; a bundle that cannot be read is not (a new attempt makes
    /// a new one).
    async fn delivery(&self, bundle: Option<&Path>) -> Result<DeliveryRecord, Ending> {
        let Some(bundle) = bundle else {
            return Err(Ending::permanent(
                Reason::Infra,
                "there are no changes to push",
            ));
        };
        let bundle_sha256 = crate::result::sha256_file(bundle)
            .await
            .map_err(|e| Ending::Done(infra(format!("cannot read {}: {e}", bundle.display()))))?;
        let branch = self.spec.output.branch.clone().unwrap_or_else(|| {
            format!(
                "runner/{}-{}",
                self.spec.name,
                self.job.as_str().to_ascii_lowercase()
            )
        });
        let kind = match self.spec.output.mode {
            OutputMode::Pr => DeliveryKind::Pr,
            _ => DeliveryKind::Branch,
        };
        Ok(DeliveryRecord {
            kind,
            branch,
            bundle: bundle.display().to_string(),
            bundle_sha256,
            state: DeliveryState::Pending,
        })
    }
}

/// Lines a patch adds or removes: `+` and `-` lines inside its hunks (not the commit messages,
/// the diffstat or the file headers).
pub(crate) fn changed_lines(patch: &str) -> u64 {
    let mut in_hunk = false;
    let mut lines = 0;
    for line in patch.lines() {
        if line.starts_with("@@") {
            in_hunk = true;
        } else if line.starts_with("diff --git ") || line.starts_with("From ") || line == "-- " {
            in_hunk = false;
        } else if in_hunk && (line.starts_with('+') || line.starts_with('-')) {
            lines += 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::changed_lines;

    #[test]
    fn changed_lines_count_hunk_lines_only() {
        let patch = "From 0123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\n- a bullet in the message\n---\n greet.py | 3 ++-\n\n\
diff --git a/greet.py b/greet.py\n--- a/greet.py\n+++ b/greet.py\n@@ -1,2 +1,3 @@\n def greet():\n-    pass\n+    return 1\n+# done\n\
-- \n2.39.5\n";
        assert_eq!(changed_lines(patch), 3);
        assert_eq!(changed_lines(""), 0);
    }
}
