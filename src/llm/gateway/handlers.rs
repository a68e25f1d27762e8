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
    // The shared listener's attempts have their tokens in memory (`serve_shared`).
    let from_store = matches!(seat, Seat::Attempt { .. });
    let grant = lookup(inner, headers, from_store)
        .await
        .filter(|grant| match seat {
            Seat::Attempt { job, attempt } => grant.job == *job && grant.attempt == *attempt,
            Seat::Shared => lock(&inner.shared).contains(&(grant.job.clone(), grant.attempt)),
        });
    if grant.is_none() {
        AUTH_REFUSALS.fetch_add(1, Ordering::Relaxed);
    }
    grant
}

async fn lookup(inner: &Inner, headers: &HeaderMap, from_store: bool) -> Option<Arc<Grant>> {
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
    if !from_store {
        return None;
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

#[cfg(test)]
mod tests {
    use crate::llm::gateway::{auth_refusals, Gateway, SOCKET_FILE};
    use crate::llm::prices::Prices;
    use crate::store::tests_support::{spec, submit_one};
    use crate::store::{SharedStore, Store};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The status of `GET /v1/models` on `socket` with `token`.
    async fn models_status(socket: &std::path::Path, token: &str) -> String {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        models_status_over(stream, token).await
    }

    /// The status of `GET /v1/models` at `addr` (TCP) with `token`.
    async fn models_status_tcp(addr: std::net::SocketAddr, token: &str) -> String {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        models_status_over(stream, token).await
    }

    async fn models_status_over(
        mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        token: &str,
    ) -> String {
        let request = format!(
            "GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_string()
    }

    /// A gateway on `store`, its sockets under `dir`.
    async fn gateway_on(store: Store, dir: &std::path::Path) -> Gateway {
        Gateway::start(SharedStore::new(store), dir.join("run"), Prices::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn calls_refused_for_their_token_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = submit_one(&mut store, "counted");
        store.claim(&id, |n| format!("c-{n}")).unwrap().unwrap();
        let gateway = gateway_on(store, dir.path()).await;
        let token = gateway.grant(&id, 1, &spec("counted")).await.unwrap();
        let socket = gateway
            .serve_attempt(&id, 1)
            .await
            .unwrap()
            .join(SOCKET_FILE);
        // Other tests of this process may run gateways too: the count only grows, so compare
        // it around calls made here, accepted ones first.
        let before = auth_refusals().expect("a gateway runs in this process");
        assert!(models_status(&socket, &token).await.contains("200"));
        let after_accepted = auth_refusals().unwrap();
        assert!(models_status(&socket, "not-a-token").await.contains("401"));
        assert!(models_status(&socket, "").await.contains("401"));
        let after_refused = auth_refusals().unwrap();
        assert!(
            after_refused >= after_accepted + 2,
            "{before} → {after_accepted} → {after_refused}"
        );
        gateway.shutdown();
    }

    #[tokio::test]
    async fn the_shared_listener_takes_only_tokens_of_attempts_it_serves() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let served = submit_one(&mut store, "served");
        let other = submit_one(&mut store, "other");
        for id in [&served, &other] {
            store.claim(id, |n| format!("c-{n}")).unwrap().unwrap();
        }
        let gateway = gateway_on(store, dir.path()).await;
        let addr = gateway
            .serve_network("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let token = gateway.grant(&served, 1, &spec("served")).await.unwrap();
        // A live token of an attempt not served there (one that ended while no runner watched).
        let stale = gateway.grant(&other, 1, &spec("other")).await.unwrap();
        gateway
            .serve_shared(&served, 1, &spec("served"))
            .await
            .unwrap();
        assert!(models_status_tcp(addr, &token).await.contains("200"));
        assert!(models_status_tcp(addr, &stale).await.contains("401"));
        assert!(models_status_tcp(addr, "not-a-token").await.contains("401"));
        assert!(models_status_tcp(addr, "").await.contains("401"));
        // A restarted runner (a new gateway on the same store) serving the attempt again takes
        // the token the pod already holds.
        let store = gateway.inner.store.clone();
        gateway.shutdown();
        let restarted = Gateway::start(store, dir.path().join("run"), Prices::default())
            .await
            .unwrap();
        let addr = restarted
            .serve_network("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert!(models_status_tcp(addr, &token).await.contains("401"));
        restarted
            .serve_shared(&served, 1, &spec("served"))
            .await
            .unwrap();
        assert!(models_status_tcp(addr, &token).await.contains("200"));
        // Revoked with its attempt: refused from then on.
        restarted.revoke(&served, 1).await.unwrap();
        assert!(models_status_tcp(addr, &token).await.contains("401"));
        restarted.shutdown();
    }
}
