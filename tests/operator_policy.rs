//! The operator, not the job file, decides which host variables a job may name and where
//! credentials may be sent: jobs asking for more are refused when they start, before any
//! container exists or any request leaves, with a message naming the flag that allows it.

mod common;
mod upstream;

use common::*;
use std::process::Command;
use upstream::Upstream;

/// Unix time now, for `docker events --since`.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Containers the engine created for this state dir since `since` (from its event log, so a
/// container removed since still counts).
fn containers_created(env: &Env, since: u64) -> usize {
    let id = env.state_id().expect("a state dir");
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(now() + 1).to_string(),
        ])
        .args(["--filter", "type=container", "--filter", "event=create"])
        .arg("--filter")
        .arg(format!("label=runner.state={id}"))
        .args(["--format", "{{.Actor.Attributes.name}}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().count()
}

/// The job's state, reason and detail.
fn ending(env: &Env, job: &str) -> (String, String, String) {
    let show = env.show(job);
    let field = |f: &str| show[f].as_str().unwrap_or_default().to_string();
    (field("state"), field("reason"), field("detail"))
}

#[test]
fn a_job_naming_the_llm_key_as_a_secret_is_refused_naming_allow_secret_and_creates_no_container() {
    let env = Env::new();
    let job = env.job(
        "steal.yaml",
        &sh_job(
            "steal",
            "cat /run/secrets/OPENAI_API_KEY",
            "secrets: [OPENAI_API_KEY]",
        ),
    );
    let since = now();
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("OPENAI_API_KEY", "sk-real-key-51c0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (state, reason, detail) = ending(&env, "steal");
    assert_eq!((state.as_str(), reason.as_str()), ("failed", "infra"));
    assert!(
        detail.contains("start the scheduler with --allow-secret OPENAI_API_KEY"),
        "{detail}"
    );
    assert_eq!(
        env.show("steal")["attempts"].as_array().unwrap().len(),
        1,
        "not retried"
    );
    assert_eq!(containers_created(&env, since), 0);
    assert!(!log_of(&env, "steal").contains("sk-real-key"));

    // The operator allows it by name: the same job runs.
    let out = env
        .cmd()
        .args(["run", path_str(&job), "--allow-secret", "OPENAI_API_KEY"])
        .env("OPENAI_API_KEY", "sk-real-key-51c0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_llm_key_for_a_url_not_allowed_is_refused_before_any_request_reaches_it() {
    let env = Env::new();
    let upstream = Upstream::start();
    // The job sends the runner's variable to a URL of its choosing, through the gateway.
    let script = r#"import json, os, urllib.request
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
             "Content-Type": "application/json"})
print("status", urllib.request.urlopen(req, timeout=30).status)"#;
    let job = env.job(
        "exfil.yaml",
        &format!(
            "name: exfil\nimage: {BASE_IMAGE}\nnetwork: llm\nllm: {{ base_url: '{}', api_key_env: RUNNER_TEST_DEPLOY_KEY }}\ncommand: [python3, -c, {script:?}]\n",
            upstream.url
        ),
    );
    let run = |extra: &[&str]| {
        env.cmd()
            .args(["run", path_str(&job)])
            .args(extra)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_BASE")
            .env("RUNNER_TEST_DEPLOY_KEY", "deploy-key-0b7e")
            .output()
            .unwrap()
    };
    let since = now();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (state, reason, detail) = ending(&env, "exfil");
    assert_eq!((state.as_str(), reason.as_str()), ("failed", "infra"));
    let flag = format!("--allow-llm-key RUNNER_TEST_DEPLOY_KEY={}", upstream.url);
    assert!(detail.contains(&flag), "{detail}");
    assert_eq!(upstream.calls(), 0, "a request reached the URL");
    assert_eq!(containers_created(&env, since), 0);

    // Allowed by the operator, the key goes there.
    let allow = format!("RUNNER_TEST_DEPLOY_KEY={}", upstream.url);
    let out = run(&["--allow-llm-key", &allow]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        log_of(&env, "exfil")
    );
    assert_eq!(
        upstream.seen.lock().unwrap().authorizations,
        ["Bearer deploy-key-0b7e"]
    );
}

#[test]
fn a_pr_token_for_an_api_url_not_allowed_is_refused_before_the_job_runs() {
    let env = Env::new();
    let upstream = Upstream::start();
    let forge = upstream.url.trim_end_matches("/v1").to_string();
    // An agent job (the refusal comes before its image or cassette would matter).
    env.job("empty.cassette.jsonl", "");
    let job = env.job(
        "pr.yaml",
        &format!(
            "name: pr\ntask: Add greet.\nimage: {BASE_IMAGE}\nrepo: https://github.com/org/app.git\nllm: {{ replay: empty.cassette.jsonl }}\noutput: {{ mode: pr, api_url: '{forge}', token_env: RUNNER_TEST_FORGE_TOKEN }}\n",
        ),
    );
    let since = now();
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("RUNNER_TEST_FORGE_TOKEN", "forge-token-2d4a")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (state, reason, detail) = ending(&env, "pr");
    assert_eq!((state.as_str(), reason.as_str()), ("failed", "infra"));
    let flag = format!("--allow-pr-token RUNNER_TEST_FORGE_TOKEN={forge}");
    assert!(detail.contains(&flag), "{detail}");
    assert_eq!(containers_created(&env, since), 0);
    assert_eq!(upstream.calls(), 0);
}
