//! The end of an agent attempt: verify the work, export it as a patch (and bundle), and for
//! `output.mode: branch | pr` push the branch and open the pull request.

use super::drive::Drive;
use super::infra;
use crate::agent::protocol::TurnContext;
use crate::job::OutputMode;
use crate::sandbox::Sandbox;
use crate::state::{JobState, Outcome, Reason};
use std::path::Path;

/// Output kept from one verify run.
const VERIFY_OUTPUT: usize = 64 << 10;

impl<S: Sandbox> Drive<'_, S> {
    /// Verifies, then exports. `Err` carries a verification failure to tell the manager, while
    /// turns remain; on the last turn it becomes the outcome `verify_failed`.
    pub(super) async fn finish(&self, ctx: &mut TurnContext) -> Result<Outcome, String> {
        if let Some(argv) = &self.spec.verify {
            (self.progress)(JobState::Running, Some("verifying".into()));
            let result = match crate::result::verify(
                self.sandbox,
                self.container,
                argv,
                VERIFY_OUTPUT,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return Ok(infra(format!("cannot run verify: {e}"))),
            };
            self.keep_verify_output(ctx.turn, &result).await;
            if !result.passed {
                let summary = format!(
                    "verification failed (exit code {}):\n{}",
                    result.code,
                    crate::agent::protocol::trim_middle(&result.output, 1_000, 3_000)
                );
                ctx.last_verify = Some(format!("failed with exit code {}", result.code));
                if ctx.turn >= ctx.max_turns {
                    return Ok(Outcome::failed(
                        Reason::VerifyFailed,
                        Some(result.code),
                        format!("verify failed on the last turn (exit code {})", result.code),
                    ));
                }
                return Err(summary);
            }
            ctx.last_verify = Some("passed".into());
        }
        Ok(self.export().await)
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

    async fn export(&self) -> Outcome {
        (self.progress)(JobState::Running, Some("exporting the result".into()));
        let exported =
            match crate::result::export(self.sandbox, self.container, &self.base, &self.artifacts)
                .await
            {
                Ok(e) => e,
                Err(e) => return infra(format!("cannot export the result: {e}")),
            };
        let mut artifacts = vec![("patch".to_string(), exported.patch.display().to_string())];
        if let Some(bundle) = &exported.bundle {
            artifacts.push(("bundle".into(), bundle.display().to_string()));
        }
        let (job, n) = (self.job.clone(), self.attempt);
        let rows = artifacts.clone();
        if let Err(e) = self
            .store
            .call(move |s| {
                for (kind, path) in &rows {
                    s.add_artifact(&job, n, kind, path)?;
                }
                Ok(())
            })
            .await
        {
            return infra(format!("cannot record artifacts: {e}"));
        }
        match self.spec.output.mode {
            OutputMode::Patch => Outcome::Succeeded,
            OutputMode::Branch | OutputMode::Pr => {
                match self.publish(exported.bundle.as_deref()).await {
                    Ok(()) => Outcome::Succeeded,
                    Err(why) => Outcome::permanent(Reason::Infra, why),
                }
            }
        }
    }

    /// `output.mode: branch | pr`: pushes the branch from the host and opens the pull request.
    async fn publish(&self, bundle: Option<&Path>) -> Result<(), String> {
        let Some(bundle) = bundle else {
            return Err("there are no changes to push".into());
        };
        let Some(source) = self.spec.repo.clone() else {
            return Err("output.mode branch/pr needs a repo".into());
        };
        let branch = self.spec.output.branch.clone().unwrap_or_else(|| {
            format!(
                "runner/{}-{}",
                self.spec.name,
                self.job.as_str().to_ascii_lowercase()
            )
        });
        let (cache, bundle_path, b) = (self.cache.clone(), bundle.to_path_buf(), branch.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mirror = crate::repo::mirror(&cache, &source).map_err(|e| e.to_string())?;
            crate::repo::push_branch(&source, &mirror, &bundle_path, &b).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        if self.spec.output.mode == OutputMode::Pr {
            let crate::job::RepoSource::Url(url) = self.spec.repo.as_ref().expect("checked") else {
                return Err("a pull request needs a repo URL".into());
            };
            let repo = crate::result::pr_repo_of(url, &self.spec.output.api_url)
                .ok_or_else(|| format!("{url} does not name a GitHub repository (owner/name)"))?;
            let token = std::env::var(&self.spec.output.token_env).map_err(|_| {
                format!(
                    "output.token_env: the host environment variable {} is not set",
                    self.spec.output.token_env
                )
            })?;
            let base = self.spec.output.base.clone();
            let title = self
                .spec
                .output
                .title
                .clone()
                .unwrap_or_else(|| format!("runner: {}", self.spec.name));
            let url = crate::result::open_pull_request(
                &self.spec.output.api_url,
                &token,
                &repo,
                &branch,
                &base,
                &title,
                &format!("Opened by runner for job {}.", self.job),
            )
            .await
            .map_err(|e| e.to_string())?;
            let (job, n) = (self.job.clone(), self.attempt);
            let _ = self
                .store
                .call(move |s| s.add_artifact(&job, n, "pull_request", &url))
                .await;
        }
        Ok(())
    }
}
