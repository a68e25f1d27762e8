use super::*;
use crate::job::{
    AgentSettings, Budget, EnvVars, JobKind, JobSpec, LlmSettings, ManagerSettings, NetworkMode,
    OutputSettings, Resources,
};

pub(crate) fn spec(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind: JobKind::Command {
            command: vec!["true".into()],
        },
        image: "runner/base:bookworm".into(),
        repo: None,
        git_ref: None,
        env: EnvVars::default(),
        secrets: vec![],
        resources: Resources::default(),
        timeout: Duration::from_secs(60),
        network: NetworkMode::None,
        runtime: None,
        group: "default".into(),
        retries: 0,
        candidates: 1,
        select: crate::job::Select::FirstPass,
        agent: AgentSettings::default(),
        manager: ManagerSettings::default(),
        llm: LlmSettings::default(),
        budget: Budget::default(),
        verify: None,
        output: OutputSettings::default(),
        job_dir: None,
    }
}

/// A queued agent job named `name`.
pub(crate) fn submit_agent(store: &mut Store, name: &str) -> JobId {
    let mut agent = spec(name);
    agent.kind = JobKind::Task {
        task: "do it".into(),
    };
    store
        .submit(&[NewJob {
            spec: agent,
            source: None,
        }])
        .unwrap()
        .remove(0)
}

/// A running agent job (attempt 1) named `name`.
pub(crate) fn running_agent(store: &mut Store, name: &str) -> JobId {
    let id = submit_agent(store, name);
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert!(store.mark_running(&id, 1).unwrap());
    id
}

pub(crate) fn submit_one(store: &mut Store, name: &str) -> JobId {
    store
        .submit(&[NewJob {
            spec: spec(name),
            source: None,
        }])
        .unwrap()
        .remove(0)
}

#[test]
fn submitted_job_is_queued_with_its_spec_and_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = submit_one(&mut store, "hello");
    let job = store.job(&id).unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.spec, spec("hello"));
    let events = store.events(&id).unwrap();
    assert_eq!(events.len(), 1);
    assert!(
        matches!(
            events[0].body,
            EventBody::State {
                state: JobState::Queued,
                ..
            }
        ),
        "{events:?}"
    );
}

#[test]
fn reopening_keeps_jobs_and_state_id() {
    let dir = tempfile::tempdir().unwrap();
    let (id, state_id) = {
        let mut store = Store::open(dir.path()).unwrap();
        (submit_one(&mut store, "a"), store.state_id().to_string())
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.state_id(), state_id);
    assert_eq!(store.job(&id).unwrap().name, "a");
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn a_job_walks_claim_running_finish_and_records_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = submit_one(&mut store, "a");
    let attempt = store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert_eq!((attempt.n, attempt.container.as_str()), (1, "c-1"));
    assert!(
        store.claim(&id, |n| format!("c-{n}")).unwrap().is_none(),
        "claimed twice"
    );
    assert!(store.mark_running(&id, 1).unwrap());
    let outcome = Outcome::failed(Reason::ExitCode, Some(3), "exited with code 3");
    assert_eq!(
        store.finish_attempt(&id, 1, &outcome, 1).unwrap(),
        FinishResult::Finished(JobState::Failed)
    );
    let job = store.job(&id).unwrap();
    assert_eq!(
        (job.state, job.reason, job.exit_code),
        (JobState::Failed, Some(Reason::ExitCode), Some(3))
    );
    assert!(job.finished_at.is_some());
    let states: Vec<_> = store
        .events(&id)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::State { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Starting,
            JobState::Running,
            JobState::Failed
        ]
    );
    // A second finish (say, after a crash) changes nothing.
    assert_eq!(
        store
            .finish_attempt(&id, 1, &Outcome::Succeeded, 1)
            .unwrap(),
        FinishResult::AlreadyFinished
    );
}

#[test]
fn infra_failure_with_retries_left_requeues_then_fails_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = submit_one(&mut store, "a");
    let lost = Outcome::failed(Reason::Lost, None, "container vanished");
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert_eq!(
        store.finish_attempt(&id, 1, &lost, 2).unwrap(),
        FinishResult::Requeued
    );
    assert_eq!(store.job(&id).unwrap().state, JobState::Queued);
    let second = store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert_eq!(second.n, 2);
    assert_eq!(
        store.finish_attempt(&id, 2, &lost, 2).unwrap(),
        FinishResult::Finished(JobState::Failed)
    );
    assert_eq!(store.attempts(&id).unwrap().len(), 2);
}

#[test]
fn task_failures_are_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = submit_one(&mut store, "a");
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    let failed = Outcome::failed(Reason::ExitCode, Some(1), "exited with code 1");
    assert_eq!(
        store.finish_attempt(&id, 1, &failed, 5).unwrap(),
        FinishResult::Finished(JobState::Failed)
    );
}

#[test]
fn cancel_ends_a_queued_job_and_flags_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let queued = submit_one(&mut store, "q");
    let running = submit_one(&mut store, "r");
    store.claim(&running, |n| format!("c-{n}")).unwrap();
    assert_eq!(store.cancel(&queued).unwrap(), CancelResult::Cancelled);
    assert_eq!(store.job(&queued).unwrap().state, JobState::Cancelled);
    assert!(store
        .claim(&queued, |n| format!("c-{n}"))
        .unwrap()
        .is_none());
    assert_eq!(store.cancel(&running).unwrap(), CancelResult::Requested);
    let asked: Vec<_> = store
        .control_requests()
        .unwrap()
        .into_iter()
        .filter(|r| r.cancel)
        .map(|r| r.job)
        .collect();
    assert_eq!(asked, vec![running.clone()]);
    assert_eq!(
        store.cancel(&queued).unwrap(),
        CancelResult::AlreadyFinished(JobState::Cancelled)
    );
}

#[test]
fn resolve_accepts_id_prefix_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let first = submit_one(&mut store, "same");
    let newest = submit_one(&mut store, "same");
    assert_eq!(store.resolve(first.as_str()).unwrap(), first);
    assert_eq!(
        store
            .resolve(&newest.as_str().to_lowercase()[..20])
            .unwrap(),
        newest
    );
    assert_eq!(store.resolve("same").unwrap(), newest);
    assert!(matches!(
        store.resolve("nope"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn jobs_dir_file_is_submitted_once_per_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let s = spec("a");
    assert!(store
        .submit_from_jobs_dir("/j/a.yaml", "h1", &s)
        .unwrap()
        .is_some());
    assert!(store
        .submit_from_jobs_dir("/j/a.yaml", "h1", &s)
        .unwrap()
        .is_none());
    assert!(store
        .submit_from_jobs_dir("/j/a.yaml", "h2", &s)
        .unwrap()
        .is_some());
}

#[test]
fn concurrent_writers_on_separate_connections_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                for i in 0..25 {
                    submit_one(&mut store, &format!("t{t}-{i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.list(true).unwrap().len(), 200);
}

#[test]
fn messages_and_pauses_are_taken_only_for_a_running_agent_and_a_message_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = submit_agent(&mut store, "talk");
    let plain = submit_one(&mut store, "plain");
    assert_eq!(
        store.send_message(&id, "hi").unwrap(),
        ControlResult::NotRunning(JobState::Queued)
    );
    assert_eq!(
        store.set_paused(&id, true).unwrap(),
        ControlResult::NotRunning(JobState::Queued)
    );
    assert!(!store.paused(&id).unwrap());
    for job in [&id, &plain] {
        store.claim(job, |n| format!("c-{n}")).unwrap().unwrap();
        assert!(store.mark_running(job, 1).unwrap());
    }
    assert_eq!(
        store.send_message(&plain, "hi").unwrap(),
        ControlResult::NotAgent
    );
    assert!(store.undelivered_messages(&plain, 1).unwrap().is_empty());
    assert_eq!(
        store.set_paused(&plain, true).unwrap(),
        ControlResult::NotAgent
    );
    assert!(!store.paused(&plain).unwrap());
    assert_eq!(
        store.set_paused(&id, true).unwrap(),
        ControlResult::Stored { attempt: 1 }
    );
    assert!(store.paused(&id).unwrap());
    assert_eq!(
        store.send_message(&id, "use tabs").unwrap(),
        ControlResult::Stored { attempt: 1 }
    );
    let pending = store.undelivered_messages(&id, 1).unwrap();
    assert_eq!(pending.len(), 1);
    let seq = pending[0].0;
    let cp = Checkpoint::default();
    let asked = |store: &Store| {
        store
            .control_requests()
            .unwrap()
            .into_iter()
            .find(|r| r.job == id)
            .unwrap()
    };
    assert_eq!(
        asked(&store),
        ControlRequests {
            job: id.clone(),
            attempt: 1,
            cancel: false,
            paused: true,
            messages: vec![seq],
        }
    );
    assert!(store.deliver_message(&id, 1, seq, "use tabs", &cp).unwrap());
    assert!(
        asked(&store).messages.is_empty(),
        "a delivered message is not asked for again"
    );
    assert!(!store.deliver_message(&id, 1, seq, "use tabs", &cp).unwrap());
    assert!(store.undelivered_messages(&id, 1).unwrap().is_empty());
    let messages: Vec<_> = store
        .events(&id)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Message { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(messages, vec!["use tabs".to_string()]);
}

/// A message the attempt never typed is not lost silently: when the attempt ends it is listed as
/// dropped and recorded as a `message_dropped` event before the final state; a delivered one
/// stays delivered, and a retry's attempt does not inherit it.
#[test]
fn a_message_still_waiting_when_its_attempt_ends_is_recorded_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut agent = spec("talk");
    agent.kind = JobKind::Task {
        task: "do it".into(),
    };
    agent.retries = 1;
    let id = store
        .submit(&[NewJob {
            spec: agent,
            source: None,
        }])
        .unwrap()
        .remove(0);
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert!(store.mark_running(&id, 1).unwrap());
    store.send_message(&id, "typed").unwrap();
    store.send_message(&id, "too late\nsecond line").unwrap();
    let typed = store.messages(&id).unwrap()[0].seq;
    assert!(store
        .deliver_message(&id, 1, typed, "typed", &Checkpoint::default())
        .unwrap());
    let status = |store: &Store| -> Vec<(u32, MessageStatus)> {
        store
            .messages(&id)
            .unwrap()
            .iter()
            .map(|m| (m.attempt, m.status))
            .collect()
    };
    assert_eq!(
        status(&store),
        [(1, MessageStatus::Delivered), (1, MessageStatus::Waiting)]
    );
    let lost = Outcome::failed(Reason::Lost, None, "gone");
    assert_eq!(
        store.finish_attempt(&id, 1, &lost, 2).unwrap(),
        FinishResult::Requeued
    );
    assert_eq!(
        status(&store),
        [(1, MessageStatus::Delivered), (1, MessageStatus::Dropped)]
    );
    let kinds: Vec<_> = store
        .events(&id)
        .unwrap()
        .into_iter()
        .filter(|e| e.attempt == Some(1))
        .map(|e| e.body)
        .skip_while(|b| !matches!(b, EventBody::Message { .. }))
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(
        kinds[1],
        EventBody::MessageDropped {
            text: "too late\nsecond line".into()
        }
    );
    assert!(
        matches!(
            kinds[2],
            EventBody::State {
                state: JobState::Queued,
                ..
            }
        ),
        "{kinds:?}"
    );
    store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
    assert!(store.mark_running(&id, 2).unwrap());
    assert!(store.undelivered_messages(&id, 2).unwrap().is_empty());
    let asked = store.control_requests().unwrap();
    assert!(asked[0].messages.is_empty(), "{asked:?}");
}
