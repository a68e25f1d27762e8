//! The LLM gateway end to end: command jobs on `network: llm` in real containers call the runner's
//! gateway, which forwards to a scripted upstream on a loopback port.

mod common;
mod upstream;

use common::*;
use std::time::{Duration, Instant};
use upstream::{token_stream, Upstream};

const UPSTREAM_KEY: &str = "upstream-key-4d2f9a";

/// Python helpers every script starts with: `call(stream, key)` → (status, text).
const CLIENT: &str = r#"
import json, os, socket, sys, time, urllib.error, urllib.request
BASE = os.environ["OPENAI_BASE_URL"]
def call(stream=False, key=None, model="gpt-4o-mini", content="say something", extra=None):
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
    body = json.dumps(dict(body, **(extra or {}))).encode()
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
                    event = json.loads(line[6:])
                    if not event["choices"]:
                        parts.append("[usage]")
                        continue
                    text = event["choices"][0]["delta"].get("content")
                    if text:
                        parts.append(text)
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
    upstream_cmd(env, upstream, args).output().unwrap()
}

/// `runner ARGS...` pointed at the scripted upstream, started in the background (stderr
/// discarded).
fn spawn_with_upstream(env: &Env, upstream: &Upstream, args: &[&str]) -> std::process::Child {
    upstream_cmd(env, upstream, args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The runner command whose upstream is `upstream`, with its real key.
fn upstream_cmd(env: &Env, upstream: &Upstream, args: &[&str]) -> std::process::Command {
    let mut cmd = env.cmd();
    cmd.args(args)
        .env("OPENAI_BASE_URL", &upstream.url)
        .env("OPENAI_API_KEY", UPSTREAM_KEY);
    cmd
}

/// Every IPv4 address of this host (each bridge's included), as `ip` lists them.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip (iproute2)");
    let text = stdout(&out);
    let addrs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            Some(words.next()?.split('/').next()?.to_string())
        })
        .collect();
    assert!(addrs.len() >= 2, "loopback and docker0 at least: {text}");
    addrs
}

#[test]
fn llm_job_reaches_the_gateway_and_nothing_else() {
    let env = Env::new();
    let upstream = Upstream::start();
    // A host service listening on every address, as careless services do.
    let service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    service.set_nonblocking(true).unwrap();
    let port = service.local_addr().unwrap().port();
    let addrs = host_addresses().join(" ");
    let script = format!(
        r#"
print("answer", *call())
print("bogus", call(key="not-a-token")[0])
print("ifaces", " ".join(sorted(os.listdir("/sys/class/net"))))
routes = open("/proc/net/route").read().splitlines()[1:]
print("routes", len(routes))
try:
    socket.getaddrinfo("example.com", 80)
    print("dns-open")
except OSError:
    print("dns-blocked")
# Every host address (and this container's default gateway, if it had one) on the host
# service's port and on a common one; and other ports next to the relay's.
targets = [(a, p) for a in "{addrs} 1.1.1.1".split() for p in ({port}, 80)]
for r in routes:
    gw = r.split()[2]
    targets.append((socket.inet_ntoa(bytes.fromhex(gw)[::-1]), {port}))
targets += [("127.0.0.1", 8081), ("127.0.0.1", 22)]
for target in targets:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(target); print("tcp-open", *target)
    except OSError:
        print("tcp-blocked", *target)
try:
    s = socket.socket(socket.AF_INET6); s.settimeout(2)
    s.connect(("ff02::1%eth0", {port})); print("tcp-open ipv6")
except OSError:
    print("tcp-blocked ipv6")
print("key-in-env", os.environ["OPENAI_API_KEY"] == "upstream-key-4d2f9a")
"#
    );
    let job = env.job("llm.yaml", &llm_job("llm", &script, ""));
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "llm");
    assert!(log.contains("answer 200 answer-1"), "{log}");
    assert!(log.contains("bogus 401"), "unknown token is refused: {log}");
    assert!(log.contains("ifaces lo\n"), "loopback only: {log}");
    assert!(log.contains("routes 0"), "no route anywhere: {log}");
    assert!(log.contains("dns-blocked"), "{log}");
    assert!(
        !log.contains("tcp-open"),
        "only the gateway is reachable: {log}"
    );
    assert!(
        log.contains(&format!("tcp-blocked 172.17.0.1 {port}")),
        "{log}"
    );
    assert!(log.contains("key-in-env False"), "{log}");
    assert!(
        matches!(service.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host service was reached"
    );
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
    let by_model = &job["usage"]["by_model"];
    assert_eq!(by_model.as_array().map(Vec::len), Some(1), "{by_model}");
    assert_eq!(
        (
            &by_model[0]["role"],
            &by_model[0]["model"],
            &by_model[0]["requests"]
        ),
        (&"agent".into(), &"gpt-4o-mini".into(), &1.into()),
        "the model the call named: {by_model}"
    );
    assert_eq!(env.containers(), Vec::<String>::new(), "relays are removed");
    assert_eq!(env.networks(), Vec::<String>::new(), "no network is made");
}

#[test]
fn a_token_is_accepted_only_from_its_own_attempts_container() {
    let env = Env::new();
    let upstream = Upstream::start();
    // Each job waits for the test to hand it the other job's token, then calls with both.
    let script = r#"
deadline = time.time() + 90
while not os.path.exists("/tmp/go") and time.time() < deadline:
    time.sleep(0.1)
other = open("/tmp/token").read().strip()
print("other", call(key=other)[0], flush=True)
print("own", call()[0], flush=True)
"#;
    let a = env.job("a.yaml", &llm_job("a", script, ""));
    let b = env.job("b.yaml", &llm_job("b", script, ""));
    let mut child = spawn_with_upstream(&env, &upstream, &["run", path_str(&a), path_str(&b)]);
    let token_of = |name: &str| -> Option<String> {
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{json .Config.Env}}", name])
            .output()
            .ok()?;
        let vars: Vec<String> = serde_json::from_slice(&out.stdout).ok()?;
        vars.iter()
            .find_map(|v| v.strip_prefix("OPENAI_API_KEY=").map(str::to_string))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let jobs = env.job_containers();
        let running = jobs.iter().all(|c| {
            let out = std::process::Command::new("docker")
                .args(["inspect", "--format", "{{.State.Running}}", c])
                .output()
                .unwrap();
            stdout(&out).trim() == "true"
        });
        if jobs.len() == 2 && running {
            break jobs;
        }
        assert!(Instant::now() < deadline, "both jobs never ran: {jobs:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let tokens: Vec<String> = jobs.iter().map(|c| token_of(c).unwrap()).collect();
    assert_ne!(tokens[0], tokens[1]);
    for (container, other) in jobs.iter().zip(tokens.iter().rev()) {
        let handed = std::process::Command::new("docker")
            .args([
                "exec",
                "-i",
                container,
                "sh",
                "-c",
                "cat > /tmp/token && touch /tmp/go",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut p| {
                use std::io::Write;
                p.stdin.take().unwrap().write_all(other.as_bytes())?;
                p.wait()
            })
            .unwrap();
        assert!(handed.success());
    }
    assert!(child.wait().unwrap().success());
    for job in ["a", "b"] {
        let log = log_of(&env, job);
        assert!(
            log.contains("other 401"),
            "another attempt's token is refused: {log}"
        );
        assert!(log.contains("own 200"), "its own token works: {log}");
    }
    assert_eq!(upstream.seen.lock().unwrap().calls, 2);
}

#[test]
fn container_never_holds_the_upstream_key() {
    let env = Env::new();
    let upstream = Upstream::start();
    let job = env.job(
        "hold.yaml",
        &llm_job("hold", "print(call()[0]); time.sleep(3)", ""),
    );
    let mut child = spawn_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inspected = 0;
    while Instant::now() < deadline && inspected == 0 {
        for name in env.job_containers() {
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
fn tight_budget_ends_the_job_with_reason_budget_without_recording_more_than_it() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = "for i in range(6):\n    print('call', i, call()[0], flush=True)\n";
    let job = env.job(
        "budget.yaml",
        &llm_job("budget", script, "budget: { tokens: 82 }"),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let job = env.show("budget");
    assert_eq!(job["reason"], "budget", "{job}");
    // The first call reserves its prompt (about 13 tokens, and 32 for what a chat template may
    // add) and the 37 the budget leaves for its answer, and is asked for no more; it uses 40.
    // The second cannot fit 16 tokens of answer in the 42 left after its prompt's 45: refused
    // before it reaches the upstream.
    assert_eq!(upstream.calls(), 1);
    assert_eq!(
        upstream.seen.lock().unwrap().requests[0]["max_tokens"],
        37,
        "the answer is capped to what the budget allows"
    );
    assert_eq!(job["usage"]["agent"]["requests"], 1);
    let log = log_of(&env, "budget");
    assert!(!log.contains("call 1 200"), "{log}");
    // The refusal is one event, however many calls were refused.
    let events = stdout(&env.run(&["events", "--json", "budget"]));
    let budget: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "budget")
        .collect();
    assert_eq!(budget.len(), 1, "{events}");
    assert_eq!(
        (
            &budget[0]["role"],
            &budget[0]["limit_tokens"],
            &budget[0]["attempt"],
            &budget[0]["used_tokens"]
        ),
        (
            &serde_json::json!("agent"),
            &serde_json::json!(82),
            &serde_json::json!(1),
            &serde_json::json!(40)
        ),
        "{events}"
    );
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
    assert_eq!(
        metered(usage),
        [1, 30, 10, 0],
        "the upstream's own counts: {usage}"
    );
}

#[test]
fn a_streamed_call_is_metered_from_the_upstreams_usage_and_the_client_gets_its_stream_unchanged() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
def raw(options=None):
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "tokens=25;"}]}
    if options:
        body["stream_options"] = options
    req = urllib.request.Request(BASE + "/chat/completions", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()
print("plain", json.dumps(raw()))
print("asked", json.dumps(raw({"include_usage": True})))
"#;
    let job = env.job("exact.yaml", &llm_job("exact", script, ""));
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    let log = log_of(&env, "exact");
    assert_eq!(out.status.code(), Some(0), "{}{log}", stderr(&out));
    let got = |prefix: &str| -> String {
        let line = log
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}: {log}"));
        serde_json::from_str(line).unwrap()
    };
    // What the upstream sends a client that does not ask for usage, byte for byte.
    assert_eq!(got("plain "), token_stream(1, 3, 25, false).concat());
    // A client that asks for usage gets it as the upstream sent it.
    assert_eq!(got("asked "), token_stream(2, 3, 25, true).concat());
    assert_eq!(
        upstream.seen.lock().unwrap().include_usage(),
        [true, true],
        "the gateway asked for usage"
    );
    let usage = &env.show("exact")["usage"]["agent"];
    assert_eq!(metered(usage), [2, 6, 50, 0], "{usage}");
}

#[test]
fn a_streamed_call_cut_short_by_a_cancel_is_metered() {
    let env = Env::new();
    let upstream = Upstream::start();
    let job = env.job(
        "forever.yaml",
        &llm_job("forever", "print(call(stream=True, content='forever'))", ""),
    );
    let mut child = spawn_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while upstream.calls() == 0 {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second of words (one every 100 ms) on the way, then the job is cancelled.
    std::thread::sleep(Duration::from_secs(1));
    let cancel = env.run(&["cancel", "forever"]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    child.wait().unwrap();
    let job = env.show("forever");
    assert_eq!(job["state"], "cancelled", "{job}");
    let usage = &job["usage"]["agent"];
    assert_eq!(usage["requests"], 1, "{usage}");
    assert_eq!(usage["estimated_requests"], 1, "{usage}");
    assert_eq!(usage["prompt_tokens"], 2, "'forever', estimated: {usage}");
    assert!(
        usage["completion_tokens"].as_u64().unwrap() >= 5,
        "the words received before the cancel: {usage}"
    );
}

/// Whether a call with `content` fits what remains of a budget of `tokens` and `usd` after
/// `used` (tokens, USD) at gpt-4o-mini's prices: its prompt guessed high (a token for three
/// characters, 8 for the message) and an answer of at least 16 tokens.
fn fits(content: &str, tokens: u64, usd: f64, used: (u64, f64)) -> bool {
    let prompt = (content.len() as u64).div_ceil(3) + 8 + 32;
    let by_tokens = tokens.saturating_sub(used.0).saturating_sub(prompt);
    let for_output = usd - used.1 - prompt as f64 * 0.15e-6;
    let by_usd = if for_output <= 0.0 {
        0
    } else {
        (for_output / 0.60e-6).floor() as u64
    };
    by_tokens.min(by_usd) >= 16
}

#[test]
fn over_fifty_calls_of_random_sizes_the_recorded_usage_stays_inside_the_budget_and_the_refused_call_is_the_one_that_could_not_fit(
) {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
import random
random.seed(7)
for i in range(50):
    content = "tokens=%d;%s" % (random.randint(5, 150), "x" * random.randint(0, 400))
    print("try", content, flush=True)
    status = call(stream=(i % 2 == 1), content=content)[0]
    print("status", status, flush=True)
    if status != 200:
        break
"#;
    let (tokens, usd) = (3000, 0.0015);
    let job = env.job(
        "fifty.yaml",
        &llm_job(
            "fifty",
            script,
            &format!("budget: {{ tokens: {tokens}, usd: {usd} }}"),
        ),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = log_of(&env, "fifty");
    // The container may be stopped before it prints the refused call's status: the call
    // after the last that succeeded is the refused one.
    let tried: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("try ")).collect();
    let passed = log.lines().filter(|l| *l == "status 200").count();
    assert!(tried.len() < 50, "a call is refused before 50: {log}");
    assert_eq!(tried.len(), passed + 1, "{log}");
    let reported = upstream.seen.lock().unwrap().reported.clone();
    assert_eq!(
        reported.len(),
        passed,
        "the refused call never reached the upstream"
    );
    let mut used = (0u64, 0f64);
    for (content, (prompt, completion)) in tried.iter().zip(&reported) {
        assert!(fits(content, tokens, usd, used), "a call that fit");
        used.0 += prompt + completion;
        used.1 += *prompt as f64 * 0.15e-6 + *completion as f64 * 0.60e-6;
        assert!(used.0 <= tokens && used.1 <= usd + 1e-12, "{used:?}");
    }
    let refused = tried[passed];
    assert!(
        !fits(refused, tokens, usd, used),
        "the refused call could not fit: {used:?} used, {refused:?}"
    );
    let job = env.show("fifty");
    assert_eq!(job["reason"], "budget", "{job}");
    let agent = &job["usage"]["agent"];
    let recorded =
        agent["prompt_tokens"].as_u64().unwrap() + agent["completion_tokens"].as_u64().unwrap();
    assert_eq!(recorded, used.0, "the upstream's counts: {agent}");
    assert!(recorded <= tokens, "{agent}");
    assert!(agent["cost_usd"].as_f64().unwrap() <= usd, "{agent}");
    assert_eq!(agent["estimated_requests"], 0, "{agent}");
}

#[test]
fn thirty_parallel_calls_under_a_small_budget_stay_inside_it_and_end_the_job_with_budget() {
    let env = Env::new();
    let upstream = Upstream::start();
    // Every call asks for up to 100 tokens and gets 80 after half a second: all thirty are in
    // flight together.
    let script = r#"
import threading
statuses = []
def one():
    statuses.append(call(content="tokens=80;slow;", extra={"max_tokens": 100})[0])
threads = [threading.Thread(target=one) for _ in range(30)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("statuses", sorted(statuses), flush=True)
time.sleep(30)
"#;
    let job = env.job(
        "thirty.yaml",
        &llm_job("thirty", script, "budget: { tokens: 1000 }"),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let job = env.show("thirty");
    assert_eq!(job["reason"], "budget", "{job}");
    let agent = &job["usage"]["agent"];
    let recorded =
        agent["prompt_tokens"].as_u64().unwrap() + agent["completion_tokens"].as_u64().unwrap();
    assert!(recorded <= 1000, "{agent}");
    // Each call reserves about 145 tokens: 6 fit in 1000 (a seventh with a lower cap).
    let calls = upstream.calls();
    assert!(
        (1..=9).contains(&calls),
        "{calls} calls reached the upstream"
    );
    assert_eq!(agent["requests"], calls as u64, "{agent}");
}

#[test]
fn a_usd_budget_refuses_calls_to_a_model_without_a_price_naming_the_price_table() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = "status, text = call(model='mock')\nprint('unpriced', status, json.loads(text)['error']['message'])\n";
    let job = env.job(
        "unpriced.yaml",
        &llm_job("unpriced", script, "budget: { usd: 1 }"),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(upstream.calls(), 0);
    let job = env.show("unpriced");
    assert_eq!(job["reason"], "budget", "{job}");
    // The container may be stopped before it prints the refusal; if it printed it, it names
    // the fix.
    let log = log_of(&env, "unpriced");
    if log.contains("unpriced") {
        assert!(
            log.contains("unpriced 402") && log.contains("RUNNER_PRICES"),
            "{log}"
        );
    }
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
    let log = log_of(&env, "err");
    assert_eq!(out.status.code(), Some(0), "{}{log}", stderr(&out));
    assert!(log.contains("upstream 503 upstream is overloaded"), "{log}");
    assert!(log.contains("huge 413"), "{log}");
    assert_eq!(
        upstream.calls(),
        1,
        "the huge request never reached the upstream"
    );
}

#[test]
fn an_llm_job_adopted_after_the_daemon_was_killed_still_reaches_the_gateway() {
    let mut env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
print("before", call()[0], flush=True)
deadline = time.time() + 90
while not os.path.exists("/tmp/go") and time.time() < deadline:
    time.sleep(0.1)
print("after", call()[0], flush=True)
"#;
    let job = env.job("adopted.yaml", &llm_job("adopted", script, ""));
    let id = stdout(&env.run(&["submit", path_str(&job)]))
        .trim()
        .to_string();
    let vars = [
        ("OPENAI_BASE_URL", upstream.url.as_str()),
        ("OPENAI_API_KEY", UPSTREAM_KEY),
    ];
    let daemon = env.spawn_daemon_env(&[], &vars);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_of(&env, &id).contains("before 200") {
        assert!(Instant::now() < deadline, "{}", log_of(&env, &id));
        std::thread::sleep(Duration::from_millis(100));
    }
    env.signal_daemon(daemon, "KILL");
    let daemon = env.spawn_daemon_env(&[], &vars);
    // The job is still `running` from before: wait for the new daemon to take it over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stdout(&env.run(&["events", "--json", &id])).contains(r#""type":"adopted""#) {
        assert!(Instant::now() < deadline, "never adopted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let container = env.job_containers().pop().unwrap();
    let go = std::process::Command::new("docker")
        .args(["exec", &container, "touch", "/tmp/go"])
        .status()
        .unwrap();
    assert!(go.success());
    env.wait_state(&id, "succeeded", Duration::from_secs(60));
    let log = log_of(&env, &id);
    assert!(
        log.contains("after 200"),
        "the adopted job's calls go through: {log}"
    );
    assert_eq!(env.show(&id)["attempts"].as_array().unwrap().len(), 1);
    env.wait_no_containers(Duration::from_secs(10));
    env.signal_daemon(daemon, "TERM");
}

#[test]
fn a_rate_limited_call_waits_for_the_provider_and_the_job_succeeds_with_the_wait_in_its_events() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
start = time.time()
print("answer", *call(model="throttled"))
print("took %.1f" % (time.time() - start))
"#;
    let job = env.job("slow.yaml", &llm_job("slow", script, ""));
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = log_of(&env, "slow");
    assert!(log.contains("answer 200 answer-2"), "sent again: {log}");
    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.calls, 2);
    let gap = seen.arrivals[1] - seen.arrivals[0];
    assert!(
        gap >= Duration::from_secs(2) && gap < Duration::from_secs(4),
        "Retry-After: 2 honoured: {gap:?}"
    );
    drop(seen);
    let waits = env.events_of("slow", &["waiting"]);
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(
        (&waits[0]["status"], &waits[0]["role"], &waits[0]["retry"]),
        (
            &serde_json::json!(429),
            &serde_json::json!("agent"),
            &serde_json::json!(1)
        )
    );
    let line = stdout(&env.run(&["events", "slow"]));
    assert!(line.contains("waiting for the provider until 20"), "{line}");
    assert_eq!(
        env.show("slow")["usage"]["agent"]["requests"],
        1,
        "the 429 is not a request"
    );
}

#[test]
fn llm_concurrency_queues_calls_to_an_upstream_instead_of_sending_them_at_once() {
    let env = Env::new();
    let upstream = Upstream::start();
    let script = r#"
import threading
results = []
def one():
    results.append(call(stream=True)[0])
threads = [threading.Thread(target=one) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print("statuses", sorted(results))
"#;
    let job = env.job("queued.yaml", &llm_job("queued", script, ""));
    let out = runner_with_upstream(
        &env,
        &upstream,
        &["run", "--llm-concurrency", "1", path_str(&job)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        log_of(&env, "queued").contains("statuses [200, 200, 200]"),
        "{}",
        log_of(&env, "queued")
    );
    let seen = upstream.seen.lock().unwrap();
    assert_eq!((seen.calls, seen.most_in_flight), (3, 1));
}

#[test]
fn an_upstream_that_ignores_max_tokens_is_cut_and_recorded_inside_the_budget() {
    let env = Env::new();
    let upstream = Upstream::start();
    // The `runaway` model answers 2,000 words whatever the request's cap.
    let script = r#"
body = {"model": "runaway", "stream": True,
        "messages": [{"role": "user", "content": "tokens=2000;"}]}
req = urllib.request.Request(BASE + "/chat/completions", data=json.dumps(body).encode(),
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
             "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    text = r.read().decode()
print("words", text.count("w "))
print("cut", '"finish_reason":"length"' in text, text.endswith("data: [DONE]\n\n"))
"#;
    let job = env.job(
        "runaway.yaml",
        &llm_job("runaway", script, "budget: { tokens: 500 }"),
    );
    let out = runner_with_upstream(&env, &upstream, &["run", path_str(&job)]);
    let log = log_of(&env, "runaway");
    assert_eq!(out.status.code(), Some(0), "{}{log}", stderr(&out));
    // Asked for at most 456 tokens (500 less the prompt's 12 and 32 for a chat template), and
    // cut a quarter past that.
    assert_eq!(upstream.seen.lock().unwrap().requests[0]["max_tokens"], 456);
    assert!(log.contains("cut True True"), "{log}");
    let words: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("words "))
        .unwrap()
        .parse()
        .unwrap();
    // Counted from the text here, a word ("w ") is half a token: 570 tokens are 1,140 words.
    assert!((912..=1160).contains(&words), "{words} words passed on");
    let agent = &env.show("runaway")["usage"]["agent"];
    let recorded =
        agent["prompt_tokens"].as_u64().unwrap() + agent["completion_tokens"].as_u64().unwrap();
    assert!(recorded <= 500, "{agent}");
    assert_eq!(
        agent["estimated_requests"], 1,
        "cut before its usage: {agent}"
    );
}

/// A role's metered usage: requests, prompt tokens, completion tokens, estimated requests.
fn metered(usage: &serde_json::Value) -> [u64; 4] {
    [
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "estimated_requests",
    ]
    .map(|k| {
        usage[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {usage}"))
    })
}
