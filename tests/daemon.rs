//! The long-lived scheduler through the CLI: cancel, crash recovery (SIGKILL, restart, adopt),
//! the jobs dir, the state-dir lock, and concurrent submits.

mod common;

use common::*;
use std::time::Duration;

fn submit(env: &Env, path: &std::path::Path) -> String {
    let out = env.run(&["submit", path_str(path)]);
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn cancel_works_for_queued_and_running_jobs() {
    let mut env = Env::new();
    let long = env.job("long.yaml", &sh_job("long", "echo begun; sleep 300", ""));
    let running = submit(&env, &long);
    let queued = submit(&env, &long);
    let daemon = env.spawn_daemon(&["--parallel", "1", "--stop-grace", "2s"]);
    env.wait_state(&running, "running", Duration::from_secs(30));
    assert_eq!(env.state_of(&queued), "queued");

    let out = env.run(&["cancel", &queued]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.state_of(&queued),
        "cancelled",
        "a queued job is cancelled at once"
    );
    let out = env.run(&["cancel", &running]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.wait_state(&running, "cancelled", Duration::from_secs(20));

    assert!(
        env.show(&queued)["attempts"].as_array().unwrap().is_empty(),
        "never started"
    );
    assert!(log_of(&env, &running).contains("begun"));
    assert!(
        env.containers().is_empty(),
        "the stopped container is removed"
    );
    let status = env.signal_daemon(daemon, "TERM").unwrap();
    assert!(
        status.success(),
        "daemon exits cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn daemon_killed_with_sigkill_adopts_its_containers_on_restart() {
    let mut env = Env::new();
    let job = env.job(
        "slow.yaml",
        &sh_job(
            "slow",
            "echo first-half; sleep 4; echo second-half",
            "resources: { cpus: 0.2, memory: 64m }",
        ),
    );
    let ids: Vec<String> = (0..3).map(|_| submit(&env, &job)).collect();
    let daemon = env.spawn_daemon(&["--parallel", "3"]);
    for id in &ids {
        env.wait_state(id, "running", Duration::from_secs(30));
    }
    env.signal_daemon(daemon, "KILL");
    let containers = env.containers();
    assert_eq!(
        containers.len(),
        3,
        "containers outlive the daemon: {containers:?}"
    );

    let daemon = env.spawn_daemon(&["--parallel", "3"]);
    for id in &ids {
        env.wait_state(id, "succeeded", Duration::from_secs(60));
        let job = env.show(id);
        assert_eq!(
            job["attempts"].as_array().unwrap().len(),
            1,
            "adopted, not re-run: {job}"
        );
        let log = log_of(&env, id);
        assert!(
            log.contains("first-half") && log.contains("second-half"),
            "output kept: {log}"
        );
    }
    assert!(env.containers().is_empty(), "no container left behind");
    env.signal_daemon(daemon, "TERM");
    let store = runner::store::Store::open(&env.state).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn restart_marks_vanished_containers_lost_and_removes_orphans() {
    let mut env = Env::new();
    let job = env.job("v.yaml", &sh_job("v", "sleep 300", ""));
    let id = submit(&env, &job);
    let daemon = env.spawn_daemon(&[]);
    env.wait_state(&id, "running", Duration::from_secs(30));
    env.signal_daemon(daemon, "KILL");
    // The container disappears while no scheduler watches it.
    let name = env.containers().pop().expect("container running");
    std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output()
        .unwrap();
    let daemon = env.spawn_daemon(&[]);
    env.wait_state(&id, "failed", Duration::from_secs(30));
    assert_eq!(env.show(&id)["reason"], "lost");
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn jobs_dir_files_are_submitted_once_per_content() {
    let mut env = Env::new();
    let dir = env.dir.path().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.yaml");
    std::fs::write(&file, sh_job("from-dir", "echo one", "")).unwrap();
    std::fs::write(dir.join("broken.yaml"), "name: [\n").unwrap();
    let daemon = env.spawn_daemon(&["--jobs-dir", path_str(&dir)]);
    let wait_count = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = env.ps();
            let done = jobs.iter().filter(|j| j["state"] == "succeeded").count();
            if done == n && jobs.len() == n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {n} jobs: {jobs:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_count(1);
    // Same content again (touched): not resubmitted.
    std::fs::write(&file, sh_job("from-dir", "echo one", "")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.ps().len(), 1);
    std::fs::write(&file, sh_job("from-dir", "echo two", "")).unwrap();
    wait_count(2);
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn second_scheduler_on_a_state_dir_is_refused_clearly() {
    let mut env = Env::new();
    let daemon = env.spawn_daemon(&[]);
    let job = env.job("a.yaml", &sh_job("a", "true", ""));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !env.state.join("scheduler.lock").exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("another scheduler") && err.contains(&format!("pid {daemon}")),
        "{err}"
    );
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn two_hundred_concurrent_submits_from_eight_processes_are_all_stored() {
    let env = Env::new();
    let job = env.job("a.yaml", &sh_job("a", "true", ""));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    let out = env.run(&["submit", path_str(&job)]);
                    assert!(out.status.success(), "submit failed: {}", stderr(&out));
                    assert!(!stderr(&out).contains("locked"));
                }
            });
        }
    });
    assert_eq!(env.ps().len(), 200);
    let store = runner::store::Store::open(&env.state).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn submit_wait_follows_jobs_run_by_a_daemon() {
    let mut env = Env::new();
    let daemon = env.spawn_daemon(&[]);
    let ok = env.job("ok.yaml", &sh_job("ok", "true", ""));
    let bad = env.job("bad.yaml", &sh_job("bad", "exit 4", ""));
    let out = env.run(&["submit", "--wait", path_str(&ok)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env.run(&["submit", "--wait", "--json", path_str(&bad)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs[0]["exit_code"], 4);
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn events_follow_a_job_to_its_end_as_json_lines_from_another_process() {
    let mut env = Env::new();
    let job = env.job("ev.yaml", &sh_job("ev", "sleep 1; exit 3", ""));
    let id = submit(&env, &job);
    // Started before the job runs: it follows from `queued` to the end, then exits by itself.
    let follower = env
        .cmd()
        .args(["events", "-f", "--json", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let daemon = env.spawn_daemon(&[]);
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["queued", "starting", "running", "failed"],
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "state");
    assert_eq!(last["job"], id.as_str());
    assert_eq!(last["attempt"], 1);
    assert_eq!(last["reason"], "exit_code");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    // The same events for a person, one a line.
    let human = stdout(&env.run(&["events", &id]));
    assert_eq!(human.lines().count(), 4, "{human}");
    assert!(
        human
            .lines()
            .last()
            .unwrap()
            .contains("attempt 1  failed    exit_code"),
        "{human}"
    );
    let unknown = env.run(&["events", "no-such-job"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));
    env.signal_daemon(daemon, "TERM");
}
