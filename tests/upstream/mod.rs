//! A scripted OpenAI-compatible upstream on an ephemeral loopback port, for gateway tests. Every
//! plain answer carries `usage` (30 prompt + 10 completion tokens); streamed answers arrive as
//! three events 400 ms apart, with the usage in an event of its own when the request asks for it
//! (`stream_options.include_usage`), as real servers do. It records what it was sent. Model
//! `throttled` gets a 429 with `Retry-After: 2` on its first call; model `refused` always gets a
//! 401.
//!
//! A message starting `tokens=N;` is answered with N words, each one token, and a prompt of a
//! token per four characters of the message, as a real server with a first event of only a role
//! and `content: null` and `usage: null` on the content events; the answer stops at the
//! request's `max_tokens` unless the model is `runaway`. A message `forever` streams a word every
//! 100 ms without end. A message with `slow;` is answered 500 ms after it arrives.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Seen {
    pub calls: usize,
    pub authorizations: Vec<String>,
    /// Calls whose answer is not through yet, and the most there were at once.
    pub in_flight: usize,
    pub most_in_flight: usize,
    /// When each call arrived.
    pub arrivals: Vec<std::time::Instant>,
    /// Every request body, as sent.
    pub requests: Vec<serde_json::Value>,
    /// The usage each answer reported (prompt, completion), in order.
    pub reported: Vec<(u64, u64)>,
}

impl Seen {
    /// Whether each request asked for usage in its stream.
    pub fn include_usage(&self) -> Vec<bool> {
        self.requests
            .iter()
            .map(|r| r["stream_options"]["include_usage"] == true)
            .collect()
    }
}

/// One call counted in flight until dropped (when its answer's body is through).
struct Counted(Arc<Mutex<Seen>>);

impl Counted {
    fn enter(seen: &Arc<Mutex<Seen>>) -> Counted {
        let mut s = seen.lock().unwrap();
        s.in_flight += 1;
        s.most_in_flight = s.most_in_flight.max(s.in_flight);
        Counted(seen.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

pub struct Upstream {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let slow = body.windows(5).any(|w| w == b"slow;");
                    let response = answer(state, headers, body);
                    if slow {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    response
                }
            }),
        );
        let (base, runtime) = crate::common::serve_on_loopback(app);
        Upstream {
            url: format!("{base}/v1"),
            seen,
            runtime: Some(runtime),
        }
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().calls
    }

    /// Stops serving (for replay tests: nothing may reach it afterwards).
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(seen: Arc<Mutex<Seen>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let n = {
        let mut s = seen.lock().unwrap();
        s.calls += 1;
        s.arrivals.push(std::time::Instant::now());
        if let Some(a) = headers.get("authorization") {
            s.authorizations
                .push(a.to_str().unwrap_or_default().to_string());
        }
        s.calls
    };
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.lock().unwrap().requests.push(request.clone());
    let content = request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stream = request["stream"].as_bool() == Some(true);
    let include_usage = request["stream_options"]["include_usage"] == true;
    if content == "forever" {
        return sse(words(None, n));
    }
    if let Some(rest) = content.strip_prefix("tokens=") {
        let asked: u64 = rest.split(';').next().unwrap().parse().unwrap();
        let cap = request["max_tokens"]
            .as_u64()
            .or(request["max_completion_tokens"].as_u64());
        let count = match cap {
            Some(cap) if request["model"] != "runaway" => asked.min(cap),
            _ => asked,
        };
        let prompt = (content.len() as u64).div_ceil(4);
        seen.lock().unwrap().reported.push((prompt, count));
        let usage = serde_json::json!({"prompt_tokens": prompt, "completion_tokens": count, "total_tokens": prompt + count});
        if !stream {
            let body = serde_json::json!({
                "id": format!("cmpl-{n}"), "object": "chat.completion", "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "w ".repeat(count as usize)}, "finish_reason": "stop"}],
                "usage": usage, "timings": {"predicted_ms": 1.0}
            });
            return axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
        }
        let events = token_stream(n, prompt, count, include_usage);
        let events = futures_util::stream::iter(
            events
                .into_iter()
                .map(|e| Ok::<_, std::io::Error>(Bytes::from(e))),
        );
        return axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    if request["model"] == "overloaded" {
        return axum::response::Response::builder()
            .status(503)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"error":{"message":"upstream is overloaded","type":"overloaded"}}"#,
            ))
            .unwrap();
    }
    if request["model"] == "throttled" && n == 1 {
        return axum::response::Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .header("retry-after", "2")
            .body(Body::from(
                r#"{"error":{"message":"Rate limit reached, try again in 2s","type":"requests"}}"#,
            ))
            .unwrap();
    }
    if request["model"] == "refused" {
        return axum::response::Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            ))
            .unwrap();
    }
    if request["stream"].as_bool() == Some(true) {
        let counted = Counted::enter(&seen);
        let stream = futures_util::stream::unfold(0, move |i| {
            let _counted = &counted;
            async move {
                if i == 4 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                let event = if i == 3 {
                    if include_usage {
                        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,\"total_tokens\":40}}\n\ndata: [DONE]\n\n".to_string()
                    } else {
                        "data: [DONE]\n\n".to_string()
                    }
                } else {
                    format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"part{i}-{n} \"}}}}]}}\n\n")
                };
                Some((Ok::<_, std::io::Error>(Bytes::from(event)), i + 1))
            }
        });
        return axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    seen.lock().unwrap().reported.push((30, 10));
    let body = serde_json::json!({
        "id": format!("cmpl-{n}"),
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer-{n}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `limit` words (without end when `None`), one event every 100 ms.
fn words(
    limit: Option<usize>,
    n: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |i| async move {
        if limit.is_some_and(|l| i >= l) {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let event = format!(
            "data: {{\"id\":\"c{n}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"
        );
        Some((Ok(Bytes::from(event)), i + 1))
    })
}

fn sse(
    events: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> axum::response::Response {
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

/// The events of call `n`'s streamed answer of `count` words to a prompt of `prompt` tokens, as
/// a real server sends them: with `include_usage`, `"usage":null` on every event and the usage
/// in an event of its own with empty `choices`.
pub fn token_stream(n: usize, prompt: u64, count: u64, include_usage: bool) -> Vec<String> {
    let null_usage = if include_usage { ",\"usage\":null" } else { "" };
    let mut events = vec![format!(
        "data: {{\"id\":\"c{n}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":null}},\"finish_reason\":null}}]{null_usage}}}\n\n"
    )];
    // Ten words an event.
    let mut left = count;
    while left > 0 {
        let k = left.min(10);
        left -= k;
        events.push(format!(
            "data: {{\"id\":\"c{n}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":null}}]{null_usage}}}\n\n",
            "w ".repeat(k as usize)
        ));
    }
    events.push(format!(
        "data: {{\"id\":\"c{n}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]{null_usage}}}\n\n"
    ));
    if include_usage {
        events.push(format!(
            "data: {{\"id\":\"c{n}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{count},\"total_tokens\":{}}}}}\n\n",
            prompt + count
        ));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}
