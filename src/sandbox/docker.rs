//! The Docker implementation of [`Sandbox`], through the Engine API (bollard). All hardening
//! defaults are applied here, in one place (`host_config`).

use super::plan::{ContainerPlan, CONTAINER_USER, LABEL_ATTEMPT, LABEL_JOB, LABEL_STATE};
use super::{
    overlap, ContainerState, ExecOutput, ExitStatus, HostCapacity, Launched, OutputStream,
    OwnedContainer, Reattached, RelayPlan, Sandbox, SandboxError,
};
use crate::job::NetworkMode;
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountTypeEnum, MountVolumeOptions, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use std::collections::HashMap;
use std::time::Duration;

mod relay;

/// Where secrets appear inside the container.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Per-container json-file log caps (the runner keeps its own capped copy of the output).
const LOG_MAX_SIZE: &str = "20m";
const LOG_MAX_FILES: &str = "2";

/// A connection to one Docker engine.
#[derive(Clone)]
pub struct DockerSandbox {
    /// For short calls (default request timeout).
    docker: Docker,
    /// For calls that last as long as a container does (wait, logs).
    long: Docker,
    /// DOCKER_HOST as the user set it, for messages.
    host: String,
}

impl std::fmt::Debug for DockerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSandbox")
            .field("host", &self.host)
            .finish()
    }
}

impl DockerSandbox {
    /// Connects to the engine named by DOCKER_HOST (default the local socket) and checks it answers.
    pub async fn connect() -> Result<Self, SandboxError> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |e: BollardError| SandboxError::Unreachable {
            host: host.clone(),
            message: e.to_string(),
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = tokio::time::timeout(Duration::from_secs(20), docker.negotiate_version())
            .await
            .map_err(|_| SandboxError::Unreachable {
                host: host.clone(),
                message: "no answer within 20s".into(),
            })?
            .map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        let long = docker
            .clone()
            .with_timeout(Duration::from_secs(60 * 60 * 24 * 30));
        Ok(DockerSandbox { docker, long, host })
    }

    /// The underlying client, for image builds (`sandbox::images`).
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    pub(crate) fn map_err(&self, e: BollardError) -> SandboxError {
        map_error(&self.host, e)
    }

    /// Starts a created container (one already started is fine).
    async fn start(&self, name: &str) -> Result<(), SandboxError> {
        match self
            .docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn upload_secrets(&self, plan: &ContainerPlan) -> Result<(), SandboxError> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, secret) in &plan.secrets {
            let value = secret.expose().as_bytes();
            let mut header = tar::Header::new_gnu();
            header.set_size(value.len() as u64);
            header.set_mode(0o400);
            header.set_uid(1000);
            header.set_gid(1000);
            header.set_mtime(0);
            builder.append_data(&mut header, name, value)?;
        }
        let archive = builder.into_inner()?;
        let options = UploadToContainerOptionsBuilder::new()
            .path(SECRETS_DIR)
            .build();
        self.docker
            .upload_to_container(
                &plan.name,
                Some(options),
                bollard::body_full(Bytes::from(archive)),
            )
            .await
            .map_err(|e| self.map_err(e))
    }
}

fn host_config(plan: &ContainerPlan) -> HostConfig {
    let memory = plan.resources.memory.0 as i64;
    let tmpfs_opts = format!("rw,nosuid,nodev,size={memory}");
    let workspace_opts = format!("rw,nosuid,nodev,exec,uid=1000,gid=1000,mode=0755,size={memory}");
    let mounts = (!plan.secrets.is_empty()).then(|| {
        vec![Mount {
            target: Some(SECRETS_DIR.into()),
            typ: Some(MountTypeEnum::VOLUME),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                labels: Some(plan.labels.to_map()),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some((plan.resources.cpus * 1e9).round() as i64),
        pids_limit: Some(plan.resources.pids as i64),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([
            ("/tmp".to_string(), tmpfs_opts),
            ("/workspace".to_string(), workspace_opts),
        ])),
        init: Some(true),
        restart_policy: Some(never_restart()),
        log_config: Some(json_log(LOG_MAX_SIZE)),
        // An `llm` job shares its relay's network namespace: loopback only, where the relay's
        // one port leads to the gateway. Without a relay it gets no network at all.
        network_mode: Some(match (plan.network, &plan.llm_relay) {
            (NetworkMode::None, _) | (NetworkMode::Llm, None) => "none".into(),
            (NetworkMode::Bridge, _) => "bridge".into(),
            (NetworkMode::Llm, Some(relay)) => format!("container:{relay}"),
        }),
        mounts,
        runtime: plan.runtime.clone(),
        auto_remove: Some(false),
        privileged: Some(false),
        ..Default::default()
    }
}

/// The runner restarts nothing itself: a container that stops stays stopped.
fn never_restart() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    }
}

/// The engine's own log of a container, capped at `max_size` per file.
fn json_log(max_size: &str) -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".to_string(), max_size.to_string()),
            ("max-file".to_string(), LOG_MAX_FILES.to_string()),
        ])),
    }
}

fn create_body(plan: &ContainerPlan) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        cmd: Some(plan.command.clone()),
        env: Some(
            plan.env
                .0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(
                    plan.secret_env
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.expose())),
                )
                .collect(),
        ),
        user: Some(CONTAINER_USER.into()),
        working_dir: Some("/workspace".into()),
        labels: Some(plan.labels.to_map()),
        attach_stdin: Some(plan.stdin),
        open_stdin: Some(plan.stdin),
        stdin_once: Some(false),
        tty: Some(false),
        stop_timeout: Some(plan.stop_grace_secs),
        network_disabled: Some(
            plan.network == NetworkMode::None
                || (plan.network == NetworkMode::Llm && plan.llm_relay.is_none()),
        ),
        host_config: Some(host_config(plan)),
        ..Default::default()
    }
}

/// Stdout and stderr frames as plain bytes.
fn output_stream(
    host: String,
    frames: impl Stream<Item = Result<LogOutput, BollardError>> + Send + 'static,
) -> OutputStream {
    frames
        .map(move |item| match item {
            Ok(LogOutput::StdOut { message })
            | Ok(LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message })
            | Ok(LogOutput::StdIn { message }) => Ok(message),
            Err(e) => Err(map_error(&host, e)),
        })
        .boxed()
}

/// How to get a missing image onto this host.
pub(crate) fn missing_image_hint(image: &str) -> String {
    if image.starts_with("runner/base:") {
        "build it with `runner images build base`".into()
    } else if image.starts_with("runner/aider:") {
        "build it with `runner images build aider`".into()
    } else {
        "no registry is used: build it or `docker load` it on this host".into()
    }
}

fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Maps a bollard error: connection failures are `Unreachable`, server answers are `Engine`.
pub(crate) fn map_error(host: &str, e: BollardError) -> SandboxError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } if message.contains("No such container") => SandboxError::NoSuchContainer(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => SandboxError::Engine(format!("{message} (HTTP {status_code})")),
        BollardError::DockerStreamError { error } => SandboxError::Engine(error),
        BollardError::JsonDataError { message, .. } => SandboxError::Engine(message),
        other => SandboxError::Unreachable {
            host: host.to_string(),
            message: other.to_string(),
        },
    }
}

fn state_of(inspect: &bollard::models::ContainerInspectResponse) -> ContainerState {
    let state = inspect.state.clone().unwrap_or_default();
    let exited = ExitStatus {
        code: state.exit_code.unwrap_or(-1),
        oom_killed: state.oom_killed.unwrap_or(false),
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            ContainerState::Exited(exited)
        }
        _ if state.running == Some(true) => ContainerState::Running,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Exited(exited),
        _ => ContainerState::Running,
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn capacity(&self) -> Result<HostCapacity, SandboxError> {
        let info = self.docker.info().await.map_err(|e| self.map_err(e))?;
        Ok(HostCapacity {
            cpus: info.ncpu.unwrap_or(1) as f64,
            memory: info.mem_total.unwrap_or(0).max(0) as u64,
        })
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        let quick = self.docker.clone().with_timeout(Duration::from_secs(5));
        quick.ping().await.map(|_| ()).map_err(|e| self.map_err(e))
    }

    async fn image_exists(&self, image: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn launch(&self, plan: &ContainerPlan) -> Result<Launched, SandboxError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&plan.name)
            .build();
        let fresh = match self
            .docker
            .create_container(Some(options), create_body(plan))
            .await
        {
            Ok(_) => true,
            // Same deterministic name: created before a crash; adopt it.
            Err(e) if status_code(&e) == Some(409) => false,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(SandboxError::ImageMissing {
                    image: plan.image.clone(),
                    hint: missing_image_hint(&plan.image),
                })
            }
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("runtime") && plan.runtime.is_some() =>
            {
                return Err(SandboxError::RuntimeMissing {
                    runtime: plan.runtime.clone().unwrap_or_default(),
                    message,
                })
            }
            Err(e) => return Err(self.map_err(e)),
        };
        let state = if fresh {
            ContainerState::Created
        } else {
            self.inspect(&plan.name)
                .await?
                .ok_or_else(|| SandboxError::NoSuchContainer(plan.name.clone()))?
        };
        if state != ContainerState::Created {
            return Ok(Launched {
                output: None,
                input: None,
                started: false,
            });
        }
        if !plan.secrets.is_empty() {
            self.upload_secrets(plan).await?;
        }
        // Attach before starting: the attach stream carries every byte the container writes
        // (following the stored log can lose the last output of a fast exit).
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(plan.stdin)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = self
            .long
            .attach_container(&plan.name, Some(options))
            .await
            .map_err(|e| self.map_err(e))?;
        let output = output_stream(self.host.clone(), attached.output);
        let input = plan.stdin.then_some(attached.input);
        self.start(&plan.name).await?;
        Ok(Launched {
            output: Some(output),
            input,
            started: true,
        })
    }

    async fn reattach(&self, name: &str) -> Result<Reattached, SandboxError> {
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = self
            .long
            .attach_container(name, Some(options))
            .await
            .map_err(|e| self.map_err(e))?;
        let mut live = output_stream(self.host.clone(), attached.output);
        // Frozen while the log is read, so the log and what the attachment got meanwhile can be
        // told apart (the engine refuses to attach to a paused container, hence attach first).
        let paused = match self.docker.pause_container(name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(container = %name, "cannot pause to re-attach (output printed meanwhile may show twice): {e}");
                false
            }
        };
        let read = async {
            let log = super::read_all(self.logs(name, false)).await?;
            // What the attachment got between attaching and the pause.
            let window = if paused {
                super::read_until_quiet(&mut live).await?
            } else {
                Vec::new()
            };
            Ok::<_, SandboxError>((log, window))
        }
        .await;
        if paused {
            if let Err(e) = self.docker.unpause_container(name).await {
                tracing::warn!(container = %name, "cannot unpause: {e}");
            }
        }
        let (log, mut window) = read?;
        // The complete lines printed after attaching are in both: keep them once.
        window.drain(..overlap(&log, &window));
        let logged = log.len() as u64;
        let past = futures_util::stream::iter([Ok(Bytes::from(log)), Ok(Bytes::from(window))]);
        Ok(Reattached {
            output: past.chain(live).boxed(),
            input: attached.input,
            logged,
        })
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<Bytes>,
        limit: usize,
    ) -> Result<ExecOutput, SandboxError> {
        let config = bollard::models::ExecConfig {
            attach_stdin: Some(stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(argv.to_vec()),
            user: Some(CONTAINER_USER.into()),
            working_dir: Some("/workspace".into()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(name, config)
            .await
            .map_err(|e| self.map_err(e))?;
        let started = self
            .long
            .start_exec(&created.id, None::<bollard::exec::StartExecOptions>)
            .await
            .map_err(|e| self.map_err(e))?;
        let bollard::exec::StartExecResults::Attached { output, mut input } = started else {
            return Err(SandboxError::Engine("exec started detached".into()));
        };
        // Feed stdin beside reading output, so a command that writes before it has read
        // everything cannot deadlock against us.
        let feeder = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Some(data) = stdin {
                let _ = input.write_all(&data).await;
            }
            let _ = input.shutdown().await;
        });
        let mut output = output_stream(self.host.clone(), output);
        let mut kept = super::Capped::new(limit);
        while let Some(chunk) = output.next().await {
            kept.push(&chunk?);
        }
        let _ = feeder.await;
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(ExecOutput {
            code: inspect.exit_code.unwrap_or(-1),
            output: Bytes::from(kept.bytes),
            truncated: kept.truncated,
        })
    }

    fn logs(&self, name: &str, follow: bool) -> OutputStream {
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        output_stream(self.host.clone(), self.long.logs(name, Some(options)))
    }

    async fn wait(&self, name: &str) -> Result<ExitStatus, SandboxError> {
        let mut stream = self.long.wait_container(
            name,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        // bollard reports a non-zero exit as an error; the exit status comes from inspect below.
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) | Err(BollardError::DockerContainerWaitError { .. }) => {}
                Err(e) => return Err(self.map_err(e)),
            }
        }
        match self.inspect(name).await? {
            Some(ContainerState::Exited(status)) => Ok(status),
            Some(_) => Err(SandboxError::Engine(format!(
                "container {name} is still running after wait returned"
            ))),
            None => Err(SandboxError::NoSuchContainer(name.to_string())),
        }
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SandboxError> {
        let options = StopContainerOptionsBuilder::new()
            .t(grace.as_secs().clamp(0, i32::MAX as u64) as i32)
            .build();
        // The engine blocks for up to the grace period; give the call that much more time.
        let client = self
            .docker
            .clone()
            .with_timeout(grace + Duration::from_secs(60));
        match client.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, SandboxError> {
        match self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspect) => Ok(Some(state_of(&inspect))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), SandboxError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone already, or another remove is under way.
            Err(e) if matches!(status_code(&e), Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn start_relay(&self, relay: &RelayPlan) -> Result<(), SandboxError> {
        self.start_relay_container(relay).await
    }

    async fn remove_legacy_llm_network(&self, state_id: &str) -> Result<bool, SandboxError> {
        match self
            .docker
            .remove_network(&format!("runner-llm-{state_id}"))
            .await
        {
            Ok(()) => Ok(true),
            // Missing, or still in use by a container.
            Err(e) if matches!(status_code(&e), Some(404) | Some(403) | Some(409)) => Ok(false),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn list_owned(&self, state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_STATE}={state_id}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.map_err(e))?;
        let mut owned = Vec::new();
        for summary in list {
            let labels = summary.labels.unwrap_or_default();
            let name = summary
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let Some(state) = self.inspect(&name).await? else {
                continue;
            };
            owned.push(OwnedContainer {
                name,
                job: labels.get(LABEL_JOB).cloned().unwrap_or_default(),
                attempt: labels
                    .get(LABEL_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                state,
                leftover: false,
            });
        }
        Ok(owned)
    }
}
