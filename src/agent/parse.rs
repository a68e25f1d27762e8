//! Reading and writing Aider's stdio as text (Aider 0.86.2 started with `--no-fancy-input
//! --no-pretty`, see docs/aider.md): whether its current output line is a prompt or a yes/no question,
//! the progress markers in complete lines, how a message is typed, and which answer a question
//! gets. Pure functions; the I/O lives in `session`.

/// What Aider's last, unfinished output line says about its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptState {
    /// Anything else: Aider is working, or printed something that is not waiting for input.
    Busy,
    /// The input prompt `> `, or one with a mode prefix (`diff> `, `ask> `, `diff multi> `).
    Ready {
        /// The prefix before `> `, if any (`diff`, `ask`, `architect`, `diff multi`).
        mode: Option<String>,
    },
    /// A yes/no question waiting for one line.
    Question {
        /// The question line as printed, options and default included.
        text: String,
        /// True when an empty answer means yes (`[Yes]: `, `(Y/n) `).
        default_yes: bool,
    },
}

/// A progress marker in one complete line of Aider's output.
#[derive(Clone, Debug, PartialEq)]
pub enum AiderEvent {
    /// `Applied edit to <file>`: the file name.
    AppliedEdit(String),
    /// `Commit <sha> <message>`: Aider committed its edit.
    Commit { sha: String, message: String },
    /// `Tokens: X sent, Y received.`, the counts as printed (`812`, `2.3k`, `14k`).
    Tokens { sent: String, received: String },
    /// `Cost: $A message, $B session.` (only when the model's prices are known).
    Cost { message_usd: f64, session_usd: f64 },
}

/// The tag wrapping multi-line messages (`{runner` ... `runner}`), numbered when the message
/// itself contains it.
const MULTILINE_TAG: &str = "runner";

/// Questions declined whatever their default: each would run something the runner does not want
/// run from inside Aider (a browser, a package install, a shell command the LLM suggested: the
/// manager has its own run and test actions).
const DECLINED: &[&str] = &[
    "Open a GitHub Issue",
    "Run shell command",
    "Run pip install?",
    "Install playwright?",
    "Login to OpenRouter",
    "Open URL",
    "Open documentation url",
];

/// The state shown by the text after the last `'\n'` of Aider's output so far (a longer text is
/// cut there). `\r` moves back to the start of the line, as on a terminal; a trailing `\r` (half
/// of a CRLF) and ANSI escape sequences are ignored.
pub fn prompt_state(output_tail: &str) -> PromptState {
    let last = output_tail.rsplit('\n').next().unwrap_or("");
    let line = visible(last);
    if let Some(mode) = prompt_mode(&line) {
        return PromptState::Ready { mode };
    }
    match question_default(&line) {
        Some(default_yes) => PromptState::Question {
            text: line,
            default_yes,
        },
        None => PromptState::Busy,
    }
}

/// The progress markers in one complete output line (without its `'\n'`).
pub fn events(line: &str) -> Vec<AiderEvent> {
    let line = visible(line);
    let line = line.trim();
    let mut found = Vec::new();
    if let Some(file) = line.strip_prefix("Applied edit to ") {
        if !file.is_empty() {
            found.push(AiderEvent::AppliedEdit(file.to_string()));
        }
    } else if let Some(rest) = line.strip_prefix("Commit ") {
        if let Some(commit) = commit(rest) {
            found.push(commit);
        }
    } else if let Some(rest) = line.strip_prefix("Tokens: ") {
        if let Some(tokens) = tokens(rest) {
            found.push(tokens);
        }
    }
    // Cost follows the token counts on the same line, or starts its own line when Aider also
    // reports cache reads and writes.
    if let Some(at) = line.find("Cost: $") {
        if at == 0 || found.iter().any(|e| matches!(e, AiderEvent::Tokens { .. })) {
            if let Some(cost) = cost(&line[at + "Cost: ".len()..]) {
                found.push(cost);
            }
        }
    }
    found
}

/// The text to type for `message`: one line as is; several lines wrapped in `{tag` ... `tag}`
/// with a tag that is not in the message (Aider ends the block at the first line `tag}`). A line
/// that starts with `{` is wrapped too, since Aider could read it as the opening of a block.
pub fn format_input(message: &str) -> String {
    let message = message.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = message
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    if lines.len() == 1 && !message.starts_with('{') {
        return format!("{message}\n");
    }
    let tag = (0..)
        .map(|n| match n {
            0 => MULTILINE_TAG.to_string(),
            n => format!("{MULTILINE_TAG}{n}"),
        })
        .find(|tag| !message.contains(tag.as_str()))
        .expect("some numbered tag is not in a finite message");
    let mut typed = format!("{{{tag}\n");
    for line in lines {
        typed.push_str(line);
        typed.push('\n');
    }
    typed.push_str(&tag);
    typed.push_str("}\n");
    typed
}

/// The answer the runner gives to a question (without the `'\n'`): `n` to the questions in
/// `DECLINED`, otherwise the question's default.
pub fn answer(question: &str, default_yes: bool) -> &'static str {
    if DECLINED.iter().any(|d| question.contains(d)) || !default_yes {
        "n"
    } else {
        "y"
    }
}

/// What a terminal would show of `line`: the text after the last `\r` (ignoring trailing ones),
/// without ANSI CSI escape sequences.
fn visible(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or("");
    if !line.contains('\x1b') {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// `Some(mode)` when the whole line is a prompt: `> ` or words of `[a-z-]` separated by single
/// spaces, then `> `.
fn prompt_mode(line: &str) -> Option<Option<String>> {
    let prefix = line.strip_suffix("> ")?;
    if prefix.is_empty() {
        return Some(None);
    }
    let words_ok = prefix
        .split(' ')
        .all(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
    words_ok.then(|| Some(prefix.to_string()))
}

/// `Some(default_yes)` when the line ends in a yes/no question's options and default.
fn question_default(line: &str) -> Option<bool> {
    // Aider's own questions: "... (Y)es/(N)o[/(A)ll/(S)kip all][/(D)on't ask again] [Yes]: ".
    if line.contains("(Y)es/(N)o") {
        if line.ends_with(" [Yes]: ") {
            return Some(true);
        }
        if line.ends_with(" [No]: ") {
            return Some(false);
        }
    }
    // The crash report's plain `input()`: "Open a GitHub Issue ... browser? (Y/n) ".
    if line.ends_with("(Y/n) ") {
        return Some(true);
    }
    if line.ends_with("(y/N) ") {
        return Some(false);
    }
    None
}

/// `<sha> <message>` after `Commit `: the sha must be 7 to 40 hex digits, so prose such as
/// "Commit the changes" is not taken for a commit.
fn commit(rest: &str) -> Option<AiderEvent> {
    let (sha, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let hex = (7..=40).contains(&sha.len()) && sha.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| AiderEvent::Commit {
        sha: sha.to_string(),
        message: message.trim().to_string(),
    })
}

/// `X sent[, N cache write][, N cache hit], Y received.` after `Tokens: `.
fn tokens(rest: &str) -> Option<AiderEvent> {
    let mut sent = None;
    let mut received = None;
    for part in rest.split(',') {
        let part = part.trim();
        let part = part
            .split(". ")
            .next()
            .unwrap_or(part)
            .trim_end_matches('.');
        if let Some(count) = part.strip_suffix(" sent") {
            sent = Some(count.trim().to_string());
        } else if let Some(count) = part.strip_suffix(" received") {
            received = Some(count.trim().to_string());
        }
    }
    Some(AiderEvent::Tokens {
        sent: sent?,
        received: received?,
    })
}

/// `$A message, $B session.` after `Cost: `.
fn cost(rest: &str) -> Option<AiderEvent> {
    let (message, session) = rest.split_once(',')?;
    let message_usd = dollars(message.trim().strip_suffix(" message")?)?;
    let session = session.trim();
    let session = session.strip_suffix('.').unwrap_or(session);
    let session_usd = dollars(session.strip_suffix(" session")?)?;
    Some(AiderEvent::Cost {
        message_usd,
        session_usd,
    })
}

/// `$0.0012` as a number.
fn dollars(text: &str) -> Option<f64> {
    text.trim().strip_prefix('$')?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ready(mode: Option<&str>) -> PromptState {
        PromptState::Ready {
            mode: mode.map(str::to_string),
        }
    }

    #[test]
    fn bare_prompt_at_line_start_is_ready() {
        assert_eq!(prompt_state("> "), ready(None));
        assert_eq!(
            prompt_state("Tokens: 1 sent, 2 received.\n\n> "),
            ready(None)
        );
    }

    #[test]
    fn mode_prefixed_prompts_are_ready_with_their_mode() {
        for mode in [
            "diff",
            "ask",
            "architect",
            "whole",
            "udiff-simple",
            "diff multi",
        ] {
            assert_eq!(
                prompt_state(&format!("\n{mode}> ")),
                ready(Some(mode)),
                "{mode}"
            );
        }
    }

    #[test]
    fn prompt_after_in_chat_file_names_is_ready() {
        assert_eq!(
            prompt_state("\nhello.py\nsrc/lib.rs\ndiff> "),
            ready(Some("diff"))
        );
    }

    #[test]
    fn prompt_without_its_space_is_busy() {
        assert_eq!(prompt_state(">"), PromptState::Busy);
        assert_eq!(prompt_state("diff>"), PromptState::Busy);
    }

    #[test]
    fn text_after_the_prompt_is_busy() {
        assert_eq!(prompt_state("> x"), PromptState::Busy);
        assert_eq!(prompt_state(">  "), PromptState::Busy);
        assert_eq!(prompt_state("> \n"), PromptState::Busy);
    }

    #[test]
    fn prompt_not_at_line_start_is_busy() {
        assert_eq!(prompt_state("see a > "), PromptState::Busy);
        assert_eq!(prompt_state("Diff> "), PromptState::Busy);
        assert_eq!(prompt_state("x2> "), PromptState::Busy);
    }

    #[test]
    fn continuation_prompts_on_one_line_are_busy() {
        // Aider prints the prompt again for each line of a multi-line message, with no newline
        // in between: the line reads "> > > " until Aider has read the whole block.
        assert_eq!(prompt_state("> > "), PromptState::Busy);
        assert_eq!(prompt_state("diff> diff> diff> "), PromptState::Busy);
    }

    #[test]
    fn carriage_returns_are_handled_like_a_terminal() {
        assert_eq!(prompt_state("working...\r> "), ready(None));
        assert_eq!(prompt_state("> \r"), ready(None));
        assert_eq!(prompt_state("> \r\n"), PromptState::Busy);
        assert_eq!(prompt_state("> \rmore"), PromptState::Busy);
    }

    #[test]
    fn ansi_escapes_are_ignored() {
        assert_eq!(
            prompt_state("\x1b[0m\x1b[1;32mdiff> \x1b[0m"),
            ready(Some("diff"))
        );
    }

    #[test]
    fn question_with_yes_default() {
        let line = "Add file to the chat? (Y)es/(N)o/(A)ll/(S)kip all/(D)on't ask again [Yes]: ";
        assert_eq!(
            prompt_state(&format!("hello.py\n{line}")),
            PromptState::Question {
                text: line.to_string(),
                default_yes: true
            }
        );
    }

    #[test]
    fn question_with_no_default() {
        let line = "Fix lint errors in a.py? (Y)es/(N)o [No]: ";
        assert_eq!(
            prompt_state(line),
            PromptState::Question {
                text: line.to_string(),
                default_yes: false
            }
        );
    }

    #[test]
    fn crash_report_question_is_a_question() {
        let line = "Open a GitHub Issue pre-filled with the above error in your browser? (Y/n) ";
        assert_eq!(
            prompt_state(&format!(
                "Please consider reporting this bug to help improve aider!\n{line}"
            )),
            PromptState::Question {
                text: line.to_string(),
                default_yes: true
            }
        );
    }

    #[test]
    fn question_followed_by_more_text_is_busy() {
        assert_eq!(prompt_state("Edit? (Y)es/(N)o [Yes]: y"), PromptState::Busy);
        assert_eq!(prompt_state("Edit? (Y)es/(N)o [Yes]:"), PromptState::Busy);
        assert_eq!(prompt_state("the answer is [Yes]: "), PromptState::Busy);
    }

    #[test]
    fn only_the_last_line_counts() {
        assert_eq!(prompt_state("> \nApplying edits"), PromptState::Busy);
        assert_eq!(prompt_state(""), PromptState::Busy);
    }

    #[test]
    fn applied_edit_names_the_file() {
        assert_eq!(
            events("Applied edit to src/hello world.py"),
            vec![AiderEvent::AppliedEdit("src/hello world.py".into())]
        );
        assert_eq!(events("Applied edit to "), vec![]);
    }

    #[test]
    fn commit_has_sha_and_message() {
        assert_eq!(
            events("Commit 1a2b3c4 feat: Add hello function"),
            vec![AiderEvent::Commit {
                sha: "1a2b3c4".into(),
                message: "feat: Add hello function".into()
            }]
        );
    }

    #[test]
    fn commit_needs_a_hex_sha() {
        assert_eq!(events("Commit the changes when done"), vec![]);
        assert_eq!(events("Commit abc message"), vec![]);
    }

    #[test]
    fn tokens_alone() {
        assert_eq!(
            events("Tokens: 2.3k sent, 88 received."),
            vec![AiderEvent::Tokens {
                sent: "2.3k".into(),
                received: "88".into()
            }]
        );
    }

    #[test]
    fn tokens_then_cost_on_the_same_line() {
        assert_eq!(
            events("Tokens: 14k sent, 1.2k received. Cost: $0.0012 message, $0.03 session."),
            vec![
                AiderEvent::Tokens {
                    sent: "14k".into(),
                    received: "1.2k".into()
                },
                AiderEvent::Cost {
                    message_usd: 0.0012,
                    session_usd: 0.03
                }
            ]
        );
    }

    #[test]
    fn tokens_with_cache_counts() {
        assert_eq!(
            events("Tokens: 3.1k sent, 2.0k cache write, 1.5k cache hit, 120 received."),
            vec![AiderEvent::Tokens {
                sent: "3.1k".into(),
                received: "120".into()
            }]
        );
    }

    #[test]
    fn cost_on_its_own_line() {
        assert_eq!(
            events("Cost: $0.00 message, $1.25 session."),
            vec![AiderEvent::Cost {
                message_usd: 0.0,
                session_usd: 1.25
            }]
        );
    }

    #[test]
    fn cost_inside_prose_is_not_an_event() {
        assert_eq!(events("The Cost: $5 message, $6 session. is high"), vec![]);
    }

    #[test]
    fn markers_tolerate_crlf_and_surrounding_space() {
        assert_eq!(
            events("Applied edit to a.py\r"),
            vec![AiderEvent::AppliedEdit("a.py".into())]
        );
    }

    #[test]
    fn ordinary_lines_have_no_events() {
        assert_eq!(events("hello.py"), vec![]);
        assert_eq!(events("Tokens: many"), vec![]);
    }

    #[test]
    fn single_line_message_is_typed_as_is() {
        assert_eq!(format_input("Add greet()"), "Add greet()\n");
        assert_eq!(format_input("/run make test\n"), "/run make test\n");
    }

    #[test]
    fn multi_line_message_is_wrapped_in_a_tag() {
        assert_eq!(
            format_input("first\r\n\nthird\n"),
            "{runner\nfirst\n\nthird\nrunner}\n"
        );
    }

    #[test]
    fn wrap_tag_avoids_text_in_the_message() {
        assert_eq!(
            format_input("a\nrunner}\nrunner1 too"),
            "{runner2\na\nrunner}\nrunner1 too\nrunner2}\n"
        );
    }

    #[test]
    fn single_line_starting_with_a_brace_is_wrapped() {
        assert_eq!(format_input("{x"), "{runner\n{x\nrunner}\n");
    }

    #[test]
    fn answers_take_the_default() {
        assert_eq!(answer("Create new file? (Y)es/(N)o [Yes]: ", true), "y");
        assert_eq!(
            answer("Fix lint errors in a.py? (Y)es/(N)o [No]: ", false),
            "n"
        );
    }

    #[test]
    fn answers_decline_crash_reports_and_suggested_shell_commands() {
        let issue = "Open a GitHub Issue pre-filled with the above error in your browser? (Y/n) ";
        assert_eq!(answer(issue, true), "n");
        assert_eq!(
            answer(
                "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ",
                true
            ),
            "n"
        );
        assert_eq!(
            answer(
                "Run shell commands? (Y)es/(N)o/(S)kip all/(D)on't ask again [Yes]: ",
                true
            ),
            "n"
        );
    }

    #[test]
    fn answers_decline_installs_and_browsers() {
        assert_eq!(answer("Run pip install? (Y)es/(N)o [Yes]: ", true), "n");
        assert_eq!(answer("Install playwright? (Y)es/(N)o [Yes]: ", true), "n");
        assert_eq!(
            answer(
                "Open URL for more info? (Y)es/(N)o/(D)on't ask again [Yes]: ",
                true
            ),
            "n"
        );
    }

    /// Recorded Aider 0.86.2 output (tests/fixtures/aider/README.md says how each was made).
    pub(crate) mod recorded {
        use super::super::*;

        pub const CREATE_FILE: &str = include_str!("../../tests/fixtures/aider/create-file.txt");
        pub const CREATE_FILE_DIFF_PROMPT: &str =
            include_str!("../../tests/fixtures/aider/create-file-diff-prompt.txt");
        pub const MULTI_LINE: &str = include_str!("../../tests/fixtures/aider/multi-line.txt");
        pub const SHELL_SUGGESTION: &str =
            include_str!("../../tests/fixtures/aider/shell-suggestion.txt");
        pub const SHELL_QUESTION: &str =
            include_str!("../../tests/fixtures/aider/shell-question.txt");
        pub const COMMANDS: &str = include_str!("../../tests/fixtures/aider/commands.txt");
        pub const CRASH: &str = include_str!("../../tests/fixtures/aider/crash.txt");

        /// The markers of every complete line.
        fn all_events(output: &str) -> Vec<AiderEvent> {
            let mut lines: Vec<&str> = output.split('\n').collect();
            lines.pop();
            lines.into_iter().flat_map(events).collect()
        }

        /// The states at every point where the output stops at a prompt or a question.
        fn stops(output: &str) -> Vec<PromptState> {
            (1..=output.len())
                .filter(|&end| output.is_char_boundary(end) && output[..end].ends_with(' '))
                .map(|end| prompt_state(&output[..end]))
                .filter(|state| *state != PromptState::Busy)
                .collect()
        }

        /// The markers of one recorded edit: tokens, cost, the applied file, the commit.
        pub(crate) fn edit_events(
            sent: &str,
            received: &str,
            usd: f64,
            sha: &str,
        ) -> Vec<AiderEvent> {
            vec![
                AiderEvent::Tokens {
                    sent: sent.into(),
                    received: received.into(),
                },
                AiderEvent::Cost {
                    message_usd: usd,
                    session_usd: usd,
                },
                AiderEvent::AppliedEdit("hello.py".into()),
                AiderEvent::Commit {
                    sha: sha.into(),
                    message: "feat: Add hello function".into(),
                },
            ]
        }

        #[test]
        fn create_file_has_tokens_cost_edit_and_commit_and_ends_ready() {
            assert_eq!(
                all_events(CREATE_FILE),
                edit_events("2.3k", "32", 0.0024, "d4eae3d")
            );
            assert_eq!(prompt_state(CREATE_FILE), PromptState::Ready { mode: None });
            assert_eq!(stops(CREATE_FILE).len(), 2, "start and end prompts only");
        }

        #[test]
        fn create_file_without_model_settings_shows_the_diff_prompt() {
            assert_eq!(
                all_events(CREATE_FILE_DIFF_PROMPT),
                edit_events("2.3k", "32", 0.0024, "b0df315")
            );
            let diff = PromptState::Ready {
                mode: Some("diff".into()),
            };
            assert_eq!(prompt_state(CREATE_FILE_DIFF_PROMPT), diff);
            assert_eq!(stops(CREATE_FILE_DIFF_PROMPT), vec![diff.clone(), diff]);
        }

        #[test]
        fn multi_line_continuation_prompts_share_the_first_prompt_line() {
            assert!(MULTI_LINE.contains("\n> > > > > \n"));
            assert_eq!(
                all_events(MULTI_LINE),
                edit_events("2.3k", "32", 0.0024, "10546e3")
            );
            let ready = PromptState::Ready { mode: None };
            // Only the first prompt of "> > > > > " and the last prompt stop the output.
            assert_eq!(stops(MULTI_LINE), vec![ready.clone(), ready.clone()]);
            assert_eq!(prompt_state(MULTI_LINE), ready);
        }

        #[test]
        fn suggested_shell_command_under_yes_always_is_not_a_question() {
            assert_eq!(
                all_events(SHELL_SUGGESTION),
                edit_events("2.4k", "56", 0.0025, "8583c07")
            );
            assert!(stops(SHELL_SUGGESTION)
                .iter()
                .all(|s| matches!(s, PromptState::Ready { mode: None })));
        }

        #[test]
        fn questions_without_yes_always_get_the_policy_answers() {
            let questions: Vec<(String, bool)> = stops(SHELL_QUESTION)
                .into_iter()
                .filter_map(|s| match s {
                    PromptState::Question { text, default_yes } => Some((text, default_yes)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                questions,
                vec![
                    ("Create new file? (Y)es/(N)o [Yes]: ".to_string(), true),
                    (
                        "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ".to_string(),
                        true
                    ),
                ]
            );
            let answers: Vec<_> = questions.iter().map(|(q, d)| answer(q, *d)).collect();
            assert_eq!(answers, vec!["y", "n"]);
            assert_eq!(
                prompt_state(SHELL_QUESTION),
                PromptState::Ready { mode: None }
            );
        }

        #[test]
        fn commands_end_ready_after_each() {
            assert_eq!(all_events(COMMANDS), vec![]);
            assert_eq!(stops(COMMANDS).len(), 3);
            assert_eq!(prompt_state(COMMANDS), PromptState::Ready { mode: None });
        }

        #[test]
        fn crash_report_question_is_declined() {
            let question = stops(CRASH)
                .into_iter()
                .find_map(|s| match s {
                    PromptState::Question { text, default_yes } => Some((text, default_yes)),
                    _ => None,
                })
                .expect("the crash report asks");
            assert_eq!(
                question,
                (
                    "Open a GitHub Issue pre-filled with the above error in your browser? (Y/n) "
                        .to_string(),
                    true
                )
            );
            assert_eq!(answer(&question.0, question.1), "n");
            assert_eq!(prompt_state(CRASH), PromptState::Busy);
        }
    }
}
