//! A hostile local repository (every hook and config command git honours writes a marker) goes
//! through everything this module does with a repository: mirror, fetch, checkout, push.
//! Nothing may run; the branch must still arrive.

use super::testutil::{commit, git_out, write_bundle};
use super::{checkout, mirror, push_branch};
use crate::job::RepoSource;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the fixture: `tests/fixtures/hostile_repo.sh WORK MARKERS [GITDIR]`.
fn hostile(work: &Path, markers: &Path, git_dir: Option<&Path>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile_repo.sh");
    let mut cmd = Command::new("sh");
    cmd.arg(script).arg(work).arg(markers);
    if let Some(dir) = git_dir {
        cmd.arg(dir);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The markers written so far (the marker program itself, `.mark`, left out).
fn markers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".mark")
        .collect();
    names.sort();
    names
}

/// Mirrors `source` twice (clone, then fetch), checks it out, makes a commit, pushes it as
/// `branch`; returns the commit.
fn mirror_checkout_and_push(tmp: &Path, source: &RepoSource, branch: &str) -> String {
    let cache = tmp.join("cache");
    let dir = mirror(&cache, source).unwrap();
    assert_eq!(mirror(&cache, source).unwrap(), dir);
    let work = tmp.join(format!("work-{}", branch.replace('/', "-")));
    let got = checkout(&dir, None, &work).unwrap();
    let head = commit(
        &work,
        "greet.py",
        "def greet(name):\n    return name\n",
        "greet",
    );
    let bundle = tmp.join(format!("{}.bundle", branch.replace('/', "-")));
    write_bundle(&work, &bundle, "HEAD", &got.base_commit);
    push_branch(source, &dir, &bundle, branch).unwrap();
    // A repeat finds the branch in place (a look-up through the same route) and does nothing.
    push_branch(source, &dir, &bundle, branch).unwrap();
    head
}

/// The commit a loose ref of the git dir `git_dir` holds, read as a file (git would run the
/// repository's config).
fn loose_ref(git_dir: &Path, branch: &str) -> String {
    std::fs::read_to_string(git_dir.join("refs/heads").join(branch))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What plain git does with the same repository: proves the fixture is live.
fn naive_push(tmp: &Path, origin: &Path) {
    let clone = tmp.join("naive");
    git_out(
        tmp,
        &[
            "clone",
            "--quiet",
            "--no-local",
            "--bare",
            origin.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let tree = git_out(&clone, &["rev-parse", "HEAD^{tree}"]);
    let sha = git_out(&clone, &["commit-tree", "-m", "naive", "-p", "HEAD", &tree]);
    let _ = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["push", "--quiet"])
        .arg(origin)
        .arg(format!("{sha}:refs/heads/naive"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
}

fn check(tmp: &Path, origin: &Path, git_dir: &Path, marks: &Path) {
    let head =
        mirror_checkout_and_push(tmp, &RepoSource::Path(origin.to_path_buf()), "runner/path");
    assert_eq!(loose_ref(git_dir, "runner/path"), head);
    let url = format!("file://{}", origin.display());
    let head = mirror_checkout_and_push(&tmp.join("url"), &RepoSource::Url(url), "runner/url");
    assert_eq!(loose_ref(git_dir, "runner/url"), head);
    assert_eq!(
        markers(marks),
        Vec::<String>::new(),
        "nothing of the repository ran"
    );
    let leftovers: Vec<PathBuf> = std::fs::read_dir(tmp.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".shadow")
        })
        .collect();
    assert!(leftovers.is_empty(), "shadows are removed: {leftovers:?}");

    naive_push(tmp, origin);
    let ran = markers(marks);
    assert!(
        ran.iter().any(|m| m.ends_with("pre-receive"))
            && ran.contains(&"alternateRefsCommand".to_string()),
        "plain git runs the fixture's hooks and commands: {ran:?}"
    );
}

#[test]
fn a_hostile_local_repository_runs_nothing_on_mirror_checkout_or_push() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, marks) = (tmp.path().join("origin"), tmp.path().join("markers"));
    hostile(&origin, &marks, None);
    check(tmp.path(), &origin, &origin.join(".git"), &marks);
}

#[test]
fn a_hostile_bare_repository_behind_a_gitfile_runs_nothing_either() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, marks) = (tmp.path().join("origin"), tmp.path().join("markers"));
    let git_dir = tmp.path().join("origin.git");
    hostile(&origin, &marks, Some(&git_dir));
    assert!(origin.join(".git").is_file());
    check(tmp.path(), &origin, &git_dir, &marks);
}

#[test]
fn a_folder_holding_a_hostile_repository_is_snapshotted_without_running_it() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    let marks = tmp.path().join("markers");
    hostile(&folder.join("sub"), &marks, None);
    std::fs::write(folder.join("a.txt"), "a\n").unwrap();
    let dir = mirror(&tmp.path().join("cache"), &RepoSource::Path(folder)).unwrap();
    assert_eq!(git_out(&dir, &["show", "HEAD:a.txt"]), "a");
    assert_eq!(markers(&marks), Vec::<String>::new());
}

#[test]
fn a_shadow_left_by_a_killed_runner_is_removed_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = super::testutil::new_repo(tmp.path(), "origin");
    let cache = tmp.path().join("cache");
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let left = cache.join(format!(".shadow-{pid}-0"));
    std::fs::create_dir_all(&left).unwrap();
    std::os::unix::fs::symlink(origin.join(".git/objects"), left.join("objects")).unwrap();
    let mine = cache.join(format!(".shadow-{}-999", std::process::id()));
    std::fs::create_dir_all(&mine).unwrap();
    mirror(&cache, &RepoSource::Path(origin.clone())).unwrap();
    assert!(!left.exists(), "the dead process's shadow is removed");
    assert!(mine.exists(), "a live process's shadow is left alone");
    assert!(origin.join(".git/objects").is_dir(), "only the link went");
}
