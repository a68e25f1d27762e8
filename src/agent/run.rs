//! An agent attempt inside its sandbox: the container plan (Aider behind a small wrapper that
//! waits for the workspace), the repository upload, the transcript, and the manager loop that
//! drives Aider to a verified, exported result.

use super::manager::{Manager, ManagerError};
use super::parse::AiderEvent;
use super::protocol::{action_name, HistoryItem, TurnContext};
use super::session::{Direction, Session, SessionError, TranscriptEntry};
use crate::job::{JobSpec, ManagerAction, ManagerMode, ManagerStep, OutputMode};
use crate::llm::Gateway;
use crate::sandbox::{ContainerPlan, Labels, Sandbox, Secret};
use crate::scheduler::logfile::CappedLog;
use crate::state::{JobId, JobState, Outcome, Reason};
use crate::store::SharedStore;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File the wrapper waits for before starting Aider (the workspace is in place).
const READY_FILE: &str = "/tmp/.runner-workspace-ready";
/// How long Aider's output must stay quiet after a prompt before it counts as ready.
pub const QUIET: Duration = Duration::from_millis(50);
/// Output kept from one verify run.
const VERIFY_OUTPUT: usize = 64 << 10;
/// Identical turns in a row (same action, nothing changed) before the job is `stuck`.
const STUCK_REPEATS: u32 = 3;

/// Waits for the workspace, copies the image's warm Aider home into a writable one (the root
/// file system is read-only), then becomes Aider with the gateway as its OpenAI endpoint.
const WRAPPER: &str = r#"i=0
while [ ! -e /tmp/.runner-workspace-ready ]; do
  i=$((i+1)); if [ $i -gt 2400 ]; then echo "runner: the workspace never arrived" >&2; exit 97; fi
  sleep 0.05
done
mkdir -p "$HOME" && { [ -d /home/runner ] && cp -a /home/runner/. "$HOME"/ 2>/dev/null; true; }
cd /workspace
if [ -f /etc/runner/aider-models.json ]; then set -- --model-metadata-file /etc/runner/aider-models.json "$@"; fi
if [ -f /etc/runner/aider-model-settings.yml ]; then set -- --model-settings-file /etc/runner/aider-model-settings.yml "$@"; fi
exec aider --openai-api-base "$OPENAI_API_BASE" --openai-api-key "$OPENAI_API_KEY" "$@"
"#;

/// The container of an agent attempt.
pub fn plan(
    spec: &JobSpec,
    labels: Labels,
    secrets: Vec<(String, Secret)>,
    grace: i64,
) -> ContainerPlan {
    let mut command: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "runner-agent".into(),
    ];
    command.extend(
        [
            "--model",
            &spec.agent.model,
            "--edit-format",
            &spec.agent.edit_format,
            "--no-fancy-input",
            "--no-pretty",
            "--yes-always",
            "--no-check-update",
            "--no-analytics",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "--no-gitignore",
            "--no-auto-lint",
            "--no-suggest-shell-commands",
            "--no-detect-urls",
            "--timeout",
            "120",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut plan = ContainerPlan::for_command(spec, &command, labels, secrets, grace);
    plan.stdin = true;
    for (k, v) in [
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ("PYTHONUNBUFFERED", "1"),
        ("TERM", "dumb"),
        ("HOME", "/tmp/home"),
        // Byte-code caches written by verify would otherwise end up in the exported patch.
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ] {
        plan.env.0.entry(k.into()).or_insert_with(|| v.into());
    }
    plan
}

/// The repository, ready to upload.
pub struct Prepared {
    /// Tar of the work tree (with `.git`), or `None` for a job without a repo.
    pub tar: Option<Vec<u8>>,
    /// Commit the work starts from (known after upload for a job without a repo).
    pub base: Option<String>,
}

/// Mirrors and checks out the job's repository on the host (before any container exists, so a
/// bad repo or ref fails fast). Errors are permanent: a retry cannot fix them.
pub async fn prepare(spec: &JobSpec, cache: &Path, work: &Path) -> Result<Prepared, Outcome> {
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
        let fail = |e: crate::repo::RepoError| Outcome::failed(Reason::Infra, None, e.to_string());
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
        Err(Outcome::failed(
            Reason::Infra,
            None,
            format!("repository preparation panicked: {e}"),
        ))
    })
}

/// Puts the workspace into the running container and lets Aider start; returns the base commit.
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

/// Writes the transcript to the attempt's log (input marked `» `) and, timestamped, to the store.
pub async fn write_transcript(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<TranscriptEntry>,
    path: PathBuf,
    cap: u64,
    store: SharedStore,
    job: JobId,
    attempt: u32,
    secrets: Vec<(String, Secret)>,
) -> bool {
    let redact = || crate::scheduler::redactor(&secrets);
    let mut log = match CappedLog::create(&path, cap).await {
        Ok(log) => log.redacting(redact()),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot write transcript: {e}");
            return false;
        }
    };
    let mut batch: Vec<TranscriptEntry> = Vec::new();
    loop {
        let entry = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let done = matches!(entry, Ok(None));
        let idle = entry.is_err();
        if let Ok(Some(entry)) = entry {
            let rendered = match entry.direction {
                Direction::Out => entry.text.clone(),
                Direction::In => entry.text.lines().map(|l| format!("» {l}\n")).collect(),
            };
            let _ = log.write(rendered.as_bytes()).await;
            batch.push(entry);
        }
        if (done || idle || batch.len() >= 64) && !batch.is_empty() {
            let rows: Vec<(String, String, String)> = batch
                .drain(..)
                .map(|e| {
                    let dir = match e.direction {
                        Direction::Out => "out",
                        Direction::In => "in",
                    };
                    let mut r = redact();
                    let mut text = r.push(e.text.as_bytes());
                    text.extend(r.finish());
                    (
                        e.at,
                        dir.to_string(),
                        String::from_utf8_lossy(&text).into_owned(),
                    )
                })
                .collect();
            let job = job.clone();
            if let Err(e) = store
                .call(move |s| s.add_transcript(&job, attempt, &rows))
                .await
            {
                tracing::warn!("cannot store the transcript: {e}");
            }
        }
        if done {
            break;
        }
    }
    log.finish().await.is_ok()
}

/// Everything the manager loop needs.
pub struct Drive<'a, S: Sandbox> {
    pub sandbox: &'a S,
    pub store: &'a SharedStore,
    pub gateway: &'a Gateway,
    pub spec: &'a JobSpec,
    pub job: &'a JobId,
    pub attempt: u32,
    pub container: &'a str,
    pub base: String,
    /// Where patch and bundle go.
    pub artifacts: PathBuf,
    /// Where the repository mirror lives (for branch and PR output).
    pub cache: PathBuf,
    /// Progress lines for the live display.
    pub progress: &'a (dyn Fn(JobState, Option<String>) + Send + Sync),
}

/// How the manager loop ended.
pub enum DriveEnd {
    Done(Outcome),
    /// Aider's output ended (it exited): the container's exit status tells the rest.
    AiderExited,
}

impl<S: Sandbox> Drive<'_, S> {
    /// Drives Aider until the work is verified and exported, or the job fails.
    pub async fn run(self, mut session: Session) -> DriveEnd {
        let spec = self.spec;
        let mut ctx = TurnContext {
            task: match &spec.kind {
                crate::job::JobKind::Task { task } => task.clone(),
                crate::job::JobKind::Command { .. } => String::new(),
            },
            max_turns: spec.manager.max_turns,
            ..Default::default()
        };
        match session.wait_ready().await {
            Ok(turn) => ctx.new_output = turn.output,
            Err(SessionError::Exited { .. }) => return DriveEnd::AiderExited,
            Err(SessionError::Io(e)) => {
                return DriveEnd::Done(infra(format!("aider session: {e}")))
            }
        }
        let mut manager = match &spec.manager.mode {
            ManagerMode::None => return self.run_single(session, ctx).await,
            ManagerMode::Script { steps } => Manager::Script {
                steps: steps.clone(),
                next: 0,
            },
            ManagerMode::Llm => Manager::Llm {
                gateway: self.gateway.clone(),
                job: self.job.clone(),
                attempt: self.attempt,
                spec: Box::new(spec.clone()),
            },
        };
        let mut last: Option<(ManagerAction, String, String)> = None; // action, argument, fingerprint
        let mut repeats = 0;
        let mut fingerprint = self.fingerprint(&mut ctx).await;
        loop {
            if ctx.turn >= ctx.max_turns {
                return DriveEnd::Done(Outcome::failed(
                    Reason::MaxTurns,
                    None,
                    format!(
                        "the manager used all {} turns without a verified finish",
                        ctx.max_turns
                    ),
                ));
            }
            ctx.turn += 1;
            let step = match manager.decide(&ctx).await {
                Ok(step) => step,
                Err(ManagerError::Budget(why)) => {
                    return DriveEnd::Done(Outcome::failed(Reason::Budget, None, why))
                }
                Err(ManagerError::Failed(why)) => {
                    return DriveEnd::Done(Outcome::failed(Reason::ManagerError, None, why))
                }
            };
            (self.progress)(
                JobState::Running,
                Some(format!(
                    "turn {}/{}: {} {}",
                    ctx.turn,
                    ctx.max_turns,
                    action_name(step.action),
                    if step.progress.is_empty() {
                        step.argument.clone()
                    } else {
                        step.progress.clone()
                    }
                    .chars()
                    .take(80)
                    .collect::<String>()
                )),
            );
            let result = match step.action {
                ManagerAction::Fail => {
                    return DriveEnd::Done(Outcome::failed(
                        Reason::ManagerError,
                        None,
                        format!("the manager gave up: {}", step.argument),
                    ))
                }
                ManagerAction::Finish => match self.finish(&mut ctx).await {
                    Ok(outcome) => return DriveEnd::Done(outcome),
                    Err(failure) => {
                        ctx.new_output = failure.clone();
                        failure
                    }
                },
                _ => {
                    if let Err(e) = session.send(&aider_input(&step)).await {
                        return match e {
                            SessionError::Exited { .. } => DriveEnd::AiderExited,
                            SessionError::Io(e) => {
                                DriveEnd::Done(infra(format!("aider session: {e}")))
                            }
                        };
                    }
                    let turn = match session.wait_ready().await {
                        Ok(turn) => turn,
                        Err(SessionError::Exited { .. }) => return DriveEnd::AiderExited,
                        Err(SessionError::Io(e)) => {
                            return DriveEnd::Done(infra(format!("aider session: {e}")))
                        }
                    };
                    let summary = summarize(&turn.events);
                    ctx.new_output = turn.output;
                    summary
                }
            };
            let now = self.fingerprint(&mut ctx).await;
            let unchanged = now == fingerprint;
            fingerprint = now;
            let same = last
                .as_ref()
                .is_some_and(|(a, arg, _)| *a == step.action && *arg == step.argument);
            repeats = if same && unchanged { repeats + 1 } else { 0 };
            if repeats + 1 >= STUCK_REPEATS {
                return DriveEnd::Done(Outcome::failed(
                    Reason::Stuck,
                    None,
                    format!(
                        "the manager repeated `{} {}` {STUCK_REPEATS} times with no change in the work tree",
                        action_name(step.action),
                        step.argument.chars().take(80).collect::<String>()
                    ),
                ));
            }
            last = Some((step.action, step.argument.clone(), fingerprint.clone()));
            ctx.remember(HistoryItem {
                turn: ctx.turn,
                action: step.action,
                argument: step.argument,
                result,
            });
        }
    }

    /// `manager.mode: none`: the task as one message, then finish when Aider is back at its prompt.
    async fn run_single(self, mut session: Session, mut ctx: TurnContext) -> DriveEnd {
        let task = ctx.task.clone();
        if let Err(e) = session.send(&task).await {
            return match e {
                SessionError::Exited { .. } => DriveEnd::AiderExited,
                SessionError::Io(e) => DriveEnd::Done(infra(format!("aider session: {e}"))),
            };
        }
        match session.wait_ready().await {
            Ok(turn) => ctx.new_output = turn.output,
            Err(SessionError::Exited { .. }) => return DriveEnd::AiderExited,
            Err(SessionError::Io(e)) => {
                return DriveEnd::Done(infra(format!("aider session: {e}")))
            }
        }
        ctx.turn = 1;
        match self.finish(&mut ctx).await {
            Ok(outcome) => DriveEnd::Done(outcome),
            Err(failure) => DriveEnd::Done(Outcome::failed(Reason::VerifyFailed, None, failure)),
        }
    }

    /// Verifies, then exports. `Err` carries a verification failure to tell the manager, while
    /// turns remain; on the last turn it becomes the outcome `verify_failed`.
    async fn finish(&self, ctx: &mut TurnContext) -> Result<Outcome, String> {
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
            if !result.passed {
                let summary = format!(
                    "verification failed (exit code {}):\n{}",
                    result.code,
                    super::protocol::trim_middle(&result.output, 1_000, 3_000)
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
                    Err(why) => infra(why),
                }
            }
        }
    }

    /// `output.mode: branch | pr`: pushes the branch from the host and opens the pull request.
    async fn publish(&self, bundle: Option<&Path>) -> Result<(), String> {
        let Some(bundle) = bundle else {
            return Err("there are no commits to push".into());
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

    /// A fingerprint of the work tree (HEAD and status), refreshing the changed-files list.
    async fn fingerprint(&self, ctx: &mut TurnContext) -> String {
        let script = format!(
            "cd /workspace && git rev-parse HEAD && echo --- && git status --porcelain && echo --- && git diff --name-only {} && git ls-files --others --exclude-standard",
            self.base
        );
        let argv = ["sh".to_string(), "-c".to_string(), script];
        let Ok(out) = self
            .sandbox
            .exec(self.container, &argv, None, 256 << 10)
            .await
        else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&out.output).into_owned();
        let mut parts = text.splitn(3, "---\n");
        let head = parts.next().unwrap_or_default().to_string();
        let status: String = parts
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains(".aider"))
            .collect::<Vec<_>>()
            .join("\n");
        let files: BTreeSet<String> = parts
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(".aider"))
            .map(str::to_string)
            .collect();
        ctx.files_changed = files.into_iter().collect();
        let digest = Sha256::digest(format!("{head}\n{status}").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn infra(detail: String) -> Outcome {
    Outcome::failed(Reason::Infra, None, detail)
}

/// What the runner types into Aider for a manager step.
pub fn aider_input(step: &ManagerStep) -> String {
    let arg = step.argument.trim();
    match step.action {
        ManagerAction::Instruct => arg.to_string(),
        ManagerAction::Run => format!("/run {arg}"),
        ManagerAction::Test => format!("/test {arg}"),
        ManagerAction::Add => format!("/add {arg}"),
        ManagerAction::Drop => format!("/drop {arg}"),
        ManagerAction::Undo => "/undo".to_string(),
        ManagerAction::Finish | ManagerAction::Fail => String::new(),
    }
}

/// A few words on what a turn did, for the manager's history.
fn summarize(events: &[AiderEvent]) -> String {
    let mut edits = Vec::new();
    let mut commits = 0;
    for e in events {
        match e {
            AiderEvent::AppliedEdit(f) => edits.push(f.clone()),
            AiderEvent::Commit { .. } => commits += 1,
            _ => {}
        }
    }
    match (edits.is_empty(), commits) {
        (true, 0) => "no edits".into(),
        (false, _) => format!(
            "edited {} ({} commit{})",
            edits.join(", "),
            commits,
            if commits == 1 { "" } else { "s" }
        ),
        (true, n) => format!("{n} commit(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_actions_become_aider_commands() {
        let step = |action, argument: &str| ManagerStep {
            action,
            argument: argument.into(),
            progress: String::new(),
            thought: String::new(),
        };
        assert_eq!(
            aider_input(&step(ManagerAction::Run, "make test")),
            "/run make test"
        );
        assert_eq!(
            aider_input(&step(ManagerAction::Test, "pytest -q")),
            "/test pytest -q"
        );
        assert_eq!(
            aider_input(&step(ManagerAction::Add, "a.py b.py")),
            "/add a.py b.py"
        );
        assert_eq!(aider_input(&step(ManagerAction::Undo, "")), "/undo");
        assert_eq!(
            aider_input(&step(ManagerAction::Instruct, "line1\nline2")),
            "line1\nline2"
        );
    }

    #[test]
    fn turns_are_summarised_from_aider_events() {
        let events = vec![
            AiderEvent::AppliedEdit("greet.py".into()),
            AiderEvent::Commit {
                sha: "abc1234".into(),
                message: "add greet".into(),
            },
        ];
        assert_eq!(summarize(&events), "edited greet.py (1 commit)");
        assert_eq!(summarize(&[]), "no edits");
    }

    #[test]
    fn the_agent_plan_keeps_stdin_open_and_never_carries_the_key() {
        let spec =
            crate::job::parse_str("name: a\ntask: do it\n", Path::new("/tmp/j.yaml")).unwrap();
        let labels = Labels {
            state: "s".into(),
            job: "j".into(),
            attempt: 1,
        };
        let plan = plan(&spec, labels, vec![], 10);
        assert!(plan.stdin);
        assert!(plan.command.iter().any(|a| a == "--no-fancy-input"));
        assert!(!plan.command.join(" ").contains("OPENAI_API_KEY="));
        assert_eq!(
            plan.env.0.get("HOME").map(String::as_str),
            Some("/tmp/home")
        );
    }
}
