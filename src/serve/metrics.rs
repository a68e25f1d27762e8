//! `/metrics`: what the store holds, in Prometheus' text exposition format (version 0.0.4),
//! encoded by `prometheus-client`. Every figure is counted from the store on each scrape
//! ([`Store::stats`], aggregates in SQL), so any process that opens the state dir serves the
//! same numbers; the one exception is the gateway's token refusals, which are not stored and
//! are reported only by the process that runs the gateway. The metrics, their labels and their
//! meaning are listed in docs/metrics.md.
//!
//! LLM usage carries `role` and `model` labels. Model names come from the calls (anything a
//! sandbox sends), so their number is bounded: the first [`MODEL_LABELS_MAX`] models the store
//! metered keep their name, later ones are summed under `model="other"`; usage metered before
//! the store recorded models reads `model="unknown"`.

use super::api::ApiError;
use super::ServeState;
use crate::state::JobState;
use crate::state::Reason;
use crate::store::{Histogram, ModelUsage, Role, Stats, Store, StoreError, Usage};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the attempt-duration buckets: a quick command to a long agent run.
pub const ATTEMPT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
/// Upper bounds (seconds) of the turn-duration buckets: one manager decision and Aider's answer.
pub const TURN_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// How many models have their own `model` label in the LLM metrics (the first metered); the
/// usage of later models is summed under `model="other"`.
pub const MODEL_LABELS_MAX: usize = 50;

/// Errors rendering the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// The metrics of the store (and of this process's gateway, if it runs one), as Prometheus text.
pub fn render(store: &Store) -> Result<String, MetricsError> {
    let stats = store.stats(ATTEMPT_BUCKETS, TURN_BUCKETS)?;
    Ok(encode(&stats, crate::llm::gateway::auth_refusals())?)
}

/// `GET /metrics` (behind the router's token check like every route).
pub async fn handler(State(state): State<ServeState>) -> Result<Response, ApiError> {
    let stats = state
        .store
        .call(|s| s.stats(ATTEMPT_BUCKETS, TURN_BUCKETS))
        .await?;
    let text = encode(&stats, crate::llm::gateway::auth_refusals()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            MetricsError::from(e).to_string(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// `stats` (and the gateway's token refusals, when it runs in this process) as Prometheus text.
fn encode(stats: &Stats, auth_refusals: Option<u64>) -> Result<String, std::fmt::Error> {
    let registry = registry(stats, auth_refusals);
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The labels of one series.
type Labels = Vec<(&'static str, String)>;

/// A value of one series.
#[derive(Clone, Debug)]
enum Value {
    Count(u64),
    Amount(f64),
    Histogram(Histogram),
}

/// One metric: its type and its series, encoded in the order given (the store's figures are
/// taken whole on each scrape, so no live metric objects are needed).
#[derive(Debug)]
struct Series {
    kind: MetricType,
    rows: Vec<(Labels, Value)>,
}

impl Series {
    fn gauge(rows: Vec<(Labels, u64)>) -> Self {
        Self::of(MetricType::Gauge, rows, Value::Count)
    }

    fn counter(rows: Vec<(Labels, u64)>) -> Self {
        Self::of(MetricType::Counter, rows, Value::Count)
    }

    fn amount(rows: Vec<(Labels, f64)>) -> Self {
        Self::of(MetricType::Counter, rows, Value::Amount)
    }

    fn histogram(rows: Vec<(Labels, Histogram)>) -> Self {
        Self::of(MetricType::Histogram, rows, Value::Histogram)
    }

    fn of<T>(kind: MetricType, rows: Vec<(Labels, T)>, value: fn(T) -> Value) -> Self {
        Series {
            kind,
            rows: rows.into_iter().map(|(l, v)| (l, value(v))).collect(),
        }
    }
}

impl EncodeMetric for Series {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.rows {
            let mut series = encoder.encode_family(labels)?;
            match (self.kind, value) {
                (MetricType::Gauge, Value::Count(n)) => series.encode_gauge(n)?,
                (_, Value::Count(n)) => series.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                (_, Value::Amount(x)) => series.encode_counter::<NoLabelSet, _, u64>(x, None)?,
                (_, Value::Histogram(h)) => {
                    // The encoder adds the buckets up itself: hand it each bucket's own count.
                    let mut below = 0;
                    let own: Vec<(f64, u64)> = h
                        .buckets
                        .iter()
                        .map(|(bound, le)| {
                            let own = le - below;
                            below = *le;
                            (*bound, own)
                        })
                        .collect();
                    series.encode_histogram::<NoLabelSet>(h.sum, h.count, &own, None)?
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

fn roles() -> [Role; 2] {
    [Role::Agent, Role::Manager]
}

fn role_label(role: Role) -> Labels {
    vec![("role", role.as_str().to_string())]
}

/// The value for `role` in `rows`, or its zero: every role has a series from the start, so a
/// counter that first moves is seen moving from 0.
fn for_role<T: Copy + Default>(rows: &[(Role, T)], role: Role) -> T {
    rows.iter()
        .find(|(r, _)| *r == role)
        .map_or_else(T::default, |(_, v)| *v)
}

fn role_model(role: Role, model: &str) -> Labels {
    vec![
        ("role", role.as_str().to_string()),
        ("model", model.to_string()),
    ]
}

/// Usage by role and `model` label: the first [`MODEL_LABELS_MAX`] models in `usage` (the
/// store's order, first metered first) keep their name (`unknown` for ''), the rest are summed
/// as `other`. Every label has a series for each role, so a role's counter for a model is seen
/// moving from 0.
fn usage_by_model_label(usage: &[ModelUsage]) -> Vec<(Role, String, Usage)> {
    let mut labels: Vec<String> = Vec::new();
    let mut sums: std::collections::HashMap<(String, Role), Usage> = Default::default();
    for row in usage {
        let mut label = match row.model.as_str() {
            "" => "unknown".to_string(),
            model => model.to_string(),
        };
        if !labels.contains(&label) {
            if labels.len() < MODEL_LABELS_MAX {
                labels.push(label.clone());
            } else {
                label = "other".to_string();
                if !labels.contains(&label) {
                    labels.push(label.clone());
                }
            }
        }
        sums.entry((label, row.role)).or_default().add(&row.usage);
    }
    let mut out = Vec::new();
    for label in labels {
        for role in roles() {
            let u = sums
                .get(&(label.clone(), role))
                .copied()
                .unwrap_or_default();
            out.push((role, label.clone(), u));
        }
    }
    out
}

fn registry(stats: &Stats, auth_refusals: Option<u64>) -> Registry {
    let mut registry = Registry::default();
    let state_reason = |state: JobState, reason: Option<Reason>| -> Labels {
        vec![
            ("state", state.as_str().to_string()),
            ("reason", reason.map_or("", |r| r.as_str()).to_string()),
        ]
    };
    // Every state has a series; a state no job is in reads 0.
    let mut jobs: Vec<(Labels, u64)> = stats
        .jobs
        .iter()
        .map(|(s, r, n)| (state_reason(*s, *r), *n))
        .collect();
    for state in JobState::ALL {
        if !stats.jobs.iter().any(|(s, _, _)| *s == state) {
            jobs.push((state_reason(state, None), 0));
        }
    }
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    registry.register(
        "runner_jobs",
        "Jobs in the store by state and reason (reason empty when there is none)",
        Series::gauge(jobs),
    );
    let queued = stats
        .jobs
        .iter()
        .filter(|(s, _, _)| *s == JobState::Queued)
        .map(|(_, _, n)| n)
        .sum();
    registry.register(
        "runner_queue_length",
        "Jobs queued, waiting for a slot",
        Series::gauge(vec![(vec![], queued)]),
    );
    registry.register(
        "runner_running_jobs",
        "Jobs starting or running, by concurrency group",
        Series::gauge(
            stats
                .active_by_group
                .iter()
                .map(|(g, n)| (vec![("group", g.clone())], *n))
                .collect(),
        ),
    );
    registry.register(
        "runner_attempt_duration_seconds",
        "Wall-clock time of ended attempts, from claim to end, by the state they ended in",
        Series::histogram(
            stats
                .attempt_seconds
                .iter()
                .map(|(s, h)| (vec![("state", s.as_str().to_string())], h.clone()))
                .collect(),
        ),
    );
    registry.register(
        "runner_turn_duration_seconds",
        "Wall-clock time of agents' manager turns, from the previous turn's end (or the attempt's start of running) to the turn's end, time paused included",
        Series::histogram(vec![(vec![], stats.turn_seconds.clone())]),
    );
    let usage = usage_by_model_label(&stats.usage);
    let by_model = |f: fn(&Usage) -> u64| -> Vec<(Labels, u64)> {
        usage
            .iter()
            .map(|(role, model, u)| (role_model(*role, model), f(u)))
            .collect()
    };
    registry.register(
        "runner_llm_requests",
        "LLM calls metered by the gateway, by role and model (the model the call named; unknown: metered before models were; other: every model after the first 50)",
        Series::counter(by_model(|u| u.requests)),
    );
    registry.register(
        "runner_llm_unpriced_requests",
        "LLM calls to models missing from the price table (counted at cost 0), by role and model",
        Series::counter(by_model(|u| u.unpriced_requests)),
    );
    let mut tokens = Vec::new();
    for (role, model, u) in &usage {
        for (kind, n) in [
            ("prompt", u.prompt_tokens),
            ("completion", u.completion_tokens),
        ] {
            let mut labels = role_model(*role, model);
            labels.push(("kind", kind.to_string()));
            tokens.push((labels, n));
        }
    }
    registry.register(
        "runner_llm_tokens",
        "LLM tokens metered by the gateway, by role, model and kind (prompt or completion)",
        Series::counter(tokens),
    );
    registry.register(
        "runner_llm_cost_usd",
        "Cost of LLM calls in US dollars by the gateway's price table, by role and model",
        Series::amount(
            usage
                .iter()
                .map(|(role, model, u)| (role_model(*role, model), u.cost_usd))
                .collect(),
        ),
    );
    registry.register(
        "runner_gateway_budget_refusals",
        "Attempts whose LLM calls the gateway refused because the job's budget was spent (one per attempt, at its first refusal), by role of the refused call",
        Series::counter(
            roles()
                .into_iter()
                .map(|role| (role_label(role), for_role(&stats.budget_refusals, role)))
                .collect(),
        ),
    );
    if let Some(n) = auth_refusals {
        registry.register(
            "runner_gateway_auth_refusals",
            "LLM calls the gateway of this process refused for their token (unknown, revoked or another attempt's) since the process started",
            Series::counter(vec![(vec![], n)]),
        );
    }
    registry.register(
        "runner_container_starts",
        "Attempts started (each creates one container)",
        Series::counter(vec![(vec![], stats.attempts_started)]),
    );
    let failures = [Reason::Infra, Reason::Lost]
        .into_iter()
        .map(|reason| {
            let n = stats
                .attempts_ended
                .iter()
                .filter(|(_, r, _)| *r == Some(reason))
                .map(|(_, _, n)| n)
                .sum();
            (vec![("reason", reason.as_str().to_string())], n)
        })
        .collect();
    registry.register(
        "runner_container_failures",
        "Attempts ended by an infrastructure failure (infra) or with their container gone (lost)",
        Series::counter(failures),
    );
    registry
}

#[cfg(test)]
mod tests;
