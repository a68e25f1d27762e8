//! The `output` section: how the result leaves the sandbox. Defaults (`patch`; for pull requests
//! the `GITHUB_TOKEN` variable, GitHub's API, and the job's `ref` as the base branch), the fields
//! that belong to one mode only, and what `branch` and `pr` need from `repo`.

use super::raw::RawOutput;
use super::spec::{OutputMode, OutputSettings, RepoSource, DEFAULT_GITHUB_API, DEFAULT_PR_BASE};
use super::validate::Problems;
use crate::result::pr_repo_of;

/// `output`, with defaults. `repo_written` is whether the file has a `repo` at all; `repo` is
/// that value once valid (an invalid one is already reported).
pub(crate) fn output_settings(
    p: &mut Problems,
    raw: Option<&RawOutput>,
    repo_written: bool,
    repo: Option<&RepoSource>,
    git_ref: Option<&str>,
) -> OutputSettings {
    let defaults = OutputSettings {
        base: git_ref.unwrap_or(DEFAULT_PR_BASE).to_string(),
        ..OutputSettings::default()
    };
    let Some(raw) = raw else {
        return defaults;
    };
    let mode = raw.mode.unwrap_or_default();
    let settings = OutputSettings {
        mode,
        branch: raw.branch.clone().map(|b| b.0),
        token_env: raw.token_env.clone().map_or(defaults.token_env, |t| t.0),
        base: raw.base.clone().map_or(defaults.base, |b| b.0),
        api_url: raw.api_url.clone().map_or(defaults.api_url, |u| u.0),
        title: raw.title.clone().map(|t| t.0),
    };

    if mode == OutputMode::Patch && raw.branch.is_some() {
        p.at(
            &["output", "branch"],
            "`branch` is only used with `mode: branch` or `mode: pr`: add one of them to \
             `output`, or remove `branch`",
        );
    }
    if mode != OutputMode::Pr {
        for (field, present) in [
            ("token_env", raw.token_env.is_some()),
            ("base", raw.base.is_some()),
            ("api_url", raw.api_url.is_some()),
            ("title", raw.title.is_some()),
        ] {
            if present {
                p.at(
                    &["output", field],
                    format!(
                        "`{field}` is only used with `mode: pr`: add `mode: pr` to `output`, \
                         or remove `{field}`"
                    ),
                );
            }
        }
    }

    let mode_name = match mode {
        OutputMode::Patch => return settings,
        OutputMode::Branch => "branch",
        OutputMode::Pr => "pr",
    };
    if !repo_written {
        p.at(
            &["output", "mode"],
            format!(
                "`mode: {mode_name}` pushes a branch, so it needs a `repo`: add `repo:` with \
                 the repository's URL, or use `mode: patch`"
            ),
        );
        return settings;
    }
    if mode != OutputMode::Pr {
        return settings;
    }
    let default_api = settings.api_url.trim_end_matches('/') == DEFAULT_GITHUB_API;
    let problem = match repo {
        // Invalid, and already reported.
        None => None,
        Some(RepoSource::Path(_)) => Some(
            "`mode: pr` needs `repo` to be the URL of the repository on GitHub, not a local \
             path: write it like `https://github.com/org/app.git`, or use `mode: branch`",
        ),
        Some(RepoSource::Url(url)) if pr_repo_of(url, &settings.api_url).is_some() => None,
        Some(RepoSource::Url(_)) if default_api => Some(
            "`mode: pr` opens the pull request on github.com, but `repo` is not a github.com \
             repository URL: write it like `https://github.com/org/app.git`, or set \
             `output.api_url` to your GitHub Enterprise API (like `https://ghe.example.com/api/v3`)",
        ),
        Some(RepoSource::Url(_)) => Some(
            "`mode: pr` needs the `owner/name` of the repository, but `repo` does not end in \
             one: write it like `https://ghe.example.com/org/app.git`",
        ),
    };
    if let Some(problem) = problem {
        p.at(&["repo"], problem);
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{
        assert_agent_error as assert_error, ok, one_error, parse_in, AGENT, COMMAND,
    };
    use super::*;
    use crate::job::DEFAULT_TOKEN_ENV;

    const GITHUB: &str = "repo: https://github.com/org/app.git\n";

    #[test]
    fn patch_is_the_default_and_pr_settings_have_defaults() {
        let spec = ok(AGENT);
        assert_eq!(spec.output, OutputSettings::default());
        assert_eq!(spec.output.mode, OutputMode::Patch);
        assert_eq!(spec.output.token_env, DEFAULT_TOKEN_ENV);
        assert_eq!(spec.output.api_url, "https://api.github.com");
        assert_eq!(spec.output.base, "main");
        assert_eq!(spec.output.title, None);

        let spec = ok(&format!("{AGENT}{GITHUB}output: {{ mode: pr }}\n"));
        assert_eq!(spec.output.mode, OutputMode::Pr);
        assert_eq!(
            (spec.output.token_env.as_str(), spec.output.base.as_str()),
            ("GITHUB_TOKEN", "main")
        );
    }

    #[test]
    fn the_pr_base_defaults_to_the_ref() {
        let spec = ok(&format!(
            "{AGENT}{GITHUB}ref: release/2\noutput: {{ mode: pr }}\n"
        ));
        assert_eq!(spec.output.base, "release/2");
        let spec = ok(&format!(
            "{AGENT}{GITHUB}ref: release/2\noutput: {{ mode: pr, base: develop }}\n"
        ));
        assert_eq!(spec.output.base, "develop");
        assert_eq!(ok(&format!("{AGENT}ref: v1\n")).output.base, "v1");
    }

    #[test]
    fn every_pr_field_is_kept() {
        let spec = ok(&format!(
            "{AGENT}{GITHUB}output:\n  mode: pr\n  branch: runner/fix-1\n  token_env: GH_PAT\n  \
             base: develop\n  api_url: https://api.github.com/\n  title: Fix the greeting\n"
        ));
        assert_eq!(
            spec.output,
            OutputSettings {
                mode: OutputMode::Pr,
                branch: Some("runner/fix-1".into()),
                token_env: "GH_PAT".into(),
                base: "develop".into(),
                api_url: "https://api.github.com/".into(),
                title: Some("Fix the greeting".into()),
            }
        );
    }

    #[test]
    fn single_values_are_checked_where_they_are_written() {
        assert_error(
            &format!("{GITHUB}output: {{ mode: pr, token_env: 1TOKEN }}\n"),
            (4, 32),
            "output.token_env: `1TOKEN` is not a valid variable name",
        );
        assert_error(
            &format!("{GITHUB}output: {{ mode: pr, api_url: 'ftp://x' }}\n"),
            (4, 30),
            "output.api_url: `ftp://x` is not an http(s) URL",
        );
        assert_error(
            &format!("{GITHUB}output: {{ mode: pr, base: 'a..b' }}\n"),
            (4, 27),
            "output.base: `a..b` is not a valid git ref",
        );
        assert_error(
            &format!("{GITHUB}output: {{ mode: pr, title: '  ' }}\n"),
            (4, 28),
            "output.title: is empty",
        );
        assert_error(
            "output: { mode: pr, labels: [x] }\n",
            (3, 21),
            "output: unknown field `labels`",
        );
    }

    #[test]
    fn branch_and_pr_need_a_repo() {
        for mode in ["branch", "pr"] {
            let (at, msg) = one_error(&format!("{AGENT}output:\n  mode: {mode}\n"));
            assert_eq!(at, Some((4, 3)), "{mode}");
            assert_eq!(
                msg,
                format!(
                    "`mode: {mode}` pushes a branch, so it needs a `repo`: add `repo:` with the \
                     repository's URL, or use `mode: patch`"
                )
            );
        }
        let spec = ok(&format!(
            "{AGENT}repo: git@git.example.com:org/app.git\noutput: {{ mode: branch }}\n"
        ));
        assert_eq!(spec.output.mode, OutputMode::Branch);
    }

    #[test]
    fn a_local_repo_can_take_a_branch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let spec = parse_in(
            dir.path(),
            &format!("{AGENT}repo: app\noutput: {{ mode: branch, branch: runner/x }}\n"),
        )
        .unwrap();
        assert_eq!(spec.output.branch.as_deref(), Some("runner/x"));
    }

    #[test]
    fn pr_needs_a_github_url() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let errors = parse_in(
            dir.path(),
            &format!("{AGENT}repo: app\noutput: {{ mode: pr }}\n"),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].location, Some((3, 1)));
        assert!(
            errors[0]
                .message
                .starts_with("`mode: pr` needs `repo` to be the URL of the repository on GitHub"),
            "{}",
            errors[0].message
        );

        let (at, msg) = one_error(&format!(
            "{AGENT}repo: https://gitlab.com/org/app.git\noutput: {{ mode: pr }}\n"
        ));
        assert_eq!(at, Some((3, 1)));
        assert!(
            msg.starts_with("`mode: pr` opens the pull request on github.com, but `repo` is not"),
            "{msg}"
        );
        assert!(msg.contains("set `output.api_url`"), "{msg}");
    }

    #[test]
    fn an_enterprise_or_stub_api_takes_any_url_ending_in_owner_and_name() {
        let spec = ok(&format!(
            "{AGENT}repo: https://ghe.example.com/org/app.git\n\
             output: {{ mode: pr, api_url: 'https://ghe.example.com/api/v3' }}\n"
        ));
        assert_eq!(spec.output.api_url, "https://ghe.example.com/api/v3");
        ok(&format!(
            "{AGENT}repo: file:///srv/git/org/app.git\noutput: {{ mode: pr, api_url: 'http://127.0.0.1:8080' }}\n"
        ));
        let (at, msg) = one_error(&format!(
            "{AGENT}repo: https://ghe.example.com/app.git\n\
             output: {{ mode: pr, api_url: 'https://ghe.example.com/api/v3' }}\n"
        ));
        assert_eq!(at, Some((3, 1)));
        assert!(
            msg.starts_with("`mode: pr` needs the `owner/name` of the repository"),
            "{msg}"
        );
    }

    #[test]
    fn fields_of_other_modes_are_refused() {
        let (at, msg) = one_error(&format!("{AGENT}output:\n  branch: runner/x\n"));
        assert_eq!(at, Some((4, 3)));
        assert!(
            msg.starts_with("`branch` is only used with `mode: branch` or `mode: pr`"),
            "{msg}"
        );
        for field in [
            "token_env: T",
            "base: dev",
            "api_url: 'https://x'",
            "title: hi",
        ] {
            let name = field.split(':').next().unwrap();
            let (at, msg) = one_error(&format!(
                "{AGENT}{GITHUB}output:\n  mode: branch\n  {field}\n"
            ));
            assert_eq!(at, Some((6, 3)), "{field}");
            assert_eq!(
                msg,
                format!(
                    "`{name}` is only used with `mode: pr`: add `mode: pr` to `output`, \
                     or remove `{name}`"
                )
            );
        }
    }

    #[test]
    fn an_invalid_repo_is_reported_once() {
        let errors = super::super::testutil::parse(&format!(
            "{AGENT}repo: ./missing\noutput: {{ mode: pr }}\n"
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].message.contains("does not exist"));
    }

    #[test]
    fn a_command_job_reports_only_that_output_is_for_agents() {
        let (_, msg) = one_error(&format!("{COMMAND}output: {{ mode: pr }}\n"));
        assert!(msg.starts_with("`output` is only for agent jobs"), "{msg}");
    }
}
