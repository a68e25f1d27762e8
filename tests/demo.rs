//! The shipped agent demo (`jobs/agent-demo.yaml`): it replays a cassette recorded against a
//! scripted OpenAI-compatible server, so it runs offline. `record_the_demo_cassette` (ignored;
//! run it with `cargo test --test demo -- --ignored`) records that cassette again.

mod common;
mod scripted;

use common::*;
use scripted::{answer, create_file, ScriptedLlm};
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_demo_replays_offline_from_the_shipped_cassette() {
    let env = Env::new();
    let job = repo_root().join("jobs/agent-demo.yaml");
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_BASE")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let show = env.show("agent-demo");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{show}\n{}",
        stderr(&out),
        log_of(&env, "agent-demo")
    );
    let patch = artifact_text(&show, "patch").expect("a patch");
    assert!(patch.contains("+def greet(name):"), "{patch}");
    assert!(
        show["usage"]["manager"]["requests"].as_u64().unwrap() >= 2,
        "{show}"
    );
    assert!(
        show["usage"]["agent"]["requests"].as_u64().unwrap() >= 1,
        "{show}"
    );
    assert!(env.containers().is_empty());
}

#[test]
#[ignore = "records jobs/agent-demo.cassette.jsonl again; run on purpose"]
fn record_the_demo_cassette() {
    let env = Env::new();
    let llm = ScriptedLlm::start(
        vec![
            answer(
                "instruct",
                "Create greet.py with a function greet(name) that returns f\"Hello, {name}!\".",
            ),
            answer(
                "finish",
                "greet.py now defines greet(name); test_greet.py passes.",
            ),
        ],
        vec![create_file(
            "greet.py",
            "def greet(name):\n    return f\"Hello, {name}!\"\n",
        )],
    );
    // Paths in a job file stay inside its folder: record beside a copy, then ship the cassette.
    let shipped = std::fs::read_to_string(repo_root().join("jobs/agent-demo.yaml")).unwrap();
    for file in ["README.md", "test_greet.py"] {
        env.job(
            &format!("greet/{file}"),
            &std::fs::read_to_string(repo_root().join("jobs/greet").join(file)).unwrap(),
        );
    }
    let yaml = shipped.replace(
        "llm: { replay: agent-demo.cassette.jsonl }",
        "llm: { record: agent-demo.cassette.jsonl }",
    );
    assert_ne!(yaml, shipped);
    let job = env.job("agent-demo.yaml", &yaml);
    let cassette = env.dir.path().join("agent-demo.cassette.jsonl");
    let out = env
        .cmd()
        .args(["run", path_str(&job)])
        .env("OPENAI_BASE_URL", &llm.url)
        .env("OPENAI_API_KEY", "recording-key-4f1e")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        log_of(&env, "agent-demo")
    );
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert!(
        !text.contains("recording-key-4f1e") && !text.contains("rnr-"),
        "no keys or tokens"
    );
}
