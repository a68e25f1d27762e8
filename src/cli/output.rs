//! The JSON shape of jobs (stable: scripts and CI read it) and the human table.

use crate::state::JobState;
use crate::store::{JobRecord, Store, StoreError};
use serde_json::{json, Value};

/// Usage per role; zero until an attempt makes LLM calls.
fn usage_json() -> Value {
    let zero = json!({"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0});
    json!({"manager": zero.clone(), "agent": zero})
}

/// The short form used by `ps --json` (no attempts, usage or artifacts).
pub fn job_summary_json(job: &JobRecord) -> Value {
    json!({
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "reason": job.reason,
        "exit_code": job.exit_code,
        "detail": job.detail,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    })
}

/// The full form used by `show --json` and `run --json`.
pub fn job_json(store: &Store, job: &JobRecord) -> Result<Value, StoreError> {
    let attempts: Vec<Value> = store
        .attempts(&job.id)?
        .iter()
        .map(|a| {
            json!({
                "n": a.n,
                "container": a.container,
                "state": a.state,
                "reason": a.reason,
                "exit_code": a.exit_code,
                "detail": a.detail,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "usage": usage_json(),
            })
        })
        .collect();
    let artifacts: Vec<Value> = store
        .artifacts(&job.id)?
        .iter()
        .map(|a| json!({"kind": a.kind, "path": a.path, "attempt": a.attempt}))
        .collect();
    let mut value = job_summary_json(job);
    let obj = value.as_object_mut().expect("summary is an object");
    obj.insert("source".into(), json!(job.source));
    obj.insert("attempts".into(), Value::Array(attempts));
    obj.insert("usage".into(), usage_json());
    obj.insert("artifacts".into(), Value::Array(artifacts));
    obj.insert(
        "spec".into(),
        serde_json::to_value(&job.spec).unwrap_or(Value::Null),
    );
    Ok(value)
}

/// One line per job for people.
pub fn table(jobs: &[JobRecord]) -> String {
    let mut out = format!(
        "{:<26}  {:<24}  {:<9}  {:<13}  {}\n",
        "ID", "NAME", "STATE", "REASON", "SUBMITTED"
    );
    for job in jobs {
        let reason = match (job.reason, job.exit_code) {
            (Some(r), Some(code)) => format!("{r} {code}"),
            (Some(r), None) => r.to_string(),
            _ => "-".into(),
        };
        let reason = if job.state == JobState::Failed
            || job.state == JobState::Queued && job.reason.is_some()
        {
            reason
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "{:<26}  {:<24}  {:<9}  {:<13}  {}\n",
            job.id, job.name, job.state, reason, job.submitted_at
        ));
    }
    out
}
