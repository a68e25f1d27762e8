//! A hostile repository and a hostile result, through the real binary: a local origin whose
//! every hook and config command writes a marker runs nothing on the host through a whole branch
//! job (mirror, checkout, export, push), a `repo` folder whose `.git` leads out of the job's
//! folder is refused at validation, and a result naming a path in `.git` is never pushed.

mod common;
mod scripted;

use common::*;
use scripted::{create_file, ScriptedLlm};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const HELLO: &str = "def hello():\n    return 'hi'\n";

/// `tests/fixtures/hostile_repo.sh WORK MARKERS`.
fn hostile_repo(work: &Path, markers: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_repo.sh");
    let out = Command::new("sh")
        .arg(script)
        .arg(work)
        .arg(markers)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// What ran: the markers in `dir` (the marker program itself left out).
fn markers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".mark")
        .collect();
    names.sort();
    names
}

/// A branch job on `repo`: Aider creates hello.py, then the manager finishes.
fn branch_job(env: &Env, name: &str, repo: &str, extra: &str) -> std::path::PathBuf {
    let manager = "{ mode: script, steps: [ { action: instruct, argument: \"Create hello.py\" }, { action: finish, argument: done } ] }";
    env.job(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\ntask: Add hello.\nrepo: {repo}\nagent: {{ model: openai/mock }}\nmanager: {manager}\ntimeout: 5m\nretries: 0\n{extra}output: {{ mode: branch, branch: runner/{name} }}\n"
        ),
    )
}

/// Plain git on a repository that is not hostile.
fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_hostile_repository_runs_nothing_on_the_host_through_a_whole_branch_job() {
    let env = Env::new();
    let origin = env.dir.path().join("origin");
    let marks = env.dir.path().join("markers");
    hostile_repo(&origin, &marks);
    let llm = ScriptedLlm::start(vec![], vec![create_file("hello.py", HELLO)]);
    let job = branch_job(&env, "hostile", "./origin", "");
    let out = llm.run(&env, &job);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}\n{}",
        stderr(&out),
        env.show("hostile"),
        log_of(&env, "hostile")
    );
    assert_eq!(
        markers(&marks),
        Vec::<String>::new(),
        "nothing of the repository ran"
    );

    // The branch arrived: read without letting the repository's config in (no hooks, no
    // filters: `cat-file` of a blob runs nothing).
    let head = std::fs::read_to_string(origin.join(".git/refs/heads/runner/hostile")).unwrap();
    let shown = Command::new("git")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ])
        .arg(format!("--git-dir={}", origin.join(".git").display()))
        .args(["cat-file", "blob", &format!("{}:hello.py", head.trim())])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert_eq!(stdout(&shown), HELLO, "{}", stderr(&shown));
    assert_eq!(markers(&marks), Vec::<String>::new());
    let cache = env.state.join("cache/repos");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".shadow"), "shadow left behind: {name}");
        }
    }
}

#[test]
fn a_repo_folder_whose_git_file_leads_outside_the_job_folder_is_refused() {
    let env = Env::new();
    // The repository elsewhere on the host, and a folder in the jobs dir that leads to it.
    let elsewhere = env.dir.path().join("elsewhere/app");
    make_repo(&elsewhere);
    let jobs = env.dir.path().join("jobs");
    std::fs::create_dir_all(jobs.join("app")).unwrap();
    std::fs::write(
        jobs.join("app/.git"),
        format!("gitdir: {}\n", elsewhere.join(".git").display()),
    )
    .unwrap();
    let job = env.job(
        "jobs/escape.yaml",
        "name: escape\nimage: runner/base:bookworm\nrepo: ./app\ncommand: [\"true\"]\n",
    );
    for command in ["validate", "submit"] {
        let out = env.run(&[command, path_str(&job)]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}:3:1: repo: the gitfile", job.display())),
            "{command}: located at `repo`: {err}"
        );
        assert!(err.contains("outside the job file's directory"), "{err}");
    }
    if env.state.join("runner.db").exists() {
        assert!(env.ps().is_empty(), "nothing was stored");
    }
}

#[test]
fn a_repo_folder_changed_to_lead_outside_after_the_job_was_accepted_is_refused_when_it_runs() {
    let mut env = Env::new();
    let elsewhere = env.dir.path().join("elsewhere/app");
    make_repo(&elsewhere);
    let jobs = env.dir.path().join("jobs");
    make_repo(&jobs.join("app"));
    let job = env.job(
        "jobs/swap.yaml",
        "name: swap\nimage: runner/base:bookworm\nrepo: ./app\ncommand: [\"ls\", \"/workspace\"]\n",
    );
    let out = env.run(&["submit", path_str(&job)]);
    assert!(
        out.status.success(),
        "accepted while inside: {}",
        stderr(&out)
    );
    let id = stdout(&out).trim().to_string();
    // Once accepted, the folder's `.git` is swapped for a gitfile to a repository elsewhere.
    std::fs::remove_dir_all(jobs.join("app/.git")).unwrap();
    std::fs::write(
        jobs.join("app/.git"),
        format!("gitdir: {}\n", elsewhere.join(".git").display()),
    )
    .unwrap();
    let daemon = env.spawn_daemon(&[]);
    env.wait_state(&id, "failed", Duration::from_secs(30));
    let show = env.show(&id);
    assert_eq!(show["reason"], "infra", "{show}");
    let detail = show["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("outside the job file's directory"),
        "{show}"
    );
    assert!(env.containers().is_empty(), "nothing ran");
    env.signal_daemon(daemon, "TERM");
}

/// Run as the job's `verify`: commits a tree holding `.GIT/config` (made with `mktree`, which
/// takes any name), then one that takes it away, so HEAD still checks out.
const HIDE_GIT_ENTRY: &str = r#"set -e
g() { git -c user.name=x -c user.email=x@x "$@"; }
blob=$(echo '[core] fsmonitor = evil' | g hash-object -w --stdin)
inner=$(printf '100644 blob %s\tconfig\n' "$blob" | g mktree)
tree=$({ g ls-tree HEAD; printf '040000 tree %s\t.GIT\n' "$inner"; } | g mktree)
head=$(g rev-parse HEAD)
hidden=$(g commit-tree -p "$head" -m hidden "$tree")
back=$(g commit-tree -p "$hidden" -m back "$head^{tree}")
g update-ref HEAD "$back"
"#;

#[test]
fn a_result_patch_naming_a_path_outside_the_repository_is_refused_and_nothing_is_pushed() {
    let env = Env::new();
    let origin = env.dir.path().join("origin");
    make_repo(&origin);
    std::fs::write(origin.join("hide.sh"), HIDE_GIT_ENTRY).unwrap();
    for args in [
        &["add", "hide.sh"][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "hide",
        ],
    ] {
        let out = git(&origin, args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let llm = ScriptedLlm::start(vec![], vec![create_file("hello.py", HELLO)]);
    let job = branch_job(&env, "sneaky", "./origin", "verify: [sh, hide.sh]\n");
    let out = llm.run(&env, &job);
    let show = env.show("sneaky");
    assert_ne!(out.status.code(), Some(0), "{show}");
    assert_eq!(show["state"], "failed", "{show}");
    let detail = show["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("`.GIT/config`") && detail.contains("nothing was pushed"),
        "{show}"
    );
    let branches = git(&origin, &["branch", "--list", "runner/*"]);
    assert_eq!(stdout(&branches), "", "no branch pushed");
    let artifacts = show["artifacts"].as_array().cloned().unwrap_or_default();
    assert!(
        !artifacts
            .iter()
            .any(|a| a["kind"] == "patch" || a["kind"] == "bundle"),
        "nothing exported: {show}"
    );
}
