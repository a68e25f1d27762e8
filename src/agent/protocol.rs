//! The manager protocol (docs/design.md, "Manager protocol"): what the manager LLM is told each turn and
//! how its answer is read. Each turn carries only what is new since the last one, trimmed to a
//! bounded head and tail, plus a short state line and a bounded history, so the cost of a turn
//! does not grow with the length of the session.

use crate::job::{ManagerAction, ManagerStep};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Characters of new output kept from the start and from the end of a turn's output.
pub const OUTPUT_HEAD: usize = 1_500;
pub const OUTPUT_TAIL: usize = 4_500;
/// Turns remembered in the history.
pub const HISTORY_TURNS: usize = 6;
/// Characters of each remembered argument and result.
const HISTORY_ITEM: usize = 160;
/// Characters of the task kept (the task is sent every turn).
const TASK_MAX: usize = 4_000;
/// Characters of each operator message kept, and messages kept per turn (the newest).
const OPERATOR_MAX: usize = 4_000;
pub const OPERATOR_MESSAGES: usize = 4;

pub const SYSTEM_PROMPT: &str = r#"You manage Aider, an AI pair programmer working in a git repository inside a sandbox. Each turn you see Aider's new output and decide the next step. Answer with exactly one JSON object:
{"progress": "<one line: where the work stands>", "thought": "<one line: why this step>", "action": "<action>", "argument": "<argument>"}
Actions:
- "instruct": type the argument (a precise instruction) into Aider; it edits files and commits.
- "run": run the argument as a shell command through Aider's /run and show its output.
- "test": run the argument as a test command through Aider's /test; failures go to Aider to fix.
- "add" / "drop": add or drop the files named in the argument (space-separated) to or from Aider's chat.
- "undo": undo Aider's last commit (argument empty).
- "finish": the task is done; the argument summarises the change. The runner then runs the job's verification; if it fails you are told and may continue.
- "fail": the task cannot be done; the argument says why.
The operator, a person overseeing this job, may send messages; Aider has already received them. An operator's message takes precedence over the task where they differ.
Keep instructions concrete and small. Do not repeat an action that changed nothing."#;

/// One remembered turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    pub turn: u32,
    pub action: ManagerAction,
    pub argument: String,
    /// What came of it, in a few words.
    pub result: String,
}

/// What the manager sees on one turn.
#[derive(Clone, Debug, Default)]
pub struct TurnContext {
    pub task: String,
    pub turn: u32,
    pub max_turns: u32,
    pub files_changed: Vec<String>,
    /// "passed", "failed: ..." or none yet.
    pub last_verify: Option<String>,
    pub history: VecDeque<HistoryItem>,
    /// Aider's output since the previous turn (untrimmed; trimmed when the prompt is built).
    pub new_output: String,
    /// The operator's messages typed into Aider since the previous turn (`runner send`).
    pub operator: Vec<String>,
}

impl TurnContext {
    /// Remembers a turn, forgetting the oldest beyond the bound.
    pub fn remember(&mut self, item: HistoryItem) {
        self.history.push_back(item);
        while self.history.len() > HISTORY_TURNS {
            self.history.pop_front();
        }
    }
}

/// Keeps the first `head` and last `tail` characters, marking what was cut.
pub fn trim_middle(text: &str, head: usize, tail: usize) -> String {
    let chars = text.chars().count();
    if chars <= head + tail {
        return text.to_string();
    }
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(chars - tail).collect();
    format!(
        "{start}\n[... {} characters cut ...]\n{end}",
        chars - head - tail
    )
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max).collect();
    format!("{cut}…")
}

pub fn action_name(action: ManagerAction) -> &'static str {
    match action {
        ManagerAction::Instruct => "instruct",
        ManagerAction::Run => "run",
        ManagerAction::Test => "test",
        ManagerAction::Add => "add",
        ManagerAction::Drop => "drop",
        ManagerAction::Undo => "undo",
        ManagerAction::Finish => "finish",
        ManagerAction::Fail => "fail",
    }
}

/// The chat messages of one turn: the protocol and a bounded view of the session.
pub fn messages(ctx: &TurnContext) -> Vec<Value> {
    let mut user = String::new();
    user.push_str("Task:\n");
    user.push_str(&trim_middle(&ctx.task, TASK_MAX, 0));
    user.push_str(&format!(
        "\n\nState: turn {} of {}; files changed: {}; last verification: {}.\n",
        ctx.turn,
        ctx.max_turns,
        if ctx.files_changed.is_empty() {
            "none".to_string()
        } else {
            short(&ctx.files_changed.join(", "), 300)
        },
        ctx.last_verify
            .as_deref()
            .map(|v| short(v, 600))
            .unwrap_or_else(|| "not run yet".into())
    ));
    if !ctx.history.is_empty() {
        user.push_str("\nRecent turns:\n");
        for h in &ctx.history {
            user.push_str(&format!(
                "- turn {}: {} {:?} -> {}\n",
                h.turn,
                action_name(h.action),
                short(&h.argument, HISTORY_ITEM),
                short(&h.result, HISTORY_ITEM)
            ));
        }
    }
    if !ctx.operator.is_empty() {
        user.push_str(
            "\nThe operator's instructions since your last turn (already typed into Aider; they take precedence over the task):\n",
        );
        let skip = ctx.operator.len().saturating_sub(OPERATOR_MESSAGES);
        for message in ctx.operator.iter().skip(skip) {
            user.push_str(&format!(
                "- {}\n",
                trim_middle(message.trim(), OPERATOR_MAX, 0)
            ));
        }
    }
    user.push_str("\nAider's new output since your last turn:\n```\n");
    user.push_str(&trim_middle(
        ctx.new_output.trim(),
        OUTPUT_HEAD,
        OUTPUT_TAIL,
    ));
    user.push_str("\n```\nAnswer with one JSON object.");
    vec![
        json!({"role": "system", "content": SYSTEM_PROMPT}),
        json!({"role": "user", "content": user}),
    ]
}

/// Reads a manager answer: one JSON object with a known action (code fences tolerated).
pub fn parse_answer(text: &str) -> Result<ManagerStep, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not valid JSON: {e}"))?;
    let Value::Object(obj) = &value else {
        return Err("the answer must be one JSON object".into());
    };
    let action = obj
        .get("action")
        .and_then(Value::as_str)
        .ok_or("the answer has no \"action\" string")?;
    let action: ManagerAction = serde_json::from_value(json!(action)).map_err(|_| {
        format!("unknown action {action:?}: use one of instruct, run, test, add, drop, undo, finish, fail")
    })?;
    let text_field = |name: &str| {
        obj.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let argument = text_field("argument");
    let needs_argument = matches!(
        action,
        ManagerAction::Instruct
            | ManagerAction::Run
            | ManagerAction::Test
            | ManagerAction::Add
            | ManagerAction::Drop
    );
    if needs_argument && argument.trim().is_empty() {
        return Err(format!(
            "action {:?} needs a non-empty \"argument\"",
            action_name(action)
        ));
    }
    Ok(ManagerStep {
        action,
        argument,
        progress: text_field("progress"),
        thought: text_field("thought"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_or_without_fences() {
        let a = parse_answer(
            r#"{"progress":"p","thought":"t","action":"instruct","argument":"do it"}"#,
        )
        .unwrap();
        assert_eq!(
            (a.action, a.argument.as_str()),
            (ManagerAction::Instruct, "do it")
        );
        let b =
            parse_answer("```json\n{\"action\":\"finish\",\"argument\":\"done\"}\n```").unwrap();
        assert_eq!(b.action, ManagerAction::Finish);
    }

    #[test]
    fn bad_answers_say_what_is_wrong() {
        assert!(parse_answer("sure, I'll do that")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(parse_answer(r#"{"action":"dance"}"#)
            .unwrap_err()
            .contains("unknown action \"dance\""));
        assert!(parse_answer(r#"{"action":"instruct"}"#)
            .unwrap_err()
            .contains("non-empty"));
        assert!(parse_answer("[1]").unwrap_err().contains("one JSON object"));
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let text = format!("{}{}{}", "a".repeat(10), "b".repeat(100), "c".repeat(10));
        let t = trim_middle(&text, 10, 10);
        assert!(
            t.starts_with("aaaaaaaaaa\n[... 100 characters cut ...]\ncccccccccc"),
            "{t}"
        );
    }

    #[test]
    fn a_turn_costs_the_same_however_long_the_session() {
        let mut ctx = TurnContext {
            task: "t".into(),
            turn: 1,
            max_turns: 30,
            ..Default::default()
        };
        let size = |ctx: &TurnContext| serde_json::to_string(&messages(ctx)).unwrap().len();
        ctx.new_output = "x".repeat(100_000);
        for turn in 0..50 {
            ctx.remember(HistoryItem {
                turn,
                action: ManagerAction::Instruct,
                argument: "y".repeat(1000),
                result: "z".repeat(1000),
            });
        }
        let late = size(&ctx);
        assert!(
            late < OUTPUT_HEAD + OUTPUT_TAIL + SYSTEM_PROMPT.len() + 3_000,
            "{late}"
        );
        assert_eq!(ctx.history.len(), HISTORY_TURNS);
    }

    #[test]
    fn the_operator_s_messages_reach_the_manager_as_instructions_over_the_task() {
        let mut ctx = TurnContext {
            task: "t".into(),
            turn: 2,
            max_turns: 5,
            ..Default::default()
        };
        let user = |ctx: &TurnContext| messages(ctx)[1]["content"].as_str().unwrap().to_string();
        assert!(!user(&ctx).contains("operator"));
        ctx.operator = (0..6).map(|i| format!("message {i}")).collect();
        let text = user(&ctx);
        assert!(
            text.contains("operator's instructions since your last turn (already typed into Aider; they take precedence over the task):\n- message 2\n"),
            "{text}"
        );
        assert!(
            text.contains("- message 5\n") && !text.contains("message 1"),
            "{text}"
        );
    }
}
