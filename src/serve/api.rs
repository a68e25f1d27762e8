//! The HTTP API under `/api/v1`, with the CLI's JSON shapes (`ps --all --json`, `show --json`,
//! `events --json`) and messages. Errors are `{"error": "..."}`; the routes are described in
//! `openapi.json`, served at `/api/v1/openapi.json`.

use super::{live, ServeState};
use crate::cli::output;
use crate::state::{JobId, JobState};
use crate::store::{CancelResult, ControlResult, EventRecord, Store, StoreError};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The OpenAPI 3 document of these routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The API's routes.
pub fn routes() -> Router<ServeState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/jobs", get(list_jobs).post(submit_job))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route("/api/v1/jobs/{id}/transcript", get(job_transcript))
        .route("/api/v1/jobs/{id}/artifacts/{index}", get(job_artifact))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/send", post(send_message))
        .route("/api/v1/jobs/{id}/pause", post(pause_job))
        .route("/api/v1/jobs/{id}/resume", post(resume_job))
}

/// An error answer: a status and the CLI's message as `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra fields (the located problems of a job file).
    pub extra: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            extra: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Ambiguous { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.as_bytes(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    state: Option<String>,
    group: Option<String>,
    name: Option<String>,
}

/// `GET /api/v1/jobs`: the `ps --all --json` array, filtered by state, group and name (a part
/// of it).
async fn list_jobs(
    State(state): State<ServeState>,
    Query(filter): Query<JobFilter>,
) -> ApiResult<Json<Value>> {
    let wanted = match filter.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(s.parse::<JobState>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state {s:?}: use one of {}",
                    JobState::ALL.map(|s| s.as_str()).join(", ")
                ),
            )
        })?),
        None => None,
    };
    let jobs = state.store.call(|s| s.list(true)).await?;
    let list = jobs
        .iter()
        .filter(|j| wanted.is_none_or(|w| j.state == w))
        .filter(|j| {
            filter
                .group
                .as_deref()
                .is_none_or(|g| g.is_empty() || j.spec.group == g)
        })
        .filter(|j| filter.name.as_deref().is_none_or(|n| j.name.contains(n)))
        .map(output::job_summary_json)
        .collect();
    Ok(Json(Value::Array(list)))
}

/// Resolves `query` like the CLI (id, unique prefix, name) and runs `f` with the store.
async fn with_job<T: Send + 'static>(
    state: &ServeState,
    query: String,
    f: impl FnOnce(&mut Store, JobId) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    Ok(state
        .store
        .call(move |s| {
            let id = s.resolve(&query)?;
            f(s, id)
        })
        .await?)
}

/// `GET /api/v1/jobs/{id}`: the `show --json` object.
async fn show_job(
    State(state): State<ServeState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    with_job(&state, id, |s, id| output::job_json(s, &s.job(&id)?))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct After {
    after: Option<i64>,
}

/// `GET /api/v1/jobs/{id}/events`: the events as a JSON array (after `?after=SEQ`), or, asked
/// with `Accept: text/event-stream`, a live stream of them until the job ends.
async fn job_events(
    State(state): State<ServeState>,
    Path(id): Path<String>,
    Query(after): Query<After>,
    headers: HeaderMap,
) -> ApiResult {
    let live = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let start = last_id.or(after.after).unwrap_or(0);
    let id = with_job(&state, id, |_, id| Ok(id)).await?;
    if !live {
        let events = state
            .store
            .call(move |s| s.events_after(&id, start))
            .await?;
        return Ok(Json(serde_json::to_value(events).unwrap_or(Value::Null)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(live::follow_job(
        state.store.clone(),
        state.hub.clone(),
        id,
        live::Cursor {
            events: start,
            transcript: None,
        },
        tx,
        |item| match item {
            live::Item::Event(e) => sse_message(e),
            live::Item::End => live::sse(Some("end"), None, "{}"),
            live::Item::Transcript(_) => String::new(),
        },
    ));
    Ok(live::response(rx))
}

/// One event as an SSE message: `id:` its seq, `data:` its JSON (one line).
fn sse_message(e: &EventRecord) -> String {
    let data = serde_json::to_string(e).expect("an event serializes");
    live::sse(None, Some(&e.seq.to_string()), &data)
}

#[derive(Debug, Deserialize)]
struct AttemptFilter {
    attempt: Option<u32>,
}

/// `GET /api/v1/jobs/{id}/transcript`: what Aider was sent and printed, one row per entry:
/// `{"attempt", "at", "direction", "text"}` (all attempts, or `?attempt=N`).
async fn job_transcript(
    State(state): State<ServeState>,
    Path(id): Path<String>,
    Query(filter): Query<AttemptFilter>,
) -> ApiResult<Json<Value>> {
    let rows = with_job(&state, id, move |s, id| {
        let attempts: Vec<u32> = match filter.attempt {
            Some(n) => vec![n],
            None => s.attempts(&id)?.iter().map(|a| a.n).collect(),
        };
        let mut rows = Vec::new();
        for n in attempts {
            for (at, direction, text) in s.transcript(&id, n)? {
                rows.push(json!({"attempt": n, "at": at, "direction": direction, "text": text}));
            }
        }
        Ok(rows)
    })
    .await?;
    Ok(Json(Value::Array(rows)))
}

/// A file name safe in a `Content-Disposition` header: letters, digits, `.`, `-`, `_` only.
fn safe_filename(path: &str) -> String {
    let name = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "artifact".into()
    } else {
        clean
    }
}

/// `GET /api/v1/jobs/{id}/artifacts/{index}`: the job's artifact number `index` (0-based, in the
/// order of `show --json`'s `artifacts`), streamed as an attachment. Only files the store lists
/// for the job, and only inside the state dir.
async fn job_artifact(
    State(state): State<ServeState>,
    Path((id, index)): Path<(String, usize)>,
) -> ApiResult {
    let (id, artifacts) = with_job(&state, id, |s, id| {
        let list = s.artifacts(&id)?;
        Ok((id, list))
    })
    .await?;
    let artifact = artifacts.get(index).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "job {id} has {} artifact{}: give an index from 0 (see `artifacts` in GET /api/v1/jobs/{id})",
                artifacts.len(),
                if artifacts.len() == 1 { "" } else { "s" }
            ),
        )
    })?;
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            format!("artifact {index} of job {id} is no longer on disk (removed by `runner gc`?)"),
        )
    };
    let path = std::fs::canonicalize(&artifact.path).map_err(|_| gone())?;
    let root = std::fs::canonicalize(&state.state_dir).map_err(|_| gone())?;
    if !path.starts_with(&root) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("artifact {index} of job {id} is outside the state dir: not served"),
        ));
    }
    let file = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        safe_filename(&artifact.path)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

/// `POST /api/v1/jobs/{id}/cancel`: like `runner cancel`; a job that had ended is a 409.
async fn cancel_job(
    State(state): State<ServeState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, result) = with_job(&state, id, |s, id| {
        let r = s.cancel(&id)?;
        Ok((id, r))
    })
    .await?;
    match result {
        CancelResult::Cancelled => Ok(Json(
            json!({"id": id, "status": "cancelled", "message": format!("{id}: cancelled")}),
        )),
        CancelResult::Requested => Ok(Json(json!({"id": id, "status": "stopping",
            "message": format!("{id}: stopping (the scheduler stops it: grace, then kill)")}))),
        CancelResult::AlreadyFinished(st) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{id}: already {st}"),
        )),
    }
}

/// A refused control request: 422 for a job that has no agent, 409 for one not running.
fn control_refusal(id: &JobId, result: ControlResult) -> ApiError {
    let status = match result {
        ControlResult::NotAgent => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, crate::cli::send::refusal(id, result).message)
}

#[derive(Debug, Deserialize)]
struct Message {
    message: String,
}

/// `POST /api/v1/jobs/{id}/send` with `{"message": "..."}`: like `runner send`.
async fn send_message(
    State(state): State<ServeState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let message: Message = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {{\"message\": \"use tabs\"}}: {e}"),
        )
    })?;
    let text = crate::cli::send::check_message(message.message.into_bytes())
        .map_err(|f| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, f.message))?;
    let (id, result) = with_job(&state, id, move |s, id| {
        let job = s.job(&id)?;
        let text = crate::cli::send::redact(&job, &text);
        let r = s.send_message(&id, &text)?;
        Ok((id, r))
    })
    .await?;
    match result {
        ControlResult::Stored { attempt } => Ok(Json(
            json!({"id": id, "status": "stored", "attempt": attempt,
            "message": format!("{id}: message stored; attempt {attempt} types it into Aider at its next prompt")}),
        )),
        refused => Err(control_refusal(&id, refused)),
    }
}

async fn set_paused(state: ServeState, id: String, paused: bool) -> ApiResult<Json<Value>> {
    let (id, result) = with_job(&state, id, move |s, id| {
        let r = s.set_paused(&id, paused)?;
        Ok((id, r))
    })
    .await?;
    match result {
        ControlResult::Stored { .. } if paused => Ok(Json(json!({"id": id, "status": "pausing",
            "message": format!("{id}: pausing after the current turn; `runner send` now talks to Aider directly")}))),
        ControlResult::Stored { .. } => Ok(Json(json!({"id": id, "status": "resuming",
            "message": format!("{id}: resuming; the manager decides the next turn")}))),
        refused => Err(control_refusal(&id, refused)),
    }
}

/// `POST /api/v1/jobs/{id}/pause`: like `runner pause`.
async fn pause_job(
    State(state): State<ServeState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    set_paused(state, id, true).await
}

/// `POST /api/v1/jobs/{id}/resume`: like `runner resume`.
async fn resume_job(
    State(state): State<ServeState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    set_paused(state, id, false).await
}

/// `POST /api/v1/jobs` with a job file (YAML) as the body: validated like `runner validate`
/// (422 with the located problems), then queued (201 and the `show --json` object).
async fn submit_job(State(state): State<ServeState>, body: Bytes) -> ApiResult {
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the job file is not valid UTF-8 (byte {}): save it as UTF-8",
                e.valid_up_to()
            ),
        )
    })?;
    let spec = crate::job::parse_untrusted(text, state.jobs_from.as_deref()).map_err(|errors| {
        let problems: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "line": e.location.map(|l| l.0),
                    "column": e.location.map(|l| l.1),
                    "message": e.message,
                    "text": e.to_string(),
                })
            })
            .collect();
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} problem{} in the job file; nothing was submitted",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
        );
        err.extra = Some(json!({ "problems": problems }));
        err
    })?;
    let job = state
        .store
        .call(move |s| {
            let ids = s.submit(&[crate::store::NewJob { spec, source: None }])?;
            output::job_json(s, &s.job(&ids[0])?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `path` + method of the router, as written in `routes()`.
    fn router_routes() -> Vec<(String, String)> {
        let src = include_str!("api.rs");
        let mut out = Vec::new();
        for line in src.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix(".route(\"") else {
                continue;
            };
            let (path, handlers) = rest.split_once('"').unwrap();
            for method in ["get", "post"] {
                if handlers.contains(&format!("{method}(")) {
                    out.push((path.to_string(), method.to_string()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((path.clone(), method.clone()));
                }
            }
        }
        documented.sort();
        let routes = router_routes();
        assert!(routes.len() >= 11, "{routes:?}");
        assert_eq!(routes, documented);
    }

    #[test]
    fn an_artifact_file_name_is_reduced_to_safe_characters() {
        assert_eq!(safe_filename("/s/logs/01J/1.log"), "1.log");
        assert_eq!(safe_filename("/x/a\"b;\r\nc.txt"), "a_b___c.txt");
        assert_eq!(safe_filename("/x/..."), "artifact");
        assert_eq!(safe_filename("/x/.hidden"), "hidden");
    }
}
