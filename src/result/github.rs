//! Pull requests through the GitHub REST API (`GET`, then if none is open for the branch `POST`
//! `/repos/{owner}/{name}/pulls`), and telling `owner/name` from a repository URL. The token goes
//! only into the `Authorization` header (marked sensitive); no error message or log line
//! carries it.

use super::ResultError;
use crate::job::DEFAULT_GITHUB_API;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use std::time::Duration;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Most of an error answer read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Opens a pull request of `head` (a branch of `repo`, already pushed) into `base` on
/// `repo` (`owner/name`) and returns its web address (`html_url`). A pull request already open
/// for the branch (one opened just before a crash, say) is returned instead of opening a second.
pub async fn open_pull_request(
    api_url: &str,
    token: &str,
    repo: &str,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<String, ResultError> {
    let (owner, name) = split_repo(repo).ok_or_else(|| ResultError::BadRepo(repo.to_string()))?;
    let url = format!(
        "{}/repos/{owner}/{name}/pulls",
        api_url.trim_end_matches('/')
    );
    let mut auth =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ResultError::Request {
            url: url.clone(),
            message: "the token holds characters that cannot be sent in a header".into(),
        })?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "X-GitHub-Api-Version",
        HeaderValue::from_static("2022-11-28"),
    );
    let request_error = |e: reqwest::Error| ResultError::Request {
        url: url.clone(),
        message: e.without_url().to_string(),
    };
    let client = reqwest::Client::builder()
        .user_agent("runner")
        .default_headers(headers)
        .timeout(TIMEOUT)
        .build()
        .map_err(request_error)?;

    // One call's answer as JSON (`None` when it is not), or GitHub's refusal.
    let answer = |request: reqwest::RequestBuilder| async {
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(request_error)?;
        if !status.is_success() {
            return Err(refusal(repo, token, status, &bytes));
        }
        Ok((
            status,
            serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
        ))
    };
    let (_, open) = answer(client.get(&url).query(&[
        ("head", format!("{owner}:{head}").as_str()),
        ("state", "open"),
    ]))
    .await?;
    let existing = open
        .as_ref()
        .and_then(|list| list.as_array())
        .and_then(|list| list.first())
        .and_then(|pr| pr.get("html_url"))
        .and_then(|u| u.as_str());
    if let Some(existing) = existing {
        return Ok(existing.to_string());
    }

    let (status, created) =
        answer(client.post(&url).json(
            &serde_json::json!({ "title": title, "head": head, "base": base, "body": body }),
        ))
        .await?;
    created
        .as_ref()
        .and_then(|a| a.get("html_url"))
        .and_then(|u| u.as_str())
        .map(str::to_string)
        .ok_or_else(|| ResultError::Request {
            url: url.clone(),
            message: format!("the answer ({status}) has no `html_url`"),
        })
}

/// GitHub's error answer as an error, its message cleared of the token.
fn refusal(repo: &str, token: &str, status: reqwest::StatusCode, bytes: &[u8]) -> ResultError {
    let answer: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let mut message = match &answer {
        Some(answer) => github_message(answer),
        None => String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)])
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    if message.is_empty() {
        message = "no message".into();
    }
    if !token.is_empty() {
        message = message.replace(token, "***");
    }
    ResultError::GitHub {
        repo: repo.to_string(),
        status: status.as_u16(),
        message,
        hint: hint(status.as_u16()),
    }
}

/// GitHub's `message`, followed by the messages (or codes) of its `errors` list.
fn github_message(answer: &serde_json::Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(message) = answer.get("message").and_then(|m| m.as_str()) {
        parts.push(message.to_string());
    }
    for error in answer
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        let text = |key: &str| error.get(key).and_then(|v| v.as_str());
        match (text("message"), text("field"), text("code")) {
            (Some(message), _, _) => parts.push(message.to_string()),
            (None, Some(field), Some(code)) => parts.push(format!("{field} is {code}")),
            (None, None, Some(code)) => parts.push(code.to_string()),
            _ => {}
        }
    }
    parts.join(": ")
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => "check the token in the host variable named by `output.token_env`",
        403 => "the token may lack permission to open pull requests (pull requests: write), or a rate limit was hit",
        404 => "check `repo`: the repository does not exist or the token cannot see it",
        422 => "check that the branch was pushed, that `output.base` exists, and that no pull request is already open for the branch",
        _ => "try again later, or open the pull request by hand from the pushed branch",
    }
}

/// `owner` and `name` when both are plain GitHub names.
fn split_repo(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (plain(owner) && plain(name)).then_some((owner, name))
}

/// `owner/name` of a github.com repository URL: `https://github.com/o/n(.git)`,
/// `ssh://git@github.com/o/n.git`, `git@github.com:o/n.git`; `None` for anything else.
pub fn github_repo_of(url: &str) -> Option<String> {
    let (host, path) = host_and_path(url)?;
    let host = host.to_ascii_lowercase();
    if host != "github.com" && host != "www.github.com" {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [owner, name] => owner_name(owner, name),
        _ => None,
    }
}

/// `owner/name` of the repository a pull request goes to: from a github.com URL when `api_url`
/// is GitHub's own API, else (GitHub Enterprise, or a test stub) the URL's last two path
/// segments, whatever the host.
pub fn pr_repo_of(url: &str, api_url: &str) -> Option<String> {
    if api_url.trim_end_matches('/') == DEFAULT_GITHUB_API {
        return github_repo_of(url);
    }
    let (_, path) = host_and_path(url)?;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., owner, name] => owner_name(owner, name),
        _ => None,
    }
}

fn owner_name(owner: &str, name: &str) -> Option<String> {
    let name = name.strip_suffix(".git").unwrap_or(name);
    let repo = format!("{owner}/{name}");
    split_repo(&repo).is_some().then_some(repo)
}

/// The host and the path of a git URL, in URL form (`scheme://[user@]host[:port]/path`) or scp
/// form (`user@host:path`).
fn host_and_path(url: &str) -> Option<(&str, &str)> {
    if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host.split_once(':').map_or(host, |(h, _)| h);
        return Some((host, path));
    }
    let (user_host, path) = url.split_once(':')?;
    let (user, host) = user_host.split_once('@')?;
    (!user.is_empty() && !host.is_empty() && !user_host.contains('/')).then_some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_urls_give_owner_and_name() {
        for url in [
            "https://github.com/org/app.git",
            "https://github.com/org/app",
            "https://github.com/org/app/",
            "http://github.com/org/app.git",
            "https://user:tok@github.com/org/app.git",
            "https://GitHub.com/org/app.git",
            "ssh://git@github.com/org/app.git",
            "ssh://git@github.com:22/org/app.git",
            "git@github.com:org/app.git",
            "git@github.com:/org/app",
            "git://github.com/org/app.git",
        ] {
            assert_eq!(github_repo_of(url).as_deref(), Some("org/app"), "{url}");
        }
        assert_eq!(
            github_repo_of("https://github.com/my-org/my.app_2.git").as_deref(),
            Some("my-org/my.app_2")
        );
    }

    #[test]
    fn other_urls_are_not_github() {
        for url in [
            "https://gitlab.com/org/app.git",
            "https://github.com/org",
            "https://github.com/org/app/tree/main",
            "https://github.com.evil.example/org/app.git",
            "https://evil.example/github.com/org/app.git",
            "git@gitlab.com:org/app.git",
            "/home/me/app",
            "file:///srv/org/app.git",
            "https://github.com/../app",
            "https://github.com/org/a%20b",
            "",
        ] {
            assert_eq!(github_repo_of(url), None, "{url}");
        }
    }

    #[test]
    fn enterprise_and_stub_apis_take_the_last_two_segments() {
        let ghe = "https://ghe.example.com/api/v3";
        assert_eq!(
            pr_repo_of("https://ghe.example.com/org/app.git", ghe).as_deref(),
            Some("org/app")
        );
        assert_eq!(
            pr_repo_of("file:///srv/git/org/app.git", "http://127.0.0.1:9").as_deref(),
            Some("org/app")
        );
        assert_eq!(pr_repo_of("https://ghe.example.com/app.git", ghe), None);
        assert_eq!(
            pr_repo_of("https://gitlab.com/org/app.git", DEFAULT_GITHUB_API),
            None
        );
        assert_eq!(
            pr_repo_of("https://github.com/org/app.git", "https://api.github.com/").as_deref(),
            Some("org/app")
        );
    }

    #[test]
    fn github_error_answers_become_one_line() {
        let answer = serde_json::json!({
            "message": "Validation Failed",
            "errors": [
                {"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for org:b."},
                {"resource": "PullRequest", "field": "base", "code": "invalid"}
            ],
            "documentation_url": "https://docs.github.com/rest"
        });
        assert_eq!(
            github_message(&answer),
            "Validation Failed: A pull request already exists for org:b.: base is invalid"
        );
        assert_eq!(github_message(&serde_json::json!({})), "");
    }

    #[test]
    fn repo_names_are_checked_before_any_request() {
        for repo in ["org", "org/app/x", "../x", "org/", "o rg/app", "org/.."] {
            assert_eq!(split_repo(repo), None, "{repo}");
        }
        assert_eq!(split_repo("org/app"), Some(("org", "app")));
    }
}
