//! The scheduler: one implementation behind `runner run` (in process, until its jobs are
//! terminal) and `runner daemon` (long-lived, also watching a jobs dir).
//!
//! One dispatcher loop owns all scheduling state (what runs, what it holds of the limits). Each
//! attempt runs in its own task ([`crate::attempt`]) and reports back when it ends. Limits: a global
//! `parallel` ceiling, per-group ceilings, and resource admission (the sum of running jobs' cpu and
//! memory caps stays within the host budget). On start the dispatcher reconciles with the engine
//! ([`reconcile`]): containers of active jobs are adopted, vanished ones marked `lost`, and
//! containers no job owns removed.

mod admission;
mod dispatch;
#[cfg(test)]
pub(crate) mod fake;
pub mod lock;
pub mod policy;
mod reconcile;
mod running;
#[cfg(test)]
mod tests;

pub use dispatch::run;
pub use lock::{LockError, StateLock};

use crate::attempt::AttemptConfig;
use crate::state::JobId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most jobs running at once (a hard ceiling).
    pub parallel: usize,
    /// Most jobs running at once per group; groups not named are limited only by `parallel`.
    pub group_limits: HashMap<String, usize>,
    /// CPU budget shared by running jobs (default: the engine's CPU count).
    pub host_cpus: Option<f64>,
    /// Memory budget shared by running jobs, bytes (default: the engine's memory).
    pub host_memory: Option<u64>,
    /// How each attempt runs (stop grace, where logs, results and work trees go, log cap, the
    /// operator's allow-lists).
    pub attempt: AttemptConfig,
    /// Where the gateway's per-attempt sockets live (`<run_dir>/<job>-<attempt>/`); absolute,
    /// because relays bind-mount them.
    pub run_dir: PathBuf,
    /// How often the dispatcher looks at the queue and at cancel requests.
    pub tick: Duration,
    /// Daemon only: a directory whose job files are submitted once per content.
    pub jobs_dir: Option<PathBuf>,
    /// How often the jobs dir is scanned.
    pub jobs_dir_interval: Duration,
    /// Model prices for metering LLM calls.
    pub prices: crate::llm::Prices,
    /// Most LLM calls in flight to each upstream (base URL); more wait for a free slot. `None`
    /// is no limit.
    pub llm_concurrency: Option<usize>,
    /// Where the gateway also listens on the network, for backends whose containers reach it
    /// that way (Kubernetes); `None` serves only the attempts' sockets.
    pub gateway_listen: Option<std::net::SocketAddr>,
}

impl SchedulerConfig {
    /// Defaults for a state dir.
    pub fn new(state_dir: &std::path::Path) -> Self {
        SchedulerConfig {
            attempt: AttemptConfig::new(state_dir),
            run_dir: std::path::absolute(state_dir)
                .unwrap_or_else(|_| state_dir.to_path_buf())
                .join("run"),
            parallel: 4,
            group_limits: HashMap::new(),
            host_cpus: None,
            host_memory: None,
            tick: Duration::from_millis(200),
            jobs_dir: None,
            jobs_dir_interval: Duration::from_secs(2),
            prices: crate::llm::Prices::default(),
            llm_concurrency: None,
            gateway_listen: None,
        }
    }
}

/// Which queued jobs this scheduler takes.
#[derive(Clone, Debug)]
pub enum Scope {
    /// `runner run`: only these jobs; return when all are terminal.
    Only(Vec<JobId>),
    /// `runner daemon`: every queued job; return only on shutdown.
    All,
}

/// Shutdown triggers: the first drains (no new jobs; running ones finish), the second stops
/// running jobs (grace, then kill; they end `cancelled`).
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub drain: CancellationToken,
    pub kill: CancellationToken,
}

/// Errors that stop a scheduler (a single job's trouble never does).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
}
