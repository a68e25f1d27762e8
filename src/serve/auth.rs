//! The token every request needs: created once per state dir, compared in constant time, taken
//! from `Authorization: Bearer`, the login cookie, or `?token=` (which sets the cookie and
//! redirects to the same address without the token). A state change authenticated by the
//! cookie must come from this origin (a cross-site form or script cannot carry the header).

use super::ServeState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// File name of the token inside the state dir.
pub const TOKEN_FILE: &str = "api-token";

/// Name of the login cookie.
pub const COOKIE: &str = "runner_token";

/// The state dir's token: read from `api-token`, or created there (random, mode 0600) on first
/// start. A token file others could read is made owner-only again.
pub fn load_or_create_token(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    let fresh: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(fresh.as_bytes())?;
            file.sync_all()?;
            return Ok(fresh);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(&path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let token = std::fs::read_to_string(&path)?.trim().to_string();
    if token.len() < 16 {
        return Err(std::io::Error::other(
            "the token file holds fewer than 16 characters: delete it and start again for a new one",
        ));
    }
    Ok(token)
}

/// Equal in time independent of where `a` and `b` differ.
pub(super) fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON refusal `{"error": ...}`.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The value of `name` in the Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The query string without its `token` parameters.
fn without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "token" && !p.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

/// True when the request says it comes from this server's own pages: `Sec-Fetch-Site:
/// same-origin`, or (browsers without it) an `Origin` naming the `Host` it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// The middleware in front of every route.
pub(super) async fn require_token(
    State(state): State<ServeState>,
    request: Request,
    next: Next,
) -> Response {
    let token = state.token.as_str();
    let query = request.uri().query().unwrap_or("");
    let given = query
        .split('&')
        .find_map(|p| p.strip_prefix("token="))
        .map(str::to_string);
    if let Some(given) = given {
        if !same_token(&given, token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "wrong token: use the URL `runner serve` printed, or the token in <state dir>/api-token",
            );
        }
        if request.method() != Method::GET {
            return refuse(
                StatusCode::BAD_REQUEST,
                "put the token in the `Authorization: Bearer` header, not in the address, for anything but opening a page",
            );
        }
        // Log in: the cookie, then the same address without the token (out of the history bar).
        let rest = without_token(query);
        let location = if rest.is_empty() {
            request.uri().path().to_string()
        } else {
            format!("{}?{rest}", request.uri().path())
        };
        let mut response = StatusCode::SEE_OTHER.into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            headers.insert(header::SET_COOKIE, v);
        }
        return response;
    }
    let headers = request.headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let bearer = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        return match bearer {
            Some(b) if same_token(b, token) => next.run(request).await,
            _ => refuse(
                StatusCode::UNAUTHORIZED,
                "wrong token: send `Authorization: Bearer <token>` with the token in <state dir>/api-token",
            ),
        };
    }
    match cookie(headers, COOKIE) {
        Some(c) if same_token(c, token) => {
            let reads = matches!(*request.method(), Method::GET | Method::HEAD);
            if !reads && !same_origin(headers) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused: state changes with the login cookie must come from this server's own pages (scripts send `Authorization: Bearer <token>`)",
                );
            }
            next.run(request).await
        }
        Some(_) => refuse(
            StatusCode::UNAUTHORIZED,
            "the login cookie is stale (the token changed): open the URL `runner serve` printed again",
        ),
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "a token is needed: open the URL `runner serve` printed, or send `Authorization: Bearer <token>` with the token in <state dir>/api-token",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(same_token("abcdef", "abcdef"));
        assert!(!same_token("abcdef", "abcdeg"));
        assert!(!same_token("abcdef", "abcde"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn the_login_redirect_keeps_every_parameter_but_the_token() {
        assert_eq!(
            without_token("token=x&state=running&q=1"),
            "state=running&q=1"
        );
        assert_eq!(without_token("token=x"), "");
        assert_eq!(without_token("a=1&token=x"), "a=1");
    }

    #[test]
    fn a_request_is_same_origin_by_fetch_metadata_or_by_origin_and_host() {
        let mut h = HeaderMap::new();
        assert!(!same_origin(&h), "no evidence is not same-origin");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7700"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7700"),
        );
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h), "fetch metadata wins over Origin");
    }

    #[test]
    fn the_token_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_token(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), first);
    }
}
