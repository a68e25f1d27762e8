//! The job file exactly as written: serde structs mirroring the YAML, one per mapping.
//!
//! Every struct denies unknown fields, and nothing is `untagged` or `flatten`ed, so serde_yaml
//! can say which field is wrong and where. Single values check themselves (see `text`,
//! `numbers`, `argv` and `vars`); rules that involve several fields or the filesystem live in `validate`.

use super::argv::Argv;
use super::numbers::{
    CallTimeout, Candidates, CpuRequest, Cpus, ManagerTokens, MaxTurns, Memory, Pids, Retries,
    Timeout, Tokens, Usd,
};
use super::spec::{ManagerAction, NetworkMode, OutputMode, Select};
use super::text::{EnvName, GitRef, HttpUrl, ImageRef, Name, NonEmptyText, Text};
use super::vars::{Env, Secrets};
use schemars::JsonSchema;
use serde::Deserialize;

/// A whole job file. Every field is optional here so that missing ones are reported together,
/// after parsing, with the other cross-field errors.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a job: a mapping of fields such as `name:` and `task:` or `command:`"
)]
#[schemars(extend(
    "required" = ["name"],
    "oneOf" = [{"required": ["task"]}, {"required": ["command"]}]
))]
pub(crate) struct RawJob {
    /// Required. 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit;
    /// need not be unique.
    pub name: Option<Name>,
    /// Makes an agent job: the instruction for Aider, in prose. Exactly one of `task` and
    /// `command`.
    pub task: Option<NonEmptyText>,
    /// Makes a plain job: a list run as argv without a shell, or one string run as `sh -c STRING`.
    /// Exactly one of `command` and `task`.
    pub command: Option<Argv>,
    /// A repository URL (https, http, ssh, git, file, user@host:path) or a local directory inside
    /// the job file's directory (a git repository or a plain folder). Agent jobs work on it; a
    /// plain job's command runs in its checkout in /workspace.
    pub repo: Option<NonEmptyText>,
    #[serde(rename = "ref")]
    /// Branch, tag or commit to start from. Default: the repository's HEAD.
    pub git_ref: Option<GitRef>,
    /// A local Docker image (never pulled). Required for plain jobs; agent jobs default to
    /// runner/aider:0.86.2.
    pub image: Option<ImageRef>,
    /// Environment variables of the container (stored and visible: use `secrets` for anything
    /// secret).
    #[schemars(extend("default" = {}))]
    pub env: Option<Env>,
    /// Names of host environment variables, each delivered as the file /run/secrets/NAME (mode
    /// 0400), never in the environment; redacted from logs.
    #[schemars(extend("default" = []))]
    pub secrets: Option<Secrets>,
    /// Resource caps of the container, and what admission reserves.
    pub resources: Option<RawResources>,
    /// The whole job's time limit (1s to 7d); then SIGTERM, SIGKILL after the grace, reason
    /// `timeout`.
    #[schemars(extend("default" = "30m"))]
    pub timeout: Option<Timeout>,
    /// `none`: loopback only. `llm`: only the runner's LLM gateway. `bridge`: full outbound access.
    /// Default: `none` for plain jobs, `llm` for agent jobs (which need it).
    pub network: Option<NetworkMode>,
    /// The OCI runtime: `runc`, or `runsc` (gVisor) when installed in the engine. Default: the
    /// engine's.
    pub runtime: Option<super::spec::Runtime>,
    /// Concurrency group; `--group-limit NAME=N` caps how many of a group run at once.
    #[schemars(extend("default" = "default"))]
    pub group: Option<Name>,
    /// Extra attempts after infrastructure failures only (reasons `infra`, `lost`), 0 to 10.
    #[schemars(extend("default" = 0))]
    pub retries: Option<Retries>,
    /// Agent only, best-of-N: how many attempts run side by side, each in its own sandbox from
    /// the same commit, under the job's one budget; 1 to 8.
    #[schemars(extend("default" = 1))]
    pub candidates: Option<Candidates>,
    /// Agent only, with `candidates` of 2 or more: `first-pass` (the first candidate whose
    /// `verify` passes wins, the others are stopped) or `smallest-diff` (all run; the passing
    /// change with the fewest changed lines wins).
    #[schemars(extend("default" = "first-pass"))]
    pub select: Option<Select>,
    /// Agent only: how Aider is started.
    pub agent: Option<RawAgent>,
    /// Agent only: who decides each turn, and its limits.
    pub manager: Option<RawManager>,
    /// The LLM gateway's upstream, or a cassette to record to or replay from. Default: the
    /// scheduler's OPENAI_BASE_URL and OPENAI_API_KEY.
    pub llm: Option<RawLlm>,
    /// LLM usage limit over all attempts, manager and agent together; reason `budget` when reached.
    /// Default: unlimited.
    pub budget: Option<RawBudget>,
    /// Agent only: the check run in the sandbox when the manager says `finish`; exit 0 passes.
    pub verify: Option<Argv>,
    /// Agent only: the form of the result (patch, branch or pull request).
    pub output: Option<RawOutput>,
}

/// `resources: { cpus, cpu_request, memory, pids }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ cpus: 1.5, memory: 2g, pids: 512 }`"
)]
pub(crate) struct RawResources {
    /// CPU quota in cores, above 0 and at most 256.
    #[schemars(extend("default" = 1))]
    pub cpus: Option<Cpus>,
    /// Cores reserved out of the host budget while the job runs, at most `cpus`. Default: 0.25, or
    /// `cpus` if smaller.
    pub cpu_request: Option<CpuRequest>,
    /// Memory limit (6m to 1t), swap equal; reserved in full by admission.
    #[schemars(extend("default" = "1g"))]
    pub memory: Option<Memory>,
    /// Process limit, 16 to 1000000.
    #[schemars(extend("default" = 512))]
    pub pids: Option<Pids>,
}

/// `agent: { model, edit_format }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ model: openai/gpt-4o-mini, edit_format: diff }`"
)]
pub(crate) struct RawAgent {
    /// The model as Aider names it; `openai/NAME` calls the gateway for model NAME.
    #[schemars(extend("default" = "openai/gpt-4o-mini"))]
    pub model: Option<NonEmptyText>,
    /// Aider's --edit-format (diff, whole, udiff, ...).
    #[schemars(extend("default" = "diff"))]
    pub edit_format: Option<NonEmptyText>,
}

/// `manager: { mode, model, max_turns, max_tokens, call_timeout, steps }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ mode: llm, max_turns: 30 }`"
)]
pub(crate) struct RawManager {
    /// `llm`: a manager model decides each turn. `script`: `steps` are replayed. `none`: the task
    /// is sent once, then finish.
    #[schemars(extend("default" = "llm"))]
    pub mode: Option<RawManagerMode>,
    /// The model name sent upstream for manager calls (mode `llm`).
    #[schemars(extend("default" = "gpt-4o-mini"))]
    pub model: Option<NonEmptyText>,
    /// Most manager turns, 1 to 1000; then reason `max_turns`.
    #[schemars(extend("default" = 30))]
    pub max_turns: Option<MaxTurns>,
    /// Most output one manager answer may have, 16 to 100000 (its `max_tokens`).
    #[schemars(extend("default" = 1000))]
    pub max_tokens: Option<ManagerTokens>,
    /// How long one manager call may take, 1s to 1h (rate-limit waits not counted).
    #[schemars(extend("default" = "2m"))]
    pub call_timeout: Option<CallTimeout>,
    /// Mode `script` only (and required there): the manager answers to replay, in order.
    pub steps: Option<Vec<RawStep>>,
}

/// `manager.mode`; the steps of `script` come from the sibling `steps` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawManagerMode {
    Llm,
    Script,
    None,
}

/// One entry of `manager.steps`: a manager answer replayed as is.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a step like `{ action: instruct, argument: \"Add greet() to greet.py\" }`"
)]
pub(crate) struct RawStep {
    /// What to do: instruct, run, test, add, drop, undo, finish or fail.
    pub action: ManagerAction,
    /// The message, command, file paths, summary or reason the action takes.
    pub argument: Option<Text>,
    /// One line on the progress, shown in the events.
    pub progress: Option<Text>,
    /// One line of reasoning, shown in the events.
    pub thought: Option<Text>,
}

/// `llm: { base_url, api_key_env, record, replay }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ base_url: https://api.example.com/v1, api_key_env: OPENAI_API_KEY }`"
)]
pub(crate) struct RawLlm {
    /// The upstream's OpenAI-compatible base URL, ending before /chat/completions. Default: the
    /// scheduler's OPENAI_BASE_URL (or OPENAI_API_BASE).
    pub base_url: Option<HttpUrl>,
    /// The host variable holding the upstream's key, read by the scheduler (the key never enters a
    /// container).
    #[schemars(extend("default" = "OPENAI_API_KEY"))]
    pub api_key_env: Option<EnvName>,
    /// A cassette file (relative to the job file) to write every exchange to.
    pub record: Option<NonEmptyText>,
    /// A cassette file (relative to the job file) to answer from, with no upstream.
    pub replay: Option<NonEmptyText>,
}

/// `budget: { tokens, usd }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ tokens: 400000, usd: 2.00 }`"
)]
pub(crate) struct RawBudget {
    /// Most prompt plus completion tokens, at least 1.
    pub tokens: Option<Tokens>,
    /// Most cost in US dollars, above 0 (a job with one cannot call a model without a price).
    pub usd: Option<Usd>,
}

/// `output: { mode, branch, token_env, base, api_url, title }`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ mode: pr, branch: runner/fix-greeting }`"
)]
pub(crate) struct RawOutput {
    /// `patch`: the artifacts only. `branch`: also push a branch. `pr`: push and open a GitHub pull
    /// request.
    #[schemars(extend("default" = "patch"))]
    pub mode: Option<OutputMode>,
    /// `branch` and `pr`: the branch to push. Default: runner/<name>-<job id>.
    pub branch: Option<GitRef>,
    /// `pr`: the host variable holding the GitHub token.
    #[schemars(extend("default" = "GITHUB_TOKEN"))]
    pub token_env: Option<EnvName>,
    /// `pr`: the branch the pull request targets. Default: `ref`, else main.
    pub base: Option<GitRef>,
    /// `pr`: the GitHub API (GitHub Enterprise: https://HOST/api/v3).
    #[schemars(extend("default" = "https://api.github.com"))]
    pub api_url: Option<HttpUrl>,
    /// `pr`: the pull request's title. Default: runner: <name>.
    pub title: Option<NonEmptyText>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RawJob, (Option<(usize, usize)>, String)> {
        serde_yaml::from_str(yaml)
            .map_err(|e| (e.location().map(|l| (l.line(), l.column())), e.to_string()))
    }

    #[test]
    fn every_field_of_the_design_example_is_known() {
        let raw = parse(
            "name: add-greeting\ntask: do it\nrepo: .\nref: main\nimage: x\n\
             env: { RUST_LOG: info }\nsecrets: [GITHUB_TOKEN]\n\
             resources: { cpus: 1.5, memory: 2g, pids: 512 }\ntimeout: 30m\nnetwork: llm\n\
             group: default\nretries: 1\nagent: { model: m, edit_format: diff }\n\
             manager: { mode: llm, model: m, max_turns: 30 }\n\
             llm: { base_url: https://api.example.com/v1, api_key_env: OPENAI_API_KEY }\n\
             budget: { tokens: 400000, usd: 2.00 }\nverify: [sh, -c, pytest]\noutput: { mode: patch }\n",
        )
        .unwrap();
        assert_eq!(raw.name.unwrap().0, "add-greeting");
        assert_eq!(raw.budget.unwrap().usd.unwrap().0, 2.0);
        assert_eq!(raw.resources.unwrap().memory.unwrap().0 .0, 2 << 30);
    }

    #[test]
    fn unknown_top_level_field_is_located() {
        let (at, msg) = parse("name: x\nprivileged: true\n").unwrap_err();
        assert_eq!(at, Some((2, 1)));
        assert!(msg.starts_with("unknown field `privileged`"), "{msg}");
    }

    #[test]
    fn unknown_nested_field_names_its_parent() {
        let (at, msg) =
            parse("name: x\nresources:\n  cpus: 1\n  volumes: [/:/host]\n").unwrap_err();
        assert_eq!(at, Some((4, 3)));
        assert!(
            msg.starts_with("resources: unknown field `volumes`"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_step_action_lists_the_valid_ones() {
        let (at, msg) = parse("manager:\n  steps:\n    - action: dance\n").unwrap_err();
        assert_eq!(at, Some((3, 15)));
        assert!(msg.contains("unknown variant `dance`"), "{msg}");
        assert!(
            msg.contains("`instruct`") && msg.contains("`fail`"),
            "{msg}"
        );
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_says_what_a_job_is() {
        let (_, msg) = parse("- name: x\n").unwrap_err();
        assert!(msg.contains("expected a job: a mapping of fields"), "{msg}");
    }
}
