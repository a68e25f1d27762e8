//! Following jobs through the store's events, the same ones `runner events` and `runner show`
//! read: `runner run` (whose scheduler runs in this process) and `submit --wait` (where another
//! process schedules the jobs) both show what the attempts recorded, polled every 200 ms.

use super::progress::Progress;
use crate::state::JobId;
use crate::store::{JobRecord, SharedStore, StoreError};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the store is read for new events.
const POLL: Duration = Duration::from_millis(200);

/// Most events read in one query; more are read at once while there are.
const BATCH: usize = 500;

/// Shows the events of some jobs recorded after a given one.
struct Follower {
    /// The followed jobs and their names.
    names: HashMap<JobId, String>,
    /// The last event seen (of any job).
    after: i64,
    progress: Progress,
}

impl Follower {
    /// Follows `ids` from the event after `after` (see [`crate::store::Store::last_event_seq`]).
    async fn new(store: &SharedStore, ids: &[JobId], after: i64) -> Result<Self, StoreError> {
        let wanted = ids.to_vec();
        let jobs = store.call(move |s| s.jobs(&wanted)).await?;
        Ok(Follower {
            names: jobs.into_iter().map(|j| (j.id, j.name)).collect(),
            after,
            progress: Progress::new(),
        })
    }

    /// Shows what the followed jobs recorded since the last call.
    async fn poll(&mut self, store: &SharedStore) -> Result<(), StoreError> {
        loop {
            let after = self.after;
            let events = store.call(move |s| s.events_since(after, BATCH)).await?;
            let full = events.len() == BATCH;
            for event in events {
                self.after = event.seq;
                if let Some(name) = self.names.get(&event.job_id) {
                    self.progress.show(name, &event);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Shows the events of `ids` recorded after `after` until `stop` fires, then the rest recorded
/// until then. A store that cannot be read only delays the display (logged).
pub async fn until_stopped(
    store: SharedStore,
    ids: Vec<JobId>,
    after: i64,
    stop: CancellationToken,
) {
    let mut follower = match Follower::new(&store, &ids, after).await {
        Ok(follower) => follower,
        Err(e) => {
            tracing::warn!("cannot show progress: {e}");
            return;
        }
    };
    loop {
        let stopping = stop.is_cancelled();
        if let Err(e) = follower.poll(&store).await {
            tracing::warn!("cannot read the jobs' events: {e}");
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => {}
        }
    }
    follower.progress.done();
}

/// Waits until every job of `ids` is terminal, showing their events recorded after `after`;
/// returns their final records.
pub async fn until_done(
    store: &SharedStore,
    ids: &[JobId],
    after: i64,
) -> Result<Vec<JobRecord>, StoreError> {
    let mut follower = Follower::new(store, ids, after).await?;
    loop {
        // The states first: every event recorded before a final state is then shown below.
        let wanted = ids.to_vec();
        let jobs = store.call(move |s| s.jobs(&wanted)).await?;
        follower.poll(store).await?;
        if jobs.iter().all(|j| j.state.is_terminal()) {
            follower.progress.done();
            return Ok(jobs);
        }
        tokio::time::sleep(POLL).await;
    }
}
