//! The Kubernetes backend against a real cluster: Kubernetes 1.20 built from Debian's source
//! package and started on this machine by `tests/k8s/cluster.sh` (etcd, API server, controller
//! manager, scheduler, and a kubelet running pods on the local Docker engine). Every job goes
//! through the CLI with `--backend kubernetes`, as a user would run it.
//!
//! The first tests need no cluster (the backend's flags and errors) and run under `make test`.
//! The others run with `make test-k8s`, which brings the cluster up, runs
//! `cargo test --test k8s -- --ignored` with `RUNNER_TEST_KUBECONFIG` set, and tears the cluster
//! down. Under a plain `cargo test` they are listed as ignored, never passed; run with `--ignored`
//! but without the variable, they fail and say how to run them.
//!
//! Each test works in a namespace of its own, deleted at the end (with everything in it) even when
//! the test fails. The test cluster has no network plugin that enforces NetworkPolicy, so tests
//! that run `network: none` or `llm` jobs accept that risk explicitly (`--network-policy
//! unenforced`), and one test checks that without it such jobs are refused.

mod common;
mod scripted;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Deserialize;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The kubeconfig of the test cluster.
fn kubeconfig() -> String {
    std::env::var("RUNNER_TEST_KUBECONFIG")
        .expect("RUNNER_TEST_KUBECONFIG is not set: run these tests with `make test-k8s`")
}

/// The address pods reach the host at (Docker's bridge), where the runner's gateway listens for
/// them; `tests/k8s/cluster.sh run` sets it.
fn host_ip() -> String {
    std::env::var("RUNNER_TEST_GATEWAY_HOST")
        .ok()
        .filter(|ip| !ip.is_empty())
        .expect("RUNNER_TEST_GATEWAY_HOST is not set: run these tests with `make test-k8s`")
}

/// A free TCP port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test's namespace on the cluster, and a state dir whose runner uses it.
struct Cluster {
    env: Env,
    ns: String,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    daemons: Vec<std::process::Child>,
}

impl Cluster {
    fn new() -> Cluster {
        let env = Env::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let path = kubeconfig();
        let client = rt.block_on(async {
            let file = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .expect("kubeconfig");
            kube::Client::try_from(config).unwrap()
        });
        let ns = format!(
            "runner-t-{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        let cluster = Cluster {
            env,
            ns,
            rt,
            client,
            daemons: Vec::new(),
        };
        cluster.rt.block_on(async {
            let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
            let mut object = Namespace::default();
            object.metadata.name = Some(cluster.ns.clone());
            object.metadata.labels = Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "runner-tests".to_string(),
                )]
                .into(),
            );
            namespaces
                .create(&PostParams::default(), &object)
                .await
                .expect("namespace created");
            // Pods are refused until the namespace's default service account exists.
            let accounts: Api<ServiceAccount> =
                Api::namespaced(cluster.client.clone(), &cluster.ns);
            let deadline = Instant::now() + Duration::from_secs(60);
            while accounts.get_opt("default").await.unwrap().is_none() {
                assert!(Instant::now() < deadline, "no default service account");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        cluster
    }

    /// `runner ARGS...` on this state dir, with the Kubernetes backend in this namespace.
    fn cmd(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.env("RUNNER_BACKEND", "kubernetes")
            .env("KUBECONFIG", kubeconfig())
            .env("RUNNER_NAMESPACE", &self.ns);
        cmd
    }

    /// Starts `runner daemon` (killed at the end of the test); returns its pid.
    fn daemon(&mut self) -> u32 {
        self.daemon_with(&[], &[])
    }

    /// Starts `runner daemon ARGS...` with extra environment variables.
    fn daemon_with(&mut self, args: &[&str], vars: &[(&str, &str)]) -> u32 {
        let child = self
            .cmd()
            .arg("daemon")
            .args(args)
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.daemons.push(child);
        pid
    }

    /// Sends SIGNAL to a daemon of this test and waits for it to exit.
    fn kill(&mut self, pid: u32, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        if let Some(i) = self.daemons.iter().position(|c| c.id() == pid) {
            let mut child = self.daemons.remove(i);
            let _ = child.wait();
        }
    }

    /// `runner submit FILES...` beside a daemon, then waits until the jobs `names` run.
    fn submit_running(&self, files: &[&str], names: &[&str]) {
        let submitted = self.cmd().arg("submit").args(files).output().unwrap();
        assert!(submitted.status.success(), "{}", stderr(&submitted));
        for name in names {
            self.env
                .wait_state(name, "running", Duration::from_secs(120));
        }
    }

    /// Deletes a pod at once, as a node drain or a person would.
    fn delete_pod(&self, name: &str) {
        self.rt.block_on(async {
            self.api::<Pod>()
                .delete(
                    name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        });
    }

    /// `runner run JOBS... ARGS...` to completion.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().arg("run").args(args).output().unwrap()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Every Job, Pod, Secret and NetworkPolicy in the namespace, as `kind/name`.
    fn objects(&self) -> Vec<String> {
        self.rt.block_on(async {
            let lp = ListParams::default();
            let mut names = Vec::new();
            for job in self.api::<Job>().list(&lp).await.unwrap() {
                names.push(format!("job/{}", job.metadata.name.unwrap()));
            }
            for pod in self.api::<Pod>().list(&lp).await.unwrap() {
                names.push(format!("pod/{}", pod.metadata.name.unwrap()));
            }
            for secret in self.api::<Secret>().list(&lp).await.unwrap() {
                // Service account tokens are the cluster's own.
                if secret.type_.as_deref() != Some("kubernetes.io/service-account-token") {
                    names.push(format!("secret/{}", secret.metadata.name.unwrap()));
                }
            }
            for policy in self.api::<NetworkPolicy>().list(&lp).await.unwrap() {
                names.push(format!("networkpolicy/{}", policy.metadata.name.unwrap()));
            }
            names
        })
    }

    /// Waits until the namespace holds none of the runner's objects.
    fn wait_empty(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.objects();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pods of the namespace as JSON, whatever their state.
    fn pods(&self) -> Vec<serde_json::Value> {
        self.rt.block_on(async {
            self.api::<Pod>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| serde_json::to_value(p).unwrap())
                .collect()
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut child in self.daemons.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = self.ns.clone();
        let _ = self
            .rt
            .block_on(async move { namespaces.delete(&ns, &DeleteParams::default()).await });
    }
}

#[test]
fn kubernetes_flags_with_the_docker_backend_are_refused_and_nothing_is_stored() {
    let env = Env::new();
    let job = env.job("hello.yaml", &sh_job("hello", "echo hi", ""));
    for flags in [
        &["--namespace", "jobs"][..],
        &["--network-policy", "enforced"],
        &["--gateway-listen", "127.0.0.1:8089"],
    ] {
        let out = env
            .cmd()
            .args(["run", job.to_str().unwrap()])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("applies to --backend kubernetes only"),
            "{}",
            stderr(&out)
        );
    }
    assert!(env.state_id().is_none() || env.ps().is_empty());
}

#[test]
fn without_a_cluster_to_reach_the_kubernetes_backend_exits_3_naming_the_fix() {
    let env = Env::new();
    let job = env.job("hello.yaml", &sh_job("hello", "echo hi", ""));
    let missing = env.dir.path().join("no-kubeconfig");
    let out = env
        .cmd()
        .args(["run", job.to_str().unwrap(), "--backend", "kubernetes"])
        .arg("--kubeconfig")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no-kubeconfig") && err.contains("--kubeconfig"),
        "{err}"
    );
    // Nothing in the environment either: no KUBECONFIG, no ~/.kube/config, not in a pod.
    let out = env
        .cmd()
        .args(["run", job.to_str().unwrap()])
        .env("RUNNER_BACKEND", "kubernetes")
        .env("KUBECONFIG", &missing)
        .env("HOME", env.dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("set KUBECONFIG"), "{}", stderr(&out));
}

#[test]
fn a_gateway_listening_on_every_address_needs_the_url_pods_reach_it_at() {
    let env = Env::new();
    let job = env.job("hello.yaml", &sh_job("hello", "echo hi", ""));
    let out = env
        .cmd()
        .args(["run", job.to_str().unwrap(), "--backend", "kubernetes"])
        .args(["--gateway-listen", "0.0.0.0:8089"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--gateway-url"), "{}", stderr(&out));
}

fn job_file(cluster: &Cluster, name: &str, script: &str, extra: &str) -> String {
    let path = cluster
        .env
        .job(&format!("{name}.yaml"), &sh_job(name, script, extra));
    path.to_str().unwrap().to_string()
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn plain_jobs_report_exit_codes_and_oom_from_the_pods_state_and_run_hardened() {
    let cluster = Cluster::new();
    let hardening = job_file(
        &cluster,
        "hardening",
        "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
         touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only; \
         touch /workspace/w && echo workspace-writable; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; \
         ls /var/run/secrets/kubernetes.io 2>&1 | head -1",
        "resources: { cpus: 0.5, memory: 128m }",
    );
    // The kubelet expands `$(NAME)` and `$$` in a pod's args: a script reaches the shell as written.
    let exits = job_file(
        &cluster,
        "exits",
        "echo 'lit=$(GREETING)' pid=$$; echo before; exit 3",
        "env: { GREETING: hi }",
    );
    let oom = job_file(
        &cluster,
        "oom",
        "python3 -c 'b = bytearray(400 << 20); print(len(b))'",
        "resources: { memory: 64m }",
    );
    let out = cluster.run(&[&hardening, &exits, &oom, "--network-policy", "unenforced"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let show = cluster.env.show("hardening");
    let log = log_of(&cluster.env, "hardening");
    assert_eq!(show["state"], "succeeded", "{show}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(&lines[..2], ["1000", "1000"], "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("root-read-only"), "{log}");
    assert!(log.contains("workspace-writable"), "{log}");
    assert!(
        log.contains(&(128u64 << 20).to_string()),
        "memory limit: {log}"
    );
    assert!(log.contains("50000\n100000"), "half a core: {log}");
    assert!(
        log.contains("No such file"),
        "no service account token: {log}"
    );

    let show = cluster.env.show("exits");
    assert_eq!(show["state"], "failed", "{show}");
    assert_eq!(show["reason"], "exit_code", "{show}");
    assert_eq!(show["exit_code"], 3, "{show}");
    let log = log_of(&cluster.env, "exits");
    assert!(log.contains("before"), "{log}");
    assert!(log.contains("lit=$(GREETING) pid="), "{log}");
    assert!(
        !log.contains("pid=$"),
        "the shell's pid, not a dollar: {log}"
    );

    let show = cluster.env.show("oom");
    assert_eq!(show["state"], "failed", "{show}");
    assert_eq!(
        show["reason"],
        "oom",
        "{show}\n{}",
        log_of(&cluster.env, "oom")
    );

    cluster.wait_empty(Duration::from_secs(60));
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn a_job_past_its_timeout_is_stopped_and_a_cancelled_one_ends_cancelled() {
    let mut cluster = Cluster::new();
    let slow = job_file(
        &cluster,
        "slow",
        "echo started; sleep 300",
        "timeout: 5s\nnetwork: bridge",
    );
    let started = Instant::now();
    let out = cluster.run(&[&slow]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let show = cluster.env.show("slow");
    assert_eq!(show["reason"], "timeout", "{show}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped at its timeout, not at Kubernetes' deadline: {:?}",
        started.elapsed()
    );
    assert!(log_of(&cluster.env, "slow").contains("started"));
    cluster.wait_empty(Duration::from_secs(60));

    let long = job_file(&cluster, "long", "echo up; sleep 300", "network: bridge");
    let daemon = cluster.daemon();
    cluster.submit_running(&[&long], &["long"]);
    let cancel = cluster.cmd().args(["cancel", "long"]).output().unwrap();
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    cluster
        .env
        .wait_state("long", "cancelled", Duration::from_secs(60));
    cluster.wait_empty(Duration::from_secs(60));
    cluster.kill(daemon, "TERM");
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn jobs_needing_isolation_are_refused_on_a_cluster_not_declared_to_enforce_network_policy() {
    let cluster = Cluster::new();
    let none = job_file(&cluster, "isolated", "echo should-not-run", "");
    let open = job_file(&cluster, "open", "echo ran", "network: bridge");
    let out = cluster.run(&[&none, &open]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let show = cluster.env.show("isolated");
    assert_eq!(show["state"], "failed", "{show}");
    let detail = show["detail"].as_str().unwrap();
    assert!(
        detail.contains("NetworkPolicy") && detail.contains("--network-policy unenforced"),
        "{detail}"
    );
    assert_eq!(
        show["attempts"].as_array().map(Vec::len),
        Some(1),
        "not retried: {show}"
    );
    assert!(!log_of(&cluster.env, "isolated").contains("should-not-run"));
    assert_eq!(cluster.env.state_of("open"), "succeeded");
    cluster.wait_empty(Duration::from_secs(30));
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn a_runner_killed_while_a_pod_runs_adopts_it_after_a_restart_and_leaves_nothing_behind() {
    let mut cluster = Cluster::new();
    let job = job_file(
        &cluster,
        "survivor",
        "echo first; sleep 10; echo second",
        "timeout: 2m\nnetwork: bridge",
    );
    // A second job ends while no runner watches: it is finalized from its pod's state.
    let quick = job_file(
        &cluster,
        "quick",
        "echo early; sleep 2; echo late; exit 4",
        "network: bridge",
    );
    let first = cluster.daemon();
    cluster.submit_running(&[&job, &quick], &["survivor", "quick"]);
    let pods_before = cluster.pods();
    assert_eq!(pods_before.len(), 2, "{pods_before:?}");
    cluster.kill(first, "KILL");
    // The pods go on without a runner; the quick one ends meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster
        .pods()
        .iter()
        .any(|p| p["status"]["phase"] == "Failed")
    {
        assert!(Instant::now() < deadline, "the quick job's pod never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.pods().len(), 2);
    let second = cluster.daemon();
    cluster
        .env
        .wait_state("survivor", "succeeded", Duration::from_secs(120));
    let quick = cluster.env.show("quick");
    assert_eq!(quick["state"], "failed", "{quick}");
    assert_eq!(quick["exit_code"], 4, "{quick}");
    let log = log_of(&cluster.env, "quick");
    assert!(log.contains("early") && log.contains("late"), "{log}");
    let adopted = cluster.env.events_of("survivor", &["adopted"]);
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    let log = log_of(&cluster.env, "survivor");
    assert!(log.contains("first") && log.contains("second"), "{log}");
    assert_eq!(
        cluster.env.show("survivor")["attempts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    cluster.wait_empty(Duration::from_secs(60));
    // An object no job owns (left by a crash between creating it and recording the attempt) is
    // removed by `runner gc`.
    let state = cluster.env.state_id().unwrap();
    cluster.rt.block_on(async {
        let mut stray = Secret::default();
        stray.metadata.name = Some(format!("runner-{state}-stray-1"));
        stray.metadata.labels = Some(
            [
                ("runner.state".to_string(), state.clone()),
                (
                    "runner.container".to_string(),
                    format!("runner-{state}-stray-1"),
                ),
            ]
            .into(),
        );
        cluster
            .api::<Secret>()
            .create(&PostParams::default(), &stray)
            .await
            .unwrap();
    });
    cluster.kill(second, "TERM");
    let gc = cluster.cmd().arg("gc").output().unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(stdout(&gc).contains("stray"), "{}", stdout(&gc));
    cluster.wait_empty(Duration::from_secs(30));
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn the_demo_jobs_run_unchanged_on_kubernetes() {
    let cluster = Cluster::new();
    let ip = host_ip();
    let listen = format!("{ip}:{}", free_port(&ip));
    let jobs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let out = cluster
        .cmd()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", jobs.to_str().unwrap(), "--json"])
        .args([
            "--network-policy",
            "unenforced",
            "--gateway-listen",
            &listen,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{jobs}");
    assert!(log_of(&cluster.env, "hello").contains("hello from runner in /workspace"));
    cluster.wait_empty(Duration::from_secs(60));
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn an_agent_job_runs_end_to_end_in_a_pod_and_the_key_is_never_in_its_spec() {
    let cluster = Cluster::new();
    let llm = scripted::ScriptedLlm::start(
        vec![
            scripted::answer("instruct", "Create greet.py with greet(name)."),
            scripted::answer("finish", "greet added"),
        ],
        vec![scripted::create_file(
            "greet.py",
            "def greet(name):\n    return f\"Hello, {name}!\"\n",
        )],
    );
    make_repo(&cluster.env.dir.path().join("repo"));
    let job = cluster.env.job(
        "greet.yaml",
        "name: greet\ntask: Add greet(name) to greet.py.\nrepo: ./repo\nagent: { model: openai/mock }\nmanager: { mode: llm, model: manager-mock, max_turns: 5 }\nverify: [\"python3\", \"-c\", \"from greet import greet; assert greet('Ann') == 'Hello, Ann!'\"]\ntimeout: 5m\nresources: { cpus: 1, memory: 1g }\n",
    );
    let ip = host_ip();
    let listen = format!("{ip}:{}", free_port(&ip));
    let mut child = cluster
        .cmd()
        .args(["run", job.to_str().unwrap()])
        .args([
            "--network-policy",
            "unenforced",
            "--gateway-listen",
            &listen,
        ])
        .env("OPENAI_BASE_URL", &llm.url)
        .env("OPENAI_API_KEY", "upstream-key")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What the cluster stores while the job runs: its pod specs and Secrets.
    let mut seen_pods = Vec::new();
    let mut seen_secrets = Vec::new();
    let mut seen_policies: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent job did not end");
        seen_pods.extend(cluster.pods());
        cluster.rt.block_on(async {
            for s in cluster
                .api::<Secret>()
                .list(&ListParams::default())
                .await
                .unwrap()
            {
                seen_secrets.push(serde_json::to_value(s).unwrap());
            }
            for p in cluster
                .api::<NetworkPolicy>()
                .list(&ListParams::default())
                .await
                .unwrap()
            {
                seen_policies.push(serde_json::to_value(p).unwrap());
            }
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output().unwrap();
    let show = cluster.env.show("greet");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{show}\n{}",
        stderr(&out),
        log_of(&cluster.env, "greet")
    );
    let transcript = log_of(&cluster.env, "greet");
    assert!(transcript.contains("» Create greet.py"), "{transcript}");
    let patch = artifact_text(&show, "patch").expect("a patch");
    assert!(patch.contains("+def greet(name):"), "{patch}");
    let verify = cluster.env.events_of("greet", &["verify"]);
    assert_eq!(verify.last().unwrap()["passed"], true, "{verify:?}");

    assert!(!seen_pods.is_empty(), "the pod was seen while it ran");
    for pod in &seen_pods {
        let text = pod.to_string();
        assert!(
            !text.contains("upstream-key"),
            "the real key in a pod: {text}"
        );
        assert!(
            !text.contains("rnr-"),
            "the attempt's token in a pod spec: {text}"
        );
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let key = env.iter().find(|e| e["name"] == "OPENAI_API_KEY").unwrap();
        assert!(key.get("value").is_none(), "{key}");
        assert!(key["valueFrom"]["secretKeyRef"].is_object(), "{key}");
    }
    // The pod may reach the gateway and nothing else (where the network plugin enforces it).
    let policy = seen_policies
        .first()
        .expect("a NetworkPolicy for the agent's pod");
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1, "{policy}");
    assert_eq!(
        egress[0]["to"][0]["ipBlock"]["cidr"],
        format!("{ip}/32"),
        "{policy}"
    );
    assert_eq!(
        egress[0]["ports"][0]["port"],
        listen.rsplit(':').next().unwrap().parse::<u16>().unwrap(),
        "{policy}"
    );
    // Ingress named as a policy type with no rule: nothing may connect to the pod.
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"]),
        "{policy}"
    );
    assert!(
        policy["spec"]["ingress"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{policy}"
    );
    for secret in &seen_secrets {
        let text = secret.to_string();
        let encoded = base64_of("upstream-key");
        assert!(!text.contains(&encoded), "the real key in a Secret: {text}");
    }
    cluster.wait_empty(Duration::from_secs(60));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn an_agent_session_survives_a_runner_killed_mid_turn_in_the_same_pod() {
    let mut cluster = Cluster::new();
    let llm = scripted::ScriptedLlm::start(vec![], vec![]);
    make_repo(&cluster.env.dir.path().join("repo"));
    let job = cluster.env.job(
        "session.yaml",
        "name: session\ntask: Wait a while.\nrepo: ./repo\nagent: { model: openai/mock }\nmanager: { mode: script, steps: [ { action: run, argument: \"sleep 12; echo slept-well\" }, { action: finish, argument: done } ] }\ntimeout: 5m\n",
    );
    let ip = host_ip();
    // The pod was told where the gateway is: a restarted runner listens at the same address.
    let listen = format!("{ip}:{}", free_port(&ip));
    let daemon_args = [
        "--network-policy",
        "unenforced",
        "--gateway-listen",
        listen.as_str(),
    ];
    let vars = [
        ("OPENAI_BASE_URL", llm.url.as_str()),
        ("OPENAI_API_KEY", "upstream-key"),
    ];
    let first = cluster.daemon_with(&daemon_args, &vars);
    cluster.submit_running(&[job.to_str().unwrap()], &[]);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !log_of(&cluster.env, "session").contains("» /run sleep 12") {
        assert!(
            Instant::now() < deadline,
            "the turn never started: {}",
            log_of(&cluster.env, "session")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pod = |cluster: &Cluster| {
        let pods = cluster.pods();
        assert_eq!(pods.len(), 1, "{pods:?}");
        pods[0]["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let before = pod(&cluster);
    cluster.kill(first, "KILL");
    std::thread::sleep(Duration::from_secs(1));
    let second = cluster.daemon_with(&daemon_args, &vars);
    cluster
        .env
        .wait_state("session", "running", Duration::from_secs(60));
    assert_eq!(pod(&cluster), before, "the same pod runs on");
    cluster
        .env
        .wait_state("session", "succeeded", Duration::from_secs(120));
    let show = cluster.env.show("session");
    assert_eq!(show["attempts"].as_array().unwrap().len(), 1, "{show}");
    let log = log_of(&cluster.env, "session");
    assert_eq!(
        log.matches("» /run sleep 12").count(),
        1,
        "typed once:\n{log}"
    );
    assert!(log.contains("slept-well"), "{log}");
    assert_eq!(log.matches("Aider v0.86.2").count(), 1, "{log}");
    assert_eq!(cluster.env.events_of("session", &["adopted"]).len(), 1);
    cluster.wait_empty(Duration::from_secs(60));
    cluster.kill(second, "TERM");
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn a_job_asking_for_a_runtime_the_cluster_lacks_fails_at_once_naming_it() {
    let cluster = Cluster::new();
    let job = job_file(
        &cluster,
        "gvisor",
        "echo hi",
        "runtime: runsc\nnetwork: bridge",
    );
    let started = Instant::now();
    let out = cluster.run(&[&job]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let show = cluster.env.show("gvisor");
    let detail = show["detail"].as_str().unwrap();
    assert!(detail.contains("RuntimeClass"), "{detail}");
    assert_eq!(
        show["attempts"].as_array().unwrap().len(),
        1,
        "not retried: {show}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    cluster.wait_empty(Duration::from_secs(30));
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn the_deployment_manifests_are_accepted_by_the_api_server() {
    use kube::api::DynamicObject;
    use kube::core::GroupVersionKind;
    let cluster = Cluster::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut files: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    // The example Secret is left out of the kustomization on purpose; it must be valid too.
    files.push("secret.example.yaml".into());
    let mut objects = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if !value.is_null() {
                objects.push((file.clone(), serde_json::to_value(value).unwrap()));
            }
        }
    }
    let kinds: Vec<String> = objects
        .iter()
        .map(|(_, o)| o["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind}: {kinds:?}");
    }
    cluster.rt.block_on(async {
        let client = cluster.client.clone();
        // A dry run of each object, the namespaced ones in the test's own namespace.
        for (file, object) in &objects {
            let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (
                    String::new(),
                    object["apiVersion"].as_str().unwrap().to_string(),
                ),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
            let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{file}: {gvk:?}: {e}"));
            let mut dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
            let api: Api<DynamicObject> = match caps.scope {
                kube::discovery::Scope::Namespaced => {
                    dynamic.metadata.namespace = Some(cluster.ns.clone());
                    Api::namespaced_with(client.clone(), &cluster.ns, &resource)
                }
                kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let params = PostParams {
                dry_run: true,
                ..Default::default()
            };
            api.create(&params, &dynamic)
                .await
                .unwrap_or_else(|e| panic!("{file}: {} refused: {e}", object["kind"]));
        }
    });
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn a_pod_deleted_under_a_running_job_ends_it_lost_and_its_replacement_is_not_followed() {
    let mut cluster = Cluster::new();
    let job = job_file(
        &cluster,
        "drained",
        "echo started; sleep 60; echo finished",
        "network: bridge",
    );
    let daemon = cluster.daemon();
    cluster.submit_running(&[&job], &["drained"]);
    let first = cluster.pods();
    assert_eq!(first.len(), 1, "{first:?}");
    let name = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    // As a node drain does: the pod is deleted, and the Job controller makes another.
    cluster.delete_pod(&name);
    cluster
        .env
        .wait_state("drained", "failed", Duration::from_secs(60));
    let show = cluster.env.show("drained");
    assert_eq!(show["reason"], "lost", "{show}");
    assert!(!log_of(&cluster.env, "drained").contains("finished"));
    cluster.wait_empty(Duration::from_secs(60));
    cluster.kill(daemon, "TERM");
}

#[test]
#[ignore = "needs a cluster: make test-k8s"]
fn a_pod_replaced_while_no_runner_watched_is_not_adopted() {
    let mut cluster = Cluster::new();
    let job = job_file(
        &cluster,
        "replaced",
        "echo started; sleep 60; echo finished",
        "network: bridge",
    );
    let first = cluster.daemon();
    cluster.submit_running(&[&job], &["replaced"]);
    let original = cluster.pods()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.kill(first, "KILL");
    // While no runner watches, the pod is deleted and the Job controller makes another.
    cluster.delete_pod(&original);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster
        .pods()
        .iter()
        .any(|p| p["metadata"]["name"] != original.as_str())
    {
        assert!(Instant::now() < deadline, "no replacement pod");
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = cluster.daemon();
    cluster
        .env
        .wait_state("replaced", "failed", Duration::from_secs(60));
    let show = cluster.env.show("replaced");
    assert_eq!(show["reason"], "lost", "{show}");
    assert!(cluster.env.events_of("replaced", &["adopted"]).is_empty());
    cluster.wait_empty(Duration::from_secs(60));
    cluster.kill(second, "TERM");
}
