//! Pushing a result branch from the host, with the host's credentials: the bundle exported from
//! the sandbox is unpacked into the mirror (objects only, no ref changes), and its head is pushed
//! as a new branch to the job's repository. An existing branch is never overwritten: the same
//! commit is a no-op, a different one an error naming the branch.

use super::git::{git, redact_url};
use super::local::{Origin, Shadow};
use super::mirror::{lock_path, FileLock};
use super::RepoError;
use crate::job::RepoSource;
use std::ffi::OsString;
use std::path::Path;

/// Pushes the head of `bundle` (made from commits on top of a commit `mirror` has) as
/// `refs/heads/<branch>` to the repository `source` names: the local repository for a path,
/// the URL otherwise. Returns the commit the branch holds. A branch that already holds exactly
/// that commit (a push that finished after its runner crashed) counts as pushed.
pub fn push_branch(
    source: &RepoSource,
    mirror: &Path,
    bundle: &Path,
    branch: &str,
) -> Result<String, RepoError> {
    check_branch(branch)?;
    let origin = Origin::of(source)?;
    let _lock = FileLock::take(&lock_path(mirror), false, false)?;
    let head = unbundle(mirror, bundle)?;
    check_paths(mirror, bundle, &head)?;
    // A local repository is pushed to through a shadow git dir, so that `receive-pack` runs
    // with the runner's config and no hooks, never with the repository's own.
    let (remote, shown, _shadow): (OsString, String, Option<Shadow>) = match &origin {
        Origin::Remote(url) => (url.into(), redact_url(url), None),
        Origin::Local(repo) => {
            Shadow::check_ref_dirs(repo, branch)?;
            let cache = mirror.parent().unwrap_or(Path::new("."));
            let shadow = Shadow::create(cache, repo)?;
            let remote = shadow.dir().as_os_str().to_os_string();
            (remote, repo.path.display().to_string(), Some(shadow))
        }
        Origin::Folder(path) => {
            return Err(RepoError::NotARepository {
                path: path.clone(),
                why: "a branch can only be pushed to a git repository".into(),
            })
        }
    };
    let secret = remote.to_string_lossy().into_owned();
    let target = format!("refs/heads/{branch}");

    let existing = |what: &str| -> Result<Option<String>, RepoError> {
        let listed = git(Some(mirror))
            .args(["ls-remote", "--"])
            .arg(&remote)
            .arg(&target)
            .network()
            .hiding(&secret)
            .run(
                what,
                "check that the repository is reachable with the host's credentials",
            )?;
        Ok(listed.lines().find_map(|line| {
            let (sha, name) = line.split_once('\t')?;
            (name.trim() == target).then(|| sha.trim().to_string())
        }))
    };
    let exists_error = |existing: String| RepoError::BranchExists {
        branch: branch.to_string(),
        repo: shown.clone(),
        existing,
        wanted: head.clone(),
    };
    match existing(&format!("looking up branch `{branch}` in {shown}"))? {
        Some(sha) if sha == head => return Ok(head),
        Some(sha) => return Err(exists_error(sha)),
        None => {}
    }
    // The lease with an empty value means "only if the branch does not exist", closing the
    // race with anyone creating it since the look-up.
    let pushed = git(Some(mirror))
        .args(["push", "--quiet", "--no-verify"])
        .arg(format!("--force-with-lease={target}:"))
        .arg("--")
        .arg(&remote)
        .arg(format!("{head}:{target}"))
        .network()
        .hiding(&secret)
        // A local origin's receive-pack writes objects and refs into the user's repository.
        .with_user_umask()
        .output(&format!("pushing branch `{branch}` to {shown}"))?;
    if pushed.success {
        return Ok(head);
    }
    if pushed.stderr.contains("stale info") {
        if let Some(sha) = existing(&format!("looking up branch `{branch}` in {shown}"))? {
            if sha == head {
                return Ok(head);
            }
            return Err(exists_error(sha));
        }
    }
    Err(RepoError::Git {
        what: format!("pushing branch `{branch}` to {shown}"),
        message: super::git::last_lines(&pushed.stderr),
        hint: "check that the host's credentials may push to the repository".into(),
    })
}

fn check_branch(branch: &str) -> Result<(), RepoError> {
    let bad = || RepoError::BadBranch(branch.to_string());
    if branch.is_empty() || branch.starts_with('-') {
        return Err(bad());
    }
    let out = git(None)
        .args(["check-ref-format", &format!("refs/heads/{branch}")])
        .output("checking the branch name")?;
    if out.success {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Unpacks the bundle's objects into `mirror` (refs untouched) and returns its head commit.
fn unbundle(mirror: &Path, bundle: &Path) -> Result<String, RepoError> {
    let bad = |message: String| RepoError::BadBundle {
        path: bundle.to_path_buf(),
        message,
    };
    if !bundle.is_file() {
        return Err(bad("the file does not exist".into()));
    }
    let heads = git(Some(mirror))
        .args(["bundle", "list-heads", "--"])
        .arg(bundle)
        .output("reading the bundle")?;
    if !heads.success {
        return Err(bad(super::git::last_lines(&heads.stderr)));
    }
    let head = pick_head(&heads.stdout).ok_or_else(|| bad("it names no head commit".into()))?;
    let unpacked = git(Some(mirror))
        .args(["bundle", "unbundle", "--"])
        .arg(bundle)
        .output("unpacking the bundle")?;
    if !unpacked.success {
        return Err(bad(format!(
            "{} (the bundle must build on a commit of this repository)",
            super::git::last_lines(&unpacked.stderr)
        )));
    }
    Ok(head)
}

/// Refuses a result whose new commits (those the mirror's refs do not reach) add, change or
/// delete a path outside the repository or inside `.git`. The bundle comes from the sandbox,
/// and git takes such names from a crafted tree object.
fn check_paths(mirror: &Path, bundle: &Path, head: &str) -> Result<(), RepoError> {
    let names = git(Some(mirror))
        .args([
            "log",
            "-z",
            "--format=",
            "--name-only",
            "--no-renames",
            "-m",
            "--root",
        ])
        .args([head, "--not", "--all"])
        .run(
            "listing the result's paths",
            "the mirror may be damaged: delete it so the next run clones it afresh",
        )?;
    for name in names.split('\0').map(|n| n.trim_matches('\n')) {
        if let Some(why) = crate::result::patch_paths::unsafe_path(name) {
            return Err(RepoError::UnsafePath {
                bundle: bundle.to_path_buf(),
                path: name.to_string(),
                why,
            });
        }
    }
    Ok(())
}

/// The commit of `HEAD` in `git bundle list-heads` output, else of the work branch, else of the
/// only ref listed.
fn pick_head(list: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = list
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(sha, _)| sha.len() >= 40 && sha.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let named = |want: &str| refs.iter().find(|(_, name)| *name == want);
    named("HEAD")
        .or_else(|| named(&format!("refs/heads/{}", super::WORK_BRANCH)))
        .or_else(|| (refs.len() == 1).then(|| &refs[0]))
        .map(|(sha, _)| sha.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::mirror::mirror;
    use super::super::testutil::{commit, git_out, new_repo, write_bundle};
    use super::*;
    use std::path::PathBuf;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn the_bundle_head_is_picked() {
        assert_eq!(
            pick_head(&format!("{A} refs/heads/x\n{B} HEAD\n")).as_deref(),
            Some(B)
        );
        assert_eq!(
            pick_head(&format!("{A} refs/heads/x\n{B} refs/heads/runner/work\n")).as_deref(),
            Some(B)
        );
        assert_eq!(
            pick_head(&format!("{A} refs/heads/x\n")).as_deref(),
            Some(A)
        );
        assert_eq!(
            pick_head(&format!("{A} refs/heads/x\n{B} refs/heads/y\n")),
            None
        );
        assert_eq!(pick_head("garbage\n"), None);
    }

    #[test]
    fn bad_branch_names_are_refused_before_any_push() {
        for name in ["", "-f", "a..b", "x y", "a.lock", "ends/"] {
            let err = check_branch(name).unwrap_err();
            assert!(matches!(err, RepoError::BadBranch(_)), "{name}: {err}");
        }
        check_branch("runner/fix-1").unwrap();
    }

    /// A bare "origin" with one commit, its mirror, and a bundle of one commit on top, made in a
    /// separate clone the way the sandbox would.
    fn setup(tmp: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
        let work = new_repo(tmp, "seed");
        let origin = tmp.join("origin.git");
        git_out(tmp, &["clone", "--quiet", "--bare", "seed", "origin.git"]);
        let mirror = mirror(&tmp.join("cache"), &RepoSource::Path(origin.clone())).unwrap();
        let base = git_out(&work, &["rev-parse", "HEAD"]);
        let head = commit(&work, "greet.py", "print('hi')\n", "add greet");
        let bundle = tmp.join("result.bundle");
        write_bundle(&work, &bundle, "HEAD", &base);
        (origin, mirror, bundle, head)
    }

    #[test]
    fn a_new_branch_is_created_at_the_bundle_head_and_a_repeat_is_a_no_op() {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, mirror, bundle, head) = setup(tmp.path());
        let source = RepoSource::Path(origin.clone());
        push_branch(&source, &mirror, &bundle, "runner/demo-1").unwrap();
        assert_eq!(
            git_out(&origin, &["rev-parse", "refs/heads/runner/demo-1"]),
            head
        );
        // The mirror's refs are untouched; only objects were added.
        assert!(git_out(&mirror, &["branch", "--list"]).lines().count() == 1);
        push_branch(&source, &mirror, &bundle, "runner/demo-1").unwrap();
    }

    #[test]
    fn a_symlink_in_the_origin_refs_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, mirror, bundle, _) = setup(tmp.path());
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, origin.join("refs/heads/runner")).unwrap();
        let err = push_branch(&RepoSource::Path(origin), &mirror, &bundle, "runner/x").unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_in_the_origin_objects_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, mirror, bundle, _) = setup(tmp.path());
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let pack = origin.join("objects/pack");
        let _ = std::fs::remove_dir_all(&pack);
        std::os::unix::fs::symlink(&elsewhere, &pack).unwrap();
        let err = push_branch(&RepoSource::Path(origin), &mirror, &bundle, "runner/x").unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_different_existing_branch_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, mirror, bundle, head) = setup(tmp.path());
        let main = git_out(&origin, &["rev-parse", "main"]);
        let err =
            push_branch(&RepoSource::Path(origin.clone()), &mirror, &bundle, "main").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "branch `main` already exists in {} at {main}, not at the result {head}: \
                 choose another `output.branch`, or delete that branch first",
                origin.display()
            )
        );
        assert_eq!(git_out(&origin, &["rev-parse", "main"]), main);
    }

    #[test]
    fn a_bundle_adding_paths_outside_the_repository_or_inside_git_is_never_pushed() {
        for (name, path) in [
            (".git", ".git/hooks/post-checkout"),
            ("..", "../hooks/post-checkout"),
            ("sub/.Git", "sub/.Git/hooks/post-checkout"),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (origin, mirror, _, _) = setup(tmp.path());
            let work = tmp.path().join("seed");
            let base = git_out(&work, &["rev-parse", "HEAD~1"]);
            // A tree git would never write from a work tree, made object by object.
            let blob = git_out(&work, &["hash-object", "-w", "README.md"]);
            let hooks = mktree(&work, &format!("100755 blob {blob}\tpost-checkout"));
            let dir = mktree(&work, &format!("040000 tree {hooks}\thooks"));
            let mut tree = dir;
            let parts: Vec<&str> = name.rsplit('/').collect();
            for (i, part) in parts.iter().enumerate() {
                let listing = if i + 1 == parts.len() {
                    format!("{}\n", git_out(&work, &["ls-tree", &base]))
                } else {
                    String::new()
                };
                tree = mktree(&work, &format!("{listing}040000 tree {tree}\t{part}"));
            }
            let evil = git_out(&work, &["commit-tree", "-p", &base, "-m", "evil", &tree]);
            let bundle = tmp.path().join("evil.bundle");
            git_out(&work, &["branch", "evil", &evil]);
            write_bundle(&work, &bundle, "evil", &base);
            let err = push_branch(
                &RepoSource::Path(origin.clone()),
                &mirror,
                &bundle,
                "runner/evil",
            )
            .unwrap_err();
            assert!(
                matches!(&err, RepoError::UnsafePath { path: p, .. } if p == path),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("nothing was pushed"), "{err}");
            assert_eq!(git_out(&origin, &["branch", "--list", "runner/evil"]), "");
        }
    }

    /// `git mktree` with `lines` (one `mode type id\tname` each) as input.
    fn mktree(repo: &Path, lines: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .arg("mktree")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", lines.trim_end()).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_bundle_that_does_not_fit_the_mirror_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (origin, mirror, _, _) = setup(tmp.path());
        let other = new_repo(tmp.path(), "unrelated");
        // Same first commit as the origin's (same tree, author and second): diverge first.
        let base = commit(&other, "other.txt", "unrelated\n", "unrelated base");
        commit(&other, "x", "x", "x");
        let bundle = tmp.path().join("other.bundle");
        write_bundle(&other, &bundle, "HEAD", &base);
        let err = push_branch(&RepoSource::Path(origin), &mirror, &bundle, "x").unwrap_err();
        assert!(matches!(err, RepoError::BadBundle { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("the bundle must build on a commit of this repository"),
            "{err}"
        );
    }
}
