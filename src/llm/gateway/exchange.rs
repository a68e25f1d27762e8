//! One metered, budgeted call: the budget reservation, forwarding to the job's upstream (whole
//! answers and streamed ones), and metering that happens exactly once per call, whether the
//! answer went through or the call was cut short.

use super::ledger::{Refusal, Reservation};
use super::replay::{record_exchange, replay};
use super::{error, lock, Grant, Inner};
use crate::job::JobSpec;
use crate::llm::cassette::{Exchange, RequestSummary};
use crate::llm::meter::{self, StreamMeter, Tokens};
use crate::state::JobId;
use crate::store::{BudgetEvent, EventBody, Role, Usage};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// One metered, budgeted exchange for `role`.
pub(super) async fn exchange(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    mut request: Value,
    mut body: Bytes,
) -> Response {
    let reservation = match reserve(inner, grant, role, &request).await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    if let Some(r) = &reservation {
        if cap_output(&mut request, r.output) {
            body = Bytes::from(serde_json::to_vec(&request).expect("JSON serializes"));
        }
    }
    let summary = RequestSummary {
        model: request["model"].as_str().unwrap_or_default().to_string(),
        stream: request["stream"].as_bool().unwrap_or(false),
        messages: request["messages"].as_array().map_or(0, Vec::len),
    };
    let metered = Metered::new(inner, grant, role, &summary.model, &request, reservation);
    if let Some(path) = grant.spec.llm.replay.clone() {
        return replay(inner, grant, role, path, metered).await;
    }
    forward(inner, grant, request, summary, body, metered).await
}

/// The output cap a request names (`max_completion_tokens`, else `max_tokens`).
fn requested_output(request: &Value) -> Option<u64> {
    request["max_completion_tokens"]
        .as_u64()
        .or_else(|| request["max_tokens"].as_u64())
}

/// Lowers the request's output cap to `output` (the reservation's) when it asks for more or
/// names none and the budget allows less than the default. A request naming no cap gets
/// `max_tokens`, or `max_completion_tokens` for the reasoning models that refuse the former.
/// Returns whether the request changed.
fn cap_output(request: &mut Value, output: u64) -> bool {
    let asked = requested_output(request);
    let lower = match asked {
        Some(asked) => output < asked,
        None => output < super::ledger::DEFAULT_OUTPUT_TOKENS,
    };
    if !lower {
        return false;
    }
    let named: Vec<&str> = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .filter(|k| request.get(*k).is_some())
        .collect();
    let fields = if named.is_empty() {
        let model = request["model"].as_str().unwrap_or_default();
        let bare = model.rsplit('/').next().unwrap_or(model);
        let reasoning = bare.starts_with("gpt-5")
            || (bare.starts_with('o') && bare[1..].starts_with(|c: char| c.is_ascii_digit()));
        vec![if reasoning {
            "max_completion_tokens"
        } else {
            "max_tokens"
        }]
    } else {
        named
    };
    for field in fields {
        request[field] = json!(output);
    }
    true
}

/// Reserves the call's worst case against the job's budget (nothing to reserve without one).
/// A call that cannot fit is refused (402) and the job is told to stop.
async fn reserve(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    request: &Value,
) -> Result<Option<Reservation>, Response> {
    let budget = grant.spec.budget;
    if budget.tokens.is_none() && budget.usd.is_none() {
        return Ok(None);
    }
    let model = request["model"].as_str().unwrap_or_default();
    let price = inner.prices.price(model);
    if !inner.ledger.knows(&grant.job) {
        let job = grant.job.clone();
        match inner.store.call(move |s| s.job_usage(&job)).await {
            Ok(used) => inner.ledger.load(&grant.job, &used.total()),
            Err(e) => {
                return Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "runner_error",
                    e.to_string(),
                ))
            }
        }
    }
    if let (Some(_), None) = (budget.usd, price) {
        let why = super::unpriced_budget(model);
        return Err(refuse(
            inner,
            grant,
            role,
            Refusal {
                why,
                used: (0, 0.0),
            },
        )
        .await);
    }
    let prompt = meter::prompt_reserve(request);
    match inner
        .ledger
        .reserve(&grant.job, budget, price, prompt, requested_output(request))
    {
        Ok(r) => Ok(Some(r)),
        Err(refusal) => Err(refuse(inner, grant, role, refusal).await),
    }
}

/// Refuses a call for the job's budget and signals the job to stop. The first refusal of an
/// attempt is recorded as a `budget` event (later ones would only repeat it).
async fn refuse(inner: &Arc<Inner>, grant: &Grant, role: Role, refusal: Refusal) -> Response {
    let budget = grant.spec.budget;
    let first = {
        let mut spent = lock(&inner.budget_spent);
        let signal = spent.entry(grant.job.clone()).or_default();
        let first = !signal.is_cancelled();
        signal.cancel();
        first
    };
    if first {
        let event = EventBody::Budget(BudgetEvent {
            role,
            used_tokens: refusal.used.0,
            used_usd: refusal.used.1,
            limit_tokens: budget.tokens,
            limit_usd: budget.usd,
        });
        let (job, n) = (grant.job.clone(), grant.attempt);
        if let Err(e) = inner
            .store
            .call(move |s| s.add_event(&job, n, &event))
            .await
        {
            tracing::warn!(job = %grant.job, "cannot record the budget refusal: {e}");
        }
    }
    error(
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
        format!(
            "runner gateway: job {} is stopped: {}",
            grant.job, refusal.why
        ),
    )
}

/// One call's metering: settles its reservation and records its usage exactly once, when the
/// answer is through or, for a call cut short (the client hung up, the job was stopped or
/// cancelled, the runner shut down), when it is dropped: then with its prompt and the
/// completion received so far, estimated where the upstream reported nothing.
pub(super) struct Metered {
    inner: Arc<Inner>,
    job: JobId,
    attempt: u32,
    role: Role,
    model: String,
    /// Estimated prompt tokens, for a call that ends without the upstream's usage.
    prompt_estimate: u64,
    reservation: Option<Reservation>,
    /// What a streamed answer sent so far.
    pub stream: StreamMeter,
    /// Recorded (or discarded): nothing is left to do on drop.
    done: bool,
}

impl Metered {
    fn new(
        inner: &Arc<Inner>,
        grant: &Grant,
        role: Role,
        model: &str,
        request: &Value,
        reservation: Option<Reservation>,
    ) -> Metered {
        Metered {
            inner: inner.clone(),
            job: grant.job.clone(),
            attempt: grant.attempt,
            role,
            model: model.to_string(),
            prompt_estimate: meter::prompt_estimate(request),
            reservation,
            stream: StreamMeter::default(),
            done: false,
        }
    }

    /// The most output tokens this call may produce, when the job has a budget.
    fn output_limit(&self) -> Option<u64> {
        self.reservation.as_ref().map(|r| r.output)
    }

    /// The tokens of the streamed answer so far.
    fn stream_tokens(&mut self) -> Tokens {
        self.stream.tokens(self.prompt_estimate)
    }

    /// The usage row of `tokens`, settled against the reservation (at most what it holds).
    fn settle(&mut self, tokens: Tokens) -> Usage {
        self.done = true;
        let tokens = match self.reservation.as_mut() {
            Some(r) => r.settle(tokens),
            None => tokens,
        };
        self.reservation = None;
        let cost = self
            .inner
            .prices
            .cost(&self.model, tokens.prompt, tokens.completion);
        Usage {
            requests: 1,
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            cost_usd: cost.unwrap_or(0.0),
            unpriced_requests: u64::from(cost.is_none()),
            estimated_requests: u64::from(!tokens.reported),
        }
    }

    /// Records the call's usage. Awaited before the answer completes, so the next call sees it
    /// (its reservation sees it at once, in the ledger).
    pub async fn record(&mut self, tokens: Tokens) {
        if self.done {
            return;
        }
        let usage = self.settle(tokens);
        let (job, n, role, model) = (
            self.job.clone(),
            self.attempt,
            self.role,
            self.model.clone(),
        );
        if let Err(e) = self
            .inner
            .store
            .call(move |s| s.add_usage(&job, n, role, &model, &usage))
            .await
        {
            tracing::error!("cannot record LLM usage: {e}");
        }
    }

    /// Nothing to record: the upstream refused the call or was never reached.
    pub fn discard(&mut self) {
        self.done = true;
        self.reservation = None;
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Cut short: what was received so far, written now (the task may not run again).
        let tokens = self.stream_tokens();
        let usage = self.settle(tokens);
        let result = self
            .inner
            .store
            .call_now(|s| s.add_usage(&self.job, self.attempt, self.role, &self.model, &usage));
        if let Err(e) = result {
            tracing::error!("cannot record the usage of an interrupted LLM call: {e}");
        }
    }
}

/// The upstream base URL of a job: `llm.base_url`, else the runner's OPENAI_BASE_URL.
pub fn upstream_base(spec: &JobSpec) -> Option<String> {
    spec.llm
        .base_url
        .clone()
        .or_else(|| {
            std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            std::env::var("OPENAI_API_BASE")
                .ok()
                .filter(|s| !s.is_empty())
        })
}

async fn forward(
    inner: &Arc<Inner>,
    grant: &Grant,
    mut request: Value,
    summary: RequestSummary,
    mut body: Bytes,
    mut metered: Metered,
) -> Response {
    let Some(base) = upstream_base(&grant.spec) else {
        metered.discard();
        return error(
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "runner gateway: no upstream: set llm.base_url in the job or OPENAI_BASE_URL where the runner runs",
        );
    };
    // A streamed call is metered from the upstream's own counts: asked for when the client did
    // not, and then removed from the stream the client gets.
    if summary.stream && request["stream_options"]["include_usage"] != true {
        if !request["stream_options"].is_object() {
            request["stream_options"] = json!({});
        }
        request["stream_options"]["include_usage"] = json!(true);
        body = Bytes::from(serde_json::to_vec(&request).expect("JSON serializes"));
        metered.stream = StreamMeter::stripping_usage();
    }
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    // Rate limits are waited out there; what comes back is a success or the client's answer.
    let (upstream, slot) = match super::upstream::send(inner, grant, metered.role, &url, body).await
    {
        Ok(sent) => (sent.response, sent.slot),
        Err(answer) => {
            // A call that ran past its deadline may have been charged: metered (on drop) with
            // its prompt. A refused or unreachable one was not.
            if answer.status() != StatusCode::GATEWAY_TIMEOUT {
                metered.discard();
            }
            return answer;
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        // Refused by the upstream (its typed error body is passed on): not charged.
        metered.discard();
    }
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if content_type.starts_with("text/event-stream") {
        let streamed = stream_through(
            inner.clone(),
            grant,
            summary,
            status,
            content_type,
            upstream,
            metered,
        );
        return super::upstream::holding(streamed, slot);
    }
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => return super::upstream::failed(&url, &e),
    };
    drop(slot);
    if status.is_success() {
        let tokens = meter::from_body(&request, &bytes);
        metered.record(tokens).await;
        record_exchange(
            inner,
            grant,
            Exchange {
                role: metered.role,
                request: summary,
                status: status.as_u16(),
                content_type: content_type.clone(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
                prompt_tokens: tokens.prompt,
                completion_tokens: tokens.completion,
            },
        );
    }
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// The end a stream cut at its output limit gets: a last event saying why (as an upstream that
/// reached `max_tokens` would) and `[DONE]`.
const CUT_ENDING: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";

/// Passes a streamed answer through chunk by chunk, metering it on the way. Usage is recorded
/// when `[DONE]` goes by (before the client sees it), or when the stream ends, the client goes
/// away, or the answer runs past its output limit (then the stream is cut there).
#[allow(clippy::too_many_arguments)]
fn stream_through(
    inner: Arc<Inner>,
    grant: &Grant,
    summary: RequestSummary,
    status: StatusCode,
    content_type: String,
    upstream: reqwest::Response,
    mut metered: Metered,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let grant = Grant {
        job: grant.job.clone(),
        attempt: grant.attempt,
        spec: grant.spec.clone(),
    };
    let ct = content_type.clone();
    // The upstream's answer may run a little past the cap it was given (token counts here are
    // estimated from text): it is cut a quarter beyond, and recorded at most at the cap.
    let cut_at = metered.output_limit().map(|l| l + l / 4);
    tokio::spawn(async move {
        let mut recorded = String::new();
        let mut chunks = upstream.bytes_stream();
        loop {
            let next = tokio::select! {
                next = chunks.next() => next,
                () = tx.closed() => break, // the client went away
            };
            let Some(chunk) = next else { break };
            let bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            };
            let pass = metered.stream.feed(&bytes);
            // The cassette keeps what the client got.
            if grant.spec.llm.record.is_some() {
                recorded.push_str(&String::from_utf8_lossy(&pass));
            }
            // Record usage before the client sees the end of the answer, so its next call
            // counts this one.
            if status.is_success() && metered.stream.done() {
                let tokens = metered.stream_tokens();
                metered.record(tokens).await;
            }
            if !pass.is_empty() && tx.send(Ok(Bytes::from(pass))).await.is_err() {
                break;
            }
            let over = cut_at.is_some_and(|c| metered.stream.completion_so_far() > c);
            if over && !metered.stream.done() {
                tracing::warn!(job = %grant.job, "an LLM answer ran past its output limit: cut");
                let tokens = metered.stream_tokens();
                metered.record(tokens).await;
                recorded.push_str(CUT_ENDING);
                let _ = tx.send(Ok(Bytes::from_static(CUT_ENDING.as_bytes()))).await;
                break;
            }
        }
        let rest = metered.stream.rest();
        if !rest.is_empty() {
            recorded.push_str(&String::from_utf8_lossy(&rest));
            let _ = tx.send(Ok(Bytes::from(rest))).await;
        }
        drop(tx);
        let tokens = metered.stream_tokens();
        if status.is_success() {
            metered.record(tokens).await;
            record_exchange(
                &inner,
                &grant,
                Exchange {
                    role: metered.role,
                    request: summary,
                    status: status.as_u16(),
                    content_type: ct,
                    body: recorded,
                    prompt_tokens: tokens.prompt,
                    completion_tokens: tokens.completion,
                },
            );
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use crate::job::JobSpec;
    use crate::llm::gateway::{Gateway, ManagerCallError};
    use crate::llm::prices::Prices;
    use crate::state::JobId;
    use crate::store::tests_support::{spec, submit_one};
    use crate::store::{EventBody, Role, SharedStore, Store, Usage};

    /// A gateway on a fresh store holding one job `name` that has already used 60 tokens
    /// (attempt `attempt`, agent role), with a budget of 50 tokens: spent.
    async fn spent_job(
        name: &str,
        attempt: u32,
    ) -> (tempfile::TempDir, SharedStore, JobId, Gateway, JobSpec) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, name);
        let used = Usage {
            requests: 1,
            prompt_tokens: 40,
            completion_tokens: 20,
            ..Usage::default()
        };
        store
            .add_usage(&id, attempt, Role::Agent, "m", &used)
            .unwrap();
        let store = SharedStore::new(store);
        let gateway = Gateway::start(store.clone(), dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let mut job = spec(name);
        job.budget.tokens = Some(50);
        (dir, store, id, gateway, job)
    }

    /// A manager call of attempt `n` is refused for the job's budget.
    async fn assert_refused_for_budget(gateway: &Gateway, id: &JobId, n: u32, job: &JobSpec) {
        let refused = gateway
            .manager_call(
                id,
                n,
                job,
                serde_json::json!({"model": "m", "messages": []}),
            )
            .await;
        assert!(
            matches!(refused, Err(ManagerCallError::Budget(_))),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_every_call_and_records_one_budget_event() {
        let (_dir, store, id, gateway, job) = spent_job("spent", 1).await;
        for _ in 0..3 {
            assert_refused_for_budget(&gateway, &id, 1, &job).await;
        }
        let events = store.call(move |s| s.events(&id)).await.unwrap();
        let budget: Vec<_> = events
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::Budget(b) => Some((e.attempt, b)),
                _ => None,
            })
            .collect();
        assert_eq!(
            budget.len(),
            1,
            "one event, not one per refused call: {budget:?}"
        );
        let (attempt, b) = &budget[0];
        assert_eq!(*attempt, Some(1));
        assert_eq!(
            (b.role, b.used_tokens, b.limit_tokens, b.limit_usd),
            (Role::Manager, 60, Some(50), None)
        );
    }

    /// Best-of-N: one candidate ending (its grant revoked) must not drop the job's budget
    /// signal that the other candidates hold.
    #[tokio::test]
    async fn an_attempt_ending_keeps_the_budget_signal_of_the_jobs_other_attempts() {
        let (_dir, _store, id, gateway, job) = spent_job("pair", 2).await;
        gateway.grant(&id, 1, &job).await.unwrap();
        gateway.grant(&id, 2, &job).await.unwrap();
        let second_holds = gateway.budget_signal(&id);
        gateway.revoke(&id, 1).await.unwrap();
        assert_refused_for_budget(&gateway, &id, 2, &job).await;
        assert!(
            second_holds.is_cancelled(),
            "the running attempt was not told that the budget is spent"
        );
    }

    #[tokio::test]
    async fn a_call_is_metered_under_the_model_it_named_cut_to_200_characters() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "models");
        let store = SharedStore::new(store);
        let gateway = Gateway::start(store.clone(), dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let answer = |n| crate::llm::cassette::Exchange {
            role: Role::Manager,
            request: crate::llm::cassette::RequestSummary {
                model: "recorded".into(),
                stream: false,
                messages: 1,
            },
            status: 200,
            content_type: "application/json".into(),
            body: serde_json::json!({"choices": [{"message": {"content": format!("a{n}")}}]})
                .to_string(),
            prompt_tokens: 10,
            completion_tokens: 2,
        };
        let cassette = dir.path().join("cassette.jsonl");
        let lines: Vec<String> = (0..3)
            .map(|n| serde_json::to_string(&answer(n)).unwrap())
            .collect();
        std::fs::write(&cassette, lines.join("\n") + "\n").unwrap();
        let mut job = spec("models");
        job.llm.replay = Some(cassette);
        let hostile = format!("<b>{}", "x".repeat(300));
        for model in ["gpt-4o-mini", hostile.as_str(), "gpt-4o-mini"] {
            let request = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
            gateway.manager_call(&id, 1, &job, request).await.unwrap();
        }
        let rows = store
            .call(move |s| s.job_usage_by_model(&id))
            .await
            .unwrap();
        let rows: Vec<(Role, String, u64, u64)> = rows
            .into_iter()
            .map(|m| (m.role, m.model, m.usage.requests, m.usage.prompt_tokens))
            .collect();
        assert_eq!(
            rows,
            [
                (Role::Manager, hostile[..200].to_string(), 1, 10),
                (Role::Manager, "gpt-4o-mini".into(), 2, 20),
            ]
        );
    }

    #[tokio::test]
    async fn a_usd_budget_refuses_a_model_without_a_price_and_names_the_price_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "unpriced");
        let store = SharedStore::new(store);
        let gateway = Gateway::start(store, dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let mut job = spec("unpriced");
        job.budget.usd = Some(1.0);
        let refused = gateway
            .manager_call(
                &id,
                1,
                &job,
                serde_json::json!({"model": "mock", "messages": []}),
            )
            .await;
        let Err(ManagerCallError::Budget(message)) = refused else {
            panic!("{refused:?}")
        };
        assert!(
            message.contains("model \"mock\": the model has no price")
                && message.contains("RUNNER_PRICES")
                && message.contains("prices.json"),
            "{message}"
        );
        assert!(gateway.check_budget_prices(&job).is_ok(), "a command job");
    }
}
