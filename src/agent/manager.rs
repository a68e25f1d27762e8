//! The manager: who decides each turn. `llm` asks the manager model through the gateway (metered
//! as role `manager`, counted against the job's budget); `script` replays the job's fixed steps;
//! `none` is handled by the driver (one message, then finish).

use super::protocol::{self, TurnContext};
use crate::job::{JobSpec, ManagerStep};
use crate::llm::gateway::ManagerCallError;
use crate::llm::Gateway;
use crate::state::JobId;
use serde_json::{json, Value};

/// Why the manager could not give a next step.
#[derive(Debug)]
pub enum ManagerError {
    /// The budget is spent (the gateway refused).
    Budget(String),
    /// Anything else: the job fails with reason `manager_error`.
    Failed(String),
}

pub enum Manager {
    Llm {
        gateway: Gateway,
        job: JobId,
        attempt: u32,
        spec: Box<JobSpec>,
    },
    Script {
        steps: Vec<ManagerStep>,
        next: usize,
    },
}

impl Manager {
    /// The next step for this turn.
    pub async fn decide(&mut self, ctx: &TurnContext) -> Result<ManagerStep, ManagerError> {
        match self {
            Manager::Script { steps, next } => {
                let step = steps.get(*next).cloned().ok_or_else(|| {
                    ManagerError::Failed(format!(
                        "the manager script ended after {} steps without `finish`",
                        steps.len()
                    ))
                })?;
                *next += 1;
                Ok(step)
            }
            Manager::Llm {
                gateway,
                job,
                attempt,
                spec,
            } => {
                let mut messages = protocol::messages(ctx);
                let first = ask(gateway, job, *attempt, spec, &messages).await?;
                match protocol::parse_answer(&first) {
                    Ok(step) => Ok(step),
                    Err(why) => {
                        // Returned once with the error; a second bad answer fails the job.
                        messages.push(json!({"role": "assistant", "content": first}));
                        messages.push(json!({"role": "user", "content": format!(
                            "Your answer was invalid: {why}. Answer again with exactly one JSON object with the keys progress, thought, action and argument."
                        )}));
                        let second = ask(gateway, job, *attempt, spec, &messages).await?;
                        protocol::parse_answer(&second).map_err(|again| {
                            ManagerError::Failed(format!(
                                "the manager answered invalidly twice: {why}; then: {again}"
                            ))
                        })
                    }
                }
            }
        }
    }
}

async fn ask(
    gateway: &Gateway,
    job: &JobId,
    attempt: u32,
    spec: &JobSpec,
    messages: &[Value],
) -> Result<String, ManagerError> {
    let request = json!({
        "model": spec.manager.model,
        "messages": messages,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    });
    let answer = gateway
        .manager_call(job, attempt, spec, request)
        .await
        .map_err(|e| match e {
            ManagerCallError::Budget(why) => ManagerError::Budget(why),
            other => ManagerError::Failed(format!("manager call failed: {other}")),
        })?;
    answer["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ManagerError::Failed("the manager's reply has no message content".into()))
}
