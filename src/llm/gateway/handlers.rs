//! The HTTP routes containers call (`/v1/chat/completions`, `/v1/models`) and the token check
//! that maps a request to its attempt's grant: a token counts only on its own attempt's socket.

use super::exchange::exchange;
use super::{error, hash, lock, Grant, InFlight, Inner, Seat, AUTH_REFUSALS};
use crate::store::Role;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The grant of the token in `headers`, if it belongs to the attempt this socket serves (a
/// refusal is counted for `/metrics`).
async fn grant_for(inner: &Inner, seat: &Seat, headers: &HeaderMap) -> Option<Arc<Grant>> {
    let grant = lookup(inner, headers)
        .await
        .filter(|grant| grant.job == seat.job && grant.attempt == seat.attempt);
    if grant.is_none() {
        AUTH_REFUSALS.fetch_add(1, Ordering::Relaxed);
    }
    grant
}

async fn lookup(inner: &Inner, headers: &HeaderMap) -> Option<Arc<Grant>> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim()
        .to_string();
    let h = hash(&token);
    if let Some(g) = lock(&inner.grants).get(&h) {
        return Some(g.clone());
    }
    // Not cached (a restarted scheduler adopting a container): look it up.
    let h2 = h.clone();
    let found = inner
        .store
        .call(move |s| match s.token_owner(&h2)? {
            Some((id, n)) => Ok(Some((id.clone(), n, s.job(&id)?.spec))),
            None => Ok(None),
        })
        .await
        .ok()??;
    let grant = Arc::new(Grant {
        job: found.0,
        attempt: found.1,
        spec: found.2,
    });
    lock(&inner.grants).insert(h, grant.clone());
    Some(grant)
}

pub(super) async fn models(
    State(inner): State<Arc<Inner>>,
    Extension(seat): Extension<Arc<Seat>>,
    headers: HeaderMap,
) -> Response {
    let Some(grant) = grant_for(&inner, &seat, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "runner gateway: unknown or revoked token, or a token of another attempt",
        );
    };
    let model = grant
        .spec
        .agent
        .model
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    axum::Json(
        json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "runner"}]}),
    )
    .into_response()
}

pub(super) async fn chat(
    State(inner): State<Arc<Inner>>,
    Extension(seat): Extension<Arc<Seat>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(grant) = grant_for(&inner, &seat, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "runner gateway: unknown or revoked token, or a token of another attempt",
        );
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "request body is not a JSON object",
            )
        }
    };
    // Only streamed answers are printed as they arrive; Aider's other calls (commit messages,
    // history summaries in the background) print nothing that could look like its prompt.
    if request["stream"] != true {
        return exchange(&inner, &grant, Role::Agent, request, body).await;
    }
    let in_flight = InFlight::enter(inner.agent_calls(&grant.job, grant.attempt));
    let (parts, answer) = exchange(&inner, &grant, Role::Agent, request, body)
        .await
        .into_parts();
    // The call stays counted until the answer's last chunk is sent (or the client went away).
    let answer = answer.into_data_stream().map(move |chunk| {
        let _counted = &in_flight;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(answer))
}
