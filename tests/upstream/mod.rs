//! A scripted OpenAI-compatible upstream on an ephemeral loopback port, for gateway tests. Every
//! answer carries `usage` (30 prompt + 10 completion tokens); streamed answers arrive as three
//! events 400 ms apart. It records what it was sent. Model `throttled` gets a 429 with
//! `Retry-After: 2` on its first call; model `refused` always gets a 401.

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
                async move { answer(state, headers, body) }
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
                    "data: [DONE]\n\n".to_string()
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
