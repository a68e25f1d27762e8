//! Cassettes: appending a recorded exchange to the job's `llm.record` file, and answering from
//! its `llm.replay` file in order, per attempt and role.

use super::exchange::Metered;
use super::{error, lock, Grant, Inner};
use crate::llm::cassette::{Cassette, Exchange, Recorder};
use crate::llm::meter::Tokens;
use crate::store::Role;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;
use std::sync::Arc;

pub(super) fn record_exchange(inner: &Arc<Inner>, grant: &Grant, exchange: Exchange) {
    let Some(path) = grant.spec.llm.record.clone() else {
        return;
    };
    let recorder = {
        let mut recorders = lock(&inner.recorders);
        match recorders.get(&path) {
            Some(r) => r.clone(),
            None => match Recorder::create(&path) {
                Ok(r) => {
                    let r = Arc::new(r);
                    recorders.insert(path.clone(), r.clone());
                    r
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return;
                }
            },
        }
    };
    if let Err(e) = recorder.append(&exchange) {
        tracing::error!("{e}");
    }
}

pub(super) async fn replay(
    inner: &Arc<Inner>,
    grant: &Grant,
    role: Role,
    path: PathBuf,
    mut metered: Metered,
) -> Response {
    let cassette = {
        let cached = lock(&inner.cassettes).get(&path).cloned();
        match cached {
            Some(c) => c,
            None => match Cassette::load(&path) {
                Ok(c) => {
                    let c = Arc::new(c);
                    lock(&inner.cassettes).insert(path.clone(), c.clone());
                    c
                }
                Err(e) => {
                    metered.discard();
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "replay_error",
                        format!("runner gateway: {e}"),
                    );
                }
            },
        }
    };
    let n = {
        let mut pos = lock(&inner.replay_pos);
        let slot = pos
            .entry((grant.job.clone(), grant.attempt, role))
            .or_insert(0);
        *slot += 1;
        *slot - 1
    };
    let Some(found) = cassette.get(role, n) else {
        metered.discard();
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "replay_exhausted",
            format!(
                "runner gateway: cassette {} holds {} {} answers; request {} is beyond it (record it again)",
                path.display(),
                cassette.count(role),
                role.as_str(),
                n + 1
            ),
        );
    };
    metered
        .record(Tokens {
            prompt: found.prompt_tokens,
            completion: found.completion_tokens,
            reported: true,
        })
        .await;
    let status = StatusCode::from_u16(found.status).unwrap_or(StatusCode::OK);
    let content_type = found.content_type.clone();
    if content_type.starts_with("text/event-stream") {
        // Send event by event, as the upstream did.
        let events: Vec<Result<Bytes, std::io::Error>> = found
            .body
            .split_inclusive("\n\n")
            .map(|e| Ok(Bytes::from(e.to_string())))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(events));
        return (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        found.body.clone(),
    )
        .into_response()
}
