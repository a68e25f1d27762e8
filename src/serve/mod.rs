//! Mission control's server: `runner serve` (alone, for a state dir) and `runner daemon --listen`
//! (from the daemon's process). It reads and writes only through the store, like the CLI, so it
//! works beside any scheduler.
//!
//! Safe by default: every request needs the state dir's token (`<state dir>/api-token`, mode
//! 0600), sent as `Authorization: Bearer <token>` or as the login cookie that any page opened
//! with `?token=` sets; a POST authenticated by the cookie must come from the same origin; every
//! response carries a strict Content-Security-Policy. [`router`] is the one place routes are
//! added: the API ([`api`]), the pages and `/metrics`.

pub mod api;
mod auth;
pub mod live;
pub mod metrics;
pub mod pages;

use crate::store::SharedStore;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::{middleware, Router};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use auth::{load_or_create_token, TOKEN_FILE};

/// Address served when `--listen` is not given (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// Largest request body accepted (a job file is at most 1 MiB too).
pub const BODY_LIMIT: usize = 1 << 20;

/// The Content-Security-Policy of every response: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What every handler can reach.
#[derive(Clone)]
pub struct ServeState {
    /// The server's own connection to the state dir's database.
    pub store: SharedStore,
    /// The state dir (artifacts are served only from inside it).
    pub state_dir: PathBuf,
    /// The folder local paths (`repo`, cassettes) of jobs submitted over HTTP may come from
    /// (`--jobs-from`); none: such jobs may not name local paths.
    pub jobs_from: Option<PathBuf>,
    /// Broadcasts what is stored to the live streams (started by [`serve`]).
    pub hub: live::Hub,
    /// The API token (never logged, never served).
    token: Arc<String>,
}

impl std::fmt::Debug for ServeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeState")
            .field("state_dir", &self.state_dir)
            .field("jobs_from", &self.jobs_from)
            .finish_non_exhaustive()
    }
}

impl ServeState {
    /// Opens the server's own store connection and the token (created on first start).
    pub fn open(
        state_dir: &Path,
        jobs_from: Option<PathBuf>,
    ) -> Result<ServeState, crate::cli::exit::Failure> {
        let store = crate::store::Store::open(state_dir)?;
        let token = load_or_create_token(state_dir).map_err(|e| {
            crate::cli::exit::Failure::environment(format!(
                "cannot create or read the API token {}: {e}",
                state_dir.join(TOKEN_FILE).display()
            ))
        })?;
        Ok(ServeState {
            store: SharedStore::new(store),
            state_dir: state_dir.to_path_buf(),
            jobs_from,
            hub: live::Hub::new(),
            token: Arc::new(token),
        })
    }
}

/// Every route, behind the token check and the security headers.
pub fn router(state: ServeState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .route("/metrics", axum::routing::get(metrics::handler))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Headers on every response, refusals included.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Binds `listen` and says where: the bound address (the port when `:0` was asked) and, for
/// `runner serve`, the login URL with the token, once, on stderr.
pub async fn bind(
    listen: SocketAddr,
    state: &ServeState,
    print_token: bool,
) -> Result<tokio::net::TcpListener, crate::cli::exit::Failure> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        crate::cli::exit::Failure::environment(format!(
            "cannot listen on {listen}: {e} (pick another address with --listen, e.g. 127.0.0.1:7701)"
        ))
    })?;
    let bound = listener.local_addr().map_err(|e| {
        crate::cli::exit::Failure::environment(format!("cannot read the bound address: {e}"))
    })?;
    if !bound.ip().is_loopback() {
        eprintln!(
            "runner: warning: serving on {bound}, which is not loopback: anyone who can reach it \
             and holds the token controls this state dir's jobs; the traffic is plain HTTP (put \
             a TLS proxy in front)"
        );
    }
    eprintln!("runner: listening on {bound}");
    if print_token {
        eprintln!("runner: open http://{bound}/?token={}", state.token);
    } else {
        eprintln!(
            "runner: the token is in {}",
            state.state_dir.join(TOKEN_FILE).display()
        );
    }
    Ok(listener)
}

/// Serves `state` on `listener` until `stop` is cancelled; requests under way then get
/// [`SHUTDOWN_GRACE`] to finish (live event streams of running jobs would never finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServeState,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    // The live streams' watcher reads on its own connection, beside the handlers'.
    let watcher_store = crate::store::Store::open(&state.state_dir)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let watch_stop = stop.child_token();
    let watcher = state.hub.watch(watcher_store, watch_stop.clone());
    let graceful = stop.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { graceful.cancelled().await });
    let served = tokio::select! {
        r = server => r,
        _ = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
    };
    watch_stop.cancel();
    let _ = tokio::task::spawn_blocking(move || watcher.join()).await;
    served
}

/// How long requests under way may take once the server is asked to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Parses `--listen`: `HOST:PORT` with an IP address (`127.0.0.1:7700`, `[::1]:7700`,
/// `0.0.0.0:7700`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address: give IP:PORT like 127.0.0.1:7700 (port 0 picks a free one)"
        )
    })
}
