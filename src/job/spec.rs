//! The validated job: typed, defaults applied, paths resolved. Produced only by the parser in
//! this module (`job::load_file`); stored as JSON by the store and read back unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Image used by agent jobs that do not name one.
pub const DEFAULT_AGENT_IMAGE: &str = "runner/aider:0.86.2";

/// A job ready to be stored and run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `[a-z0-9][a-z0-9-]{0,62}`; not unique across submissions.
    pub name: String,
    /// Plain command or agent task (exactly one in the file).
    pub kind: JobKind,
    /// Image to run (default `runner/aider:0.86.2` for agent jobs; required for plain jobs).
    pub image: String,
    /// Repository to place in /workspace, if any.
    pub repo: Option<RepoSource>,
    /// Branch, tag or commit of `repo` (default: the repo's HEAD).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Environment variables set in the container.
    pub env: EnvVars,
    /// Names of host environment variables delivered as files under /run/secrets.
    pub secrets: Vec<String>,
    pub resources: Resources,
    /// Whole-job wall-clock limit; then stop with grace, then kill.
    #[serde(with = "humane_duration")]
    pub timeout: Duration,
    pub network: NetworkMode,
    /// OCI runtime from an allow-list (`runsc`: gVisor, a stronger boundary than the shared
    /// kernel); `None` is the engine's default (runc).
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// Concurrency group (default `default`).
    pub group: String,
    /// Retries after infrastructure failures only (default 0). For a best-of-N job a retry is
    /// a new round of all its candidates, run when no candidate succeeded and every one of
    /// them failed in a way a retry may cure.
    pub retries: u32,
    /// Best-of-N: how many attempts of an agent job run side by side, each in its own sandbox
    /// (1 to 8, default 1). Specs stored before the field existed read as 1.
    #[serde(default = "one_candidate")]
    pub candidates: u32,
    /// Which passing candidate wins when there are several.
    #[serde(default)]
    pub select: Select,
    pub agent: AgentSettings,
    pub manager: ManagerSettings,
    pub llm: LlmSettings,
    pub budget: Budget,
    /// Command run inside the sandbox that must pass for the job to succeed.
    pub verify: Option<Vec<String>>,
    pub output: OutputSettings,
    /// The folder of the job file, for checking local paths again when the job runs (absent for
    /// jobs stored by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_dir: Option<PathBuf>,
}

impl JobSpec {
    /// Checks again, when the job runs, that a local `repo` (and the git data its `.git` leads
    /// to) is still inside the job file's folder: the folder may have changed since the job was
    /// accepted.
    pub fn recheck_repo(&self) -> Result<(), String> {
        match (&self.repo, &self.job_dir) {
            (Some(RepoSource::Path(path)), Some(dir)) => super::paths::check_inside(dir, path)
                .and_then(|()| super::paths::check_repo_inside(dir, path))
                .map_err(|e| format!("repo: {e}")),
            _ => Ok(()),
        }
    }

    /// True for agent jobs (`task:`), false for plain `command:` jobs.
    pub fn is_agent(&self) -> bool {
        matches!(self.kind, JobKind::Task { .. })
    }
}

fn one_candidate() -> u32 {
    1
}

/// How a best-of-N job chooses among the candidates whose `verify` passed (`select:`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The first candidate to pass wins at once; the others are stopped.
    #[default]
    FirstPass,
    /// Every candidate runs to its end; the passing one with the fewest changed lines wins.
    SmallestDiff,
}

impl Select {
    pub fn as_str(self) -> &'static str {
        match self {
            Select::FirstPass => "first-pass",
            Select::SmallestDiff => "smallest-diff",
        }
    }
}

/// What the job runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A plain command (argv, no shell).
    Command { command: Vec<String> },
    /// An agent task, in prose.
    Task { task: String },
}

/// Where the repository comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepoSource {
    /// A remote URL (`https://`, `ssh://`, `git@host:path`, `file://`).
    Url(String),
    /// An absolute local path (resolved relative to the job file at load time).
    Path(PathBuf),
}

/// Environment variables for the container. `Debug` hides the values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<hidden>")))
            .finish()
    }
}

/// Per-job resource caps, and the share of the host CPU budget admission reserves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU quota in cores (default 1): the most the container may use, not what it reserves.
    pub cpus: f64,
    /// Cores admission reserves out of the host budget (Kubernetes' request beside its limit).
    /// At most `cpus`. Agents mostly wait on a model, so the default is small (see
    /// [`DEFAULT_CPU_REQUEST`]); specs stored before the field existed read as the default.
    #[serde(default = "default_cpu_request")]
    pub cpu_request: f64,
    /// Memory limit in bytes; swap is set equal (no swap). Default 1 GiB.
    pub memory: ByteSize,
    /// Maximum number of processes (default 512).
    pub pids: u32,
}

/// What a job reserves of the host's CPU when its file names no `cpu_request`. CPU is
/// compressible: an agent spends most of its time waiting for a model, and a busy host only slows
/// a job down (its quota still caps it), while memory cannot be taken back. A quarter core lets six
/// default jobs (1.5 cores) fit a 2-core host with room left for the runner itself and Docker.
pub const DEFAULT_CPU_REQUEST: f64 = 0.25;

fn default_cpu_request() -> f64 {
    DEFAULT_CPU_REQUEST
}

impl Resources {
    /// The cores admission reserves: the request, never more than the cap (a spec stored before
    /// `cpu_request` existed may have a cap below the default request).
    pub fn reserved_cpus(&self) -> f64 {
        self.cpu_request.min(self.cpus)
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1.0,
            cpu_request: DEFAULT_CPU_REQUEST,
            memory: ByteSize(1 << 30),
            pids: 512,
        }
    }
}

/// A size in bytes, written humanely in job files (`512m`, `2g`) and in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "t"),
            (1 << 30, "g"),
            (1 << 20, "m"),
            (1 << 10, "k"),
        ];
        for (size, suffix) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{}", self.0 / size, suffix);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        super::units::parse_size(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde helpers writing durations humanely (`90s`, `20m`).
pub mod humane_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `d` like `30m` or `1h30m`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::units::format_duration(*d))
    }

    /// Reads `90s`, `20m`, `1h30m`, ... (see `units::parse_duration`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::super::units::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Container networking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only (default for plain jobs).
    None,
    /// Only the runner's LLM gateway (default for agent jobs).
    Llm,
    /// Docker's default bridge: full outbound network.
    Bridge,
}

/// Container runtimes a job may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The engine's standard runtime.
    Runc,
    /// gVisor: system calls served by a user-space kernel (must be installed in the engine).
    Runsc,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Runsc => "runsc",
        }
    }
}

/// How Aider is run (agent jobs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// Model name as Aider takes it (default `openai/gpt-4o-mini`).
    pub model: String,
    /// Aider edit format (default `diff`).
    pub edit_format: String,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            model: "openai/gpt-4o-mini".into(),
            edit_format: "diff".into(),
        }
    }
}

/// The manager loop's configuration (agent jobs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagerSettings {
    /// How each turn's answer is produced (default `llm`).
    pub mode: ManagerMode,
    /// Model of the manager LLM (mode `llm`; default `gpt-4o-mini`).
    pub model: String,
    /// Turn limit (default 30); then the job fails with reason `max_turns`.
    pub max_turns: u32,
    /// The most output tokens one manager answer may have (default 1000): sent as the call's
    /// `max_tokens`; an answer cut there is a bad answer.
    #[serde(default = "default_manager_max_tokens")]
    pub max_tokens: u32,
    /// How long one manager call may take, from sending it to the answer's end (default 2m;
    /// waits for the provider's rate limits are not counted); past it the answer is a bad one.
    #[serde(default = "default_manager_call_timeout", with = "humane_duration")]
    pub call_timeout: Duration,
}

fn default_manager_max_tokens() -> u32 {
    1000
}

fn default_manager_call_timeout() -> Duration {
    Duration::from_secs(120)
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            mode: ManagerMode::Llm,
            model: "gpt-4o-mini".into(),
            max_turns: 30,
            max_tokens: default_manager_max_tokens(),
            call_timeout: default_manager_call_timeout(),
        }
    }
}

/// Where the manager's answers come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagerMode {
    /// Ask the manager LLM each turn.
    Llm,
    /// Replay a fixed list of manager answers.
    Script { steps: Vec<ManagerStep> },
    /// Send the task as one message; finish when Aider returns to its prompt.
    None,
}

/// One manager answer (see docs/design.md, "Manager protocol").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStep {
    /// What to do.
    pub action: ManagerAction,
    #[serde(default)]
    pub argument: String,
    #[serde(default)]
    pub progress: String,
    #[serde(default)]
    pub thought: String,
}

/// What the manager tells the runner to do next (see docs/design.md, "Manager protocol").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagerAction {
    Instruct,
    Run,
    Test,
    Add,
    Drop,
    Undo,
    Finish,
    Fail,
}

/// Upstream LLM provider and record/replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmSettings {
    /// Upstream base URL; `None` means the host's `OPENAI_BASE_URL` at run time.
    pub base_url: Option<String>,
    /// Name of the host env var holding the upstream key (default `OPENAI_API_KEY`).
    pub api_key_env: String,
    /// Cassette to record every exchange to (absolute).
    pub record: Option<PathBuf>,
    /// Cassette to answer from instead of an upstream (absolute).
    pub replay: Option<PathBuf>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: None,
            api_key_env: "OPENAI_API_KEY".into(),
            record: None,
            replay: None,
        }
    }
}

/// Spending caps for manager and agent together; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Prompt plus completion tokens.
    pub tokens: Option<u64>,
    /// Estimated cost in US dollars.
    pub usd: Option<f64>,
}

/// GitHub's own REST API: the default `output.api_url`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// Host variable holding the GitHub token when `output.token_env` is not set.
pub const DEFAULT_TOKEN_ENV: &str = "GITHUB_TOKEN";
/// Branch a pull request targets when neither `output.base` nor `ref` is set.
pub const DEFAULT_PR_BASE: &str = "main";

/// How the result leaves the sandbox. The fields after `branch` were added later: specs stored
/// before them read back with their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSettings {
    pub mode: OutputMode,
    /// Branch name for `branch` / `pr` (default `runner/<name>-<job id>`).
    pub branch: Option<String>,
    /// Name of the host env var holding the GitHub token for `pr` (default `GITHUB_TOKEN`).
    /// The token is used on the host only; it never enters the sandbox.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Branch the pull request targets (default: the job's `ref`, else `main`).
    #[serde(default = "default_pr_base")]
    pub base: String,
    /// GitHub REST API root (default `https://api.github.com`; GitHub Enterprise uses
    /// `https://HOST/api/v3`).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Pull request title (default: made from the job's name).
    #[serde(default)]
    pub title: Option<String>,
}

fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.into()
}

fn default_pr_base() -> String {
    DEFAULT_PR_BASE.into()
}

fn default_api_url() -> String {
    DEFAULT_GITHUB_API.into()
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings {
            mode: OutputMode::default(),
            branch: None,
            token_env: default_token_env(),
            base: default_pr_base(),
            api_url: default_api_url(),
            title: None,
        }
    }
}

/// The form of the result: a patch file, a pushed branch, or a pull request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    #[default]
    Patch,
    Branch,
    Pr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_stored_before_cpu_request_existed_read_the_default_request() {
        let old: Resources =
            serde_json::from_str(r#"{"cpus":2.0,"memory":"1g","pids":512}"#).unwrap();
        assert_eq!((old.cpus, old.cpu_request), (2.0, DEFAULT_CPU_REQUEST));
    }
}
