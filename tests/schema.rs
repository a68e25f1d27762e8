//! `runner schema` checked by an independent validator (Python's `jsonschema`, installed by
//! `make pytools`): every job file of the repository (jobs/, tests/fixtures/, the YAML job
//! examples in README.md and docs/) passes it, and a set of invalid files fails it, each also
//! refused by `runner validate`, so the schema and the parser agree.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Validates each YAML file with `jsonschema` against the schema; prints one line per file:
/// `ok PATH` or `invalid PATH: first error`. Fails (never skips) when a package is missing.
const VALIDATOR: &str = r#"
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(yaml.safe_load(open(path))), key=lambda e: e.path)
    print(("ok " + path) if not errors else ("invalid " + path + ": " + errors[0].message))
"#;

fn validate_with_jsonschema(schema: &Path, files: &[PathBuf]) -> Vec<(bool, String)> {
    let out = Command::new("python3")
        .args(["-c", VALIDATOR])
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the validator failed (install jsonschema and PyYAML with `make pytools`): {}",
        stderr(&out)
    );
    let lines: Vec<(bool, String)> = stdout(&out)
        .lines()
        .map(|l| (l.starts_with("ok "), l.to_string()))
        .collect();
    assert_eq!(lines.len(), files.len(), "{}", stdout(&out));
    lines
}

fn schema_file(env: &Env) -> PathBuf {
    let out = env.run(&["schema"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let path = env.dir.path().join("job.schema.json");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// The repository's job files, and the YAML examples in the docs that are whole job files.
fn repository_job_files(into: &Path) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("jobs"), root.join("tests/fixtures")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            docs.push(entry.path());
        }
    }
    let mut examples = 0;
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            // A job file starts with its name and runs a command or a task (a workflow does not).
            let is_job = block.starts_with("name: ")
                && (block.contains("\ncommand:") || block.contains("\ntask:"));
            if is_job {
                examples += 1;
                let name = doc.file_stem().unwrap().to_string_lossy();
                let path = into.join(format!("{name}-example-{examples}.yaml"));
                std::fs::write(&path, block).unwrap();
                files.push(path);
            }
        }
    }
    assert!(
        examples >= 8,
        "the docs' job examples were found: {examples}"
    );
    files
}

#[test]
fn every_job_file_in_the_repository_passes_the_schema() {
    let env = Env::new();
    let schema = schema_file(&env);
    let files = repository_job_files(env.dir.path());
    assert!(files.len() >= 11, "{files:?}");
    for (ok, line) in validate_with_jsonschema(&schema, &files) {
        assert!(ok, "{line}");
    }
}

/// Files that are not valid jobs: each must fail the schema and `runner validate` alike.
const INVALID: &[(&str, &str)] = &[
    (
        "unknown-field",
        "name: a\nimage: x\ncommand: [\"true\"]\nprivileged: true\n",
    ),
    (
        "unknown-nested-field",
        "name: a\nimage: x\ncommand: [\"true\"]\nresources: { cpus: 1, volumes: [\"/:/host\"] }\n",
    ),
    ("no-name", "image: x\ncommand: [\"true\"]\n"),
    (
        "bad-name",
        "name: Bad_Name\nimage: x\ncommand: [\"true\"]\n",
    ),
    (
        "both-task-and-command",
        "name: a\ntask: do it\ncommand: [\"true\"]\n",
    ),
    ("neither-task-nor-command", "name: a\nimage: x\n"),
    ("empty-command", "name: a\nimage: x\ncommand: []\n"),
    (
        "unknown-network",
        "name: a\nimage: x\ncommand: [\"true\"]\nnetwork: host\n",
    ),
    (
        "bad-memory",
        "name: a\nimage: x\ncommand: [\"true\"]\nresources: { memory: 2 gigs }\n",
    ),
    (
        "too-few-pids",
        "name: a\nimage: x\ncommand: [\"true\"]\nresources: { pids: 5 }\n",
    ),
    (
        "too-many-cpus",
        "name: a\nimage: x\ncommand: [\"true\"]\nresources: { cpus: 300 }\n",
    ),
    (
        "bad-timeout",
        "name: a\nimage: x\ncommand: [\"true\"]\ntimeout: 10 minutes\n",
    ),
    (
        "too-many-retries",
        "name: a\nimage: x\ncommand: [\"true\"]\nretries: 11\n",
    ),
    (
        "bad-secret-name",
        "name: a\nimage: x\ncommand: [\"true\"]\nsecrets: [1BAD]\n",
    ),
    (
        "bad-env-name",
        "name: a\nimage: x\ncommand: [\"true\"]\nenv: { BAD-NAME: x }\n",
    ),
    ("bad-ref", "name: a\ntask: do it\nref: main..dev\n"),
    (
        "unknown-manager-mode",
        "name: a\ntask: do it\nmanager: { mode: dance }\n",
    ),
    (
        "unknown-step-action",
        "name: a\ntask: do it\nmanager: { mode: script, steps: [{ action: dance }] }\n",
    ),
    ("zero-budget", "name: a\ntask: do it\nbudget: { usd: 0 }\n"),
    (
        "ftp-base-url",
        "name: a\ntask: do it\nllm: { base_url: \"ftp://example.com/v1\" }\n",
    ),
    (
        "unknown-output-mode",
        "name: a\ntask: do it\noutput: { mode: zip }\n",
    ),
    ("not-a-mapping", "- name: a\n"),
];

#[test]
fn invalid_job_files_fail_the_schema_and_runner_validate() {
    let env = Env::new();
    let schema = schema_file(&env);
    let files: Vec<PathBuf> = INVALID
        .iter()
        .map(|(name, yaml)| env.job(&format!("invalid/{name}.yaml"), yaml))
        .collect();
    for (ok, line) in validate_with_jsonschema(&schema, &files) {
        assert!(!ok, "the schema accepted an invalid job: {line}");
    }
    for file in &files {
        let out = env.run(&["validate", path_str(file)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "runner validate accepted {}",
            file.display()
        );
    }
}

#[test]
fn the_schema_describes_fields_with_their_defaults() {
    let env = Env::new();
    let schema: serde_json::Value = serde_json::from_slice(&env.run(&["schema"]).stdout).unwrap();
    let props = &schema["properties"];
    assert!(
        props["name"]["description"]
            .as_str()
            .unwrap()
            .contains("lowercase"),
        "{props}"
    );
    assert_eq!(props["timeout"]["default"], "30m");
    assert_eq!(props["group"]["default"], "default");
    assert_eq!(schema["additionalProperties"], false);
    let defs = &schema["$defs"];
    let resources = props["resources"].to_string();
    let name = resources
        .split("#/$defs/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("resources is a reference");
    assert_eq!(defs[name]["properties"]["memory"]["default"], "1g");
    assert_eq!(defs[name]["properties"]["pids"]["default"], 512);
    assert!(
        !env.state.exists(),
        "runner schema leaves the state dir alone"
    );
}
