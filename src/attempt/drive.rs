//! The manager loop: it asks the manager for a step, types it into Aider, watches the work tree
//! for progress, and stops on a finish, a failure, the turn limit or a stuck manager.

use super::{infra, Ending};
use crate::agent::manager::{Manager, ManagerError};
use crate::agent::parse::AiderEvent;
use crate::agent::protocol::{action_name, HistoryItem, TurnContext};
use crate::agent::session::{Session, SessionError};
use crate::job::{JobSpec, ManagerAction, ManagerMode, ManagerStep};
use crate::llm::Gateway;
use crate::sandbox::Sandbox;
use crate::state::{JobId, Outcome, Reason};
use crate::store::{Checkpoint, Input, SharedStore, TurnEvent};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Identical turns in a row (same action, nothing changed) before the job is `stuck`.
const STUCK_REPEATS: u32 = 3;

/// Everything the manager loop needs.
pub struct Drive<'a, S: Sandbox> {
    /// Where the container runs (verify, export and the work-tree fingerprint are execs).
    pub sandbox: &'a S,
    /// For artifacts.
    pub store: &'a SharedStore,
    /// For the manager's calls (metered as role `manager`).
    pub gateway: &'a Gateway,
    pub spec: &'a JobSpec,
    pub job: &'a JobId,
    pub attempt: u32,
    /// The attempt's container.
    pub container: &'a str,
    /// Commit the work started from (the patch and bundle are relative to it).
    pub base: String,
    /// Where this attempt's patch, bundle and verify logs go (`artifacts/<job>/<attempt>/`).
    pub artifacts: PathBuf,
    /// The job's secret values, kept out of the verify output stored as an artifact.
    pub redact: &'a super::redact::Redactor,
    /// Wakes a paused loop when a message, pause or resume is forwarded.
    pub control: &'a super::Controls,
    /// For an attempt adopted after a restart: where its session stood.
    pub resume: Option<Resumed>,
}

/// Where an adopted attempt's session stood when the runner before this one stopped.
pub struct Resumed {
    /// The last checkpoint the manager loop recorded.
    pub checkpoint: Checkpoint,
    /// The attempt's turns recorded so far, in order.
    pub turns: Vec<TurnEvent>,
    /// Whether the checkpoint's last input reached Aider (it printed after it); if not, it is
    /// typed now.
    pub typed: bool,
    /// The text of the checkpoint's last input when it is an operator's message.
    pub message: Option<String>,
}

/// How the manager loop ended.
pub enum DriveEnd {
    /// The loop decided the outcome (succeeded after verify and export, or a failure).
    Done(Ending),
    /// Aider's output ended (it exited): the container's exit status tells the rest.
    AiderExited,
}

impl DriveEnd {
    /// An outcome the loop decided; a failure is retryable if its reason is.
    fn done(outcome: Outcome) -> Self {
        DriveEnd::Done(Ending::Done(outcome))
    }
}

impl<S: Sandbox> Drive<'_, S> {
    /// Drives Aider until the work is verified and exported, or the job fails.
    pub async fn run(mut self, mut session: Session) -> DriveEnd {
        let spec = self.spec;
        let mut ctx = TurnContext {
            task: match &spec.kind {
                crate::job::JobKind::Task { task } => task.clone(),
                crate::job::JobKind::Command { .. } => String::new(),
            },
            max_turns: spec.manager.max_turns,
            ..Default::default()
        };
        let mut cp = Checkpoint::default();
        let resumed = match self.resume.take() {
            None => match session.wait_ready().await {
                Ok(turn) => {
                    ctx.new_output = turn.output;
                    false
                }
                Err(e) => return session_end(e),
            },
            Some(resumed) => {
                if let Err(e) = self.resume(&mut session, &mut ctx, &resumed).await {
                    return session_end(e);
                }
                cp = resumed.checkpoint;
                true
            }
        };
        let mut manager = match &spec.manager.mode {
            ManagerMode::None => return self.run_single(session, ctx, resumed, cp).await,
            ManagerMode::Script { steps } => Manager::Script {
                steps: steps.clone(),
                // Each turn took one step.
                next: ctx.turn as usize,
            },
            ManagerMode::Llm => Manager::Llm {
                gateway: self.gateway.clone(),
                job: self.job.clone(),
                attempt: self.attempt,
                spec: Box::new(spec.clone()),
            },
        };
        let mut last: Option<(ManagerAction, String, String)> = None; // action, argument, fingerprint
        let mut repeats = 0;
        let mut fingerprint = self.fingerprint(&mut ctx).await;
        loop {
            if ctx.turn >= ctx.max_turns {
                return DriveEnd::done(Outcome::failed(
                    Reason::MaxTurns,
                    None,
                    format!(
                        "the manager used all {} turns without a verified finish",
                        ctx.max_turns
                    ),
                ));
            }
            if let Some(end) = self.operator_turns(&mut session, &mut ctx, &mut cp).await {
                return end;
            }
            let mut meter = self.start_turn().await;
            ctx.turn += 1;
            let decided = manager.decide(&ctx).await;
            ctx.operator.clear();
            let step = match decided {
                Ok(step) => step,
                Err(ManagerError::Budget(why)) => {
                    return DriveEnd::done(Outcome::failed(Reason::Budget, None, why))
                }
                Err(ManagerError::Provider(why)) => {
                    return DriveEnd::done(Outcome::failed(Reason::ProviderError, None, why))
                }
                Err(ManagerError::Failed(why)) => {
                    return DriveEnd::done(Outcome::failed(Reason::ManagerError, None, why))
                }
            };
            let result = match step.action {
                ManagerAction::Fail => {
                    self.record_turn(&ctx, &step, "the manager gave up", &meter)
                        .await;
                    return DriveEnd::done(Outcome::failed(
                        Reason::ManagerError,
                        None,
                        format!("the manager gave up: {}", step.argument),
                    ));
                }
                ManagerAction::Finish => match self.finish(&mut ctx).await {
                    Ok(ending) => {
                        self.record_turn(&ctx, &step, &ending_words(&ending), &meter)
                            .await;
                        return DriveEnd::Done(ending);
                    }
                    Err(failure) => {
                        ctx.new_output = failure.clone();
                        failure
                    }
                },
                _ => {
                    // Recorded before it is typed: a runner adopting the attempt after a restart
                    // finishes this turn instead of typing it again.
                    cp = Checkpoint {
                        turn: ctx.turn,
                        step: Some(self.redacted(&step)),
                        unseen_from: session.offset(),
                        inputs: vec![session.offset()],
                        last: Some(Input::Step),
                        operator: Vec::new(),
                    };
                    self.save_checkpoint(&cp).await;
                    if let Err(e) = session.send(&aider_input(&step)).await {
                        return session_end(e);
                    }
                    let turn = match session.wait_ready().await {
                        Ok(turn) => turn,
                        Err(e) => return session_end(e),
                    };
                    let summary = summarize(&turn.events);
                    meter.saw(&turn.events);
                    ctx.new_output = turn.output;
                    summary
                }
            };
            let now = self.fingerprint(&mut ctx).await;
            self.record_turn(&ctx, &step, &result, &meter).await;
            let unchanged = now == fingerprint;
            fingerprint = now;
            let same = last
                .as_ref()
                .is_some_and(|(a, arg, _)| *a == step.action && *arg == step.argument);
            repeats = if same && unchanged { repeats + 1 } else { 0 };
            if repeats + 1 >= STUCK_REPEATS {
                return DriveEnd::done(Outcome::failed(
                    Reason::Stuck,
                    None,
                    format!(
                        "the manager repeated `{} {}` {STUCK_REPEATS} times with no change in the work tree",
                        action_name(step.action),
                        step.argument.chars().take(80).collect::<String>()
                    ),
                ));
            }
            last = Some((step.action, step.argument.clone(), fingerprint.clone()));
            ctx.remember(HistoryItem {
                turn: ctx.turn,
                action: step.action,
                argument: step.argument,
                result,
            });
        }
    }

    /// The operator's part before the manager's next turn: held while paused (messages typed
    /// as they come), then the messages still waiting typed. `Some` when the session ended.
    async fn operator_turns(
        &self,
        session: &mut Session,
        ctx: &mut TurnContext,
        cp: &mut Checkpoint,
    ) -> Option<DriveEnd> {
        if let Some(end) = self.hold_while_paused(session, ctx, cp).await {
            return Some(end);
        }
        self.deliver_messages(session, ctx, cp).await
    }

    /// While `runner pause` holds the job, issues no manager turns: records that it paused,
    /// types the operator's messages as they come (a person takes over), and returns once
    /// resumed (recorded too). The deadline, cancel and budget keep running in `supervise`. A
    /// store that cannot be read counts as not paused. `Some` when the session ended meanwhile.
    async fn hold_while_paused(
        &self,
        session: &mut Session,
        ctx: &mut TurnContext,
        cp: &mut Checkpoint,
    ) -> Option<DriveEnd> {
        let paused = || {
            let id = self.job.clone();
            self.store.call(move |s| s.paused(&id))
        };
        if !paused().await.unwrap_or(false) {
            return None;
        }
        self.record_pause(true).await;
        loop {
            if let Some(end) = self.deliver_messages(session, ctx, cp).await {
                return Some(end);
            }
            if !paused().await.unwrap_or(false) {
                self.record_pause(false).await;
                return None;
            }
            self.control.woken().await;
        }
    }

    /// Records a pause or a resume as an event; a store error is logged.
    async fn record_pause(&self, paused: bool) {
        let (id, n) = (self.job.clone(), self.attempt);
        if let Err(e) = self
            .store
            .call(move |s| s.add_pause_event(&id, n, paused))
            .await
        {
            tracing::warn!(job = %self.job, "cannot record a pause or resume: {e}");
        }
    }

    /// Types the operator's waiting messages (`runner send`) into Aider, each a turn of its own
    /// that is not the manager's: marked delivered and recorded as an event (redacted) before
    /// it is typed, so it is typed at most once; its output and the message itself go to the
    /// manager's next request. `Some` when the session ended meanwhile.
    async fn deliver_messages(
        &self,
        session: &mut Session,
        ctx: &mut TurnContext,
        cp: &mut Checkpoint,
    ) -> Option<DriveEnd> {
        let (id, n) = (self.job.clone(), self.attempt);
        let pending = match self
            .store
            .call(move |s| s.undelivered_messages(&id, n))
            .await
        {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(job = %self.job, "cannot read the operator's messages: {e}");
                return None;
            }
        };
        for (seq, text) in pending {
            let redacted = self.redact.redact_str(&text);
            let mut next = cp.clone();
            next.inputs.push(session.offset());
            next.last = Some(Input::Message(seq));
            next.operator.push(redacted.clone());
            let (id, n, stored, recorded) = (
                self.job.clone(),
                self.attempt,
                redacted.clone(),
                next.clone(),
            );
            match self
                .store
                .call(move |s| s.deliver_message(&id, n, seq, &stored, &recorded))
                .await
            {
                Ok(true) => *cp = next,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(job = %self.job, "cannot record the operator's message: {e}");
                    return None;
                }
            }
            if let Err(e) = session.send_from_operator(&text).await {
                return Some(session_end(e));
            }
            match session.wait_ready().await {
                Ok(turn) => {
                    // The manager has not seen the previous turn's output yet: keep both,
                    // bounded like one turn's.
                    ctx.new_output.push_str(&turn.output);
                    ctx.new_output = crate::agent::protocol::trim_middle(
                        &ctx.new_output,
                        crate::agent::bounded::HEAD,
                        crate::agent::bounded::TAIL,
                    );
                }
                Err(e) => return Some(session_end(e)),
            }
            ctx.operator.push(redacted);
        }
        None
    }

    /// Picks up an adopted attempt's session where the checkpoint left it: the manager's state
    /// (turn, history, the operator's messages it has not seen) from the store, the last input
    /// typed now if it never reached Aider, then Aider's prompt awaited (the output the manager
    /// has not seen is replayed, so it sees what happened meanwhile). A manager turn that was in
    /// flight is recorded as ended.
    async fn resume(
        &self,
        session: &mut Session,
        ctx: &mut TurnContext,
        resumed: &Resumed,
    ) -> Result<(), SessionError> {
        let cp = &resumed.checkpoint;
        for t in &resumed.turns {
            let Ok(action) = serde_json::from_value(serde_json::Value::String(t.action.clone()))
            else {
                continue;
            };
            ctx.remember(HistoryItem {
                turn: t.turn,
                action,
                argument: t.argument.clone(),
                result: t.ended.clone(),
            });
        }
        let last_recorded = resumed.turns.last().map_or(0, |t| t.turn);
        ctx.turn = cp.turn.max(last_recorded);
        ctx.operator = cp.operator.clone();
        let mut meter = self.start_turn().await;
        match (resumed.typed, &cp.last, &cp.step, &resumed.message) {
            // The last input never reached Aider: type it now.
            (false, Some(Input::Step), Some(step), _) => session.send(&aider_input(step)).await?,
            (false, Some(Input::Message(_)), _, Some(text)) => {
                session.send_from_operator(text).await?
            }
            (false, Some(Input::Task), _, _) => session.send(&ctx.task.clone()).await?,
            // Aider's prompt may have been printed before the runner attached: have it print
            // the prompt again.
            _ => session.nudge().await?,
        }
        let turn = session.wait_ready().await?;
        ctx.new_output = turn.output;
        let in_flight = cp.step.as_ref().filter(|_| cp.turn > last_recorded);
        if let Some(step) = in_flight {
            meter.saw(&turn.events);
            let result = summarize(&turn.events);
            let at_turn = TurnContext {
                turn: cp.turn,
                max_turns: ctx.max_turns,
                files_changed: ctx.files_changed.clone(),
                ..TurnContext::default()
            };
            self.record_turn(&at_turn, step, &result, &meter).await;
            ctx.remember(HistoryItem {
                turn: cp.turn,
                action: step.action,
                argument: step.argument.clone(),
                result,
            });
        }
        Ok(())
    }

    /// The step with its text redacted, as the checkpoint stores it.
    fn redacted(&self, step: &ManagerStep) -> ManagerStep {
        ManagerStep {
            action: step.action,
            argument: self.redact.redact_str(&step.argument),
            progress: self.redact.redact_str(&step.progress),
            thought: self.redact.redact_str(&step.thought),
        }
    }

    /// Records where the session stands; a store error is logged (an adoption after a restart
    /// then works from the checkpoint before).
    async fn save_checkpoint(&self, cp: &Checkpoint) {
        let (id, n, cp) = (self.job.clone(), self.attempt, cp.clone());
        if let Err(e) = self
            .store
            .call(move |s| s.save_checkpoint(&id, n, &cp))
            .await
        {
            tracing::warn!(job = %self.job, "cannot record where the session stands: {e}");
        }
    }

    /// `manager.mode: none`: the task as one message, then finish when Aider is back at its
    /// prompt. Adopted after a restart with the task typed (`cp`), the session has already
    /// waited for its prompt.
    async fn run_single(
        self,
        mut session: Session,
        mut ctx: TurnContext,
        resumed: bool,
        mut cp: Checkpoint,
    ) -> DriveEnd {
        // Adopted after a restart with the task typed: the session has waited for its prompt.
        if !(resumed && cp.turn >= 1) {
            cp = Checkpoint {
                turn: 1,
                unseen_from: session.offset(),
                inputs: vec![session.offset()],
                last: Some(Input::Task),
                ..Checkpoint::default()
            };
            self.save_checkpoint(&cp).await;
            let task = ctx.task.clone();
            if let Err(e) = session.send(&task).await {
                return session_end(e);
            }
            match session.wait_ready().await {
                Ok(turn) => ctx.new_output = turn.output,
                Err(e) => return session_end(e),
            }
        }
        ctx.turn = 1;
        // No manager to show them to: messages sent meanwhile (and any while paused) are typed
        // before the finish, until none is waiting.
        loop {
            let typed = ctx.operator.len();
            if let Some(end) = self.operator_turns(&mut session, &mut ctx, &mut cp).await {
                return end;
            }
            if ctx.operator.len() == typed {
                break;
            }
        }
        match self.finish(&mut ctx).await {
            Ok(ending) => DriveEnd::Done(ending),
            Err(failure) => DriveEnd::done(Outcome::failed(Reason::VerifyFailed, None, failure)),
        }
    }

    /// A fingerprint of the work tree (HEAD and status), refreshing the changed-files list.
    async fn fingerprint(&self, ctx: &mut TurnContext) -> String {
        let script = format!(
            "cd /workspace && git rev-parse HEAD && echo --- && git status --porcelain && echo --- && git diff --name-only {} && git ls-files --others --exclude-standard",
            self.base
        );
        let argv = ["sh".to_string(), "-c".to_string(), script];
        let Ok(out) = self
            .sandbox
            .exec(self.container, &argv, None, 256 << 10)
            .await
        else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&out.output).into_owned();
        let mut parts = text.splitn(3, "---\n");
        let head = parts.next().unwrap_or_default().to_string();
        let status: String = parts
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains(".aider"))
            .collect::<Vec<_>>()
            .join("\n");
        let files: BTreeSet<String> = parts
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(".aider"))
            .map(str::to_string)
            .collect();
        ctx.files_changed = files.into_iter().collect();
        let digest = Sha256::digest(format!("{head}\n{status}").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How the manager loop ends when Aider's session does.
fn session_end(e: SessionError) -> DriveEnd {
    match e {
        SessionError::Exited { .. } => DriveEnd::AiderExited,
        SessionError::Io(e) => DriveEnd::done(infra(format!("aider session: {e}"))),
    }
}

/// What the runner types into Aider for a manager step.
pub fn aider_input(step: &ManagerStep) -> String {
    let arg = step.argument.trim();
    match step.action {
        ManagerAction::Instruct => arg.to_string(),
        ManagerAction::Run => format!("/run {arg}"),
        ManagerAction::Test => format!("/test {arg}"),
        ManagerAction::Add => format!("/add {arg}"),
        ManagerAction::Drop => format!("/drop {arg}"),
        ManagerAction::Undo => "/undo".to_string(),
        ManagerAction::Finish | ManagerAction::Fail => String::new(),
    }
}

/// How a finish turn ended the attempt, in a few words.
fn ending_words(ending: &Ending) -> String {
    match ending {
        Ending::Done(Outcome::Succeeded) => "verified and exported".into(),
        Ending::Done(Outcome::Failed { detail, .. })
        | Ending::Permanent(Outcome::Failed { detail, .. }) => detail.clone(),
        Ending::Done(other) | Ending::Permanent(other) => format!("{other:?}"),
    }
}

/// A few words on what a turn did, for the manager's history.
fn summarize(events: &[AiderEvent]) -> String {
    let mut edits = Vec::new();
    let mut commits = 0;
    for e in events {
        match e {
            AiderEvent::AppliedEdit(f) => edits.push(f.clone()),
            AiderEvent::Commit { .. } => commits += 1,
            _ => {}
        }
    }
    match (edits.is_empty(), commits) {
        (true, 0) => "no edits".into(),
        (false, _) => format!(
            "edited {} ({} commit{})",
            edits.join(", "),
            commits,
            if commits == 1 { "" } else { "s" }
        ),
        (true, n) => format!("{n} commit(s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_actions_become_aider_commands() {
        let step = |action, argument: &str| ManagerStep {
            action,
            argument: argument.into(),
            progress: String::new(),
            thought: String::new(),
        };
        assert_eq!(
            aider_input(&step(ManagerAction::Run, "make test")),
            "/run make test"
        );
        assert_eq!(
            aider_input(&step(ManagerAction::Test, "pytest -q")),
            "/test pytest -q"
        );
        assert_eq!(
            aider_input(&step(ManagerAction::Add, "a.py b.py")),
            "/add a.py b.py"
        );
        assert_eq!(aider_input(&step(ManagerAction::Undo, "")), "/undo");
        assert_eq!(
            aider_input(&step(ManagerAction::Instruct, "line1\nline2")),
            "line1\nline2"
        );
    }

    #[test]
    fn turns_are_summarised_from_aider_events() {
        let events = vec![
            AiderEvent::AppliedEdit("greet.py".into()),
            AiderEvent::Commit {
                sha: "abc1234".into(),
                message: "add greet".into(),
            },
        ];
        assert_eq!(summarize(&events), "edited greet.py (1 commit)");
        assert_eq!(summarize(&[]), "no edits");
    }
}
