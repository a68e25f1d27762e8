//! The container of an agent attempt: Aider behind a small shell wrapper that waits for the
//! workspace before it starts (the attempt uploads it, then creates [`READY_FILE`]).

use crate::job::JobSpec;
use crate::sandbox::{ContainerPlan, Labels, Secret};

/// File the wrapper waits for before starting Aider (the workspace is in place).
pub const READY_FILE: &str = "/tmp/.runner-workspace-ready";
/// Waits for the workspace, copies the image's warm Aider home into a writable one (the root
/// file system is read-only), then becomes Aider with the gateway as its OpenAI endpoint. The
/// token stays in the environment (`OPENAI_API_KEY`, which Aider reads): on a command line every
/// local user of the host would see it in `ps`.
///
/// For a model the image's metadata file does not describe, Aider looks in a price map it
/// fetches from the internet (unreachable from the sandbox: a DNS timeout of several seconds and
/// an error on screen) unless its cached copy is under a day old: the wrapper seeds that cache,
/// fresh, with the copy litellm ships.
const WRAPPER: &str = r#"i=0
while [ ! -e /tmp/.runner-workspace-ready ]; do
  i=$((i+1)); if [ $i -gt 2400 ]; then echo "runner: the workspace never arrived" >&2; exit 97; fi
  sleep 0.05
done
mkdir -p "$HOME" && { [ -d /home/runner ] && cp -a /home/runner/. "$HOME"/ 2>/dev/null; true; }
for m in /venv/lib/python3*/site-packages/litellm/model_prices_and_context_window_backup.json; do
  [ -f "$m" ] && mkdir -p "$HOME/.aider/caches" \
    && cp "$m" "$HOME/.aider/caches/model_prices_and_context_window.json"
done
cd /workspace
if [ -f /etc/runner/aider-models.json ]; then set -- --model-metadata-file /etc/runner/aider-models.json "$@"; fi
if [ -f /etc/runner/aider-model-settings.yml ]; then set -- --model-settings-file /etc/runner/aider-model-settings.yml "$@"; fi
exec aider --openai-api-base "$OPENAI_API_BASE" "$@"
"#;

/// The container of an agent attempt.
pub fn plan(
    spec: &JobSpec,
    labels: Labels,
    secrets: Vec<(String, Secret)>,
    grace: i64,
) -> ContainerPlan {
    let mut command: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "runner-agent".into(),
    ];
    command.extend(
        [
            "--model",
            &spec.agent.model,
            "--edit-format",
            &spec.agent.edit_format,
            "--no-fancy-input",
            "--no-pretty",
            "--yes-always",
            "--no-check-update",
            "--no-analytics",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "--no-gitignore",
            "--no-auto-lint",
            "--no-suggest-shell-commands",
            "--no-detect-urls",
            "--timeout",
            "120",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut plan = ContainerPlan::for_command(spec, &command, labels, secrets, grace);
    plan.stdin = true;
    for (k, v) in [
        ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ("PYTHONUNBUFFERED", "1"),
        ("TERM", "dumb"),
        ("HOME", "/tmp/home"),
        // Byte-code caches written by verify would otherwise end up in the exported patch.
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ] {
        plan.env.0.entry(k.into()).or_insert_with(|| v.into());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_agent_plan_keeps_stdin_open_and_never_carries_the_key() {
        let spec =
            crate::job::parse_str("name: a\ntask: do it\n", Path::new("/tmp/j.yaml")).unwrap();
        let labels = Labels {
            state: "s".into(),
            job: "j".into(),
            attempt: 1,
        };
        let plan = plan(&spec, labels, vec![], 10);
        assert!(plan.stdin);
        assert!(plan.command.iter().any(|a| a == "--no-fancy-input"));
        assert!(!plan.command.join(" ").contains("OPENAI_API_KEY="));
        assert!(
            !plan.command.join(" ").contains("--openai-api-key"),
            "the token never goes on Aider's command line"
        );
        assert_eq!(
            plan.env.0.get("HOME").map(String::as_str),
            Some("/tmp/home")
        );
    }
}
