//! What a container should be: built from a job spec, independent of the engine.

use crate::job::{JobSpec, NetworkMode, Resources};
use std::fmt;

/// Label naming the state dir (its random id) that owns an object.
pub const LABEL_STATE: &str = "runner.state";
/// Label naming the job id.
pub const LABEL_JOB: &str = "runner.job";
/// Label naming the attempt number.
pub const LABEL_ATTEMPT: &str = "runner.attempt";

/// Suffix of a relay's container name after its attempt's container name.
const RELAY_SUFFIX: &str = "-relay";

/// The attempt container a container belongs to: itself, or the attempt a relay serves.
pub fn attempt_of(container: &str) -> &str {
    container.strip_suffix(RELAY_SUFFIX).unwrap_or(container)
}

/// The unprivileged user every job runs as (the base image's `runner` user).
pub const CONTAINER_USER: &str = "1000:1000";

/// The labels every object of one attempt carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub state: String,
    pub job: String,
    pub attempt: u32,
}

impl Labels {
    /// The deterministic container name: a crash between "created" and "recorded" finds the same
    /// container again instead of making a second one.
    pub fn container_name(&self) -> String {
        format!(
            "runner-{}-{}-{}",
            self.state,
            self.job.to_ascii_lowercase(),
            self.attempt
        )
    }

    /// The name of the attempt's gateway relay (see [`RelayPlan`]).
    pub fn relay_name(&self) -> String {
        format!("{}{RELAY_SUFFIX}", self.container_name())
    }

    pub fn to_map(&self) -> std::collections::HashMap<String, String> {
        [
            (LABEL_STATE.to_string(), self.state.clone()),
            (LABEL_JOB.to_string(), self.job.clone()),
            (LABEL_ATTEMPT.to_string(), self.attempt.to_string()),
        ]
        .into_iter()
        .collect()
    }
}

/// A secret value: delivered as a file, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Everything needed to create one attempt's container.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub name: String,
    pub labels: Labels,
    pub image: String,
    pub command: Vec<String>,
    /// Job environment (values hidden from `Debug` by `EnvVars`).
    pub env: crate::job::EnvVars,
    /// Files to place under /run/secrets (name, value).
    pub secrets: Vec<(String, Secret)>,
    /// Environment variables whose values are credentials (the attempt's gateway token): in the
    /// container's environment, but kept out of what a backend stores in the clear (a
    /// Kubernetes pod spec refers to them in the attempt's Secret).
    pub secret_env: Vec<(String, Secret)>,
    pub resources: Resources,
    pub network: NetworkMode,
    /// For `network: llm`: the attempt's gateway relay, whose network namespace (loopback only)
    /// the container joins.
    pub llm_relay: Option<String>,
    /// Keep stdin open and attach to it (agent sessions).
    pub stdin: bool,
    /// OCI runtime (`runsc` for gVisor); `None` is the engine's default.
    pub runtime: Option<String>,
    /// Seconds the engine waits after SIGTERM before SIGKILL on a plain `docker stop`.
    pub stop_grace_secs: i64,
    /// The job's timeout (the runner enforces it; a backend may set a backstop from it).
    pub timeout: std::time::Duration,
}

/// An attempt's gateway relay: a small container with no network but loopback, whose only job is
/// to carry TCP connections from `127.0.0.1:`[`RELAY_PORT`] to the runner's gateway through the
/// attempt's own unix socket (bind-mounted from `socket_dir`). The job's container joins the
/// relay's network namespace, so it can reach that one port and nothing else, and the gateway
/// knows which attempt a call comes from by the socket it arrived on.
#[derive(Clone, Debug)]
pub struct RelayPlan {
    pub name: String,
    /// The attempt's labels (so orphan sweeps and tests' clean-up find the relay too).
    pub labels: Labels,
    /// Host directory holding the attempt's gateway socket (`gateway.sock`), mounted read-only.
    pub socket_dir: std::path::PathBuf,
    /// `uid:gid` the relay runs as: the owner of `socket_dir` (the runner's own user), so the
    /// socket needs no wider permissions.
    pub user: String,
}

/// The port the relay listens on inside the attempt's network namespace.
pub const RELAY_PORT: u16 = 8080;

impl ContainerPlan {
    /// The plan for a plain command job's attempt.
    pub fn for_command(
        spec: &JobSpec,
        command: &[String],
        labels: Labels,
        secrets: Vec<(String, Secret)>,
        stop_grace_secs: i64,
    ) -> Self {
        ContainerPlan {
            name: labels.container_name(),
            labels,
            image: spec.image.clone(),
            command: command.to_vec(),
            env: spec.env.clone(),
            secrets,
            secret_env: Vec::new(),
            resources: spec.resources,
            network: spec.network,
            llm_relay: None,
            stdin: false,
            runtime: spec.runtime.map(|r| r.as_str().to_string()),
            stop_grace_secs,
            timeout: spec.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_deterministic_and_valid_for_docker() {
        let labels = Labels {
            state: "0123456789ab".into(),
            job: "01JABCDEF".into(),
            attempt: 2,
        };
        assert_eq!(labels.container_name(), "runner-0123456789ab-01jabcdef-2");
        assert_eq!(labels.container_name(), labels.clone().container_name());
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
