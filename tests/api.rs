//! Mission control's HTTP API against real processes: `runner serve` and `runner daemon
//! --listen` on ephemeral loopback ports, real SQLite, jobs submitted through the CLI and through
//! the API, plain jobs run in real containers and an agent job with the real Aider image. Every
//! route, its errors, and the safety rules (token, login cookie, same-origin POSTs, headers).

mod common;
mod scripted;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;

use std::time::{Duration, Instant};

impl Server {
    fn serve(env: &Env, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::start(env, &args, &[])
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A request with the token.
    fn get(&self, path: &str) -> Reply {
        request(
            &self.addr,
            "GET",
            path,
            &[("Authorization", &self.bearer())],
            b"",
        )
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        request(
            &self.addr,
            "POST",
            path,
            &[("Authorization", &self.bearer())],
            body,
        )
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_string()
    }
}

/// Sends one HTTP/1.0 request (the connection closes after the answer, bodies come unchunked).
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    // A refused upload may be answered before it is all sent.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// `runner ARGS...` must succeed; its stdout.
fn cli(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert!(out.status.success(), "runner {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `runner ARGS...` as JSON.
fn cli_json(env: &Env, args: &[&str]) -> Value {
    serde_json::from_str(&cli(env, args)).unwrap()
}

/// The last line of what a failing `runner ARGS...` printed, without the `runner: ` prefix.
fn cli_error(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert!(!out.status.success(), "runner {args:?} should fail");
    stderr(&out)
        .trim()
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("runner: ")
        .to_string()
}

const SLEEPER: &str =
    "name: sleeper\nimage: runner/base:bookworm\ncommand: [sleep, \"300\"]\ngroup: slow\n";

#[test]
fn every_request_needs_the_token_on_loopback_and_every_answer_has_the_security_headers() {
    let env = Env::new();
    let server = Server::serve(&env, &[]);
    let mode = std::fs::metadata(env.state.join("api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    assert!(server.token.len() >= 32, "{}", server.token);
    assert!(
        server
            .banner
            .contains(&format!("http://{}/?token={}", server.addr, server.token)),
        "the login URL is printed once: {}",
        server.banner
    );

    let none = request(&server.addr, "GET", "/api/v1/jobs", &[], b"");
    assert_eq!(none.status, 401, "no token on loopback");
    assert!(none.error().contains("api-token"), "{}", none.error());
    let wrong = format!("Bearer {}x", &server.token[..server.token.len() - 1]);
    let wrong = request(
        &server.addr,
        "GET",
        "/api/v1/jobs",
        &[("Authorization", &wrong)],
        b"",
    );
    assert_eq!(wrong.status, 401, "a wrong token");
    let wrong_query = request(&server.addr, "GET", "/api/v1/jobs?token=nope", &[], b"");
    assert_eq!(wrong_query.status, 401, "a wrong token in the address");
    let wrong_cookie = request(
        &server.addr,
        "GET",
        "/api/v1/jobs",
        &[("Cookie", "runner_token=nope")],
        b"",
    );
    assert_eq!(wrong_cookie.status, 401, "a wrong cookie");
    let post = request(
        &server.addr,
        "POST",
        "/api/v1/jobs",
        &[],
        SLEEPER.as_bytes(),
    );
    assert_eq!(post.status, 401, "no token, no submission");
    assert!(env.ps().is_empty(), "a refused request changes nothing");

    let ok = server.get("/api/v1/jobs");
    assert_eq!(ok.status, 200);
    for reply in [&none, &ok] {
        assert_eq!(
            reply.header("content-security-policy"),
            Some(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            )
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    }

    // The token is made once and reused by the next server.
    let first = server.token.clone();
    drop(server);
    let again = Server::serve(&env, &[]);
    assert_eq!(again.token, first);
}

#[test]
fn the_token_in_the_address_sets_the_login_cookie_and_cookie_posts_must_be_same_origin() {
    let env = Env::new();
    let server = Server::serve(&env, &[]);
    let job = env.job("sleeper.yaml", SLEEPER);
    let id = cli(&env, &["submit", path_str(&job)]).trim().to_string();

    let login = request(
        &server.addr,
        "GET",
        &format!("/api/v1/jobs?token={}&state=queued", server.token),
        &[],
        b"",
    );
    assert_eq!(login.status, 303);
    assert_eq!(
        login.header("location"),
        Some("/api/v1/jobs?state=queued"),
        "the same address without the token"
    );
    let cookie = login.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let read = request(
        &server.addr,
        "GET",
        "/api/v1/jobs",
        &[("Cookie", &pair)],
        b"",
    );
    assert_eq!(read.status, 200, "the cookie logs in");

    let cancel = format!("/api/v1/jobs/{id}/cancel");
    let bare = request(&server.addr, "POST", &cancel, &[("Cookie", &pair)], b"");
    assert_eq!(bare.status, 403, "a cookie POST with no origin");
    assert!(bare.error().contains("Bearer"), "{}", bare.error());
    let cross = request(
        &server.addr,
        "POST",
        &cancel,
        &[
            ("Cookie", &pair),
            ("Origin", &format!("http://{}", server.addr)),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"",
    );
    assert_eq!(cross.status, 403, "a cookie POST from another site");
    let evil = request(
        &server.addr,
        "POST",
        &cancel,
        &[("Cookie", &pair), ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(evil.status, 403, "a cookie POST from another origin");
    assert_eq!(env.state_of(&id), "queued", "refused POSTs change nothing");

    let same = request(
        &server.addr,
        "POST",
        &cancel,
        &[("Cookie", &pair), ("Sec-Fetch-Site", "same-origin")],
        b"",
    );
    assert_eq!(
        same.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&same.body)
    );
    assert_eq!(env.state_of(&id), "cancelled");
}

#[test]
fn jobs_list_and_show_have_the_cli_shapes_and_filters() {
    let env = Env::new();
    let server = Server::serve(&env, &[]);
    let sleeper = env.job("sleeper.yaml", SLEEPER);
    let first = cli(&env, &["submit", path_str(&sleeper)])
        .trim()
        .to_string();
    let quick = env.job("quick.yaml", &sh_job("quick", "true", ""));
    let second = cli(&env, &["submit", path_str(&quick)]).trim().to_string();
    cli(&env, &["cancel", &second]);

    let list = server.get("/api/v1/jobs");
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), cli_json(&env, &["ps", "--all", "--json"]));
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    let ids = |path: &str| -> Vec<String> {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("/api/v1/jobs?state=queued"), vec![first.clone()]);
    assert_eq!(ids("/api/v1/jobs?state=cancelled"), vec![second.clone()]);
    assert_eq!(ids("/api/v1/jobs?group=slow"), vec![first.clone()]);
    assert_eq!(ids("/api/v1/jobs?name=uic"), vec![second.clone()]);
    assert!(ids("/api/v1/jobs?state=queued&group=default").is_empty());
    let bad = server.get("/api/v1/jobs?state=sleeping");
    assert_eq!(bad.status, 400);
    assert!(
        bad.error().contains("queued, starting, running"),
        "{}",
        bad.error()
    );

    let show = server.get(&format!("/api/v1/jobs/{first}"));
    assert_eq!(show.status, 200);
    assert_eq!(show.json(), cli_json(&env, &["show", &first, "--json"]));
    assert_eq!(
        server.get("/api/v1/jobs/sleeper").json()["id"],
        first,
        "by name"
    );
    assert_eq!(
        server.get(&format!("/api/v1/jobs/{}", &first[..20])).json()["id"],
        first,
        "by prefix"
    );
    let missing = server.get("/api/v1/jobs/nothing-here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error(), cli_error(&env, &["show", "nothing-here"]));
    for path in ["events", "transcript", "artifacts/0"] {
        let r = server.get(&format!("/api/v1/jobs/nothing-here/{path}"));
        assert_eq!(r.status, 404, "{path}");
    }

    let events = server.get(&format!("/api/v1/jobs/{second}/events"));
    assert_eq!(events.status, 200);
    let cli_events: Vec<Value> = cli(&env, &["events", &second, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.json(), Value::Array(cli_events.clone()));
    let after = server.get(&format!(
        "/api/v1/jobs/{second}/events?after={}",
        cli_events[0]["seq"]
    ));
    assert_eq!(after.json(), Value::Array(cli_events[1..].to_vec()));
    let transcript = server.get(&format!("/api/v1/jobs/{second}/transcript"));
    assert_eq!((transcript.status, transcript.json()), (200, json!([])));
    let artifact = server.get(&format!("/api/v1/jobs/{second}/artifacts/0"));
    assert_eq!(artifact.status, 404, "a job that never ran has no artifact");
    assert!(
        artifact.error().contains("0 artifacts"),
        "{}",
        artifact.error()
    );

    let doc = server.get("/api/v1/openapi.json");
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/api/v1/jobs/{id}/events"]["get"].is_object());
    let unknown = server.get("/api/v1/nothing");
    assert_eq!(unknown.status, 404);
}

#[test]
fn a_posted_job_file_is_queued_or_refused_with_the_located_errors_of_validate() {
    let env = Env::new();
    let server = Server::serve(&env, &[]);
    let created = server.post("/api/v1/jobs", SLEEPER.as_bytes());
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let job = created.json();
    assert_eq!(job["state"], "queued");
    assert_eq!(
        job,
        cli_json(&env, &["show", job["id"].as_str().unwrap(), "--json"])
    );

    let bad = "name: bad\nimage: runner/base:bookworm\ncommand: [true]\ntimeout: forever\n";
    let refused = server.post("/api/v1/jobs", bad.as_bytes());
    assert_eq!(refused.status, 422);
    let problems = refused.json()["problems"].as_array().unwrap().clone();
    let file = env.job("job.yaml", bad);
    let out = env.run(&["validate", path_str(&file)]);
    let cli_problem = stderr(&out).lines().next().unwrap().to_string();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        format!(
            "{}/{}",
            env.dir.path().display(),
            problems[0]["text"].as_str().unwrap()
        ),
        cli_problem,
        "the same line:col and message as `runner validate`"
    );
    assert_eq!(problems[0]["line"], 4);
    assert!(refused.error().contains("nothing was submitted"));

    let local = "name: local\nimage: runner/base:bookworm\ncommand: [true]\nrepo: ./repo\n";
    let refused = server.post("/api/v1/jobs", local.as_bytes());
    assert_eq!(refused.status, 422);
    let text = refused.json()["problems"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("job.yaml:4:1: ") && text.contains("--jobs-from"),
        "{text}"
    );
    let file_url = "name: f\nimage: runner/base:bookworm\ncommand: [true]\nrepo: file:///etc\n";
    let refused = server.post("/api/v1/jobs", file_url.as_bytes());
    assert_eq!(refused.status, 422);
    assert!(refused.json()["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("file://"));
    let cassette = format!("{}llm:\n  replay: /etc/passwd\n", "name: c\ntask: do it\n");
    let refused = server.post("/api/v1/jobs", cassette.as_bytes());
    assert_eq!(refused.status, 422);
    assert!(refused.json()["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("llm.replay"));

    let huge = format!("{SLEEPER}# {}\n", "x".repeat(1 << 20));
    assert_eq!(server.post("/api/v1/jobs", huge.as_bytes()).status, 413);
    assert_eq!(env.ps().len(), 1, "only the valid job was queued");
    drop(server);

    // With --jobs-from, local paths inside that folder are allowed, and only there.
    let jobs = env.dir.path().join("jobs");
    make_repo(&jobs.join("repo"));
    let server = Server::serve(&env, &["--jobs-from", path_str(&jobs)]);
    let created = server.post("/api/v1/jobs", local.as_bytes());
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let outside = local.replace("./repo", "../state");
    let refused = server.post("/api/v1/jobs", outside.as_bytes());
    assert_eq!(refused.status, 422);
    assert!(refused.error().contains("1 problem"), "{}", refused.error());
    assert_eq!(env.ps().len(), 2);
}

#[test]
fn controls_refuse_like_the_cli_and_cancel_queued_jobs() {
    let env = Env::new();
    let server = Server::serve(&env, &[]);
    let plain = server.post("/api/v1/jobs", SLEEPER.as_bytes()).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = "name: helper\ntask: add a README\nrepo: https://example.com/x.git\n";
    let agent = server.post("/api/v1/jobs", agent.as_bytes());
    assert_eq!(
        agent.status,
        201,
        "{}",
        String::from_utf8_lossy(&agent.body)
    );
    let agent = agent.json()["id"].as_str().unwrap().to_string();

    let send =
        |id: &str, body: &str| server.post(&format!("/api/v1/jobs/{id}/send"), body.as_bytes());
    let r = send(&plain, r#"{"message": "hello"}"#);
    assert_eq!(r.status, 422, "a plain job has no agent");
    assert_eq!(r.error(), cli_error(&env, &["send", &plain, "hello"]));
    let r = send(&agent, r#"{"message": "hello"}"#);
    assert_eq!(r.status, 409, "a queued agent is not running");
    assert_eq!(r.error(), cli_error(&env, &["send", &agent, "hello"]));
    let r = send(&agent, r#"{"message": "  "}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.error(), cli_error(&env, &["send", &agent, "  "]));
    let r = send(&agent, "hello");
    assert_eq!(r.status, 400, "not JSON");
    assert!(r.error().contains(r#"{"message": "#), "{}", r.error());
    for action in ["pause", "resume"] {
        let r = server.post(&format!("/api/v1/jobs/{agent}/{action}"), b"");
        assert_eq!(r.status, 409, "{action}");
        assert_eq!(r.error(), cli_error(&env, &[action, &agent]));
        let r = server.post(&format!("/api/v1/jobs/{plain}/{action}"), b"");
        assert_eq!(r.status, 422, "{action}");
    }
    assert!(
        cli_json(&env, &["show", &agent, "--json"])["messages"]
            .as_array()
            .unwrap()
            .is_empty(),
        "refused messages are not stored"
    );
    let get_cancel = server.get(&format!("/api/v1/jobs/{plain}/cancel"));
    assert_eq!(get_cancel.status, 405, "state changes only through POST");
    assert_eq!(env.state_of(&plain), "queued");

    let r = server.post(&format!("/api/v1/jobs/{plain}/cancel"), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(env.state_of(&plain), "cancelled");
    let r = server.post(&format!("/api/v1/jobs/{plain}/cancel"), b"");
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), format!("{plain}: already cancelled"));
    let r = server.post("/api/v1/jobs/nothing-here/cancel", b"");
    assert_eq!(r.status, 404);
}

/// Reads an event stream, noting when each message arrived, until `end` or `within` passes.
fn read_stream(
    addr: &str,
    token: &str,
    path: &str,
    last_id: Option<i64>,
    within: Duration,
) -> Vec<(Instant, String, Value)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut head = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    );
    if let Some(id) = last_id {
        head.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{line}");
    let mut content_type = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if line.to_ascii_lowercase().starts_with("content-type:") {
            content_type = line.clone();
        }
    }
    assert!(content_type.contains("text/event-stream"), "{content_type}");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let (mut kind, mut id) = ("message".to_string(), String::new());
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end_matches('\n');
        if let Some(k) = l.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(i) = l.strip_prefix("id: ") {
            id = i.to_string();
        } else if let Some(data) = l.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(data).unwrap();
            if kind == "message" {
                assert_eq!(value["seq"].to_string(), id, "id: is the seq");
            }
            out.push((Instant::now(), kind.clone(), value));
            if kind == "end" {
                break;
            }
            kind = "message".into();
        }
    }
    out
}

#[test]
fn a_daemon_with_listen_streams_a_running_jobs_events_live_and_serves_its_log() {
    let env = Env::new();
    let daemon = Server::start(
        &env,
        &["daemon", "--listen", "127.0.0.1:0", "--stop-grace", "2s"],
        &[],
    );
    assert!(daemon.banner.contains("api-token"), "{}", daemon.banner);
    assert!(
        !daemon.banner.contains(&daemon.token),
        "the daemon does not print the token"
    );
    let yaml = sh_job("ticker", "echo one; sleep 3; echo '<b>two</b>'", "");
    let created = daemon.post("/api/v1/jobs", yaml.as_bytes());
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().unwrap().to_string();

    let path = format!("/api/v1/jobs/{id}/events");
    let events = read_stream(
        &daemon.addr,
        &daemon.token,
        &path,
        None,
        Duration::from_secs(90),
    );
    let states: Vec<String> = events
        .iter()
        .filter(|(_, kind, e)| kind == "message" && e["type"] == "state")
        .map(|(_, _, e)| e["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states,
        ["queued", "starting", "running", "succeeded"],
        "{events:?}"
    );
    assert_eq!(
        events.last().unwrap().1,
        "end",
        "the stream ends with the job"
    );
    let at = |state: &str| {
        events
            .iter()
            .find(|(_, _, e)| e["state"] == state)
            .unwrap()
            .0
    };
    assert!(
        at("succeeded").duration_since(at("running")) >= Duration::from_secs(2),
        "the running event arrived while the job ran, not with the rest at the end"
    );
    let all: Vec<Value> = events
        .iter()
        .filter(|(_, kind, _)| kind == "message")
        .map(|(_, _, e)| e.clone())
        .collect();
    assert_eq!(
        Value::Array(all.clone()),
        daemon.get(&path).json(),
        "the same events as JSON"
    );

    // Reconnecting with Last-Event-ID gets only what came after.
    let resumed = read_stream(
        &daemon.addr,
        &daemon.token,
        &path,
        all[1]["seq"].as_i64(),
        Duration::from_secs(10),
    );
    let resumed: Vec<Value> = resumed
        .into_iter()
        .filter(|(_, kind, _)| kind == "message")
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(resumed, all[2..].to_vec());

    let show = daemon.get(&format!("/api/v1/jobs/{id}")).json();
    let artifacts = show["artifacts"].as_array().unwrap();
    let log = artifacts
        .iter()
        .position(|a| a["kind"] == "log")
        .expect("a log artifact");
    let download = daemon.get(&format!("/api/v1/jobs/{id}/artifacts/{log}"));
    assert_eq!(download.status, 200);
    assert_eq!(
        download.body,
        std::fs::read(artifacts[log]["path"].as_str().unwrap()).unwrap()
    );
    assert!(String::from_utf8_lossy(&download.body).contains("<b>two</b>"));
    let disposition = download.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert_eq!(
        download.header("content-type"),
        Some("application/octet-stream")
    );
    let beyond = daemon.get(&format!("/api/v1/jobs/{id}/artifacts/{}", artifacts.len()));
    assert_eq!(beyond.status, 404);
    env.wait_no_containers(Duration::from_secs(20));
}

/// Polls `check` every 200 ms until it holds (panics with `what` after `within`).
fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_running_agent_is_paused_resumed_messaged_and_cancelled_over_the_api() {
    let env = Env::new();
    let llm = scripted::ScriptedLlm::start(vec![], vec![]);
    let jobs = env.dir.path().join("jobs");
    make_repo(&jobs.join("repo"));
    let daemon = Server::start(
        &env,
        &[
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--jobs-from",
            path_str(&jobs),
            "--stop-grace",
            "2s",
        ],
        &[("OPENAI_BASE_URL", &llm.url)],
    );
    let manager = "{ mode: script, steps: [ { action: run, argument: \"sleep 5\" }, { action: run, argument: \"sleep 120\" }, { action: finish, argument: x } ] }";
    let yaml = format!(
        "name: helper\ntask: add greet.py\nrepo: ./repo\nagent: {{ model: openai/mock }}\nmanager: {manager}\ntimeout: 5m\n"
    );
    let created = daemon.post("/api/v1/jobs", yaml.as_bytes());
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().unwrap().to_string();
    let transcript_has = |text: &str| {
        daemon
            .get(&format!("/api/v1/jobs/{id}/transcript"))
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|row| {
                row["text"].as_str().unwrap_or_default().contains(text) && row["attempt"] == 1
            })
    };
    let has_event = |kind: &str| {
        daemon
            .get(&format!("/api/v1/jobs/{id}/events"))
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == kind)
    };
    wait_until(Duration::from_secs(90), "the first turn", || {
        transcript_has("/run sleep 5")
    });

    let paused = daemon.post(&format!("/api/v1/jobs/{id}/pause"), b"");
    assert_eq!(
        paused.status,
        200,
        "{}",
        String::from_utf8_lossy(&paused.body)
    );
    assert_eq!(paused.json()["status"], "pausing");
    wait_until(Duration::from_secs(30), "the paused event", || {
        has_event("paused")
    });
    let resumed = daemon.post(&format!("/api/v1/jobs/{id}/resume"), b"");
    assert_eq!(
        resumed.status,
        200,
        "{}",
        String::from_utf8_lossy(&resumed.body)
    );
    assert_eq!(resumed.json()["status"], "resuming");
    wait_until(Duration::from_secs(30), "the resumed event", || {
        has_event("resumed")
    });
    wait_until(Duration::from_secs(30), "the second turn", || {
        transcript_has("/run sleep 120")
    });

    let sent = daemon.post(
        &format!("/api/v1/jobs/{id}/send"),
        json!({"message": "use tabs <script>x</script>"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(sent.status, 200, "{}", String::from_utf8_lossy(&sent.body));
    assert_eq!(
        (&sent.json()["status"], &sent.json()["attempt"]),
        (&json!("stored"), &json!(1))
    );
    let show = daemon.get(&format!("/api/v1/jobs/{id}")).json();
    assert_eq!(show["messages"][0]["text"], "use tabs <script>x</script>");
    assert_eq!(
        show["messages"][0]["status"], "waiting",
        "Aider is busy with the turn"
    );

    let cancel = daemon.post(&format!("/api/v1/jobs/{id}/cancel"), b"");
    assert_eq!(cancel.status, 200);
    assert_eq!(cancel.json()["status"], "stopping");
    env.wait_state(&id, "cancelled", Duration::from_secs(30));
    env.wait_no_containers(Duration::from_secs(20));
}

#[test]
fn an_address_other_than_loopback_is_served_only_when_named_and_with_a_warning() {
    let env = Env::new();
    let local = Server::serve(&env, &[]);
    assert!(!local.banner.contains("warning"), "{}", local.banner);
    drop(local);
    let open = Server::start(&env, &["serve", "--listen", "0.0.0.0:0"], &[]);
    assert!(
        open.banner.contains("warning: serving on 0.0.0.0:"),
        "{}",
        open.banner
    );
    assert!(open.banner.contains("not loopback"), "{}", open.banner);
    let port = open.addr.rsplit(':').next().unwrap();
    let none = request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/v1/jobs",
        &[],
        b"",
    );
    assert_eq!(none.status, 401, "the token is needed on every address");
    let bad = env.run(&["serve", "--listen", "localhost"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("IP:PORT"), "{}", stderr(&bad));
}

#[test]
fn artifacts_of_a_run_with_a_relative_state_dir_are_served_from_another_directory() {
    let env = Env::new();
    let job = env.job(
        "hello.yaml",
        "name: hello\nimage: runner/base:bookworm\ncommand: [echo, relative-hello]\n",
    );
    // `runner --state-dir state run` from the env's dir: the state dir is relative.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(env.dir.path())
        .env_remove("RUNNER_STATE_DIR")
        .args(["--state-dir", "state", "run"])
        .arg(&job)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The server runs from the test's own directory, on the absolute state dir.
    let server = Server::serve(&env, &[]);
    let artifacts = server.get("/api/v1/jobs/hello").json()["artifacts"].clone();
    let log = artifacts
        .as_array()
        .unwrap()
        .iter()
        .position(|a| a["kind"] == "log")
        .expect("a log artifact");
    let path = artifacts[log]["path"].as_str().unwrap();
    assert!(std::path::Path::new(path).is_absolute(), "{path}");
    let download = server.get(&format!("/api/v1/jobs/hello/artifacts/{log}"));
    assert_eq!(
        download.status,
        200,
        "{}",
        String::from_utf8_lossy(&download.body)
    );
    assert!(String::from_utf8_lossy(&download.body).contains("relative-hello"));
}
