//! Counts over the whole store, for `/metrics`: jobs by state, attempts and their durations,
//! turn durations, metered LLM usage and budget refusals. Every figure is one aggregate query
//! (a histogram's buckets are counted in SQL too), so a store of many thousands of jobs is
//! summed in milliseconds without reading its rows into the program.

use super::jobs::{parse_col, parse_opt_col};
use super::usage::usage_at;
use super::{ModelUsage, Result, Role, Store};
use crate::state::{JobState, Reason};

/// What the store holds, counted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Jobs by state and reason (each combination present in the store, in no set order).
    pub jobs: Vec<(JobState, Option<Reason>, u64)>,
    /// Jobs holding a slot of their concurrency group (starting or running), by group.
    pub active_by_group: Vec<(String, u64)>,
    /// Attempts started: each one is one container the runner created.
    pub attempts_started: u64,
    /// Attempts that have ended, by how they ended.
    pub attempts_ended: Vec<(JobState, Option<Reason>, u64)>,
    /// Wall-clock durations of ended attempts (started to finished), by how they ended.
    pub attempt_seconds: Vec<(JobState, Histogram)>,
    /// Wall-clock durations of agents' manager turns: from the previous turn's end (or the
    /// attempt's `running` event, for its first turn) to the turn's event, time paused included.
    pub turn_seconds: Histogram,
    /// Metered LLM usage by role and model (every pair present in the store), summed over every
    /// attempt. Models come in the order they were first metered (usage rows are never
    /// deleted, so a model keeps its place), a model's roles in role order. Model '' is usage
    /// metered before the store recorded models.
    pub usage: Vec<ModelUsage>,
    /// `budget` events by role: attempts whose LLM calls the gateway refused because the job's
    /// budget was spent (one event per attempt, at its first refusal).
    pub budget_refusals: Vec<(Role, u64)>,
}

/// Observations counted into buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// `(upper bound, observations at or below it)`, in the order of the bounds asked for
    /// (cumulative, as Prometheus' `le` buckets are).
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// Seconds between two RFC 3339 columns (SQLite's `julianday` reads them, `Z` and milliseconds
/// included), rounded to the milliseconds they hold (a day number in a double is a few
/// microseconds off).
fn seconds_between(from: &str, to: &str) -> String {
    format!("round((julianday({to}) - julianday({from})) * 86400.0, 3)")
}

impl Store {
    /// Counts what `/metrics` reports. `attempt_bounds` and `turn_bounds` are the upper bounds
    /// (seconds, ascending) of the duration histograms' buckets.
    pub fn stats(&self, attempt_bounds: &[f64], turn_bounds: &[f64]) -> Result<Stats> {
        let jobs = self.by_state_and_reason(
            "SELECT state, reason, count(*) FROM jobs GROUP BY state, reason",
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT grp, count(*) FROM jobs WHERE state IN ('starting', 'running') GROUP BY grp ORDER BY grp",
        )?;
        let active_by_group = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        let attempts_started = self
            .conn
            .query_row("SELECT count(*) FROM attempts", [], |r| r.get::<_, i64>(0))?
            as u64;
        let attempts_ended = self.by_state_and_reason(
            "SELECT state, reason, count(*) FROM attempts WHERE finished_at IS NOT NULL GROUP BY state, reason",
        )?;
        let attempt_durations = format!(
            "SELECT state AS label, {} AS d FROM attempts WHERE finished_at IS NOT NULL",
            seconds_between("started_at", "finished_at")
        );
        let attempt_seconds = self
            .histograms(&attempt_durations, attempt_bounds)?
            .into_iter()
            .map(|(state, h)| {
                state
                    .parse()
                    .map(|s| (s, h))
                    .map_err(|message| super::StoreError::Corrupt {
                        id: "attempts".into(),
                        message,
                    })
            })
            .collect::<Result<_>>()?;
        // A turn starts where the attempt's previous turn (or its `running` event) ended. The
        // window follows `events_by_job` (job, seq), so it needs no sort.
        let turn_durations = format!(
            "SELECT '' AS label, {} AS d FROM (
               SELECT kind, attempt, at,
                      lag(at) OVER w AS prev_at, lag(attempt) OVER w AS prev_attempt
               FROM events
               WHERE kind = 'turn' OR (kind = 'state' AND state = 'running')
               WINDOW w AS (PARTITION BY job_id ORDER BY seq)
             ) WHERE kind = 'turn' AND prev_attempt = attempt",
            seconds_between("prev_at", "at")
        );
        let turn_seconds = self
            .histograms(&turn_durations, turn_bounds)?
            .pop()
            .map(|(_, h)| h)
            .unwrap_or_else(|| Histogram {
                buckets: turn_bounds.iter().map(|b| (*b, 0)).collect(),
                ..Histogram::default()
            });
        let mut stmt = self.conn.prepare(
            "SELECT role, model, sum(requests), sum(prompt_tokens), sum(completion_tokens), total(cost_usd), sum(unpriced_requests), sum(estimated_requests)
             FROM usage GROUP BY role, model
             ORDER BY min(min(rowid)) OVER (PARTITION BY model), role",
        )?;
        let usage = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    usage_at(r, 2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .filter_map(|(role, model, usage)| {
                Some(ModelUsage {
                    role: Role::parse(&role)?,
                    model,
                    usage,
                })
            })
            .collect();
        let mut stmt = self.conn.prepare(
            "SELECT json_extract(data, '$.role'), count(*) FROM events WHERE kind = 'budget' GROUP BY 1 ORDER BY 1",
        )?;
        let budget_refusals = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .filter_map(|(role, n)| Some((Role::parse(role.as_deref()?)?, n)))
            .collect();
        Ok(Stats {
            jobs,
            active_by_group,
            attempts_started,
            attempts_ended,
            attempt_seconds,
            turn_seconds,
            usage,
            budget_refusals,
        })
    }

    fn by_state_and_reason(&self, sql: &str) -> Result<Vec<(JobState, Option<Reason>, u64)>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    parse_col(r, 0)?,
                    parse_opt_col(r, 1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Histograms of `d` by `label`, from `rows` (a query with those two columns), each bucket
    /// counted in SQL. `rows` is materialized so that `d` is computed once per row, not once
    /// per bucket.
    fn histograms(&self, rows: &str, bounds: &[f64]) -> Result<Vec<(String, Histogram)>> {
        let buckets: String = (1..=bounds.len())
            .map(|i| format!(", coalesce(sum(d <= ?{i}), 0)"))
            .collect();
        let mut stmt = self.conn.prepare(&format!(
            "WITH r AS MATERIALIZED ({rows})
             SELECT label, count(*), total(d){buckets} FROM r WHERE d IS NOT NULL GROUP BY label ORDER BY label"
        ))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(bounds), |r| {
                let mut counts = Vec::with_capacity(bounds.len());
                for (i, bound) in bounds.iter().enumerate() {
                    counts.push((*bound, r.get::<_, i64>(3 + i)? as u64));
                }
                Ok((
                    r.get(0)?,
                    Histogram {
                        buckets: counts,
                        count: r.get::<_, i64>(1)? as u64,
                        sum: r.get(2)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

/// Helpers for tests elsewhere that need a store with given times or many jobs.
#[cfg(test)]
pub(crate) mod tests_support {
    use crate::state::JobId;
    use crate::store::Store;
    use rusqlite::params;

    /// Sets when attempt `n` started and finished (RFC 3339), as if it had taken that long.
    pub(crate) fn backdate_attempt(store: &mut Store, id: &JobId, n: u32, from: &str, to: &str) {
        store
            .conn
            .execute(
                "UPDATE attempts SET started_at = ?3, finished_at = ?4 WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n, from, to],
            )
            .unwrap();
    }

    /// Sets the time of event `seq`.
    pub(crate) fn backdate_event(store: &mut Store, seq: i64, at: &str) {
        store
            .conn
            .execute("UPDATE events SET at = ?2 WHERE seq = ?1", params![seq, at])
            .unwrap();
    }

    /// Adds `n` jobs that succeeded after one attempt of a minute with two agent turns and
    /// metered usage: the rows a real run leaves, written in one transaction.
    pub(crate) fn add_finished_jobs(store: &mut Store, n: u32) {
        let spec = serde_json::to_string(&crate::store::tests_support::spec("bulk")).unwrap();
        let turn = r#"{"turn":1,"max_turns":5,"action":"instruct","argument":"a","progress":"p","thought":"t","ended":"e"}"#;
        store
            .write(|tx| {
                tx.execute(
                    "WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < ?1)
                     INSERT INTO jobs (id, name, spec, grp, state, attempts, submitted_at, started_at, finished_at)
                     SELECT printf('BULK%022d', k), 'bulk-' || k, ?2, 'g' || (k % 7), 'succeeded', 1,
                            '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z'
                     FROM i",
                    params![n, spec],
                )?;
                tx.execute_batch(&format!(
                    "INSERT INTO attempts (job_id, n, container, state, started_at, finished_at)
                       SELECT id, 1, 'c-' || id, 'succeeded', started_at, finished_at FROM jobs WHERE id LIKE 'BULK%';
                     INSERT INTO events (job_id, attempt, at, state, kind, data)
                       SELECT id, 1, '2026-01-01T00:00:01.000Z', 'running', 'state', NULL FROM jobs WHERE id LIKE 'BULK%';
                     INSERT INTO events (job_id, attempt, at, state, kind, data)
                       SELECT id, 1, '2026-01-01T00:00:21.000Z', 'running', 'turn', '{turn}' FROM jobs WHERE id LIKE 'BULK%';
                     INSERT INTO events (job_id, attempt, at, state, kind, data)
                       SELECT id, 1, '2026-01-01T00:00:51.000Z', 'running', 'turn', '{turn}' FROM jobs WHERE id LIKE 'BULK%';
                     INSERT INTO events (job_id, attempt, at, state, kind)
                       SELECT id, 1, finished_at, 'succeeded', 'state' FROM jobs WHERE id LIKE 'BULK%';
                     INSERT INTO usage (job_id, attempt, role, model, requests, prompt_tokens, completion_tokens, cost_usd)
                       SELECT id, 1, 'agent', 'gpt-4o-mini', 2, 100, 10, 0.001 FROM jobs WHERE id LIKE 'BULK%';"
                ))?;
                Ok(())
            })
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::state::Outcome;
    use crate::store::tests_support::submit_one;
    use crate::store::{EventBody, TurnEvent, Usage};

    #[test]
    fn attempt_durations_fall_in_the_buckets_of_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        for (name, seconds) in [("quick", "00:00:00.500"), ("slow", "00:01:30.250")] {
            let id = submit_one(&mut store, name);
            store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
            store
                .finish_attempt(&id, 1, &Outcome::Succeeded, 1)
                .unwrap();
            let to = format!("2026-01-01T{seconds}Z");
            backdate_attempt(&mut store, &id, 1, "2026-01-01T00:00:00.000Z", &to);
        }
        let running = submit_one(&mut store, "running");
        store
            .claim(&running, |n| format!("c-{n}"))
            .unwrap()
            .unwrap();
        let stats = store.stats(&[1.0, 60.0, 120.0], &[]).unwrap();
        let (state, h) = &stats.attempt_seconds[0];
        assert_eq!(stats.attempt_seconds.len(), 1, "{stats:?}");
        assert_eq!(*state, JobState::Succeeded);
        assert_eq!(h.buckets, [(1.0, 1), (60.0, 1), (120.0, 2)]);
        assert_eq!(h.count, 2, "the running attempt has no duration yet");
        assert!((h.sum - 90.75).abs() < 1e-3, "{h:?}");
        assert_eq!(stats.attempts_started, 3);
    }

    #[test]
    fn a_turn_lasts_from_the_previous_turn_or_the_start_of_running_in_its_own_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "agent");
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        store.mark_running(&id, 1).unwrap();
        store.add_turn_event(&id, 1, &TurnEvent::default()).unwrap();
        store.add_event(&id, 1, &EventBody::Paused).unwrap();
        store.add_turn_event(&id, 1, &TurnEvent::default()).unwrap();
        let seqs: Vec<i64> = store.events(&id).unwrap().iter().map(|e| e.seq).collect();
        // queued, starting, running (0 s), turn (+4 s), paused, turn (+40 s)
        for (seq, at) in [
            (2, "00:00:00"),
            (3, "00:00:04"),
            (4, "00:00:10"),
            (5, "00:00:44"),
        ] {
            backdate_event(&mut store, seqs[seq], &format!("2026-01-01T{at}.000Z"));
        }
        let stats = store.stats(&[], &[5.0, 30.0, 60.0]).unwrap();
        let h = &stats.turn_seconds;
        assert_eq!(h.buckets, [(5.0, 1), (30.0, 1), (60.0, 2)], "{h:?}");
        assert_eq!((h.count, h.sum.round()), (2, 44.0));
    }

    #[test]
    fn usage_is_counted_per_role_and_model_in_the_order_models_were_first_metered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (a, b) = (submit_one(&mut store, "a"), submit_one(&mut store, "b"));
        let call = |requests| Usage {
            requests,
            ..Usage::default()
        };
        store
            .add_usage(&a, 1, Role::Manager, "zeta", &call(1))
            .unwrap();
        store
            .add_usage(&a, 1, Role::Agent, "alpha", &call(2))
            .unwrap();
        store
            .add_usage(&b, 1, Role::Agent, "zeta", &call(4))
            .unwrap();
        store
            .add_usage(&b, 2, Role::Agent, "alpha", &call(8))
            .unwrap();
        let rows: Vec<(Role, String, u64)> = store
            .stats(&[], &[])
            .unwrap()
            .usage
            .into_iter()
            .map(|m| (m.role, m.model, m.usage.requests))
            .collect();
        assert_eq!(
            rows,
            [
                (Role::Agent, "zeta".into(), 4),
                (Role::Manager, "zeta".into(), 1),
                (Role::Agent, "alpha".into(), 10),
            ]
        );
    }

    #[test]
    fn a_store_without_turns_has_empty_turn_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stats = store.stats(&[1.0], &[1.0, 2.0]).unwrap();
        assert_eq!(stats.turn_seconds.buckets, [(1.0, 0), (2.0, 0)]);
        assert_eq!(stats.turn_seconds.count, 0);
        assert!(stats.jobs.is_empty() && stats.attempt_seconds.is_empty());
    }
}
