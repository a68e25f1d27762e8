//! The LLM gateway: an OpenAI-compatible endpoint inside the runner. Each attempt gets its own
//! unix socket (`<run dir>/<job>-<attempt>/gateway.sock`), reached only through that attempt's
//! relay container, and a per-attempt token that is accepted on that socket alone: a token used
//! from anywhere else is refused. The gateway forwards to the job's upstream with the real key
//! (which never enters a container), meters every call per attempt and role, refuses calls once
//! the job's budget is spent, and records or replays cassettes.
//!
//! This module holds the gateway itself (start, grants, the manager's calls); `handlers` serves
//! the HTTP routes and checks tokens, `exchange` meters and forwards one call, `ledger` holds
//! the budget reservations of calls in flight, `replay` answers from a cassette or records one,
//! and `upstream` sends a call to the provider (waiting out rate limits, limiting calls in
//! flight, stopping a job the provider refuses).

mod exchange;
mod handlers;
mod ledger;
mod replay;
mod upstream;

pub use ledger::{DEFAULT_OUTPUT_TOKENS, MIN_ANSWER_TOKENS};

pub use exchange::upstream_base;
pub use upstream::ProviderStop;

use super::cassette::{Cassette, Recorder};
use super::prices::Prices;
use crate::job::JobSpec;
use crate::state::JobId;
use crate::store::{Role, SharedStore};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use exchange::exchange;
use handlers::{chat, models};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (Aider sends whole files; this is far beyond a sane prompt).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;
/// The socket's file name inside an attempt's socket directory.
pub const SOCKET_FILE: &str = "gateway.sock";
/// Longest path a unix socket may have (`sun_path` less its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Calls this process's gateway refused for their token (unknown, revoked, or another
/// attempt's), since the process started. Refusals are not stored: only the process that runs
/// the gateway (a scheduler: `runner daemon`, `runner run`) can report them.
static AUTH_REFUSALS: AtomicU64 = AtomicU64::new(0);
/// Whether this process runs (or will run, once an LLM job starts) a gateway.
static IN_THIS_PROCESS: AtomicBool = AtomicBool::new(false);

/// Marks this process as the one whose gateway serves its LLM jobs (a scheduler calls it when it
/// starts, before its gateway is started on first use), so that [`auth_refusals`] counts from 0.
pub fn runs_in_this_process() {
    IN_THIS_PROCESS.store(true, Ordering::Relaxed);
}

/// Calls refused for their token by the gateway of this process since it started; `None` when
/// no gateway runs in this process (a `runner serve` beside a daemon cannot see the daemon's).
pub fn auth_refusals() -> Option<u64> {
    IN_THIS_PROCESS
        .load(Ordering::Relaxed)
        .then(|| AUTH_REFUSALS.load(Ordering::Relaxed))
}

/// Errors starting or using the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot serve the LLM gateway on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the LLM gateway's socket path {path} is longer than the {SOCKET_PATH_MAX} bytes a unix socket allows: use a shorter --state-dir")]
    PathTooLong { path: PathBuf },
    #[error(
        "cannot listen for the LLM gateway on {addr}: {source} (choose another --gateway-listen)"
    )]
    Listen {
        addr: std::net::SocketAddr,
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
    /// The call ran past `manager.call_timeout`.
    #[error("the call ran past its {} deadline (manager.call_timeout)", crate::job::units::format_duration(*.0))]
    Deadline(std::time::Duration),
    /// The provider refused the call in a way waiting cannot cure: what happened and the fix.
    #[error("{0}")]
    Refused(String),
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
    /// Every job's recorded usage and the reservations of its calls in flight.
    ledger: Arc<ledger::Ledger>,
    /// Fired when a job's budget is spent, so its attempt stops.
    budget_spent: Mutex<HashMap<JobId, CancellationToken>>,
    /// Next replay position per attempt and role.
    replay_pos: Mutex<HashMap<(JobId, u32, Role), usize>>,
    cassettes: Mutex<HashMap<PathBuf, Arc<Cassette>>>,
    recorders: Mutex<HashMap<PathBuf, Arc<Recorder>>>,
    /// Streamed agent calls in flight per attempt, from the request until the answer is through.
    agent_calls: Mutex<HashMap<(JobId, u32), Arc<CallCounter>>>,
    /// Concurrency limits per upstream, and the jobs a provider refused for good.
    upstreams: upstream::Upstreams,
    /// The attempts the shared network listener serves (their tokens count there).
    shared: Mutex<std::collections::HashSet<(JobId, u32)>>,
}

/// A count of calls in flight that others can watch.
type CallCounter = watch::Sender<usize>;

impl Inner {
    /// The in-flight counter of attempt `n`'s agent calls.
    fn agent_calls(&self, job: &JobId, n: u32) -> Arc<CallCounter> {
        lock(&self.agent_calls)
            .entry((job.clone(), n))
            .or_insert_with(|| Arc::new(watch::channel(0).0))
            .clone()
    }
}

/// One agent call in flight: counted from creation until dropped (when its answer's body is
/// through, or the client went away).
struct InFlight(Arc<CallCounter>);

impl InFlight {
    fn enter(calls: Arc<CallCounter>) -> InFlight {
        calls.send_modify(|n| *n += 1);
        InFlight(calls)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Whose tokens a listener accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seat {
    /// An attempt's own socket: only that attempt's tokens.
    Attempt { job: JobId, attempt: u32 },
    /// The shared network listener (Kubernetes pods): any live token, which names its attempt.
    Shared,
}

/// A running gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    /// Where the attempts' socket directories are made.
    run_dir: PathBuf,
    /// The serving task of each attempt's socket, stopped by its token.
    seats: Arc<Mutex<HashMap<(JobId, u32), CancellationToken>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("run_dir", &self.run_dir)
            .finish()
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
    /// A gateway whose attempts' sockets live under `run_dir` (created private to this user).
    pub async fn start(
        store: SharedStore,
        run_dir: PathBuf,
        prices: Prices,
    ) -> Result<Gateway, GatewayError> {
        private_dir(&run_dir)?;
        runs_in_this_process();
        let inner = Arc::new(Inner {
            store,
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("http client builds"),
            prices,
            grants: Mutex::new(HashMap::new()),
            ledger: Arc::default(),
            budget_spent: Mutex::new(HashMap::new()),
            replay_pos: Mutex::new(HashMap::new()),
            cassettes: Mutex::new(HashMap::new()),
            recorders: Mutex::new(HashMap::new()),
            agent_calls: Mutex::new(HashMap::new()),
            upstreams: upstream::Upstreams::default(),
            shared: Mutex::default(),
        });
        Ok(Gateway {
            inner,
            run_dir,
            seats: Arc::new(Mutex::new(HashMap::new())),
            stop: CancellationToken::new(),
        })
    }

    /// Serves attempt `n`'s socket (again, after a restart) and returns the directory holding it,
    /// for the attempt's relay to mount. Only attempt `n`'s tokens are accepted there.
    pub async fn serve_attempt(&self, job: &JobId, n: u32) -> Result<PathBuf, GatewayError> {
        let dir = self.run_dir.join(format!("{job}-{n}"));
        let path = dir.join(SOCKET_FILE);
        let key = (job.clone(), n);
        if lock(&self.seats).contains_key(&key) {
            return Ok(dir);
        }
        if path.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(GatewayError::PathTooLong { path });
        }
        let bind_error = |source| GatewayError::Bind {
            path: path.clone(),
            source,
        };
        private_dir(&dir)?;
        // A socket left by a scheduler that stopped: bound again at the same path, which the
        // relay (mounting the directory) finds on its next connection.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(e)),
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(bind_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        let app = self.router(Seat::Attempt {
            job: job.clone(),
            attempt: n,
        });
        let stop = self.stop.child_token();
        lock(&self.seats).insert(key, stop.clone());
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!("LLM gateway socket stopped: {e}");
            }
        });
        tracing::debug!(path = %path.display(), "LLM gateway serving an attempt");
        Ok(dir)
    }

    fn router(&self, seat: Seat) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .layer(axum::Extension(Arc::new(seat)))
            .with_state(self.inner.clone())
    }

    /// Serves every attempt on one TCP address, for containers that reach the runner over the
    /// network (Kubernetes pods): a call's token alone says which attempt makes it, so a call
    /// without a live token is refused as on the sockets. Returns the address bound.
    pub async fn serve_network(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, GatewayError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| GatewayError::Listen { addr, source })?;
        let app = self.router(Seat::Shared);
        let stop = self.stop.child_token();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!("LLM gateway listener stopped: {e}");
            }
        });
        tracing::info!(%bound, "LLM gateway listening on the network");
        Ok(bound)
    }

    /// Serves attempt `n` on the shared network listener (again, after a restart): only the
    /// tokens of attempts served this way count there, so the token of an attempt that ended
    /// while no runner watched (recorded `lost`) is refused even though it was never revoked.
    /// The attempt's live tokens are loaded here, once: the listener answers from memory, so a
    /// call with an unknown token is refused without a database query.
    pub async fn serve_shared(
        &self,
        job: &JobId,
        n: u32,
        spec: &JobSpec,
    ) -> Result<(), GatewayError> {
        let id = job.clone();
        let hashes = self
            .inner
            .store
            .call(move |s| s.live_tokens(&id, n))
            .await?;
        let grant = Arc::new(Grant {
            job: job.clone(),
            attempt: n,
            spec: spec.clone(),
        });
        {
            let mut grants = lock(&self.inner.grants);
            for hash in hashes {
                grants.entry(hash).or_insert_with(|| grant.clone());
            }
        }
        lock(&self.inner.shared).insert((job.clone(), n));
        Ok(())
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

    /// Revokes attempt `n`'s tokens (later calls with them get 401) and stops serving its
    /// socket.
    pub async fn revoke(&self, job: &JobId, n: u32) -> Result<(), GatewayError> {
        if let Some(stop) = lock(&self.seats).remove(&(job.clone(), n)) {
            stop.cancel();
        }
        lock(&self.inner.shared).remove(&(job.clone(), n));
        let dir = self.run_dir.join(format!("{job}-{n}"));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "cannot remove the gateway socket: {e}");
            }
        }
        let mut files = Vec::new();
        lock(&self.inner.grants).retain(|_, g| {
            let mine = g.job == *job && g.attempt == n;
            if mine {
                files.extend(g.spec.llm.record.iter().chain(&g.spec.llm.replay).cloned());
            }
            !mine
        });
        let job_still_served = lock(&self.inner.grants).values().any(|g| g.job == *job);
        lock(&self.inner.replay_pos).retain(|(j, a, _), _| !(j == job && *a == n));
        lock(&self.inner.agent_calls).remove(&(job.clone(), n));
        // Nothing of a job outlives its last attempt in a long-lived daemon (a retry starts
        // afresh; a spent budget is found spent again from the store). While other attempts of
        // the job run (best-of-N candidates), they keep its stop signals and its account.
        if !job_still_served {
            lock(&self.inner.budget_spent).remove(job);
            self.inner.upstreams.forget(job);
            self.inner.ledger.forget(job);
        }
        for file in &files {
            lock(&self.inner.recorders).remove(file);
            lock(&self.inner.cassettes).remove(file);
        }
        let id = job.clone();
        self.inner
            .store
            .call(move |s| s.revoke_tokens(&id, n))
            .await?;
        Ok(())
    }

    /// How many of attempt `n`'s streamed agent calls are in flight (a call counts until its
    /// answer's body is through). While one is, Aider is receiving an answer, not waiting at its
    /// prompt.
    pub fn agent_calls(&self, job: &JobId, n: u32) -> watch::Receiver<usize> {
        self.inner.agent_calls(job, n).subscribe()
    }

    /// A signal fired when the job's budget is spent.
    pub fn budget_signal(&self, job: &JobId) -> CancellationToken {
        lock(&self.inner.budget_spent)
            .entry(job.clone())
            .or_default()
            .clone()
    }

    /// Limits the calls in flight to each upstream (base URL) to `calls`; more wait for a free
    /// slot (`--llm-concurrency`).
    pub fn limit_concurrency(&self, calls: usize) {
        self.inner.upstreams.set_limit(calls);
    }

    /// A signal fired when the provider refused one of the job's agent calls in a way waiting
    /// cannot cure (a bad key, an unknown model, a prompt too long for the model); it says why.
    pub fn provider_stop(&self, job: &JobId) -> ProviderStop {
        self.inner.upstreams.stop(job)
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
        // Each sending of the call carries the deadline (waits for rate limits are not
        // counted); an answer streamed anyway is read under it too.
        let deadline = spec.manager.call_timeout;
        // From before the sending, so that a stream cut by the sending's own timeout counts as
        // late even when its headers were slow (after a rate-limit wait, a transport error may
        // count as late too: it is then asked once more, which is harmless).
        let started = std::time::Instant::now();
        let response = exchange(&self.inner, &grant, Role::Manager, request, body).await;
        let status = response.status();
        let bytes = match tokio::time::timeout(
            deadline,
            axum::body::to_bytes(response.into_body(), 32 << 20),
        )
        .await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) | Err(_) if started.elapsed() >= deadline.mul_f64(0.9) => {
                return Err(ManagerCallError::Deadline(deadline))
            }
            Ok(Err(e)) => return Err(ManagerCallError::Transport(e.to_string())),
            Err(_) => return Err(ManagerCallError::Deadline(deadline)),
        };
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
        match value["error"]["code"].as_str() {
            Some("upstream_timeout") => return Err(ManagerCallError::Deadline(deadline)),
            Some("provider_refused") => return Err(ManagerCallError::Refused(message())),
            _ => {}
        }
        if !status.is_success() {
            return Err(ManagerCallError::Status(status.as_u16(), message()));
        }
        Ok(value)
    }

    /// Refuses to start a job whose `budget.usd` cannot limit it (see [`check_budget_prices`]).
    pub fn check_budget_prices(&self, spec: &JobSpec) -> Result<(), String> {
        check_budget_prices(spec, &self.inner.prices)
    }

    /// Stops serving.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Why a `budget.usd` cannot limit calls to `model`: it has no price.
fn unpriced_budget(model: &str) -> String {
    format!(
        "its budget.usd cannot limit calls to model {model:?}: the model has no price; add it to the price table (a JSON file named by RUNNER_PRICES, or <state dir>/prices.json: {{\"{model}\": {{\"input_per_mtok\": 0.15, \"output_per_mtok\": 0.6}}}}) or limit the job with budget.tokens"
    )
}

/// Refuses to start a job whose `budget.usd` could not limit its calls: an agent job whose
/// agent or manager model has no price. (A command job's models are known only when it calls;
/// such a call is refused then.)
pub fn check_budget_prices(spec: &JobSpec, prices: &Prices) -> Result<(), String> {
    if spec.budget.usd.is_none() || !spec.is_agent() {
        return Ok(());
    }
    for model in [&spec.agent.model, &spec.manager.model] {
        if prices.price(model).is_none() {
            return Err(unpriced_budget(model));
        }
    }
    Ok(())
}

/// Creates `dir` readable by this user alone (the relay runs as this user).
fn private_dir(dir: &std::path::Path) -> Result<(), GatewayError> {
    let bind_error = |source| GatewayError::Bind {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(bind_error)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(bind_error)
}

fn hex_random(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
