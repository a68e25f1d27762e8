//! `/metrics` against real processes: `runner serve` and `runner daemon --listen` on ephemeral
//! loopback ports, plain jobs run by `runner run` and by the daemon in real containers, an LLM
//! call through the real gateway to a scripted upstream. The answer is read with a Prometheus
//! text-format parser; its counters must move with what the jobs did, the LLM ones under the
//! role and model of the call.

mod common;
mod upstream;

use common::*;
use prometheus_parse::{Scrape, Value};
use std::io::{Read, Write};
use std::net::TcpStream;

use std::time::Duration;
use upstream::Upstream;

impl Server {
    /// `GET /metrics` with the token: its status, content type and body.
    fn metrics(&self) -> (u16, String, String) {
        get(&self.addr, "/metrics", Some(&self.token))
    }

    fn scrape(&self) -> Scrape {
        let (status, content_type, body) = self.metrics();
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
    }
}

/// One HTTP/1.0 GET: status, `Content-Type` and body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an answer head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The value of the series `name` with exactly `labels`; `None` when there is no such series.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "{found:?}");
    found.first().map(|s| match &s.value {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("{name} is not a number: {other:?}"),
    })
}

fn number(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", scrape.samples))
}

#[test]
fn metrics_counters_move_when_plain_jobs_run() {
    let env = Env::new();
    let server = Server::start(&env, &["serve", "--listen", "127.0.0.1:0"], &[]);
    let (status, _, _) = get(&server.addr, "/metrics", None);
    assert_eq!(status, 401, "/metrics needs the token like every route");

    let before = server.scrape();
    assert_eq!(number(&before, "runner_container_starts_total", &[]), 0.0);
    let succeeded = [("state", "succeeded"), ("reason", "")];
    assert_eq!(number(&before, "runner_jobs", &succeeded), 0.0);
    assert_eq!(
        value(&before, "runner_gateway_auth_refusals_total", &[]),
        None,
        "runner serve runs no gateway, so it has no refusal count to report"
    );

    let ok = env.job("ok.yaml", &sh_job("ok", "sleep 1", ""));
    let bad = env.job("bad.yaml", &sh_job("bad", "exit 3", ""));
    let out = env.run(&["run", path_str(&ok), path_str(&bad)]);
    assert!(!out.status.success(), "one job fails: {}", stderr(&out));

    let after = server.scrape();
    assert_eq!(number(&after, "runner_container_starts_total", &[]), 2.0);
    assert_eq!(number(&after, "runner_jobs", &succeeded), 1.0);
    assert_eq!(
        number(
            &after,
            "runner_jobs",
            &[("state", "failed"), ("reason", "exit_code")]
        ),
        1.0
    );
    assert_eq!(number(&after, "runner_queue_length", &[]), 0.0);
    let count = |state| {
        number(
            &after,
            "runner_attempt_duration_seconds_count",
            &[("state", state)],
        )
    };
    assert_eq!((count("succeeded"), count("failed")), (1.0, 1.0));
    assert!(
        number(
            &after,
            "runner_attempt_duration_seconds_sum",
            &[("state", "succeeded")]
        ) >= 1.0,
        "the job slept a second"
    );
    assert_eq!(
        number(
            &after,
            "runner_container_failures_total",
            &[("reason", "infra")]
        ),
        0.0
    );
}

#[test]
fn a_daemon_reports_llm_usage_and_its_gateways_token_refusals() {
    let env = Env::new();
    let upstream = Upstream::start();
    let daemon = Server::start(
        &env,
        &["daemon", "--listen", "127.0.0.1:0", "--stop-grace", "2s"],
        &[
            ("OPENAI_BASE_URL", &upstream.url),
            ("OPENAI_API_KEY", "upstream-key-4d2f9a"),
        ],
    );
    let before = daemon.scrape();
    assert_eq!(
        number(&before, "runner_gateway_auth_refusals_total", &[]),
        0.0
    );
    // One call with the attempt's token, one with a made-up one.
    let script = r#"
import json, os, urllib.error, urllib.request
def call(key):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
print("own", call(os.environ["OPENAI_API_KEY"]), "bogus", call("not-a-token"))
"#;
    let code: String = script.lines().map(|l| format!("    {l}\n")).collect();
    let job = env.job(
        "llm.yaml",
        &format!(
            "name: llm\nimage: {BASE_IMAGE}\nnetwork: llm\ncommand:\n  - python3\n  - -c\n  - |\n{code}"
        ),
    );
    let out = env.run(&["submit", path_str(&job)]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.wait_state("llm", "succeeded", Duration::from_secs(120));
    assert!(
        log_of(&env, "llm").contains("own 200 bogus 401"),
        "{}",
        log_of(&env, "llm")
    );

    let after = daemon.scrape();
    assert_eq!(
        number(&after, "runner_gateway_auth_refusals_total", &[]),
        1.0
    );
    // The call is metered under its role and the model it named.
    let agent = [("role", "agent"), ("model", "gpt-4o-mini")];
    assert_eq!(
        value(&before, "runner_llm_requests_total", &agent),
        None,
        "no model is metered before the call"
    );
    assert_eq!(number(&after, "runner_llm_requests_total", &agent), 1.0);
    assert_eq!(
        number(
            &after,
            "runner_llm_requests_total",
            &[("role", "manager"), ("model", "gpt-4o-mini")]
        ),
        0.0
    );
    let tokens = |kind| {
        number(
            &after,
            "runner_llm_tokens_total",
            &[("role", "agent"), ("model", "gpt-4o-mini"), ("kind", kind)],
        )
    };
    // The scripted upstream reports 30 prompt and 10 completion tokens.
    assert_eq!((tokens("prompt"), tokens("completion")), (30.0, 10.0));
    assert!(number(&after, "runner_llm_cost_usd_total", &agent) > 0.0);
    assert_eq!(number(&after, "runner_container_starts_total", &[]), 1.0);
}
