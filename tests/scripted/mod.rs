//! A scripted OpenAI-compatible server for agent tests, on an ephemeral loopback port. Manager
//! calls (`response_format: json_object`) get the next scripted manager answer; Aider's edit
//! calls (streamed) get the next scripted edit; Aider's commit-message calls get a fixed message.
//! Running out of answers is a 500 naming what ran out. A script may also limit the rate of the
//! first calls (429 with `Retry-After: 2`), leave manager calls unanswered, or refuse every call
//! with a 401.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Script {
    pub manager: VecDeque<String>,
    pub edits: VecDeque<String>,
    pub manager_calls: usize,
    pub edit_calls: usize,
    pub commit_calls: usize,
    /// Every manager request's user message, for assertions on what the manager saw.
    pub manager_prompts: Vec<String>,
    /// Every edit request's last user message: what Aider was asked.
    pub agent_prompts: Vec<String>,
    /// Answer each manager call by the turn its prompt names (`manager[turn - 1]`), the same
    /// however often that turn is asked (a call made again after a restart).
    pub manager_by_turn: bool,
    /// The first manager call for each of these turns waits this long before it is answered.
    pub manager_delays: Vec<(u32, std::time::Duration)>,
    /// Every manager call's turn, in order (with `manager_by_turn`).
    pub manager_turns: Vec<u32>,
    /// An edit asked again (the same request, made again after a restart) gets the same edit.
    pub edits_by_prompt: Option<std::collections::HashMap<String, String>>,
    /// The next this many manager calls, and streamed edit calls, get a 429 with
    /// `Retry-After: 2` (not counted as answered calls).
    pub throttle_manager: usize,
    pub throttle_edits: usize,
    /// The 429s sent.
    pub throttled: usize,
    /// Manager calls are never answered (counted in `manager_calls`).
    pub manager_silent: bool,
    /// Every call gets a 401 for its key.
    pub refuse_all: bool,
    /// The 401s sent.
    pub refused: usize,
}

pub struct ScriptedLlm {
    pub url: String,
    pub script: Arc<Mutex<Script>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// In a scripted edit, the stream pauses here for [`PAUSE_FOR`] before sending the rest.
pub const PAUSE: &str = "\u{23f8}";
/// How long a streamed edit pauses at [`PAUSE`]: long against the session's quiet period.
pub const PAUSE_FOR: std::time::Duration = std::time::Duration::from_millis(1500);

/// A manager answer as the protocol wants it.
pub fn answer(action: &str, argument: &str) -> String {
    json!({"progress": format!("{action} step"), "thought": "scripted", "action": action, "argument": argument}).to_string()
}

/// An edit in Aider's diff format creating (or replacing the whole of) `file`.
pub fn create_file(file: &str, content: &str) -> String {
    format!("{file}\n```python\n<<<<<<< SEARCH\n=======\n{content}>>>>>>> REPLACE\n```\n")
}

impl ScriptedLlm {
    /// `runner run JOB` to its end, with this server as the upstream (and an upstream key set).
    pub fn run(&self, env: &super::common::Env, job: &std::path::Path) -> std::process::Output {
        env.cmd()
            .arg("run")
            .arg(job)
            .env("OPENAI_BASE_URL", &self.url)
            .env("OPENAI_API_KEY", "upstream-key")
            .output()
            .unwrap()
    }

    pub fn start(manager: Vec<String>, edits: Vec<String>) -> ScriptedLlm {
        let script = Arc::new(Mutex::new(Script {
            manager: manager.into(),
            edits: edits.into(),
            ..Default::default()
        }));
        let state = script.clone();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |body: Bytes| {
                let state = state.clone();
                async move {
                    let (response, delay) = reply(&state, &body);
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    response
                }
            }),
        );
        let (base, runtime) = crate::common::serve_on_loopback(app);
        ScriptedLlm {
            url: format!("{base}/v1"),
            script,
            runtime: Some(runtime),
        }
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn json_reply(content: &str, usage: (u64, u64)) -> axum::response::Response {
    let body = json!({
        "id": "cmpl", "object": "chat.completion", "model": "mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1}
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn status_reply(status: u16, headers: &[(&str, &str)], body: Value) -> axum::response::Response {
    let mut reply = axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        reply = reply.header(*name, *value);
    }
    reply.body(Body::from(body.to_string())).unwrap()
}

fn error_reply(message: &str) -> axum::response::Response {
    axum::response::Response::builder()
        .status(500)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"error": {"message": message}}).to_string(),
        ))
        .unwrap()
}

/// The text of a chat request's last user message.
fn last_user_message(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The turn a manager prompt names ("State: turn N of M").
fn turn_of(prompt: &str) -> Option<u32> {
    let at = prompt.find("State: turn ")? + "State: turn ".len();
    prompt[at..].split(' ').next()?.parse().ok()
}

/// The answer to one request, and how long to wait before sending it.
fn reply(
    state: &Mutex<Script>,
    body: &[u8],
) -> (axum::response::Response, Option<std::time::Duration>) {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut s = state.lock().unwrap();
    let manager = request.get("response_format").is_some();
    let edit = !manager && request["stream"] == true;
    if s.refuse_all {
        s.refused += 1;
        return (
            status_reply(
                401,
                &[],
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            None,
        );
    }
    if (manager && s.throttle_manager > 0) || (edit && s.throttle_edits > 0) {
        if manager {
            s.throttle_manager -= 1;
        } else {
            s.throttle_edits -= 1;
        }
        s.throttled += 1;
        return (
            status_reply(
                429,
                &[("retry-after", "2")],
                json!({"error": {"message": "Rate limit reached, try again in 2s", "type": "requests", "code": "rate_limit_exceeded"}}),
            ),
            None,
        );
    }
    if manager && s.manager_silent {
        s.manager_calls += 1;
        return (
            json_reply(&answer("finish", "never sent"), (200, 20)),
            Some(std::time::Duration::from_secs(3600)),
        );
    }
    if request.get("response_format").is_some() && s.manager_by_turn {
        s.manager_calls += 1;
        let prompt = last_user_message(&request);
        s.manager_prompts.push(prompt.clone());
        let Some(turn) = turn_of(&prompt) else {
            return (error_reply("scripted LLM: no turn in the prompt"), None);
        };
        let first = !s.manager_turns.contains(&turn);
        s.manager_turns.push(turn);
        let delay = s
            .manager_delays
            .iter()
            .find(|(t, _)| *t == turn && first)
            .map(|(_, d)| *d);
        return match s.manager.get(turn as usize - 1) {
            Some(a) => (json_reply(a, (200, 20)), delay),
            None => (
                error_reply("scripted LLM: no manager answer for this turn"),
                None,
            ),
        };
    }
    drop(s);
    (reply_next(state, &request), None)
}

fn reply_next(state: &Mutex<Script>, request: &Value) -> axum::response::Response {
    let system = request["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut s = state.lock().unwrap();
    if request.get("response_format").is_some() {
        s.manager_calls += 1;
        let prompt = last_user_message(request);
        s.manager_prompts.push(prompt);
        return match s.manager.pop_front() {
            Some(a) => json_reply(&a, (200, 20)),
            None => error_reply("scripted LLM: no manager answers left"),
        };
    }
    if system.contains("concise, one-line Git commit messages") || request["stream"] != true {
        s.commit_calls += 1;
        return json_reply("Add the requested change", (100, 8));
    }
    s.edit_calls += 1;
    let asked = last_user_message(request);
    s.agent_prompts.push(asked.clone());
    let known = s
        .edits_by_prompt
        .as_ref()
        .and_then(|known| known.get(&asked).cloned());
    let edit = match known {
        Some(edit) => edit,
        None => {
            let Some(edit) = s.edits.pop_front() else {
                return error_reply("scripted LLM: no edits left");
            };
            if let Some(known) = s.edits_by_prompt.as_mut() {
                known.insert(asked, edit.clone());
            }
            edit
        }
    };
    // One burst of server-sent events per part; the stream pauses between parts.
    let bursts: Vec<String> = edit
        .split(PAUSE)
        .map(|part| {
            part.split_inclusive('\n')
                .map(|piece| {
                    let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                    format!("data: {chunk}\n\n")
                })
                .collect()
        })
        .collect();
    let stream = futures_util::stream::iter(bursts.into_iter().enumerate()).then(
        |(i, mut burst)| async move {
            if i > 0 {
                tokio::time::sleep(PAUSE_FOR).await;
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(std::mem::take(&mut burst)))
        },
    );
    let done = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from_static(b"data: [DONE]\n\n"))
    });
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream.chain(done)))
        .unwrap()
}
