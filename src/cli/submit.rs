//! `runner submit PATH... [--wait] [--json]`

use super::exit::{CmdResult, JOB_FAILED, SUCCESS};
use super::output;
use crate::scheduler::StateLock;
use crate::state::JobState;
use crate::store::{NewJob, SharedStore};
use std::path::{Path, PathBuf};

pub async fn run(state_dir: &Path, paths: &[PathBuf], wait: bool, json: bool) -> CmdResult {
    let loaded = super::load_jobs(paths, "; nothing was submitted")?;
    let mut store = super::open_store(state_dir)?;
    let jobs: Vec<NewJob> = loaded.into_iter().map(NewJob::from).collect();
    let before = store.last_event_seq()?;
    let ids = store.submit(&jobs)?;
    if json && !wait {
        let list = ids
            .iter()
            .map(|id| output::job_json(&store, &store.job(id)?))
            .collect::<Result<Vec<_>, _>>()?;
        println!("{}", serde_json::Value::Array(list));
    } else if !json {
        for id in &ids {
            println!("{id}");
        }
    }
    if !wait {
        return Ok(SUCCESS);
    }
    if !StateLock::is_held(state_dir) {
        eprintln!(
            "runner: no scheduler is running on {}: start `runner daemon --state-dir {}` to run these jobs",
            state_dir.display(),
            state_dir.display()
        );
    }
    let shared = SharedStore::new(store);
    let done = super::follow::until_done(&shared, &ids, before).await?;
    super::github::report(state_dir, &shared, &ids, json).await?;
    if json {
        let list = shared
            .call(move |s| {
                done.iter()
                    .map(|j| output::job_json(s, j))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        println!("{}", serde_json::Value::Array(list));
        let all_ok = list_ok(&shared, &ids).await?;
        return Ok(if all_ok { SUCCESS } else { JOB_FAILED });
    }
    Ok(if list_ok(&shared, &ids).await? {
        SUCCESS
    } else {
        JOB_FAILED
    })
}

async fn list_ok(
    store: &SharedStore,
    ids: &[crate::state::JobId],
) -> Result<bool, crate::store::StoreError> {
    let ids = ids.to_vec();
    let jobs = store.call(move |s| s.jobs(&ids)).await?;
    Ok(jobs.iter().all(|j| j.state == JobState::Succeeded))
}
