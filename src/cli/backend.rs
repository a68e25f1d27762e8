//! `--backend docker|kubernetes` and its settings, shared by `run`, `daemon` and `gc`.

use super::exit::Failure;
use crate::sandbox::{Backend, BackendKind, KubeOptions, KubeSandbox, NetworkPolicyMode};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where jobs run.
#[derive(Debug, Args, Clone, Default)]
pub struct BackendArgs {
    /// Where jobs run: containers on the local Docker engine, or Kubernetes Jobs.
    #[arg(long, env = "RUNNER_BACKEND", value_enum, default_value_t = BackendKind::Docker)]
    pub backend: BackendKind,
    /// Kubernetes: the kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the pod's
    /// in-cluster account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes: the namespace jobs run in (default: the kubeconfig's, or the pod's own).
    #[arg(long, env = "RUNNER_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// Kubernetes: whether the cluster enforces NetworkPolicy. Undeclared refuses jobs that need
    /// `network: none` or `llm` isolation; `enforced` says the network plugin enforces it;
    /// `unenforced` runs them anyway, accepting that they may reach the network.
    #[arg(long, env = "RUNNER_NETWORK_POLICY", value_enum, default_value_t = NetworkPolicyMode::Undeclared)]
    pub network_policy: NetworkPolicyMode,
    /// Kubernetes: also serve the LLM gateway on this address (IP:PORT), where pods reach it.
    /// Calls need an attempt's token, as on Docker.
    #[arg(long, env = "RUNNER_GATEWAY_LISTEN", value_name = "ADDR")]
    pub gateway_listen: Option<SocketAddr>,
    /// Kubernetes: the gateway's URL as pods reach it (default: http://<--gateway-listen>), e.g.
    /// a Service's when the runner runs in the cluster.
    #[arg(long, env = "RUNNER_GATEWAY_URL", value_name = "URL")]
    pub gateway_url: Option<String>,
}

impl BackendArgs {
    /// Connects to the chosen backend (exit 3 naming the fix when it cannot be reached).
    pub async fn connect(&self) -> Result<Backend, Failure> {
        match self.backend {
            BackendKind::Docker => {
                if let Some(flag) = self.kubernetes_flag() {
                    return Err(Failure::invalid(format!(
                        "{flag} applies to --backend kubernetes only"
                    )));
                }
                Ok(Backend::Docker(super::connect_docker().await?))
            }
            BackendKind::Kubernetes => {
                if let Some(addr) = self.gateway_listen {
                    // Said now rather than when the first agent job starts.
                    std::net::TcpListener::bind(addr).map_err(|e| {
                        Failure::environment(format!(
                            "--gateway-listen {addr}: cannot listen there: {e} (choose a free port on an address of this host)"
                        ))
                    })?;
                }
                let options = KubeOptions {
                    kubeconfig: self.kubeconfig.clone(),
                    namespace: self.namespace.clone(),
                    network_policy: self.network_policy,
                    gateway_url: self.gateway_url()?,
                };
                Ok(Backend::Kubernetes(KubeSandbox::connect(options).await?))
            }
        }
    }

    /// The first Kubernetes-only flag given, for a Docker run that names one.
    fn kubernetes_flag(&self) -> Option<&'static str> {
        if self.kubeconfig.is_some() {
            Some("--kubeconfig")
        } else if self.namespace.is_some() {
            Some("--namespace")
        } else if self.network_policy != NetworkPolicyMode::Undeclared {
            Some("--network-policy")
        } else if self.gateway_listen.is_some() {
            Some("--gateway-listen")
        } else if self.gateway_url.is_some() {
            Some("--gateway-url")
        } else {
            None
        }
    }

    /// The gateway's URL for pods: given, or the listen address when pods can use it as is.
    fn gateway_url(&self) -> Result<Option<String>, Failure> {
        if let Some(url) = &self.gateway_url {
            if self.gateway_listen.is_none() {
                return Err(Failure::invalid(format!(
                    "--gateway-url {url:?} needs --gateway-listen: the address the gateway listens on, which the URL leads to"
                )));
            }
            // The listener speaks plain HTTP (the token is the credential).
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(Failure::invalid(format!(
                    "--gateway-url {url:?}: give an http:// URL such as http://runner-gateway.runner.svc:8089 (the gateway serves plain HTTP)"
                )));
            }
            return Ok(Some(url.trim_end_matches('/').to_string()));
        }
        match self.gateway_listen {
            None => Ok(None),
            Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => {
                Err(Failure::invalid(format!(
                    "--gateway-listen {addr}: pods cannot reach the gateway at that address; add --gateway-url with the address they reach it at (or listen on a specific IP and port)"
                )))
            }
            Some(addr) => Ok(Some(format!("http://{addr}"))),
        }
    }
}
