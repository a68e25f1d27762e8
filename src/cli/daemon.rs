//! `runner daemon [--jobs-dir DIR] [--parallel N]`

use super::exit::{CmdResult, SUCCESS};
use super::LimitArgs;
use crate::scheduler::{Scope, StateLock};
use crate::store::SharedStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(state_dir: &Path, jobs_dir: Option<PathBuf>, limits: &LimitArgs) -> CmdResult {
    if let Some(dir) = &jobs_dir {
        if !dir.is_dir() {
            return Err(super::exit::Failure::invalid(format!(
                "--jobs-dir {}: not a directory (create it or point at one)",
                dir.display()
            )));
        }
    }
    let sandbox = super::connect_docker().await?;
    let _lock = StateLock::acquire(state_dir)?;
    let store = SharedStore::new(super::open_store(state_dir)?);
    let mut config = limits.config(state_dir)?;
    config.jobs_dir = jobs_dir;
    let shutdown = super::install_signals();
    tracing::info!(state_dir = %state_dir.display(), parallel = config.parallel, "daemon started");
    crate::scheduler::run(store, Arc::new(sandbox), config, Scope::All, shutdown).await?;
    tracing::info!("daemon stopped");
    Ok(SUCCESS)
}
