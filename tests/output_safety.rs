//! What a job prints, as the runner stores and shows it: secrets redacted in every place output
//! lands (also when printed in pieces or encoded), and control sequences shown harmlessly on a
//! terminal while the stored bytes stay exact. Real Docker, real SQLite, the real binary.

mod common;

use base64::Engine;
use common::*;

const SECRET: &str = "s3cr3t~v4lue?>7f1c";

/// Every form of the secret the job below prints.
fn printed_forms() -> Vec<String> {
    let mut forms = vec![SECRET.to_string()];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for prefix in ["", "a", "ab"] {
            let encoded = engine.encode(format!("{prefix}{SECRET}"));
            // The part that encodes the value alone (the edges also encode the prefix and end).
            forms.push(encoded[4..encoded.len() - 4].to_string());
        }
    }
    forms.push(SECRET.bytes().map(|b| format!("{b:02x}")).collect());
    forms
}

#[test]
fn a_secret_printed_in_two_writes_or_encoded_is_redacted_in_every_stored_row_and_answer() {
    let env = Env::new();
    // Two writes 200 ms apart (two chunks for the runner), then base64 (standard and URL-safe,
    // at the three alignments) and hex, then a failure so the job has a detail too.
    let script = r#"v=$(cat /run/secrets/RUNNER_TEST_TOKEN)
printf 'first: %s' "$(printf %s "$v" | head -c 9)"; sleep 0.2; printf '%s\n' "$(printf %s "$v" | tail -c +10)"
for p in '' a ab; do
  printf '%s%s' "$p" "$v" | base64 -w0; echo
  printf '%s%s' "$p" "$v" | base64 -w0 | tr '+/' '-_'; echo
done
printf %s "$v" | od -An -tx1 | tr -d ' \n'; echo
exit 3"#;
    let job = env.job(
        "leak.yaml",
        &sh_job("leak", script, "secrets: [RUNNER_TEST_TOKEN]"),
    );
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("RUNNER_TEST_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let logs = env.run(&["logs", "leak"]);
    let log = stdout(&logs);
    assert!(
        log.starts_with("first: [redacted RUNNER_TEST_TOKEN]\n"),
        "{log}"
    );
    assert_eq!(
        log.matches("[redacted RUNNER_TEST_TOKEN base64").count(),
        6,
        "{log}"
    );
    assert!(log.contains("[redacted RUNNER_TEST_TOKEN hex]"), "{log}");
    let mut answers = vec![
        ("runner logs".to_string(), log.clone()),
        ("run's stderr".into(), stderr(&out)),
        ("show".into(), stdout(&env.run(&["show", "leak"]))),
        (
            "show --json".into(),
            stdout(&env.run(&["show", "leak", "--json"])),
        ),
        (
            "ps --json".into(),
            stdout(&env.run(&["ps", "--all", "--json"])),
        ),
    ];
    for file in ["runner.db", "runner.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.state.join(file)) {
            answers.push((file.into(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    for (what, text) in &answers {
        for form in printed_forms() {
            assert!(!text.contains(&form), "{what} holds {form:?}:\n{text}");
        }
    }
}

#[test]
fn control_sequences_in_job_output_are_shown_visibly_on_a_terminal_and_raw_with_flag() {
    let env = Env::new();
    // A clipboard write (OSC 52), a title change, a screen clear, a line forged over with `\r`,
    // an 8-bit CSI (C1) and a bidi override.
    let script = r#"printf 'start\n\033]52;c;ZXZpbA==\007\033]0;pwned\007\033[2J'
printf 'working\rother-job 01JXXXXXXXXXXXXXXXXXXXXXXX succeeded\n'
printf '\302\2332J\342\200\256gnp.exe\n'
printf 'crlf\r\nend\n'"#;
    let job = env.job("ctl.yaml", &sh_job("ctl", script, ""));
    let out = env.run(&["run", path_str(&job)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = |args: &[&str], tty: bool| {
        let mut cmd = env.cmd();
        cmd.args(args);
        if tty {
            cmd.env("RUNNER_ASSUME_TTY", "1");
        } else {
            cmd.env_remove("RUNNER_ASSUME_TTY");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let raw_bytes = b"start\n\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2Jworking\rother-job 01JXXXXXXXXXXXXXXXXXXXXXXX succeeded\n\xc2\x9b2J\xe2\x80\xaegnp.exe\ncrlf\r\nend\n";
    // Piped (not a terminal): byte for byte as stored, as before.
    assert_eq!(logs(&["logs", "ctl"], false), raw_bytes);
    // --raw on a terminal: the same bytes.
    assert_eq!(logs(&["logs", "ctl", "--raw"], true), raw_bytes);
    // On a terminal: every control sequence visible, text and line ends kept.
    let visible = "start\n\\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2Jworking\\rother-job 01JXXXXXXXXXXXXXXXXXXXXXXX succeeded\n\\u{9b}2J\\u{202e}gnp.exe\ncrlf\r\nend\n";
    for args in [&["logs", "ctl"][..], &["logs", "ctl", "-f"][..]] {
        let shown = logs(args, true);
        assert_eq!(String::from_utf8_lossy(&shown), visible, "{args:?}");
    }
}
