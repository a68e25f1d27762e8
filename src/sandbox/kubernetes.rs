//! The Kubernetes implementation of [`Sandbox`], through the API server (kube-rs): an attempt is a
//! Job with one Pod (see `manifest` for the objects). Output comes from `pods/log`, Aider's stdin
//! goes through `pods/attach`, commands (upload, verify, export) run through `pods/exec`, exit
//! codes and OOM come from the container's terminated state, and a stop deletes the Pod with a
//! grace period.
//!
//! What Kubernetes cannot express as Docker does: a per-pod process limit (`resources.pids`) is a
//! kubelet setting (`--pod-max-pids`), not part of a pod spec; `network: none` and `llm` hold only
//! where the cluster's network plugin enforces NetworkPolicy (see [`NetworkPolicyMode`]).

mod manifest;

use manifest::{GatewayPeer, LABEL_CONTAINER};

use super::plan::{ContainerPlan, LABEL_ATTEMPT, LABEL_JOB, LABEL_STATE};
use super::{
    ContainerState, ExecOutput, ExitStatus, GatewayRoute, HostCapacity, Launched, OutputStream,
    OwnedContainer, Reattached, RelayPlan, Sandbox, SandboxError,
};
use crate::job::NetworkMode;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{AsyncReadExt as _, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{AttachParams, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Config};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

/// Whether the cluster enforces NetworkPolicy, as the operator states it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkPolicyMode {
    /// Not stated: jobs that need `network: none` or `llm` isolation are refused.
    #[default]
    Undeclared,
    /// The cluster's network plugin enforces NetworkPolicy (Calico, Cilium...).
    Enforced,
    /// The operator accepts that the policies may not be enforced: such jobs run, and may reach
    /// the network.
    Unenforced,
}

/// How to reach the cluster and how to run jobs there.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// A kubeconfig file; `None` infers (KUBECONFIG, ~/.kube/config, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Where jobs run; `None` is the kubeconfig's namespace (or the pod's own in-cluster).
    pub namespace: Option<String>,
    pub network_policy: NetworkPolicyMode,
    /// The gateway's base URL as pods reach it (`http://10.0.0.5:8089`), when the runner serves
    /// one on the network.
    pub gateway_url: Option<String>,
}

/// A connection to one Kubernetes API server and namespace.
#[derive(Clone)]
pub struct KubeSandbox {
    client: Client,
    namespace: String,
    /// The API server's URL, for messages.
    server: String,
    options: KubeOptions,
    /// Each attempt's Pod (by uid), once seen. If it is deleted while it runs (a drain, a
    /// person), the Job controller makes a new one, which never has the attempt's workspace or
    /// session: it is not the attempt's Pod, and the attempt has lost its container.
    pinned: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for KubeSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSandbox")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Images on a node are never pulled: the job files name local images (`runner/base:...`), which
/// must be loaded on the nodes (README, "Kubernetes").
const PULL_POLICY: &str = "Never";
/// The Job's annotation naming its attempt's Pod (uid).
const ANNOTATION_POD: &str = "runner.pod-uid";
/// How many images a kubelet lists in its node's status by default (`--node-status-max-images`).
const NODE_STATUS_MAX_IMAGES: usize = 50;
/// Most time from creating a Job to its container running (scheduling, volumes, start).
const START_WITHIN: Duration = Duration::from_secs(300);
/// How often a starting or ending Pod is looked at.
const POLL: Duration = Duration::from_millis(100);

impl KubeSandbox {
    /// Connects to the API server (kubeconfig or in-cluster) and checks it answers.
    pub async fn connect(options: KubeOptions) -> Result<Self, SandboxError> {
        let config = match &options.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    SandboxError::ClusterConfig(format!("cannot read {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| SandboxError::ClusterConfig(format!("{}: {e}", path.display())))?
            }
            None => Config::infer()
                .await
                .map_err(|e| SandboxError::ClusterConfig(e.to_string()))?,
        };
        // Logs and attachments last as long as a job: no read timeout (kube's default cuts
        // a stream that is quiet for five minutes).
        let mut config = config;
        config.read_timeout = None;
        let server = config.cluster_url.to_string();
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| SandboxError::ClusterUnreachable {
            server: server.clone(),
            message: e.to_string(),
        })?;
        let sandbox = KubeSandbox {
            client,
            namespace,
            server,
            options,
            pinned: Arc::default(),
        };
        sandbox.ping().await?;
        Ok(sandbox)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn map_err(&self, e: kube::Error) -> SandboxError {
        match e {
            kube::Error::Api(status) => {
                SandboxError::Cluster(format!("{} (HTTP {})", status.message, status.code))
            }
            // The API server answered but would not attach (the container is not running, the
            // Pod is gone).
            kube::Error::UpgradeConnection(e) => {
                SandboxError::Cluster(format!("cannot attach to the pod: {e}"))
            }
            other => SandboxError::ClusterUnreachable {
                server: self.server.clone(),
                message: other.to_string(),
            },
        }
    }

    /// The Pod of an attempt: the one seen first (pinned), else the oldest of its Job's (a
    /// runner that starts adopting takes the first the Job made).
    async fn pod_of(&self, name: &str) -> Result<Option<Pod>, SandboxError> {
        let list = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&manifest::selector(name)))
            .await
            .map_err(|e| self.map_err(e))?;
        let mut pinned = lock(&self.pinned).get(name).cloned();
        if pinned.is_none() && !list.items.is_empty() {
            // A runner that starts adopting: the Job says which Pod was the attempt's.
            pinned = self
                .api::<Job>()
                .get_opt(name)
                .await
                .map_err(|e| self.map_err(e))?
                .and_then(|job| job.metadata.annotations?.get(ANNOTATION_POD).cloned());
        }
        let pod = match pinned {
            Some(uid) => list
                .items
                .into_iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str())),
            None => list
                .items
                .into_iter()
                .min_by_key(|p| p.metadata.creation_timestamp.clone()),
        };
        if let Some(uid) = pod.as_ref().and_then(|p| p.metadata.uid.clone()) {
            lock(&self.pinned).entry(name.to_string()).or_insert(uid);
        }
        Ok(pod)
    }

    /// Waits until the attempt's container runs or has ended, and returns its Pod's name. Images
    /// that cannot be had, pods that cannot be scheduled or started fail with the cluster's reason.
    async fn started(&self, name: &str) -> Result<String, SandboxError> {
        let begun = tokio::time::Instant::now();
        let deadline = begun + START_WITHIN;
        let mut problem: Option<String> = None;
        let mut checked_events = begun;
        loop {
            match self.pod_of(name).await {
                Ok(Some(pod)) => {
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    match state_of(&pod) {
                        ContainerState::Running | ContainerState::Exited(_) => return Ok(pod_name),
                        ContainerState::Created => {}
                    }
                    if let Some((reason, message)) = waiting(&pod) {
                        match reason.as_str() {
                            "ErrImageNeverPull" | "ErrImagePull" | "ImagePullBackOff"
                            | "InvalidImageName" => {
                                let image = image_of(&pod);
                                return Err(SandboxError::ImageMissing {
                                    hint: format!("the cluster's nodes do not have it ({reason}): load it on every node (`docker save {image} | docker load` there), or push it to a registry the nodes use"),
                                    image,
                                });
                            }
                            "CreateContainerConfigError"
                            | "CreateContainerError"
                            | "RunContainerError" => {
                                return Err(SandboxError::Cluster(format!(
                                    "the container cannot start: {reason}: {message}"
                                )))
                            }
                            _ => {}
                        }
                    }
                    problem =
                        scheduling_problem(&pod).map(|m| format!("it cannot be scheduled: {m}"));
                }
                // No Pod yet: has the Job controller been refused one? (Looked at every 2s.)
                Ok(None) if checked_events.elapsed() >= Duration::from_secs(2) => {
                    checked_events = tokio::time::Instant::now();
                    match self.pod_refused(name).await {
                        Ok(Some(SandboxError::RuntimeMissing { runtime, message })) => {
                            return Err(SandboxError::RuntimeMissing { runtime, message })
                        }
                        // A quota or a webhook may let it through later: said at the deadline.
                        Ok(Some(other)) => problem = Some(other.to_string()),
                        Ok(None) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SandboxError::Cluster(format!(
                    "the job's pod did not start within {}s{}",
                    START_WITHIN.as_secs(),
                    problem.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
            // Quick at first (a pod on a warm node starts in about a second), then gentler.
            let pause = if begun.elapsed() < Duration::from_secs(3) {
                POLL
            } else {
                POLL * 5
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Why the Job controller could not create the attempt's Pod, from its `FailedCreate`
    /// events (an unknown RuntimeClass, a quota, a policy refusing the pod).
    async fn pod_refused(&self, name: &str) -> Result<Option<SandboxError>, SandboxError> {
        let events = self
            .api::<k8s_openapi::api::core::v1::Event>()
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate"
            )))
            .await
            .map_err(|e| self.map_err(e))?;
        let Some(message) = events.items.into_iter().find_map(|e| e.message) else {
            return Ok(None);
        };
        let runtime = self
            .api::<Job>()
            .get_opt(name)
            .await
            .map_err(|e| self.map_err(e))?
            .and_then(|j| j.spec?.template.spec?.runtime_class_name);
        Ok(Some(match runtime {
            Some(runtime) if message.contains("RuntimeClass") => {
                SandboxError::RuntimeMissing { runtime, message }
            }
            _ => SandboxError::Cluster(format!("the job's pod cannot be created: {message}")),
        }))
    }

    /// Follows (or reads) the container's log from its start (`Sandbox::logs`).
    fn log_stream(&self, name: &str, follow: bool) -> OutputStream {
        let this = self.clone();
        let name = name.to_string();
        let open = async move {
            let pod = if follow {
                this.started(&name).await?
            } else {
                match this.pod_of(&name).await? {
                    Some(pod) => pod.metadata.name.unwrap_or_default(),
                    None => return Err(SandboxError::NoSuchContainer(name)),
                }
            };
            let params = LogParams {
                follow,
                container: Some(manifest::CONTAINER.into()),
                ..Default::default()
            };
            let reader = this
                .api::<Pod>()
                .log_stream(&pod, &params)
                .await
                .map_err(|e| this.map_err(e))?;
            Ok(futures_util::stream::unfold(
                Box::pin(reader),
                |mut reader| async move {
                    let mut buf = vec![0u8; 64 << 10];
                    match reader.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), reader))
                        }
                        Err(e) => Some((Err(SandboxError::Io(e)), reader)),
                    }
                },
            ))
        };
        futures_util::stream::once(open)
            .flat_map(|opened| match opened {
                Ok(stream) => stream.boxed(),
                // A container that never started (or was removed) has no log: an empty one,
                // unless the cluster itself failed.
                Err(SandboxError::NoSuchContainer(_)) => futures_util::stream::empty().boxed(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    /// Attaches to a session's stdio through `pods/attach`. The log holds complete lines only (a
    /// prompt still waiting for its newline is not in it), so the output is the log read after
    /// attaching, then what the attachment got that the log does not hold, then the attachment
    /// live. Lines printed between attaching and reading the log are in both and kept once.
    async fn attach_session(&self, name: &str, pod: &str) -> Result<Reattached, SandboxError> {
        let params = stdio(true);
        let mut attached = self
            .api::<Pod>()
            .attach(pod, &params)
            .await
            .map_err(|e| self.map_err(e))?;
        let (Some(stdin), Some(out), Some(err)) =
            (attached.stdin(), attached.stdout(), attached.stderr())
        else {
            return Err(SandboxError::Cluster("attach gave no stdio".into()));
        };
        let mut live = futures_util::stream::select(
            tokio_util::io::ReaderStream::with_capacity(out, 64 << 10),
            tokio_util::io::ReaderStream::with_capacity(err, 64 << 10),
        )
        .map(|chunk| chunk.map_err(SandboxError::Io))
        .boxed();
        let log = super::read_all(self.log_stream(name, false)).await?;
        // What the attachment got meanwhile.
        let mut window = super::read_until_quiet(&mut live).await?;
        window.drain(..super::overlap(&log, &window));
        let logged = log.len() as u64;
        let before = futures_util::stream::iter([Ok(Bytes::from(log)), Ok(Bytes::from(window))]);
        // The attachment ends when the container does, or when the connection to the API server
        // drops: then it is an error (the session is lost), not Aider leaving.
        let this = self.clone();
        let name = name.to_string();
        let end = futures_util::stream::once(async move {
            match this.inspect(&name).await {
                Ok(Some(ContainerState::Running)) => Some(Err(SandboxError::Cluster(
                    "the attachment to the pod ended while its container still runs".into(),
                ))),
                _ => None,
            }
        })
        .filter_map(std::future::ready);
        Ok(Reattached {
            output: before.chain(live).chain(end).boxed(),
            input: Box::pin(Attached {
                stdin,
                _process: attached,
            }),
            logged,
        })
    }

    /// Creates `object`; `None` when one of the same name exists (made before a crash: adopt it).
    async fn create<K: Namespaced + serde::Serialize>(
        &self,
        object: &K,
    ) -> Result<Option<K>, SandboxError> {
        match self.api::<K>().create(&PostParams::default(), object).await {
            Ok(created) => Ok(Some(created)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn delete<K: Namespaced>(
        &self,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(), SandboxError> {
        match self.api::<K>().delete(name, params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Writes the attempt's Pod (its uid) on its Job, so that a runner adopting it after a
    /// restart knows a replacement the Job controller made meanwhile is not the attempt's. If
    /// this fails, an adopting runner takes the Job's oldest Pod.
    async fn record_pod(&self, name: &str) {
        let Some(uid) = lock(&self.pinned).get(name).cloned() else {
            return;
        };
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_POD: uid}}});
        if let Err(e) = self
            .api::<Job>()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(container = %name, "cannot record the attempt's pod on its job: {e}");
        }
    }

    /// Makes the attempt's Secret and NetworkPolicy owned by its Job, so that Kubernetes deletes
    /// them with it (when a runner that is gone for good never removes them, the Job's
    /// `ttlSecondsAfterFinished` takes all). They are made before the Job (its Pod needs them at
    /// once), hence a patch; if it fails they stay until the runner removes them by label.
    async fn owned_by_job(&self, plan: &ContainerPlan, job: &Job) {
        let Some(uid) = &job.metadata.uid else {
            return;
        };
        let patch = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": plan.name,
            "uid": uid,
        }]}});
        let params = kube::api::PatchParams::default();
        let merge = kube::api::Patch::Merge(&patch);
        if manifest::needs_secret(plan) {
            if let Err(e) = self
                .api::<Secret>()
                .patch(&plan.name, &params, &merge)
                .await
            {
                tracing::warn!(container = %plan.name, "cannot tie the secret to its job: {e}");
            }
        }
        if plan.network != NetworkMode::Bridge {
            if let Err(e) = self
                .api::<NetworkPolicy>()
                .patch(&plan.name, &params, &merge)
                .await
            {
                tracing::warn!(container = %plan.name, "cannot tie the network policy to its job: {e}");
            }
        }
    }

    /// Deletes the attempt's pods, letting them stop within `grace`.
    async fn delete_pods(&self, name: &str, grace: u32) -> Result<(), SandboxError> {
        let params = DeleteParams {
            grace_period_seconds: Some(grace),
            ..Default::default()
        };
        let list = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&manifest::selector(name)))
            .await
            .map_err(|e| self.map_err(e))?;
        for pod in list.items {
            if let Some(pod) = pod.metadata.name {
                self.delete::<Pod>(&pod, &params).await?;
            }
        }
        Ok(())
    }

    /// The names (`runner.container`) of objects of kind `K` carrying the state dir's label.
    async fn owned_names<K: Namespaced>(
        &self,
        state_id: &str,
    ) -> Result<Vec<String>, SandboxError> {
        let list = self
            .api::<K>()
            .list(&ListParams::default().labels(&format!("{LABEL_STATE}={state_id}")))
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| container_of(o.meta()))
            .collect())
    }
}

/// A namespaced kind the sandbox makes, reads and deletes (Job, Pod, Secret, NetworkPolicy).
trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Aider's stdin, holding the attach session open while it is written to.
struct Attached<W> {
    stdin: W,
    _process: kube::api::AttachedProcess,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Attached<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stdin).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stdin).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// The attempt (`runner.container` label) an object belongs to.
fn container_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.labels.as_ref()?.get(LABEL_CONTAINER).cloned()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether an API error may pass (the API server restarting, throttling, a dropped connection).
fn transient(e: &SandboxError) -> bool {
    match e {
        SandboxError::ClusterUnreachable { .. } => true,
        SandboxError::Cluster(message) => [
            "(HTTP 429)",
            "(HTTP 500)",
            "(HTTP 502)",
            "(HTTP 503)",
            "(HTTP 504)",
        ]
        .iter()
        .any(|code| message.ends_with(code)),
        _ => false,
    }
}

/// Where the NetworkPolicy of an `llm` job lets it go, from the gateway's URL as pods reach it.
fn gateway_peer(url: &str) -> Option<GatewayPeer> {
    let url = reqwest::Url::parse(url).ok()?;
    let port = url.port_or_known_default()?;
    // An IPv6 host comes bracketed.
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some(match host.parse() {
        Ok(ip) => GatewayPeer::Address { ip, port },
        Err(_) => GatewayPeer::RunnerPods { port },
    })
}

/// The job container's stdout and stderr (no terminal), and its stdin when asked, for an attach
/// or an exec.
fn stdio(stdin: bool) -> AttachParams {
    AttachParams {
        container: Some(manifest::CONTAINER.into()),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
        max_stdin_buf_size: Some(64 << 10),
        max_stdout_buf_size: Some(64 << 10),
        max_stderr_buf_size: Some(64 << 10),
    }
}

/// The job container's status in a Pod.
fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == manifest::CONTAINER)
}

/// The container's state as the cluster reports it: OOM only from the `OOMKilled` reason.
fn state_of(pod: &Pod) -> ContainerState {
    let state = container_status(pod).and_then(|c| c.state.as_ref());
    if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
        return ContainerState::Exited(ExitStatus {
            code: done.exit_code as i64,
            oom_killed: done.reason.as_deref() == Some("OOMKilled"),
        });
    }
    if state.and_then(|s| s.running.as_ref()).is_some() {
        return ContainerState::Running;
    }
    // Ended before its container ran (deadline, eviction): no exit code to report.
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed") | Some("Succeeded")) {
        return ContainerState::Exited(ExitStatus {
            code: -1,
            oom_killed: false,
        });
    }
    ContainerState::Created
}

fn waiting(pod: &Pod) -> Option<(String, String)> {
    let waiting = container_status(pod)?.state.as_ref()?.waiting.as_ref()?;
    Some((
        waiting.reason.clone().unwrap_or_default(),
        waiting.message.clone().unwrap_or_default(),
    ))
}

fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn scheduling_problem(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_default())
}

/// A Kubernetes quantity (`2`, `1500m`, `16Gi`, `24000000Ki`) as a number.
fn parse_quantity(q: &str) -> Option<f64> {
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse().ok()
}

/// The interleaved output of an exec, cut at `limit`.
async fn collect_output(
    mut out: impl tokio::io::AsyncRead + Unpin,
    mut err: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
) -> super::Capped {
    let mut kept = super::Capped::new(limit);
    let (mut out_open, mut err_open) = (true, true);
    let (mut a, mut b) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    while out_open || err_open {
        tokio::select! {
            n = out.read(&mut a), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => kept.push(&a[..n]),
            },
            n = err.read(&mut b), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => kept.push(&b[..n]),
            },
        }
    }
    kept
}

/// The exit code in an exec's final status: `Success` is 0, a `NonZeroExitCode` failure carries
/// its code; anything else (the container is gone, the command could not start) is an error.
fn exit_code(
    status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
) -> Result<i64, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref()?.parse().ok());
    match code {
        Some(code) => Ok(code),
        None => Err(status
            .message
            .clone()
            .unwrap_or_else(|| "exec failed".into())),
    }
}

/// The shell line `exec` runs `argv` under: in /workspace, and with `stdin_len` bytes of input
/// read exactly (a WebSocket attach cannot close the command's stdin, so `head -c` ends it).
fn exec_argv(argv: &[String], stdin_len: Option<usize>) -> Vec<String> {
    let script = match stdin_len {
        Some(_) => "cd /workspace && head -c \"$0\" | \"$@\"",
        None => "cd /workspace && exec \"$@\" </dev/null",
    };
    let mut full = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        stdin_len.unwrap_or(0).to_string(),
    ];
    full.extend(argv.iter().cloned());
    full
}

#[async_trait]
impl Sandbox for KubeSandbox {
    fn refuse_network(&self, network: NetworkMode) -> Option<String> {
        if network == NetworkMode::Bridge
            || self.options.network_policy != NetworkPolicyMode::Undeclared
        {
            return None;
        }
        let what = match network {
            NetworkMode::None => "no network (`network: none`)",
            _ => "only the LLM gateway (`network: llm`, the default for agent jobs)",
        };
        Some(format!(
            "this job may reach {what}, which Kubernetes enforces only through NetworkPolicy, and only where the cluster's network plugin enforces it (Calico, Cilium...; not kubenet, not flannel alone); this runner was not told the cluster does. If it does, start the runner with --network-policy enforced (RUNNER_NETWORK_POLICY=enforced); to run such jobs anyway, knowing they may reach the network, accept the risk with --network-policy unenforced"
        ))
    }

    fn gateway_route(&self) -> GatewayRoute {
        match &self.options.gateway_url {
            Some(url) => GatewayRoute::Url(url.trim_end_matches('/').to_string()),
            None => GatewayRoute::Unavailable(
                "on Kubernetes, pods reach the LLM gateway over the network: start the runner with --gateway-listen ADDR:PORT (and --gateway-url URL when pods reach it at another address, such as a Service)".into(),
            ),
        }
    }

    async fn capacity(&self) -> Result<HostCapacity, SandboxError> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| self.map_err(e))?;
        let mut capacity = HostCapacity {
            cpus: 0.0,
            memory: 0,
        };
        for node in nodes.items {
            // Cordoned and not-Ready nodes run no new pods.
            let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if cordoned || !ready {
                continue;
            }
            let Some(allocatable) = node.status.and_then(|s| s.allocatable) else {
                continue;
            };
            let get = |k: &str| allocatable.get(k).and_then(|q| parse_quantity(&q.0));
            capacity.cpus += get("cpu").unwrap_or(0.0);
            capacity.memory += get("memory").unwrap_or(0.0) as u64;
        }
        Ok(capacity)
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        match tokio::time::timeout(Duration::from_secs(10), self.client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SandboxError::ClusterUnreachable {
                server: self.server.clone(),
                message: e.to_string(),
            }),
            Err(_) => Err(SandboxError::ClusterUnreachable {
                server: self.server.clone(),
                message: "no answer within 10s".into(),
            }),
        }
    }

    /// Whether any node reports the image (kubelets list their images in the node's status).
    /// A kubelet lists at most its 50 largest images by default: when a node's list is that
    /// long and does not name the image, it may still be there, so the answer is yes (a pod on a
    /// node without it fails with the image named).
    async fn image_exists(&self, image: &str) -> Result<bool, SandboxError> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| self.map_err(e))?;
        let wanted = [
            image.to_string(),
            format!("docker.io/{image}"),
            format!("docker.io/library/{image}"),
        ];
        Ok(nodes.items.iter().any(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.images.as_ref())
                .is_some_and(|images| {
                    images.len() >= NODE_STATUS_MAX_IMAGES
                        || images.iter().any(|i| {
                            i.names
                                .as_ref()
                                .is_some_and(|names| names.iter().any(|n| wanted.contains(n)))
                        })
                })
        }))
    }

    async fn launch(&self, plan: &ContainerPlan) -> Result<Launched, SandboxError> {
        if let Some(why) = self.refuse_network(plan.network) {
            return Err(SandboxError::Refused(why));
        }
        if manifest::needs_secret(plan) {
            self.create(&manifest::secret(plan, &self.namespace))
                .await?;
        }
        let peer = self.options.gateway_url.as_deref().and_then(gateway_peer);
        if let Some(policy) = manifest::network_policy(plan, &self.namespace, peer.as_ref()) {
            self.create(&policy).await?;
        }
        let created = match self
            .create(&manifest::job(plan, &self.namespace, PULL_POLICY))
            .await
        {
            Ok(created) => created,
            Err(SandboxError::Cluster(message))
                if plan.runtime.is_some() && message.contains("RuntimeClass") =>
            {
                return Err(SandboxError::RuntimeMissing {
                    runtime: plan.runtime.clone().unwrap_or_default(),
                    message,
                })
            }
            Err(e) => return Err(e),
        };
        if let Some(job) = &created {
            self.owned_by_job(plan, job).await;
        } else {
            // Adopted: a Pod already running (or ended) is read with `logs` or `reattach`.
            if let Some(pod) = self.pod_of(&plan.name).await? {
                if state_of(&pod) != ContainerState::Created {
                    return Ok(Launched {
                        output: None,
                        input: None,
                        started: false,
                    });
                }
            }
        }
        let pod = self.started(&plan.name).await?;
        self.record_pod(&plan.name).await;
        if plan.stdin {
            let session = self.attach_session(&plan.name, &pod).await?;
            return Ok(Launched {
                output: Some(session.output),
                input: Some(session.input),
                started: true,
            });
        }
        // The log holds every byte from the container's start (a last line without its newline
        // too, once the container has ended), so following it from the start loses nothing
        // printed before this call.
        Ok(Launched {
            output: Some(self.log_stream(&plan.name, true)),
            input: None,
            started: true,
        })
    }

    async fn reattach(&self, name: &str) -> Result<Reattached, SandboxError> {
        let pod = self.started(name).await?;
        self.attach_session(name, &pod).await
    }

    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<Bytes>,
        limit: usize,
    ) -> Result<ExecOutput, SandboxError> {
        let pod = match self.pod_of(name).await? {
            Some(pod) => pod.metadata.name.unwrap_or_default(),
            None => return Err(SandboxError::NoSuchContainer(name.to_string())),
        };
        let params = stdio(stdin.is_some());
        let command = exec_argv(argv, stdin.as_ref().map(|d| d.len()));
        let mut process = self
            .api::<Pod>()
            .exec(&pod, command, &params)
            .await
            .map_err(|e| self.map_err(e))?;
        let status = process.take_status();
        let feeder = match (stdin, process.stdin()) {
            (Some(data), Some(mut input)) => Some(tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = input.write_all(&data).await;
                let _ = input.flush().await;
                // Kept open until the command ends: closing it would end the session.
                input
            })),
            _ => None,
        };
        let out = process
            .stdout()
            .ok_or_else(|| SandboxError::Cluster("exec gave no stdout".into()))?;
        let err = process
            .stderr()
            .ok_or_else(|| SandboxError::Cluster("exec gave no stderr".into()))?;
        let kept = collect_output(out, err, limit).await;
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        let code = match status {
            Some(status) => exit_code(&status)
                .map_err(|why| SandboxError::Cluster(format!("exec in {name} failed: {why}")))?,
            None => {
                return Err(SandboxError::Cluster(format!(
                    "exec in {name} ended without a status"
                )))
            }
        };
        Ok(ExecOutput {
            code,
            output: Bytes::from(kept.bytes),
            truncated: kept.truncated,
        })
    }

    fn logs(&self, name: &str, follow: bool) -> OutputStream {
        self.log_stream(name, follow)
    }

    async fn wait(&self, name: &str) -> Result<ExitStatus, SandboxError> {
        // The API server may restart or throttle during a long job: errors that can pass are
        // retried for up to five minutes in a row.
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let pod = match self.pod_of(name).await {
                Ok(Some(pod)) => pod,
                Ok(None) => return Err(SandboxError::NoSuchContainer(name.to_string())),
                Err(e) if transient(&e) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > Duration::from_secs(300) {
                        return Err(e);
                    }
                    tracing::warn!(container = %name, "cannot read the pod's state (retrying): {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            failing_since = None;
            if let ContainerState::Exited(status) = state_of(&pod) {
                return Ok(status);
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            // Watch the Pod until it changes (at most a minute, then look again).
            let api = self.api::<Pod>();
            let ended = kube::runtime::wait::await_condition(api, &pod_name, |p: Option<&Pod>| {
                p.is_none_or(|p| matches!(state_of(p), ContainerState::Exited(_)))
            });
            if !matches!(
                tokio::time::timeout(Duration::from_secs(60), ended).await,
                Ok(Ok(_))
            ) {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Deletes the attempt's Job (leaving its Pod, so Kubernetes does not replace it) and then its
    /// Pod with `grace`: SIGTERM, SIGKILL after `grace`. The Pod and its log go away once it has
    /// stopped.
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SandboxError> {
        let orphan = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        };
        self.delete::<Job>(name, &orphan).await?;
        self.delete_pods(name, grace.as_secs().min(u32::MAX as u64) as u32)
            .await
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, SandboxError> {
        if let Some(pod) = self.pod_of(name).await? {
            return Ok(Some(state_of(&pod)));
        }
        // A Job whose Pod is not made yet.
        match self.api::<Job>().get_opt(name).await {
            Ok(Some(_)) => Ok(Some(ContainerState::Created)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), SandboxError> {
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        self.delete::<Job>(name, &background).await?;
        self.delete_pods(name, 0).await?;
        lock(&self.pinned).remove(name);
        self.delete::<Secret>(name, &DeleteParams::default())
            .await?;
        self.delete::<NetworkPolicy>(name, &DeleteParams::default())
            .await
    }

    async fn start_relay(&self, _relay: &RelayPlan) -> Result<(), SandboxError> {
        Err(SandboxError::Refused(
            "Kubernetes pods reach the gateway over the network, not through a relay".into(),
        ))
    }

    async fn remove_legacy_llm_network(&self, _state_id: &str) -> Result<bool, SandboxError> {
        Ok(false)
    }

    /// Every attempt with an object here (Job, Pod, Secret or NetworkPolicy) carrying the state
    /// dir's label; its state is its Pod's (`Created` when it has none).
    async fn list_owned(&self, state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError> {
        let by_state = ListParams::default().labels(&format!("{LABEL_STATE}={state_id}"));
        let jobs = self
            .api::<Job>()
            .list(&by_state)
            .await
            .map_err(|e| self.map_err(e))?;
        // The Pod each Job recorded as its attempt's: any other Pod of it is a replacement the
        // Job controller made, which holds nothing of the attempt.
        let recorded: HashMap<String, String> = jobs
            .items
            .iter()
            .filter_map(|job| {
                let name = job.metadata.name.clone()?;
                let uid = job
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(ANNOTATION_POD)?
                    .clone();
                Some((name, uid))
            })
            .collect();
        let pods = self
            .api::<Pod>()
            .list(&by_state)
            .await
            .map_err(|e| self.map_err(e))?;
        let mut owned: BTreeMap<String, OwnedContainer> = BTreeMap::new();
        for pod in &pods.items {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let Some(name) = labels.get(LABEL_CONTAINER).cloned() else {
                continue;
            };
            if recorded
                .get(&name)
                .is_some_and(|uid| pod.metadata.uid.as_ref() != Some(uid))
            {
                continue;
            }
            owned.insert(
                name.clone(),
                OwnedContainer {
                    name,
                    job: labels.get(LABEL_JOB).cloned().unwrap_or_default(),
                    attempt: labels
                        .get(LABEL_ATTEMPT)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(0),
                    state: state_of(pod),
                    leftover: false,
                },
            );
        }
        let mut others: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| container_of(&p.metadata))
            .collect();
        others.extend(jobs.items.iter().filter_map(|j| container_of(&j.metadata)));
        others.extend(self.owned_names::<Secret>(state_id).await?);
        others.extend(self.owned_names::<NetworkPolicy>(state_id).await?);
        for name in others {
            owned.entry(name.clone()).or_insert_with(|| OwnedContainer {
                job: String::new(),
                attempt: 0,
                state: ContainerState::Created,
                leftover: true,
                name,
            });
        }
        Ok(owned.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_url_gives_the_policys_peer() {
        assert_eq!(
            gateway_peer("http://172.17.0.1:17089"),
            Some(GatewayPeer::Address {
                ip: "172.17.0.1".parse().unwrap(),
                port: 17089
            })
        );
        assert_eq!(
            gateway_peer("http://[fd00::1]:8089/"),
            Some(GatewayPeer::Address {
                ip: "fd00::1".parse().unwrap(),
                port: 8089
            })
        );
        assert_eq!(
            gateway_peer("http://runner-gateway.runner.svc"),
            Some(GatewayPeer::RunnerPods { port: 80 })
        );
        assert_eq!(gateway_peer("not a url"), None);
    }

    #[test]
    fn quantities_read_as_numbers() {
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1500m"), Some(1.5));
        assert_eq!(
            parse_quantity("16Gi"),
            Some(16.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_quantity("1000Ki"), Some(1024000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn exec_input_is_read_to_its_length_and_the_command_runs_in_the_workspace() {
        let argv = exec_argv(&["tar".into(), "-x".into()], Some(42));
        assert_eq!(&argv[..2], ["sh", "-c"]);
        assert!(argv[2].contains("head -c \"$0\""));
        assert_eq!(&argv[3..], ["42", "tar", "-x"]);
        let argv = exec_argv(&["true".into()], None);
        assert!(argv[2].contains("</dev/null"));
    }

    #[test]
    fn an_exec_status_gives_its_exit_code_or_an_error() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(&ok), Ok(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(&failed), Ok(3));
        let gone = Status {
            status: Some("Failure".into()),
            message: Some("container not found".into()),
            ..Default::default()
        };
        assert!(exit_code(&gone).is_err());
    }
}
