//! One metered, budgeted call: the budget check, usage recording, and forwarding to the job's
//! upstream (whole answers and streamed ones).

use super::replay::{record_exchange, replay};
use super::{error, lock, Grant, Inner};
use crate::job::JobSpec;
use crate::llm::cassette::{Exchange, RequestSummary};
use crate::llm::meter::{self, StreamMeter, Tokens};
use crate::store::{BudgetEvent, EventBody, Role, Usage};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;

/// One metered, budgeted exchange for `role`.
pub(super) async fn exchange(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    request: Value,
    body: Bytes,
) -> Response {
    if let Some(refusal) = over_budget(inner, grant, role).await {
        return refusal;
    }
    let summary = RequestSummary {
        model: request["model"].as_str().unwrap_or_default().to_string(),
        stream: request["stream"].as_bool().unwrap_or(false),
        messages: request["messages"].as_array().map_or(0, Vec::len),
    };
    if let Some(path) = grant.spec.llm.replay.clone() {
        return replay(inner, grant, role, &summary, path).await;
    }
    forward(inner, grant, role, request, summary, body).await
}

/// Refuses the call when the job's budget is already spent (so a job overshoots by at most the
/// call that crossed it) and signals the job to stop. The first refusal of an attempt is
/// recorded as a `budget` event (later ones would only repeat it).
async fn over_budget(inner: &Arc<Inner>, grant: &Grant, role: Role) -> Option<Response> {
    let budget = grant.spec.budget;
    if budget.tokens.is_none() && budget.usd.is_none() {
        return None;
    }
    let job = grant.job.clone();
    let used = match inner.store.call(move |s| s.job_usage(&job)).await {
        Ok(u) => u.total(),
        Err(e) => {
            return Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "runner_error",
                e.to_string(),
            ))
        }
    };
    let why = match (budget.tokens, budget.usd) {
        (Some(t), _) if used.tokens() >= t => {
            format!("its budget of {t} tokens is spent ({} used)", used.tokens())
        }
        (_, Some(u)) if used.cost_usd >= u => format!(
            "its budget of ${u:.4} is spent (${:.4} used)",
            used.cost_usd
        ),
        _ => return None,
    };
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
            used_tokens: used.tokens(),
            used_usd: used.cost_usd,
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
    Some(error(
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
        format!("runner gateway: job {} is stopped: {why}", grant.job),
    ))
}

/// Adds one call's usage to the attempt, under the model the request named. Awaited before the answer completes, so the next call's
/// budget check sees it.
pub(super) async fn record_usage(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    model: &str,
    tokens: Tokens,
) {
    let cost = inner.prices.cost(model, tokens.prompt, tokens.completion);
    let usage = Usage {
        requests: 1,
        prompt_tokens: tokens.prompt,
        completion_tokens: tokens.completion,
        cost_usd: cost.unwrap_or(0.0),
        unpriced_requests: u64::from(cost.is_none()),
    };
    let (job, n, model) = (grant.job.clone(), grant.attempt, model.to_string());
    if let Err(e) = inner
        .store
        .call(move |s| s.add_usage(&job, n, role, &model, &usage))
        .await
    {
        tracing::error!("cannot record LLM usage: {e}");
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
    role: Role,
    request: Value,
    summary: RequestSummary,
    body: Bytes,
) -> Response {
    let Some(base) = upstream_base(&grant.spec) else {
        return error(
            StatusCode::BAD_GATEWAY,
            "no_upstream",
            "runner gateway: no upstream: set llm.base_url in the job or OPENAI_BASE_URL where the runner runs",
        );
    };
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    // Rate limits are waited out there; what comes back is a success or the client's answer.
    let (upstream, slot) = match super::upstream::send(inner, grant, role, &url, body).await {
        Ok(sent) => (sent.response, sent.slot),
        Err(answer) => return answer,
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
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
            role,
            request,
            summary,
            status,
            content_type,
            upstream,
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
        record_usage(inner, grant, role, &summary.model, tokens).await;
        record_exchange(
            inner,
            grant,
            Exchange {
                role,
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

/// Passes a streamed answer through chunk by chunk, metering it on the way; usage is recorded
/// when the stream ends (or the client goes away).
#[allow(clippy::too_many_arguments)]
fn stream_through(
    inner: Arc<Inner>,
    grant: &Grant,
    role: Role,
    request: Value,
    summary: RequestSummary,
    status: StatusCode,
    content_type: String,
    upstream: reqwest::Response,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let grant = Grant {
        job: grant.job.clone(),
        attempt: grant.attempt,
        spec: grant.spec.clone(),
    };
    let ct = content_type.clone();
    tokio::spawn(async move {
        let mut meter = StreamMeter::default();
        let mut recorded = String::new();
        let mut metered = false;
        let mut chunks = upstream.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    meter.feed(&bytes);
                    if grant.spec.llm.record.is_some() {
                        recorded.push_str(&String::from_utf8_lossy(&bytes));
                    }
                    // Record usage before the client sees the end of the answer, so its next
                    // call's budget check counts this one.
                    if !metered && status.is_success() && bytes.windows(6).any(|w| w == b"[DONE]") {
                        metered = true;
                        let tokens = meter.tokens(&request);
                        record_usage(&inner, &grant, role, &summary.model, tokens).await;
                    }
                    if tx.send(Ok(bytes)).await.is_err() {
                        break; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
        let tokens = meter.tokens(&request);
        if status.is_success() {
            if !metered {
                record_usage(&inner, &grant, role, &summary.model, tokens).await;
            }
            record_exchange(
                &inner,
                &grant,
                Exchange {
                    role,
                    request: summary,
                    status: status.as_u16(),
                    content_type: ct,
                    body: recorded,
                    prompt_tokens: tokens.prompt,
                    completion_tokens: tokens.completion,
                },
            );
        }
        drop(tx);
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
    use crate::llm::gateway::{Gateway, ManagerCallError};
    use crate::llm::prices::Prices;
    use crate::store::tests_support::{spec, submit_one};
    use crate::store::{EventBody, Role, SharedStore, Store, Usage};

    #[tokio::test]
    async fn a_spent_budget_refuses_every_call_and_records_one_budget_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "spent");
        let used = Usage {
            requests: 1,
            prompt_tokens: 40,
            completion_tokens: 20,
            ..Usage::default()
        };
        store.add_usage(&id, 1, Role::Agent, "m", &used).unwrap();
        let store = SharedStore::new(store);
        let gateway = Gateway::start(store.clone(), dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let mut job = spec("spent");
        job.budget.tokens = Some(50);
        for _ in 0..3 {
            let refused = gateway
                .manager_call(
                    &id,
                    1,
                    &job,
                    serde_json::json!({"model": "m", "messages": []}),
                )
                .await;
            assert!(
                matches!(refused, Err(ManagerCallError::Budget(_))),
                "{refused:?}"
            );
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
}
