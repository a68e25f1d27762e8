//! The backend the operator chose (`--backend docker|kubernetes`): one [`Sandbox`] that hands
//! every call to the Docker or the Kubernetes implementation.

use super::{
    ContainerPlan, ContainerState, DockerSandbox, ExecOutput, ExitStatus, GatewayRoute,
    HostCapacity, KubeSandbox, Launched, OutputStream, OwnedContainer, Reattached, RelayPlan,
    Sandbox, SandboxError,
};
use crate::job::NetworkMode;
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

/// Which backend runs the jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Containers on the local Docker engine (DOCKER_HOST).
    #[default]
    Docker,
    /// Kubernetes Jobs through an API server (--kubeconfig, KUBECONFIG, or in-cluster).
    Kubernetes,
}

/// A sandbox on the chosen backend.
#[derive(Clone, Debug)]
pub enum Backend {
    Docker(DockerSandbox),
    Kubernetes(KubeSandbox),
}

impl Backend {
    /// The Docker engine, for what only it does (building images).
    pub fn docker(&self) -> Option<&DockerSandbox> {
        match self {
            Backend::Docker(d) => Some(d),
            Backend::Kubernetes(_) => None,
        }
    }
}

/// Calls the same method on whichever backend this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Backend::Docker($s) => $call,
            Backend::Kubernetes($s) => $call,
        }
    };
}

#[async_trait]
impl Sandbox for Backend {
    fn refuse_network(&self, network: NetworkMode) -> Option<String> {
        each!(self, s => s.refuse_network(network))
    }
    fn gateway_route(&self) -> GatewayRoute {
        each!(self, s => s.gateway_route())
    }
    async fn capacity(&self) -> Result<HostCapacity, SandboxError> {
        each!(self, s => s.capacity().await)
    }
    async fn ping(&self) -> Result<(), SandboxError> {
        each!(self, s => s.ping().await)
    }
    async fn image_exists(&self, image: &str) -> Result<bool, SandboxError> {
        each!(self, s => s.image_exists(image).await)
    }
    async fn launch(&self, plan: &ContainerPlan) -> Result<Launched, SandboxError> {
        each!(self, s => s.launch(plan).await)
    }
    async fn reattach(&self, name: &str) -> Result<Reattached, SandboxError> {
        each!(self, s => s.reattach(name).await)
    }
    async fn exec(
        &self,
        name: &str,
        argv: &[String],
        stdin: Option<Bytes>,
        limit: usize,
    ) -> Result<ExecOutput, SandboxError> {
        each!(self, s => s.exec(name, argv, stdin, limit).await)
    }
    fn logs(&self, name: &str, follow: bool) -> OutputStream {
        each!(self, s => s.logs(name, follow))
    }
    async fn wait(&self, name: &str) -> Result<ExitStatus, SandboxError> {
        each!(self, s => s.wait(name).await)
    }
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SandboxError> {
        each!(self, s => s.stop(name, grace).await)
    }
    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, SandboxError> {
        each!(self, s => s.inspect(name).await)
    }
    async fn remove(&self, name: &str) -> Result<(), SandboxError> {
        each!(self, s => s.remove(name).await)
    }
    async fn start_relay(&self, relay: &RelayPlan) -> Result<(), SandboxError> {
        each!(self, s => s.start_relay(relay).await)
    }
    async fn remove_legacy_llm_network(&self, state_id: &str) -> Result<bool, SandboxError> {
        each!(self, s => s.remove_legacy_llm_network(state_id).await)
    }
    async fn list_owned(&self, state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError> {
        each!(self, s => s.list_owned(state_id).await)
    }
}
