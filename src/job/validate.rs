//! Turns a parsed [`RawJob`] into a [`JobSpec`]: applies defaults, resolves paths, and checks the
//! rules that involve several fields or the filesystem. Every problem is collected (not just the
//! first) and located at the key it is about.

use super::locate::{locate, locate_or_parent};
use super::paths::{base_dir, is_repo_url, resolve};
use super::raw::{RawJob, RawManager, RawManagerMode};
use super::spec::{
    AgentSettings, Budget, JobKind, JobSpec, LlmSettings, ManagerMode, ManagerSettings,
    ManagerStep, NetworkMode, OutputSettings, RepoSource, Resources, DEFAULT_AGENT_IMAGE,
};
use super::JobError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whole-job limit when the file names none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Concurrency group when the file names none.
pub(crate) const DEFAULT_GROUP: &str = "default";

/// Collects errors for one file, locating each at a key path.
struct Problems<'a> {
    text: &'a str,
    path: &'a Path,
    errors: Vec<JobError>,
}

impl Problems<'_> {
    /// Records `message` at `keys`, or at the nearest parent key the scanner finds.
    fn at(&mut self, keys: &[&str], message: impl Into<String>) {
        let location = locate_or_parent(self.text, keys);
        self.push(location, message);
    }

    fn push(&mut self, location: Option<(usize, usize)>, message: impl Into<String>) {
        self.errors.push(JobError {
            path: self.path.to_path_buf(),
            location,
            message: message.into(),
        });
    }
}

/// Validates `raw`, parsed from `text` (the file at `path`), into a [`JobSpec`].
pub(crate) fn validate(raw: RawJob, text: &str, path: &Path) -> Result<JobSpec, Vec<JobError>> {
    let mut p = Problems { text, path, errors: Vec::new() };
    let base = base_dir(path);

    if raw.name.is_none() {
        p.push(None, "missing `name`: add one like `name: add-greeting`");
    }
    let kind = job_kind(&mut p, &raw);
    let is_agent = matches!(kind, Some(JobKind::Task { .. }));
    let is_command = matches!(kind, Some(JobKind::Command { .. }));

    let image = match (&raw.image, is_command) {
        (Some(image), _) => image.0.clone(),
        (None, true) => {
            p.at(
                &["command"],
                "a plain job (with `command:`) must name its image: \
                 add `image: runner/base:bookworm` for example",
            );
            String::new()
        }
        (None, false) => DEFAULT_AGENT_IMAGE.to_string(),
    };
    if is_command {
        for (field, present) in [
            ("agent", raw.agent.is_some()),
            ("manager", raw.manager.is_some()),
            ("output", raw.output.is_some()),
        ] {
            if present {
                p.at(
                    &[field],
                    format!(
                        "`{field}` is only for agent jobs (with `task:`): remove it, \
                         or replace `command:` with `task:`"
                    ),
                );
            }
        }
    }

    let repo = raw.repo.as_ref().and_then(|r| repo_source(&mut p, &base, &r.0));
    let manager = manager_settings(&mut p, raw.manager.as_ref());
    let llm = llm_settings(&mut p, &base, &raw);

    let resources = raw.resources.as_ref();
    let defaults = Resources::default();
    let resources = Resources {
        cpus: resources.and_then(|r| r.cpus).map_or(defaults.cpus, |c| c.0),
        memory: resources.and_then(|r| r.memory).map_or(defaults.memory, |m| m.0),
        pids: resources.and_then(|r| r.pids).map_or(defaults.pids, |n| n.0),
    };
    let agent_defaults = AgentSettings::default();
    let agent = raw.agent.as_ref();
    let agent = AgentSettings {
        model: agent.and_then(|a| a.model.clone()).map_or(agent_defaults.model, |m| m.0),
        edit_format: agent
            .and_then(|a| a.edit_format.clone())
            .map_or(agent_defaults.edit_format, |f| f.0),
    };
    let budget = raw.budget.as_ref();
    let output = raw.output.as_ref();

    let (Some(name), Some(kind), true) = (raw.name, kind, p.errors.is_empty()) else {
        p.errors.sort_by_key(|e| e.location);
        return Err(p.errors);
    };
    Ok(JobSpec {
        name: name.0,
        kind,
        image,
        repo,
        git_ref: raw.git_ref.map(|r| r.0),
        env: raw.env.map(|e| e.0).unwrap_or_default(),
        secrets: raw.secrets.map(|s| s.0).unwrap_or_default(),
        resources,
        timeout: raw.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
        network: raw.network.unwrap_or(if is_agent { NetworkMode::Llm } else { NetworkMode::None }),
        group: raw.group.map_or_else(|| DEFAULT_GROUP.to_string(), |g| g.0),
        retries: raw.retries.map_or(0, |r| r.0),
        agent,
        manager,
        llm,
        budget: Budget {
            tokens: budget.and_then(|b| b.tokens).map(|t| t.0),
            usd: budget.and_then(|b| b.usd).map(|u| u.0),
        },
        verify: raw.verify.map(|v| v.0),
        output: OutputSettings {
            mode: output.and_then(|o| o.mode).unwrap_or_default(),
            branch: output.and_then(|o| o.branch.clone()).map(|b| b.0),
        },
    })
}

/// Exactly one of `command` (plain job) and `task` (agent job).
fn job_kind(p: &mut Problems, raw: &RawJob) -> Option<JobKind> {
    match (&raw.command, &raw.task) {
        (Some(command), None) => Some(JobKind::Command { command: command.0.clone() }),
        (None, Some(task)) => Some(JobKind::Task { task: task.0.clone() }),
        (Some(_), Some(_)) => {
            // Point at whichever of the two comes second: that is the one most likely added by mistake.
            let second = locate(p.text, &["command"]).max(locate(p.text, &["task"]));
            p.push(
                second,
                "both `command` and `task` are set: keep `command` for a plain job \
                 or `task` for an agent job, not both",
            );
            None
        }
        (None, None) => {
            p.push(
                None,
                "neither `command` nor `task` is set: add `task:` for an agent job \
                 or `command:` for a plain job",
            );
            None
        }
    }
}

/// `repo`: a URL as written, or a local directory resolved against the job file's directory.
fn repo_source(p: &mut Problems, base: &Path, repo: &str) -> Option<RepoSource> {
    if is_repo_url(repo) {
        return Some(RepoSource::Url(repo.to_string()));
    }
    let path = resolve(base, repo);
    let problem = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => return Some(RepoSource::Path(path)),
        Ok(_) => "is not a directory",
        Err(_) => "does not exist",
    };
    p.at(
        &["repo"],
        format!(
            "repository `{}` {problem} (relative paths start at the job file's directory): \
             fix the path, or give a URL like `https://git.example.com/org/app.git`",
            path.display()
        ),
    );
    None
}

/// `manager`, with defaults; `steps` go with `mode: script` and only with it.
fn manager_settings(p: &mut Problems, raw: Option<&RawManager>) -> ManagerSettings {
    let defaults = ManagerSettings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let steps: Option<Vec<ManagerStep>> = raw.steps.as_ref().map(|steps| {
        steps
            .iter()
            .map(|s| ManagerStep {
                action: s.action,
                argument: s.argument.clone().map(|t| t.0).unwrap_or_default(),
                progress: s.progress.clone().map(|t| t.0).unwrap_or_default(),
                thought: s.thought.clone().map(|t| t.0).unwrap_or_default(),
            })
            .collect()
    });
    let mode = match (raw.mode, steps) {
        (Some(RawManagerMode::Script), Some(steps)) if !steps.is_empty() => ManagerMode::Script { steps },
        (Some(RawManagerMode::Script), _) => {
            p.at(
                &["manager", "mode"],
                "`mode: script` needs a non-empty `steps` list of manager answers: \
                 add `steps: [{ action: finish, argument: done }]` for example",
            );
            defaults.mode
        }
        (_, Some(_)) => {
            p.at(
                &["manager", "steps"],
                "`steps` are only used with `mode: script`: add `mode: script` to `manager`, \
                 or remove `steps`",
            );
            defaults.mode
        }
        (Some(RawManagerMode::None), None) => ManagerMode::None,
        (Some(RawManagerMode::Llm) | None, None) => ManagerMode::Llm,
    };
    ManagerSettings {
        mode,
        model: raw.model.clone().map_or(defaults.model, |m| m.0),
        max_turns: raw.max_turns.map_or(defaults.max_turns, |m| m.0),
    }
}

/// `llm`, with cassette paths resolved; record and replay exclude each other.
fn llm_settings(p: &mut Problems, base: &Path, raw: &RawJob) -> LlmSettings {
    let defaults = LlmSettings::default();
    let Some(llm) = &raw.llm else {
        return defaults;
    };
    let record: Option<PathBuf> = llm.record.as_ref().map(|r| resolve(base, &r.0));
    let replay: Option<PathBuf> = llm.replay.as_ref().map(|r| resolve(base, &r.0));
    if record.is_some() && replay.is_some() {
        p.at(
            &["llm", "replay"],
            "`llm.record` and `llm.replay` are both set: keep `record` to save a new cassette \
             or `replay` to answer from one",
        );
    } else if let Some(replay) = &replay {
        if !replay.is_file() {
            p.at(
                &["llm", "replay"],
                format!(
                    "cassette `{}` does not exist (relative paths start at the job file's \
                     directory): fix the path, or record one first with `llm.record`",
                    replay.display()
                ),
            );
        }
    }
    LlmSettings {
        base_url: llm.base_url.clone().map(|u| u.0),
        api_key_env: llm.api_key_env.clone().map_or(defaults.api_key_env, |k| k.0),
        record,
        replay,
    }
}
