//! Turns a parsed [`RawJob`] into a [`JobSpec`]: applies defaults, resolves paths, and checks the
//! rules that involve several fields or the filesystem. Every problem is collected (not just the
//! first) and located at the key it is about.

use super::locate::{locate, locate_or_parent};
use super::output::output_settings;
use super::paths::{base_dir, check_repo_url, is_repo_url, resolve};
use super::raw::RawJob;
use super::settings::{llm_settings, manager_settings};
use super::spec::{
    AgentSettings, Budget, JobKind, JobSpec, ManagerSettings, NetworkMode, RepoSource, Resources,
    DEFAULT_AGENT_IMAGE,
};
use super::JobError;
use std::path::Path;
use std::time::Duration;

/// Whole-job limit when the file names none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Concurrency group when the file names none.
pub(crate) const DEFAULT_GROUP: &str = "default";

/// Collects errors for one file, locating each at a key path.
pub(crate) struct Problems<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    pub errors: Vec<JobError>,
}

impl Problems<'_> {
    /// Records `message` at `keys`, or at the nearest parent key the scanner finds.
    pub fn at(&mut self, keys: &[&str], message: impl Into<String>) {
        let location = locate_or_parent(self.text, keys);
        self.push(location, message);
    }

    pub fn push(&mut self, location: Option<(usize, usize)>, message: impl Into<String>) {
        self.errors.push(JobError {
            path: self.path.to_path_buf(),
            location,
            message: message.into(),
        });
    }
}

/// Validates `raw`, parsed from `text` (the file at `path`), into a [`JobSpec`].
pub(crate) fn validate(raw: RawJob, text: &str, path: &Path) -> Result<JobSpec, Vec<JobError>> {
    let mut p = Problems {
        text,
        path,
        errors: Vec::new(),
    };
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
            // A plain job's command is its own check; `verify` runs in an agent's sandbox.
            ("verify", raw.verify.is_some()),
            // Candidates are chosen by their `verify` and export a change: agents only.
            ("candidates", raw.candidates.is_some()),
            ("select", raw.select.is_some()),
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

    if is_agent && matches!(raw.network, Some(NetworkMode::None | NetworkMode::Bridge)) {
        p.at(
            &["network"],
            "an agent job reaches its model only through the runner's LLM gateway: \
             use `network: llm` (the default for agent jobs), or remove `network:`",
        );
    }

    let candidates = raw.candidates.map_or(1, |c| c.0);
    if is_agent && raw.select.is_some() && candidates < 2 {
        p.at(
            &["select"],
            "`select` chooses among candidates: set `candidates:` to 2 or more, or remove `select`",
        );
    }

    let repo = raw
        .repo
        .as_ref()
        .and_then(|r| repo_source(&mut p, &base, &r.0));
    // A command job's `manager` is already an error; its contents would only add noise.
    let manager = match &raw.manager {
        Some(manager) if !is_command => manager_settings(&mut p, Some(manager)),
        _ => ManagerSettings::default(),
    };
    let llm = llm_settings(&mut p, &base, raw.llm.as_ref());

    let resources = raw.resources.as_ref();
    let defaults = Resources::default();
    let cpus = resources
        .and_then(|r| r.cpus)
        .map_or(defaults.cpus, |c| c.0);
    let cpu_request = match resources.and_then(|r| r.cpu_request) {
        Some(request) if request.0 > cpus => {
            p.at(
                &["resources", "cpu_request"],
                format!(
                    "resources.cpu_request: {} is above the cap resources.cpus ({cpus}): a job \
                     cannot reserve more than it may use; lower `cpu_request`, or raise `cpus`",
                    request.0
                ),
            );
            cpus
        }
        Some(request) => request.0,
        // A cap below the default request reserves the cap.
        None => defaults.cpu_request.min(cpus),
    };
    let resources = Resources {
        cpus,
        cpu_request,
        memory: resources
            .and_then(|r| r.memory)
            .map_or(defaults.memory, |m| m.0),
        pids: resources
            .and_then(|r| r.pids)
            .map_or(defaults.pids, |n| n.0),
    };
    let agent_defaults = AgentSettings::default();
    let agent = raw.agent.as_ref();
    let agent = AgentSettings {
        model: agent
            .and_then(|a| a.model.clone())
            .map_or(agent_defaults.model, |m| m.0),
        edit_format: agent
            .and_then(|a| a.edit_format.clone())
            .map_or(agent_defaults.edit_format, |f| f.0),
    };
    let budget = raw.budget.as_ref();
    // A command job's `output` is already an error; its contents would only add noise.
    let output = output_settings(
        &mut p,
        raw.output.as_ref().filter(|_| !is_command),
        raw.repo.is_some(),
        repo.as_ref(),
        raw.git_ref.as_ref().map(|r| r.0.as_str()),
    );

    let (Some(name), Some(kind), true) = (raw.name, kind, p.errors.is_empty()) else {
        p.errors.sort_by_key(|e| e.location);
        return Err(p.errors);
    };
    let repo_is_path = matches!(repo, Some(RepoSource::Path(_)));
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
        network: raw.network.unwrap_or(if is_agent {
            NetworkMode::Llm
        } else {
            NetworkMode::None
        }),
        runtime: raw.runtime,
        group: raw.group.map_or_else(|| DEFAULT_GROUP.to_string(), |g| g.0),
        retries: raw.retries.map_or(0, |r| r.0),
        candidates,
        select: raw.select.unwrap_or_default(),
        agent,
        manager,
        llm,
        budget: Budget {
            tokens: budget.and_then(|b| b.tokens).map(|t| t.0),
            usd: budget.and_then(|b| b.usd).map(|u| u.0),
        },
        verify: raw.verify.map(|v| v.0),
        output,
        job_dir: repo_is_path.then(|| base.to_path_buf()),
    })
}

/// Exactly one of `command` (plain job) and `task` (agent job).
fn job_kind(p: &mut Problems, raw: &RawJob) -> Option<JobKind> {
    match (&raw.command, &raw.task) {
        (Some(command), None) => Some(JobKind::Command {
            command: command.0.clone(),
        }),
        (None, Some(task)) => Some(JobKind::Task {
            task: task.0.clone(),
        }),
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
        return match check_repo_url(repo) {
            Ok(()) => Some(RepoSource::Url(repo.to_string())),
            Err(message) => {
                p.at(&["repo"], message);
                None
            }
        };
    }
    let path = resolve(base, repo);
    if let Err(message) = super::paths::check_inside(base, &path) {
        p.at(&["repo"], format!("repo: {message}"));
        return None;
    }
    let problem = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => match super::paths::check_repo_inside(base, &path) {
            Ok(()) => return Some(RepoSource::Path(path)),
            Err(message) => {
                p.at(&["repo"], format!("repo: {message}"));
                return None;
            }
        },
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

#[cfg(test)]
mod tests {
    use super::super::spec::OutputMode;
    use super::super::testutil::{ok, one_error, parse, parse_in, AGENT, COMMAND};
    use super::*;

    #[test]
    fn an_agent_job_gets_every_default() {
        let spec = ok(AGENT);
        assert_eq!(spec.name, "demo");
        assert_eq!(
            spec.kind,
            JobKind::Task {
                task: "say hello".into()
            }
        );
        assert_eq!(spec.image, DEFAULT_AGENT_IMAGE);
        assert_eq!(spec.network, NetworkMode::Llm);
        assert_eq!(spec.group, "default");
        assert_eq!(spec.retries, 0);
        assert_eq!(spec.timeout, Duration::from_secs(1800));
        assert_eq!(spec.resources, Resources::default());
        assert_eq!(spec.agent, AgentSettings::default());
        assert_eq!(spec.manager, ManagerSettings::default());
        assert_eq!(spec.llm, super::super::spec::LlmSettings::default());
        assert_eq!(spec.budget, Budget::default());
        assert_eq!(spec.output.mode, OutputMode::Patch);
        assert_eq!(
            (spec.repo, spec.git_ref, spec.verify, spec.output.branch),
            (None, None, None, None)
        );
        assert!(spec.env.0.is_empty() && spec.secrets.is_empty());
    }

    #[test]
    fn an_agent_job_must_use_the_llm_network() {
        let (at, msg) = one_error(&format!("{AGENT}network: bridge\n"));
        assert_eq!(at, Some((3, 1)));
        assert!(msg.contains("use `network: llm`"), "{msg}");
    }

    #[test]
    fn candidates_and_select_are_read_with_first_pass_by_default() {
        let spec = ok(AGENT);
        assert_eq!(
            (spec.candidates, spec.select),
            (1, super::super::Select::FirstPass)
        );
        let spec = ok(&format!("{AGENT}candidates: 3\n"));
        assert_eq!(
            (spec.candidates, spec.select),
            (3, super::super::Select::FirstPass)
        );
        let spec = ok(&format!("{AGENT}candidates: 8\nselect: smallest-diff\n"));
        assert_eq!(
            (spec.candidates, spec.select),
            (8, super::super::Select::SmallestDiff)
        );
    }

    #[test]
    fn zero_or_nine_candidates_are_refused_where_they_are_written() {
        for n in [0, 9] {
            super::super::testutil::assert_agent_error(
                &format!("candidates: {n}\n"),
                (3, 13),
                &format!("candidates: {n} is out of range: use a whole number from 1 to 8"),
            );
        }
    }

    #[test]
    fn candidates_on_a_command_job_are_refused_where_they_are_written() {
        let (at, msg) = one_error(&format!("{COMMAND}candidates: 3\n"));
        assert_eq!(at, Some((4, 1)));
        assert!(
            msg.starts_with("`candidates` is only for agent jobs (with `task:`)"),
            "{msg}"
        );
    }

    #[test]
    fn select_without_candidates_is_refused_where_it_is_written() {
        let (at, msg) = one_error(&format!("{AGENT}select: smallest-diff\n"));
        assert_eq!(at, Some((3, 1)));
        assert!(msg.contains("set `candidates:` to 2 or more"), "{msg}");
    }

    #[test]
    fn a_command_job_defaults_to_no_network() {
        let spec = ok(COMMAND);
        assert_eq!(spec.network, NetworkMode::None);
        assert_eq!(spec.image, "runner/base:bookworm");
        assert!(!spec.is_agent());
    }

    #[test]
    fn a_cpu_request_above_the_cap_is_refused_where_it_is_written() {
        let (at, msg) = one_error(&format!(
            "{AGENT}resources:\n  cpus: 1\n  cpu_request: 1.5\n"
        ));
        assert_eq!(at, Some((5, 3)));
        assert!(
            msg.starts_with("resources.cpu_request: 1.5 is above the cap resources.cpus (1)"),
            "{msg}"
        );
        assert!(
            msg.contains("lower `cpu_request`, or raise `cpus`"),
            "{msg}"
        );
        let (at, _) = one_error(&format!("{AGENT}resources: {{ cpu_request: 2 }}\n"));
        assert_eq!(at, Some((3, 14)), "the default cap of 1 applies too");
    }

    #[test]
    fn the_cpu_request_defaults_small_and_never_above_the_cap() {
        let spec = ok(AGENT);
        assert_eq!(
            (spec.resources.cpus, spec.resources.cpu_request),
            (1.0, 0.25)
        );
        let spec = ok(&format!("{AGENT}resources: {{ cpus: 0.1 }}\n"));
        assert_eq!(spec.resources.cpu_request, 0.1);
        let spec = ok(&format!(
            "{AGENT}resources: {{ cpus: 2, cpu_request: 2 }}\n"
        ));
        assert_eq!(spec.resources.cpu_request, 2.0);
        let (_, msg) = one_error(&format!("{AGENT}resources: {{ cpu_request: 0 }}\n"));
        assert!(
            msg.starts_with("resources.cpu_request: 0 is out of range"),
            "{msg}"
        );
    }

    #[test]
    fn partial_sections_keep_the_other_defaults() {
        let spec = ok(&format!(
            "{AGENT}resources: {{ cpus: 2 }}\nagent: {{ model: m }}\nmanager: {{ max_turns: 5 }}\n"
        ));
        assert_eq!(spec.resources.cpus, 2.0);
        assert_eq!(spec.resources.memory, Resources::default().memory);
        assert_eq!(spec.agent.edit_format, "diff");
        assert_eq!(
            (spec.manager.max_turns, spec.manager.model.as_str()),
            (5, "gpt-4o-mini")
        );
    }

    #[test]
    fn a_missing_name_is_reported() {
        let (at, msg) = one_error("task: x\n");
        assert_eq!(at, None);
        assert_eq!(msg, "missing `name`: add one like `name: add-greeting`");
    }

    #[test]
    fn both_command_and_task_is_an_error_at_the_second() {
        let (at, msg) = one_error("name: x\ntask: t\nimage: i\ncommand: [make]\n");
        assert_eq!(at, Some((4, 1)));
        assert!(
            msg.starts_with("both `command` and `task` are set: keep `command`"),
            "{msg}"
        );
    }

    #[test]
    fn neither_command_nor_task_is_an_error() {
        let (at, msg) = one_error("name: x\n");
        assert_eq!(at, None);
        assert!(
            msg.starts_with("neither `command` nor `task` is set: add `task:`"),
            "{msg}"
        );
    }

    #[test]
    fn a_command_job_must_name_its_image() {
        let (at, msg) = one_error("name: x\ncommand: make test\n");
        assert_eq!(at, Some((2, 1)));
        assert!(
            msg.contains("add `image: runner/base:bookworm` for example"),
            "{msg}"
        );
    }

    #[test]
    fn agent_sections_on_a_command_job_are_errors() {
        let errors = parse(&format!(
            "{COMMAND}agent: {{ model: m }}\nmanager:\n  mode: none\noutput: {{ mode: pr }}\n"
        ))
        .unwrap_err();
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.location, e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].0, Some((4, 1)));
        assert!(found[0]
            .1
            .starts_with("`agent` is only for agent jobs (with `task:`)"));
        assert_eq!(found[1].0, Some((5, 1)));
        assert_eq!(found[2].0, Some((7, 1)));
        assert!(found[2].1.starts_with("`output` is only for agent jobs"));
    }

    #[test]
    fn llm_and_budget_are_fine_on_a_command_job() {
        let spec = ok(&format!(
            "{COMMAND}llm: {{ api_key_env: KEY }}\nbudget: {{ usd: 1 }}\n"
        ));
        assert_eq!(spec.llm.api_key_env, "KEY");
    }

    #[test]
    fn verify_on_a_command_job_is_refused() {
        let (at, msg) = one_error(&format!("{COMMAND}verify: [true]\n"));
        assert!(at.is_some());
        assert!(msg.starts_with("`verify` is only for agent jobs"), "{msg}");
    }

    #[test]
    fn cross_field_errors_are_all_collected_in_file_order() {
        let errors = parse("command: [make]\nrepo: ./missing\n").unwrap_err();
        let lines: Vec<_> = errors.iter().map(|e| e.location.map(|l| l.0)).collect();
        assert_eq!(lines, [None, Some(1), Some(2)], "{errors:#?}");
    }

    #[test]
    fn repo_urls_are_kept_as_written() {
        let spec = ok(&format!("{AGENT}repo: git@github.com:org/app.git\n"));
        assert_eq!(
            spec.repo,
            Some(RepoSource::Url("git@github.com:org/app.git".into()))
        );
    }

    #[test]
    fn repo_paths_resolve_against_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app/src")).unwrap();
        let spec = parse_in(dir.path(), &format!("{AGENT}repo: ./app/src/../\n")).unwrap();
        let expected = super::super::paths::normalize(&dir.path().join("app"));
        assert_eq!(spec.repo, Some(RepoSource::Path(expected)));
    }

    #[test]
    fn repo_urls_that_look_like_options_are_refused() {
        let (at, msg) = one_error(&format!("{AGENT}repo: '-oProxyCommand=x@host:app'\n"));
        assert_eq!(at, Some((3, 1)));
        assert!(
            msg.contains("starting with `-` that git could read as an option"),
            "{msg}"
        );
    }

    #[test]
    fn a_repo_path_must_be_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        for (repo, problem) in [("nope", "does not exist"), ("file", "is not a directory")] {
            let errors = parse_in(dir.path(), &format!("{AGENT}repo: {repo}\n")).unwrap_err();
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].location, Some((3, 1)));
            assert!(errors[0].message.contains(problem), "{}", errors[0].message);
            assert!(errors[0]
                .message
                .contains(&format!("{}", dir.path().join(repo).display())));
        }
    }
}
