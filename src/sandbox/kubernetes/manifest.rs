//! The objects of one attempt on Kubernetes, built from its [`ContainerPlan`] with no API call: a
//! Job with one Pod carrying the Docker sandbox's hardening, a Secret for its secret files and
//! credential variables, and a NetworkPolicy for `network: none` and `llm`.

use crate::job::NetworkMode;
use crate::sandbox::plan::{ContainerPlan, LABEL_ATTEMPT, LABEL_JOB, LABEL_STATE};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

/// Label naming the attempt's container (the Job's name): how its Pod, Secret and NetworkPolicy
/// are found.
pub const LABEL_CONTAINER: &str = "runner.container";
/// Label on every object the runner makes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "runner");
/// Labels of the runner's own pods (deploy/kubernetes/): where the gateway is, in the cluster.
pub const RUNNER_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "runner");
/// The job's container inside its Pod.
pub const CONTAINER: &str = "job";
/// Where secret files appear (as on Docker).
pub const SECRETS_DIR: &str = "/run/secrets";
/// The user every job runs as (the base image's `runner` user), as on Docker.
pub const UID: i64 = 1000;
/// Seconds past the job's timeout before Kubernetes itself ends the Pod: the runner enforces the
/// timeout; this is the backstop for a runner that is gone.
const DEADLINE_SLACK: u64 = 300;
/// A finished Job the runner never removed (it is gone for good) is deleted after a day.
const TTL_AFTER_FINISHED: i32 = 24 * 60 * 60;
/// Key prefix of credential variables in the attempt's Secret (never a valid file name of a
/// secret, which are environment variable names).
const ENV_KEY_PREFIX: &str = "env-";

/// Where the LLM gateway is, for the NetworkPolicy of `network: llm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPeer {
    /// An address outside the cluster's pods (the runner on a host): only that address and port.
    Address { ip: std::net::IpAddr, port: u16 },
    /// The runner's pods in the runner's namespace (a Service in front of them), plus DNS.
    RunnerPods { port: u16 },
}

/// The labels of every object of the attempt.
pub fn labels(plan: &ContainerPlan) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_STATE.to_string(), plan.labels.state.clone()),
        (LABEL_JOB.to_string(), plan.labels.job.clone()),
        (LABEL_ATTEMPT.to_string(), plan.labels.attempt.to_string()),
        (LABEL_CONTAINER.to_string(), plan.name.clone()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ])
}

/// The label selector of one attempt's objects.
pub fn selector(name: &str) -> String {
    format!("{LABEL_CONTAINER}={name}")
}

fn meta(plan: &ContainerPlan, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(plan.name.clone()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(plan)),
        ..Default::default()
    }
}

/// Whether the attempt needs a Secret.
pub fn needs_secret(plan: &ContainerPlan) -> bool {
    !plan.secrets.is_empty() || !plan.secret_env.is_empty()
}

/// The attempt's Secret: its secret files (mounted at /run/secrets, mode 0400) and its credential
/// variables (referred to from the pod spec, never written into it).
pub fn secret(plan: &ContainerPlan, namespace: &str) -> Secret {
    let files = plan
        .secrets
        .iter()
        .map(|(name, value)| (name.clone(), value));
    let vars = plan
        .secret_env
        .iter()
        .map(|(name, value)| (format!("{ENV_KEY_PREFIX}{name}"), value));
    Secret {
        metadata: meta(plan, namespace),
        type_: Some("Opaque".into()),
        data: Some(
            files
                .chain(vars)
                .map(|(k, v)| (k, ByteString(v.expose().as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// `text` as the kubelet passes it on: it expands `$(NAME)` in a container's args and env values
/// and turns `$$` into `$`, which Docker does not; every `$` doubled keeps the text as written.
fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// CPU in millicores, at least 1.
fn millicores(cpus: f64) -> String {
    format!("{}m", ((cpus * 1000.0).round() as i64).max(1))
}

fn memory_volume(name: &str, bytes: u64) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(bytes.to_string())),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The attempt's Job: one Pod, never retried by Kubernetes (the runner decides retries), with the
/// Docker sandbox's hardening in its spec.
pub fn job(plan: &ContainerPlan, namespace: &str, pull_policy: &str) -> Job {
    let memory = plan.resources.memory.0;
    let limits = BTreeMap::from([
        ("cpu".to_string(), Quantity(millicores(plan.resources.cpus))),
        ("memory".to_string(), Quantity(memory.to_string())),
    ]);
    // Admission reserves `cpu_request` cores and the whole memory limit, as the runner's own
    // admission does on Docker.
    let requests = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(millicores(
                plan.resources.cpu_request.min(plan.resources.cpus),
            )),
        ),
        ("memory".to_string(), Quantity(memory.to_string())),
    ]);
    let mut env: Vec<EnvVar> = plan
        .env
        .0
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(literal(v)),
            ..Default::default()
        })
        .collect();
    env.extend(plan.secret_env.iter().map(|(k, _)| EnvVar {
        name: k.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: plan.name.clone(),
                key: format!("{ENV_KEY_PREFIX}{k}"),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mut volumes = vec![
        memory_volume("tmp", memory),
        memory_volume("workspace", memory),
    ];
    let mut mounts = vec![
        mount("tmp", "/tmp", false),
        mount("workspace", "/workspace", false),
    ];
    if !plan.secrets.is_empty() {
        volumes.push(Volume {
            name: "secrets".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(plan.name.clone()),
                default_mode: Some(0o400),
                // Only the files: the credential variables stay out of the volume.
                items: Some(
                    plan.secrets
                        .iter()
                        .map(|(name, _)| KeyToPath {
                            key: name.clone(),
                            path: name.clone(),
                            mode: Some(0o400),
                        })
                        .collect(),
                ),
                optional: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(mount("secrets", SECRETS_DIR, true));
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some(pull_policy.into()),
        // `args`, not `command`: the image's entrypoint stays, as Docker's `cmd` leaves it.
        args: Some(plan.command.iter().map(|a| literal(a)).collect()),
        env: Some(env),
        working_dir: Some("/workspace".into()),
        stdin: Some(plan.stdin),
        stdin_once: Some(false),
        tty: Some(false),
        resources: Some(ResourceRequirements {
            limits: Some(limits),
            requests: Some(requests),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The pause container is PID 1 and reaps orphans, as Docker's `init` does; the command
        // gets signals with their default meaning.
        share_process_namespace: Some(true),
        termination_grace_period_seconds: Some(plan.stop_grace_secs.max(0)),
        runtime_class_name: plan.runtime.clone(),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            run_as_non_root: Some(true),
            fs_group: Some(UID),
            ..Default::default()
        }),
        volumes: Some(volumes),
        ..Default::default()
    };
    let deadline = plan.timeout.as_secs() + plan.stop_grace_secs.max(0) as u64 + DEADLINE_SLACK;
    Job {
        metadata: meta(plan, namespace),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(deadline.min(i64::MAX as u64) as i64),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(plan)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The NetworkPolicy of a `network: none` (no traffic in or out) or `llm` (out only to the
/// gateway) attempt; `None` for `bridge`.
pub fn network_policy(
    plan: &ContainerPlan,
    namespace: &str,
    gateway: Option<&GatewayPeer>,
) -> Option<NetworkPolicy> {
    let egress = match (plan.network, gateway) {
        (NetworkMode::Bridge, _) => return None,
        (NetworkMode::None, _) | (NetworkMode::Llm, None) => vec![],
        (NetworkMode::Llm, Some(GatewayPeer::Address { ip, port })) => {
            let cidr = match ip {
                std::net::IpAddr::V4(_) => format!("{ip}/32"),
                std::net::IpAddr::V6(_) => format!("{ip}/128"),
            };
            vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock { cidr, except: None }),
                    ..Default::default()
                }]),
                ports: Some(vec![tcp(*port)]),
            }]
        }
        (NetworkMode::Llm, Some(GatewayPeer::RunnerPods { port })) => {
            let dns = ["UDP", "TCP"].map(|protocol| NetworkPolicyPort {
                protocol: Some(protocol.into()),
                port: Some(IntOrString::Int(53)),
                end_port: None,
            });
            vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                RUNNER_POD_LABEL.0.to_string(),
                                RUNNER_POD_LABEL.1.to_string(),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![tcp(*port)]),
                },
                // DNS, to the cluster's DNS pods only (any port-53 peer would be a way out).
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                "k8s-app".to_string(),
                                "kube-dns".to_string(),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(dns.to_vec()),
                },
            ]
        }
    };
    Some(NetworkPolicy {
        metadata: meta(plan, namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    LABEL_CONTAINER.to_string(),
                    plan.name.clone(),
                )])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![]),
            egress: Some(egress),
        }),
    })
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(port as i32)),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Labels, Secret};

    fn plan(network: NetworkMode) -> ContainerPlan {
        let spec = crate::job::parse_str(
            "name: t\nimage: runner/base:bookworm\ncommand: [sh, -c, 'echo hi']\ntimeout: 2m\nresources: { cpus: 0.5, memory: 256m }\n",
            std::path::Path::new("t.yaml"),
        )
        .expect("valid job");
        let labels = Labels {
            state: "0123456789ab".into(),
            job: "01JABC".into(),
            attempt: 1,
        };
        let mut plan = ContainerPlan::for_command(
            &spec,
            &["sh".into(), "-c".into(), "echo hi".into()],
            labels,
            vec![("API_TOKEN".into(), Secret::new("s3cret".into()))],
            10,
        );
        plan.network = network;
        plan.secret_env
            .push(("OPENAI_API_KEY".into(), Secret::new("rnr-token".into())));
        plan
    }

    #[test]
    fn the_pod_spec_carries_the_sandbox_hardening_and_no_credential_values() {
        let plan = plan(NetworkMode::None);
        let job = job(&plan, "jobs", "Never");
        let text = serde_json::to_string(&job).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("rnr-token"),
            "{text}"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(
            spec.active_deadline_seconds,
            Some(120 + 10 + DEADLINE_SLACK as i64)
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "500m");
        assert_eq!(limits["memory"].0, (256u64 << 20).to_string());
        let key = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "OPENAI_API_KEY")
            .unwrap();
        assert!(key.value.is_none());
        let volumes = pod.volumes.unwrap();
        let tmp = volumes.iter().find(|v| v.name == "tmp").unwrap();
        assert_eq!(
            tmp.empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
        let secrets = volumes.iter().find(|v| v.name == "secrets").unwrap();
        let source = secrets.secret.as_ref().unwrap();
        assert_eq!(source.default_mode, Some(0o400));
        // The token is in the Secret but not among the mounted files.
        assert_eq!(source.items.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn args_and_env_values_reach_the_container_as_written() {
        let mut plan = plan(NetworkMode::None);
        plan.command = vec!["sh".into(), "-c".into(), "echo $$ $(HOME) $$(x)".into()];
        plan.env.0.insert("V".into(), "$(OPENAI_API_KEY)".into());
        let job = job(&plan, "jobs", "Never");
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.args.as_ref().unwrap()[2], "echo $$$$ $$(HOME) $$$$(x)");
        let v = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "V")
            .unwrap();
        assert_eq!(v.value.as_deref(), Some("$$(OPENAI_API_KEY)"));
    }

    #[test]
    fn dns_from_an_llm_pod_behind_a_service_goes_to_the_clusters_dns_pods_only() {
        let peer = GatewayPeer::RunnerPods { port: 8089 };
        let policy = network_policy(&plan(NetworkMode::Llm), "jobs", Some(&peer)).unwrap();
        let egress = policy.spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 2);
        for rule in &egress {
            let to = rule.to.as_ref().expect("every rule names its peers");
            assert!(to.iter().all(|p| p.pod_selector.is_some()), "{to:?}");
        }
    }

    #[test]
    fn network_none_denies_all_traffic_and_llm_allows_only_the_gateway() {
        let none = network_policy(&plan(NetworkMode::None), "jobs", None).unwrap();
        let spec = none.spec.unwrap();
        assert_eq!(spec.egress, Some(vec![]));
        assert_eq!(spec.ingress, Some(vec![]));
        let gateway = GatewayPeer::Address {
            ip: "172.17.0.1".parse().unwrap(),
            port: 7000,
        };
        let llm = network_policy(&plan(NetworkMode::Llm), "jobs", Some(&gateway)).unwrap();
        let egress = llm.spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 1);
        let peer = &egress[0].to.as_ref().unwrap()[0];
        assert_eq!(peer.ip_block.as_ref().unwrap().cidr, "172.17.0.1/32");
        assert!(network_policy(&plan(NetworkMode::Bridge), "jobs", None).is_none());
    }
}
