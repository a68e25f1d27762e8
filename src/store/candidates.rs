//! Best-of-N: the candidates of an agent job (`candidates: N`) are attempts of the job that run
//! side by side, numbered like any attempt and marked with their place in their *round* (1 to
//! N). A round is the N attempts claimed together; a retry of the job is a new round.
//!
//! A candidate whose `verify` passes records its diff size and the order it passed in
//! ([`Store::candidate_passed`]); which one wins is then a pure function of the round's rows
//! ([`select`]), persisted as `selected` once decided, so every process agrees on it: the
//! dispatcher stops the others (`control_requests`), a waiting candidate learns it lost. The
//! job ends when the last candidate of its round does ([`finish_candidate`]): succeeded with the
//! winner, else cancelled, retried (every candidate failed in a retryable way and rounds remain)
//! or failed.

use super::events::insert_event;
use super::transitions::add_event;
use super::{EventBody, FinishResult, Result, Store, StoreError};
use crate::job::Select;
use crate::state::{now_rfc3339, JobId, JobState, Outcome, Reason};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// A candidate as selection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateRow {
    /// Its attempt number.
    pub n: u32,
    /// Still starting or running.
    pub active: bool,
    /// The order in which it passed `verify` in its round (1 = first), with its diff size.
    pub passed: Option<(u32, u64)>,
    /// Chosen as the round's winner.
    pub selected: bool,
}

/// Where a round's selection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Not decided yet: a candidate that may still pass is running.
    Pending,
    /// This attempt won.
    Won(u32),
    /// Every candidate ended and none passed.
    NonePassed,
}

/// Chooses the round's winner from its rows. A winner once chosen stays chosen. Only a running
/// candidate that passed can be chosen (one that passed, then timed out while waiting, cannot
/// export). `FirstPass`: the first to pass, as soon as it has. `SmallestDiff`: once no running
/// candidate may still pass, the one with the fewest changed lines (ties: the first to pass).
pub fn select(mode: Select, round: &[CandidateRow]) -> Selection {
    if let Some(winner) = round.iter().find(|c| c.selected) {
        return Selection::Won(winner.n);
    }
    let contenders = round
        .iter()
        .filter(|c| c.active)
        .filter_map(|c| c.passed.map(|(order, diff_lines)| (c.n, order, diff_lines)));
    let still_working = round.iter().any(|c| c.active && c.passed.is_none());
    let winner = match mode {
        Select::FirstPass => contenders.min_by_key(|&(_, order, _)| order),
        Select::SmallestDiff if still_working => return Selection::Pending,
        Select::SmallestDiff => contenders.min_by_key(|&(_, order, diff)| (diff, order)),
    };
    match winner {
        Some((n, _, _)) => Selection::Won(n),
        None if still_working => Selection::Pending,
        None => Selection::NonePassed,
    }
}

/// One candidate of a job as `runner show` and `--json` list it, and as its `candidate` event
/// reports it when it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateEvent {
    /// Its place in its round (1 to `of`).
    pub candidate: u32,
    pub of: u32,
    /// Its attempt's state: `running` while it runs, then how it ended.
    pub state: JobState,
    pub reason: Option<Reason>,
    pub detail: Option<String>,
    /// Lines its change adds or removes, once its `verify` passed.
    pub diff_lines: Option<u64>,
    /// Chosen as the winner: its result is the job's.
    pub selected: bool,
    /// Manager turns, LLM tokens and cost of this candidate.
    pub turns: u32,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl Store {
    /// Records that candidate attempt `n` passed `verify` with a change of `diff_lines` lines,
    /// and returns where the selection stands (deciding it when it can).
    pub fn candidate_passed(
        &mut self,
        id: &JobId,
        n: u32,
        diff_lines: u64,
        mode: Select,
    ) -> Result<Selection> {
        self.write(|tx| {
            let order: u32 = tx.query_row(
                &format!("SELECT count(*) FROM attempts WHERE {ROUND} AND passed IS NOT NULL"),
                [id.as_str()],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE attempts SET passed = ?3, diff_lines = ?4 WHERE job_id = ?1 AND n = ?2 AND passed IS NULL",
                params![id.as_str(), n, order + 1, diff_lines],
            )?;
            decide(tx, id, mode)
        })
    }

    /// Where the selection of job `id`'s current round stands (deciding it when it can).
    pub fn candidate_selection(&mut self, id: &JobId, mode: Select) -> Result<Selection> {
        self.write(|tx| decide(tx, id, mode))
    }

    /// Every candidate of job `id`, every round, with its attempt number, in attempt order
    /// (empty for a job with one attempt at a time).
    pub fn candidates(&self, id: &JobId) -> Result<Vec<(u32, CandidateEvent)>> {
        let ns: Vec<u32> = self
            .conn
            .prepare(
                "SELECT n FROM attempts WHERE job_id = ?1 AND candidate IS NOT NULL ORDER BY n",
            )?
            .query_map([id.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ns.into_iter()
            .map(|n| Ok((n, candidate_report(&self.conn, id, n)?)))
            .collect()
    }
}

/// The attempts of a job's current round: the latest attempt is the round's last candidate, so
/// its `candidate` is the round's size. (`?1` is the job id.)
const ROUND: &str = "job_id = ?1 AND candidate IS NOT NULL AND n > (SELECT j.attempts - coalesce(a.candidate, 1) FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id AND a.n = j.attempts WHERE j.id = ?1)";

/// The rows of job `id`'s current round.
pub(super) fn round_rows(conn: &rusqlite::Connection, id: &JobId) -> Result<Vec<CandidateRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT n, state IN ('starting','running'), passed, diff_lines, selected FROM attempts WHERE {ROUND} ORDER BY n"
    ))?;
    let rows = stmt
        .query_map([id.as_str()], |r| {
            let passed: Option<u32> = r.get(2)?;
            let diff: Option<i64> = r.get(3)?;
            Ok(CandidateRow {
                n: r.get(0)?,
                active: r.get(1)?,
                passed: passed.map(|order| (order, diff.unwrap_or(0).max(0) as u64)),
                selected: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Runs [`select`] over the current round and persists a winner.
fn decide(tx: &rusqlite::Transaction<'_>, id: &JobId, mode: Select) -> Result<Selection> {
    let selection = select(mode, &round_rows(tx, id)?);
    if let Selection::Won(n) = selection {
        tx.execute(
            "UPDATE attempts SET selected = 1 WHERE job_id = ?1 AND n = ?2",
            params![id.as_str(), n],
        )?;
    }
    Ok(selection)
}

/// Whether attempt `n` of job `id` is a candidate whose round has chosen another: it is to stop.
pub(super) fn lost(conn: &rusqlite::Connection, id: &JobId, n: u32) -> Result<bool> {
    let round = round_rows(conn, id)?;
    Ok(round.iter().any(|c| c.selected && c.n != n) && round.iter().any(|c| c.n == n))
}

/// Candidate `n`'s figures, from its attempt row, its usage and its turn events.
fn candidate_report(conn: &rusqlite::Connection, id: &JobId, n: u32) -> Result<CandidateEvent> {
    let row = conn.query_row(
        "SELECT a.candidate, a.state, a.reason, a.detail, a.diff_lines, a.selected,
                (SELECT max(b.candidate) FROM attempts b WHERE b.job_id = a.job_id
                    AND b.candidate IS NOT NULL AND b.n - b.candidate = a.n - a.candidate),
                (SELECT count(*) FROM events e WHERE e.job_id = a.job_id AND e.attempt = a.n AND e.kind = 'turn'),
                (SELECT coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) FROM usage u WHERE u.job_id = a.job_id AND u.attempt = a.n),
                (SELECT coalesce(sum(u.cost_usd), 0) FROM usage u WHERE u.job_id = a.job_id AND u.attempt = a.n)
         FROM attempts a WHERE a.job_id = ?1 AND a.n = ?2",
        params![id.as_str(), n],
        |r| {
            Ok((
                r.get::<_, u32>(0)?,
                super::jobs::parse_col::<JobState>(r, 1)?,
                super::jobs::parse_opt_col::<Reason>(r, 2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, Option<u32>>(6)?,
                r.get::<_, u32>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, f64>(9)?,
            ))
        },
    )?;
    let (candidate, state, reason, detail, diff, selected, of, turns, tokens, cost_usd) = row;
    Ok(CandidateEvent {
        candidate,
        of: of.unwrap_or(candidate),
        state,
        reason,
        detail,
        diff_lines: diff.map(|d| d.max(0) as u64),
        selected,
        turns,
        tokens: tokens.max(0) as u64,
        cost_usd,
    })
}

/// Ends candidate attempt `n` with `outcome` and records its `candidate` event; when it was the
/// last of its round to end, ends the job (or queues a new round). `max_rounds` is 1 + retries,
/// or the attempt's own round for a failure no retry can cure.
pub(super) fn finish_candidate(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
    n: u32,
    outcome: &Outcome,
    max_rounds: u32,
) -> Result<FinishResult> {
    let (state, candidate): (String, u32) = tx.query_row(
        "SELECT state, candidate FROM attempts WHERE job_id = ?1 AND n = ?2",
        params![id.as_str(), n],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if !matches!(state.as_str(), "starting" | "running") {
        return Ok(FinishResult::AlreadyFinished);
    }
    let now = now_rfc3339();
    let round = round_rows(tx, id)?;
    let size = round.len().max(1) as u32;
    let this_round = (n - candidate) / size + 1;
    let winner = round.iter().find(|c| c.selected).map(|c| c.n);
    let detail = match (outcome, winner) {
        (Outcome::Cancelled, Some(w)) if w != n => {
            let place = round.iter().position(|c| c.n == w).unwrap_or(0) + 1;
            format!("stopped: candidate {place} won")
        }
        (Outcome::Failed { detail, .. }, _) => detail.clone(),
        (Outcome::Cancelled, _) => "cancelled".into(),
        (Outcome::Succeeded, _) => String::new(),
    };
    let detail = (!detail.is_empty()).then_some(detail);
    let retryable = outcome.retryable() && this_round < max_rounds;
    super::messages::record_dropped(tx, id, n, &now)?;
    tx.execute(
        "UPDATE attempts SET state = ?3, reason = ?4, exit_code = ?5, detail = ?6, finished_at = ?7, retryable = ?8 WHERE job_id = ?1 AND n = ?2",
        params![id.as_str(), n, outcome.state().as_str(), outcome.reason().map(|r| r.as_str()), outcome.exit_code(), detail, now, retryable],
    )?;
    let report = candidate_report(tx, id, n)?;
    insert_event(tx, id, n, &EventBody::Candidate(report))?;
    if round.iter().any(|c| c.active && c.n != n) {
        return Ok(FinishResult::CandidateEnded);
    }
    // The last candidate of the round ended: the job ends with the round.
    let ended: Vec<Ended> = tx
        .prepare(&format!(
            "SELECT n, state, reason, exit_code, detail, retryable FROM attempts WHERE {ROUND} ORDER BY n"
        ))?
        .query_map([id.as_str()], |r| {
            Ok(Ended {
                n: r.get(0)?,
                state: super::jobs::parse_col(r, 1)?,
                reason: super::jobs::parse_opt_col(r, 2)?,
                exit_code: r.get(3)?,
                detail: r.get(4)?,
                retryable: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let cancel_requested: bool = tx.query_row(
        "SELECT cancel_requested FROM jobs WHERE id = ?1",
        [id.as_str()],
        |r| r.get(0),
    )?;
    let place = |m: u32| ended.iter().position(|e| e.n == m).unwrap_or(0) + 1;
    let (last, state, reason, exit_code, detail) =
        if let Some(won) = ended.iter().find(|e| e.state == JobState::Succeeded) {
            let diff = round
                .iter()
                .find(|c| c.n == won.n)
                .and_then(|c| c.passed)
                .map_or(0, |(_, d)| d);
            let why = format!(
                "candidate {} of {size} won ({diff} changed lines)",
                place(won.n)
            );
            (won.n, JobState::Succeeded, None, None, Some(why))
        } else if cancel_requested {
            (n, JobState::Cancelled, None, None, Some("cancelled".into()))
        } else if ended.iter().all(|e| e.retryable) {
            let why = format!(
                "retrying (round {} of {max_rounds}) after every candidate failed: {}",
                this_round + 1,
                ended
                    .iter()
                    .find_map(|e| e.detail.clone())
                    .unwrap_or_else(|| "an infrastructure failure".into())
            );
            tx.execute(
                "UPDATE jobs SET state = 'queued', reason = ?2, detail = ?3 WHERE id = ?1",
                params![id.as_str(), outcome.reason().map(|r| r.as_str()), why],
            )?;
            add_event(
                tx,
                id,
                Some(n),
                &now,
                JobState::Queued,
                outcome.reason(),
                Some(&why),
            )?;
            return Ok(FinishResult::Requeued);
        } else {
            // The first failure of the round that was not a stop: the winner's, if delivering its
            // result failed, else the lowest candidate's.
            let first = ended
                .iter()
                .find(|e| e.state == JobState::Failed && Some(e.n) == winner)
                .or_else(|| ended.iter().find(|e| e.state == JobState::Failed))
                .or_else(|| ended.first())
                .cloned()
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let state = if first.state == JobState::Failed {
                JobState::Failed
            } else {
                JobState::Cancelled
            };
            let why = format!(
                "no candidate of {size} succeeded; candidate {}: {}",
                place(first.n),
                first
                    .detail
                    .clone()
                    .unwrap_or_else(|| first.state.to_string())
            );
            (first.n, state, first.reason, first.exit_code, Some(why))
        };
    tx.execute(
        "UPDATE jobs SET state = ?2, reason = ?3, exit_code = ?4, detail = ?5, finished_at = ?6 WHERE id = ?1",
        params![id.as_str(), state.as_str(), reason.map(|r| r.as_str()), exit_code, detail, now],
    )?;
    add_event(tx, id, Some(last), &now, state, reason, detail.as_deref())?;
    Ok(FinishResult::Finished(state))
}

/// A candidate of the round that ended, as the job's end reads it.
#[derive(Clone)]
struct Ended {
    n: u32,
    state: JobState,
    reason: Option<Reason>,
    exit_code: Option<i64>,
    detail: Option<String>,
    /// Its failure allows a new round.
    retryable: bool,
}

/// The candidate number of attempt `n`, if it is one.
pub(super) fn candidate_of(conn: &rusqlite::Connection, id: &JobId, n: u32) -> Result<Option<u32>> {
    Ok(conn
        .query_row(
            "SELECT candidate FROM attempts WHERE job_id = ?1 AND n = ?2",
            params![id.as_str(), n],
            |r| r.get::<_, Option<u32>>(0),
        )
        .optional()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewJob, Store};

    /// A best-of-`n` agent job, its round of candidates claimed and running.
    fn running_round(store: &mut Store, n: u32, retries: u32) -> JobId {
        let mut spec = crate::store::tests_support::spec("best");
        spec.kind = crate::job::JobKind::Task {
            task: "do it".into(),
        };
        spec.candidates = n;
        spec.retries = retries;
        let id = store
            .submit(&[NewJob { spec, source: None }])
            .unwrap()
            .remove(0);
        let round = store
            .claim_round(&id, n, |a| format!("c-{a}"))
            .unwrap()
            .unwrap();
        for a in &round {
            assert!(store.mark_running(&id, a.n).unwrap());
        }
        id
    }

    fn lost() -> Outcome {
        Outcome::failed(Reason::Lost, None, "gone")
    }

    #[test]
    fn the_first_candidate_to_pass_wins_the_others_are_stopped_and_the_job_succeeds_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = running_round(&mut store, 3, 0);
        assert_eq!(store.job(&id).unwrap().state, JobState::Running);
        assert_eq!(
            store
                .candidate_passed(&id, 2, 7, Select::FirstPass)
                .unwrap(),
            Selection::Won(2)
        );
        // A later pass does not change the winner.
        assert_eq!(
            store
                .candidate_passed(&id, 3, 1, Select::FirstPass)
                .unwrap(),
            Selection::Won(2)
        );
        let stop: Vec<(u32, bool)> = store
            .control_requests()
            .unwrap()
            .into_iter()
            .map(|r| (r.attempt, r.cancel))
            .collect();
        assert_eq!(stop, [(1, true), (2, false), (3, true)]);
        for n in [1, 3] {
            assert_eq!(
                store
                    .finish_attempt(&id, n, &Outcome::Cancelled, 1)
                    .unwrap(),
                FinishResult::CandidateEnded
            );
        }
        assert_eq!(store.job(&id).unwrap().state, JobState::Running);
        assert_eq!(
            store
                .finish_attempt(&id, 2, &Outcome::Succeeded, 1)
                .unwrap(),
            FinishResult::Finished(JobState::Succeeded)
        );
        let job = store.job(&id).unwrap();
        assert_eq!(
            job.detail.as_deref(),
            Some("candidate 2 of 3 won (7 changed lines)")
        );
        let candidates = store.candidates(&id).unwrap();
        let shown: Vec<_> = candidates
            .iter()
            .map(|(n, c)| {
                (
                    *n,
                    c.candidate,
                    c.of,
                    c.state,
                    c.selected,
                    c.diff_lines,
                    c.detail.clone(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    1,
                    1,
                    3,
                    JobState::Cancelled,
                    false,
                    None,
                    Some("stopped: candidate 2 won".into())
                ),
                (2, 2, 3, JobState::Succeeded, true, Some(7), None),
                (
                    3,
                    3,
                    3,
                    JobState::Cancelled,
                    false,
                    Some(1),
                    Some("stopped: candidate 2 won".into())
                ),
            ]
        );
        let events = store
            .events(&id)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.body, EventBody::Candidate(_)))
            .count();
        assert_eq!(events, 3, "one candidate event each");
    }

    #[test]
    fn smallest_diff_decides_only_when_no_running_candidate_may_still_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = running_round(&mut store, 3, 0);
        let mode = Select::SmallestDiff;
        assert_eq!(
            store.candidate_passed(&id, 1, 30, mode).unwrap(),
            Selection::Pending
        );
        assert_eq!(
            store.candidate_passed(&id, 3, 4, mode).unwrap(),
            Selection::Pending
        );
        let failed = Outcome::failed(Reason::VerifyFailed, Some(1), "verify failed");
        assert_eq!(
            store.finish_attempt(&id, 2, &failed, 1).unwrap(),
            FinishResult::CandidateEnded
        );
        assert_eq!(
            store.candidate_selection(&id, mode).unwrap(),
            Selection::Won(3)
        );
    }

    #[test]
    fn a_round_where_every_candidate_was_lost_runs_again_then_fails_with_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = running_round(&mut store, 2, 1);
        store.finish_attempt(&id, 1, &lost(), 2).unwrap();
        assert_eq!(
            store.finish_attempt(&id, 2, &lost(), 2).unwrap(),
            FinishResult::Requeued
        );
        let round = store
            .claim_round(&id, 2, |a| format!("c-{a}"))
            .unwrap()
            .unwrap();
        assert_eq!(round.iter().map(|a| a.n).collect::<Vec<_>>(), [3, 4]);
        // The second round is the last: a lost candidate and a failed one end the job.
        store.finish_attempt(&id, 3, &lost(), 2).unwrap();
        let failed = Outcome::failed(Reason::Stuck, None, "stuck on the same edit");
        assert_eq!(
            store.finish_attempt(&id, 4, &failed, 2).unwrap(),
            FinishResult::Finished(JobState::Failed)
        );
        let job = store.job(&id).unwrap();
        assert_eq!(job.reason, Some(Reason::Lost));
        assert_eq!(
            job.detail.as_deref(),
            Some("no candidate of 2 succeeded; candidate 1: gone")
        );
    }

    fn row(n: u32, active: bool, passed: Option<(u32, u64)>) -> CandidateRow {
        CandidateRow {
            n,
            active,
            passed,
            selected: false,
        }
    }

    #[test]
    fn first_pass_chooses_the_first_candidate_to_pass_at_once() {
        let round = [
            row(1, true, None),
            row(2, true, Some((2, 3))),
            row(3, true, Some((1, 40))),
        ];
        assert_eq!(select(Select::FirstPass, &round), Selection::Won(3));
        assert_eq!(
            select(
                Select::FirstPass,
                &[row(1, true, None), row(2, false, None)]
            ),
            Selection::Pending
        );
        assert_eq!(
            select(
                Select::FirstPass,
                &[row(1, false, None), row(2, false, None)]
            ),
            Selection::NonePassed
        );
    }

    #[test]
    fn smallest_diff_waits_for_every_running_candidate_then_takes_the_fewest_lines() {
        let mut round = vec![
            row(1, true, Some((1, 40))),
            row(2, true, None),
            row(3, true, Some((2, 12))),
        ];
        assert_eq!(select(Select::SmallestDiff, &round), Selection::Pending);
        round[1] = row(2, false, None);
        assert_eq!(select(Select::SmallestDiff, &round), Selection::Won(3));
        // Equal sizes: the first to pass.
        round[0].passed = Some((1, 12));
        assert_eq!(select(Select::SmallestDiff, &round), Selection::Won(1));
    }

    #[test]
    fn a_candidate_that_passed_then_ended_cannot_win() {
        let round = [row(1, false, Some((1, 2))), row(2, true, Some((2, 9)))];
        assert_eq!(select(Select::SmallestDiff, &round), Selection::Won(2));
        let round = [row(1, false, Some((1, 2))), row(2, false, None)];
        assert_eq!(select(Select::FirstPass, &round), Selection::NonePassed);
    }

    #[test]
    fn a_chosen_winner_stays_chosen() {
        let mut round = [row(1, true, Some((1, 50))), row(2, true, Some((2, 1)))];
        round[0].selected = true;
        assert_eq!(select(Select::SmallestDiff, &round), Selection::Won(1));
        assert_eq!(select(Select::FirstPass, &round), Selection::Won(1));
    }
}
