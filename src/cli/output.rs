//! The JSON shape of jobs (stable: scripts and CI read it) and the human table.

use crate::state::JobState;
use crate::store::{JobRecord, ModelUsage, RoleUsage, Store, StoreError};
use serde_json::{json, Value};

/// Usage per role, as metered by the LLM gateway.
fn usage_json(usage: &RoleUsage) -> Value {
    let role = |u: &crate::store::Usage| {
        json!({
            "requests": u.requests,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cost_usd": (u.cost_usd * 1e12).round() / 1e12,
            "unpriced_requests": u.unpriced_requests,
            "estimated_requests": u.estimated_requests,
        })
    };
    json!({"manager": role(&usage.manager), "agent": role(&usage.agent)})
}

/// Usage per role and model over every attempt (model "" for usage metered before models
/// were), for the job-level `usage.by_model`.
fn by_model_json(rows: &[ModelUsage]) -> Value {
    rows.iter()
        .map(|m| {
            json!({
                "role": m.role,
                "model": m.model,
                "requests": m.usage.requests,
                "prompt_tokens": m.usage.prompt_tokens,
                "completion_tokens": m.usage.completion_tokens,
                "cost_usd": (m.usage.cost_usd * 1e12).round() / 1e12,
                "unpriced_requests": m.usage.unpriced_requests,
                "estimated_requests": m.usage.estimated_requests,
            })
        })
        .collect()
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
            let usage = store.attempt_usage(&job.id, a.n)?;
            let base_commit = store.base_commit(&job.id, a.n)?;
            Ok(json!({
                "n": a.n,
                "container": a.container,
                "state": a.state,
                "reason": a.reason,
                "exit_code": a.exit_code,
                "detail": a.detail,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "usage": usage_json(&usage),
                "base_commit": base_commit,
            }))
        })
        .collect::<Result<_, StoreError>>()?;
    let artifacts: Vec<Value> = store
        .artifacts(&job.id)?
        .iter()
        .map(|a| json!({"kind": a.kind, "path": a.path, "attempt": a.attempt}))
        .collect();
    let mut value = job_summary_json(job);
    let obj = value.as_object_mut().expect("summary is an object");
    obj.insert("source".into(), json!(job.source));
    obj.insert("attempts".into(), Value::Array(attempts));
    let mut usage = usage_json(&store.job_usage(&job.id)?);
    usage["by_model"] = by_model_json(&store.job_usage_by_model(&job.id)?);
    obj.insert("usage".into(), usage);
    obj.insert("artifacts".into(), Value::Array(artifacts));
    // Best-of-N: every candidate with its attempt number (empty for other jobs).
    let candidates: Vec<Value> = store
        .candidates(&job.id)?
        .into_iter()
        .map(|(n, c)| {
            let mut c = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Some(obj) = c.as_object_mut() {
                obj.insert("attempt".into(), json!(n));
            }
            c
        })
        .collect();
    obj.insert("candidates".into(), Value::Array(candidates));
    obj.insert(
        "messages".into(),
        serde_json::to_value(store.messages(&job.id)?).unwrap_or(Value::Null),
    );
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
