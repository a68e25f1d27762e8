//! `runner daemon [--jobs-dir DIR] [--parallel N]`

use super::exit::{CmdResult, SUCCESS};
use super::LimitArgs;
use crate::scheduler::{Scope, StateLock};
use crate::store::SharedStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(
    state_dir: &Path,
    jobs_dir: Option<PathBuf>,
    limits: &LimitArgs,
    backend: &super::BackendArgs,
    listen: Option<std::net::SocketAddr>,
    jobs_from: Option<PathBuf>,
) -> CmdResult {
    if let Some(dir) = &jobs_dir {
        if !dir.is_dir() {
            return Err(super::exit::Failure::invalid(format!(
                "--jobs-dir {}: not a directory (create it or point at one)",
                dir.display()
            )));
        }
    }
    let sandbox = backend.connect().await?;
    let _lock = StateLock::acquire(state_dir)?;
    let store = SharedStore::new(super::open_store(state_dir)?);
    let mut config = limits.config(state_dir)?;
    config.gateway_listen = backend.gateway_listen;
    config.jobs_dir = jobs_dir;
    // Mission control, from this process but on its own store connection; it stops with the
    // scheduler.
    let stop_serving = tokio_util::sync::CancellationToken::new();
    let server = match listen {
        Some(addr) => {
            let state = super::serve::open(state_dir, jobs_from)?;
            let listener = crate::serve::bind(addr, &state, false).await?;
            let stop = stop_serving.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::serve::serve(listener, state, stop).await {
                    tracing::error!("mission control stopped: {e}");
                }
            }))
        }
        None => None,
    };
    let shutdown = super::install_signals();
    tracing::info!(state_dir = %state_dir.display(), parallel = config.parallel, "daemon started");
    let ran = crate::scheduler::run(store, Arc::new(sandbox), config, Scope::All, shutdown).await;
    stop_serving.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    ran?;
    tracing::info!("daemon stopped");
    Ok(SUCCESS)
}
