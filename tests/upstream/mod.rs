//! A scripted OpenAI-compatible upstream on an ephemeral loopback port, for gateway tests. Every
//! answer carries `usage` (30 prompt + 10 completion tokens); streamed answers arrive as three
//! events 400 ms apart. It records what it was sent.

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
    if request["stream"].as_bool() == Some(true) {
        let stream = futures_util::stream::unfold(0, move |i| async move {
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
