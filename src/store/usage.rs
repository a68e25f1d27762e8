//! Gateway and agent bookkeeping: per-attempt tokens (only their hashes), metered LLM usage, and
//! agent transcripts.

use super::{Result, Store};
use crate::state::{now_rfc3339, JobId};
use rusqlite::{params, OptionalExtension};

/// Who made an LLM call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Calls from inside the sandbox (Aider, or a command job's own client).
    Agent,
    /// The runner's own manager calls.
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Manager => "manager",
        }
    }

    /// The role a stored `role` column names.
    pub(crate) fn parse(role: &str) -> Option<Role> {
        match role {
            "agent" => Some(Role::Agent),
            "manager" => Some(Role::Manager),
            _ => None,
        }
    }
}

/// The longest model name the store keeps, in characters: model names come from the requests
/// of whatever runs in a sandbox, so a longer one is cut.
pub const MODEL_NAME_MAX: usize = 200;

/// `model` cut to [`MODEL_NAME_MAX`] characters.
fn bounded_model(model: &str) -> &str {
    match model.char_indices().nth(MODEL_NAME_MAX) {
        Some((end, _)) => &model[..end],
        None => model,
    }
}

/// One role's metered usage with one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelUsage {
    pub role: Role,
    /// The model the calls named (at most [`MODEL_NAME_MAX`] characters); empty for usage
    /// metered before the store recorded models.
    pub model: String,
    pub usage: Usage,
}

/// The [`Usage`] in the six columns from `first` on (requests, prompt and completion tokens,
/// cost, unpriced and estimated requests).
pub(crate) fn usage_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Usage> {
    Ok(Usage {
        requests: r.get::<_, i64>(first)? as u64,
        prompt_tokens: r.get::<_, i64>(first + 1)? as u64,
        completion_tokens: r.get::<_, i64>(first + 2)? as u64,
        cost_usd: r.get(first + 3)?,
        unpriced_requests: r.get::<_, i64>(first + 4)? as u64,
        estimated_requests: r.get::<_, i64>(first + 5)? as u64,
    })
}

/// One role's metered usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    /// Calls whose model has no price (counted as cost 0).
    pub unpriced_requests: u64,
    /// Calls whose tokens are estimated (about four characters a token): the upstream reported
    /// no usage, or the call was cut short before it did.
    pub estimated_requests: u64,
}

impl Usage {
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_usd += other.cost_usd;
        self.unpriced_requests += other.unpriced_requests;
        self.estimated_requests += other.estimated_requests;
    }
}

/// Usage of one attempt by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RoleUsage {
    pub manager: Usage,
    pub agent: Usage,
}

impl RoleUsage {
    pub fn total(&self) -> Usage {
        let mut t = self.manager;
        t.add(&self.agent);
        t
    }

    fn slot(&mut self, role: &str) -> Option<&mut Usage> {
        match role {
            "manager" => Some(&mut self.manager),
            "agent" => Some(&mut self.agent),
            _ => None,
        }
    }
}

impl Store {
    /// Records a token's hash for attempt `n`.
    pub fn add_token(&mut self, hash: &str, id: &JobId, n: u32) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO tokens (hash, job_id, attempt, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, id.as_str(), n, now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// The attempt a live (unrevoked) token belongs to.
    pub fn token_owner(&self, hash: &str) -> Result<Option<(JobId, u32)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT job_id, attempt FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
                [hash],
                |r| Ok((JobId(r.get(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    /// The hashes of attempt `n`'s live (unrevoked) tokens.
    pub fn live_tokens(&self, id: &JobId, n: u32) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT hash FROM tokens WHERE job_id = ?1 AND attempt = ?2 AND revoked_at IS NULL",
        )?;
        let hashes = stmt
            .query_map(params![id.as_str(), n], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(hashes)
    }

    /// Revokes every token of attempt `n`.
    pub fn revoke_tokens(&mut self, id: &JobId, n: u32) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tokens SET revoked_at = ?3 WHERE job_id = ?1 AND attempt = ?2 AND revoked_at IS NULL",
                params![id.as_str(), n, now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// Adds one call's usage to attempt `n`'s total for `role` and `model`. The model is the
    /// name the call gave (from the sandbox, so anything): kept as text, cut to
    /// [`MODEL_NAME_MAX`] characters.
    pub fn add_usage(
        &mut self,
        id: &JobId,
        n: u32,
        role: Role,
        model: &str,
        usage: &Usage,
    ) -> Result<()> {
        let model = bounded_model(model);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO usage (job_id, attempt, role, model, requests, prompt_tokens, completion_tokens, cost_usd, unpriced_requests, estimated_requests)
                 VALUES (?1, ?2, ?3, ?9, ?4, ?5, ?6, ?7, ?8, ?10)
                 ON CONFLICT (job_id, attempt, role, model) DO UPDATE SET
                   requests = requests + excluded.requests,
                   prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = completion_tokens + excluded.completion_tokens,
                   cost_usd = cost_usd + excluded.cost_usd,
                   unpriced_requests = unpriced_requests + excluded.unpriced_requests,
                   estimated_requests = estimated_requests + excluded.estimated_requests",
                params![
                    id.as_str(),
                    n,
                    role.as_str(),
                    usage.requests as i64,
                    usage.prompt_tokens as i64,
                    usage.completion_tokens as i64,
                    usage.cost_usd,
                    usage.unpriced_requests as i64,
                    model,
                    usage.estimated_requests as i64
                ],
            )?;
            Ok(())
        })
    }

    /// Usage of attempt `n` by role.
    pub fn attempt_usage(&self, id: &JobId, n: u32) -> Result<RoleUsage> {
        self.usage_where("job_id = ?1 AND attempt = ?2", params![id.as_str(), n])
    }

    /// Usage of every attempt of a job, by role (what budgets count).
    pub fn job_usage(&self, id: &JobId) -> Result<RoleUsage> {
        self.usage_where("job_id = ?1", params![id.as_str()])
    }

    /// Usage of every attempt of a job by role and model, ordered by role then model (model
    /// '' is usage metered before models were).
    pub fn job_usage_by_model(&self, id: &JobId) -> Result<Vec<ModelUsage>> {
        let mut stmt = self.conn.prepare(
            "SELECT role, model, sum(requests), sum(prompt_tokens), sum(completion_tokens), total(cost_usd), sum(unpriced_requests), sum(estimated_requests)
             FROM usage WHERE job_id = ?1 GROUP BY role, model ORDER BY role, model",
        )?;
        let rows = stmt
            .query_map([id.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    usage_at(r, 2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(role, model, usage)| {
                Some(ModelUsage {
                    role: Role::parse(&role)?,
                    model,
                    usage,
                })
            })
            .collect())
    }

    fn usage_where(&self, filter: &str, p: &[&dyn rusqlite::ToSql]) -> Result<RoleUsage> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT role, sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), sum(unpriced_requests), sum(estimated_requests)
             FROM usage WHERE {filter} GROUP BY role"
        ))?;
        let mut out = RoleUsage::default();
        let rows = stmt.query_map(p, |r| Ok((r.get::<_, String>(0)?, usage_at(r, 1)?)))?;
        for row in rows {
            let (role, usage) = row?;
            if let Some(slot) = out.slot(&role) {
                *slot = usage;
            }
        }
        Ok(out)
    }

    /// Records the commit attempt `n` starts from.
    pub fn set_base_commit(&mut self, id: &JobId, n: u32, commit: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE attempts SET base_commit = ?3 WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n, commit],
            )?;
            Ok(())
        })
    }

    /// The commit attempt `n` started from, if it had a repository.
    pub fn base_commit(&self, id: &JobId, n: u32) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT base_commit FROM attempts WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Forgets a job's transcript (gc of expired jobs).
    pub fn forget_transcript(&mut self, id: &JobId) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM transcript WHERE job_id = ?1", [id.as_str()])?;
            Ok(())
        })
    }

    /// Appends transcript entries (at, direction, text) of attempt `n`.
    ///
    /// `offset` is how many bytes of Aider's output the stored transcript holds with these rows
    /// (a restarted scheduler adopting the attempt continues from there).
    pub fn add_transcript(
        &mut self,
        id: &JobId,
        n: u32,
        rows: &[(String, String, String)],
        offset: u64,
    ) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare(
                "INSERT INTO transcript (job_id, attempt, at, direction, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (at, direction, text) in rows {
                stmt.execute(params![id.as_str(), n, at, direction, text])?;
            }
            tx.execute(
                "UPDATE attempts SET transcript_offset = MAX(transcript_offset, ?3) WHERE job_id = ?1 AND n = ?2",
                params![id.as_str(), n, offset as i64],
            )?;
            Ok(())
        })
    }

    /// Transcript entries (at, direction, text) of attempt `n`, in order.
    pub fn transcript(&self, id: &JobId, n: u32) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, direction, text FROM transcript WHERE job_id = ?1 AND attempt = ?2 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![id.as_str(), n], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// A value kept in the meta table (for example the gateway's port).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_accumulates_per_attempt_and_role_and_sums_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "a");
        let call = Usage {
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_usd: 0.5,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        store.add_usage(&id, 1, Role::Agent, "m1", &call).unwrap();
        store.add_usage(&id, 1, Role::Agent, "m2", &call).unwrap();
        store.add_usage(&id, 1, Role::Manager, "m1", &call).unwrap();
        store.add_usage(&id, 2, Role::Agent, "m1", &call).unwrap();
        let first = store.attempt_usage(&id, 1).unwrap();
        assert_eq!(first.agent.requests, 2, "summed over models");
        assert_eq!(first.agent.tokens(), 30);
        assert_eq!(first.manager.requests, 1);
        let all = store.job_usage(&id).unwrap();
        assert_eq!(all.total().requests, 4);
        assert!((all.total().cost_usd - 2.0).abs() < 1e-9);
        let tally = store.job_tally(&id).unwrap();
        assert_eq!((tally.tokens, tally.cost_usd), (60, 2.0));
    }

    #[test]
    fn usage_by_model_sums_attempts_per_role_and_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "a");
        let call = |cost_usd| Usage {
            requests: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_usd,
            unpriced_requests: 0,
            estimated_requests: 0,
        };
        store
            .add_usage(&id, 1, Role::Agent, "gpt-4o", &call(0.5))
            .unwrap();
        store
            .add_usage(&id, 2, Role::Agent, "gpt-4o", &call(0.5))
            .unwrap();
        store
            .add_usage(&id, 1, Role::Agent, "claude", &call(0.25))
            .unwrap();
        store
            .add_usage(&id, 1, Role::Manager, "gpt-4o", &call(0.0))
            .unwrap();
        let rows: Vec<(Role, String, u64, f64)> = store
            .job_usage_by_model(&id)
            .unwrap()
            .into_iter()
            .map(|m| (m.role, m.model, m.usage.requests, m.usage.cost_usd))
            .collect();
        assert_eq!(
            rows,
            [
                (Role::Agent, "claude".into(), 1, 0.25),
                (Role::Agent, "gpt-4o".into(), 2, 1.0),
                (Role::Manager, "gpt-4o".into(), 1, 0.0),
            ]
        );
    }

    #[test]
    fn a_long_model_name_is_kept_cut_to_its_first_200_characters() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "a");
        let long = "é".repeat(MODEL_NAME_MAX + 50);
        let call = Usage {
            requests: 1,
            ..Usage::default()
        };
        store.add_usage(&id, 1, Role::Agent, &long, &call).unwrap();
        store
            .add_usage(
                &id,
                1,
                Role::Agent,
                &long[..2 * (MODEL_NAME_MAX + 1)],
                &call,
            )
            .unwrap();
        let rows = store.job_usage_by_model(&id).unwrap();
        assert_eq!(
            rows.len(),
            1,
            "both names cut to the same 200 characters: {rows:?}"
        );
        assert_eq!(rows[0].model, "é".repeat(MODEL_NAME_MAX));
        assert_eq!(rows[0].usage.requests, 2);
    }

    #[test]
    fn a_version_9_database_with_usage_upgrades_and_keeps_its_totals_under_an_unknown_model() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema and rows a runner before migration 10 left.
            let conn = rusqlite::Connection::open(dir.path().join(crate::store::DB_FILE)).unwrap();
            for sql in &crate::store::schema::MIGRATIONS[..9] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 9).unwrap();
            conn.execute_batch(
                "INSERT INTO jobs (id, name, spec, grp, state, submitted_at)
                   VALUES ('OLD1', 'old', '{}', 'default', 'succeeded', '2026-01-01T00:00:00.000Z');
                 INSERT INTO usage (job_id, attempt, role, requests, prompt_tokens, completion_tokens, cost_usd, unpriced_requests)
                   VALUES ('OLD1', 1, 'agent', 3, 300, 30, 0.75, 1),
                          ('OLD1', 1, 'manager', 2, 200, 20, 0.5, 0),
                          ('OLD1', 2, 'agent', 1, 100, 10, 0.25, 0);",
            )
            .unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::store::schema::MIGRATIONS.len() as i64);
        let id = JobId("OLD1".into());
        let all = store.job_usage(&id).unwrap();
        assert_eq!((all.agent.requests, all.agent.tokens()), (4, 440));
        assert_eq!(
            (all.manager.requests, all.manager.unpriced_requests),
            (2, 0)
        );
        assert!((all.total().cost_usd - 1.5).abs() < 1e-9);
        assert_eq!(store.attempt_usage(&id, 2).unwrap().agent.requests, 1);
        let models: Vec<_> = store.job_usage_by_model(&id).unwrap();
        assert!(models.iter().all(|m| m.model.is_empty()), "{models:?}");
        // New calls add a model beside the unknown one.
        let call = Usage {
            requests: 1,
            ..Usage::default()
        };
        store
            .add_usage(&id, 2, Role::Agent, "gpt-4o", &call)
            .unwrap();
        store.add_usage(&id, 2, Role::Agent, "", &call).unwrap();
        let agent: Vec<(String, u64)> = store
            .job_usage_by_model(&id)
            .unwrap()
            .into_iter()
            .filter(|m| m.role == Role::Agent)
            .map(|m| (m.model, m.usage.requests))
            .collect();
        assert_eq!(agent, [("".into(), 5), ("gpt-4o".into(), 1)]);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn revoked_tokens_have_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "a");
        store.add_token("h1", &id, 1).unwrap();
        assert_eq!(store.token_owner("h1").unwrap(), Some((id.clone(), 1)));
        store.revoke_tokens(&id, 1).unwrap();
        assert_eq!(store.token_owner("h1").unwrap(), None);
    }
}
