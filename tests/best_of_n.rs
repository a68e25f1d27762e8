//! Best-of-N end to end: `candidates: 3` runs three real Aider sandboxes from one repository
//! against a scripted OpenAI-compatible server; the job's `verify` chooses the winner.

mod common;
mod scripted;

use common::*;
use scripted::{create_file, ScriptedLlm};

const GREET: &str = "def greet(name):\n    return f\"Hello, {name}!\"\n";
const WRONG: &str = "def greet(name):\n    return \"Bye\"\n";
const VERIFY: &str = "verify: [\"python3\", \"-c\", \"from greet import greet; assert greet('Ann') == 'Hello, Ann!'\"]";
const BUDGET_TOKENS: u64 = 1_000_000;

#[test]
fn of_three_candidates_only_the_one_that_passes_verify_is_exported_and_the_others_are_stopped_under_one_budget(
) {
    let env = Env::new();
    // Whichever candidate asks first gets the right edit; the others get a wrong one, fail
    // verify, and go on to a long command: they are still running when the winner passes.
    let llm = ScriptedLlm::start(
        vec![],
        vec![
            create_file("greet.py", GREET),
            create_file("greet.py", WRONG),
            create_file("greet.py", WRONG),
        ],
    );
    make_repo(&env.dir.path().join("repo"));
    let manager = "{ mode: script, max_turns: 4, steps: [ { action: instruct, argument: \"Create greet.py\" }, { action: finish, argument: done }, { action: run, argument: \"sleep 240\" }, { action: finish, argument: done } ] }";
    let job = env.job(
        "best.yaml",
        &format!(
            "name: best\ntask: Add a function greet(name) to greet.py that returns \"Hello, <name>!\".\nrepo: ./repo\nagent: {{ model: openai/mock }}\nmanager: {manager}\ntimeout: 5m\ncandidates: 3\nbudget: {{ tokens: {BUDGET_TOKENS} }}\n{VERIFY}\n"
        ),
    );
    let started = std::time::Instant::now();
    let out = llm.run(&env, &job);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        stdout(&env.run(&["show", "best"]))
    );
    // The losers were stopped, not left to sleep out their command.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(200),
        "took {:?}",
        started.elapsed()
    );
    let show = env.show("best");
    assert_eq!(show["state"], "succeeded", "{show}");
    let candidates = show["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3, "{show}");
    let winners: Vec<_> = candidates
        .iter()
        .filter(|c| c["selected"] == true)
        .collect();
    assert_eq!(winners.len(), 1, "{show}");
    let winner = winners[0];
    assert_eq!(winner["state"], "succeeded", "{show}");
    assert!(winner["diff_lines"].as_u64().unwrap() > 0, "{show}");
    let place = winner["candidate"].as_u64().unwrap();
    for loser in candidates.iter().filter(|c| c["selected"] != true) {
        assert_eq!(loser["state"], "cancelled", "{show}");
        assert_eq!(
            loser["detail"],
            format!("stopped: candidate {place} won"),
            "{show}"
        );
    }
    // Only the winner's result is exported.
    let patches: Vec<_> = show["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "patch" || a["kind"] == "bundle")
        .collect();
    assert_eq!(patches.len(), 2, "one patch and one bundle: {show}");
    for a in &patches {
        assert_eq!(a["attempt"], winner["attempt"], "{show}");
    }
    let patch_path = patches.iter().find(|a| a["kind"] == "patch").unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = std::fs::read_to_string(&patch_path).unwrap();
    assert!(patch.contains("+    return f\"Hello, {name}!\""), "{patch}");
    // One budget: every candidate's calls are recorded under the job, inside its budget.
    let per_attempt: Vec<u64> = show["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let u = &a["usage"]["agent"];
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(per_attempt.len(), 3, "{show}");
    // (A loser stopped before its first call has none: the winner can pass first.)
    assert!(per_attempt.iter().any(|&t| t > 0), "{per_attempt:?} {show}");
    let job_usage = &show["usage"]["agent"];
    let total = job_usage["prompt_tokens"].as_u64().unwrap()
        + job_usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(total, per_attempt.iter().sum::<u64>(), "{show}");
    assert!(total <= BUDGET_TOKENS);
    let reported: u64 = candidates
        .iter()
        .map(|c| c["tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, total, "{show}");
    // The events list every candidate once, as it ended.
    let events = stdout(&env.run(&["events", "best", "--json"]));
    let ended = events
        .lines()
        .filter(|l| l.contains("\"type\":\"candidate\""))
        .count();
    assert_eq!(ended, 3, "{events}");
}
