//! One watcher of the store for every live stream the server sends (the API's event streams, the
//! pages' `/live/...` streams). A thread with its own connection asks SQLite every [`TICK`]
//! whether another connection has written (`PRAGMA data_version`, no table read); when one has,
//! it reads the new events and transcript rows once, by their global `seq`, and broadcasts them.
//! Each stream subscribes, reads its own backlog from the store, then filters the broadcasts:
//! fifty people watching cost one query per change, not fifty polls per tick.
//!
//! No row is missed: a stream subscribes before it reads its backlog, and the watcher's cursor
//! only moves forward (while nobody listens it follows the newest rows without reading them),
//! so a row is either in the backlog, in a broadcast, or both (streams drop what they have
//! sent by `seq`). A stream that falls behind the broadcast ([`CAPACITY`] batches) rereads from
//! the store.

use crate::state::JobId;
use crate::store::{EventBody, EventRecord, SharedStore, Store, TranscriptRecord};
use axum::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How often the watcher asks whether anything was written.
pub const TICK: Duration = Duration::from_millis(20);

/// Batches kept for slow streams before they must reread from the store.
const CAPACITY: usize = 256;

/// The most rows of each kind read in one go (more are read at once after).
const READ_LIMIT: usize = 1000;

/// How long a quiet stream waits before sending a comment, so that proxies keep it open and a
/// closed client is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Rows stored since the previous batch, in `seq` order.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<EventRecord>,
    pub transcript: Vec<TranscriptRecord>,
}

/// The broadcast side; cloned into every handler.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Batches from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.tx.subscribe()
    }

    /// Starts the watcher on its own connection `store`; it ends when `stop` is cancelled.
    pub fn watch(&self, store: Store, stop: CancellationToken) -> std::thread::JoinHandle<()> {
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("runner-live".into())
            .spawn(move || {
                let mut watcher = Watcher {
                    store,
                    tx,
                    version: None,
                    events: 0,
                    transcript: 0,
                };
                while !stop.is_cancelled() {
                    if let Err(e) = watcher.tick() {
                        tracing::warn!("live updates: cannot read the store: {e}");
                        watcher.version = None;
                    }
                    std::thread::sleep(TICK);
                }
            })
            .expect("cannot start the live-updates thread")
    }
}

struct Watcher {
    store: Store,
    tx: broadcast::Sender<Arc<Batch>>,
    /// `data_version` at the last look (none: read the cursors again).
    version: Option<i64>,
    /// The last event and transcript `seq` broadcast (or skipped while nobody listened).
    events: i64,
    transcript: i64,
}

impl Watcher {
    fn tick(&mut self) -> crate::store::Result<()> {
        let version = self.store.data_version()?;
        if self.version == Some(version) {
            return Ok(());
        }
        let first = self.version.is_none();
        self.version = Some(version);
        if first || self.tx.receiver_count() == 0 {
            self.events = self.events.max(self.store.last_event_seq()?);
            self.transcript = self.transcript.max(self.store.last_transcript_seq()?);
            return Ok(());
        }
        loop {
            let events = self.store.events_since(self.events, READ_LIMIT)?;
            let transcript = self.store.transcript_since(self.transcript, READ_LIMIT)?;
            if events.is_empty() && transcript.is_empty() {
                return Ok(());
            }
            let more = events.len() == READ_LIMIT || transcript.len() == READ_LIMIT;
            self.events = events.last().map_or(self.events, |e| e.seq);
            self.transcript = transcript.last().map_or(self.transcript, |t| t.seq);
            // No receiver left is not an error: the rows are in the store.
            let _ = self.tx.send(Arc::new(Batch { events, transcript }));
            if !more {
                return Ok(());
            }
        }
    }
}

/// What a job's stream sends, before it is put in the stream's format.
pub enum Item<'a> {
    Event(&'a EventRecord),
    Transcript(&'a TranscriptRecord),
    /// The job has ended and everything before is sent; the stream closes after this.
    End,
}

/// Where a job's stream stands: the last event and transcript `seq` it sent (no transcript:
/// the stream does not carry it).
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    pub events: i64,
    pub transcript: Option<i64>,
}

/// Sends the rows of job `id` after `cursor`, formatted by `format`, into `out` until the job has
/// ended (then [`Item::End`]) or the client is gone. Runs as the stream's own task.
pub async fn follow_job(
    store: SharedStore,
    hub: Hub,
    id: JobId,
    mut cursor: Cursor,
    out: mpsc::Sender<Bytes>,
    mut format: impl FnMut(Item<'_>) -> String + Send + 'static,
) {
    let mut rx = hub.subscribe();
    let mut backlog = true;
    loop {
        if backlog {
            backlog = false;
            let (job, c) = (id.clone(), cursor);
            let read = store
                .call(move |s| {
                    // The state first: events stored before a final state are then all read.
                    let done = s.job(&job)?.state.is_terminal();
                    let events = s.events_after(&job, c.events)?;
                    let transcript = match c.transcript {
                        Some(after) => s.transcript_after(&job, after)?,
                        None => Vec::new(),
                    };
                    Ok((done, Batch { events, transcript }))
                })
                .await;
            let (done, batch) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("live updates of job {id}: {e}");
                    return;
                }
            };
            let chunk = render(&batch, &id, &mut cursor, &mut format);
            if !send(&out, chunk).await {
                return;
            }
            if done {
                let _ = out.send(Bytes::from(format(Item::End))).await;
                return;
            }
        }
        let batch = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep(KEEP_ALIVE) => {
                if !send(&out, ": keep-alive\n\n".into()).await {
                    return;
                }
                continue;
            }
            _ = out.closed() => return,
        };
        match batch {
            Ok(batch) => {
                let chunk = render(&batch, &id, &mut cursor, &mut format);
                if !send(&out, chunk).await {
                    return;
                }
                // A final state of the job: read once more from the store, which ends the
                // stream if the job (not only an attempt) has ended.
                backlog = batch.events.iter().any(|e| {
                    e.job_id == id
                        && matches!(&e.body, EventBody::State { state, .. } if state.is_terminal())
                });
            }
            Err(broadcast::error::RecvError::Lagged(_)) => backlog = true,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The rows of `batch` for job `id` past `cursor`, formatted; moves the cursor.
fn render(
    batch: &Batch,
    id: &JobId,
    cursor: &mut Cursor,
    format: &mut impl FnMut(Item<'_>) -> String,
) -> String {
    let mut chunk = String::new();
    for e in batch.events.iter().filter(|e| &e.job_id == id) {
        if e.seq <= cursor.events {
            continue;
        }
        cursor.events = e.seq;
        chunk.push_str(&format(Item::Event(e)));
    }
    if let Some(after) = cursor.transcript.as_mut() {
        for t in batch.transcript.iter().filter(|t| &t.job_id == id) {
            if t.seq <= *after {
                continue;
            }
            *after = t.seq;
            chunk.push_str(&format(Item::Transcript(t)));
        }
    }
    chunk
}

/// Sends a non-empty chunk; false when the client is gone.
async fn send(out: &mpsc::Sender<Bytes>, chunk: String) -> bool {
    chunk.is_empty() || out.send(Bytes::from(chunk)).await.is_ok()
}

/// A live stream's response: `text/event-stream`, never cached, with the body a task sends
/// into `rx`.
pub fn response(rx: mpsc::Receiver<Bytes>) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body(rx),
    )
        .into_response()
}

/// A response body that streams what a task sends into `rx`.
fn body(rx: mpsc::Receiver<Bytes>) -> axum::body::Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    axum::body::Body::from_stream(stream)
}

/// One SSE message: an optional `event:` name, an optional `id:`, and `data` (one line).
pub fn sse(event: Option<&str>, id: Option<&str>, data: &str) -> String {
    let mut m = String::new();
    if let Some(e) = event {
        m.push_str("event: ");
        m.push_str(e);
        m.push('\n');
    }
    if let Some(id) = id {
        m.push_str("id: ");
        m.push_str(id);
        m.push('\n');
    }
    // JSON on one line has no newline; anything else is split into data lines.
    for line in data.split('\n') {
        m.push_str("data: ");
        m.push_str(line);
        m.push('\n');
    }
    m.push('\n');
    m
}
