//! Scheduler logic against the fake sandbox: limits, outcomes, timeouts, cancel, reconcile.

use super::fake::FakeSandbox;
use super::*;
use crate::job::{ByteSize, JobKind, JobSpec};
use crate::sandbox::{ContainerPlan, Labels};
use crate::state::{JobState, Outcome, Reason};
use crate::store::{NewJob, SharedStore, Store};
use std::sync::Arc;

struct Harness {
    _dir: tempfile::TempDir,
    store: SharedStore,
    sandbox: FakeSandbox,
    config: SchedulerConfig,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new(Store::open(dir.path()).unwrap());
    let mut config = SchedulerConfig::new(dir.path());
    config.tick = Duration::from_millis(20);
    config.attempt.stop_grace = Duration::from_millis(300);
    Harness {
        _dir: dir,
        store,
        sandbox: FakeSandbox::default(),
        config,
    }
}

fn job(name: &str, command: &[&str]) -> JobSpec {
    let mut spec = crate::store::tests_support::spec(name);
    spec.kind = JobKind::Command {
        command: command.iter().map(|s| s.to_string()).collect(),
    };
    spec
}

impl Harness {
    async fn submit(&self, specs: Vec<JobSpec>) -> Vec<JobId> {
        let jobs: Vec<NewJob> = specs
            .into_iter()
            .map(|spec| NewJob { spec, source: None })
            .collect();
        self.store.call(move |s| s.submit(&jobs)).await.unwrap()
    }

    async fn run(&self, ids: &[JobId]) {
        let run = super::run(
            self.store.clone(),
            Arc::new(self.sandbox.clone()),
            self.config.clone(),
            Scope::Only(ids.to_vec()),
            Shutdown::default(),
        );
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("scheduler finished in time")
            .unwrap();
    }

    /// Claims a job and marks it running, as a scheduler that then died would have.
    async fn claim_running(&self, id: &JobId) {
        let (id, state) = (id.clone(), self.store.state_id());
        self.store
            .call(move |s| {
                let a = s
                    .claim(&id, |n| {
                        Labels {
                            state: state.clone(),
                            job: id.to_string(),
                            attempt: n,
                        }
                        .container_name()
                    })?
                    .unwrap();
                s.mark_running(&id, a.n)?;
                Ok(())
            })
            .await
            .unwrap();
    }

    async fn record(&self, id: &JobId) -> crate::store::JobRecord {
        let id = id.clone();
        self.store.call(move |s| s.job(&id)).await.unwrap()
    }
}

#[tokio::test]
async fn parallel_is_a_hard_ceiling_and_every_job_finishes() {
    let mut h = harness();
    h.config.parallel = 2;
    let ids = h
        .submit(
            (0..6)
                .map(|i| job(&format!("j{i}"), &["sleep", "60"]))
                .collect(),
        )
        .await;
    h.run(&ids).await;
    assert_eq!(h.sandbox.max_running(), 2);
    for id in &ids {
        assert_eq!(h.record(id).await.state, JobState::Succeeded);
    }
    assert_eq!(h.sandbox.container_count(), 0, "containers are removed");
}

/// A crash between the two must never leave a job whose container is gone while the database
/// still says it runs (the next scheduler could only call it `lost`).
#[tokio::test]
async fn the_outcome_is_recorded_before_the_container_is_removed() {
    let h = harness();
    let ids = h.submit(vec![job("quick", &["exit", "0"])]).await;
    let observer = std::sync::Mutex::new(Store::open(h._dir.path()).unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (id, record) = (ids[0].clone(), seen.clone());
    h.sandbox.on_remove(move |_| {
        let state = observer.lock().unwrap().job(&id).unwrap().state;
        record.lock().unwrap().push(state);
    });
    h.run(&ids).await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the container was removed");
    assert!(
        seen.iter().all(|state| *state == JobState::Succeeded),
        "state at each removal: {seen:?}"
    );
}

#[tokio::test]
async fn group_limit_serialises_a_group() {
    let mut h = harness();
    h.config.parallel = 8;
    h.config.group_limits.insert("db".into(), 1);
    let specs = (0..3)
        .map(|i| {
            let mut s = job(&format!("j{i}"), &["sleep", "50"]);
            s.group = "db".into();
            s
        })
        .collect();
    let ids = h.submit(specs).await;
    h.run(&ids).await;
    assert_eq!(h.sandbox.max_running(), 1);
}

#[tokio::test]
async fn memory_budget_limits_how_many_run_together() {
    let mut h = harness();
    h.config.parallel = 8;
    h.config.host_memory = Some(2 << 30);
    let specs = (0..4)
        .map(|i| {
            let mut s = job(&format!("j{i}"), &["sleep", "50"]);
            s.resources.memory = ByteSize(1 << 30);
            s
        })
        .collect();
    let ids = h.submit(specs).await;
    h.run(&ids).await;
    assert_eq!(h.sandbox.max_running(), 2);
}

#[tokio::test]
async fn exit_codes_and_oom_map_to_states_and_reasons() {
    let h = harness();
    let ids = h
        .submit(vec![
            job("ok", &["exit", "0"]),
            job("three", &["exit", "3"]),
            job("oom", &["oom"]),
        ])
        .await;
    h.run(&ids).await;
    let ok = h.record(&ids[0]).await;
    assert_eq!(
        (ok.state, ok.reason, ok.exit_code),
        (JobState::Succeeded, None, None)
    );
    let three = h.record(&ids[1]).await;
    assert_eq!(
        (three.state, three.reason, three.exit_code),
        (JobState::Failed, Some(Reason::ExitCode), Some(3))
    );
    let oom = h.record(&ids[2]).await;
    assert_eq!(
        (oom.state, oom.reason),
        (JobState::Failed, Some(Reason::Oom))
    );
}

#[tokio::test]
async fn a_job_ignoring_sigterm_is_killed_after_grace_with_reason_timeout() {
    let h = harness();
    let mut spec = job("stubborn", &["ignore-term"]);
    spec.timeout = Duration::from_millis(200);
    let ids = h.submit(vec![spec]).await;
    let started = std::time::Instant::now();
    h.run(&ids).await;
    let elapsed = started.elapsed();
    let rec = h.record(&ids[0]).await;
    assert_eq!(
        (rec.state, rec.reason),
        (JobState::Failed, Some(Reason::Timeout))
    );
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
}

#[tokio::test]
async fn cancel_stops_a_running_job() {
    let h = harness();
    let ids = h.submit(vec![job("forever", &["hang"])]).await;
    let store = h.store.clone();
    let id = ids[0].clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let id2 = id.clone();
            if store.call(move |s| s.job(&id2)).await.unwrap().state == JobState::Running {
                let id2 = id.clone();
                store.call(move |s| s.cancel(&id2)).await.unwrap();
                break;
            }
        }
    });
    h.run(&ids).await;
    assert_eq!(h.record(&ids[0]).await.state, JobState::Cancelled);
}

#[tokio::test]
async fn a_job_larger_than_the_host_budget_fails_without_starting() {
    let mut h = harness();
    h.config.host_cpus = Some(1.0);
    let mut spec = job("big", &["exit", "0"]);
    spec.resources.cpus = 4.0;
    let ids = h.submit(vec![spec]).await;
    h.run(&ids).await;
    let rec = h.record(&ids[0]).await;
    assert_eq!(
        (rec.state, rec.reason),
        (JobState::Failed, Some(Reason::Infra))
    );
    assert!(rec.detail.unwrap().contains("--host-cpus"));
    assert_eq!(h.sandbox.launches(), 0);
}

#[tokio::test]
async fn restart_adopts_running_containers_marks_vanished_lost_and_removes_orphans() {
    let h = harness();
    let ids = h
        .submit(vec![
            job("adopt", &["sleep", "50"]),
            job("vanished", &["hang"]),
        ])
        .await;
    let state = h.store.state_id();
    // Simulate a scheduler that claimed both and died: only the first container survives.
    for id in &ids {
        h.claim_running(id).await;
    }
    let adopt_job = h.record(&ids[0]).await;
    let labels = Labels {
        state: state.clone(),
        job: ids[0].to_string(),
        attempt: 1,
    };
    let plan = ContainerPlan::for_command(
        &adopt_job.spec,
        &["sleep".into(), "50".into()],
        labels,
        vec![],
        1,
    );
    h.sandbox.preexisting(&plan);
    let orphan = Labels {
        state,
        job: "01ORPHAN".into(),
        attempt: 1,
    };
    let orphan_plan =
        ContainerPlan::for_command(&adopt_job.spec, &["hang".into()], orphan, vec![], 1);
    h.sandbox.preexisting(&orphan_plan);

    h.run(&ids).await;
    assert_eq!(h.record(&ids[0]).await.state, JobState::Succeeded);
    let lost = h.record(&ids[1]).await;
    assert_eq!(
        (lost.state, lost.reason),
        (JobState::Failed, Some(Reason::Lost))
    );
    assert_eq!(h.sandbox.container_count(), 0);
}

#[tokio::test]
async fn lost_job_with_retries_runs_again() {
    let h = harness();
    let mut spec = job("retry", &["exit", "0"]);
    spec.retries = 1;
    let ids = h.submit(vec![spec]).await;
    h.claim_running(&ids[0]).await;
    h.run(&ids).await;
    let rec = h.record(&ids[0]).await;
    assert_eq!((rec.state, rec.attempts), (JobState::Succeeded, 2));
    let outcome = rec.outcome().unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
}

/// A bug that panics inside one attempt must not keep its slot: with `parallel: 1` the next job
/// runs only if the slot is freed, and `runner run` ends only if the panicked job is terminal.
#[tokio::test]
async fn an_attempt_that_panics_frees_its_slot_ends_infra_and_the_run_ends() {
    let mut h = harness();
    h.config.parallel = 1;
    let ids = h
        .submit(vec![job("boom", &["panic"]), job("next", &["exit", "0"])])
        .await;
    let run = super::run(
        h.store.clone(),
        Arc::new(h.sandbox.clone()),
        h.config.clone(),
        Scope::Only(ids.clone()),
        Shutdown::default(),
    );
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends although an attempt panicked")
        .unwrap();
    let boom = h.record(&ids[0]).await;
    assert_eq!(
        (boom.state, boom.reason),
        (JobState::Failed, Some(Reason::Infra))
    );
    assert!(
        boom.detail.as_deref().unwrap_or("").contains("panicked"),
        "the detail says why: {:?}",
        boom.detail
    );
    assert_eq!(h.record(&ids[1]).await.state, JobState::Succeeded);
    assert_eq!(h.sandbox.container_count(), 0, "containers are removed");
}
