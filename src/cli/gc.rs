//! `runner gc [--dry-run] [--older-than 7d]`: removes this state dir's containers that no active
//! job owns (left by a crash, say) and the logs of jobs that ended long ago.

use super::exit::{CmdResult, SUCCESS};
use crate::sandbox::Sandbox;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub async fn run(
    state_dir: &Path,
    backend: &super::BackendArgs,
    dry_run: bool,
    older_than: Duration,
) -> CmdResult {
    let mut store = super::open_store(state_dir)?;
    let sandbox = backend.connect().await?;
    let owned = sandbox.list_owned(store.state_id()).await?;
    let live: HashSet<String> = store
        .active()?
        .into_iter()
        .filter_map(|(_, attempt)| attempt.map(|a| a.container))
        .collect();
    let verb = if dry_run { "would remove" } else { "removed" };
    // A relay lives as long as the attempt it serves.
    let orphans = owned
        .iter()
        .filter(|c| !live.contains(crate::sandbox::attempt_of(&c.name)));
    for container in orphans {
        if !dry_run {
            sandbox.remove(&container.name).await?;
        }
        println!("{verb} container {}", container.name);
    }
    if live.is_empty() {
        let removed = if dry_run {
            false
        } else {
            sandbox.remove_legacy_llm_network(store.state_id()).await?
        };
        if removed {
            println!("removed network runner-llm-{}", store.state_id());
        }
    }
    let cutoff = time::OffsetDateTime::now_utc() - older_than;
    let expired = store.ended_before(&crate::state::format_rfc3339(cutoff))?;
    for id in expired {
        let dirs = [
            state_dir.join("logs").join(id.as_str()),
            state_dir.join("artifacts").join(id.as_str()),
        ];
        if !dirs.iter().any(|d| d.exists()) && store.artifacts(&id)?.is_empty() {
            continue;
        }
        if !dry_run {
            for dir in dirs.iter().filter(|d| d.exists()) {
                std::fs::remove_dir_all(dir).map_err(|e| {
                    super::exit::Failure::environment(format!(
                        "cannot remove {}: {e}",
                        dir.display()
                    ))
                })?;
            }
            store.forget_artifacts(&id)?;
            store.forget_transcript(&id)?;
        }
        println!("{verb} logs and artifacts of {id}");
    }
    Ok(SUCCESS)
}
