//! The gateway against a real OpenAI-compatible server: llama.cpp's `llama-server` serving
//! SmolLM2-135M-Instruct, both from PyPI (scripts/llama-server.sh). The model is far too small to
//! write code; these tests check the plumbing: that the tokens the runner meters are the server's
//! own counts, and that an answer that never ends is capped.
//!
//! Run them with `make test-llm`, which builds and starts the server (on an ephemeral loopback
//! port, with `--ignore-eos`, so that every answer runs until something caps it: a runaway model
//! on demand) and runs `cargo test --test llm_real -- --ignored`, one test at a
//! time, with `RUNNER_TEST_LLM_SERVER=http://127.0.0.1:PORT`. Under a plain `cargo test` or `make test` they
//! are listed as ignored, never passed; run with `--ignored` but without the variable, they fail
//! and say how to run them.
//!
//! The server's counts come from its `/metrics` (`--metrics`): the prompt tokens it read
//! (processed and taken from its cache) and the tokens it generated, before and after a job. Every
//! test runs alone against the server (`--test-threads 1`), so the difference is that job's calls.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// The server's base URL, `http://127.0.0.1:PORT`.
fn server() -> String {
    std::env::var("RUNNER_TEST_LLM_SERVER")
        .expect("RUNNER_TEST_LLM_SERVER is not set: run these tests with `make test-llm`")
}

/// Tokens the server has counted so far: (prompt, completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    prompt: u64,
    completion: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            prompt: self.prompt - earlier.prompt,
            completion: self.completion - earlier.completion,
        }
    }
}

/// A plain HTTP/1.0 GET on the loopback server; the body.
fn get(path: &str) -> String {
    let base = server();
    let addr = base.strip_prefix("http://").expect("an http:// URL");
    let mut stream = std::net::TcpStream::connect(addr).expect("llama-server answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_string()
}

/// The server's own token counters, from its Prometheus metrics (`llamacpp:NAME VALUE` lines).
fn server_counts() -> Counts {
    let text = get("/metrics");
    let value = |name: &str| -> u64 {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("llamacpp:{name} ")))
            .unwrap_or_else(|| panic!("no llamacpp:{name} in the server's metrics: {text}"));
        line.trim().parse::<f64>().unwrap() as u64
    };
    Counts {
        prompt: value("prompt_tokens_total") + value("prompt_tokens_cached_total"),
        completion: value("tokens_predicted_total"),
    }
}

/// What the server counted for the calls `work` made. The counters move when the server has sent
/// its answer, so a counter still short of `expected` is read again for a moment.
fn server_counts_during(work: impl FnOnce()) -> Counts {
    let before = server_counts();
    work();
    let mut last = server_counts() - before;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = server_counts() - before;
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// A role's metered tokens in `runner show --json`: (prompt, completion).
fn metered(job: &serde_json::Value, role: &str) -> Counts {
    let usage = &job["usage"][role];
    Counts {
        prompt: usage["prompt_tokens"].as_u64().unwrap(),
        completion: usage["completion_tokens"].as_u64().unwrap(),
    }
}

/// Python every job script starts with: `post(body)` → the response (or the HTTP error), and
/// `events(response)` → the decoded `data:` events of a stream, with "[DONE]" as the string.
const CLIENT: &str = r#"
import json, os, sys, urllib.error, urllib.request
BASE = os.environ["OPENAI_BASE_URL"]
def post(body):
    body = dict({"model": "smollm2", "temperature": 0,
                 "messages": [{"role": "user", "content": "Name three colours."}]}, **body)
    req = urllib.request.Request(BASE + "/chat/completions", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                 "Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=600)
    except urllib.error.HTTPError as e:
        return e
def events(r):
    for line in r:
        line = line.decode().strip()
        if line.startswith("data: "):
            yield line[6:] if line == "data: [DONE]" else json.loads(line[6:])
"#;

/// A command job on `network: llm` running `CLIENT` and `script` with python3.
fn llm_job(env: &Env, name: &str, script: &str, extra: &str) -> std::path::PathBuf {
    let code = format!("{CLIENT}\n{script}");
    let indented: String = code.lines().map(|l| format!("    {l}\n")).collect();
    env.job(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nimage: {BASE_IMAGE}\nnetwork: llm\ntimeout: 10m\n{extra}\ncommand:\n  - python3\n  - -c\n  - |\n{indented}"
        ),
    )
}

/// Runs the job files with the gateway's upstream set to the server.
fn run(env: &Env, jobs: &[&std::path::Path]) -> std::process::Output {
    env.cmd()
        .arg("run")
        .args(jobs)
        .env("OPENAI_BASE_URL", format!("{}/v1", server()))
        .env("OPENAI_API_KEY", "not-checked-by-llama-server")
        .output()
        .unwrap()
}

/// The JSON after `tag ` on the log's line that starts with it.
fn logged(log: &str, tag: &str) -> serde_json::Value {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag} ")))
        .unwrap_or_else(|| panic!("no `{tag}` line in the log: {log}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{tag}: {e}: {line}"))
}

#[test]
#[ignore = "needs llama-server: run `make test-llm`"]
fn a_plain_call_is_metered_with_the_servers_own_counts() {
    let env = Env::new();
    let job = llm_job(
        &env,
        "plain",
        r#"
answer = json.load(post({"max_tokens": 40}))
print("usage", json.dumps(answer["usage"]))
print("finish", json.dumps(answer["choices"][0]["finish_reason"]))
"#,
        "",
    );
    let counted = server_counts_during(|| {
        let out = run(&env, &[&job]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
    let log = log_of(&env, "plain");
    let usage = logged(&log, "usage");
    let job = env.show("plain");
    eprintln!("plain call: server counted {counted:?}, its answer said {usage}");
    assert_eq!(job["usage"]["agent"]["requests"], 1, "{job}");
    assert_eq!(metered(&job, "agent"), counted, "{job}");
    assert_eq!(usage["prompt_tokens"], counted.prompt, "{log}");
    assert_eq!(usage["completion_tokens"], counted.completion, "{log}");
    // --ignore-eos: the answer runs to its max_tokens.
    assert_eq!(counted.completion, 40);
    assert_eq!(logged(&log, "finish"), "length", "{log}");
}

/// Runs the streaming job `name` (its script prints each event as `event <json>`): what the
/// server counted meanwhile, the job's log, and the events, which must end with `[DONE]`.
fn run_streaming(
    env: &Env,
    job: &std::path::Path,
    name: &str,
) -> (Counts, String, Vec<serde_json::Value>) {
    let counted = server_counts_during(|| {
        let out = run(env, &[job]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
    let log = log_of(env, name);
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| l.strip_prefix("event "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.last(), Some(&serde_json::json!("[DONE]")), "{log}");
    (counted, log, events)
}

#[test]
#[ignore = "needs llama-server: run `make test-llm`"]
fn a_streamed_call_that_asks_for_usage_is_metered_with_the_servers_own_counts() {
    let env = Env::new();
    let job = llm_job(
        &env,
        "asks",
        r#"
r = post({"max_tokens": 40, "stream": True, "stream_options": {"include_usage": True}})
for e in events(r):
    print("event", json.dumps(e))
"#,
        "",
    );
    let (counted, log, events) = run_streaming(&env, &job, "asks");
    let usage = events
        .iter()
        .find(|e| e.get("usage").is_some_and(|u| !u.is_null()))
        .map(|e| &e["usage"])
        .unwrap_or_else(|| panic!("the usage the client asked for reached it: {log}"));
    let job = env.show("asks");
    assert_eq!(job["usage"]["agent"]["requests"], 1, "{job}");
    assert_eq!(metered(&job, "agent"), counted, "{job}");
    assert_eq!(usage["prompt_tokens"], counted.prompt, "{log}");
    assert_eq!(usage["completion_tokens"], counted.completion, "{log}");
    assert_eq!(counted.completion, 40);
}

#[test]
#[ignore = "needs llama-server: run `make test-llm`"]
fn a_streamed_call_is_metered_with_the_servers_own_counts_and_reaches_the_client_unchanged() {
    let env = Env::new();
    let job = llm_job(
        &env,
        "streamed",
        r#"
r = post({"max_tokens": 40, "stream": True})
for e in events(r):
    print("event", json.dumps(e))
"#,
        "",
    );
    let (counted, log, events) = run_streaming(&env, &job, "streamed");
    let chunks = &events[..events.len() - 1];
    assert!(
        chunks
            .iter()
            .all(|e| e["choices"].as_array().is_some_and(|c| c.len() == 1)
                && e.get("usage").is_none_or(|u| u.is_null())),
        "no usage chunk the client did not ask for: {log}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty(), "{log}");
    let job = env.show("streamed");
    let agent = &job["usage"]["agent"];
    eprintln!("streamed call: server counted {counted:?}, the runner metered {agent}");
    assert_eq!(agent["requests"], 1, "{job}");
    assert_eq!(metered(&job, "agent"), counted, "{job}");
    assert_eq!(agent["estimated_requests"], 0, "{job}");
    assert_eq!(counted.completion, 40);
}

/// A job whose one call names no max_tokens (with --ignore-eos the server would write until its
/// context is full) under a budget of 120 tokens, then calls again: what the server counted, the
/// job, its log.
fn runaway_job(env: &Env) -> (Counts, serde_json::Value, String) {
    let job = llm_job(
        env,
        "runaway",
        r#"
answer = json.load(post({}))
print("usage", json.dumps(answer["usage"]))
print("finish", json.dumps(answer["choices"][0]["finish_reason"]))
print("second", post({}).status, flush=True)
"#,
        "budget: { tokens: 120 }",
    );
    let counted = server_counts_during(|| {
        let out = run(env, &[&job]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    });
    let job = env.show("runaway");
    eprintln!(
        "runaway call: server counted {counted:?}, job {}",
        job["usage"]
    );
    (counted, job, log_of(env, "runaway"))
}

#[test]
#[ignore = "needs llama-server: run `make test-llm`"]
fn a_runaway_answer_is_capped_by_the_budget_and_the_job_ends_budget() {
    let env = Env::new();
    let (_, job, log) = runaway_job(&env);
    assert_eq!(job["reason"], "budget", "{job}");
    assert!(
        job["detail"]
            .as_str()
            .unwrap()
            .contains("budget (120 tokens)"),
        "{job}"
    );
    assert_eq!(logged(&log, "finish"), "length", "capped, not ended: {log}");
    let usage = metered(&job, "agent");
    assert!(usage.prompt + usage.completion <= 120, "{job}");
    assert_eq!(
        job["usage"]["agent"]["requests"], 1,
        "the second call was refused: {job}"
    );
    assert!(!log.contains("second 200"), "{log}");
}

/// The budget holds against the server's own count, not only the runner's: the gateway's guess of
/// the prompt allows for what SmolLM2's chat template adds (a default system prompt).
#[test]
#[ignore = "needs llama-server: run `make test-llm`"]
fn a_runaway_answers_server_count_stays_within_the_budget_and_is_what_is_recorded() {
    let env = Env::new();
    let (counted, job, _) = runaway_job(&env);
    assert_eq!(job["reason"], "budget", "{job}");
    assert!(counted.prompt + counted.completion <= 120, "{counted:?}");
    assert_eq!(metered(&job, "agent"), counted, "{job}");
}

#[test]
#[ignore = "needs llama-server and the runner/aider image: run `make test-llm`"]
fn a_runaway_manager_answer_is_capped_and_the_job_ends_manager_error() {
    let env = Env::new();
    make_repo(&env.dir.path().join("repo"));
    let job = env.job(
        "manager.yaml",
        "name: manager\ntask: Add a function greet(name) to greet.py.\nrepo: ./repo\n\
         agent: { model: openai/smollm2 }\n\
         manager: { mode: llm, model: smollm2, max_turns: 3, max_tokens: 24, call_timeout: 10m }\n\
         timeout: 30m\n",
    );
    let started = std::time::Instant::now();
    let counted = server_counts_during(|| {
        let out = run(&env, &[&job]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    });
    let job = env.show("manager");
    eprintln!(
        "runaway manager: {:?}, server counted {counted:?}, job {} {}",
        started.elapsed(),
        job["detail"],
        job["usage"]
    );
    assert_eq!(job["reason"], "manager_error", "{job}");
    let detail = job["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("manager.max_tokens"), "{detail}");
    // One answer and one retry, each cut at 24 tokens; Aider never called the model.
    assert_eq!(job["usage"]["manager"]["requests"], 2, "{job}");
    let manager = metered(&job, "manager");
    assert_eq!(manager.completion, 2 * 24, "{job}");
    assert_eq!(job["usage"]["agent"]["requests"], 0, "{job}");
    assert_eq!(manager, counted, "{job}");
}
