//! The transcript of an Aider session, written to the attempt's log and to the store.

use crate::agent::session::{Direction, TranscriptEntry};
use crate::sandbox::Secret;
use crate::scheduler::logfile::CappedLog;
use crate::state::JobId;
use crate::store::SharedStore;
use std::path::PathBuf;
use std::time::Duration;

/// Writes the transcript to the attempt's log (input marked `» `) and, timestamped, to the store.
pub async fn write_transcript(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<TranscriptEntry>,
    path: PathBuf,
    cap: u64,
    store: SharedStore,
    job: JobId,
    attempt: u32,
    secrets: Vec<(String, Secret)>,
) -> bool {
    let redact = || crate::scheduler::redactor(&secrets);
    let mut log = match CappedLog::create(&path, cap).await {
        Ok(log) => log.redacting(redact()),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot write transcript: {e}");
            return false;
        }
    };
    let mut batch: Vec<TranscriptEntry> = Vec::new();
    // The stored transcript is capped like the log: past the cap only the log file (head and
    // tail) keeps the rest.
    let mut stored: u64 = 0;
    let mut capped = false;
    loop {
        let entry = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let done = matches!(entry, Ok(None));
        let idle = entry.is_err();
        if let Ok(Some(entry)) = entry {
            let rendered = match entry.direction {
                Direction::Out => entry.text.clone(),
                Direction::In => entry.text.lines().map(|l| format!("» {l}\n")).collect(),
            };
            let _ = log.write(rendered.as_bytes()).await;
            stored += entry.text.len() as u64;
            if stored <= cap {
                batch.push(entry);
            } else if !capped {
                capped = true;
                batch.push(TranscriptEntry {
                    at: entry.at,
                    direction: entry.direction,
                    text: format!(
                        "[runner: transcript cut at {cap} bytes; the log keeps the tail]"
                    ),
                });
            }
        }
        if (done || idle || batch.len() >= 64) && !batch.is_empty() {
            let rows: Vec<(String, String, String)> = batch
                .drain(..)
                .map(|e| {
                    let dir = match e.direction {
                        Direction::Out => "out",
                        Direction::In => "in",
                    };
                    let mut r = redact();
                    let mut text = r.push(e.text.as_bytes());
                    text.extend(r.finish());
                    (
                        e.at,
                        dir.to_string(),
                        String::from_utf8_lossy(&text).into_owned(),
                    )
                })
                .collect();
            let job = job.clone();
            if let Err(e) = store
                .call(move |s| s.add_transcript(&job, attempt, &rows))
                .await
            {
                tracing::warn!("cannot store the transcript: {e}");
            }
        }
        if done {
            break;
        }
    }
    log.finish().await.is_ok()
}
