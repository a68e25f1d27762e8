//! The job file exactly as written: serde structs mirroring the YAML, one per mapping.
//!
//! Every struct denies unknown fields, and nothing is `untagged` or `flatten`ed, so serde_yaml
//! can say which field is wrong and where. Single values check themselves (see `text`,
//! `numbers`, `argv` and `vars`); rules that involve several fields or the filesystem live in `validate`.

use super::argv::Argv;
use super::numbers::{
    CallTimeout, CpuRequest, Cpus, ManagerTokens, MaxTurns, Memory, Pids, Retries, Timeout, Tokens,
    Usd,
};
use super::spec::{ManagerAction, NetworkMode, OutputMode};
use super::text::{EnvName, GitRef, HttpUrl, ImageRef, Name, NonEmptyText, Text};
use super::vars::{Env, Secrets};
use serde::Deserialize;

/// A whole job file. Every field is optional here so that missing ones are reported together,
/// after parsing, with the other cross-field errors.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a job: a mapping of fields such as `name:` and `task:` or `command:`"
)]
pub(crate) struct RawJob {
    pub name: Option<Name>,
    pub task: Option<NonEmptyText>,
    pub command: Option<Argv>,
    pub repo: Option<NonEmptyText>,
    #[serde(rename = "ref")]
    pub git_ref: Option<GitRef>,
    pub image: Option<ImageRef>,
    pub env: Option<Env>,
    pub secrets: Option<Secrets>,
    pub resources: Option<RawResources>,
    pub timeout: Option<Timeout>,
    pub network: Option<NetworkMode>,
    pub runtime: Option<super::spec::Runtime>,
    pub group: Option<Name>,
    pub retries: Option<Retries>,
    pub agent: Option<RawAgent>,
    pub manager: Option<RawManager>,
    pub llm: Option<RawLlm>,
    pub budget: Option<RawBudget>,
    pub verify: Option<Argv>,
    pub output: Option<RawOutput>,
}

/// `resources: { cpus, cpu_request, memory, pids }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ cpus: 1.5, memory: 2g, pids: 512 }`"
)]
pub(crate) struct RawResources {
    pub cpus: Option<Cpus>,
    pub cpu_request: Option<CpuRequest>,
    pub memory: Option<Memory>,
    pub pids: Option<Pids>,
}

/// `agent: { model, edit_format }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ model: openai/gpt-4o-mini, edit_format: diff }`"
)]
pub(crate) struct RawAgent {
    pub model: Option<NonEmptyText>,
    pub edit_format: Option<NonEmptyText>,
}

/// `manager: { mode, model, max_turns, max_tokens, call_timeout, steps }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ mode: llm, max_turns: 30 }`"
)]
pub(crate) struct RawManager {
    pub mode: Option<RawManagerMode>,
    pub model: Option<NonEmptyText>,
    pub max_turns: Option<MaxTurns>,
    pub max_tokens: Option<ManagerTokens>,
    pub call_timeout: Option<CallTimeout>,
    pub steps: Option<Vec<RawStep>>,
}

/// `manager.mode`; the steps of `script` come from the sibling `steps` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawManagerMode {
    Llm,
    Script,
    None,
}

/// One entry of `manager.steps`: a manager answer replayed as is.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a step like `{ action: instruct, argument: \"Add greet() to greet.py\" }`"
)]
pub(crate) struct RawStep {
    pub action: ManagerAction,
    pub argument: Option<Text>,
    pub progress: Option<Text>,
    pub thought: Option<Text>,
}

/// `llm: { base_url, api_key_env, record, replay }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ base_url: https://api.example.com/v1, api_key_env: OPENAI_API_KEY }`"
)]
pub(crate) struct RawLlm {
    pub base_url: Option<HttpUrl>,
    pub api_key_env: Option<EnvName>,
    pub record: Option<NonEmptyText>,
    pub replay: Option<NonEmptyText>,
}

/// `budget: { tokens, usd }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ tokens: 400000, usd: 2.00 }`"
)]
pub(crate) struct RawBudget {
    pub tokens: Option<Tokens>,
    pub usd: Option<Usd>,
}

/// `output: { mode, branch, token_env, base, api_url, title }`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ mode: pr, branch: runner/fix-greeting }`"
)]
pub(crate) struct RawOutput {
    pub mode: Option<OutputMode>,
    pub branch: Option<GitRef>,
    pub token_env: Option<EnvName>,
    pub base: Option<GitRef>,
    pub api_url: Option<HttpUrl>,
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
