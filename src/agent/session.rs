//! One Aider process driven through its stdio: a reader task decodes its output and copies every
//! chunk to the transcript; the [`Session`] waits for Aider's prompt (answering its yes/no
//! questions by policy meanwhile), collects the progress markers of each turn, and types messages.
//!
//! Readiness (docs/aider.md): the output ends in a prompt at the start of a line and nothing
//! more arrives for the quiet period. A prompt or question only counts once Aider has ended a line
//! after the runner last typed something: until then the line on screen is the prompt just
//! answered, or the prompts Aider prints again for each continuation line of a multi-line message
//! (`> > > ` on one line, then the newline Aider prints after reading the whole block).
//!
//! A streamed answer can pause right after a line that looks like a prompt (a Markdown quote
//! `> `). With [`Session::watch_llm_calls`], a prompt does not count while one of the attempt's
//! streamed LLM calls is in flight (Aider is still receiving its answer), for at most
//! [`LLM_HOLD`], nor until Aider has had [`AFTER_CALL`] to print the rest once the call ended.

use super::bounded::HeadTail;
use super::parse::{self, AiderEvent, PromptState};
use crate::sandbox::{InputStream, OutputStream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// Who produced a transcript entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Aider printed it.
    Out,
    /// The runner typed it.
    In,
    /// The runner typed a person's message (`runner send`).
    Operator,
}

/// One chunk of the conversation, as it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// RFC 3339 UTC.
    pub at: String,
    pub direction: Direction,
    /// Exactly what was printed or typed.
    pub text: String,
    /// How many bytes of Aider's output came before the end of this entry (for typed input:
    /// before it was typed), counted from the container's start.
    pub offset: u64,
}

/// Where a session picks up an Aider process that a runner before this one was driving (after
/// a restart): its output is read again from the container's start and the parts already dealt
/// with are skipped. Offsets count bytes of Aider's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The session sees the output from here: the output the manager has not seen yet.
    pub session_from: u64,
    /// The transcript gets the output from here: what the stored transcript lacks.
    pub transcript_from: u64,
    /// Where inputs were typed since `session_from`, in order: at each, the session acts as if
    /// it had just typed (the prompt on screen is answered).
    pub inputs: Vec<u64>,
    /// How much output there was when the session started: no prompt or question before it
    /// counts (all were dealt with by the runner before), so none is answered twice.
    pub until: u64,
}

/// What Aider printed between two moments it was ready for input.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    /// All output since the previous turn ended (or the start), ending with the prompt; past
    /// [`super::bounded::HEAD`] + [`super::bounded::TAIL`] bytes, its middle is cut (marked).
    pub output: String,
    /// The progress markers in the complete lines of `output`, in order.
    pub events: Vec<AiderEvent>,
    /// The mode prefix of the prompt that ended the turn (`diff` for `diff> `), if any.
    pub mode: Option<String>,
}

/// Why a session cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Aider's output ended: the process exited. `output` is what it printed since the last turn.
    #[error("aider exited")]
    Exited { output: String },
    /// Reading Aider's output or writing its input failed.
    #[error("aider's stdio failed: {0}")]
    Io(String),
}

/// Markers kept per turn: a turn's summary needs a few; a command printing marker lines
/// without end must not grow the list without end.
const MAX_EVENTS: usize = 1_000;

/// Longest part of the current output line kept for prompt and marker detection. Prompts,
/// questions and markers are far shorter; a longer line is neither a prompt nor a question.
const LINE_MAX: usize = 4096;

/// How long Aider's output must stay quiet after a prompt before it counts as ready.
pub const QUIET: Duration = Duration::from_millis(50);

/// Longest a quiet prompt waits for an LLM call in flight to end. A call that outlives this with
/// no output (a client that stopped reading and kept its connection) no longer holds the turn.
pub const LLM_HOLD: Duration = Duration::from_secs(20);

/// After an LLM call ends, how long a prompt-like line waits for Aider to print the rest of the
/// answer (it always prints more: the token counts, then its prompt) before it may count.
pub const AFTER_CALL: Duration = Duration::from_secs(1);

/// A running Aider process behind its stdio.
pub struct Session {
    /// Decoded output from the reader task, in order, each with the offset of its end; an `Err`
    /// when the stream failed. Closed when the output ended.
    chunks: mpsc::UnboundedReceiver<Result<(String, u64), String>>,
    /// Aider's stdin; `None` once closed.
    input: Option<InputStream>,
    /// Where what the runner types is recorded (the reader task records the output).
    transcript: mpsc::UnboundedSender<TranscriptEntry>,
    /// How long the output must stay unchanged after a prompt or question before it counts.
    quiet: Duration,
    /// Output since the previous turn ended: the next turn's `output` (head and tail, bounded).
    output: HeadTail,
    /// Markers from the complete lines of `output` (the first [`MAX_EVENTS`]).
    events: Vec<AiderEvent>,
    /// The current unfinished output line (its first `LINE_MAX` bytes, from the last `\r`).
    line: String,
    /// The current line is longer than `LINE_MAX`.
    line_overflow: bool,
    /// False from the moment the runner types something until Aider ends a line: the line on
    /// screen until then is the prompt or question already answered.
    fresh: bool,
    /// The attempt's streamed agent LLM calls in flight, when known.
    llm_calls: Option<watch::Receiver<usize>>,
    /// The output has stood quiet at a prompt for [`LLM_HOLD`] with a call in flight: the call
    /// no longer holds the turn (until more output arrives).
    hold_spent: bool,
    /// Bytes of Aider's output taken in so far, counted from the container's start.
    consumed: u64,
    /// Where the current line began: just past the last newline taken in.
    line_start: u64,
    /// Replayed inputs still ahead in the output ([`Replay::inputs`]).
    replay_inputs: std::collections::VecDeque<u64>,
    /// No prompt counts before this much output is taken in ([`Replay::until`]).
    quiet_until: u64,
}

/// One piece of decoded output and the offset of its end, or why the output failed.
type Chunk = Result<(String, u64), String>;

/// What ended a wait for an LLM call in flight.
enum Held {
    /// More output.
    Output(Option<Chunk>),
    /// No call is in flight any more, or the hold ran out.
    Released,
}

impl Session {
    /// Spawns a reader task over `output`; every chunk also goes to `transcript`. `quiet` is how
    /// long a prompt must stand with no further output before it counts as ready (~50 ms).
    pub fn start(
        output: OutputStream,
        input: InputStream,
        transcript: mpsc::UnboundedSender<TranscriptEntry>,
        quiet: Duration,
    ) -> Session {
        Session::resume(output, input, transcript, quiet, Replay::default())
    }

    /// Like [`Session::start`], over an Aider process a runner before this one was driving:
    /// `output` is its output from the container's start, of which `replay` says what to skip.
    pub fn resume(
        output: OutputStream,
        input: InputStream,
        transcript: mpsc::UnboundedSender<TranscriptEntry>,
        quiet: Duration,
        replay: Replay,
    ) -> Session {
        let (chunks_tx, chunks) = mpsc::unbounded_channel();
        let mut replay_inputs: std::collections::VecDeque<u64> = replay
            .inputs
            .iter()
            .copied()
            .filter(|&at| at >= replay.session_from)
            .collect();
        let typed_at_start = replay_inputs.front() == Some(&replay.session_from);
        if typed_at_start {
            replay_inputs.pop_front();
        }
        tokio::spawn(read_output(
            output,
            chunks_tx,
            transcript.clone(),
            replay.clone(),
        ));
        Session {
            chunks,
            input: Some(input),
            transcript,
            quiet,
            output: HeadTail::default(),
            events: Vec::new(),
            line: String::new(),
            line_overflow: false,
            // An input typed where the replay starts has answered the prompt before it.
            fresh: !typed_at_start,
            llm_calls: None,
            hold_spent: false,
            consumed: replay.session_from,
            line_start: replay.session_from,
            replay_inputs,
            quiet_until: replay.until,
        }
    }

    /// Where the current line of Aider's output began (bytes from the container's start): at a
    /// prompt, the place of the next input. A line, because the engine's log (what a restarted
    /// runner reads back) holds complete lines only: the prompt itself is not in it until the
    /// line it starts ends.
    pub fn offset(&self) -> u64 {
        self.line_start
    }

    /// Types an empty line without marking the screen answered: an adopted Aider waiting at a
    /// prompt that was printed before the runner attached (so it was never seen) prints its
    /// prompt again; one still working reads it at its next prompt, which it also prints again.
    /// Aider ignores an empty message.
    pub async fn nudge(&mut self) -> Result<(), SessionError> {
        let Some(input) = self.input.as_mut() else {
            return Err(SessionError::Io(
                "aider's stdin is already closed".to_string(),
            ));
        };
        let written = async {
            input.write_all(b"\n").await?;
            input.flush().await
        };
        written
            .await
            .map_err(|e| SessionError::Io(format!("writing to aider's stdin: {e}")))
    }

    /// A prompt does not count while `calls` (the attempt's streamed LLM calls in flight, from
    /// [`crate::llm::Gateway::agent_calls`]) is above zero: Aider is still receiving an answer.
    pub fn watch_llm_calls(mut self, calls: watch::Receiver<usize>) -> Session {
        self.llm_calls = Some(calls);
        self
    }

    /// Waits until Aider is ready for input (its output ends in a prompt and nothing more arrives
    /// for `quiet`), answering yes/no questions by policy meanwhile (the answers are sent and
    /// transcribed as In). No timeout inside: callers wrap it in `tokio::time::timeout`; dropping
    /// the future loses no output (it stays for the next call).
    pub async fn wait_ready(&mut self) -> Result<Turn, SessionError> {
        loop {
            let chunk = match self.pending() {
                None => self.chunks.recv().await,
                Some(state) => match tokio::time::timeout(self.quiet, self.chunks.recv()).await {
                    Ok(chunk) => chunk,
                    Err(_quiet) if self.llm_answering() => match self.hold().await {
                        Held::Output(chunk) => chunk,
                        // Look again: the prompt must stand quiet once more.
                        Held::Released => continue,
                    },
                    Err(_quiet) => match self.settle(state).await? {
                        Some(turn) => return Ok(turn),
                        None => continue,
                    },
                },
            };
            match chunk {
                Some(Ok((text, end))) => self.absorb(&text, end),
                Some(Err(message)) => return Err(SessionError::Io(message)),
                None => {
                    return Err(SessionError::Exited {
                        output: self.output.take(),
                    })
                }
            }
        }
    }

    /// True while one of the attempt's LLM calls is in flight and may still hold the turn.
    fn llm_answering(&self) -> bool {
        !self.hold_spent
            && self
                .llm_calls
                .as_ref()
                .is_some_and(|calls| *calls.borrow() > 0)
    }

    /// Waits for more output, or for no LLM call in flight and then [`AFTER_CALL`] for the rest of
    /// the answer, or for [`LLM_HOLD`] to pass.
    async fn hold(&mut self) -> Held {
        let Some(calls) = self.llm_calls.as_mut() else {
            return Held::Released;
        };
        // Some(output), or None once no call is in flight, or Err when the hold ran out.
        let held = tokio::select! {
            chunk = self.chunks.recv() => Ok(Some(chunk)),
            _ = calls.wait_for(|n| *n == 0) => Ok(None),
            _ = tokio::time::sleep(LLM_HOLD) => Err(()),
        };
        match held {
            Ok(Some(chunk)) => Held::Output(chunk),
            Ok(None) => match tokio::time::timeout(AFTER_CALL, self.chunks.recv()).await {
                Ok(chunk) => Held::Output(chunk),
                Err(_) => Held::Released,
            },
            Err(()) => {
                // Calls in flight no longer hold the turn, until more output arrives.
                self.hold_spent = true;
                Held::Released
            }
        }
    }

    /// Types a message (formatted by [`parse::format_input`]) and transcribes it as In.
    pub async fn send(&mut self, message: &str) -> Result<(), SessionError> {
        self.type_text(&parse::format_input(message), Direction::In)
            .await
    }

    /// Types a person's message like [`Session::send`], transcribed as from the operator.
    pub async fn send_from_operator(&mut self, message: &str) -> Result<(), SessionError> {
        self.type_text(&parse::format_input(message), Direction::Operator)
            .await
    }

    /// Closes stdin (Aider exits 0 at its prompt on EOF); the next `wait_ready` then reports
    /// [`SessionError::Exited`] instead of the prompt that is still on screen.
    pub async fn close_input(&mut self) {
        self.fresh = false;
        if let Some(mut input) = self.input.take() {
            // Aider may already be gone; its exit shows up as the end of the output.
            let _ = input.shutdown().await;
        }
    }

    /// Acts on a prompt or question that stayed quiet: a prompt ends the turn, a question gets
    /// its answer.
    async fn settle(&mut self, state: PromptState) -> Result<Option<Turn>, SessionError> {
        match state {
            PromptState::Ready { mode } => Ok(Some(self.end_turn(mode))),
            PromptState::Question { text, default_yes } => {
                let reply = parse::answer(&text, default_yes);
                self.type_text(&format!("{reply}\n"), Direction::In).await?;
                Ok(None)
            }
            PromptState::Busy => Ok(None),
        }
    }

    /// The prompt or question the output ends with, if it may count.
    fn pending(&self) -> Option<PromptState> {
        // A replay answers nothing it replays: the runner before this one did.
        let replaying = self.consumed < self.quiet_until || !self.replay_inputs.is_empty();
        if !self.fresh || self.line_overflow || replaying {
            return None;
        }
        match parse::prompt_state(&self.line) {
            PromptState::Busy => None,
            state => Some(state),
        }
    }

    /// Takes in one chunk of output, which ends `end` bytes into Aider's output.
    fn absorb(&mut self, text: &str, end: u64) {
        self.take_in(text);
        self.consumed = self.consumed.max(end);
        if let Some(newline) = text.rfind('\n') {
            let after = (text.len() - newline - 1) as u64;
            self.line_start = self.line_start.max(end.saturating_sub(after));
        }
        // A replayed input typed here: what is on screen was answered (as in `type_text`).
        while self.replay_inputs.front().is_some_and(|&at| at <= end) {
            self.replay_inputs.pop_front();
            self.fresh = false;
            self.end_line();
        }
    }

    fn take_in(&mut self, text: &str) {
        self.hold_spent = false;
        self.output.push_str(text);
        let mut rest = text;
        while let Some(end) = rest.find('\n') {
            self.extend_line(&rest[..end]);
            self.end_line();
            self.fresh = true;
            rest = &rest[end + 1..];
        }
        self.extend_line(rest);
    }

    /// Finishes the current line: its markers are collected and a new line starts.
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let room = MAX_EVENTS.saturating_sub(self.events.len());
        self.events
            .extend(parse::events(&line).into_iter().take(room));
        self.line_overflow = false;
    }

    /// Adds text without newlines to the current line. A `\r` followed by more text starts the
    /// line over, as on a terminal (a trailing one may be half of a CRLF and is kept).
    fn extend_line(&mut self, mut text: &str) {
        if let Some(cr) = text.rfind('\r') {
            if cr + 1 < text.len() {
                self.line.clear();
                self.line_overflow = false;
                text = &text[cr + 1..];
            }
        }
        if self.line_overflow {
            return;
        }
        if self.line.len() + text.len() <= LINE_MAX {
            self.line.push_str(text);
            return;
        }
        let mut cut = LINE_MAX - self.line.len();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.line.push_str(&text[..cut]);
        self.line_overflow = true;
    }

    fn end_turn(&mut self, mode: Option<String>) -> Turn {
        Turn {
            output: self.output.take(),
            events: std::mem::take(&mut self.events),
            mode,
        }
    }

    /// Writes to Aider's stdin and transcribes it.
    async fn type_text(&mut self, text: &str, direction: Direction) -> Result<(), SessionError> {
        // Before writing: whatever is on screen now has been answered, even if the write fails.
        self.fresh = false;
        // Input is not echoed and Aider does not always print a newline after reading it (it
        // does not after answering a question), so its next output may continue the answered
        // line; on a terminal the typed newline would end it. End it here too, so a marker
        // printed next still starts a line.
        self.end_line();
        let Some(input) = self.input.as_mut() else {
            return Err(SessionError::Io(
                "aider's stdin is already closed".to_string(),
            ));
        };
        let written = async {
            input.write_all(text.as_bytes()).await?;
            input.flush().await
        };
        written
            .await
            .map_err(|e| SessionError::Io(format!("writing to aider's stdin: {e}")))?;
        let _ = self
            .transcript
            .send(entry(direction, text.to_string(), self.line_start));
        Ok(())
    }
}

fn entry(direction: Direction, text: String, offset: u64) -> TranscriptEntry {
    TranscriptEntry {
        at: crate::state::now_rfc3339(),
        direction,
        text,
        offset,
    }
}

/// Decodes Aider's output and hands each chunk to the session and the transcript, until the
/// output ends or fails, or nobody listens any more. It holds at most an incomplete UTF-8
/// sequence between chunks. Under a [`Replay`] it skips what each of them had already and cuts
/// chunks where inputs were typed, so the session sees each input's place exactly.
async fn read_output(
    mut output: OutputStream,
    chunks: mpsc::UnboundedSender<Chunk>,
    transcript: mpsc::UnboundedSender<TranscriptEntry>,
    replay: Replay,
) {
    let mut decoder = Utf8Decoder::default();
    let mut cuts: Vec<u64> = [replay.session_from, replay.transcript_from]
        .into_iter()
        .chain(replay.inputs.iter().copied())
        .filter(|&at| at > 0)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    // Bytes read so far.
    let mut read: u64 = 0;
    let forward = |text: String, start: u64, end: u64| {
        if start >= replay.transcript_from {
            let _ = transcript.send(entry(Direction::Out, text.clone(), end));
        }
        if start < replay.session_from {
            return !transcript.is_closed() || !chunks.is_closed();
        }
        let to_session = chunks.send(Ok((text, end)));
        to_session.is_ok() || !transcript.is_closed()
    };
    while let Some(item) = output.next().await {
        let bytes = match item {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = chunks.send(Err(format!("reading aider's output: {e}")));
                return;
            }
        };
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let start = read;
            let room = cuts
                .iter()
                .find(|&&cut| cut > start)
                .map_or(rest.len(), |&cut| ((cut - start) as usize).min(rest.len()));
            let (piece, after) = rest.split_at(room);
            rest = after;
            read += piece.len() as u64;
            let text = decoder.decode(piece);
            let end = read - decoder.pending.len() as u64;
            if !text.is_empty() && !forward(text, start, end) {
                return;
            }
        }
    }
    let rest = decoder.finish();
    if !rest.is_empty() {
        forward(rest, read, read);
    }
}

/// UTF-8 decoding across chunk boundaries: a sequence split between two chunks is completed
/// with the next one; invalid bytes become U+FFFD.
#[derive(Default)]
struct Utf8Decoder {
    /// The start of a sequence the last chunk ended in the middle of (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Decoder {
    fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("checked valid"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// What is left when the output ends: an incomplete sequence, as U+FFFD.
    fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::parse::tests::recorded::edit_events;
    use crate::sandbox::SandboxError;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::time::{sleep, timeout, Instant};

    const QUIET: Duration = Duration::from_millis(50);
    /// How long a test watches a session that must not become ready (several quiet periods).
    /// The tests run on paused time: waits take no real time and timings are exact.
    const NOT_READY: Duration = Duration::from_millis(300);

    /// A session over in-memory stdio, and the test's ends of it.
    struct Harness {
        session: Session,
        /// Feeds Aider's output.
        out: mpsc::UnboundedSender<Result<Bytes, SandboxError>>,
        /// Reads what the session typed.
        stdin: DuplexStream,
        transcript: mpsc::UnboundedReceiver<TranscriptEntry>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness::build(None)
        }

        /// A session that also watches an attempt's LLM calls in flight.
        fn watching(calls: watch::Receiver<usize>) -> Harness {
            Harness::build(Some(calls))
        }

        fn build(calls: Option<watch::Receiver<usize>>) -> Harness {
            Harness::replaying(calls, Replay::default())
        }

        fn replaying(calls: Option<watch::Receiver<usize>>, replay: Replay) -> Harness {
            let (out, mut rx) = mpsc::unbounded_channel::<Result<Bytes, SandboxError>>();
            let output: OutputStream =
                futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
            let (ours, stdin) = tokio::io::duplex(64 * 1024);
            let (transcript_tx, transcript) = mpsc::unbounded_channel();
            let mut session = Session::resume(output, Box::pin(ours), transcript_tx, QUIET, replay);
            if let Some(calls) = calls {
                session = session.watch_llm_calls(calls);
            }
            Harness {
                session,
                out,
                stdin,
                transcript,
            }
        }

        fn print(&self, text: &str) {
            self.print_bytes(text.as_bytes());
        }

        fn print_bytes(&self, bytes: &[u8]) {
            self.out
                .send(Ok(Bytes::copy_from_slice(bytes)))
                .expect("session reader alive");
        }

        /// Everything typed so far (waits briefly for it to arrive).
        async fn typed(&mut self) -> String {
            let mut buf = vec![0; 64 * 1024];
            let mut typed = Vec::new();
            while let Ok(Ok(n)) = timeout(Duration::from_millis(1), self.stdin.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                typed.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(typed).unwrap()
        }

        fn transcript(&mut self) -> Vec<TranscriptEntry> {
            let mut entries = Vec::new();
            while let Ok(entry) = self.transcript.try_recv() {
                entries.push(entry);
            }
            entries
        }
    }

    /// What an Aider session printed before a restart: the start, turn 1 (typed at `typed[0]`,
    /// with a question the runner answered, and its prompt), and turn 2 typed at `typed[1]`
    /// (an instruction; Aider is still answering).
    fn printed_before_a_restart() -> (String, [u64; 2]) {
        let start = "Aider v0.86.2\n> ";
        let turn1 =
            "\nhello.py\nCreate new file? (Y)es/(N)o [Yes]: y\nApplied edit to hello.py\n> ";
        let turn2 = "\nEditing greet.py\n";
        // Inputs are placed at the start of the prompt's line (`> ` is not in the engine's log
        // until Aider ends that line).
        let typed = [
            start.len() as u64 - 2,
            (start.len() + turn1.len()) as u64 - 2,
        ];
        (format!("{start}{turn1}{turn2}"), typed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_replayed_session_answers_nothing_again_and_its_turn_ends_at_the_next_prompt() {
        let (before, typed) = printed_before_a_restart();
        // The manager has seen everything up to turn 2; the transcript holds all but the end.
        let replay = Replay {
            session_from: typed[1],
            transcript_from: before.len() as u64 - 4,
            inputs: vec![typed[1]],
            until: before.len() as u64,
        };
        let mut h = Harness::replaying(None, replay);
        // The engine's log, from the container's start, in pieces that straddle the offsets.
        for piece in before.as_bytes().chunks(7) {
            h.print_bytes(piece);
        }
        sleep(NOT_READY).await;
        assert_eq!(
            h.typed().await,
            "",
            "a replayed question is not answered again"
        );
        h.print("Applied edit to greet.py\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(
            turn.output, "> \nEditing greet.py\nApplied edit to greet.py\n> ",
            "the turn in flight, and nothing the manager saw before"
        );
        assert_eq!(
            turn.events,
            vec![AiderEvent::AppliedEdit("greet.py".into())]
        );
        let transcribed: String = h.transcript().into_iter().map(|e| e.text).collect();
        assert_eq!(transcribed, ".py\nApplied edit to greet.py\n> ");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replayed_session_waits_at_the_prompt_of_an_input_that_never_arrived_until_it_is_typed(
    ) {
        let (before, typed) = printed_before_a_restart();
        // Turn 2 was recorded but the runner stopped before typing it: the log ends at its
        // place, at turn 1's prompt.
        let before = &before[..typed[1] as usize];
        let replay = Replay {
            session_from: typed[0],
            transcript_from: before.len() as u64,
            inputs: vec![typed[0], typed[1]],
            until: before.len() as u64,
        };
        let mut h = Harness::replaying(None, replay);
        h.print(before);
        assert!(
            timeout(NOT_READY, h.session.wait_ready()).await.is_err(),
            "the prompt on screen was answered by the input recorded there"
        );
        assert_eq!(h.session.offset(), typed[1]);
        h.session.send("greet in greet.py").await.unwrap();
        assert_eq!(h.typed().await, "greet in greet.py\n");
        h.print("\nApplied edit to greet.py\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert!(
            turn.output.starts_with("> \nhello.py\n"),
            "{:?}",
            turn.output
        );
        assert!(turn.output.ends_with("Applied edit to greet.py\n> "));
        let entries = h.transcript();
        assert_eq!(entries[0].direction, Direction::In);
        assert_eq!(entries[0].offset, typed[1]);
        assert_eq!(entries.last().unwrap().offset, before.len() as u64 + 28);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_when_a_prompt_split_across_chunks_stays_quiet() {
        let mut h = Harness::new();
        for chunk in ["Aider v0.86.2\r", "\nModel: openai/mock\r\n\r\n", ">", " "] {
            h.print(chunk);
        }
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "Aider v0.86.2\r\nModel: openai/mock\r\n\r\n> ");
        assert_eq!(turn.mode, None);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_reports_the_mode_prefix() {
        let mut h = Harness::new();
        h.print("\nhello.py\ndi");
        h.print("ff> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.mode.as_deref(), Some("diff"));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_only_after_the_quiet_period() {
        let mut h = Harness::new();
        let out = h.out.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            out.send(Ok(Bytes::from_static(b"> "))).unwrap();
            sleep(Duration::from_millis(30)).await;
            // More output within the quiet period: the prompt above was not the end.
            out.send(Ok(Bytes::from_static(b"\nstill working\n> ")))
                .unwrap();
            // Keep the output open.
            sleep(Duration::from_secs(3600)).await;
        });
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "> \nstill working\n> ");
        assert_eq!(started.elapsed(), Duration::from_millis(30) + QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn prompt_followed_by_more_output_is_not_ready() {
        let mut h = Harness::new();
        h.print("> ");
        h.print("quoted text from the model\n");
        let waiting = timeout(NOT_READY, h.session.wait_ready()).await;
        assert!(waiting.is_err(), "no prompt at the end: still busy");
        h.print("\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "> quoted text from the model\n\n> ");
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_paused_mid_answer_waits_for_the_llm_call_to_end() {
        let (calls, watched) = watch::channel(1usize);
        let mut h = Harness::watching(watched);
        let started = Instant::now();
        h.print("Plan:\n> ");
        let waiting = timeout(Duration::from_secs(5), h.session.wait_ready()).await;
        assert!(
            waiting.is_err(),
            "a call in flight: the quote is not the prompt"
        );
        h.print("quoted remark\n\n> ");
        tokio::spawn(async move {
            sleep(Duration::from_secs(1)).await;
            calls.send_replace(0);
        });
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "Plan:\n> quoted remark\n\n> ");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(6) + AFTER_CALL + QUIET,
            "ready once the call ended and no more output came"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rest_of_an_answer_printed_just_after_the_call_ends_is_waited_for() {
        let (calls, watched) = watch::channel(1usize);
        let mut h = Harness::watching(watched);
        h.print("Plan:\n> ");
        let out = h.out.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(1)).await;
            calls.send_replace(0);
            // Aider prints the end of the answer a little after the stream ended.
            sleep(Duration::from_millis(300)).await;
            out.send(Ok(Bytes::from_static(
                b"quoted remark\n\nTokens: 1k sent, 9 received.\n\n> ",
            )))
            .unwrap();
            sleep(Duration::from_secs(3600)).await;
        });
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(
            turn.output,
            "Plan:\n> quoted remark\n\nTokens: 1k sent, 9 received.\n\n> "
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_holds_a_quiet_prompt_for_at_most_the_llm_hold() {
        let (_calls, watched) = watch::channel(1usize);
        let mut h = Harness::watching(watched);
        let started = Instant::now();
        h.print("\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "\n> ");
        assert_eq!(started.elapsed(), QUIET + LLM_HOLD + QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn question_with_yes_default_is_answered_yes_once() {
        let mut h = Harness::new();
        h.print("hello.py\nCreate new file? (Y)es/(N)o [Yes]: ");
        let waiting = timeout(NOT_READY, h.session.wait_ready()).await;
        assert!(waiting.is_err(), "a question is not readiness");
        assert_eq!(h.typed().await, "y\n");
        h.print("Applied edit to hello.py\n\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(
            turn.events,
            vec![AiderEvent::AppliedEdit("hello.py".into())]
        );
        assert_eq!(h.typed().await, "", "answered once only");
        let typed: Vec<_> = h
            .transcript()
            .into_iter()
            .filter(|e| e.direction == Direction::In)
            .map(|e| e.text)
            .collect();
        assert_eq!(typed, vec!["y\n"]);
    }

    #[tokio::test(start_paused = true)]
    async fn suggested_shell_command_is_declined() {
        let mut h = Harness::new();
        h.print("\npython3 hello.py\n");
        h.print("Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ");
        h.print("\n\n> ");
        // The question above was followed by more output: it is not answered.
        h.session.wait_ready().await.unwrap();
        assert_eq!(h.typed().await, "");

        h.print("Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ");
        let _ = timeout(NOT_READY, h.session.wait_ready()).await;
        assert_eq!(h.typed().await, "n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn question_with_no_default_is_answered_no() {
        let mut h = Harness::new();
        h.print("Fix lint errors in a.py? (Y)es/(N)o [No]: ");
        let _ = timeout(NOT_READY, h.session.wait_ready()).await;
        assert_eq!(h.typed().await, "n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn crash_report_is_declined_then_exit_is_reported() {
        let mut h = Harness::new();
        h.print("Traceback ...\nOpen a GitHub Issue pre-filled with the above error in your browser? (Y/n) ");
        let _ = timeout(NOT_READY, h.session.wait_ready()).await;
        assert_eq!(h.typed().await, "n\n");
        drop(h.out);
        match h.session.wait_ready().await {
            Err(SessionError::Exited { output }) => assert!(output.starts_with("Traceback")),
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn multi_line_message_continuation_prompts_are_not_ready() {
        let mut h = Harness::new();
        h.print("\n> ");
        h.session.wait_ready().await.unwrap();

        h.session.send("first\nsecond").await.unwrap();
        assert_eq!(h.typed().await, "{runner\nfirst\nsecond\nrunner}\n");
        let out = h.out.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            // One prompt per continuation line, each well after the quiet period.
            for _ in 0..3 {
                sleep(3 * QUIET).await;
                out.send(Ok(Bytes::from_static(b"> "))).unwrap();
            }
            sleep(3 * QUIET).await;
            out.send(Ok(Bytes::from_static(b"\n"))).unwrap();
            sleep(3 * QUIET).await;
            out.send(Ok(Bytes::from_static(b"Applied edit to a.py\n\n> ")))
                .unwrap();
            sleep(Duration::from_secs(3600)).await;
        });
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "> > > \nApplied edit to a.py\n\n> ");
        assert_eq!(started.elapsed(), 15 * QUIET + QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn the_prompt_just_answered_is_not_ready_again() {
        let mut h = Harness::new();
        h.print("> ");
        h.session.wait_ready().await.unwrap();
        h.session.send("do it").await.unwrap();
        let waiting = timeout(NOT_READY, h.session.wait_ready()).await;
        assert!(waiting.is_err(), "stale prompt taken for readiness");
    }

    #[tokio::test(start_paused = true)]
    async fn each_turn_has_only_its_own_output_and_events() {
        let mut h = Harness::new();
        h.print("Applied edit to a.py\n> ");
        let first = h.session.wait_ready().await.unwrap();
        assert_eq!(first.events.len(), 1);
        h.session.send("again").await.unwrap();
        h.print("\nTokens: 5 sent, 6 received.\n\n> ");
        let second = h.session.wait_ready().await.unwrap();
        assert_eq!(second.output, "\nTokens: 5 sent, 6 received.\n\n> ");
        assert_eq!(
            second.events,
            vec![AiderEvent::Tokens {
                sent: "5".into(),
                received: "6".into()
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn end_of_output_is_exited_with_the_output() {
        let mut h = Harness::new();
        h.print("partial");
        drop(h.out);
        match h.session.wait_ready().await {
            Err(SessionError::Exited { output }) => assert_eq!(output, "partial"),
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_output_stream_is_an_io_error() {
        let mut h = Harness::new();
        h.out
            .send(Err(SandboxError::Engine("attach lost".into())))
            .unwrap();
        match h.session.wait_ready().await {
            Err(SessionError::Io(message)) => assert!(message.contains("attach lost")),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_input_sends_eof_and_waits_for_the_exit() {
        let mut h = Harness::new();
        h.print("> ");
        h.session.wait_ready().await.unwrap();
        h.session.close_input().await;
        let mut rest = Vec::new();
        h.stdin.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let waiting = timeout(NOT_READY, h.session.wait_ready()).await;
        assert!(waiting.is_err(), "the prompt before EOF is not readiness");
        drop(h.out);
        assert!(matches!(
            h.session.wait_ready().await,
            Err(SessionError::Exited { .. })
        ));
        assert!(matches!(
            h.session.send("late").await,
            Err(SessionError::Io(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn transcript_has_every_chunk_and_every_typed_line_in_order() {
        let mut h = Harness::new();
        h.print("> ");
        h.session.wait_ready().await.unwrap();
        h.session.send("hi").await.unwrap();
        h.print("\n");
        let entries = h.transcript();
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (e.direction, e.text.as_str()))
            .collect();
        assert_eq!(seen, vec![(Direction::Out, "> "), (Direction::In, "hi\n")]);
        assert!(entries.iter().all(|e| e.at.ends_with('Z')));
        // The "\n" printed after the send arrives in the transcript too.
        let _ = timeout(Duration::from_millis(10), h.session.wait_ready()).await;
        assert_eq!(h.transcript()[0].text, "\n");
    }

    #[tokio::test(start_paused = true)]
    async fn utf8_split_across_chunks_is_decoded_whole() {
        let mut h = Harness::new();
        let text = "café ✓\n> ".as_bytes();
        h.print_bytes(&text[..4]);
        h.print_bytes(&text[4..8]);
        h.print_bytes(&text[8..]);
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output, "café ✓\n> ");
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_line_is_not_a_prompt_and_keeps_memory_bounded() {
        let mut h = Harness::new();
        let long = "x".repeat(3 * LINE_MAX);
        h.print(&long);
        h.print("> ");
        let waiting = timeout(NOT_READY, h.session.wait_ready()).await;
        assert!(waiting.is_err());
        assert!(h.session.line.len() <= LINE_MAX);
        h.print("\n> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.output.len(), long.len() + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn reaction_to_a_ready_prompt_is_within_the_quiet_period() {
        let mut h = Harness::new();
        h.print("Tokens: 1 sent, 1 received.\n\n> ");
        let started = Instant::now();
        h.session.wait_ready().await.unwrap();
        assert_eq!(started.elapsed(), QUIET);
    }

    /// Plays recorded Aider output the way Aider produced it: the output up to each point where
    /// Aider waits for input, then (once the session typed a whole message or answer) the next
    /// part; the end of stdin ends the output. Returns what was typed, message by message.
    async fn replay(
        recorded: &'static str,
        out: mpsc::UnboundedSender<Result<Bytes, SandboxError>>,
        mut stdin: DuplexStream,
    ) -> Vec<String> {
        let stops: Vec<usize> = (1..=recorded.len())
            .filter(|&end| recorded.is_char_boundary(end) && recorded[..end].ends_with(' '))
            .filter(|&end| parse::prompt_state(&recorded[..end]) != PromptState::Busy)
            .collect();
        let mut typed = Vec::new();
        let mut from = 0;
        let mut pending = Vec::new();
        for stop in stops {
            // Arbitrary chunking, prompts and questions split included.
            for chunk in recorded.as_bytes()[from..stop].chunks(5) {
                out.send(Ok(Bytes::copy_from_slice(chunk))).unwrap();
            }
            from = stop;
            // Read one message: a line, or a `{tag` ... `tag}` block.
            let mut message = String::new();
            let mut closing: Option<String> = None;
            loop {
                let line = loop {
                    if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        break Some(String::from_utf8(line).unwrap());
                    }
                    let mut buf = [0; 1024];
                    match stdin.read(&mut buf).await.unwrap() {
                        0 => break None,
                        n => pending.extend_from_slice(&buf[..n]),
                    }
                };
                let Some(line) = line else {
                    return typed;
                };
                message.push_str(&line);
                let bare = line.trim_end_matches('\n');
                match &closing {
                    None if bare.starts_with('{') => closing = Some(format!("{}}}", &bare[1..])),
                    Some(end) if bare != end.as_str() => {}
                    _ => break,
                }
            }
            typed.push(message);
        }
        // After the last input: the rest (a crash's traceback), then the end of the output.
        for chunk in recorded.as_bytes()[from..].chunks(5) {
            out.send(Ok(Bytes::copy_from_slice(chunk))).unwrap();
        }
        typed
    }

    /// Drives a session over a replayed recording: each input at a prompt, then EOF. Returns
    /// the turns, what was typed, and the output after the last turn.
    async fn drive(recorded: &'static str, inputs: &[&str]) -> (Vec<Turn>, Vec<String>, String) {
        let Harness {
            mut session,
            out,
            stdin,
            transcript: _transcript,
        } = Harness::new();
        let aider = tokio::spawn(replay(recorded, out, stdin));
        let mut inputs = inputs.iter();
        let mut turns = Vec::new();
        let rest = loop {
            match timeout(Duration::from_secs(10), session.wait_ready()).await {
                Ok(Ok(turn)) => {
                    turns.push(turn);
                    match inputs.next() {
                        Some(input) => session.send(input).await.unwrap(),
                        None => session.close_input().await,
                    }
                }
                Ok(Err(SessionError::Exited { output })) => break output,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => panic!("stuck after {} turns", turns.len()),
            }
        };
        (turns, aider.await.unwrap(), rest)
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_session_one_instruction_then_eof() {
        let recorded = include_str!("../../tests/fixtures/aider/create-file.txt");
        let message = "Create hello.py with a hello() function";
        let (turns, typed, rest) = drive(recorded, &[message]).await;
        assert_eq!(turns.len(), 2);
        assert!(turns[0].output.contains("Aider v0.86.2"));
        assert!(turns[0].output.ends_with("\n> "));
        assert_eq!(turns[0].events, vec![]);
        assert_eq!(
            turns[1].events,
            edit_events("2.3k", "32", 0.0024, "d4eae3d")
        );
        assert!(turns[1].output.ends_with("hello.py\n> "));
        assert_eq!(format!("{}{}", turns[0].output, turns[1].output), recorded);
        assert_eq!(typed, vec![format!("{message}\n")]);
        assert_eq!(rest, "");
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_session_with_the_diff_prompt() {
        let recorded = include_str!("../../tests/fixtures/aider/create-file-diff-prompt.txt");
        let (turns, _, _) = drive(recorded, &["Create hello.py with a hello() function"]).await;
        let modes: Vec<_> = turns.iter().map(|t| t.mode.as_deref()).collect();
        assert_eq!(modes, vec![Some("diff"), Some("diff")]);
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_multi_line_message_is_one_turn() {
        let recorded = include_str!("../../tests/fixtures/aider/multi-line.txt");
        let message = "Create hello.py\n\nwith a hello() function";
        let (turns, typed, _) = drive(recorded, &[message]).await;
        assert_eq!(turns.len(), 2, "continuation prompts are not turns");
        assert!(turns[1].output.starts_with("> > > > \n"));
        assert_eq!(
            turns[1].events,
            edit_events("2.3k", "32", 0.0024, "10546e3")
        );
        assert_eq!(
            typed,
            vec!["{runner\nCreate hello.py\n\nwith a hello() function\nrunner}\n"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_questions_are_answered_by_policy_and_markers_after_them_found() {
        let recorded = include_str!("../../tests/fixtures/aider/shell-question.txt");
        let message = "Create hello.py with a hello() function and show how to run it";
        let (turns, typed, _) = drive(recorded, &[message]).await;
        assert_eq!(
            typed,
            vec![format!("{message}\n"), "y\n".into(), "n\n".into()]
        );
        assert_eq!(turns.len(), 2);
        // "Applied edit to hello.py" follows the answered question on the same output line.
        assert_eq!(
            turns[1].events,
            edit_events("2.4k", "56", 0.0025, "6623db5")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_commands_each_end_a_turn() {
        let recorded = include_str!("../../tests/fixtures/aider/commands.txt");
        let (turns, typed, _) = drive(recorded, &["/run echo hello", "/add hello.py"]).await;
        assert_eq!(turns.len(), 3);
        assert_eq!(typed, vec!["/run echo hello\n", "/add hello.py\n"]);
        assert!(turns[1]
            .output
            .contains("Added 1 line of output to the chat."));
        assert!(turns[2].output.contains("Added hello.py to the chat"));
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_crash_report_is_declined_and_the_exit_reported() {
        let recorded = include_str!("../../tests/fixtures/aider/crash.txt");
        let inputs = [
            "/run rm -rf /tmp/r",
            "Create hello.py with a hello() function",
        ];
        let (turns, typed, rest) = drive(recorded, &inputs).await;
        assert_eq!(turns.len(), 2);
        assert_eq!(typed.last().map(String::as_str), Some("n\n"));
        assert!(rest.contains("# Uncaught FileNotFoundError"));
        assert!(rest.ends_with("FileNotFoundError: [Errno 2] No such file or directory\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn one_turn_printing_400_mb_keeps_the_session_buffer_bounded() {
        use crate::agent::bounded::{HEAD, TAIL};
        let Harness {
            mut session,
            out,
            stdin: _stdin,
            transcript,
        } = Harness::new();
        // Nobody keeps the transcript here (the real writer caps what it stores).
        drop(transcript);
        // 400 chunks of 1 MiB (one shared buffer), in lines of 4 KiB, no prompt among them.
        let line = format!("{}\n", "x".repeat(4095));
        let chunk = Bytes::from(line.repeat(256));
        out.send(Ok(Bytes::from_static(b"first words\n"))).unwrap();
        for _ in 0..400 {
            out.send(Ok(chunk.clone())).unwrap();
        }
        let flooded = timeout(NOT_READY, session.wait_ready()).await;
        assert!(flooded.is_err(), "no prompt yet");
        assert!(
            session.output.held() <= HEAD + 2 * TAIL,
            "{} bytes held",
            session.output.held()
        );
        out.send(Ok(Bytes::from_static(b"last words\n> "))).unwrap();
        let turn = session.wait_ready().await.unwrap();
        assert!(
            turn.output.len() <= HEAD + TAIL + 100,
            "{}",
            turn.output.len()
        );
        assert!(turn.output.starts_with("first words\nxxx"));
        // The tail the manager reads: the end of the output, prompt included.
        assert!(turn.output.ends_with("xxxx\nlast words\n> "));
        assert!(turn.output.contains("bytes of output cut here]"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_of_endless_marker_lines_keeps_a_bounded_list_of_markers() {
        let mut h = Harness::new();
        h.print(&"Applied edit to f.py\n".repeat(50_000));
        h.print("> ");
        let turn = h.session.wait_ready().await.unwrap();
        assert_eq!(turn.events.len(), MAX_EVENTS);
    }

    #[test]
    fn decoder_replaces_invalid_bytes_and_flushes_an_incomplete_tail() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.decode(b"a\xffb\xe2\x9c"), "a\u{fffd}b");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
