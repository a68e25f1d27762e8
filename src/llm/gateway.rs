//! The LLM gateway: an OpenAI-compatible endpoint inside the runner, served on the internal
//! network's gateway address. Containers present a per-attempt token; the gateway forwards to the
//! job's upstream with the real key (which never enters a container), meters every call per
//! attempt and role, refuses calls once the job's budget is spent, and records or replays
//! cassettes.

use super::cassette::{Cassette, Exchange, Recorder, RequestSummary};
use super::meter::{self, StreamMeter, Tokens};
use super::prices::Prices;
use crate::job::JobSpec;
use crate::state::JobId;
use crate::store::{Role, SharedStore, Usage};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (Aider sends whole files; this is far beyond a sane prompt).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Meta key under which the gateway's port is kept, so restarted schedulers keep the address that
/// adopted containers were given.
const PORT_KEY: &str = "gateway_port";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot serve the LLM gateway on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why a manager call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerCallError {
    #[error("{0}")]
    Budget(String),
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("{0}")]
    Transport(String),
}

/// An attempt allowed to call the gateway.
#[derive(Debug)]
struct Grant {
    job: JobId,
    attempt: u32,
    spec: JobSpec,
}

struct Inner {
    store: SharedStore,
    client: reqwest::Client,
    prices: Prices,
    /// Token hash → grant (a cache of the tokens table).
    grants: Mutex<HashMap<String, Arc<Grant>>>,
    /// Fired when a job's budget is spent, so its attempt stops.
    budget_spent: Mutex<HashMap<JobId, CancellationToken>>,
    /// Next replay position per attempt and role.
    replay_pos: Mutex<HashMap<(JobId, u32, Role), usize>>,
    cassettes: Mutex<HashMap<PathBuf, Arc<Cassette>>>,
    recorders: Mutex<HashMap<PathBuf, Arc<Recorder>>>,
}

/// A running gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("addr", &self.addr).finish()
    }
}

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An OpenAI-style error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": code, "code": code}});
    (status, axum::Json(body)).into_response()
}

impl Gateway {
    /// Serves the gateway on `ip`, on the port this state dir used before when it is free.
    pub async fn start(
        store: SharedStore,
        ip: IpAddr,
        prices: Prices,
    ) -> Result<Gateway, GatewayError> {
        let previous: Option<u16> = store
            .call(|s| s.meta(PORT_KEY))
            .await?
            .and_then(|p| p.parse().ok());
        let listener = match previous {
            Some(port) => match tokio::net::TcpListener::bind((ip, port)).await {
                Ok(l) => l,
                Err(_) => bind(ip, 0).await?,
            },
            None => bind(ip, 0).await?,
        };
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: SocketAddr::new(ip, 0),
            source,
        })?;
        if previous != Some(addr.port()) {
            let port = addr.port().to_string();
            store.call(move |s| s.set_meta(PORT_KEY, &port)).await?;
        }
        let inner = Arc::new(Inner {
            store,
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("http client builds"),
            prices,
            grants: Mutex::new(HashMap::new()),
            budget_spent: Mutex::new(HashMap::new()),
            replay_pos: Mutex::new(HashMap::new()),
            cassettes: Mutex::new(HashMap::new()),
            recorders: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(inner.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!("LLM gateway stopped: {e}");
            }
        });
        tracing::info!(%addr, "LLM gateway listening");
        Ok(Gateway { inner, addr, stop })
    }

    /// The base URL containers use (`http://<gateway>:<port>/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A fresh token for attempt `n` of a job; only its hash is stored.
    pub async fn grant(&self, job: &JobId, n: u32, spec: &JobSpec) -> Result<String, GatewayError> {
        let token = format!("rnr-{}", hex_random(24));
        let h = hash(&token);
        let (id, h2) = (job.clone(), h.clone());
        self.inner
            .store
            .call(move |s| s.add_token(&h2, &id, n))
            .await?;
        lock(&self.inner.grants).insert(
            h,
            Arc::new(Grant {
                job: job.clone(),
                attempt: n,
                spec: spec.clone(),
            }),
        );
        Ok(token)
    }

    /// Revokes attempt `n`'s tokens: later calls with them get 401.
    pub async fn revoke(&self, job: &JobId, n: u32) -> Result<(), GatewayError> {
        lock(&self.inner.grants).retain(|_, g| !(g.job == *job && g.attempt == n));
        lock(&self.inner.replay_pos).retain(|(j, a, _), _| !(j == job && *a == n));
        let id = job.clone();
        self.inner
            .store
            .call(move |s| s.revoke_tokens(&id, n))
            .await?;
        Ok(())
    }

    /// A signal fired when the job's budget is spent.
    pub fn budget_signal(&self, job: &JobId) -> CancellationToken {
        lock(&self.inner.budget_spent)
            .entry(job.clone())
            .or_default()
            .clone()
    }

    /// A manager call for attempt `n`: through the same meter, budget and cassette as the
    /// agent's calls, as role `manager`. Returns the answer's JSON body.
    pub async fn manager_call(
        &self,
        job: &JobId,
        n: u32,
        spec: &JobSpec,
        request: Value,
    ) -> Result<Value, ManagerCallError> {
        let grant = Grant {
            job: job.clone(),
            attempt: n,
            spec: spec.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&request).expect("JSON serializes"));
        let response = exchange(&self.inner, &grant, Role::Manager, request, body).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 32 << 20)
            .await
            .map_err(|e| ManagerCallError::Transport(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ManagerCallError::Transport(format!("the answer is not JSON: {e}")))?;
        let message = || {
            value["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string()
        };
        if status == StatusCode::PAYMENT_REQUIRED {
            return Err(ManagerCallError::Budget(message()));
        }
        if !status.is_success() {
            return Err(ManagerCallError::Status(status.as_u16(), message()));
        }
        Ok(value)
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

async fn bind(ip: IpAddr, port: u16) -> Result<tokio::net::TcpListener, GatewayError> {
    tokio::net::TcpListener::bind((ip, port))
        .await
        .map_err(|source| GatewayError::Bind {
            addr: SocketAddr::new(ip, port),
            source,
        })
}

fn hex_random(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

async fn grant_for(inner: &Inner, headers: &HeaderMap) -> Option<Arc<Grant>> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim()
        .to_string();
    let h = hash(&token);
    if let Some(g) = lock(&inner.grants).get(&h) {
        return Some(g.clone());
    }
    // Not cached (a restarted scheduler adopting a container): look it up.
    let h2 = h.clone();
    let found = inner
        .store
        .call(move |s| match s.token_owner(&h2)? {
            Some((id, n)) => Ok(Some((id.clone(), n, s.job(&id)?.spec))),
            None => Ok(None),
        })
        .await
        .ok()??;
    let grant = Arc::new(Grant {
        job: found.0,
        attempt: found.1,
        spec: found.2,
    });
    lock(&inner.grants).insert(h, grant.clone());
    Some(grant)
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let Some(grant) = grant_for(&inner, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "runner gateway: unknown or revoked token",
        );
    };
    let model = grant
        .spec
        .agent
        .model
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    axum::Json(
        json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "runner"}]}),
    )
    .into_response()
}

async fn chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(grant) = grant_for(&inner, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "runner gateway: unknown or revoked token",
        );
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "request body is not a JSON object",
            )
        }
    };
    exchange(&inner, &grant, Role::Agent, request, body).await
}

/// One metered, budgeted exchange for `role`.
async fn exchange(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    request: Value,
    body: Bytes,
) -> Response {
    if let Some(refusal) = over_budget(inner, grant).await {
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
/// call that crossed it) and signals the job to stop.
async fn over_budget(inner: &Arc<Inner>, grant: &Grant) -> Option<Response> {
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
    lock(&inner.budget_spent)
        .entry(grant.job.clone())
        .or_default()
        .cancel();
    Some(error(
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
        format!("runner gateway: job {} is stopped: {why}", grant.job),
    ))
}

/// Adds one call's usage to the attempt. Awaited before the answer completes, so the next call's
/// budget check sees it.
async fn record_usage(inner: &Arc<Inner>, grant: &Grant, role: Role, model: &str, tokens: Tokens) {
    let cost = inner.prices.cost(model, tokens.prompt, tokens.completion);
    let usage = Usage {
        requests: 1,
        prompt_tokens: tokens.prompt,
        completion_tokens: tokens.completion,
        cost_usd: cost.unwrap_or(0.0),
        unpriced_requests: u64::from(cost.is_none()),
    };
    let (store, job, n) = (inner.store.clone(), grant.job.clone(), grant.attempt);
    tokio::spawn(async move {
        if let Err(e) = store
            .call(move |s| s.add_usage(&job, n, role, &usage))
            .await
        {
            tracing::error!("cannot record LLM usage: {e}");
        }
    });
}

fn record_exchange(inner: &Arc<Inner>, grant: &Grant, exchange: Exchange) {
    let Some(path) = grant.spec.llm.record.clone() else {
        return;
    };
    let recorder = {
        let mut recorders = lock(&inner.recorders);
        match recorders.get(&path) {
            Some(r) => r.clone(),
            None => match Recorder::create(&path) {
                Ok(r) => {
                    let r = Arc::new(r);
                    recorders.insert(path.clone(), r.clone());
                    r
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return;
                }
            },
        }
    };
    if let Err(e) = recorder.append(&exchange) {
        tracing::error!("{e}");
    }
}

async fn replay(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    summary: &RequestSummary,
    path: PathBuf,
) -> Response {
    let cassette = {
        let cached = lock(&inner.cassettes).get(&path).cloned();
        match cached {
            Some(c) => c,
            None => match Cassette::load(&path) {
                Ok(c) => {
                    let c = Arc::new(c);
                    lock(&inner.cassettes).insert(path.clone(), c.clone());
                    c
                }
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "replay_error",
                        format!("runner gateway: {e}"),
                    )
                }
            },
        }
    };
    let n = {
        let mut pos = lock(&inner.replay_pos);
        let slot = pos
            .entry((grant.job.clone(), grant.attempt, role))
            .or_insert(0);
        *slot += 1;
        *slot - 1
    };
    let Some(found) = cassette.get(role, n) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "replay_exhausted",
            format!(
                "runner gateway: cassette {} holds {} {} answers; request {} is beyond it (record it again)",
                path.display(),
                cassette.count(role),
                role.as_str(),
                n + 1
            ),
        );
    };
    record_usage(
        inner,
        grant,
        role,
        &summary.model,
        Tokens {
            prompt: found.prompt_tokens,
            completion: found.completion_tokens,
            reported: true,
        },
    )
    .await;
    let status = StatusCode::from_u16(found.status).unwrap_or(StatusCode::OK);
    let content_type = found.content_type.clone();
    if content_type.starts_with("text/event-stream") {
        // Send event by event, as the upstream did.
        let events: Vec<Result<Bytes, std::io::Error>> = found
            .body
            .split_inclusive("\n\n")
            .map(|e| Ok(Bytes::from(e.to_string())))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(events));
        return (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        found.body.clone(),
    )
        .into_response()
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
    let mut call = inner
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Ok(key) = std::env::var(&grant.spec.llm.api_key_env) {
        call = call.bearer_auth(key);
    }
    let upstream = match call.send().await {
        Ok(r) => r,
        Err(e) => {
            // reqwest errors name the URL, never the key.
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("runner gateway: upstream {url}: {e}"),
            );
        }
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
        return stream_through(
            inner.clone(),
            grant,
            role,
            request,
            summary,
            status,
            content_type,
            upstream,
        );
    }
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("runner gateway: upstream {url}: {e}"),
            )
        }
    };
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
