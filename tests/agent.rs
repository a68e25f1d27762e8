//! Agent jobs end to end: the real `runner/aider:0.86.2` image, a real container, real Aider,
//! the manager loop, verify and export, against a scripted OpenAI-compatible server on loopback.

mod common;
mod scripted;

use common::*;
use scripted::{answer, create_file, ScriptedLlm, PAUSE};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const VERIFY: &str = "verify: [\"python3\", \"-c\", \"from greet import greet; assert greet('Ann') == 'Hello, Ann!'\"]";

fn agent_job(env: &Env, name: &str, manager: &str, extra: &str) -> std::path::PathBuf {
    agent_job_with_model(env, name, "openai/mock", manager, extra)
}

fn agent_job_with_model(
    env: &Env,
    name: &str,
    model: &str,
    manager: &str,
    extra: &str,
) -> std::path::PathBuf {
    make_repo(&env.dir.path().join("repo"));
    env.job(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\ntask: Add a function greet(name) to greet.py that returns \"Hello, <name>!\".\nrepo: ./repo\nagent: {{ model: {model} }}\nmanager: {manager}\ntimeout: 5m\n{extra}\n"
        ),
    )
}

fn artifact(job: &serde_json::Value, kind: &str) -> Option<String> {
    job["artifacts"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == kind)
        .map(|a| a["path"].as_str().unwrap().to_string())
}

#[test]
fn manager_instructs_aider_edits_verify_passes_and_the_patch_holds_the_change() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            answer(
                "instruct",
                "Create greet.py with greet(name) returning 'Hello, <name>!'.",
            ),
            answer("finish", "greet added"),
        ],
        vec![create_file("greet.py", GREET)],
    );
    let job = agent_job(
        &env,
        "greet",
        "{ mode: llm, model: manager-mock, max_turns: 5 }",
        VERIFY,
    );
    let out = llm.run(&env, &job);
    let show = env.show("greet");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{show}\n{}",
        stderr(&out),
        log_of(&env, "greet")
    );
    assert_eq!(show["state"], "succeeded");
    let patch =
        std::fs::read_to_string(artifact(&show, "patch").expect("a patch artifact")).unwrap();
    assert!(patch.contains("+def greet(name):"), "{patch}");
    assert!(
        patch.contains("Subject: [PATCH"),
        "commits are exported: {patch}"
    );
    assert!(artifact(&show, "bundle").is_some(), "{show}");
    let verify =
        std::fs::read_to_string(artifact(&show, "verify").expect("verify output kept")).unwrap();
    assert!(verify.starts_with("exit code 0"), "{verify}");
    let base = show["attempts"][0]["base_commit"]
        .as_str()
        .expect("base commit recorded");
    assert_eq!(base.len(), 40, "{show}");
    let usage = &show["usage"];
    assert_eq!(usage["manager"]["requests"], 2, "{usage}");
    assert!(
        usage["agent"]["requests"].as_u64().unwrap() >= 2,
        "edit and commit message: {usage}"
    );
    assert!(env.containers().is_empty(), "the container is gone");
    let transcript = log_of(&env, "greet");
    assert!(
        transcript.contains("» Create greet.py"),
        "input is in the transcript: {transcript}"
    );
    assert!(
        transcript.contains("Applied edit to greet.py"),
        "{transcript}"
    );
    let s = llm.script.lock().unwrap();
    assert!(
        s.manager_prompts[1].contains("greet.py"),
        "the manager saw the new output"
    );
    // Each turn is a typed event, in order with the state changes.
    let events = stdout(&env.run(&["events", "--json", "greet"]));
    let turns: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "turn")
        .collect();
    assert_eq!(turns.len(), 2, "{events}");
    assert_eq!(
        (
            &turns[0]["turn"],
            &turns[0]["max_turns"],
            &turns[0]["action"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(5),
            &serde_json::json!("instruct")
        ),
        "{events}"
    );
    assert!(turns[0]["argument"]
        .as_str()
        .unwrap()
        .starts_with("Create greet.py"));
    assert!(
        turns[0]["ended"].as_str().unwrap().contains("greet.py"),
        "what Aider did: {events}"
    );
    assert_eq!(turns[1]["action"], "finish");
    assert_eq!(turns[1]["ended"], "verified and exported");
    // A turn carries what it cost and changed: the manager's call and Aider's edit.
    assert!(turns[0]["requests"].as_u64().unwrap() >= 2, "{events}");
    assert!(
        turns[0]["prompt_tokens"].as_u64().unwrap()
            + turns[0]["completion_tokens"].as_u64().unwrap()
            > 0,
        "{events}"
    );
    assert_eq!(
        turns[0]["edits"],
        serde_json::json!(["greet.py"]),
        "{events}"
    );
    assert_eq!(turns[0]["commits"], 1, "{events}");
    assert_eq!(turns[0]["files_changed"], 1, "{events}");
    let requests: u64 = turns.iter().map(|t| t["requests"].as_u64().unwrap()).sum();
    assert!(
        requests
            <= show["usage"]["manager"]["requests"].as_u64().unwrap()
                + show["usage"]["agent"]["requests"].as_u64().unwrap(),
        "turns count no call twice: {events}"
    );
    // Verify and export are events too, between the finish decision and its turn event.
    let typed: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] != "state")
        .collect();
    let kinds: Vec<&str> = typed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["turn", "verify", "export", "export", "turn"],
        "{events}"
    );
    assert_eq!(
        (
            &typed[1]["passed"],
            &typed[1]["exit_code"],
            &typed[1]["turn"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(0),
            &serde_json::json!(2)
        ),
        "{events}"
    );
    assert!(typed[1]["duration_ms"].is_u64(), "{events}");
    assert_eq!(
        (typed[2]["what"].as_str(), typed[2]["path"].as_str()),
        (Some("patch"), artifact(&show, "patch").as_deref()),
        "{events}"
    );
    assert_eq!(typed[3]["what"], "bundle", "{events}");
    let human = stdout(&env.run(&["show", "greet"]));
    assert!(
        human.contains("turns:\n  attempt 1  turn 1/5 instruct: "),
        "{human}"
    );
    assert!(
        human.contains(" tokens, $") && human.contains("; 1 file changed]"),
        "tokens and cost per turn: {human}"
    );
    assert!(human.contains("verify passed (exit code 0, "), "{human}");
    // `runner run`'s progress lines are the same events.
    let progress = stderr(&out);
    for line in [
        "greet",
        "turn 1/5 instruct: ",
        "verify passed (exit code 0, ",
        "exported the patch: ",
        "succeeded",
    ] {
        assert!(progress.contains(line), "{line:?} in {progress}");
    }
    assert!(
        human.contains("usage:\n  manager  2 requests, "),
        "usage per role without --json: {human}"
    );
}

/// A streamed answer can stop, for longer than the quiet period, right after a line that starts
/// like Aider's prompt (a Markdown quote `> `). Aider is not ready then: the runner must not
/// end the turn until the answer is through and the real prompt stands.
#[test]
fn a_quote_paused_mid_stream_is_not_taken_for_the_prompt() {
    let env = Env::new();
    let edit = format!(
        "Plan:\n> {PAUSE}quoted remark\n\n{}",
        create_file("greet.py", GREET)
    );
    let llm = ScriptedLlm::start(
        vec![
            answer("instruct", "Create greet.py with greet(name)."),
            answer("finish", "greet added"),
        ],
        vec![edit],
    );
    let job = agent_job(
        &env,
        "quote",
        "{ mode: llm, model: manager-mock, max_turns: 5 }",
        VERIFY,
    );
    let out = llm.run(&env, &job);
    let show = env.show("quote");
    let s = llm.script.lock().unwrap();
    let seen = s.manager_prompts.get(1).cloned().unwrap_or_default();
    assert!(
        seen.contains("quoted remark") && seen.contains("Applied edit to greet.py"),
        "the manager's second turn saw the whole answer, not the pause: {seen}"
    );
    assert_eq!(
        (out.status.code(), show["state"].as_str()),
        (Some(0), Some("succeeded")),
        "{}\n{show}",
        stderr(&out)
    );
    assert_eq!(s.manager_calls, 2, "no turn ended at the pause");
}

#[test]
fn verify_failure_is_fed_back_then_ends_verify_failed() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            answer("finish", "nothing to do"),
            answer("finish", "really"),
        ],
        vec![],
    );
    let job = agent_job(
        &env,
        "vf",
        "{ mode: llm, model: manager-mock, max_turns: 2 }",
        VERIFY,
    );
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("vf");
    assert_eq!(show["reason"], "verify_failed", "{show}");
    let s = llm.script.lock().unwrap();
    assert_eq!(s.manager_calls, 2);
    assert!(
        s.manager_prompts[1].contains("verification failed"),
        "{}",
        s.manager_prompts[1]
    );
}

#[test]
fn script_mode_drives_aider_without_a_manager_model() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![create_file("greet.py", GREET)]);
    let manager = "{ mode: script, steps: [ { action: instruct, argument: \"Create greet.py\" }, { action: finish, argument: done } ] }";
    let job = agent_job(&env, "scripted", manager, VERIFY);
    let out = llm.run(&env, &job);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        log_of(&env, "scripted")
    );
    assert_eq!(llm.script.lock().unwrap().manager_calls, 0);
    assert_eq!(env.show("scripted")["usage"]["manager"]["requests"], 0);
}

/// Aider looks up a model its metadata file lacks in a price map it would fetch from the
/// internet, which the sandbox cannot reach (a DNS timeout, and the error on screen).
#[test]
fn a_model_the_image_does_not_describe_starts_without_fetching_a_price_map() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let manager = "{ mode: script, steps: [ { action: finish, argument: done } ] }";
    let job = agent_job_with_model(&env, "other", "openai/gpt-4.1-nano", manager, "");
    let out = llm.run(&env, &job);
    let transcript = log_of(&env, "other");
    assert_eq!(out.status.code(), Some(0), "{}\n{transcript}", stderr(&out));
    assert!(
        transcript.contains("Model: openai/gpt-4.1-nano"),
        "{transcript}"
    );
    assert!(
        !transcript.contains("raw.githubusercontent.com"),
        "no fetch of the price map: {transcript}"
    );
}

#[test]
fn none_mode_sends_the_task_once_and_finishes_at_the_prompt() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![create_file("greet.py", GREET)]);
    let job = agent_job(&env, "single", "{ mode: none }", VERIFY);
    let out = llm.run(&env, &job);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        log_of(&env, "single")
    );
    assert!(log_of(&env, "single").contains("» Add a function greet(name)"));
}

/// With `manager.mode: none` there is no manager to steer, but a person still can: a message
/// sent while Aider works on the task is typed as a turn of its own before the finish (Aider's
/// request carries it), and `runner show` lists it as delivered, in lines and in JSON.
#[test]
fn a_message_sent_while_a_none_mode_agent_works_is_typed_before_it_finishes() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![create_file("greet.py", GREET)]);
    make_repo(&env.dir.path().join("repo"));
    let job = env.job(
        "single.yaml",
        &format!(
            "name: single\ntask: /run sleep 6\nrepo: ./repo\nagent: {{ model: openai/mock }}\nmanager: {{ mode: none }}\ntimeout: 5m\n{VERIFY}\n"
        ),
    );
    let mut run = Background::run_until(&env, &llm, &job, &[], "single", "» /run sleep 6");
    let message = "Create greet.py with greet(name) returning \"Hello, <name>!\".\nThat is all.";
    let sent = env.run(&["send", "single", message]);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let status = run.wait(Duration::from_secs(180));
    assert!(
        status.success(),
        "{}\n{}\n{}",
        env.show("single"),
        run.stderr(),
        log_of(&env, "single")
    );
    let prompts = llm.script.lock().unwrap().agent_prompts.clone();
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Create greet.py with greet(name)")),
        "{prompts:?}"
    );
    let log = log_of(&env, "single");
    assert!(log.contains("» [operator] Create greet.py"), "{log}");
    let show = stdout(&env.run(&["show", "single"]));
    let listed = show
        .lines()
        .skip_while(|l| *l != "messages:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        listed.contains("attempt 1  delivered")
            && listed
                .ends_with("Create greet.py with greet(name) returning \"Hello, <name>!\". ..."),
        "{show}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["show", "--json", "single"]))).unwrap();
    let m = &json["messages"][0];
    assert_eq!(
        (&m["status"], &m["text"], &m["attempt"]),
        (
            &serde_json::json!("delivered"),
            &serde_json::json!(message),
            &serde_json::json!(1)
        ),
        "{json}"
    );
    assert!(m["delivered_at"].is_string(), "{json}");
}

#[test]
fn repeating_an_action_that_changes_nothing_is_stuck() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let step = "{ action: run, argument: \"true\" }";
    let manager = format!(
        "{{ mode: script, max_turns: 10, steps: [ {step}, {step}, {step}, {step}, {step} ] }}"
    );
    let job = agent_job(&env, "stuck", &manager, "");
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("stuck");
    assert_eq!(show["reason"], "stuck", "{show}");
}

#[test]
fn running_out_of_turns_is_max_turns() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let manager = "{ mode: script, max_turns: 2, steps: [ { action: run, argument: \"echo one\" }, { action: run, argument: \"echo two\" }, { action: run, argument: \"echo three\" } ] }";
    let job = agent_job(&env, "turns", manager, "");
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.show("turns")["reason"], "max_turns");
}

#[test]
fn invalid_manager_json_is_returned_once_then_fails_the_job() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            "sure, let me think".into(),
            "{\"action\": \"dance\"}".into(),
        ],
        vec![],
    );
    let job = agent_job(&env, "badjson", "{ mode: llm, model: manager-mock }", "");
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("badjson");
    assert_eq!(show["reason"], "manager_error", "{show}");
    assert!(
        show["detail"].as_str().unwrap().contains("invalid"),
        "{show}"
    );
    let s = llm.script.lock().unwrap();
    assert_eq!(s.manager_calls, 2, "one retry with the error");
}

#[test]
fn aider_exiting_mid_task_fails_the_job() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let manager = "{ mode: script, steps: [ { action: instruct, argument: \"/exit\" }, { action: finish, argument: x } ] }";
    let job = agent_job(&env, "quits", manager, "");
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("quits");
    assert_eq!(show["reason"], "exit_code", "{show}");
    assert!(
        show["detail"]
            .as_str()
            .unwrap()
            .contains("before the work was finished"),
        "{show}"
    );
    assert!(env.containers().is_empty());
}

/// Starts a daemon with one agent job and waits until the job's turn runs `sleep 120` in the
/// container (so Aider is up and busy). Returns the job id and the daemon's pid.
fn agent_mid_turn(env: &mut Env, llm: &ScriptedLlm, name: &str) -> (String, u32) {
    let manager = "{ mode: script, steps: [ { action: run, argument: \"sleep 120\" }, { action: finish, argument: x } ] }";
    let job = agent_job(env, name, manager, "");
    let out = env.run(&["submit", path_str(&job)]);
    let id = stdout(&out).trim().to_string();
    let daemon = env.spawn_daemon_env(&["--stop-grace", "2s"], &[("OPENAI_BASE_URL", &llm.url)]);
    env.wait_state(&id, "running", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_of(env, &id).contains("» /run sleep 120") {
        assert!(
            Instant::now() < deadline,
            "the turn never started: {}",
            log_of(env, &id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (id, daemon)
}

#[test]
fn cancelling_mid_turn_stops_the_agent() {
    let mut env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let (id, daemon) = agent_mid_turn(&mut env, &llm, "long");
    let started = Instant::now();
    assert!(env.run(&["cancel", &id]).status.success());
    env.wait_state(&id, "cancelled", Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    env.wait_no_containers(Duration::from_secs(10));
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn the_gateway_token_is_on_no_command_line_the_host_can_see() {
    let mut env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let (id, daemon) = agent_mid_turn(&mut env, &llm, "seen");
    // `docker top` prints what the host's `ps` shows every local user.
    let container = env.job_containers().pop().unwrap();
    let top = std::process::Command::new("docker")
        .args(["top", &container, "-eo", "pid,args"])
        .output()
        .unwrap();
    let listing = stdout(&top);
    assert!(listing.contains("aider"), "Aider runs: {listing}");
    assert!(
        !listing.contains("rnr-"),
        "a token on a command line: {listing}"
    );
    assert!(env.run(&["cancel", &id]).status.success());
    env.wait_state(&id, "cancelled", Duration::from_secs(30));
    env.signal_daemon(daemon, "TERM");
}

/// A stand-in for GitHub's pull-request endpoint: records what it was sent.
struct PrStub {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>,
    _runtime: tokio::runtime::Runtime,
}

fn pr_stub() -> PrStub {
    use axum::extract::Path as UrlPath;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/repos/{owner}/{name}/pulls",
        axum::routing::post(
            move |UrlPath((owner, name)): UrlPath<(String, String)>,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    state.lock().unwrap().push((format!("/repos/{owner}/{name}/pulls"), auth, body));
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({"number": 7, "html_url": "https://github.example/org/app/pull/7"})),
                    )
                }
            },
        )
        // The runner first looks for a pull request already open for the branch: none.
        .get(|| async { axum::Json(serde_json::json!([])) }),
    );
    let (url, runtime) = serve_on_loopback(app);
    PrStub {
        url,
        seen,
        _runtime: runtime,
    }
}

#[test]
fn pr_output_pushes_a_branch_from_the_host_and_opens_a_pull_request() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![create_file("greet.py", GREET)]);
    let stub = pr_stub();
    // The "forge": a bare repository the host can push to, at <tmp>/org/app.git.
    let work = env.dir.path().join("repo");
    make_repo(&work);
    let origin = env.dir.path().join("org/app.git");
    let out = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&origin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let manager = "{ mode: script, steps: [ { action: instruct, argument: \"Create greet.py\" }, { action: finish, argument: done } ] }";
    let job = env.job(
        "pr.yaml",
        &format!(
            "name: pr\ntask: Add greet.\nrepo: file://{}\nagent: {{ model: openai/mock }}\nmanager: {manager}\n{VERIFY}\noutput: {{ mode: pr, branch: runner/greet, base: main, api_url: \"{}\", token_env: RUNNER_TEST_FORGE_TOKEN, title: Add greet }}\n",
            origin.display(),
            stub.url
        ),
    );
    // The operator lets the token go to the stub forge (the default is api.github.com only).
    let allow = format!("RUNNER_TEST_FORGE_TOKEN={}", stub.url);
    let out = env
        .cmd()
        .args(["run", path_str(&job), "--allow-pr-token", &allow])
        .env("OPENAI_BASE_URL", &llm.url)
        .env("RUNNER_TEST_FORGE_TOKEN", "forge-token-93c1")
        .output()
        .unwrap();
    let show = env.show("pr");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{show}\n{}",
        stderr(&out),
        log_of(&env, "pr")
    );
    // The branch is on the origin, with Aider's commit on top of the base.
    let file = std::process::Command::new("git")
        .arg("-C")
        .arg(&origin)
        .args(["show", "runner/greet:greet.py"])
        .output()
        .unwrap();
    assert_eq!(stdout(&file), GREET, "{}", stderr(&file));
    let seen = stub.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (path, auth, body) = &seen[0];
    assert_eq!(path, "/repos/org/app/pulls");
    assert_eq!(auth, "Bearer forge-token-93c1");
    assert_eq!(
        (
            body["head"].as_str(),
            body["base"].as_str(),
            body["title"].as_str()
        ),
        (Some("runner/greet"), Some("main"), Some("Add greet"))
    );
    assert_eq!(
        artifact(&show, "pull_request").as_deref(),
        Some("https://github.example/org/app/pull/7")
    );
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            assert!(!String::from_utf8_lossy(&bytes).contains("forge-token-93c1"));
        }
    }
    // The exported results are the runner user's only, like everything in the state dir.
    let mut results = vec![];
    let mut dirs = vec![env.state.join("artifacts")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            }
            results.push((entry.path(), meta.mode() & 0o777));
        }
    }
    assert!(
        results
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|e| e == "patch")),
        "{results:?}"
    );
    assert!(
        results.iter().all(|(_, mode)| mode & 0o077 == 0),
        "{results:?}"
    );
}

#[test]
fn a_secret_printed_in_the_agent_session_is_redacted_from_transcript_and_log() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    let manager = "{ mode: script, steps: [ { action: run, argument: \"cat /run/secrets/RUNNER_TEST_AGENT_SECRET\" }, { action: finish, argument: done } ] }";
    let job = agent_job(
        &env,
        "leaky",
        manager,
        "secrets: [RUNNER_TEST_AGENT_SECRET]",
    );
    let secret = "agent-secret-5b8e2d";
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("OPENAI_BASE_URL", &llm.url)
        .env("RUNNER_TEST_AGENT_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "leaky");
    assert!(!log.contains(secret), "{log}");
    assert!(
        log.contains("[redacted RUNNER_TEST_AGENT_SECRET]"),
        "the output was there, redacted: {log}"
    );
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{file} holds the secret"
            );
        }
    }
}

/// What Aider prints comes in pieces (it prints a command's output as it arrives), and the
/// manager may repeat what it read: the secret stays out of every stored transcript row, the log,
/// the job's detail and events, and the progress lines.
#[test]
fn a_secret_printed_in_two_writes_is_redacted_in_every_stored_row_and_answer() {
    let env = Env::new();
    let secret = "agent-split-secret-4c1d";
    let file = "/run/secrets/RUNNER_TEST_AGENT_SECRET";
    let gave_up = serde_json::json!({
        "progress": format!("read {secret}\u{1b}]0;pwned\u{7}"),
        "thought": "scripted",
        "action": "fail",
        "argument": format!("the key is {secret}"),
    });
    let llm = ScriptedLlm::start(
        vec![
            answer(
                "run",
                &format!("sh -c 'head -c 10 {file}; sleep 0.3; tail -c +11 {file}; echo'"),
            ),
            gave_up.to_string(),
        ],
        vec![],
    );
    let job = agent_job(
        &env,
        "split",
        "{ mode: llm, model: manager-mock, max_turns: 5 }",
        "secrets: [RUNNER_TEST_AGENT_SECRET]",
    );
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("OPENAI_BASE_URL", &llm.url)
        .env("RUNNER_TEST_AGENT_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = log_of(&env, "split");
    assert!(
        log.contains("[redacted RUNNER_TEST_AGENT_SECRET]"),
        "the output was there, redacted: {log}"
    );
    let show = env.show("split");
    assert_eq!(
        show["detail"],
        "the manager gave up: the key is [redacted RUNNER_TEST_AGENT_SECRET]"
    );
    // The transcript rows, in order: a secret split between two rows is in their concatenation.
    let db = rusqlite::Connection::open(env.state.join("runner.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT text FROM transcript ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(rows.len() > 2, "{rows:?}");
    let events: Vec<String> = db
        .prepare("SELECT coalesce(detail, '') FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let answers = [
        ("transcript rows", rows.concat()),
        ("events", events.concat()),
        ("log", log),
        ("run's progress lines", stderr(&out)),
        ("show", stdout(&env.run(&["show", "split"]))),
        ("show --json", show.to_string()),
    ];
    for (what, text) in answers {
        assert!(!text.contains(secret), "{what} holds the secret: {text}");
    }
    // The manager's progress text reaches the terminal (from the turn's event) with its
    // control sequence made visible.
    assert!(!stderr(&out).contains('\u{1b}'), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("turn 2/5 fail: read [redacted RUNNER_TEST_AGENT_SECRET]\\x1b]0;pwned\\x07"),
        "{}",
        stderr(&out)
    );
}

/// A `runner run` of one agent job in the background, killed if the test ends before it does.
struct Background {
    child: std::process::Child,
    /// Where the run's stderr goes, for failure messages.
    stderr: std::path::PathBuf,
}

impl Background {
    /// Starts `runner run JOB` against the scripted upstream, with `vars` set, and waits until
    /// the log of job `name` shows `turn` (the first turn is under way).
    fn run_until(
        env: &Env,
        llm: &ScriptedLlm,
        job: &std::path::Path,
        vars: &[(&str, &str)],
        name: &str,
        turn: &str,
    ) -> Background {
        let stderr = env.dir.path().join("run.stderr");
        let child = env
            .cmd()
            .args(["run", path_str(job)])
            .env("OPENAI_BASE_URL", &llm.url)
            .env("OPENAI_API_KEY", "upstream-key")
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let run = Background { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !log_of(env, name).contains(turn) {
            assert!(
                Instant::now() < deadline,
                "the first turn never started: {}\n{}",
                log_of(env, name),
                run.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        run
    }

    /// What the run printed on stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the run to end, at most `within`.
    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the run did not end");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of rows in the state dir's `messages` table.
fn stored_messages(env: &Env) -> i64 {
    let db = rusqlite::Connection::open(env.state.join("runner.db")).unwrap();
    db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

/// `runner send` from another process reaches a running agent through the store: Aider's next
/// LLM request carries the message (redacted), the manager's next request shows it as the
/// operator's instruction, and the log and events record it. A queued job and a finished one
/// refuse a message with exit 2 and store nothing.
#[test]
fn a_message_sent_to_a_running_agent_reaches_aider_and_the_manager_and_is_recorded() {
    let env = Env::new();
    let secret = "send-secret-7f3a";
    let llm = ScriptedLlm::start(
        vec![
            answer("run", "sleep 6"),
            answer("finish", "greet added as the operator asked"),
        ],
        vec![create_file("greet.py", GREET)],
    );
    let job = agent_job(
        &env,
        "talk",
        "{ mode: llm, model: manager-mock, max_turns: 5 }",
        &format!("{VERIFY}\nsecrets: [RUNNER_TEST_AGENT_SECRET]"),
    );
    let waiting = env.job("waiting.yaml", "name: waiting\ntask: Wait.\n");
    let queued = stdout(&env.run(&["submit", path_str(&waiting)]))
        .trim()
        .to_string();
    let mut run = Background::run_until(
        &env,
        &llm,
        &job,
        &[("RUNNER_TEST_AGENT_SECRET", secret)],
        "talk",
        "» /run sleep 6",
    );
    let message = format!("Operator here: create greet.py now; the key is {secret}");
    let sent = env
        .cmd()
        .args(["send", "talk", &message])
        .env("RUNNER_TEST_AGENT_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let refused = env.run(&["send", &queued, "hello"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("queued"), "{}", stderr(&refused));
    let status = run.wait(Duration::from_secs(180));
    let show = env.show("talk");
    assert!(
        status.success(),
        "{show}\n{}\n{}",
        run.stderr(),
        log_of(&env, "talk")
    );
    let redacted =
        "Operator here: create greet.py now; the key is [redacted RUNNER_TEST_AGENT_SECRET]";
    {
        let s = llm.script.lock().unwrap();
        assert!(
            s.agent_prompts.iter().any(|p| p.contains(redacted)),
            "Aider's request carries the message: {:?}",
            s.agent_prompts
        );
        assert_eq!(s.manager_prompts.len(), 2, "{:?}", s.manager_prompts);
        assert!(
            !s.manager_prompts[0].contains("operator's instructions"),
            "{}",
            s.manager_prompts[0]
        );
        let next = &s.manager_prompts[1];
        assert!(
            next.contains("The operator's instructions since your last turn (already typed into Aider; they take precedence over the task):")
                && next.contains(redacted),
            "{next}"
        );
        assert!(next.contains("greet.py"), "and what Aider did: {next}");
    }
    let log = log_of(&env, "talk");
    assert!(log.contains(&format!("» [operator] {redacted}")), "{log}");
    let events = typed_events(&env, "talk");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["turn", "message", "turn"], "{events:?}");
    assert_eq!(events[1]["text"], redacted);
    let line = stdout(&env.run(&["events", "talk"]));
    assert!(
        line.contains(&format!("message from the operator: {redacted}")),
        "{line}"
    );
    let late = env.run(&["send", "talk", "too late"]);
    assert_eq!(late.status.code(), Some(2), "{}", stderr(&late));
    assert!(stderr(&late).contains("succeeded"), "{}", stderr(&late));
    assert_eq!(stored_messages(&env), 1, "only the delivered message");
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{file} holds the secret"
            );
        }
    }
}

/// The turn, message, pause and resume events of a job, in order.
fn typed_events(env: &Env, job: &str) -> Vec<serde_json::Value> {
    env.events_of(job, &["turn", "message", "paused", "resumed"])
}

/// `runner pause` lets the current turn finish, then the manager issues no turns while two
/// messages go straight to Aider, turn by turn; `runner resume` hands back to the manager,
/// whose next request carries both; the job then finishes. Pausing a finished job exits 2.
#[test]
fn a_paused_agent_takes_messages_turn_by_turn_and_resumes_under_its_manager() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            answer("run", "sleep 6"),
            answer("finish", "the operator did it"),
        ],
        vec![create_file("greet.py", GREET), "Hi, operator.\n".into()],
    );
    let job = agent_job(
        &env,
        "steer",
        "{ mode: llm, model: manager-mock, max_turns: 5 }",
        VERIFY,
    );
    let mut run = Background::run_until(&env, &llm, &job, &[], "steer", "» /run sleep 6");
    let pause = env.run(&["pause", "steer"]);
    assert_eq!(pause.status.code(), Some(0), "{}", stderr(&pause));
    let first = "Create greet.py with greet(name) yourself, please.";
    let second = "Now just say hi.";
    for message in [first, second] {
        let sent = env.run(&["send", "steer", message]);
        assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while typed_events(&env, "steer")
        .iter()
        .filter(|e| e["type"] == "message")
        .count()
        < 2
        || llm.script.lock().unwrap().edit_calls < 2
        || !log_of(&env, "steer").ends_with("> ")
    {
        assert!(
            Instant::now() < deadline,
            "the messages were not both typed: {}",
            log_of(&env, "steer")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        llm.script.lock().unwrap().manager_calls,
        1,
        "a paused manager is not asked"
    );
    assert_eq!(env.state_of("steer"), "running");
    let resume = env.run(&["resume", "steer"]);
    assert_eq!(resume.status.code(), Some(0), "{}", stderr(&resume));
    let status = run.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "{}\n{}\n{}",
        env.show("steer"),
        run.stderr(),
        log_of(&env, "steer")
    );
    {
        let s = llm.script.lock().unwrap();
        assert!(s.agent_prompts[0].contains(first), "{:?}", s.agent_prompts);
        assert!(s.agent_prompts[1].contains(second), "{:?}", s.agent_prompts);
        let next = &s.manager_prompts[1];
        assert!(next.contains(&format!("- {first}\n- {second}\n")), "{next}");
        assert!(
            next.contains("Hi, operator."),
            "what happened meanwhile: {next}"
        );
    }
    let events = typed_events(&env, "steer");
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["turn", "paused", "message", "message", "resumed", "turn"],
        "{events:?}"
    );
    let late = env.run(&["pause", "steer"]);
    assert_eq!(late.status.code(), Some(2), "{}", stderr(&late));
}

/// The id of a running container, by name.
fn container_id(name: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `ready` holds, checking every 50 ms; the job's log and record say why not.
fn wait_for(env: &Env, job: &str, what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}\n{}",
            env.show(job),
            log_of(env, job)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_agent_job_survives_a_daemon_sigkill_between_turns_and_mid_turn_in_the_same_container() {
    let mut env = Env::new();
    let farewell = "def farewell(name):\n    return f\"Bye, {name}!\"\n";
    let llm = ScriptedLlm::start(
        vec![
            answer(
                "instruct",
                "Create greet.py with greet(name) returning 'Hello, <name>!'.",
            ),
            answer("run", "echo between-turns-$((6*7))"),
            answer(
                "instruct",
                "Create farewell.py with farewell(name) returning 'Bye, <name>!'.",
            ),
            answer("finish", "greet and farewell added"),
        ],
        vec![
            create_file("greet.py", GREET),
            // Aider is still receiving this answer when the runner is killed.
            format!("{PAUSE}{PAUSE}{}", create_file("farewell.py", farewell)),
        ],
    );
    {
        let mut s = llm.script.lock().unwrap();
        s.manager_by_turn = true;
        s.manager_delays = vec![(2, Duration::from_secs(5))];
        s.edits_by_prompt = Some(Default::default());
    }
    let job = agent_job(
        &env,
        "survivor",
        "{ mode: llm, model: manager-mock, max_turns: 8 }",
        VERIFY,
    );
    let submitted = env.run(&["submit", path_str(&job)]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let id = stdout(&submitted).trim().to_string();
    let vars = [
        ("OPENAI_BASE_URL", llm.url.as_str()),
        ("OPENAI_API_KEY", "upstream-key"),
    ];
    let turns_asked = || llm.script.lock().unwrap().manager_turns.clone();
    let edits_asked = || llm.script.lock().unwrap().edit_calls;

    // Between turns: the manager's call for turn 2 is in flight.
    let daemon = env.spawn_daemon_env(&[], &vars);
    wait_for(
        &env,
        &id,
        "the manager call of turn 2",
        Duration::from_secs(180),
        || turns_asked().contains(&2),
    );
    let container = env.job_containers().pop().expect("the agent's container");
    let first = container_id(&container);
    env.signal_daemon(daemon, "KILL");

    // Mid-turn: Aider is receiving the answer to turn 3's instruction.
    let daemon = env.spawn_daemon_env(&[], &vars);
    wait_for(
        &env,
        &id,
        "Aider's call of turn 3",
        Duration::from_secs(180),
        || edits_asked() >= 2,
    );
    env.signal_daemon(daemon, "KILL");
    assert_eq!(
        container_id(&container),
        first,
        "the same container runs on"
    );

    let daemon = env.spawn_daemon_env(&[], &vars);
    env.wait_state(&id, "succeeded", Duration::from_secs(180));
    let show = env.show(&id);
    assert_eq!(
        show["attempts"].as_array().unwrap().len(),
        1,
        "the same attempt: {show}"
    );
    let log = log_of(&env, &id);
    let once = |text: &str| {
        assert_eq!(log.matches(text).count(), 1, "{text:?} once in:\n{log}");
    };
    once("Aider v0.86.2");
    once("» Create greet.py");
    once("» /run echo between-turns");
    once("» Create farewell.py");
    // No gap: what Aider printed in each turn is there, in order.
    let milestones = [
        "Applied edit to greet.py",
        "between-turns-42",
        "Applied edit to farewell.py",
    ];
    let at: Vec<usize> = milestones
        .iter()
        .map(|m| log.find(m).unwrap_or_else(|| panic!("{m:?} in:\n{log}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in order:\n{log}");
    {
        let s = llm.script.lock().unwrap();
        assert_eq!(
            s.manager_turns,
            [1, 2, 2, 3, 4],
            "only the manager call in flight at the first kill was made again"
        );
        let asked_farewell = s
            .agent_prompts
            .iter()
            .filter(|p| p.contains("farewell"))
            .count();
        assert_eq!(
            (s.agent_prompts.len(), asked_farewell),
            (3, 2),
            "only Aider's call in flight at the second kill was made again: {:?}",
            s.agent_prompts
        );
    }
    let turns: Vec<u64> = typed_events(&env, &id)
        .iter()
        .filter(|e| e["type"] == "turn")
        .map(|e| e["turn"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, [1, 2, 3, 4], "each turn recorded once");
    let patch =
        std::fs::read_to_string(artifact(&show, "patch").expect("a patch artifact")).unwrap();
    assert!(
        patch.contains("+def greet(name):") && patch.contains("+def farewell(name):"),
        "{patch}"
    );
    env.signal_daemon(daemon, "TERM");
    env.wait_no_containers(Duration::from_secs(30));
}

/// The provider limits the rate of the manager's first call and of Aider's first edit call
/// (429, `Retry-After: 2`): the gateway waits each out and sends it again, neither the manager
/// nor Aider sees a failure, the job succeeds and its events show both waits.
#[test]
fn rate_limits_on_manager_and_agent_calls_are_waited_out_and_the_job_succeeds() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            answer("instruct", "Create greet.py with greet(name)."),
            answer("finish", "greet added"),
        ],
        vec![create_file("greet.py", GREET)],
    );
    {
        let mut s = llm.script.lock().unwrap();
        s.throttle_manager = 1;
        s.throttle_edits = 1;
    }
    let job = agent_job(
        &env,
        "limited",
        "{ mode: llm, model: manager-mock }",
        VERIFY,
    );
    let out = llm.run(&env, &job);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        log_of(&env, "limited")
    );
    let waits: Vec<_> = env
        .events_of("limited", &["waiting"])
        .into_iter()
        .map(|w| {
            (
                w["role"].as_str().unwrap().to_string(),
                w["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        waits,
        [("manager".to_string(), 429), ("agent".to_string(), 429)],
        "{}",
        stdout(&env.run(&["events", "limited"]))
    );
    let lines = stdout(&env.run(&["events", "limited"]));
    assert!(lines.contains("waiting for the provider until "), "{lines}");
    let s = llm.script.lock().unwrap();
    assert_eq!((s.throttled, s.manager_calls, s.edit_calls), (2, 2, 1));
    assert!(
        stderr(&out).contains("waiting for the provider until"),
        "run's progress shows the wait: {}",
        stderr(&out)
    );
}

/// A manager model that never answers cannot hold the job until its timeout: each call ends at
/// `manager.call_timeout`, is asked once more, and the job ends `manager_error` saying so.
#[test]
fn a_manager_that_never_answers_ends_manager_error_within_its_deadline() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![]);
    llm.script.lock().unwrap().manager_silent = true;
    let job = agent_job(
        &env,
        "silent",
        "{ mode: llm, model: manager-mock, call_timeout: 3s }",
        "",
    );
    let started = Instant::now();
    let out = llm.run(&env, &job);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let show = env.show("silent");
    assert_eq!(show["reason"], "manager_error", "{show}");
    assert!(
        show["detail"]
            .as_str()
            .unwrap()
            .contains("ran past its 3s deadline (manager.call_timeout)"),
        "{show}"
    );
    assert_eq!(llm.script.lock().unwrap().manager_calls, 2, "one retry");
    // Aider's start, two 3 s calls and the clean-up, far from the job's 5 m timeout.
    assert!(took < Duration::from_secs(90), "{took:?}");
}

/// A key the provider refuses: Aider's call gets the 401, the gateway stops the attempt, and
/// the job ends `provider_error` with a detail naming the variable to set.
#[test]
fn a_refused_key_ends_the_job_with_a_detail_naming_the_fix() {
    let env = Env::new();
    let llm = ScriptedLlm::start(vec![], vec![create_file("greet.py", GREET)]);
    llm.script.lock().unwrap().refuse_all = true;
    let job = agent_job(&env, "refused", "{ mode: none }", "");
    let started = Instant::now();
    let out = llm.run(&env, &job);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let show = env.show("refused");
    assert_eq!(
        show["reason"],
        "provider_error",
        "{show}\n{}",
        log_of(&env, "refused")
    );
    let detail = show["detail"].as_str().unwrap();
    assert!(
        detail.contains("HTTP 401: Incorrect API key provided")
            && detail.contains("set OPENAI_API_KEY where the runner runs to a valid key for"),
        "{detail}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
