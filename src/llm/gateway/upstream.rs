//! Sending one call to the job's upstream, as a provider wants to be called: a rate limit (429,
//! or 503 with `Retry-After`) is waited out and the call sent again, at the time the provider
//! names (`Retry-After` in seconds or as an HTTP date, `x-ratelimit-reset-requests`/`-tokens`
//! like `6m0s`) or after a jittered exponential backoff, for at most [`MAX_WAIT`] a call; each
//! wait is a `waiting` event of the job. An optional limit of calls in flight per upstream
//! (`--llm-concurrency`) queues calls instead of provoking 429s. An answer that waiting cannot
//! cure (a bad key, an unknown model, a prompt longer than the model's context, a spent quota)
//! stops an agent job, like a spent budget does, with a detail that names the fix.
//!
//! A manager call is sent with its deadline (`manager.call_timeout`), counted for each sending
//! from the request to the answer's end; the waits between sendings are not counted.

use super::{error, lock, Grant, Inner};
use crate::state::{format_rfc3339, JobId};
use crate::store::{EventBody, Role, WaitingEvent};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The longest one call waits for the provider's rate limits, all its waits together (and never
/// past the job's timeout).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);
/// The wait after the first rate limit that names no time; doubled at each one after it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff between two sendings when the provider names no time.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The most of an error answer read (to tell what it says).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The gateway's state about upstreams: the concurrency limit with its slots per base URL, and
/// the stop signal of each job whose calls a provider refused for good.
#[derive(Default)]
pub(super) struct Upstreams {
    /// Most calls in flight per upstream; 0 is no limit.
    limit: AtomicUsize,
    /// One semaphore per upstream URL, made on its first call.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    stops: Mutex<HashMap<JobId, ProviderStop>>,
}

impl Upstreams {
    pub(super) fn set_limit(&self, calls: usize) {
        self.limit.store(calls, Ordering::Relaxed);
    }

    /// A slot for a call to `url`, once one is free; `None` when calls are not limited.
    async fn slot(&self, url: &str) -> Option<OwnedSemaphorePermit> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return None;
        }
        let semaphore = lock(&self.slots)
            .entry(url.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        semaphore.acquire_owned().await.ok()
    }

    /// The stop signal of `job`'s attempts.
    pub(super) fn stop(&self, job: &JobId) -> ProviderStop {
        lock(&self.stops).entry(job.clone()).or_default().clone()
    }

    /// Forgets `job`'s stop signal (its attempt ended; a retry starts afresh).
    pub(super) fn forget(&self, job: &JobId) {
        lock(&self.stops).remove(job);
    }
}

/// Fired when the provider refused one of a job's agent calls in a way waiting cannot cure; it
/// says why and what to fix.
#[derive(Clone, Debug, Default)]
pub struct ProviderStop {
    signal: CancellationToken,
    why: Arc<Mutex<Option<String>>>,
}

impl ProviderStop {
    /// Resolves once the job must stop.
    pub async fn fired(&self) {
        self.signal.cancelled().await;
    }

    /// Why the job must stop, once it must.
    pub fn why(&self) -> Option<String> {
        self.signal
            .is_cancelled()
            .then(|| lock(&self.why).clone().unwrap_or_default())
    }

    fn fire(&self, why: String) {
        lock(&self.why).get_or_insert(why);
        self.signal.cancel();
    }
}

/// The provider's answer to a call, holding its concurrency slot (if calls are limited) until
/// the answer is through.
pub(super) struct Sent {
    pub response: reqwest::Response,
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Sends the call to `url`, waiting out rate limits; an answer that is not a success comes
/// back as the response to give the client.
pub(super) async fn send(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    url: &str,
    body: Bytes,
) -> Result<Sent, Response> {
    // Known at the first rate limit: the most this call may wait in all.
    let mut most: Option<Duration> = None;
    let mut waited = Duration::ZERO;
    let mut retry = 0u32;
    loop {
        let slot = inner.upstreams.slot(url).await;
        let mut call = inner
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Ok(key) = std::env::var(&grant.spec.llm.api_key_env) {
            call = call.bearer_auth(key);
        }
        if role == Role::Manager {
            call = call.timeout(grant.spec.manager.call_timeout);
        }
        let response = call.send().await.map_err(|e| failed(url, &e))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(Sent { response, slot });
        }
        drop(slot);
        let headers = response.headers().clone();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let text = read_error(response).await;
        let answer = || {
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                [(header::CONTENT_TYPE, content_type.clone())],
                text.clone(),
            )
                .into_response()
        };
        let model = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(fix) = lasting(status, &text, grant, role, url, &model) {
            let detail = format!(
                "the LLM provider refused a {} call (HTTP {status}: {}): {fix}",
                role.as_str(),
                message_of(&text)
            );
            tracing::warn!(job = %grant.job, "{detail}");
            if role == Role::Manager {
                let refused = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                return Err(error(refused, "provider_refused", detail));
            }
            if grant.spec.is_agent() {
                inner.upstreams.stop(&grant.job).fire(detail);
            }
            return Err(answer());
        }
        let Some(wait) = rate_limit_wait(status, &headers, retry) else {
            return Err(answer());
        };
        let most = match most {
            Some(most) => most,
            None => *most.insert(longest_wait(inner, grant).await),
        };
        if waited + wait > most {
            return Err(error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                "rate_limited",
                format!(
                    "runner gateway: the provider still limits the rate after {} of waiting \
                     (it asks for {} more; a call waits at most {}): {}",
                    crate::job::units::format_duration(waited),
                    crate::job::units::format_duration(wait),
                    crate::job::units::format_duration(most),
                    message_of(&text)
                ),
            ));
        }
        retry += 1;
        waited += wait;
        let until = time::OffsetDateTime::now_utc() + wait;
        let event = EventBody::Waiting(WaitingEvent {
            role,
            status,
            until: format_rfc3339(until),
            retry,
        });
        let (job, n) = (grant.job.clone(), grant.attempt);
        if let Err(e) = inner
            .store
            .call(move |s| s.add_event(&job, n, &event))
            .await
        {
            tracing::warn!(job = %grant.job, "cannot record a wait for the provider: {e}");
        }
        tokio::time::sleep(wait).await;
    }
}

/// The most a call of `grant`'s attempt may wait in all: [`MAX_WAIT`], or less when the job's
/// timeout comes sooner (counted from the attempt's recorded start, as `supervise` counts it).
async fn longest_wait(inner: &Arc<Inner>, grant: &Grant) -> Duration {
    let (job, n) = (grant.job.clone(), grant.attempt);
    let started = inner
        .store
        .call(move |s| s.attempt(&job, n))
        .await
        .ok()
        .flatten()
        .and_then(|a| crate::state::parse_rfc3339(&a.started_at));
    let elapsed = started
        .and_then(|t| (time::OffsetDateTime::now_utc() - t).try_into().ok())
        .unwrap_or(Duration::ZERO);
    MAX_WAIT.min(grant.spec.timeout.saturating_sub(elapsed))
}

/// The response for a call that got no (whole) answer: 504 when it ran past its deadline, 502
/// when the upstream could not be reached. reqwest's errors name the URL, never the key.
pub(super) fn failed(url: &str, e: &reqwest::Error) -> Response {
    if e.is_timeout() {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("runner gateway: upstream {url} did not finish answering in time: {e}"),
        );
    }
    error(
        StatusCode::BAD_GATEWAY,
        "upstream_unreachable",
        format!("runner gateway: upstream {url}: {e}"),
    )
}

/// `response` with `slot` held until its body is through (or the client went away).
pub(super) fn holding(response: Response, slot: Option<OwnedSemaphorePermit>) -> Response {
    let Some(slot) = slot else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// The body of an error answer (its first [`MAX_ERROR_BYTES`]), as text.
async fn read_error(response: reqwest::Response) -> String {
    let mut text = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        text.extend_from_slice(&chunk);
        if text.len() >= MAX_ERROR_BYTES {
            text.truncate(MAX_ERROR_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The message of an OpenAI-style error body (`error.message`, or `error` or `message` as a
/// string), else the body itself, on one line and short.
fn message_of(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let message = value["error"]["message"]
        .as_str()
        .or_else(|| value["error"].as_str())
        .or_else(|| value["message"].as_str())
        .unwrap_or(text);
    let line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        return format!("{}…", line.chars().take(300).collect::<String>());
    }
    line
}

/// What to fix when an answer is one that waiting cannot cure; `None` for the others. A 404 for
/// a model other than the job's own (Aider's weak model, which writes commit messages) is
/// passed on: Aider does without it.
fn lasting(
    status: u16,
    text: &str,
    grant: &Grant,
    role: Role,
    url: &str,
    model: &str,
) -> Option<String> {
    let lower = text.to_lowercase();
    let model_field = match role {
        Role::Manager => "manager.model",
        Role::Agent => "agent.model",
    };
    let base = url.trim_end_matches("/chat/completions");
    match status {
        401 => Some(format!(
            "set {} where the runner runs to a valid key for {base} (or name another variable \
             with `llm.api_key_env`)",
            grant.spec.llm.api_key_env
        )),
        403 => Some(format!(
            "the key in {} may not use this model or endpoint: give it access, or use \
             another key or `{model_field}`",
            grant.spec.llm.api_key_env
        )),
        404 if role == Role::Manager
            || grant.spec.agent.model.rsplit('/').next() == Some(model) =>
        {
            Some(format!(
                "check `{model_field}` (`{model}`) against the models {base} serves, and \
                 `llm.base_url` (it should end where `/chat/completions` is appended, often in \
                 `/v1`)"
            ))
        }
        400 if [
            "context_length",
            "context length",
            "context window",
            "maximum context",
            "exceed_context_size",
            "too many tokens",
            "prompt is too long",
        ]
        .iter()
        .any(|m| lower.contains(m)) =>
        {
            Some(format!(
                "the prompt is longer than the model's context: use a model with a larger \
                 context as `{model_field}`, or give the agent less to read (a smaller task, \
                 fewer or smaller files)"
            ))
        }
        429 if lower.contains("insufficient_quota") => Some(
            "the account's quota is spent: add credit with the provider, or use another key".into(),
        ),
        _ => None,
    }
}

/// How long to wait before sending again after `status`, when it is a rate limit: the time the
/// provider names, a little later so that callers told the same time spread out; else a
/// jittered exponential backoff. A 503 is waited out only when it names a time.
fn rate_limit_wait(status: u16, headers: &HeaderMap, retry: u32) -> Option<Duration> {
    let named = retry_after(headers).or_else(|| reset_after(headers));
    match (status, named) {
        (429 | 503, Some(wait)) => {
            let spread = (wait / 10).min(Duration::from_secs(1));
            Some(wait + spread.mul_f64(rand::random::<f64>()))
        }
        (429, None) => {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1u32 << retry.min(16))
                .min(MAX_BACKOFF);
            Some(backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0))
        }
        _ => None,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The reset time of the limit that ran out (`x-ratelimit-reset-requests` or `-tokens`, whose
/// `x-ratelimit-remaining-…` is 0); when none says it ran out, the sooner of the two.
fn reset_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut resets: Vec<(bool, Duration)> = ["requests", "tokens"]
        .iter()
        .filter_map(|kind| {
            let reset = go_duration(get(&format!("x-ratelimit-reset-{kind}"))?)?;
            let spent = get(&format!("x-ratelimit-remaining-{kind}")).map(str::trim) == Some("0");
            Some((spent, reset))
        })
        .collect();
    if resets.iter().any(|(spent, _)| *spent) {
        resets.retain(|(spent, _)| *spent);
        return resets.into_iter().map(|(_, d)| d).max();
    }
    resets.into_iter().map(|(_, d)| d).min()
}

/// A duration as providers write it (Go's format): `1s`, `6m0s`, `1h2m3.5s`, `20ms`; a bare
/// number is seconds.
fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    (total.is_finite() && !text.is_empty()).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn provider_durations_read_as_go_writes_them() {
        for (text, ms) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("1h2m3.5s", 3_723_500),
            ("20ms", 20),
            ("0.5s", 500),
            ("2", 2000),
        ] {
            assert_eq!(go_duration(text), Some(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "soon", "5x", "-1"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let date = httpdate::fmt_http_date(later);
        let wait = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_reset_of_the_spent_limit_is_waited_for() {
        let both = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(reset_after(&both), Some(Duration::from_secs(1)));
        let tokens_spent = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-tokens", "0"),
        ]);
        assert_eq!(reset_after(&tokens_spent), Some(Duration::from_secs(360)));
    }

    #[test]
    fn a_named_time_is_waited_a_little_longer_and_a_backoff_doubles() {
        let named = headers(&[("retry-after", "2")]);
        for _ in 0..20 {
            let wait = rate_limit_wait(429, &named, 0).unwrap();
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2200),
                "{wait:?}"
            );
        }
        assert!(rate_limit_wait(503, &named, 0).is_some());
        assert_eq!(rate_limit_wait(503, &HeaderMap::new(), 0), None);
        assert_eq!(rate_limit_wait(500, &named, 0), None);
        let third = rate_limit_wait(429, &HeaderMap::new(), 2).unwrap();
        assert!(
            third >= Duration::from_secs(2) && third <= Duration::from_secs(4),
            "{third:?}"
        );
        let late = rate_limit_wait(429, &HeaderMap::new(), 40).unwrap();
        assert!(late <= MAX_BACKOFF, "{late:?}");
    }

    #[test]
    fn lasting_refusals_name_their_fix() {
        let grant = Grant {
            job: JobId("01J".into()),
            attempt: 1,
            spec: crate::store::tests_support::spec("p"),
        };
        let url = "http://llm.example/v1/chat/completions";
        let fix =
            |status, text: &str, role| lasting(status, text, &grant, role, url, "gpt-4o-mini");
        assert!(fix(401, "{}", Role::Agent).unwrap().starts_with(
            "set OPENAI_API_KEY where the runner runs to a valid key for http://llm.example/v1"
        ));
        assert!(fix(404, "{}", Role::Manager)
            .unwrap()
            .contains("`manager.model` (`gpt-4o-mini`)"));
        assert!(
            fix(404, "{}", Role::Agent).is_some(),
            "the agent's own model"
        );
        assert_eq!(
            lasting(404, "{}", &grant, Role::Agent, url, "weak-model"),
            None,
            "another model Aider asks for"
        );
        let long = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
        assert!(fix(400, long, Role::Agent)
            .unwrap()
            .contains("larger context as `agent.model`"));
        assert_eq!(
            fix(
                400,
                r#"{"error":{"message":"bad temperature"}}"#,
                Role::Agent
            ),
            None
        );
        assert_eq!(
            fix(429, r#"{"error":{"message":"slow down"}}"#, Role::Agent),
            None
        );
        assert!(fix(
            429,
            r#"{"error":{"code":"insufficient_quota"}}"#,
            Role::Agent
        )
        .is_some());
        assert_eq!(fix(500, "{}", Role::Agent), None);
    }
}
