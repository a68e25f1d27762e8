//! Following jobs through the store (for `submit --wait`, where another process schedules them):
//! polls their states and reports each change.

use super::progress::Progress;
use crate::scheduler::Event;
use crate::state::{JobId, JobState};
use crate::store::{JobRecord, SharedStore};
use std::collections::HashMap;
use std::time::Duration;

/// Waits until every job is terminal, showing changes; returns their final records.
pub async fn until_done(
    store: &SharedStore,
    ids: &[JobId],
) -> Result<Vec<JobRecord>, crate::store::StoreError> {
    let mut progress = Progress::new();
    let mut seen: HashMap<JobId, (JobState, u32)> = HashMap::new();
    loop {
        let wanted = ids.to_vec();
        let jobs = store.call(move |s| s.jobs(&wanted)).await?;
        for job in &jobs {
            let now = (job.state, job.attempts);
            if seen.get(&job.id) != Some(&now) {
                seen.insert(job.id.clone(), now);
                progress.show(&Event {
                    job: job.id.clone(),
                    name: job.name.clone(),
                    state: job.state,
                    detail: if job.state.is_terminal() {
                        job.detail.clone()
                    } else {
                        None
                    },
                });
            }
        }
        if jobs.iter().all(|j| j.state.is_terminal()) {
            return Ok(jobs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
