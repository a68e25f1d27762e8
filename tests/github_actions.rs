//! `runner run` as a GitHub Actions step: the real binary runs passing and failing plain jobs on
//! the real engine with `GITHUB_STEP_SUMMARY` and `GITHUB_ACTIONS=true`; the test reads the
//! summary's table and failure blocks, the `::error` annotations, and the `--junit` report
//! through a real JUnit parser (Python's `junitparser`, installed by `make pytools`).

mod common;

use common::*;
use std::process::Command;

/// A log line that tries to break out of the summary's `<pre>` block, inject markup and forge a
/// workflow command.
const HOSTILE: &str = "</pre></details><img src=x onerror=alert(1)> | [x](http://e) **b**";

#[test]
fn a_github_run_writes_a_step_summary_annotations_and_a_junit_report_a_parser_reads() {
    let env = Env::new();
    let ok = env.job("ok.yaml", &sh_job("ok", "echo fine", ""));
    let also_ok = env.job("also-ok.yaml", &sh_job("also-ok", "true", ""));
    // A job file name with the characters a workflow command property must escape.
    let three = env.job(
        "bad,name:three.yaml",
        &sh_job(
            "three",
            &format!("echo {HOSTILE:?}; echo '::warning::forged'; exit 3"),
            "",
        ),
    );
    let slow = env.job(
        "slow.yaml",
        &sh_job("slow", "echo started; exec sleep 60", "timeout: 2s"),
    );
    let summary = env.dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let junit = env.dir.path().join("report.xml");
    let out = env
        .cmd()
        .args([
            "run",
            path_str(&ok),
            path_str(&also_ok),
            path_str(&three),
            path_str(&slow),
            "--stop-grace",
            "1s",
            "--junit",
            path_str(&junit),
        ])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", env.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The annotations: one per failed job, on stdout, file names relative to the workspace and
    // escaped; nothing the job printed became a command.
    let annotations: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("::"))
        .map(str::to_string)
        .collect();
    assert_eq!(annotations.len(), 2, "{annotations:?}");
    assert!(
        annotations
            .iter()
            .any(|a| a
                .starts_with("::error title=three,file=bad%2Cname%3Athree.yaml::exit_code 3: ")),
        "{annotations:?}"
    );
    assert!(
        annotations
            .iter()
            .any(|a| a.starts_with("::error title=slow,file=slow.yaml::timeout")),
        "{annotations:?}"
    );
    assert!(!stdout(&out).contains("forged"), "{}", stdout(&out));

    // The summary is appended, not overwritten.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier step\n"), "{md}");
    assert!(md.contains("### runner: 2 of 4 jobs succeeded"), "{md}");

    // Its table: a header and one row per job with state, reason, duration, turns, tokens, cost.
    let table: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        table[0],
        ["job", "state", "reason", "duration", "turns", "tokens", "cost"],
        "{md}"
    );
    assert_eq!(table.len(), 2 + 4, "header, rule and four rows: {md}");
    let row = |name: &str| {
        table
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {md}"))
            .clone()
    };
    for name in ["ok", "also-ok"] {
        let r = row(name);
        assert!(r[1].ends_with("succeeded"), "{r:?}");
        assert_eq!(r[2], "-", "{r:?}");
    }
    let r = row("three");
    assert!(r[1].ends_with("failed"), "{r:?}");
    assert_eq!(r[2], "exit_code 3");
    assert!(r[3].ends_with('s'), "a duration: {r:?}");
    assert_eq!((r[4].as_str(), r[5].as_str()), ("0", "0"), "{r:?}");
    assert_eq!(r[6], "&#36;0.0000", "{r:?}");
    assert_eq!(row("slow")[2], "timeout");

    // A block per failed job with its detail and the end of its log, escaped.
    assert!(md.contains("#### ❌ three ("), "{md}");
    assert!(md.contains("#### ❌ slow ("), "{md}");
    assert!(!md.contains("#### ❌ ok"), "{md}");
    assert!(md.contains("Job file: bad,name&#58;three.yaml"), "{md}");
    assert_eq!(md.matches("<details>").count(), 2, "{md}");
    assert_eq!(
        md.matches("</pre>").count(),
        2,
        "the log cannot close its block: {md}"
    );
    assert!(md.contains("&lt;/pre&gt;&lt;/details&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!md.contains("<img"), "{md}");
    assert!(
        md.contains("echo started") || md.contains("started"),
        "{md}"
    );

    // The JUnit report, read by a real parser.
    let parsed = junitparser_read(&junit);
    assert_eq!(parsed["tests"], 4, "{parsed}");
    assert_eq!(parsed["failures"], 2, "{parsed}");
    let case = |name: &str| {
        parsed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{name} ("))
            })
            .unwrap_or_else(|| panic!("no test case {name}: {parsed}"))
            .clone()
    };
    assert_eq!(case("ok")["results"], serde_json::json!([]));
    let three = case("three");
    assert_eq!(three["results"][0]["type"], "Failure", "{three}");
    assert_eq!(three["results"][0]["message"], "exit_code", "{three}");
    assert!(
        three["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("code 3"),
        "{three}"
    );
    assert_eq!(case("slow")["results"][0]["message"], "timeout");
    assert!(case("slow")["time"].as_f64().unwrap() >= 1.5, "{parsed}");
}

/// The report as `junitparser` reads it: totals and each case's name, time and results. Fails
/// (never skips) when the package is missing.
fn junitparser_read(path: &std::path::Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys
from junitparser import JUnitXml, TestSuite
xml = JUnitXml.fromfile(sys.argv[1])
suites = [xml] if isinstance(xml, TestSuite) else list(xml)
cases = []
for suite in suites:
    for case in suite:
        cases.append({"name": case.name, "classname": case.classname, "time": case.time,
                      "results": [{"type": type(r).__name__, "message": r.message, "text": r.text}
                                  for r in case.result]})
print(json.dumps({"tests": sum(s.tests for s in suites), "failures": sum(s.failures for s in suites),
                  "skipped": sum(s.skipped for s in suites), "cases": cases}))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "junitparser could not read the report (install it with `make pytools`): {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn submit_wait_with_json_writes_the_summary_and_sends_annotations_to_stderr() {
    let mut env = Env::new();
    let daemon = env.spawn_daemon(&[]);
    let ok = env.job("ok.yaml", &sh_job("ok", "true", ""));
    let bad = env.job("bad.yaml", &sh_job("bad", "echo '<b>loud</b>'; exit 4", ""));
    let summary = env.dir.path().join("summary.md");
    let out = env
        .cmd()
        .args(["submit", "--wait", "--json", path_str(&ok), path_str(&bad)])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", env.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // stdout stays the JSON array: the annotation went to stderr.
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with("::error title=bad,file=bad.yaml::exit_code 4")),
        "{}",
        stderr(&out)
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("### runner: 1 of 2 jobs succeeded"), "{md}");
    assert!(md.contains("| bad | ❌ failed | exit_code 4 |"), "{md}");
    assert!(md.contains("&lt;b&gt;loud&lt;/b&gt;"), "{md}");
    env.signal_daemon(daemon, "TERM");
}
