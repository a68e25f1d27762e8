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
        assert!(Instant::now() < deadline, "{id} not terminal after {timeout:?}: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn engine_lost_for_3s_mid_run_retries_or_ends_lost_never_succeeded() {
    let mut env = Env::new();
    let proxy = EngineProxy::start(env.dir.path());
    let retried = env.job("retried.yaml", &sh_job("retried", "echo start; sleep 5; echo end", "retries: 1"));
    let single = env.job("single.yaml", &sh_job("single", "echo start; sleep 5; echo end", ""));
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
    assert_eq!((single["state"].as_str(), single["reason"].as_str()), (Some("failed"), Some("lost")), "{single}");
    let retried = wait_terminal(&env, &retried, Duration::from_secs(60));
    assert_eq!(retried["state"], "succeeded", "{retried}");
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{retried}");
    assert_eq!(attempts[0]["reason"], "lost");
    // Containers the lost attempts left are removed once the engine answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.containers().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", env.containers());
        std::thread::sleep(Duration::from_millis(200));
    }
    env.signal_daemon(daemon, "TERM");
}
