//! The LLM gateway end to end: command jobs on `network: llm` in real containers call the runner's
//! gateway, which forwards to a scripted upstream on a loopback port.

mod common;
mod upstream;

use common::*;
use std::time::{Duration, Instant};
use upstream::Upstream;

const UPSTREAM_KEY: &str = "upstream-key-4d2f9a";

/// Python helpers every script starts with: `call(stream, key)` → (status, text).
const CLIENT: &str = r#"
import json, os, socket, sys, time, urllib.error, urllib.request
BASE = os.environ["OPENAI_BASE_URL"]
def call(stream=False, key=None, model="gpt-4o-mini", content="say something"):
    body = json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()
    req = urllib.request.Request(BASE + "/chat/completions", data=body, headers={
        "Authorization": "Bearer " + (key or os.environ["OPENAI_API_KEY"]),
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            if not stream:
                return r.status, json.load(r)["choices"][0]["message"]["content"]
            parts, start = [], time.time()
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    parts.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
                    print("chunk-at %.2f" % (time.time() - start), flush=True)
            return r.status, "".join(parts)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
"#;

fn llm_job(name: &str, script: &str, extra: &str) -> String {
    let code = format!("{CLIENT}\n{script}");
    let indented: String = code.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "name: {name}\nimage: {BASE_IMAGE}\nnetwork: llm\n{extra}\ncommand:\n  - python3\n  - -c\n  - |\n{indented}"
    )
}

fn runner_with_upstream(env: &Env, upstream: &Upstream, args: &[&str]) -> std::process::Output {
    env.cmd()
        .args(args)
        .env("OPENAI_BASE_URL", &upstream.url)
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap()
}

#[test]
fn llm_job_reaches_the_gateway_and_nothing_else() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
print("answer", *call())
print("bogus", call(key="not-a-token")[0])
try:
    socket.getaddrinfo("example.com", 80)
    print("dns-open")
except OSError:
    print("dns-blocked")
for host in ["1.1.1.1", "172.17.0.1"]:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, 80)); print("tcp-open", host)
    except OSError:
        print("tcp-blocked", host)
print("key-in-env", os.environ["OPENAI_API_KEY"] == "upstream-key-4d2f9a")
"#;
    let job = env.job("llm.yaml", &llm_job("llm", script, ""));
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "llm");
    assert!(log.contains("answer 200 answer-1"), "{log}");
    assert!(log.contains("bogus 401"), "unknown token is refused: {log}");
    assert!(log.contains("dns-blocked"), "{log}");
    assert!(log.contains("tcp-blocked 1.1.1.1"), "{log}");
    assert!(log.contains("tcp-blocked 172.17.0.1"), "{log}");
    assert!(log.contains("key-in-env False"), "{log}");
    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.calls, 1, "the bogus token never reached the upstream");
    assert_eq!(seen.authorizations, vec![format!("Bearer {UPSTREAM_KEY}")]);
    drop(seen);
    let job = env.show("llm");
    let agent = &job["usage"]["agent"];
    assert_eq!(agent["requests"], 1, "{job}");
    assert_eq!(agent["prompt_tokens"], 30);
    assert_eq!(agent["completion_tokens"], 10);
    // gpt-4o-mini: 30 * 0.15/1e6 + 10 * 0.60/1e6
    assert!(
        (agent["cost_usd"].as_f64().unwrap() - 0.0000105).abs() < 1e-9,
        "{agent}"
    );
    assert_eq!(job["attempts"][0]["usage"]["agent"]["requests"], 1);
    assert_eq!(job["usage"]["manager"]["requests"], 0);
    assert_eq!(
        env.networks(),
        Vec::<String>::new(),
        "`runner run` removes its LLM network when it is done"
    );
}

#[test]
fn container_never_holds_the_upstream_key() {
    let env = Env::new();
    let upstream = Upstream::start();
    let job = env.job(
        "hold.yaml",
        &llm_job("hold", "print(call()[0]); time.sleep(3)", ""),
    );
    let mut child = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("OPENAI_BASE_URL", &upstream.url)
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inspected = 0;
    while Instant::now() < deadline && inspected == 0 {
        for name in env.containers() {
            let out = std::process::Command::new("docker")
                .args(["inspect", &name])
                .output()
                .unwrap();
            if out.status.success() {
                let text = stdout(&out);
                assert!(
                    !text.contains(UPSTREAM_KEY),
                    "docker inspect shows the upstream key"
                );
                assert!(
                    text.contains("OPENAI_API_KEY=rnr-"),
                    "a per-attempt token instead"
                );
                inspected += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inspected > 0, "container never seen");
    assert!(child.wait().unwrap().success());
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            assert!(!String::from_utf8_lossy(&bytes).contains(UPSTREAM_KEY));
        }
    }
}

#[test]
fn tight_budget_ends_the_job_with_reason_budget_after_at_most_one_more_call() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = "for i in range(6):\n    print('call', i, call()[0], flush=True)\n";
    let job = env.job(
        "budget.yaml",
        &llm_job("budget", script, "budget: { tokens: 50 }"),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let job = env.show("budget");
    assert_eq!(job["reason"], "budget", "{job}");
    // 40 tokens a call: the first stays under 50, the second crosses it, the third is refused.
    assert_eq!(upstream.calls(), 2);
    assert_eq!(job["usage"]["agent"]["requests"], 2);
    let log = log_of(&env, "budget");
    assert!(log.contains("call 2 402"), "{log}");
}

#[test]
fn recorded_answers_replay_with_the_upstream_stopped() {
    let env = Env::new();
    let mut upstream = Upstream::start();
    let cassette = env.dir.path().join("answers.jsonl");
    let script = "print('plain', *call())\nprint('streamed', *call(stream=True))\n";
    let record = env.job(
        "record.yaml",
        &llm_job(
            "rec",
            script,
            &format!("llm: {{ record: {} }}", path_str(&cassette)),
        ),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&record)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = log_of(&env, "rec");
    assert!(recorded.contains("plain 200 answer-1"), "{recorded}");
    assert!(
        recorded.contains("streamed 200 part0-2 part1-2 part2-2"),
        "{recorded}"
    );
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert!(
        !text.contains(UPSTREAM_KEY) && !text.contains("rnr-"),
        "no secrets in the cassette"
    );

    upstream.stop();
    let replay = env.job(
        "replay.yaml",
        &llm_job(
            "rep",
            script,
            &format!("llm: {{ replay: {} }}", path_str(&cassette)),
        ),
    );
    let out = env
        .cmd()
        .args(["run", path_str(&replay)])
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let replayed = log_of(&env, "rep");
    let answers = |log: &str| {
        log.lines()
            .filter(|l| !l.starts_with("chunk-at"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(answers(&replayed), answers(&recorded));
    assert_eq!(env.show("rep")["usage"]["agent"]["requests"], 2);
}

#[test]
fn replay_beyond_the_cassette_is_an_error_naming_it() {
    let env = Env::new();
    let cassette = env.dir.path().join("empty.jsonl");
    std::fs::write(&cassette, "").unwrap();
    let job = env.job(
        "short.yaml",
        &llm_job(
            "short",
            "print(*call())",
            &format!("llm: {{ replay: {} }}", path_str(&cassette)),
        ),
    );
    let out = env.run(&["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "short");
    assert!(
        log.contains("500") && log.contains("empty.jsonl") && log.contains("holds 0 agent answers"),
        "{log}"
    );
}

#[test]
fn streamed_answer_arrives_incrementally() {
    let env = Env::new();
    let upstream = Upstream::start();
    let job = env.job(
        "stream.yaml",
        &llm_job("stream", "print('got', *call(stream=True))", ""),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "stream");
    let times: Vec<f64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("chunk-at "))
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 3, "{log}");
    assert!(
        times[2] - times[0] >= 0.6,
        "chunks arrived together, not as sent: {times:?}"
    );
    assert!(log.contains("got 200 part0-1 part1-1 part2-1"), "{log}");
    let usage = &env.show("stream")["usage"]["agent"];
    assert_eq!(usage["requests"], 1);
    assert!(
        usage["completion_tokens"].as_u64().unwrap() > 0,
        "estimated from the stream: {usage}"
    );
}

#[test]
fn upstream_errors_pass_through_and_huge_requests_are_refused() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
status, text = call(model="overloaded")
print("upstream", status, json.loads(text)["error"]["message"])
print("huge", call(content="x" * (9 << 20))[0])
"#;
    let job = env.job("err.yaml", &llm_job("err", script, ""));
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "err");
    assert!(log.contains("upstream 503 upstream is overloaded"), "{log}");
    assert!(log.contains("huge 413"), "{log}");
    assert_eq!(
        upstream.calls(),
        1,
        "the huge request never reached the upstream"
    );
}
