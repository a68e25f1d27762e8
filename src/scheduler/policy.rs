//! What a job may ask of the host, decided by the operator, not by the job file: which host
//! variables it may read as `secrets`, and where the credentials it names (`llm.api_key_env`,
//! `output.token_env`) may be sent. Job files come from a jobs dir or an API, so their authors are
//! not the operator. The scheduler checks a job against this policy before its attempt does
//! anything, and refuses it with a message naming the flag that would allow it.
//!
//! Defaults keep a single user's setup working: any variable may be a secret except credentials
//! (`OPENAI_API_KEY`, `GITHUB_TOKEN`, every variable an `--allow-llm-key`/`--allow-pr-token`
//! names, and well-known provider credentials such as `*_API_KEY`, `GH_TOKEN` and AWS's secret
//! keys), which need `--allow-secret NAME`; `OPENAI_API_KEY` may go to the scheduler's own
//! `OPENAI_BASE_URL`/`OPENAI_API_BASE` and to `https://api.openai.com/v1`; `GITHUB_TOKEN` to
//! `https://api.github.com`.

use crate::job::{JobSpec, NetworkMode, OutputMode, DEFAULT_GITHUB_API, DEFAULT_TOKEN_ENV};
use reqwest::Url;

/// The key variable an OpenAI client reads, allowed to the scheduler's own upstream.
const DEFAULT_LLM_KEY: &str = "OPENAI_API_KEY";
/// Names of other well-known credentials: like the runner's own, a job may read them only when
/// `--allow-secret` names them exactly.
const KNOWN_CREDENTIALS: [&str; 6] = [
    "*_API_KEY",
    "GH_TOKEN",
    "GITLAB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
];
/// OpenAI's API: where `OPENAI_API_KEY` may always go.
const OPENAI_API: &str = "https://api.openai.com/v1";

/// A job asks for something the operator did not allow.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("secret {name}: the scheduler does not give jobs this host variable{why}: if this job may read it, start the scheduler with --allow-secret {name}")]
    Secret { name: String, why: &'static str },
    #[error("llm.api_key_env {name}: the scheduler does not send this key to {url} ({allowed}): if it may go there, start the scheduler with --allow-llm-key {name}={url}")]
    LlmKey {
        name: String,
        url: String,
        allowed: String,
    },
    #[error("output.token_env {name}: the scheduler does not send this token to {url} ({allowed}): if it may go there, start the scheduler with --allow-pr-token {name}={url}")]
    PrToken {
        name: String,
        url: String,
        allowed: String,
    },
}

/// A host variable and a URL it may be sent to (this URL and the paths below it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRule {
    pub name: String,
    pub url: Url,
}

/// The operator's allow-lists. Built once per scheduler; see the module docs for the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-secret` names and globs; empty means any variable that is not a credential.
    secrets: Vec<String>,
    /// Where each LLM key may go: the defaults, then `--allow-llm-key`.
    llm_keys: Vec<CredentialRule>,
    /// Where each pull-request token may go: the default, then `--allow-pr-token`.
    pr_tokens: Vec<CredentialRule>,
}

impl Default for Policy {
    /// The defaults, with the scheduler's own upstream from its environment.
    fn default() -> Self {
        Policy::new(Vec::new(), Vec::new(), Vec::new())
    }
}

impl Policy {
    /// The defaults plus the operator's flags. `OPENAI_API_KEY` may go to the upstream named by
    /// the scheduler's `OPENAI_BASE_URL`/`OPENAI_API_BASE`, read now.
    pub fn new(
        secrets: Vec<String>,
        llm_keys: Vec<CredentialRule>,
        pr_tokens: Vec<CredentialRule>,
    ) -> Policy {
        let own_upstream = ["OPENAI_BASE_URL", "OPENAI_API_BASE"]
            .into_iter()
            .filter_map(|var| std::env::var(var).ok())
            .filter(|url| !url.is_empty());
        let mut defaults_llm: Vec<CredentialRule> = std::iter::once(OPENAI_API.to_string())
            .chain(own_upstream)
            .filter_map(|url| parse_url(&url).ok())
            .map(|url| CredentialRule {
                name: DEFAULT_LLM_KEY.into(),
                url,
            })
            .collect();
        defaults_llm.extend(llm_keys);
        let mut defaults_pr = vec![CredentialRule {
            name: DEFAULT_TOKEN_ENV.into(),
            url: parse_url(DEFAULT_GITHUB_API).expect("the GitHub API URL parses"),
        }];
        defaults_pr.extend(pr_tokens);
        Policy {
            secrets,
            llm_keys: defaults_llm,
            pr_tokens: defaults_pr,
        }
    }

    /// Checks everything `spec` would take from the host. `is_set` says whether a host variable
    /// exists: a key that is not set is never sent, so it needs no rule.
    pub fn check(&self, spec: &JobSpec, is_set: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
        for name in &spec.secrets {
            self.check_secret(name)?;
        }
        let uses_upstream =
            (spec.network == NetworkMode::Llm || spec.is_agent()) && spec.llm.replay.is_none();
        let key = &spec.llm.api_key_env;
        if uses_upstream && is_set(key) {
            if let Some(url) = crate::llm::upstream_base(spec) {
                if !allows(&self.llm_keys, key, &url) {
                    return Err(PolicyError::LlmKey {
                        name: key.clone(),
                        allowed: allowed_list(&self.llm_keys, key),
                        url,
                    });
                }
            }
        }
        let token = &spec.output.token_env;
        if spec.output.mode == OutputMode::Pr
            && is_set(token)
            && !allows(&self.pr_tokens, token, &spec.output.api_url)
        {
            return Err(PolicyError::PrToken {
                name: token.clone(),
                allowed: allowed_list(&self.pr_tokens, token),
                url: spec.output.api_url.clone(),
            });
        }
        Ok(())
    }

    fn check_secret(&self, name: &str) -> Result<(), PolicyError> {
        let known = KNOWN_CREDENTIALS.iter().any(|p| glob_matches(p, name));
        let credential = known
            || name == DEFAULT_LLM_KEY
            || name == DEFAULT_TOKEN_ENV
            || self
                .llm_keys
                .iter()
                .chain(&self.pr_tokens)
                .any(|r| r.name == name);
        // A credential must be named exactly: a glob like `*` allows ordinary variables only.
        let allowed = if credential {
            self.secrets.iter().any(|p| p == name)
        } else {
            self.secrets.is_empty() || self.secrets.iter().any(|p| glob_matches(p, name))
        };
        if allowed {
            return Ok(());
        }
        Err(PolicyError::Secret {
            name: name.to_string(),
            why: if known {
                " (it looks like a provider's credential)"
            } else if credential {
                " (it is a credential the runner itself uses)"
            } else {
                " (it is not on the --allow-secret list)"
            },
        })
    }
}

/// Whether a rule lets the variable `name` go to `target`.
fn allows(rules: &[CredentialRule], name: &str, target: &str) -> bool {
    rules
        .iter()
        .any(|r| r.name == name && url_within(&r.url, target))
}

/// The URLs `name` may go to, for the refusal message.
fn allowed_list(rules: &[CredentialRule], name: &str) -> String {
    let urls: Vec<&str> = rules
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.url.as_str())
        .collect();
    if urls.is_empty() {
        format!("no URL is allowed for {name}")
    } else {
        format!("allowed: {}", urls.join(", "))
    }
}

/// Whether `target` is `allowed` or below it: the same scheme, host and port, no user info, and
/// a path that equals the allowed one or continues it after a `/`. Both sides go through the
/// URL parser the HTTP client uses, so `https://api.openai.com.evil.com`,
/// `https://api.openai.com@evil.com` and `/v1/../x` are judged as the client will send them.
pub fn url_within(allowed: &Url, target: &str) -> bool {
    let Ok(target) = Url::parse(target) else {
        return false;
    };
    if !target.username().is_empty() || target.password().is_some() {
        return false;
    }
    if target.scheme() != allowed.scheme()
        || target.host_str() != allowed.host_str()
        || target.port_or_known_default() != allowed.port_or_known_default()
    {
        return false;
    }
    let base = allowed.path().trim_end_matches('/');
    let path = target.path();
    path == base || path.starts_with(&format!("{base}/"))
}

/// An http(s) URL with a host and no user info, query or fragment.
fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} is not an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{s:?} holds user info: give the URL without it"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{s:?} has a query or fragment: give the base URL only"
        ));
    }
    Ok(url)
}

/// A variable name: a letter or `_`, then letters, digits or `_`.
fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `--allow-secret NAME|GLOB`: a variable name, or a pattern of name characters with `*` (any
/// run) and `?` (one character).
pub fn parse_secret_pattern(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?'));
    if !ok {
        return Err(format!(
            "{s:?} is not a variable name or a glob of one (like CI_* or DEPLOY_KEY)"
        ));
    }
    Ok(s.to_string())
}

/// `--allow-llm-key NAME=URL` and `--allow-pr-token NAME=URL`.
pub fn parse_credential_rule(s: &str) -> Result<CredentialRule, String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=URL (like MY_KEY=https://llm.example.com/v1)"))?;
    if !is_var_name(name) {
        return Err(format!("{name:?} is not a variable name"));
    }
    Ok(CredentialRule {
        name: name.to_string(),
        url: parse_url(url)?,
    })
}

/// Shell-style matching of `*` and `?` over ASCII names.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and how much of the name it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(text: &str) -> JobSpec {
        crate::job::parse_str(
            text,
            std::path::Path::new("/nonexistent-runner-test/job.yaml"),
        )
        .expect("a valid job")
    }

    fn url(s: &str) -> Url {
        parse_url(s).unwrap()
    }

    #[test]
    fn urls_match_on_scheme_host_port_and_whole_path_segments() {
        let openai = url("https://api.openai.com/v1");
        for ok in [
            "https://api.openai.com/v1",
            "https://api.openai.com/v1/",
            "https://api.openai.com:443/v1/chat/completions",
            "https://API.OpenAI.com/v1",
        ] {
            assert!(url_within(&openai, ok), "{ok}");
        }
        for bad in [
            "https://api.openai.com.evil.com/v1",
            "https://api.openai.com@evil.com/v1",
            "https://user:pw@api.openai.com/v1",
            "https://evil.com/api.openai.com/v1",
            "https://evil.com\\@api.openai.com/v1",
            "http://api.openai.com/v1",
            "https://api.openai.com:8443/v1",
            "https://api.openai.com/v10",
            "https://api.openai.com/v1/../admin",
            "https://api.openai.com/",
            "not a url",
        ] {
            assert!(!url_within(&openai, bad), "{bad}");
        }
        let root = url("http://127.0.0.1:8080");
        assert!(url_within(&root, "http://127.0.0.1:8080/anything"));
        assert!(!url_within(&root, "http://127.0.0.1:8081/"));
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("CI_*", "CI_TOKEN"));
        assert!(glob_matches("CI_*", "CI_"));
        assert!(glob_matches("*_KEY", "DEPLOY_KEY"));
        assert!(glob_matches("A?C", "ABC"));
        assert!(glob_matches("*", "ANY"));
        assert!(glob_matches("A*B*C", "AXXBYYC"));
        assert!(!glob_matches("CI_*", "XCI_TOKEN"));
        assert!(!glob_matches("A?C", "AC"));
        assert!(!glob_matches("DEPLOY", "DEPLOY_KEY"));
    }

    #[test]
    fn flags_are_checked_when_parsed() {
        assert!(parse_secret_pattern("CI_*").is_ok());
        assert!(parse_secret_pattern("A B").is_err());
        let rule = parse_credential_rule("MY_KEY=https://llm.example.com/v1").unwrap();
        assert_eq!(rule.name, "MY_KEY");
        for bad in [
            "MY_KEY",
            "1KEY=https://x.example",
            "K=ftp://x.example",
            "K=https://u:p@x.example",
            "K=https://x.example/v1?x=1",
        ] {
            assert!(parse_credential_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_need_their_exact_name_and_other_secrets_follow_the_list() {
        let open = Policy::new(Vec::new(), Vec::new(), Vec::new());
        assert!(open.check_secret("API_TOKEN").is_ok());
        let err = open.check_secret("OPENAI_API_KEY").unwrap_err().to_string();
        assert!(err.contains("--allow-secret OPENAI_API_KEY"), "{err}");
        assert!(open.check_secret("GITHUB_TOKEN").is_err());
        for known in ["ANTHROPIC_API_KEY", "GH_TOKEN", "AWS_SECRET_ACCESS_KEY"] {
            let err = open.check_secret(known).unwrap_err().to_string();
            assert!(err.contains("provider's credential"), "{err}");
        }
        assert!(open.check_secret("API_TOKEN").is_ok(), "an ordinary name");

        let rule = parse_credential_rule("GH_PAT=https://ghe.example.com/api/v3").unwrap();
        let listed = Policy::new(
            vec!["CI_*".into(), "*".into(), "GITHUB_TOKEN".into()],
            Vec::new(),
            vec![rule],
        );
        assert!(listed.check_secret("ANYTHING").is_ok());
        assert!(listed.check_secret("GITHUB_TOKEN").is_ok());
        assert!(
            listed.check_secret("OPENAI_API_KEY").is_err(),
            "`*` is no credential's name"
        );
        assert!(
            listed.check_secret("GH_PAT").is_err(),
            "a PR token is a credential"
        );

        let narrow = Policy::new(vec!["CI_*".into()], Vec::new(), Vec::new());
        assert!(narrow.check_secret("CI_TOKEN").is_ok());
        let err = narrow.check_secret("HOME").unwrap_err().to_string();
        assert!(err.contains("not on the --allow-secret list"), "{err}");
    }

    #[test]
    fn keys_go_only_where_the_operator_allows() {
        let policy = Policy::new(
            Vec::new(),
            vec![parse_credential_rule("PROXY_KEY=http://litellm.internal:4000/v1").unwrap()],
            Vec::new(),
        );
        let set = |_: &str| true;
        let job = |llm: &str| {
            spec_of(&format!(
                "name: j\nimage: alpine\ncommand: [\"true\"]\nnetwork: llm\nllm: {llm}\n"
            ))
        };
        let openai = job("{ base_url: 'https://api.openai.com/v1' }");
        assert!(policy.check(&openai, set).is_ok());
        let proxy = job("{ base_url: 'http://litellm.internal:4000/v1', api_key_env: PROXY_KEY }");
        assert!(policy.check(&proxy, set).is_ok());
        let stolen = job("{ base_url: 'https://evil.example/v1', api_key_env: PROXY_KEY }");
        let err = policy.check(&stolen, set).unwrap_err().to_string();
        assert!(
            err.contains("--allow-llm-key PROXY_KEY=https://evil.example/v1")
                && err.contains("allowed: http://litellm.internal:4000/v1"),
            "{err}"
        );
        // A key that is not set is never sent.
        assert!(policy.check(&stolen, |_| false).is_ok());

        let pr = spec_of(
            "name: j\ntask: t\nrepo: https://github.com/o/r.git\n\
             output: { mode: pr, api_url: 'https://evil.example' }\n",
        );
        let err = policy.check(&pr, set).unwrap_err().to_string();
        assert!(
            err.contains("--allow-pr-token GITHUB_TOKEN=https://evil.example"),
            "{err}"
        );
    }
}
