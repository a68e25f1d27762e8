//! Reliability under faults and abuse, through the CLI with the real engine: engine loss mid-run,
//! repeated daemon crashes, resource abuse. Figures are in the test names or their messages.

mod common;
mod engine_proxy;

use common::*;
use engine_proxy::EngineProxy;
use std::time::{Duration, Instant};

fn submit(env: &Env, path: &std::path::Path) -> String {
    let out = env.run(&["submit", path_str(path)]);
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn wait_terminal(env: &Env, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let job = env.show(id);
        if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not terminal after {timeout:?}: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn engine_lost_for_3s_mid_run_retries_or_ends_lost_never_succeeded() {
    let mut env = Env::new();
    let proxy = EngineProxy::start(env.dir.path());
    let retried = env.job(
        "retried.yaml",
        &sh_job("retried", "echo start; sleep 5; echo end", "retries: 1"),
    );
    let single = env.job(
        "single.yaml",
        &sh_job("single", "echo start; sleep 5; echo end", ""),
    );
    let retried = submit(&env, &retried);
    let single = submit(&env, &single);
    let host = proxy.docker_host();
    let daemon = env.spawn_daemon_env(&["--stop-grace", "1s"], &[("DOCKER_HOST", &host)]);
    env.wait_state(&retried, "running", Duration::from_secs(30));
    env.wait_state(&single, "running", Duration::from_secs(30));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();

    let single = wait_terminal(&env, &single, Duration::from_secs(60));
    assert_eq!(
        (single["state"].as_str(), single["reason"].as_str()),
        (Some("failed"), Some("lost")),
        "{single}"
    );
    let retried = wait_terminal(&env, &retried, Duration::from_secs(60));
    assert_eq!(retried["state"], "succeeded", "{retried}");
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{retried}");
    assert_eq!(attempts[0]["reason"], "lost");
    // Containers the lost attempts left are removed once the engine answers again.
    env.wait_no_containers(Duration::from_secs(30));
    env.signal_daemon(daemon, "TERM");
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn daemon_killed_6_times_in_30s_loses_nothing_and_leaves_nothing() {
    let mut env = Env::new();
    let job = env.job(
        "work.yaml",
        &sh_job(
            "work",
            "echo begin; sleep 3; echo end",
            "resources: { cpus: 0.1, memory: 32m }",
        ),
    );
    let ids: Vec<String> = (0..12).map(|_| submit(&env, &job)).collect();
    let mut attempts_seen = std::collections::HashMap::<String, u64>::new();
    let mut check_monotonic = |env: &Env| {
        for job in env.ps() {
            let id = job["id"].as_str().unwrap().to_string();
            let n = env.show(&id)["attempts"].as_array().unwrap().len() as u64;
            let before = attempts_seen.insert(id.clone(), n).unwrap_or(0);
            assert!(
                n >= before,
                "attempt count of {id} went back from {before} to {n}"
            );
        }
    };
    for round in 0..6 {
        let daemon = env.spawn_daemon(&["--parallel", "3"]);
        std::thread::sleep(Duration::from_millis(2500 + 700 * (round % 3)));
        env.signal_daemon(daemon, "KILL");
        check_monotonic(&env);
    }
    let daemon = env.spawn_daemon(&["--parallel", "3"]);
    for id in &ids {
        let job = wait_terminal(&env, id, Duration::from_secs(120));
        assert_eq!(job["state"], "succeeded", "{job}");
        let log = log_of(&env, id);
        assert!(
            log.contains("begin") && log.contains("end"),
            "output kept: {log}"
        );
    }
    check_monotonic(&env);
    env.signal_daemon(daemon, "TERM");
    assert_eq!(env.ps().len(), 12, "no row lost or added");
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let store = runner::store::Store::open(&env.state).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn crash_between_create_and_record_adopts_the_container_instead_of_making_a_second() {
    let mut env = Env::new();
    let job = env.job("once.yaml", &sh_job("once", "echo only-once", ""));
    let id = submit(&env, &job);
    // A scheduler claimed the job and created its container, then died before starting it.
    let container = {
        let mut store = runner::store::Store::open(&env.state).unwrap();
        let state = store.state_id().to_string();
        let job_id = store.resolve(&id).unwrap();
        let attempt = store
            .claim(&job_id, |n| {
                runner::sandbox::Labels {
                    state: state.clone(),
                    job: job_id.to_string(),
                    attempt: n,
                }
                .container_name()
            })
            .unwrap()
            .unwrap();
        attempt.container
    };
    let state = env.state_id().unwrap();
    let created = std::process::Command::new("docker")
        .args([
            "create",
            "--name",
            &container,
            "--label",
            &format!("runner.state={state}"),
        ])
        .args([
            "--label",
            &format!("runner.job={id}"),
            "--label",
            "runner.attempt=1",
            "--user",
            "1000:1000",
        ])
        .args([BASE_IMAGE, "sh", "-c", "echo only-once"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let daemon = env.spawn_daemon(&[]);
    let job = wait_terminal(&env, &id, Duration::from_secs(60));
    env.signal_daemon(daemon, "TERM");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["attempts"][0]["container"], container.as_str());
    assert!(env.containers().is_empty());
}

#[test]
fn fork_bomb_is_held_by_the_pids_limit_and_the_host_stays_responsive() {
    let env = Env::new();
    let bomb = env.job(
        "bomb.yaml",
        &sh_job(
            "bomb",
            "b() { b | b & }; b; sleep 8",
            "timeout: 6s\nresources: { pids: 64, cpus: 0.5, memory: 128m }",
        ),
    );
    let mut child = env
        .cmd()
        .args(["run", path_str(&bomb), "--stop-grace", "1s"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // The host still starts processes promptly while the bomb runs.
    let started = Instant::now();
    let out = std::process::Command::new("true").output().unwrap();
    let latency = started.elapsed();
    assert!(out.status.success());
    assert!(
        latency < Duration::from_secs(1),
        "host spawn took {latency:?}"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let job = env.show("bomb");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(env.containers().is_empty());
}

#[test]
fn filling_tmp_and_workspace_fails_the_job_without_touching_the_host() {
    let env = Env::new();
    for dir in ["/tmp", "/workspace"] {
        let name = format!("fill{}", dir.replace('/', "-"));
        let job = env.job(
            &format!("{name}.yaml"),
            &sh_job(
                &name,
                &format!("dd if=/dev/zero of={dir}/fill bs=1M count=1024"),
                "resources: { memory: 96m }",
            ),
        );
        let out = env.run(&["run", path_str(&job)]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let show = env.show(&name);
        assert_eq!(show["state"], "failed", "{show}");
    }
    assert!(env.containers().is_empty());
}

#[test]
fn log_flood_of_600_mb_keeps_runner_memory_flat_and_the_log_capped() {
    let env = Env::new();
    let job = env.job(
        "flood.yaml",
        &sh_job("flood", "echo FIRST; head -c 600000000 /dev/zero | tr '\\\\0' 'x' | fold -w 100; echo; echo LAST", "timeout: 5m"),
    );
    let mut child = env
        .cmd()
        .args(["run", path_str(&job), "--log-cap", "1m"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(kib) = rss_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    let log_path = env.show("flood")["artifacts"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let size = std::fs::metadata(&log_path).unwrap().len();
    assert!(
        size <= (1 << 20) + 200,
        "stored log is capped: {size} bytes"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.starts_with("FIRST\n") && log.ends_with("LAST\n"),
        "head and tail kept"
    );
    assert!(log.contains("bytes of output cut here"));
    assert!(
        peak < 64 * 1024,
        "runner peak RSS {peak} KiB while 600 MB passed through"
    );
    eprintln!("log flood: 600 MB through, runner peak RSS {peak} KiB, stored log {size} bytes");
}

#[test]
fn daemon_running_50_jobs_at_parallel_4_keeps_memory_flat() {
    let mut env = Env::new();
    let job = env.job(
        "small.yaml",
        &sh_job("small", "echo hi", "resources: { cpus: 0.1, memory: 32m }"),
    );
    let ids: Vec<String> = (0..50).map(|_| submit(&env, &job)).collect();
    let daemon = env.spawn_daemon(&["--parallel", "4"]);
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = env
            .ps()
            .iter()
            .filter(|j| j["state"] == "succeeded")
            .count();
        if let Some(kib) = rss_kib(daemon) {
            samples.push((done, kib));
        }
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {done}/50");
        std::thread::sleep(Duration::from_millis(250));
    }
    env.signal_daemon(daemon, "TERM");
    let early = samples.iter().find(|(d, _)| *d >= 10).map(|s| s.1).unwrap();
    let late = samples.last().unwrap().1;
    eprintln!("daemon RSS after 10 jobs {early} KiB, after 50 jobs {late} KiB");
    assert!(
        late < early + 16 * 1024,
        "memory grew from {early} KiB to {late} KiB"
    );
    assert!(env.containers().is_empty());
}
