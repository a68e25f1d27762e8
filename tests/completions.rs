//! `runner completions` and `runner man` from the real binary: the bash script parses and
//! completes subcommands and flags in a real bash, and the man pages name every subcommand.

mod common;

use common::*;
use std::process::Command;

/// The subcommands as `runner --help` lists them (clap's own listing, `help` aside).
fn subcommands(env: &Env) -> Vec<String> {
    let help = stdout(&env.run(&["--help"]));
    let listing = help
        .split("Commands:")
        .nth(1)
        .expect("--help lists commands");
    let names: Vec<String> = listing
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 15, "{help}");
    names
}

#[test]
fn the_bash_completion_script_parses_and_completes_subcommands_and_flags() {
    let env = Env::new();
    let out = env.run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = env.dir.path().join("runner.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));

    // Completed by the script's own function, as bash calls it on <TAB>.
    let complete = |words: &str| {
        let probe = format!(
            "source {script:?}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _runner runner \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(complete("runner ru").trim(), "run");
    assert!(complete("runner run --par")
        .lines()
        .any(|l| l == "--parallel"));
    let all = complete("runner ''");
    for name in subcommands(&env) {
        assert!(all.lines().any(|l| l == name), "{name} not offered: {all}");
    }
}

#[test]
fn completion_scripts_are_printed_for_zsh_fish_and_powershell() {
    let env = Env::new();
    for (shell, marker) in [
        ("zsh", "#compdef runner"),
        ("fish", "complete -c runner"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = env.run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains(marker), "{shell}");
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a bad flag");
    assert!(!env.state.exists(), "completions leave the state dir alone");
}

#[test]
fn the_man_page_names_every_subcommand_and_man_dir_writes_a_page_for_each() {
    let env = Env::new();
    let out = env.run(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH runner 1"), "{page}");
    let section = page
        .split(".SH SUBCOMMANDS")
        .nth(1)
        .expect("a SUBCOMMANDS section");
    let names = subcommands(&env);
    for name in &names {
        let roff_name = name.replace('-', "\\-");
        assert!(
            section.contains(&format!("runner\\-{roff_name}(1)")),
            "{name} missing: {section}"
        );
    }
    assert!(!section.contains("runner\\-help(1)"), "no page for help");

    let dir = env.dir.path().join("man1");
    let out = env.run(&["man", "--dir", path_str(&dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in names.iter().map(|n| format!("runner-{n}.1")).chain(
        ["runner.1", "runner-images-build.1"]
            .into_iter()
            .map(String::from),
    ) {
        let text =
            std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".SH NAME"), "{name}");
    }
    let run = std::fs::read_to_string(dir.join("runner-run.1")).unwrap();
    assert!(
        run.contains("\\-\\-junit"),
        "the run page documents its flags"
    );
}
