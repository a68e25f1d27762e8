//! The agent-side settings of a job (`manager`, `llm`): defaults, the `mode: script` / `steps`
//! pairing, and cassette paths for recording and replaying LLM exchanges.

use super::paths::resolve;
use super::raw::{RawLlm, RawManager, RawManagerMode};
use super::spec::{LlmSettings, ManagerMode, ManagerSettings, ManagerStep};
use super::validate::Problems;
use std::path::{Path, PathBuf};

/// `manager`, with defaults; `steps` go with `mode: script` and only with it.
pub(crate) fn manager_settings(p: &mut Problems, raw: Option<&RawManager>) -> ManagerSettings {
    let defaults = ManagerSettings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let steps: Option<Vec<ManagerStep>> = raw.steps.as_ref().map(|steps| {
        steps
            .iter()
            .map(|s| ManagerStep {
                action: s.action,
                argument: s.argument.clone().map(|t| t.0).unwrap_or_default(),
                progress: s.progress.clone().map(|t| t.0).unwrap_or_default(),
                thought: s.thought.clone().map(|t| t.0).unwrap_or_default(),
            })
            .collect()
    });
    let mode = match (raw.mode, steps) {
        (Some(RawManagerMode::Script), Some(steps)) if !steps.is_empty() => {
            ManagerMode::Script { steps }
        }
        (Some(RawManagerMode::Script), _) => {
            p.at(
                &["manager", "mode"],
                "`mode: script` needs a non-empty `steps` list of manager answers: \
                 add `steps: [{ action: finish, argument: done }]` for example",
            );
            defaults.mode
        }
        (_, Some(_)) => {
            p.at(
                &["manager", "steps"],
                "`steps` are only used with `mode: script`: add `mode: script` to `manager`, \
                 or remove `steps`",
            );
            defaults.mode
        }
        (Some(RawManagerMode::None), None) => ManagerMode::None,
        (Some(RawManagerMode::Llm) | None, None) => ManagerMode::Llm,
    };
    ManagerSettings {
        mode,
        model: raw.model.clone().map_or(defaults.model, |m| m.0),
        max_turns: raw.max_turns.map_or(defaults.max_turns, |m| m.0),
        max_tokens: raw.max_tokens.map_or(defaults.max_tokens, |m| m.0),
        call_timeout: raw.call_timeout.map_or(defaults.call_timeout, |t| t.0),
    }
}

/// `llm`, with cassette paths resolved; record and replay exclude each other.
pub(crate) fn llm_settings(p: &mut Problems, base: &Path, llm: Option<&RawLlm>) -> LlmSettings {
    let defaults = LlmSettings::default();
    let Some(llm) = llm else {
        return defaults;
    };
    let record: Option<PathBuf> = llm.record.as_ref().map(|r| resolve(base, &r.0));
    let replay: Option<PathBuf> = llm.replay.as_ref().map(|r| resolve(base, &r.0));
    for (key, path) in [("record", &record), ("replay", &replay)] {
        if let Some(path) = path {
            if let Err(message) = super::paths::check_inside(base, path) {
                p.at(&["llm", key], format!("llm.{key}: {message}"));
            }
        }
    }
    if record.is_some() && replay.is_some() {
        p.at(
            &["llm", "replay"],
            "`llm.record` and `llm.replay` are both set: keep `record` to save a new cassette \
             or `replay` to answer from one",
        );
    } else if let Some(replay) = &replay {
        if !replay.is_file() {
            p.at(
                &["llm", "replay"],
                format!(
                    "cassette `{}` does not exist (relative paths start at the job file's \
                     directory): fix the path, or record one first with `llm.record`",
                    replay.display()
                ),
            );
        }
    }
    LlmSettings {
        base_url: llm.base_url.clone().map(|u| u.0),
        api_key_env: llm
            .api_key_env
            .clone()
            .map_or(defaults.api_key_env, |k| k.0),
        record,
        replay,
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::ManagerAction;
    use super::super::testutil::{ok, one_error, parse_in, AGENT};
    use super::*;

    #[test]
    fn script_mode_replays_its_steps() {
        let spec = ok(&format!(
            "{AGENT}manager:\n  mode: script\n  steps:\n    - {{ action: instruct, argument: add greet }}\n    - action: finish\n      progress: done\n"
        ));
        let ManagerMode::Script { steps } = spec.manager.mode else {
            panic!("expected script mode, got {:?}", spec.manager.mode);
        };
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (steps[0].action, steps[0].argument.as_str()),
            (ManagerAction::Instruct, "add greet")
        );
        assert_eq!(
            (
                steps[1].action,
                steps[1].progress.as_str(),
                steps[1].thought.as_str()
            ),
            (ManagerAction::Finish, "done", "")
        );
    }

    #[test]
    fn script_mode_needs_steps() {
        for manager in [
            "manager:\n  mode: script\n",
            "manager:\n  mode: script\n  steps: []\n",
        ] {
            let (at, msg) = one_error(&format!("{AGENT}{manager}"));
            assert_eq!(at, Some((4, 3)), "{manager}");
            assert!(
                msg.starts_with("`mode: script` needs a non-empty `steps` list"),
                "{msg}"
            );
        }
    }

    #[test]
    fn steps_need_script_mode() {
        let (at, msg) = one_error(&format!(
            "{AGENT}manager:\n  mode: llm\n  steps: [{{ action: finish }}]\n"
        ));
        assert_eq!(at, Some((5, 3)));
        assert!(
            msg.starts_with("`steps` are only used with `mode: script`"),
            "{msg}"
        );
        let (at, _) = one_error(&format!(
            "{AGENT}manager: {{ steps: [{{ action: undo }}] }}\n"
        ));
        assert_eq!(at, Some((3, 12)));
    }

    #[test]
    fn mode_none_sends_one_message() {
        let spec = ok(&format!("{AGENT}manager: {{ mode: none, model: big }}\n"));
        assert_eq!(spec.manager.mode, ManagerMode::None);
        assert_eq!(spec.manager.model, "big");
    }

    #[test]
    fn manager_calls_are_bounded_by_default_and_as_set() {
        let spec = ok(AGENT);
        assert_eq!(
            (spec.manager.max_tokens, spec.manager.call_timeout),
            (1000, std::time::Duration::from_secs(120))
        );
        let spec = ok(&format!(
            "{AGENT}manager: {{ max_tokens: 300, call_timeout: 1m30s }}\n"
        ));
        assert_eq!(
            (spec.manager.max_tokens, spec.manager.call_timeout),
            (300, std::time::Duration::from_secs(90))
        );
    }

    #[test]
    fn manager_bounds_out_of_range_are_located() {
        let (at, msg) = one_error(&format!("{AGENT}manager:\n  max_tokens: 5\n"));
        assert_eq!(at, Some((4, 15)));
        assert!(
            msg.starts_with(
                "manager.max_tokens: 5 is out of range: use a whole number of tokens from 16"
            ),
            "{msg}"
        );
        let (at, msg) = one_error(&format!("{AGENT}manager:\n  call_timeout: 2h\n"));
        assert_eq!(at, Some((4, 17)));
        assert!(
            msg.starts_with(
                "manager.call_timeout: 2h is out of range: use a duration from 1s to 1h"
            ),
            "{msg}"
        );
    }

    #[test]
    fn cassette_paths_resolve_against_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cassettes")).unwrap();
        std::fs::write(dir.path().join("cassettes/demo.jsonl"), "").unwrap();
        let replay = parse_in(
            dir.path(),
            &format!("{AGENT}llm:\n  replay: cassettes/demo.jsonl\n"),
        )
        .unwrap();
        assert_eq!(
            replay.llm.replay,
            Some(dir.path().join("cassettes/demo.jsonl"))
        );
        let record = parse_in(
            dir.path(),
            &format!("{AGENT}llm:\n  record: ./out/../new.jsonl\n"),
        )
        .unwrap();
        assert_eq!(record.llm.record, Some(dir.path().join("new.jsonl")));
        assert!(record.llm.record.unwrap().is_absolute());
    }

    #[test]
    fn a_replayed_cassette_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let errors = parse_in(
            dir.path(),
            &format!("{AGENT}llm:\n  base_url: http://x\n  replay: gone.jsonl\n"),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].location, Some((5, 3)));
        assert!(
            errors[0].message.starts_with("cassette `"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[0].message.contains("gone.jsonl` does not exist"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn record_and_replay_exclude_each_other() {
        let (at, msg) = one_error(&format!(
            "{AGENT}llm: {{ record: a.jsonl, replay: b.jsonl }}\n"
        ));
        assert_eq!(at, Some((3, 25)));
        assert!(
            msg.starts_with("`llm.record` and `llm.replay` are both set"),
            "{msg}"
        );
    }

    #[test]
    fn llm_settings_are_kept() {
        let spec = ok(&format!(
            "{AGENT}llm: {{ base_url: 'https://api.example.com/v1', api_key_env: MY_KEY }}\n"
        ));
        assert_eq!(
            spec.llm.base_url.as_deref(),
            Some("https://api.example.com/v1")
        );
        assert_eq!(spec.llm.api_key_env, "MY_KEY");
    }
}
