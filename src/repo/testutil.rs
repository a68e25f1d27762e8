//! Helpers for this module's unit tests: small real repositories made with the host's git.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` with a fixed identity and no user configuration; panics on failure and
/// returns stdout, trimmed.
#[track_caller]
pub(crate) fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new non-bare repository `parent/name` on branch `main` with one commit (`README.md`).
pub(crate) fn new_repo(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git_out(&dir, &["init", "--quiet", "--initial-branch=main"]);
    commit(&dir, "README.md", "# demo\n", "first");
    dir
}

/// Writes `file` and commits it; returns the new commit.
pub(crate) fn commit(repo: &Path, file: &str, content: &str, message: &str) -> String {
    let path = repo.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
    git_out(repo, &["add", "--", file]);
    git_out(repo, &["commit", "--quiet", "-m", message]);
    git_out(repo, &["rev-parse", "HEAD"])
}

/// Writes a bundle of `repo`'s `tip` (a ref or commit) that leaves out `base` and what it has,
/// as an attempt's export does.
pub(crate) fn write_bundle(repo: &Path, path: &Path, tip: &str, base: &str) {
    git_out(
        repo,
        &[
            "bundle",
            "create",
            "--quiet",
            path.to_str().unwrap(),
            tip,
            &format!("^{base}"),
        ],
    );
}
