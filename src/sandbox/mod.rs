//! Sandboxes: the [`Sandbox`] trait the scheduler drives, and its two implementations:
//! [`DockerSandbox`] (the only code that talks to the Docker engine) and [`KubeSandbox`] (the only
//! code that talks to a Kubernetes API server). [`Backend`] is the one the operator chose. A fake
//! implementation for scheduler tests lives in `scheduler::fake`.

mod backend;
mod docker;
pub mod images;
mod kubernetes;
mod plan;

pub use backend::{Backend, BackendKind};
pub(crate) use docker::missing_image_hint;
pub use docker::DockerSandbox;
pub use kubernetes::{KubeOptions, KubeSandbox, NetworkPolicyMode};
pub use plan::{
    attempt_of, ContainerPlan, Labels, RelayPlan, Secret, CONTAINER_USER, LABEL_ATTEMPT, LABEL_JOB,
    LABEL_STATE, RELAY_PORT,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::time::Duration;

/// A container's output, interleaved stdout and stderr.
pub type OutputStream = BoxStream<'static, Result<Bytes, SandboxError>>;

/// A container's stdin (plans with `stdin: true`).
pub type InputStream = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// What `launch` did.
pub struct Launched {
    /// Every byte of output from the start, when this call started the container; `None` for an
    /// adopted container that was already running (read it with [`Sandbox::logs`], or
    /// [`Sandbox::reattach`] to a session).
    pub output: Option<OutputStream>,
    /// The container's stdin, when the plan asked for it and this call started the container.
    pub input: Option<InputStream>,
    /// True when this call started the container; false when it adopted one already started.
    pub started: bool,
}

/// A session (a container whose plan had `stdin`) attached to again, by a runner that did not
/// start it.
pub struct Reattached {
    /// The output from the container's start: first what the engine's log holds (complete lines
    /// only: a line still being written is not in the log yet), then live from the moment of
    /// attaching (the rest of that line included).
    pub output: OutputStream,
    pub input: InputStream,
    /// How many bytes of `output` came from the log.
    pub logged: u64,
}

/// The result of a command run inside a running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    /// Stdout and stderr interleaved, cut at the requested limit.
    pub output: Bytes,
    /// True when output beyond the limit was dropped.
    pub truncated: bool,
}

/// How a container ended, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i64,
    /// The engine's own OOMKilled flag (never inferred from the exit code).
    pub oom_killed: bool,
}

/// A container's state as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    Running,
    Exited(ExitStatus),
}

/// A container carrying this state dir's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedContainer {
    pub name: String,
    /// `runner.job` label.
    pub job: String,
    /// `runner.attempt` label.
    pub attempt: u32,
    pub state: ContainerState,
    /// Only objects that hold no container are left (a Kubernetes attempt's Secret or
    /// NetworkPolicy after its Job and Pod are gone): nothing to adopt, only to remove.
    pub leftover: bool,
}

/// What the host can give to jobs, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostCapacity {
    pub cpus: f64,
    pub memory: u64,
}

/// Errors from a sandbox. `Unreachable` and `ImageMissing` are environment problems (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("docker is not reachable at {host}: {message}: is the daemon running? (set DOCKER_HOST to use another)")]
    Unreachable { host: String, message: String },
    #[error("the Kubernetes API server {server} is not reachable: {message} (check --kubeconfig / KUBECONFIG and the cluster)")]
    ClusterUnreachable { server: String, message: String },
    #[error("no Kubernetes cluster to use: {0} (give --kubeconfig FILE, set KUBECONFIG, or run the runner in a cluster)")]
    ClusterConfig(String),
    #[error("Kubernetes API error: {0}")]
    Cluster(String),
    /// This backend will not run the job as written (the detail says why and what to change).
    #[error("{0}")]
    Refused(String),
    #[error("image {image} is missing: {hint}")]
    ImageMissing { image: String, hint: String },
    #[error("no runtime {runtime:?} ({message}): install it (gVisor: https://gvisor.dev/docs/user_guide/install/) and register it in the Docker engine, or on Kubernetes as a RuntimeClass named {runtime:?}; or remove `runtime:` from the job")]
    RuntimeMissing { runtime: String, message: String },
    #[error("no such container {0}")]
    NoSuchContainer(String),
    #[error("docker engine error: {0}")]
    Engine(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl SandboxError {
    /// True when the engine itself cannot be used (as opposed to one call failing).
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            SandboxError::Unreachable { .. }
                | SandboxError::ClusterUnreachable { .. }
                | SandboxError::ClusterConfig(_)
                | SandboxError::ImageMissing { .. }
        )
    }
}

/// How a `network: llm` container reaches the runner's LLM gateway on a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayRoute {
    /// Through a relay whose network namespace the container joins ([`Sandbox::start_relay`]).
    Relay,
    /// Over the network, at this base URL (the gateway's shared listener, where the attempt's
    /// token alone says which attempt calls).
    Url(String),
    /// Not reachable from this backend's containers; the text says what to configure.
    Unavailable(String),
}

/// A place where job containers run. Every method is idempotent where the engine allows, so a
/// restarted scheduler can call it again for the same container.
#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// Checks the engine is reachable and reports what it can offer.
    async fn capacity(&self) -> Result<HostCapacity, SandboxError>;

    /// Checks the engine answers (cheap; called before starting jobs).
    async fn ping(&self) -> Result<(), SandboxError>;

    /// Why this backend refuses jobs with this network mode, if it does (checked before an
    /// attempt creates anything).
    fn refuse_network(&self, _network: crate::job::NetworkMode) -> Option<String> {
        None
    }

    /// How `network: llm` containers reach the gateway.
    fn gateway_route(&self) -> GatewayRoute {
        GatewayRoute::Relay
    }

    /// Checks that an image is present locally.
    async fn image_exists(&self, image: &str) -> Result<bool, SandboxError>;

    /// Creates the container of `plan` (adopting an existing one of the same name), delivers its
    /// secrets and starts it. When this call started the container, it attached to its output
    /// first and returns that stream (every byte, from the start, until it exits). An adopted
    /// container that was already started gives `None`: read it with [`Sandbox::logs`].
    async fn launch(&self, plan: &ContainerPlan) -> Result<Launched, SandboxError>;

    /// Attaches again to the stdio of a running container whose plan had `stdin` (an Aider
    /// session that a runner before this one started): the engine keeps its stdin open between
    /// attachments. No output falls between the log and the live part.
    async fn reattach(&self, name: &str) -> Result<Reattached, SandboxError>;

    /// Runs `argv` inside the running container as the job's user in /workspace, feeding it
    /// `stdin` (then EOF), and returns its exit code and at most `limit` bytes of its output.
    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<Bytes>,
        limit: usize,
    ) -> Result<ExecOutput, SandboxError>;

    /// The container's stored output (stdout and stderr, interleaved) from its start; with
    /// `follow`, continuing until it exits. Following may miss output produced just before the
    /// exit (an engine race), so read again without `follow` once it has exited.
    fn logs(&self, name: &str, follow: bool) -> OutputStream;

    /// Waits until the container exits.
    async fn wait(&self, name: &str) -> Result<ExitStatus, SandboxError>;

    /// Asks the container to stop (SIGTERM), killing it after `grace`.
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SandboxError>;

    /// Current state, `None` if the container does not exist.
    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, SandboxError>;

    /// Removes the container and its anonymous volumes; a missing container is not an error.
    async fn remove(&self, name: &str) -> Result<(), SandboxError>;

    /// Creates and starts an attempt's gateway relay (adopting one of the same name, started
    /// again if it stopped), and returns once it listens. Remove it with [`Sandbox::remove`].
    async fn start_relay(&self, relay: &RelayPlan) -> Result<(), SandboxError>;

    /// Removes the internal network `runner-llm-<state_id>` that runner versions before the
    /// relays made; true when it existed and is gone (it stays while a container uses it).
    async fn remove_legacy_llm_network(&self, state_id: &str) -> Result<bool, SandboxError>;

    /// Every container carrying `runner.state=<state_id>` (attempts' containers and their relays;
    /// [`attempt_of`] tells which attempt a relay serves).
    async fn list_owned(&self, state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError>;
}

/// A command's output kept up to a limit; what comes beyond it is dropped, and that is noted.
pub(crate) struct Capped {
    pub bytes: Vec<u8>,
    pub truncated: bool,
    limit: usize,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Capped {
            bytes: Vec::new(),
            truncated: false,
            limit,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// Every byte of `stream` (a log read to its end).
pub(crate) async fn read_all(mut stream: OutputStream) -> Result<Vec<u8>, SandboxError> {
    use futures_util::StreamExt;
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

/// What `live` delivers until it has been quiet for 300 ms (what an attachment got while the
/// log was read).
pub(crate) async fn read_until_quiet(live: &mut OutputStream) -> Result<Vec<u8>, SandboxError> {
    use futures_util::StreamExt;
    let mut window = Vec::new();
    let quiet = Duration::from_millis(300);
    while let Ok(Some(chunk)) = tokio::time::timeout(quiet, live.next()).await {
        window.extend_from_slice(&chunk?);
    }
    Ok(window)
}

/// How much of `window` (output from the moment of attaching) the end of `log` (complete lines)
/// already holds: the longest start of `window` that ends a line and ends `log`.
pub(crate) fn overlap(log: &[u8], window: &[u8]) -> usize {
    (1..=window.len().min(log.len()))
        .rev()
        .find(|&k| window[k - 1] == b'\n' && log.ends_with(&window[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::overlap;

    #[test]
    fn lines_both_in_the_log_and_the_attachment_are_kept_once() {
        // Attached after "a\n": "b\n" reached the log too, "c" is a line still being written.
        assert_eq!(overlap(b"a\nb\n", b"b\nc"), 2);
        // Nothing printed since: nothing to drop.
        assert_eq!(overlap(b"a\nb\n", b""), 0);
        // Attached mid-line: the rest of that line is not in the log yet.
        assert_eq!(overlap(b"a\n", b"rest of a line"), 0);
        // Only whole lines count.
        assert_eq!(overlap(b"x\nab", b"ab"), 0);
    }
}
