//! The transcript of an Aider session, written to the attempt's log and to the store.
//!
//! Aider's output is one stream, redacted by one [`Redactor`] that holds back the bytes that may
//! start a secret; the log and the stored rows both take what it lets through, so a secret
//! printed in two writes is redacted in both. What the runner types ends the output before it:
//! the held bytes are settled then, and at the end.

use super::logfile::CappedLog;
use super::redact::Redactor;
use crate::agent::session::{Direction, TranscriptEntry};
use crate::state::JobId;
use crate::store::SharedStore;
use std::path::PathBuf;
use std::time::Duration;

/// Where an attempt's transcript goes.
pub struct Target {
    /// The attempt's log file.
    pub path: PathBuf,
    /// Cap of the log (head and tail) and of the stored rows.
    pub cap: u64,
    pub store: SharedStore,
    pub job: JobId,
    pub attempt: u32,
    /// An adopted attempt: the log is written again from the stored rows, then continued.
    pub resume: bool,
}

/// Writes the transcript to the attempt's log (input marked `» `, a person's `» [operator] `) and, timestamped, to the store.
/// Each batch of stored rows also records how much of Aider's output they hold (what an
/// adopting scheduler need not transcribe again). Typed input is stored at once.
pub async fn write_transcript(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<TranscriptEntry>,
    target: Target,
    redactor: Redactor,
) -> bool {
    let Target {
        path,
        cap,
        store,
        job,
        attempt,
        resume,
    } = target;
    let mut output = redactor.fresh();
    let log = match CappedLog::create(&path, cap).await {
        Ok(log) => log,
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot write transcript: {e}");
            return false;
        }
    };
    let mut sink = Sink {
        log,
        cap,
        batch: Vec::new(),
        stored: 0,
        capped: false,
    };
    if resume {
        let (id, n) = (job.clone(), attempt);
        match store.call(move |s| s.transcript(&id, n)).await {
            Ok(rows) => sink.render(rows).await,
            Err(e) => tracing::warn!(job = %job, "cannot read the stored transcript: {e}"),
        }
    }
    // Where the last complete line written ends: an adopting runner continues from a line,
    // because the engine's log it reads back holds complete lines only.
    let mut line_end = 0u64;
    loop {
        let entry = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let done = matches!(entry, Ok(None));
        let idle = entry.is_err();
        let mut typed = false;
        if let Ok(Some(entry)) = entry {
            let text = match entry.direction {
                Direction::Out => {
                    let text = lossy(output.push(entry.text.as_bytes()));
                    // What the redactor holds back is not written yet.
                    let written = entry.offset.saturating_sub(output.held() as u64);
                    let start = entry.offset.saturating_sub(entry.text.len() as u64);
                    let mut ends = entry
                        .text
                        .match_indices('\n')
                        .map(|(i, _)| start + i as u64 + 1);
                    if let Some(end) = ends.rfind(|&end| end <= written) {
                        line_end = line_end.max(end);
                    }
                    text
                }
                Direction::In | Direction::Operator => {
                    typed = true;
                    let held = lossy(output.finish());
                    sink.record(Direction::Out, entry.at.clone(), held).await;
                    redactor.redact_str(&entry.text)
                }
            };
            sink.record(entry.direction, entry.at, text).await;
        }
        if done {
            let held = lossy(output.finish());
            sink.record(Direction::Out, crate::state::now_rfc3339(), held)
                .await;
        }
        if (done || idle || typed || sink.batch.len() >= 64) && !sink.batch.is_empty() {
            let rows = std::mem::take(&mut sink.batch);
            let job = job.clone();
            let offset = line_end;
            if let Err(e) = store
                .call(move |s| s.add_transcript(&job, attempt, &rows, offset))
                .await
            {
                tracing::warn!("cannot store the transcript: {e}");
            }
        }
        if done {
            break;
        }
    }
    sink.log.finish().await.is_ok()
}

/// Where redacted transcript text goes: the log, and rows waiting to be stored.
struct Sink {
    log: CappedLog,
    cap: u64,
    /// Rows (at, direction, text) not stored yet.
    batch: Vec<(String, String, String)>,
    /// Bytes given to the store so far. The stored transcript is capped like the log: past the
    /// cap only the log file (head and tail) keeps the rest.
    stored: u64,
    capped: bool,
}

impl Sink {
    /// Writes rows stored before (by the runner that drove the attempt before a restart) to
    /// the log, counting them against the cap, without storing them again.
    async fn render(&mut self, rows: Vec<(String, String, String)>) {
        for (_, dir, text) in rows {
            let direction = match dir.as_str() {
                "in" => Direction::In,
                "operator" => Direction::Operator,
                _ => Direction::Out,
            };
            let _ = self.log.write(render(direction, &text).as_bytes()).await;
            self.stored += text.len() as u64;
        }
        self.capped = self.stored > self.cap;
    }

    async fn record(&mut self, direction: Direction, at: String, text: String) {
        if text.is_empty() {
            return;
        }
        let dir = match direction {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Operator => "operator",
        };
        let rendered = render(direction, &text);
        let _ = self.log.write(rendered.as_bytes()).await;
        self.stored += text.len() as u64;
        if self.stored <= self.cap {
            self.batch.push((at, dir.to_string(), text));
        } else if !self.capped {
            self.capped = true;
            let cap = self.cap;
            self.batch.push((
                at,
                dir.to_string(),
                format!("[runner: transcript cut at {cap} bytes; the log keeps the tail]"),
            ));
        }
    }
}

/// How a transcript entry reads in the log: typed input marked `» `, a person's `» [operator] `.
fn render(direction: Direction, text: &str) -> String {
    match direction {
        Direction::Out => text.to_string(),
        Direction::In => text.lines().map(|l| format!("» {l}\n")).collect(),
        Direction::Operator => text
            .lines()
            .map(|l| format!("» [operator] {l}\n"))
            .collect(),
    }
}

/// The redactor passes whole UTF-8 sequences of its valid UTF-8 input.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::session::TranscriptEntry;
    use crate::store::Store;
    use base64::Engine;

    const SECRET: &str = "tr4nscript-secret-91";

    fn out(text: &str) -> TranscriptEntry {
        TranscriptEntry {
            at: crate::state::now_rfc3339(),
            direction: Direction::Out,
            text: text.into(),
            offset: 0,
        }
    }

    /// Runs the writer over `chunks` (each sent after a pause longer than the writer's idle
    /// flush) with a real store; returns the stored rows' text and the log.
    async fn transcribe(chunks: Vec<TranscriptEntry>) -> (Vec<(String, String)>, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = crate::store::tests_support::submit_one(&mut store, "t");
        let store = SharedStore::new(store);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let path = dir.path().join("1.log");
        let secrets = Redactor::new([("TOKEN", SECRET)]);
        let target = Target {
            path: path.clone(),
            cap: 1 << 20,
            store: store.clone(),
            job: id.clone(),
            attempt: 1,
            resume: false,
        };
        let writer = tokio::spawn(write_transcript(rx, target, secrets));
        for chunk in chunks {
            tx.send(chunk).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        drop(tx);
        assert!(writer.await.unwrap());
        let rows = store
            .call(move |s| s.transcript(&id, 1))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, dir, text)| (dir, text))
            .collect();
        (rows, std::fs::read_to_string(&path).unwrap())
    }

    #[tokio::test]
    async fn a_secret_printed_in_two_writes_is_redacted_in_every_stored_row_and_the_log() {
        let (first, second) = SECRET.split_at(7);
        let (rows, log) = transcribe(vec![
            out(&format!("key: {first}")),
            out(&format!("{second} end\n")),
            TranscriptEntry {
                direction: Direction::In,
                ..out(&format!("echo {SECRET}\n"))
            },
            out("> "),
        ])
        .await;
        let all: String = rows.iter().map(|(_, t)| t.as_str()).collect();
        for (_, text) in &rows {
            assert!(!text.contains(first) && !text.contains(second), "{rows:?}");
        }
        assert_eq!(all, "key: [redacted TOKEN] end\necho [redacted TOKEN]\n> ");
        assert_eq!(
            log,
            "key: [redacted TOKEN] end\n» echo [redacted TOKEN]\n> "
        );
        assert_eq!(rows[rows.len() - 2].0, "in");
    }

    #[tokio::test]
    async fn a_secret_printed_as_base64_in_pieces_is_redacted_in_the_rows() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("x{SECRET}"));
        let (first, second) = encoded.split_at(10);
        let (rows, log) = transcribe(vec![out(first), out(second), out("\n")]).await;
        let all: String = rows.iter().map(|(_, t)| t.as_str()).collect();
        assert!(all.contains("[redacted TOKEN base64]"), "{rows:?}");
        assert!(!all.contains(&encoded[3..20]), "{rows:?}");
        assert_eq!(all, log);
    }
}
