//! The dispatcher's grip on a running attempt: an [`AttemptHandle`] that sends typed
//! [`Control`] messages, and the attempt's end of it, [`Controls`].
//!
//! The path between processes stays the database: `runner cancel`, `send`, `pause` and `resume`
//! write requests there, and the dispatcher's periodic forwarding step hands what is new to each
//! running attempt's handle ([`AttemptHandle::forward`]). A message's text and the pause flag stay
//! in the store, which the manager loop reads; a control only tells the attempt to act now. So
//! `Cancel` is kept (it ends `supervise`, and an attempt not launched yet does not launch), while
//! `Message`, `Pause` and `Resume` wake the manager loop where it waits (a paused loop) and are
//! otherwise picked up at its next turn boundary anyway.

use crate::store::ControlRequests;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a waiting manager loop sleeps without a control before it reads the store anyway: a
/// fallback, for a request the dispatcher has not forwarded (it could not read the store).
pub(crate) const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// What the dispatcher tells a running attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// `runner cancel`, or a second interrupt: stop the container; the attempt ends `cancelled`.
    Cancel,
    /// `runner send` stored message `seq` (its text stays in the store): type it at the next
    /// prompt.
    Message { seq: i64 },
    /// `runner pause`: the manager issues no turn after the current one.
    Pause,
    /// `runner resume`: the manager decides the next turn again.
    Resume,
}

/// What both ends share: cancellation is a state (it stays), the rest are wake-ups (one kept
/// for a loop that is not waiting yet, so none is lost between two reads of the store).
#[derive(Default)]
struct Shared {
    cancel: CancellationToken,
    wake: Notify,
}

/// The dispatcher's end: sends controls to one attempt, and remembers what it has forwarded so
/// each request in the store is sent once.
pub(crate) struct AttemptHandle {
    shared: Arc<Shared>,
    /// A cancel was sent.
    cancelled: bool,
    /// The pause state last sent (an attempt starts unpaused).
    paused: bool,
    /// The newest message sent, by `seq`.
    last_message: i64,
}

/// The attempt's end.
pub(crate) struct Controls {
    shared: Arc<Shared>,
    /// How long [`Controls::woken`] waits at most.
    fallback: Duration,
}

/// A handle and the attempt's end of it.
pub(crate) fn channel() -> (AttemptHandle, Controls) {
    channel_with_fallback(FALLBACK_POLL)
}

/// A handle whose attempt's waits end after `fallback` without a control.
pub(crate) fn channel_with_fallback(fallback: Duration) -> (AttemptHandle, Controls) {
    let shared = Arc::new(Shared::default());
    let handle = AttemptHandle {
        shared: shared.clone(),
        cancelled: false,
        paused: false,
        last_message: 0,
    };
    (handle, Controls { shared, fallback })
}

impl AttemptHandle {
    /// Sends `control` to the attempt.
    pub fn send(&mut self, control: Control) {
        match control {
            Control::Cancel => {
                self.cancelled = true;
                self.shared.cancel.cancel();
            }
            Control::Message { seq } => {
                self.last_message = self.last_message.max(seq);
                self.shared.wake.notify_one();
            }
            Control::Pause | Control::Resume => {
                self.paused = control == Control::Pause;
                self.shared.wake.notify_one();
            }
        }
    }

    /// Sends what the store asks of this attempt that was not sent yet: a cancel, each new
    /// message, a change of the pause state. Returns what it sent.
    pub fn forward(&mut self, requests: &ControlRequests) -> Vec<Control> {
        let mut sent = Vec::new();
        if requests.cancel && !self.cancelled {
            sent.push(Control::Cancel);
        }
        for &seq in &requests.messages {
            if seq > self.last_message {
                sent.push(Control::Message { seq });
            }
        }
        if requests.paused != self.paused {
            sent.push(if requests.paused {
                Control::Pause
            } else {
                Control::Resume
            });
        }
        for control in &sent {
            self.send(control.clone());
        }
        sent
    }
}

impl Controls {
    /// Whether the attempt was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Returns once the attempt is cancelled.
    pub async fn cancelled(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Waits for a message, pause or resume (one sent while nobody waited counts), or the
    /// fallback poll interval, whichever comes first.
    pub async fn woken(&self) {
        let _ = tokio::time::timeout(self.fallback, self.shared.wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobId;

    fn requests(cancel: bool, paused: bool, messages: &[i64]) -> ControlRequests {
        ControlRequests {
            job: JobId("j".into()),
            attempt: 1,
            cancel,
            paused,
            messages: messages.to_vec(),
        }
    }

    /// Forwarding runs every tick over what the store holds: each request reaches the attempt
    /// once, however many ticks see it.
    #[tokio::test]
    async fn each_request_in_the_store_is_forwarded_once() {
        let (mut handle, controls) = channel_with_fallback(Duration::from_secs(3600));
        assert!(handle.forward(&requests(false, false, &[])).is_empty());
        assert_eq!(
            handle.forward(&requests(false, true, &[4, 5])),
            vec![
                Control::Message { seq: 4 },
                Control::Message { seq: 5 },
                Control::Pause
            ]
        );
        assert_eq!(
            handle.forward(&requests(false, true, &[4, 5, 7])),
            vec![Control::Message { seq: 7 }]
        );
        assert!(handle.forward(&requests(false, true, &[7])).is_empty());
        assert!(!controls.is_cancelled());
        assert_eq!(
            handle.forward(&requests(true, false, &[])),
            vec![Control::Cancel, Control::Resume]
        );
        assert!(controls.is_cancelled());
        assert!(handle.forward(&requests(true, false, &[])).is_empty());
    }

    /// A nudge sent while the manager loop is busy (typing, waiting for Aider) is kept for its
    /// next wait, so a message stored between two reads is not left for the fallback poll.
    #[tokio::test]
    async fn a_nudge_sent_before_the_wait_ends_the_wait_at_once() {
        let (mut handle, controls) = channel_with_fallback(Duration::from_secs(3600));
        handle.send(Control::Message { seq: 1 });
        tokio::time::timeout(Duration::from_secs(5), controls.woken())
            .await
            .expect("woken by the earlier nudge");
    }

    /// A paused manager loop waits for a control, not for its poll: a message stored while it
    /// waits is typed into Aider as soon as the dispatcher forwards it, though the fallback
    /// poll here is an hour.
    #[tokio::test]
    async fn a_message_nudge_wakes_a_paused_manager_loop_without_waiting_for_the_poll() {
        use crate::agent::session::Session;
        use crate::job::{JobKind, ManagerMode};
        use crate::store::{ControlResult, NewJob, SharedStore, Store};
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;

        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::new(Store::open(dir.path()).unwrap());
        let mut spec = crate::store::tests_support::spec("paused");
        spec.kind = JobKind::Task {
            task: "greet".into(),
        };
        spec.manager.mode = ManagerMode::Script { steps: vec![] };
        let job = spec.clone();
        let id = store
            .call(move |s| {
                let id = s
                    .submit(&[NewJob {
                        spec: job,
                        source: None,
                    }])?
                    .remove(0);
                s.claim(&id, |n| format!("c-{n}"))?;
                s.mark_running(&id, 1)?;
                s.set_paused(&id, true)?;
                Ok(id)
            })
            .await
            .unwrap();
        let gateway = crate::llm::Gateway::start(
            store.clone(),
            dir.path().join("run"),
            crate::llm::Prices::default(),
        )
        .await
        .unwrap();
        // Aider: its output is what the test prints, its stdin what the test reads.
        let (out, mut printed) = tokio::sync::mpsc::unbounded_channel();
        let output = futures_util::stream::poll_fn(move |cx| printed.poll_recv(cx)).boxed();
        let (ours, mut stdin) = tokio::io::duplex(64 << 10);
        let (transcript, _transcript) = tokio::sync::mpsc::unbounded_channel();
        let session = Session::start(
            output,
            Box::pin(ours),
            transcript,
            Duration::from_millis(50),
        );
        let (mut handle, controls) = channel_with_fallback(Duration::from_secs(3600));
        let sandbox = crate::scheduler::fake::FakeSandbox::default();
        let redact = super::super::redact::Redactor::default();
        let drive = super::super::drive::Drive {
            sandbox: &sandbox,
            store: &store,
            gateway: &gateway,
            spec: &spec,
            job: &id,
            attempt: 1,
            container: "c-1",
            base: String::new(),
            artifacts: dir.path().join("artifacts"),
            redact: &redact,
            control: &controls,
            resume: None,
        };
        let operator = async {
            out.send(Ok(bytes::Bytes::from("> "))).unwrap();
            // The loop records that it paused.
            loop {
                let events = store
                    .call({
                        let id = id.clone();
                        move |s| s.events(&id)
                    })
                    .await
                    .unwrap();
                if events
                    .iter()
                    .any(|e| e.body == crate::store::EventBody::Paused)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Long enough for the loop to look for messages, find none and wait.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let sent = store
                .call({
                    let id = id.clone();
                    move |s| s.send_message(&id, "use tabs")
                })
                .await
                .unwrap();
            assert_eq!(sent, ControlResult::Stored { attempt: 1 });
            let requests = store.call(|s| s.control_requests()).await.unwrap();
            assert_eq!(
                handle.forward(&requests[0]),
                vec![Control::Message { seq: 1 }, Control::Pause]
            );
            let mut typed = Vec::new();
            let mut buf = [0; 1024];
            while !String::from_utf8_lossy(&typed).contains("use tabs") {
                let n = stdin.read(&mut buf).await.unwrap();
                assert!(n > 0, "stdin ended");
                typed.extend_from_slice(&buf[..n]);
            }
        };
        tokio::select! {
            _ = drive.run(session) => panic!("the manager loop ended while paused"),
            done = tokio::time::timeout(Duration::from_secs(10), operator) => {
                done.expect("the message was typed within 10 s, not after the hour-long poll")
            }
        }
    }
}
