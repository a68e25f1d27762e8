//! `/metrics` over a real SQLite store, read back with a Prometheus text-format parser.

use super::*;
use crate::state::{JobId, Outcome};
use crate::store::tests_support::{add_finished_jobs, backdate_attempt, spec, submit_one};
use crate::store::{BudgetEvent, EventBody, NewJob, TurnEvent};
use prometheus_parse::{Scrape, Value as Parsed};

fn scrape(store: &Store) -> Scrape {
    let text = render(store).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the series `name` with exactly `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Parsed {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name}{labels:?} in {:#?}",
        scrape.samples
    );
    found[0].value.clone()
}

fn number(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(scrape, name, labels) {
        Parsed::Counter(x) | Parsed::Gauge(x) | Parsed::Untyped(x) => x,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// `(le, cumulative count)` of a histogram series.
fn buckets(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    match value(scrape, name, labels) {
        Parsed::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn claimed(store: &mut Store, name: &str) -> JobId {
    let id = submit_one(store, name);
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    id
}

fn ended(store: &mut Store, name: &str, outcome: Outcome) -> JobId {
    let id = claimed(store, name);
    store.finish_attempt(&id, 1, &outcome, 1).unwrap();
    id
}

fn usage(requests: u64, prompt: u64, completion: u64, cost: f64, unpriced: u64) -> Usage {
    Usage {
        requests,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost_usd: cost,
        unpriced_requests: unpriced,
        estimated_requests: 0,
    }
}

#[test]
fn metrics_count_the_jobs_attempts_usage_and_refusals_a_real_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    submit_one(&mut store, "waiting-1");
    submit_one(&mut store, "waiting-2");
    let mut building = spec("building");
    building.group = "builders".into();
    let running = store
        .submit(&[NewJob {
            spec: building,
            source: None,
        }])
        .unwrap()
        .remove(0);
    store
        .claim(&running, |n| format!("c-{n}"))
        .unwrap()
        .unwrap();
    store.mark_running(&running, 1).unwrap();
    store
        .add_turn_event(&running, 1, &TurnEvent::default())
        .unwrap();
    let done = ended(&mut store, "done", Outcome::Succeeded);
    backdate_attempt(
        &mut store,
        &done,
        1,
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:01:30.000Z",
    );
    let exited = ended(
        &mut store,
        "exited",
        Outcome::failed(Reason::ExitCode, Some(3), "exited with code 3"),
    );
    ended(
        &mut store,
        "broken",
        Outcome::failed(Reason::Infra, None, "engine error"),
    );
    ended(
        &mut store,
        "gone",
        Outcome::failed(Reason::Lost, None, "container gone"),
    );
    store
        .add_usage(&done, 1, Role::Agent, "gpt-4o", &usage(2, 100, 20, 0.5, 0))
        .unwrap();
    store
        .add_usage(
            &running,
            1,
            Role::Manager,
            "local-llama",
            &usage(1, 50, 5, 0.25, 1),
        )
        .unwrap();
    store
        .add_event(
            &exited,
            1,
            &EventBody::Budget(BudgetEvent {
                role: Role::Agent,
                used_tokens: 120,
                used_usd: 0.5,
                limit_tokens: Some(100),
                limit_usd: None,
            }),
        )
        .unwrap();

    let m = scrape(&store);
    let jobs = |state, reason| number(&m, "runner_jobs", &[("state", state), ("reason", reason)]);
    assert_eq!(jobs("queued", ""), 2.0);
    assert_eq!(jobs("running", ""), 1.0);
    assert_eq!(jobs("succeeded", ""), 1.0);
    assert_eq!(jobs("failed", "exit_code"), 1.0);
    assert_eq!(jobs("failed", "infra"), 1.0);
    assert_eq!(jobs("failed", "lost"), 1.0);
    assert_eq!(jobs("cancelled", ""), 0.0, "a state no job is in reads 0");
    assert_eq!(number(&m, "runner_queue_length", &[]), 2.0);
    assert_eq!(
        number(&m, "runner_running_jobs", &[("group", "builders")]),
        1.0
    );
    assert_eq!(number(&m, "runner_container_starts_total", &[]), 5.0);
    let failures = |reason| number(&m, "runner_container_failures_total", &[("reason", reason)]);
    assert_eq!((failures("infra"), failures("lost")), (1.0, 1.0));
    let llm = |name, role, model| number(&m, name, &[("role", role), ("model", model)]);
    assert_eq!(llm("runner_llm_requests_total", "agent", "gpt-4o"), 2.0);
    assert_eq!(
        llm("runner_llm_requests_total", "manager", "gpt-4o"),
        0.0,
        "every model seen has a series for each role"
    );
    assert_eq!(
        llm("runner_llm_requests_total", "manager", "local-llama"),
        1.0
    );
    assert_eq!(
        llm(
            "runner_llm_unpriced_requests_total",
            "manager",
            "local-llama"
        ),
        1.0
    );
    assert_eq!(llm("runner_llm_cost_usd_total", "agent", "gpt-4o"), 0.5);
    assert_eq!(
        llm("runner_llm_cost_usd_total", "manager", "local-llama"),
        0.25
    );
    let tokens = |role, model, kind| {
        number(
            &m,
            "runner_llm_tokens_total",
            &[("role", role), ("model", model), ("kind", kind)],
        )
    };
    assert_eq!(tokens("agent", "gpt-4o", "prompt"), 100.0);
    assert_eq!(tokens("agent", "gpt-4o", "completion"), 20.0);
    assert_eq!(tokens("manager", "local-llama", "prompt"), 50.0);
    assert_eq!(tokens("manager", "local-llama", "completion"), 5.0);
    let role = |name, role| number(&m, name, &[("role", role)]);
    assert_eq!(role("runner_gateway_budget_refusals_total", "agent"), 1.0);
    assert_eq!(role("runner_gateway_budget_refusals_total", "manager"), 0.0);

    // The 90 s attempt is above the 60 s bound and within 120 s; every bucket is cumulative.
    let attempt = buckets(
        &m,
        "runner_attempt_duration_seconds",
        &[("state", "succeeded")],
    );
    let le = |b: &[(f64, f64)], bound: f64| b.iter().find(|(l, _)| *l == bound).unwrap().1;
    assert_eq!((le(&attempt, 60.0), le(&attempt, 120.0)), (0.0, 1.0));
    assert!(
        attempt
            .iter()
            .all(|(l, n)| *n == if *l < 90.0 { 0.0 } else { 1.0 }),
        "{attempt:?}"
    );
    assert_eq!(le(&attempt, f64::INFINITY), 1.0);
    assert_eq!(
        number(
            &m,
            "runner_attempt_duration_seconds_sum",
            &[("state", "succeeded")]
        ),
        90.0
    );
    assert_eq!(
        number(
            &m,
            "runner_attempt_duration_seconds_count",
            &[("state", "failed")]
        ),
        3.0
    );
    assert_eq!(
        number(&m, "runner_turn_duration_seconds_count", &[]),
        1.0,
        "the running job's one turn"
    );
    assert_eq!(
        m.docs.get("runner_queue_length").map(String::as_str),
        Some("Jobs queued, waiting for a slot.")
    );
}

#[test]
fn metrics_of_an_empty_store_have_every_counter_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = scrape(&store);
    assert_eq!(number(&m, "runner_container_starts_total", &[]), 0.0);
    assert_eq!(number(&m, "runner_queue_length", &[]), 0.0);
    for role in ["agent", "manager"] {
        assert_eq!(
            number(
                &m,
                "runner_gateway_budget_refusals_total",
                &[("role", role)]
            ),
            0.0
        );
    }
    assert!(
        !m.samples
            .iter()
            .any(|s| s.metric.starts_with("runner_llm_")),
        "no model metered, so no LLM series yet: {:#?}",
        m.samples
    );
    let turns = buckets(&m, "runner_turn_duration_seconds", &[]);
    assert_eq!(turns.len(), TURN_BUCKETS.len() + 1, "{turns:?}");
    assert!(turns.iter().all(|(_, n)| *n == 0.0), "{turns:?}");
}

#[test]
fn metrics_of_ten_thousand_jobs_render_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    add_finished_jobs(&mut store, 10_000);
    let started = std::time::Instant::now();
    let m = scrape(&store);
    let took = started.elapsed();
    // A sanity bound, not a benchmark: far above what it takes (well under a second in a
    // debug build, whose SQLite is unoptimized, on a busy machine).
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        number(&m, "runner_jobs", &[("state", "succeeded"), ("reason", "")]),
        10_000.0
    );
    assert_eq!(
        number(&m, "runner_turn_duration_seconds_count", &[]),
        20_000.0
    );
    assert_eq!(
        number(
            &m,
            "runner_llm_requests_total",
            &[("role", "agent"), ("model", "gpt-4o-mini")]
        ),
        20_000.0
    );
    eprintln!("rendered the metrics of 10,000 jobs in {took:?}");
}

#[test]
fn a_call_moves_the_counters_of_its_role_and_model_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = claimed(&mut store, "agent");
    store
        .add_usage(&id, 1, Role::Agent, "gpt-4o", &usage(1, 10, 2, 0.1, 0))
        .unwrap();
    store
        .add_usage(&id, 1, Role::Manager, "claude", &usage(1, 10, 2, 0.1, 0))
        .unwrap();
    let requests = |m: &Scrape, role, model| {
        number(
            m,
            "runner_llm_requests_total",
            &[("role", role), ("model", model)],
        )
    };
    let before = scrape(&store);
    store
        .add_usage(&id, 1, Role::Agent, "claude", &usage(1, 30, 4, 0.2, 0))
        .unwrap();
    let after = scrape(&store);
    assert_eq!(requests(&before, "agent", "claude"), 0.0);
    assert_eq!(requests(&after, "agent", "claude"), 1.0);
    for (role, model) in [("agent", "gpt-4o"), ("manager", "claude")] {
        assert_eq!(
            requests(&before, role, model),
            requests(&after, role, model)
        );
    }
    let prompt = |m: &Scrape| {
        number(
            m,
            "runner_llm_tokens_total",
            &[("role", "agent"), ("model", "claude"), ("kind", "prompt")],
        )
    };
    assert_eq!((prompt(&before), prompt(&after)), (0.0, 30.0));
}

#[test]
fn usage_before_models_were_metered_reads_unknown_and_models_past_the_fiftieth_read_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = claimed(&mut store, "agent");
    store
        .add_usage(&id, 1, Role::Agent, "", &usage(1, 1, 1, 0.0, 0))
        .unwrap();
    for i in 1..=60 {
        store
            .add_usage(
                &id,
                1,
                Role::Agent,
                &format!("model-{i:02}"),
                &usage(i, 1, 1, 0.0, 0),
            )
            .unwrap();
    }
    let m = scrape(&store);
    let requests = |model| {
        number(
            &m,
            "runner_llm_requests_total",
            &[("role", "agent"), ("model", model)],
        )
    };
    assert_eq!(requests("unknown"), 1.0);
    assert_eq!(requests("model-49"), 49.0, "the 50th model metered");
    // model-50 to model-60 are past the first 50 (unknown is one of them).
    assert_eq!(requests("other"), (50..=60).sum::<u64>() as f64);
    let models: std::collections::HashSet<_> = m
        .samples
        .iter()
        .filter(|s| s.metric == "runner_llm_requests_total")
        .map(|s| s.labels.get("model").unwrap().to_string())
        .collect();
    assert_eq!(models.len(), MODEL_LABELS_MAX + 1, "{models:?}");
    assert!(!models.contains("model-50"));
}
