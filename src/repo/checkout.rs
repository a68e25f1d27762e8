//! A work tree for one job, checked out from the mirror: self-contained (objects copied or
//! hardlinked, never borrowed through alternates, because it moves into a container), on the
//! local branch [`WORK_BRANCH`] at the job's base commit, with no remote and no reflogs that
//! would name host paths.

use super::git::git;
use super::mirror::{describe, lock_path, FileLock};
use super::RepoError;
use std::path::{Path, PathBuf};

/// The branch the agent works on inside the sandbox.
pub const WORK_BRANCH: &str = "runner/work";

/// A work tree ready to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// The commit the job starts from (full hex id); the result is everything after it.
    pub base_commit: String,
    /// The work tree, with its `.git`.
    pub dir: PathBuf,
}

/// Resolves `git_ref` (a branch, tag or commit; default the mirror's HEAD) in `mirror` and makes
/// a work tree at `dest` (which must not exist, or be empty) on [`WORK_BRANCH`] at that commit.
pub fn checkout(mirror: &Path, git_ref: Option<&str>, dest: &Path) -> Result<Checkout, RepoError> {
    let _lock = FileLock::take(&lock_path(mirror), false, false)?;
    let base_commit = resolve(mirror, git_ref)?;
    prepare_destination(dest)?;
    let cleanup = |err: RepoError| {
        let _ = std::fs::remove_dir_all(dest);
        err
    };
    make_work_tree(mirror, &base_commit, dest).map_err(cleanup)?;
    Ok(Checkout {
        base_commit,
        dir: dest.to_path_buf(),
    })
}

/// The full commit id `git_ref` names in `repo`.
fn resolve(repo: &Path, git_ref: Option<&str>) -> Result<String, RepoError> {
    let wanted = git_ref.unwrap_or("HEAD");
    let out = git(Some(repo))
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{wanted}^{{commit}}"))
        .output("resolving the ref")?;
    if out.success {
        return Ok(out.stdout.trim().to_string());
    }
    let repo = describe(repo);
    Err(match git_ref {
        Some(git_ref) => RepoError::UnknownRef {
            git_ref: git_ref.to_string(),
            repo,
        },
        None => RepoError::NoCommits { repo },
    })
}

fn prepare_destination(dest: &Path) -> Result<(), RepoError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RepoError::DestinationInUse(dest.to_path_buf()));
            }
            std::fs::remove_dir(dest).map_err(RepoError::io(dest))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(RepoError::io(parent))
        }
        Err(e) => Err(RepoError::io(dest)(e)),
    }
}

fn make_work_tree(mirror: &Path, base: &str, dest: &Path) -> Result<(), RepoError> {
    let hint = &format!(
        "the mirror {} may be damaged: delete it so the next run clones it afresh",
        mirror.display()
    );
    // A local clone hardlinks (or copies) the mirror's objects; `--template=` leaves out the
    // sample hooks and description. No `--shared`: alternates would not survive the move.
    git(None)
        .args([
            "clone",
            "--quiet",
            "--local",
            "--no-checkout",
            "--template=",
            "--",
        ])
        .arg(mirror)
        .arg(dest)
        .run("copying the mirror into the work tree", hint)?;
    let work = Some(dest);
    git(work)
        .args(["checkout", "--quiet", "-B", WORK_BRANCH, base])
        .run("checking out the base commit", hint)?;
    let branches = git(work)
        .args(["for-each-ref", "--format=%(refname)", "refs/heads/"])
        .run("listing branches", hint)?;
    for branch in branches.lines().map(str::trim) {
        if !branch.is_empty() && branch != format!("refs/heads/{WORK_BRANCH}") {
            git(work)
                .args(["update-ref", "-d", branch])
                .run("removing the clone's other branches", hint)?;
        }
    }
    git(work)
        .args(["remote", "remove", "origin"])
        .run("removing the origin remote", hint)?;
    // Reflogs record where the clone came from: a host path the sandbox has no business seeing.
    let logs = dest.join(".git/logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).map_err(RepoError::io(&logs))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::mirror::mirror;
    use super::super::testutil::{commit, git_out, new_repo};
    use super::*;
    use crate::job::RepoSource;

    struct Fixture {
        tmp: tempfile::TempDir,
        origin: PathBuf,
        mirror: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let origin = new_repo(tmp.path(), "origin");
        let mirror = mirror(&tmp.path().join("cache"), &RepoSource::Path(origin.clone())).unwrap();
        Fixture {
            tmp,
            origin,
            mirror,
        }
    }

    #[test]
    fn default_is_the_head_on_the_work_branch_without_remote() {
        let f = fixture();
        let dest = f.tmp.path().join("jobs/1/work");
        let got = checkout(&f.mirror, None, &dest).unwrap();
        assert_eq!(got.dir, dest);
        assert_eq!(got.base_commit, git_out(&f.origin, &["rev-parse", "HEAD"]));
        assert_eq!(got.base_commit.len(), 40);
        assert_eq!(
            git_out(&dest, &["symbolic-ref", "HEAD"]),
            "refs/heads/runner/work"
        );
        assert_eq!(git_out(&dest, &["rev-parse", "HEAD"]), got.base_commit);
        assert_eq!(
            git_out(
                &dest,
                &["for-each-ref", "--format=%(refname)", "refs/heads"]
            ),
            "refs/heads/runner/work"
        );
        assert_eq!(git_out(&dest, &["remote"]), "");
        assert_eq!(git_out(&dest, &["status", "--porcelain"]), "");
        assert_eq!(
            std::fs::read_to_string(dest.join("README.md")).unwrap(),
            "# demo\n"
        );
        assert!(!dest.join(".git/objects/info/alternates").exists());
        assert!(!dest.join(".git/logs").exists());
        assert!(!dest.join(".git/hooks").exists());
        // Self-contained: the work tree still works once the mirror is gone.
        std::fs::remove_dir_all(&f.mirror).unwrap();
        git_out(&dest, &["fsck", "--no-progress"]);
    }

    #[test]
    fn branches_tags_and_commits_resolve() {
        let f = fixture();
        let first = git_out(&f.origin, &["rev-parse", "HEAD"]);
        git_out(&f.origin, &["tag", "-a", "v1", "-m", "release"]);
        git_out(&f.origin, &["checkout", "--quiet", "-b", "feature"]);
        let feature = commit(&f.origin, "f.txt", "f\n", "feature");
        git_out(&f.origin, &["checkout", "--quiet", "main"]);
        let cache = f.mirror.parent().unwrap();
        mirror(cache, &RepoSource::Path(f.origin.clone())).unwrap();

        for (i, (r, want)) in [
            ("feature", &feature),
            ("v1", &first),
            (feature.as_str(), &feature),
            (&feature[..10], &feature),
            ("refs/heads/main", &first),
        ]
        .into_iter()
        .enumerate()
        {
            let dest = f.tmp.path().join(format!("w{i}"));
            let got = checkout(&f.mirror, Some(r), &dest).unwrap();
            assert_eq!(&got.base_commit, want, "{r}");
            assert_eq!(&git_out(&dest, &["rev-parse", "HEAD"]), want, "{r}");
            assert_eq!(git_out(&dest, &["branch", "--show-current"]), WORK_BRANCH);
        }
    }

    #[test]
    fn an_unknown_ref_names_the_ref_and_the_repo() {
        let f = fixture();
        let dest = f.tmp.path().join("w");
        let err = checkout(&f.mirror, Some("nope"), &dest)
            .unwrap_err()
            .to_string();
        let origin = std::fs::canonicalize(&f.origin).unwrap();
        assert_eq!(
            err,
            format!(
                "ref `nope` is not a branch, tag or commit of {}: fix `ref` in the job file \
                 (a commit must be reachable from a branch or tag there)",
                origin.display()
            )
        );
        assert!(!dest.exists());
    }

    #[test]
    fn an_empty_repository_has_no_base() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.git");
        std::fs::create_dir(&empty).unwrap();
        git_out(&empty, &["init", "--quiet", "--bare"]);
        let err = checkout(&empty, None, &tmp.path().join("w")).unwrap_err();
        assert!(matches!(err, RepoError::NoCommits { .. }), "{err}");
        assert!(err.to_string().contains("has no commits"), "{err}");
    }

    #[test]
    fn a_non_empty_destination_is_refused() {
        let f = fixture();
        let dest = f.tmp.path().join("busy");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("keep.txt"), "mine").unwrap();
        let err = checkout(&f.mirror, None, &dest).unwrap_err();
        assert!(matches!(err, RepoError::DestinationInUse(_)), "{err}");
        assert!(dest.join("keep.txt").is_file());
        let empty = f.tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        checkout(&f.mirror, None, &empty).unwrap();
    }
}
