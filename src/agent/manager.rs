//! The manager: who decides each turn. `llm` asks the manager model through the gateway (metered
//! as role `manager`, counted against the job's budget); `script` replays the job's fixed steps;
//! `none` is handled by the driver (one message, then finish).
//!
//! A manager call is bounded: its answer may have at most `manager.max_tokens` tokens and the
//! call may take at most `manager.call_timeout`. An answer cut at either bound counts as a bad
//! answer, like invalid JSON: it is returned once with the error, and a second bad answer ends
//! the job with `manager_error`.

use super::protocol::{self, TurnContext};
use crate::job::{JobSpec, ManagerStep};
use crate::llm::gateway::ManagerCallError;
use crate::llm::Gateway;
use crate::state::JobId;
use serde_json::{json, Value};

/// Why the manager could not give a next step.
#[derive(Debug)]
pub enum ManagerError {
    /// The budget is spent (the gateway refused).
    Budget(String),
    /// The provider refused the call in a way waiting cannot cure: what happened and the fix.
    Provider(String),
    /// Anything else: the job fails with reason `manager_error`.
    Failed(String),
}

pub enum Manager {
    Llm {
        gateway: Gateway,
        job: JobId,
        attempt: u32,
        spec: Box<JobSpec>,
    },
    Script {
        steps: Vec<ManagerStep>,
        next: usize,
    },
}

impl Manager {
    /// The next step for this turn.
    pub async fn decide(&mut self, ctx: &TurnContext) -> Result<ManagerStep, ManagerError> {
        match self {
            Manager::Script { steps, next } => {
                let step = steps.get(*next).cloned().ok_or_else(|| {
                    ManagerError::Failed(format!(
                        "the manager script ended after {} steps without `finish`",
                        steps.len()
                    ))
                })?;
                *next += 1;
                Ok(step)
            }
            Manager::Llm {
                gateway,
                job,
                attempt,
                spec,
            } => {
                let mut messages = protocol::messages(ctx);
                let first = ask(gateway, job, *attempt, spec, &messages).await?;
                let why = match first.step() {
                    Ok(step) => return Ok(step),
                    Err(why) => why,
                };
                // Returned once with the error; a second bad answer fails the job.
                if let Answer::Text(text) | Answer::Cut(text) = &first {
                    messages.push(json!({"role": "assistant", "content": text}));
                }
                messages.push(json!({"role": "user", "content": format!(
                    "Your answer was invalid: {why}. Answer again, briefly, with exactly one JSON object with the keys progress, thought, action and argument."
                )}));
                let second = ask(gateway, job, *attempt, spec, &messages).await?;
                second.step().map_err(|again| {
                    ManagerError::Failed(format!(
                        "the manager answered invalidly twice: {why}; then: {again}"
                    ))
                })
            }
        }
    }
}

/// What one manager call gave.
enum Answer {
    /// A whole answer.
    Text(String),
    /// An answer cut at `manager.max_tokens` (what came of it).
    Cut(String),
    /// No answer within `manager.call_timeout`.
    Late(std::time::Duration),
}

impl Answer {
    /// The step the answer gives, or why it gives none.
    fn step(&self) -> Result<ManagerStep, String> {
        match self {
            Answer::Text(text) => protocol::parse_answer(text),
            Answer::Cut(_) => Err(
                "it was cut off at the most output a manager answer may have (manager.max_tokens)"
                    .into(),
            ),
            Answer::Late(deadline) => Err(format!(
                "its call ran past its {} deadline (manager.call_timeout)",
                crate::job::units::format_duration(*deadline)
            )),
        }
    }
}

async fn ask(
    gateway: &Gateway,
    job: &JobId,
    attempt: u32,
    spec: &JobSpec,
    messages: &[Value],
) -> Result<Answer, ManagerError> {
    let request = json!({
        "model": spec.manager.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": spec.manager.max_tokens,
        "response_format": {"type": "json_object"},
    });
    let answer = match gateway.manager_call(job, attempt, spec, request).await {
        Ok(answer) => answer,
        Err(ManagerCallError::Deadline(deadline)) => return Ok(Answer::Late(deadline)),
        Err(ManagerCallError::Budget(why)) => return Err(ManagerError::Budget(why)),
        Err(ManagerCallError::Refused(why)) => return Err(ManagerError::Provider(why)),
        Err(other) => {
            return Err(ManagerError::Failed(format!(
                "manager call failed: {other}"
            )))
        }
    };
    let choice = &answer["choices"][0];
    let text = choice["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ManagerError::Failed("the manager's reply has no message content".into()))?;
    Ok(if choice["finish_reason"] == "length" {
        Answer::Cut(text)
    } else {
        Answer::Text(text)
    })
}

#[cfg(test)]
mod tests {
    //! The manager's calls through a real gateway to a scripted upstream on loopback.

    use super::*;
    use crate::llm::Prices;
    use crate::store::tests_support::{spec, submit_one};
    use crate::store::{EventBody, SharedStore, Store};
    use axum::body::{Body, Bytes};
    use axum::response::Response;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// How the scripted upstream answers its `n`th call (from 0); `None` never answers.
    type Script = Arc<dyn Fn(usize) -> Option<Response> + Send + Sync>;

    struct Upstream {
        url: String,
        calls: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<Value>>>,
    }

    async fn upstream(script: Script) -> Upstream {
        let calls = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (c, b) = (calls.clone(), bodies.clone());
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |body: Bytes| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                b.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                let answer = script(n);
                async move {
                    match answer {
                        Some(answer) => answer,
                        None => std::future::pending().await,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { url, calls, bodies }
    }

    fn json(status: u16, body: Value, headers: &[(&str, &str)]) -> Response {
        let mut answer = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        for (name, value) in headers {
            answer = answer.header(*name, *value);
        }
        answer.body(Body::from(body.to_string())).unwrap()
    }

    fn step(finish_reason: &str) -> Response {
        let content =
            json!({"progress": "p", "thought": "t", "action": "finish", "argument": "done"});
        json(
            200,
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": finish_reason}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}}),
            &[],
        )
    }

    /// A manager of a submitted job whose upstream is `url`, with `call_timeout`.
    async fn manager(
        url: &str,
        call_timeout: Duration,
    ) -> (Manager, SharedStore, JobId, tempfile::TempDir) {
        manager_of(url, call_timeout, Duration::from_secs(60)).await
    }

    /// A manager as [`manager`] makes, of a job with `timeout`.
    async fn manager_of(
        url: &str,
        call_timeout: Duration,
        timeout: Duration,
    ) -> (Manager, SharedStore, JobId, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "m");
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        let store = SharedStore::new(store);
        let gateway = Gateway::start(store.clone(), dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let mut job = spec("m");
        job.llm.base_url = Some(url.to_string());
        job.llm.api_key_env = "RUNNER_TEST_NO_SUCH_KEY".into();
        job.manager.call_timeout = call_timeout;
        job.timeout = timeout;
        let manager = Manager::Llm {
            gateway,
            job: id.clone(),
            attempt: 1,
            spec: Box::new(job),
        };
        (manager, store, id, dir)
    }

    fn context() -> TurnContext {
        TurnContext {
            task: "add greet".into(),
            turn: 1,
            max_turns: 5,
            files_changed: vec![],
            last_verify: None,
            history: Default::default(),
            new_output: String::new(),
            operator: vec![],
        }
    }

    async fn ends_past_its_deadline_twice(script: Script) {
        let llm = upstream(script).await;
        let (mut manager, ..) = manager(&llm.url, Duration::from_secs(1)).await;
        let started = Instant::now();
        let decided = manager.decide(&context()).await;
        let took = started.elapsed();
        let Err(ManagerError::Failed(why)) = decided else {
            panic!("{decided:?}")
        };
        assert!(
            why.contains("its call ran past its 1s deadline (manager.call_timeout); then: its call ran past its 1s deadline"),
            "{why}"
        );
        assert_eq!(llm.calls.load(Ordering::SeqCst), 2, "one retry");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[tokio::test]
    async fn a_manager_that_never_answers_is_a_bad_answer_twice_within_its_deadline() {
        ends_past_its_deadline_twice(Arc::new(|_| None)).await;
    }

    #[tokio::test]
    async fn a_manager_that_streams_forever_is_a_bad_answer_twice_within_its_deadline() {
        ends_past_its_deadline_twice(Arc::new(|_| {
            let forever = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"more \"}}]}\n\n";
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), ()))
            });
            Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(forever))
                    .unwrap(),
            )
        }))
        .await;
        // The same, as a JSON body that never ends.
        ends_past_its_deadline_twice(Arc::new(|_| {
            let forever = futures_util::stream::unfold(true, |first| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let chunk = if first {
                    "{\"choices\": ["
                } else {
                    "\"more\", "
                };
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), false))
            });
            Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(forever))
                    .unwrap(),
            )
        }))
        .await;
    }

    #[tokio::test]
    async fn an_answer_cut_at_the_output_cap_is_returned_once_and_the_call_carries_the_cap() {
        let llm = upstream(Arc::new(|n| {
            Some(step(if n == 0 { "length" } else { "stop" }))
        }))
        .await;
        let (mut manager, ..) = manager(&llm.url, Duration::from_secs(5)).await;
        let decided = manager.decide(&context()).await.unwrap();
        assert_eq!(decided.action, crate::job::ManagerAction::Finish);
        let bodies = llm.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["max_tokens"], 1000);
        let retold = bodies[1]["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(retold.contains("cut off at the most output"), "{retold}");
    }

    #[tokio::test]
    async fn rate_limited_manager_calls_are_waited_out_and_the_waits_are_events() {
        let llm = upstream(Arc::new(|n| {
            Some(match n {
                0 => json(
                    429,
                    json!({"error": {"message": "slow down"}}),
                    &[("retry-after", "1")],
                ),
                1 => json(
                    503,
                    json!({"error": {"message": "busy"}}),
                    &[("retry-after", "1")],
                ),
                _ => step("stop"),
            })
        }))
        .await;
        // The deadline is shorter than the waits: they do not count against it.
        let (mut manager, store, id, _dir) = manager(&llm.url, Duration::from_secs(1)).await;
        let started = Instant::now();
        manager.decide(&context()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        let waits: Vec<_> = store
            .call(move |s| s.events(&id))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::Waiting(w) => Some((w.role, w.status, w.retry)),
                _ => None,
            })
            .collect();
        assert_eq!(
            waits,
            [
                (crate::store::Role::Manager, 429, 1),
                (crate::store::Role::Manager, 503, 2)
            ]
        );
    }

    #[tokio::test]
    async fn a_rate_limit_longer_than_the_job_has_left_is_not_waited_for() {
        let llm = upstream(Arc::new(|_| {
            Some(json(
                429,
                json!({"error": {"message": "slow down"}}),
                &[("retry-after", "10")],
            ))
        }))
        .await;
        let (mut manager, store, id, _dir) =
            manager_of(&llm.url, Duration::from_secs(5), Duration::from_secs(3)).await;
        let started = Instant::now();
        let decided = manager.decide(&context()).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let Err(ManagerError::Failed(why)) = decided else {
            panic!("{decided:?}")
        };
        assert!(
            why.contains("HTTP 429: runner gateway: the provider still limits the rate after 0s of waiting (it asks for 10s"),
            "{why}"
        );
        assert!(
            why.contains("a call waits at most 2s") || why.contains("a call waits at most 3s"),
            "{why}"
        );
        let events = store.call(move |s| s.events(&id)).await.unwrap();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.body, EventBody::Waiting(_))),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_key_ends_the_manager_with_the_fix() {
        let llm = upstream(Arc::new(|_| {
            Some(json(
                401,
                json!({"error": {"message": "Incorrect API key provided"}}),
                &[],
            ))
        }))
        .await;
        let (mut manager, ..) = manager(&llm.url, Duration::from_secs(5)).await;
        let decided = manager.decide(&context()).await;
        let Err(ManagerError::Provider(why)) = decided else {
            panic!("{decided:?}")
        };
        assert!(
            why.contains("HTTP 401: Incorrect API key provided): set RUNNER_TEST_NO_SUCH_KEY where the runner runs to a valid key for"),
            "{why}"
        );
        assert_eq!(llm.calls.load(Ordering::SeqCst), 1, "not sent again");
    }
}
