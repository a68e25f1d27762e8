//! `runner serve [--listen ADDR] [--jobs-from DIR]`: mission control (pages, API, metrics) for a
//! state dir, beside a daemon or alone, until SIGINT/SIGTERM. See [`crate::serve`].

use super::exit::{CmdResult, Failure, SUCCESS};
use crate::serve::{self, ServeState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Checks `--jobs-from` and opens the server's state (store connection and token).
pub(super) fn open(state_dir: &Path, jobs_from: Option<PathBuf>) -> Result<ServeState, Failure> {
    let jobs_from = match jobs_from {
        Some(dir) => Some(
            std::fs::canonicalize(&dir)
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| {
                    Failure::invalid(format!(
                        "--jobs-from {}: not a directory (create it or point at one)",
                        dir.display()
                    ))
                })?,
        ),
        None => None,
    };
    ServeState::open(state_dir, jobs_from)
}

pub async fn run(state_dir: &Path, listen: SocketAddr, jobs_from: Option<PathBuf>) -> CmdResult {
    let state = open(state_dir, jobs_from)?;
    let listener = serve::bind(listen, &state, true).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    serve::serve(listener, state, stop)
        .await
        .map_err(|e| Failure::environment(format!("the server stopped: {e}")))?;
    Ok(SUCCESS)
}
