//! The attempt's workspace: the job's repository mirrored and checked out on the host, then
//! uploaded into the running container (or an empty repository when the job has none).

use super::Ending;
use crate::agent::plan::READY_FILE;
use crate::job::JobSpec;
use crate::repo::RepoError;
use crate::sandbox::Sandbox;
use crate::state::{Outcome, Reason};
use bytes::Bytes;
use std::path::Path;

/// For a plain job with a `repo`: waits for the workspace, then runs the job's own command.
const WAIT_THEN_RUN: &str = r#"i=0
while [ ! -e /tmp/.runner-workspace-ready ]; do
  i=$((i+1)); if [ $i -gt 2400 ]; then echo "runner: the workspace never arrived" >&2; exit 97; fi
  sleep 0.05
done
cd /workspace
exec "$@"
"#;

/// A plain job's command, run once its repository is in /workspace (the image needs `sh`).
pub fn after_upload(command: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        WAIT_THEN_RUN.into(),
        "runner-job".into(),
    ];
    argv.extend(command.iter().cloned());
    argv
}

/// The repository, ready to upload.
pub struct Prepared {
    /// Tar of the work tree (with `.git`), or `None` for a job without a repo.
    pub tar: Option<Vec<u8>>,
    /// Commit the work starts from (known after upload for a job without a repo).
    pub base: Option<String>,
}

/// Mirrors and checks out the job's repository on the host (before any container exists, so a
/// bad repo or ref fails fast). A bad repo or ref is permanent, a timeout is not.
pub async fn prepare(spec: &JobSpec, cache: &Path, work: &Path) -> Result<Prepared, Ending> {
    spec.recheck_repo()
        .map_err(|e| Ending::permanent(Reason::Infra, e))?;
    let Some(source) = spec.repo.clone() else {
        return Ok(Prepared {
            tar: None,
            base: None,
        });
    };
    let (cache, work, git_ref) = (
        cache.to_path_buf(),
        work.to_path_buf(),
        spec.git_ref.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let fail = repo_failure;
        let mirror = crate::repo::mirror(&cache, &source).map_err(fail)?;
        let _ = std::fs::remove_dir_all(&work);
        let checkout = crate::repo::checkout(&mirror, git_ref.as_deref(), &work).map_err(fail)?;
        let tar = crate::repo::tar_tree(&checkout.dir).map_err(fail);
        let _ = std::fs::remove_dir_all(&work);
        Ok(Prepared {
            tar: Some(tar?),
            base: Some(checkout.base_commit),
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err(Ending::Done(Outcome::failed(
            Reason::Infra,
            None,
            format!("repository preparation panicked: {e}"),
        )))
    })
}

/// How a repository that cannot be prepared ends the attempt: git that ran too long (a slow
/// network, a busy host) may pass, so the job is retried; a bad repo or ref is not.
fn repo_failure(e: RepoError) -> Ending {
    let outcome = Outcome::failed(Reason::Infra, None, e.to_string());
    match e {
        RepoError::Timeout { .. } => Ending::Done(outcome),
        _ => Ending::Permanent(outcome),
    }
}

/// Puts the workspace into the running container and lets Aider start; returns the base commit.
/// True when the workspace of a running container is already in place (an adopted container).
pub async fn uploaded<S: Sandbox>(sandbox: &S, name: &str) -> bool {
    let argv = ["test", "-e", READY_FILE].map(String::from);
    matches!(sandbox.exec(name, &argv, None, 1024).await, Ok(out) if out.code == 0)
}

pub async fn upload<S: Sandbox>(
    sandbox: &S,
    name: &str,
    prepared: Prepared,
) -> Result<String, Outcome> {
    let infra = |what: &str, detail: String| {
        Outcome::failed(Reason::Infra, None, format!("{what}: {detail}"))
    };
    let base = match (prepared.tar, prepared.base) {
        (Some(tar), Some(base)) => {
            let argv = ["tar", "-x", "-C", "/workspace"].map(String::from);
            let out = sandbox
                .exec(name, &argv, Some(Bytes::from(tar)), 16 << 10)
                .await
                .map_err(|e| infra("cannot upload the repository", e.to_string()))?;
            if out.code != 0 {
                return Err(infra(
                    "cannot upload the repository",
                    String::from_utf8_lossy(&out.output).into_owned(),
                ));
            }
            base
        }
        _ => {
            // No repository: an empty one, so Aider has git to commit to.
            let script = "cd /workspace && git init -q -b main && git commit -q --allow-empty -m 'runner: empty start' && git rev-parse HEAD";
            let argv = ["sh", "-c", script].map(String::from);
            let out = sandbox
                .exec(name, &argv, None, 16 << 10)
                .await
                .map_err(|e| infra("cannot create the workspace", e.to_string()))?;
            let text = String::from_utf8_lossy(&out.output).trim().to_string();
            if out.code != 0 {
                return Err(infra("cannot create the workspace", text));
            }
            text.lines().last().unwrap_or_default().to_string()
        }
    };
    let argv = ["touch", READY_FILE].map(String::from);
    sandbox
        .exec(name, &argv, None, 1024)
        .await
        .map_err(|e| infra("cannot start Aider", e.to_string()))?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_git_timeout_preparing_the_repository_is_retried_but_an_unknown_ref_is_not() {
        let timeout = RepoError::Timeout {
            what: "fetch".into(),
            limit: Duration::from_secs(300),
        };
        let unknown = RepoError::UnknownRef {
            git_ref: "nope".into(),
            repo: "https://example.com/r.git".into(),
        };
        assert!(matches!(repo_failure(timeout), Ending::Done(_)));
        assert!(matches!(repo_failure(unknown), Ending::Permanent(_)));
    }
}
