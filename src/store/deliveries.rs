//! Deliveries: an attempt's result leaving the runner (a pushed branch, an opened pull request),
//! recorded step by step so that a scheduler restarted after a crash finishes it from the stored
//! bundle instead of redoing the job, and never delivers it twice.

use super::events::insert_event;
use super::{EventBody, ExportEvent, Result, Store};
use crate::state::{now_rfc3339, JobId};
use rusqlite::{params, OptionalExtension};

/// What a delivery does beyond exporting the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// Push a branch (`output.mode: branch`).
    Branch,
    /// Push a branch and open a pull request (`output.mode: pr`).
    Pr,
}

impl DeliveryKind {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Branch => "branch",
            DeliveryKind::Pr => "pr",
        }
    }
}

/// How far a delivery got. Each step is recorded once it is done, so a restart redoes at most
/// the step in flight, and each step recognises its own effect (a branch already at the commit,
/// a pull request already open for the branch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Exported, nothing sent yet.
    Pending,
    /// The branch holds the result's commit.
    Pushed { commit: String },
    /// Everything is delivered (`pr_url` for pull requests).
    Done { pr_url: Option<String> },
}

/// The result of one attempt, to be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub kind: DeliveryKind,
    pub branch: String,
    /// The attempt's `result.bundle`.
    pub bundle: String,
    /// SHA-256 (hex) of the bundle when it was exported.
    pub bundle_sha256: String,
    pub state: DeliveryState,
}

impl Store {
    /// Records attempt `n`'s exported files as artifacts, an `export` event for its patch and
    /// bundle, and for `branch`/`pr` output its pending delivery, in one transaction: a crash
    /// leaves all or nothing.
    pub fn add_result(
        &mut self,
        id: &JobId,
        n: u32,
        artifacts: &[(String, String)],
        delivery: Option<&DeliveryRecord>,
    ) -> Result<()> {
        self.write(|tx| {
            let now = now_rfc3339();
            for (kind, path) in artifacts {
                tx.execute(
                    "INSERT INTO artifacts (job_id, attempt, kind, path, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id.as_str(), n, kind, path, now],
                )?;
                let path = path.clone();
                let export = match kind.as_str() {
                    "patch" => Some(ExportEvent::Patch { path }),
                    "bundle" => Some(ExportEvent::Bundle { path }),
                    _ => None,
                };
                if let Some(export) = export {
                    insert_event(tx, id, n, &EventBody::Export(export))?;
                }
            }
            if let Some(d) = delivery {
                tx.execute(
                    "INSERT OR REPLACE INTO deliveries (job_id, attempt, kind, branch, bundle, bundle_sha256, state, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
                    params![id.as_str(), n, d.kind.as_str(), d.branch, d.bundle, d.bundle_sha256, now],
                )?;
            }
            Ok(())
        })
    }

    /// Attempt `n`'s delivery, if its result is to be pushed.
    pub fn delivery(&self, id: &JobId, n: u32) -> Result<Option<DeliveryRecord>> {
        let row = self
            .conn
            .query_row(
                "SELECT kind, branch, bundle, bundle_sha256, commit_sha, state, pr_url \
                 FROM deliveries WHERE job_id = ?1 AND attempt = ?2",
                params![id.as_str(), n],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((kind, branch, bundle, bundle_sha256, commit, state, pr_url)) = row else {
            return Ok(None);
        };
        let corrupt = |what: String| super::StoreError::Corrupt {
            id: id.to_string(),
            message: what,
        };
        let kind = match kind.as_str() {
            "branch" => DeliveryKind::Branch,
            "pr" => DeliveryKind::Pr,
            other => return Err(corrupt(format!("unknown delivery kind {other:?}"))),
        };
        let state = match (state.as_str(), commit) {
            ("pending", _) => DeliveryState::Pending,
            ("pushed", Some(commit)) => DeliveryState::Pushed { commit },
            ("done", _) => DeliveryState::Done { pr_url },
            (other, _) => return Err(corrupt(format!("bad delivery state {other:?}"))),
        };
        Ok(Some(DeliveryRecord {
            kind,
            branch,
            bundle,
            bundle_sha256,
            state,
        }))
    }

    /// The branch of attempt `n`'s delivery now holds `commit`.
    pub fn delivery_pushed(&mut self, id: &JobId, n: u32, commit: &str) -> Result<()> {
        self.write(|tx| {
            let branch: Option<String> = tx
                .query_row(
                    "UPDATE deliveries SET state = 'pushed', commit_sha = ?3, updated_at = ?4 \
                     WHERE job_id = ?1 AND attempt = ?2 AND state = 'pending' RETURNING branch",
                    params![id.as_str(), n, commit, now_rfc3339()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(branch) = branch {
                let commit = commit.to_string();
                insert_event(
                    tx,
                    id,
                    n,
                    &EventBody::Export(ExportEvent::Branch { branch, commit }),
                )?;
            }
            Ok(())
        })
    }

    /// Attempt `n`'s delivery is complete; the pull request, if any, is kept as an artifact and
    /// an `export` event (once).
    pub fn delivery_done(&mut self, id: &JobId, n: u32, pr_url: Option<&str>) -> Result<()> {
        self.write(|tx| {
            let now = now_rfc3339();
            let branch: Option<String> = tx
                .query_row(
                    "UPDATE deliveries SET state = 'done', pr_url = ?3, updated_at = ?4 \
                     WHERE job_id = ?1 AND attempt = ?2 AND state != 'done' RETURNING branch",
                    params![id.as_str(), n, pr_url, now],
                    |r| r.get(0),
                )
                .optional()?;
            if let (Some(branch), Some(url)) = (branch, pr_url) {
                tx.execute(
                    "INSERT INTO artifacts (job_id, attempt, kind, path, created_at) VALUES (?1, ?2, 'pull_request', ?3, ?4)",
                    params![id.as_str(), n, url, now],
                )?;
                let url = url.to_string();
                insert_event(tx, id, n, &EventBody::Export(ExportEvent::PullRequest { branch, url }))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_moves_from_pending_to_pushed_to_done_and_records_each_step_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "a");
        let pending = DeliveryRecord {
            kind: DeliveryKind::Pr,
            branch: "runner/x".into(),
            bundle: "/s/artifacts/j/1/result.bundle".into(),
            bundle_sha256: "ab".repeat(32),
            state: DeliveryState::Pending,
        };
        let files = [(
            "patch".to_string(),
            "/s/artifacts/j/1/result.patch".to_string(),
        )];
        store.add_result(&id, 1, &files, Some(&pending)).unwrap();
        assert_eq!(store.delivery(&id, 1).unwrap(), Some(pending.clone()));
        assert_eq!(store.delivery(&id, 2).unwrap(), None);
        store.delivery_pushed(&id, 1, "c0ffee").unwrap();
        let pushed = DeliveryState::Pushed {
            commit: "c0ffee".into(),
        };
        assert_eq!(store.delivery(&id, 1).unwrap().unwrap().state, pushed);
        for _ in 0..2 {
            store.delivery_done(&id, 1, Some("https://pr/1")).unwrap();
        }
        let done = DeliveryState::Done {
            pr_url: Some("https://pr/1".into()),
        };
        assert_eq!(store.delivery(&id, 1).unwrap().unwrap().state, done);
        let kinds: Vec<String> = store
            .artifacts(&id)
            .unwrap()
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, ["patch", "pull_request"]);
        store.delivery_pushed(&id, 1, "c0ffee").unwrap();
        let exports: Vec<ExportEvent> = store
            .events(&id)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::Export(export) => Some(export),
                _ => None,
            })
            .collect();
        assert_eq!(
            exports,
            [
                ExportEvent::Patch {
                    path: "/s/artifacts/j/1/result.patch".into()
                },
                ExportEvent::Branch {
                    branch: "runner/x".into(),
                    commit: "c0ffee".into()
                },
                ExportEvent::PullRequest {
                    branch: "runner/x".into(),
                    url: "https://pr/1".into()
                },
            ],
            "each step of the export is one event, however often it is recorded"
        );
    }
}
