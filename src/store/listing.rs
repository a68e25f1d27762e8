//! The dashboard's job list as the store answers it: the newest matching jobs (a page), with
//! counts and usage totals over every matching job, filtered and summed in SQL. A store of
//! ten thousand jobs is answered without reading (and decoding the specs of) all of them.

use super::jobs::{job_from_row, JOB_COLUMNS};
use super::{Result, Store};
use crate::state::{JobId, JobState};
use rusqlite::params;
use std::collections::HashMap;

/// What the dashboard's job list shows of a job beside its record: turns recorded and LLM
/// usage over all its attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JobTally {
    pub turns: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

/// Which jobs the list shows (empty: any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub group: Option<String>,
    /// A part of the job's name (case-sensitive).
    pub name: Option<String>,
}

/// One page of the job list.
#[derive(Debug, Default)]
pub struct JobListing {
    /// The newest matching jobs, newest first, at most the limit asked for.
    pub jobs: Vec<super::JobRecord>,
    /// Turns, tokens and cost of the jobs on the page, by job id.
    pub tallies: HashMap<String, JobTally>,
    /// Ids of the running jobs on the page that are paused.
    pub paused: Vec<String>,
    /// Every matching job, counted by state, and how many of the running ones are paused.
    pub by_state: Vec<(JobState, u64)>,
    pub paused_running: u64,
    /// Tokens and cost of every matching job.
    pub tokens: u64,
    pub cost_usd: f64,
    /// Every concurrency group in the store (for the filter's choices), sorted.
    pub groups: Vec<String>,
}

impl JobListing {
    /// How many jobs match (the page may show fewer).
    pub fn matched(&self) -> u64 {
        self.by_state.iter().map(|(_, n)| n).sum()
    }
}

/// The filter as SQL over `jobs` (parameters ?1 state, ?2 group, ?3 name part; NULL: any).
const MATCHES: &str = "(?1 IS NULL OR state = ?1) AND (?2 IS NULL OR grp = ?2) \
    AND (?3 IS NULL OR instr(name, ?3) > 0)";

impl Store {
    /// The newest `limit` jobs that match `filter`, with counts and totals over all that match.
    pub fn job_listing(&self, filter: &JobFilter, limit: usize) -> Result<JobListing> {
        let p = params![
            filter.state.map(|s| s.as_str()),
            filter.group.as_deref(),
            filter.name.as_deref().filter(|n| !n.is_empty()),
        ];
        let mut out = JobListing::default();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {MATCHES} ORDER BY rowid DESC LIMIT {limit}"
        ))?;
        let rows = stmt
            .query_map(p, job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.jobs = rows.into_iter().collect::<Result<_>>()?;

        let mut stmt = self.conn.prepare(&format!(
            "SELECT state, count(*), sum(state = 'running' AND paused != 0) FROM jobs WHERE {MATCHES} GROUP BY state"
        ))?;
        for row in stmt.query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (state, n, paused) = row?;
            if let Ok(state) = state.parse::<JobState>() {
                out.by_state.push((state, n as u64));
            }
            out.paused_running += paused as u64;
        }

        let (tokens, cost): (i64, f64) = self.conn.query_row(
            &format!(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0), coalesce(sum(cost_usd), 0) \
                 FROM usage WHERE job_id IN (SELECT id FROM jobs WHERE {MATCHES})"
            ),
            p,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.tokens = tokens as u64;
        out.cost_usd = cost;

        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT grp FROM jobs ORDER BY grp")?;
        out.groups = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;

        // Tallies and pauses of the page's jobs: three grouped queries, not three per row.
        let page = format!("SELECT id FROM jobs WHERE {MATCHES} ORDER BY rowid DESC LIMIT {limit}");
        let mut stmt = self.conn.prepare(&format!(
            "SELECT job_id, count(*) FROM events WHERE kind = 'turn' AND job_id IN ({page}) GROUP BY job_id"
        ))?;
        for row in stmt.query_map(p, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, turns) = row?;
            out.tallies.entry(id).or_default().turns = turns as u64;
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT job_id, sum(prompt_tokens + completion_tokens), sum(cost_usd) FROM usage \
             WHERE job_id IN ({page}) GROUP BY job_id"
        ))?;
        for row in stmt.query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })? {
            let (id, tokens, cost) = row?;
            let tally = out.tallies.entry(id).or_default();
            tally.tokens = tokens as u64;
            tally.cost_usd = cost;
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id FROM jobs WHERE state = 'running' AND paused != 0 AND id IN ({page})"
        ))?;
        out.paused = stmt
            .query_map(p, |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(out)
    }

    /// One job's turns, tokens and cost (a row of the list).
    pub fn job_tally(&self, id: &JobId) -> Result<JobTally> {
        let id = id.as_str();
        let turns: i64 = self.conn.query_row(
            "SELECT count(*) FROM events WHERE job_id = ?1 AND kind = 'turn'",
            [id],
            |r| r.get(0),
        )?;
        let (tokens, cost): (i64, f64) = self.conn.query_row(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0), coalesce(sum(cost_usd), 0) FROM usage WHERE job_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(JobTally {
            turns: turns as u64,
            tokens: tokens as u64,
            cost_usd: cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::JobFilter;
    use crate::state::JobState;
    use crate::store::tests_support::submit_one;
    use crate::store::{Role, Store, Usage};

    #[test]
    fn the_listing_pages_the_newest_matching_jobs_and_counts_every_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(submit_one(&mut store, &format!("job-{i}")));
        }
        let other = submit_one(&mut store, "other");
        let usage = Usage {
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_usd: 0.5,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        store
            .add_usage(&ids[0], 1, Role::Agent, "m", &usage)
            .unwrap();
        store
            .add_usage(&other, 1, Role::Agent, "m", &usage)
            .unwrap();

        let all = store.job_listing(&JobFilter::default(), 3).unwrap();
        assert_eq!(all.jobs.len(), 3);
        assert_eq!(all.jobs[0].id, other, "newest first");
        assert_eq!(all.matched(), 8);
        assert_eq!(all.by_state, vec![(JobState::Queued, 8)]);
        assert_eq!((all.tokens, all.cost_usd), (30, 1.0));

        let named = JobFilter {
            name: Some("job-".into()),
            ..JobFilter::default()
        };
        let some = store.job_listing(&named, 100).unwrap();
        assert_eq!(some.matched(), 7);
        assert_eq!(some.jobs.len(), 7);
        assert_eq!(some.jobs[6].id, ids[0]);
        assert_eq!(some.tallies[ids[0].as_str()].tokens, 15);
        assert_eq!((some.tokens, some.cost_usd), (15, 0.5));

        let running = JobFilter {
            state: Some(JobState::Running),
            ..JobFilter::default()
        };
        let none = store.job_listing(&running, 100).unwrap();
        assert_eq!((none.jobs.len(), none.matched(), none.tokens), (0, 0, 0));
        assert_eq!(none.groups, all.groups, "every group is offered");
    }
}
