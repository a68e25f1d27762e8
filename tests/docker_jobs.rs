//! Plain command jobs through the CLI against the real Docker engine and real SQLite: exit codes,
//! OOM, timeouts, hardening, limits, secrets.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn exit_codes_map_to_states_and_reasons() {
    let env = Env::new();
    let ok = env.job("ok.yaml", &sh_job("ok", "echo fine", ""));
    let three = env.job("three.yaml", &sh_job("three", "exit 3", ""));
    let signal = env.job("signal.yaml", &sh_job("signal", "kill -KILL $$", ""));
    let out = env.run(&[
        "run",
        path_str(&ok),
        path_str(&three),
        path_str(&signal),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one failed job makes run exit 1: {}",
        stderr(&out)
    );
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| jobs.iter().find(|j| j["name"] == n).unwrap().clone();
    let ok = by_name("ok");
    assert_eq!(
        (ok["state"].as_str(), ok["reason"].as_str()),
        (Some("succeeded"), None)
    );
    assert!(ok["exit_code"].is_null());
    let three = by_name("three");
    assert_eq!(three["state"], "failed");
    assert_eq!(three["reason"], "exit_code");
    assert_eq!(three["exit_code"], 3);
    assert_eq!(three["attempts"][0]["exit_code"], 3);
    let signal = by_name("signal");
    assert_eq!(signal["reason"], "exit_code");
    assert_eq!(
        signal["exit_code"], 137,
        "a plain SIGKILL is not reported as oom"
    );
    assert!(env.containers().is_empty(), "containers are removed");
    assert_eq!(log_of(&env, "ok"), "fine\n");
}

#[test]
fn all_succeeded_run_exits_zero_and_writes_junit() {
    let env = Env::new();
    let a = env.job("a.yaml", &sh_job("a", "true", ""));
    let junit = env.dir.path().join("report.xml");
    let out = env.run(&["run", path_str(&a), "--junit", path_str(&junit)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
}

#[test]
fn memory_hog_is_oom_from_the_engine_flag() {
    let env = Env::new();
    let hog = env.job(
        "hog.yaml",
        &sh_job(
            "hog",
            "python3 -c 'b = bytearray(512 * 1024 * 1024)'",
            "resources: { memory: 64m }",
        ),
    );
    let out = env.run(&["run", path_str(&hog)]);
    assert_eq!(out.status.code(), Some(1));
    let job = env.show("hog");
    assert_eq!(job["reason"], "oom", "{job}");
}

#[test]
fn job_ignoring_sigterm_is_timeout_within_timeout_plus_grace() {
    let env = Env::new();
    let stubborn = env.job(
        "stubborn.yaml",
        &sh_job(
            "stubborn",
            "trap '' TERM; echo started; sleep 120",
            "timeout: 2s",
        ),
    );
    let started = Instant::now();
    let out = env.run(&["run", path_str(&stubborn), "--stop-grace", "2s"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let job = env.show("stubborn");
    assert_eq!(job["reason"], "timeout", "{job}");
    assert!(job["exit_code"].is_null());
    // timeout 2s + grace 2s, plus container start and removal.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(4),
        "killed before the grace ran out: {elapsed:?}"
    );
    assert_eq!(log_of(&env, "stubborn"), "started\n");
    assert!(env.containers().is_empty());
}

#[test]
fn hardening_and_limits_are_visible_inside_the_container() {
    let env = Env::new();
    let script = r#"
id -u
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status
touch /rootfs-probe 2>/dev/null && echo root-writable || echo root-readonly
touch /workspace/w /tmp/t && echo scratch-writable
echo ifaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo mem $(cat /sys/fs/cgroup/memory.max) swap $(cat /sys/fs/cgroup/memory.swap.max)
  echo pids $(cat /sys/fs/cgroup/pids.max) cpu $(cut -d' ' -f1 /sys/fs/cgroup/cpu.max)
else
  echo mem $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) memsw $(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null)
  echo pids $(cat /sys/fs/cgroup/pids/pids.max) cpu $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
fi
echo init $(cat /proc/1/comm)
ls /var/run/docker.sock 2>/dev/null || echo no-docker-socket
"#;
    let job = env.job(
        "hard.yaml",
        &sh_job(
            "hard",
            script,
            "resources: { cpus: 0.5, memory: 128m, pids: 50 }",
        ),
    );
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "hard");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "1000", "runs as a non-root user: {log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("root-readonly"), "{log}");
    assert!(log.contains("scratch-writable"), "{log}");
    assert!(log.contains("ifaces lo\n"), "only loopback: {log}");
    assert!(log.contains("pids 50 "), "{log}");
    assert!(log.contains("no-docker-socket"), "{log}");
    assert!(log.contains("init docker-init"), "{log}");
    let limit = (128u64 << 20).to_string();
    assert!(log.contains(&format!("mem {limit}")), "{log}");
    assert!(
        log.contains(&format!("memsw {limit}")) || log.contains("swap 0"),
        "swap equals memory: {log}"
    );
    assert!(log.contains("cpu 50000"), "half a cpu: {log}");
}

#[test]
fn parallel_is_a_hard_ceiling() {
    let env = Env::new();
    let files: Vec<String> = (0..6)
        .map(|i| {
            let path = env.job(
                &format!("p{i}.yaml"),
                &sh_job(
                    &format!("p{i}"),
                    "sleep 1",
                    "resources: { cpus: 0.1, memory: 32m }",
                ),
            );
            path_str(&path).to_string()
        })
        .collect();
    let mut args = vec!["run", "--parallel", "2", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Each attempt holds a slot from its start to its end: count the most that overlap.
    assert_eq!(
        most_overlapping(&jobs),
        2,
        "at most --parallel jobs overlap, and the limit is used"
    );
}

/// The most attempts of `jobs` (a `run --json` array) that were running at the same moment.
fn most_overlapping(jobs: &[serde_json::Value]) -> i32 {
    let mut edges: Vec<(String, i32)> = Vec::new();
    for job in jobs {
        let a = &job["attempts"][0];
        edges.push((a["started_at"].as_str().unwrap().to_string(), 1));
        edges.push((a["finished_at"].as_str().unwrap().to_string(), -1));
    }
    // An end and a start at the same instant do not overlap.
    edges.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most
}

#[test]
fn six_default_jobs_at_parallel_6_run_at_once_on_a_two_core_host() {
    let env = Env::new();
    // No `resources:`: each job is capped at 1 cpu but reserves only the default request.
    let files: Vec<String> = (0..6)
        .map(|i| {
            let path = env.job(
                &format!("d{i}.yaml"),
                &sh_job(&format!("d{i}"), "sleep 3", ""),
            );
            path_str(&path).to_string()
        })
        .collect();
    // A 2-core budget whatever the machine; memory enough for six default (1g) caps.
    let mut args = vec![
        "run",
        "--parallel",
        "6",
        "--host-cpus",
        "2",
        "--host-memory",
        "6g",
        "--json",
    ];
    args.extend(files.iter().map(String::as_str));
    let started = Instant::now();
    let out = env.run(&args);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.len(), 6);
    assert_eq!(
        most_overlapping(&jobs),
        6,
        "six default jobs run side by side on two cores: {jobs:#?}"
    );
    eprintln!("six default `sleep 3` jobs at --parallel 6 on 2 cpus: {took:?}");
}

#[test]
fn secrets_are_files_never_env_inspect_or_database() {
    let env = Env::new();
    let secret = "s3cr3t-value-7f1c";
    let script = r#"v=$(cat /run/secrets/RUNNER_TEST_TOKEN)
[ ${#v} -eq 17 ] && echo secret-file-ok
echo "printed: $v"
env | grep -c s3cr3t || true
sleep 3"#;
    let job = env.job(
        "secret.yaml",
        &sh_job("secret", script, "secrets: [RUNNER_TEST_TOKEN]"),
    );
    let mut child = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("RUNNER_TEST_TOKEN", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it runs, the engine's view of the container must not hold the value.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut inspected = false;
    while Instant::now() < deadline && !inspected {
        for name in env.containers() {
            let out = std::process::Command::new("docker")
                .args(["inspect", &name])
                .output()
                .unwrap();
            if out.status.success() {
                assert!(
                    !stdout(&out).contains(secret),
                    "docker inspect shows the secret"
                );
                inspected = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inspected, "the container was never seen running");
    assert!(child.wait().unwrap().success());
    let log = log_of(&env, "secret");
    assert!(log.contains("secret-file-ok"), "{log}");
    assert!(
        !log.contains(secret),
        "a printed secret is redacted in the stored log: {log}"
    );
    assert!(
        log.contains("printed: [redacted RUNNER_TEST_TOKEN]"),
        "{log}"
    );
    assert!(log.contains("\n0\n"), "not in the environment: {log}");
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{file} holds the secret"
            );
        }
    }
    let show = stdout(&env.run(&["show", "secret", "--json"]));
    assert!(!show.contains(secret));
}

#[test]
fn missing_secret_fails_the_job_naming_the_variable() {
    let env = Env::new();
    let job = env.job(
        "s.yaml",
        &sh_job("s", "true", "secrets: [RUNNER_TEST_UNSET_VAR]"),
    );
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1));
    let detail = env.show("s")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("RUNNER_TEST_UNSET_VAR"), "{detail}");
}

#[test]
fn missing_image_exits_3_naming_the_fix() {
    let env = Env::new();
    let job = env.job(
        "m.yaml",
        "name: m\nimage: runner/nope:1\ncommand: [\"true\"]\n",
    );
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("runner/nope:1 is missing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn docker_unreachable_exits_3_naming_docker_host() {
    let env = Env::new();
    let job = env.job("a.yaml", &sh_job("a", "true", ""));
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("DOCKER_HOST") && err.contains("/nonexistent/docker.sock"),
        "{err}"
    );
}

#[test]
fn log_flood_is_stored_capped_with_head_and_tail() {
    let env = Env::new();
    // ~6 MB of numbered lines between two markers.
    let script = "echo FIRST-LINE; seq 1 800000; echo LAST-LINE";
    let job = env.job("flood.yaml", &sh_job("flood", script, ""));
    let out = env.run(&["run", path_str(&job), "--log-cap", "64k"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "flood");
    assert!(
        log.len() <= 64 * 1024 + 200,
        "stored log is capped: {} bytes",
        log.len()
    );
    assert!(log.starts_with("FIRST-LINE\n1\n2\n"), "head kept");
    assert!(log.ends_with("799999\n800000\nLAST-LINE\n"), "tail kept");
    assert!(log.contains("bytes of output cut here"), "cut is marked");
}

#[test]
fn logs_follow_streams_a_running_job_until_it_ends() {
    let mut env = Env::new();
    let job = env.job(
        "tick.yaml",
        &sh_job("tick", "for i in 1 2 3; do echo tick-$i; sleep 1; done", ""),
    );
    let out = env.run(&["submit", path_str(&job)]);
    let id = stdout(&out).trim().to_string();
    let daemon = env.spawn_daemon(&[]);
    env.wait_state(&id, "running", Duration::from_secs(30));
    let started = Instant::now();
    let out = env.run(&["logs", "-f", &id]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "tick-1\ntick-2\ntick-3\n");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "followed live, returned at the end"
    );
    assert_eq!(env.state_of(&id), "succeeded");
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn first_interrupt_drains_running_jobs_and_cancels_queued_ones() {
    let env = Env::new();
    let slow = env.job("slow.yaml", &sh_job("slow", "sleep 3; echo done", ""));
    let later = env.job("later.yaml", &sh_job("later", "echo never", ""));
    let child = env
        .cmd()
        .args(["run", "--parallel", "1", path_str(&slow), path_str(&later)])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_state("slow", "running", Duration::from_secs(30));
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "not every job succeeded: {}",
        stderr(&out)
    );
    assert_eq!(
        env.state_of("slow"),
        "succeeded",
        "the running job finished"
    );
    assert_eq!(
        env.state_of("later"),
        "cancelled",
        "the queued job never started"
    );
    assert!(env.containers().is_empty());
}

#[test]
fn gc_removes_labelled_containers_no_job_owns() {
    let env = Env::new();
    let job = env.job("a.yaml", &sh_job("a", "true", ""));
    assert!(env.run(&["run", path_str(&job)]).status.success());
    let state = env.state_id().unwrap();
    let created = std::process::Command::new("docker")
        .args([
            "create",
            "--label",
            &format!("runner.state={state}"),
            "--label",
            "runner.job=01ORPHAN",
        ])
        .args([
            "--label",
            "runner.attempt=1",
            "--name",
            &format!("runner-{state}-orphan-1"),
            BASE_IMAGE,
            "true",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let out = env.run(&["gc", "--dry-run"]);
    assert!(
        stdout(&out).contains(&format!("would remove container runner-{state}-orphan-1")),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.containers().len(), 1, "dry run removes nothing");
    let out = env.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.containers().is_empty());
}

#[test]
fn runtime_is_allow_listed_and_a_missing_one_fails_clearly() {
    let env = Env::new();
    let runc = env.job("runc.yaml", &sh_job("runc", "echo ok", "runtime: runc"));
    let out = env.run(&["run", path_str(&runc)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let gvisor_installed = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .map(|o| stdout(&o).contains("runsc"))
        .unwrap_or(false);
    if !gvisor_installed {
        let runsc = env.job(
            "runsc.yaml",
            &sh_job("runsc", "echo ok", "runtime: runsc\nretries: 3"),
        );
        let out = env.run(&["run", path_str(&runsc)]);
        assert_eq!(out.status.code(), Some(1));
        let job = env.show("runsc");
        let detail = job["detail"].as_str().unwrap();
        assert!(
            detail.contains("no runtime \"runsc\"") && detail.contains("gvisor"),
            "{detail}"
        );
        assert_eq!(
            job["attempts"].as_array().unwrap().len(),
            1,
            "not retried: {job}"
        );
    }
    let bad = env.job("kata.yaml", &sh_job("kata", "true", "runtime: kata"));
    let out = env.run(&["validate", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("runc") && stderr(&out).contains("runsc"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_plain_job_with_a_repo_runs_in_its_checkout() {
    let env = Env::new();
    make_repo(&env.dir.path().join("repo"));
    let job = env.job(
        "ci.yaml",
        &sh_job(
            "ci",
            "pwd; cat README.md; git log --format=%s",
            "repo: ./repo\nref: main",
        ),
    );
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(log_of(&env, "ci"), "/workspace\n# demo\ninitial\n");
    let bad_ref = env.job(
        "badref.yaml",
        &sh_job("badref", "true", "repo: ./repo\nref: nope"),
    );
    let out = env.run(&["run", path_str(&bad_ref)]);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("badref");
    assert!(show["detail"].as_str().unwrap().contains("nope"), "{show}");
    assert!(
        show["attempts"].as_array().unwrap().len() == 1
            && show["attempts"][0]["container"].is_string()
    );
}
