//! Paths named in a job file (`repo`, `llm.record`, `llm.replay`) are relative to the job file's
//! directory, so a job means the same thing from whatever directory `runner` is started in.
//! This module resolves them to absolute, lexically normalized paths and tells URLs from paths.

use std::path::{Component, Path, PathBuf};

/// URL prefixes accepted for `repo`; anything else that is not `user@host:path` is a local path.
const URL_SCHEMES: [&str; 5] = ["https://", "http://", "ssh://", "git://", "file://"];

/// True for `repo` values git treats as remote: a URL with a known scheme or scp-like
/// `user@host:path`.
pub(crate) fn is_repo_url(repo: &str) -> bool {
    if URL_SCHEMES.iter().any(|scheme| repo.starts_with(scheme)) {
        return true;
    }
    let Some((user_host, _)) = repo.split_once(':') else {
        return false;
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return false;
    };
    !user.is_empty() && !host.is_empty() && !user_host.contains(['/', ' '])
}

/// Refuses remote `repo` values that could be read as options by git or ssh
/// (`-oProxyCommand=...@host:x`, `ssh://-oProxyCommand=...`) or that hold spaces.
pub(crate) fn check_repo_url(url: &str) -> Result<(), String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_part = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host);
    let dashed =
        url.starts_with('-') || after_scheme.starts_with('-') || host_part.starts_with('-');
    if let Some(rest) = url.strip_prefix("file://") {
        let host = &rest[..rest.find('/').unwrap_or(rest.len())];
        if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) || host.len() == rest.len()
        {
            return Err(format!(
                "`{}` names a host: a `file://` URL reaches this host only; write \
                 `file:///path/to/repo`, or use an `ssh://` URL for another host",
                url.escape_debug()
            ));
        }
    }
    if dashed || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "repository URL `{}` has a space, or a part starting with `-` that git could read as \
             an option: write a plain URL like `https://git.example.com/org/app.git`",
            url.escape_debug()
        ));
    }
    Ok(())
}

/// The absolute directory that relative paths in the job file at `job_file` are resolved against.
pub(crate) fn base_dir(job_file: &Path) -> PathBuf {
    let parent = job_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let absolute = if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        // Without a current directory the path stays relative; the existence checks still work.
        std::env::current_dir().map_or_else(|_| parent.to_path_buf(), |cwd| cwd.join(parent))
    };
    normalize(&absolute)
}

/// `written` resolved against `base` (unless absolute) and lexically normalized.
pub(crate) fn resolve(base: &Path, written: &str) -> PathBuf {
    normalize(&base.join(written))
}

/// Checks that `path` (already resolved against `base`) stays inside `base`, the job file's
/// directory, also after following symlinks: a job file may not reach into the rest of the host
/// through `..`, an absolute path or a link. Repositories elsewhere are named by URL (`file://`).
pub(crate) fn check_inside(base: &Path, path: &Path) -> Result<(), String> {
    let real = |p: &Path| -> PathBuf {
        // The deepest existing ancestor, with symlinks resolved, plus the rest as written.
        let mut existing = p.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (
                existing.file_name().map(|n| n.to_os_string()),
                existing.parent(),
            ) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
        out.extend(rest.iter().rev());
        out
    };
    let (real_base, real_path) = (real(base), real(path));
    if real_path.starts_with(&real_base) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is outside the job file's directory `{}`: local paths must stay inside the \
             folder that holds the job file (name a repository elsewhere by URL, like \
             `file:///srv/git/app.git`)",
            path.display(),
            base.display()
        ))
    }
}

/// Checks that the git repository at `path` (already inside `base`) keeps its git data inside
/// `base` too: a `.git` gitfile (`gitdir: <path>`) and a `commondir` file name other folders
/// that git would read (and, on a push, write) instead of the folder itself.
pub(crate) fn check_repo_inside(base: &Path, path: &Path) -> Result<(), String> {
    let outside = |what: &str, target: &Path| {
        format!(
            "{what} leads to `{}`, outside the job file's directory `{}`: a repository in the \
             job's folder must hold its own git data (name a repository elsewhere by URL, like \
             `file:///srv/git/app.git`)",
            target.display(),
            base.display()
        )
    };
    let dot_git = path.join(".git");
    let mut git_dir = path.to_path_buf();
    if let Ok(meta) = std::fs::symlink_metadata(&dot_git) {
        check_inside(base, &dot_git)
            .map_err(|_| outside(&format!("`{}`", dot_git.display()), &real(&dot_git)))?;
        git_dir = dot_git.clone();
        if std::fs::metadata(&dot_git).is_ok_and(|m| m.is_file()) || meta.is_file() {
            let text = read_small(&dot_git);
            let target = crate::repo::gitfile_path(&text).ok_or_else(|| {
                format!(
                    "`{}` is a file but not a gitfile (`gitdir: <path>`): make `repo` a \
                         plain git repository",
                    dot_git.display()
                )
            })?;
            git_dir = existing(
                &path.join(target),
                &format!("the gitfile `{}`", dot_git.display()),
            )?;
            check_inside(base, &git_dir)
                .map_err(|_| outside(&format!("the gitfile `{}`", dot_git.display()), &git_dir))?;
        }
    }
    let commondir = git_dir.join("commondir");
    if commondir.is_file() {
        let common = existing(
            &git_dir.join(read_small(&commondir).trim()),
            &format!("`{}`", commondir.display()),
        )?;
        check_inside(base, &common)
            .map_err(|_| outside(&format!("`{}`", commondir.display()), &common))?;
    }
    Ok(())
}

/// Where `target` (named by `what`) really leads, resolved by the file system as git resolves it:
/// `link/..` is the parent of wherever `link` points, not the folder holding `link`.
fn existing(target: &Path, what: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(target).map_err(|e| {
        format!(
            "{what} names `{}`, which cannot be resolved ({e}): make `repo` a plain git repository",
            target.display()
        )
    })
}

/// `path` with symlinks resolved, when it exists.
fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The start of a small text file (a gitfile, a `commondir`), or nothing.
fn read_small(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(4096).read_to_string(&mut text);
    }
    text
}

/// Removes `.` and folds `..` into its parent without touching the filesystem (a `..` at the
/// root stays at the root). Symlinks are left alone on purpose: the path is what the user wrote.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let at_root = out.parent().is_none() && out.has_root();
                let climbs = out.as_os_str().is_empty()
                    || out.components().next_back() == Some(Component::ParentDir);
                if climbs && !at_root {
                    out.push("..");
                } else if !at_root {
                    out.pop();
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_may_not_leave_the_job_file_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("jobs");
        std::fs::create_dir_all(base.join("repo")).unwrap();
        assert!(check_inside(&base, &resolve(&base, "repo")).is_ok());
        assert!(check_inside(&base, &resolve(&base, "new/cassette.jsonl")).is_ok());
        let err = check_inside(&base, &resolve(&base, "../../etc")).unwrap_err();
        assert!(err.contains("outside the job file's directory"), "{err}");
        assert!(check_inside(&base, Path::new("/etc")).is_err());
        std::os::unix::fs::symlink("/etc", base.join("link")).unwrap();
        assert!(
            check_inside(&base, &resolve(&base, "link")).is_err(),
            "a symlink out is refused"
        );
    }

    #[test]
    fn a_repository_whose_git_data_lives_outside_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("jobs");
        let repo = base.join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        assert!(check_repo_inside(&base, &repo).is_ok());
        std::fs::remove_dir(repo.join(".git")).unwrap();
        std::fs::create_dir_all(base.join("inside.git")).unwrap();
        std::fs::write(repo.join(".git"), "gitdir: ../inside.git\n").unwrap();
        assert!(check_repo_inside(&base, &repo).is_ok());
        std::fs::write(repo.join(".git"), "gitdir: ../../elsewhere.git\n").unwrap();
        let err = check_repo_inside(&base, &repo).unwrap_err();
        assert!(
            err.contains("the gitfile") && err.contains("elsewhere.git"),
            "{err}"
        );
        std::fs::write(repo.join(".git"), "gitdir: /srv/git/app.git\n").unwrap();
        assert!(check_repo_inside(&base, &repo).is_err());
        std::fs::write(repo.join(".git"), "not a gitfile\n").unwrap();
        assert!(check_repo_inside(&base, &repo)
            .unwrap_err()
            .contains("not a gitfile"));
        // A linked work tree's git dir names the common dir of its repository.
        std::fs::write(repo.join(".git"), "gitdir: ../inside.git\n").unwrap();
        std::fs::write(base.join("inside.git/commondir"), "../../../main.git\n").unwrap();
        assert!(check_repo_inside(&base, &repo)
            .unwrap_err()
            .contains("commondir"));
        std::fs::remove_file(repo.join(".git")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), repo.join(".git")).unwrap();
        assert!(
            check_repo_inside(&base, &repo).is_err(),
            "a .git symlink out"
        );
    }

    #[test]
    fn a_gitfile_leading_out_through_a_symlink_and_dot_dot_is_refused() {
        // `link/..` is the parent of where `link` points (as git resolves it), not `jobs/`.
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("jobs");
        let repo = base.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let far = tmp.path().join("far/away");
        std::fs::create_dir_all(&far).unwrap();
        std::fs::create_dir_all(tmp.path().join("far/x.git")).unwrap();
        std::fs::create_dir_all(base.join("x.git")).unwrap();
        std::os::unix::fs::symlink(&far, base.join("link")).unwrap();
        std::fs::write(repo.join(".git"), "gitdir: ../link/../x.git\n").unwrap();
        let err = check_repo_inside(&base, &repo).unwrap_err();
        assert!(err.contains("far/x.git"), "{err}");
        // The same trick in a linked work tree's `commondir`.
        std::fs::write(repo.join(".git"), "gitdir: ../x.git\n").unwrap();
        std::fs::write(base.join("x.git/commondir"), "../link/../x.git\n").unwrap();
        let err = check_repo_inside(&base, &repo).unwrap_err();
        assert!(
            err.contains("commondir") && err.contains("far/x.git"),
            "{err}"
        );
    }

    #[test]
    fn file_urls_naming_another_host_are_refused() {
        assert!(check_repo_url("file:///srv/app.git").is_ok());
        assert!(check_repo_url("file://localhost/srv/app.git").is_ok());
        for url in ["file://evil/srv/app.git", "file://localhost", "file://"] {
            assert!(
                check_repo_url(url).unwrap_err().contains("names a host"),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_are_recognised() {
        for url in [
            "https://git.example.com/org/app.git",
            "http://localhost:3000/app",
            "ssh://git@host/app.git",
            "git://host/app",
            "file:///srv/git/app.git",
            "git@github.com:org/app.git",
        ] {
            assert!(is_repo_url(url), "{url}");
        }
    }

    #[test]
    fn urls_that_look_like_options_are_refused() {
        for url in [
            "-oProxyCommand=touch@x:y",
            "ssh://-oProxyCommand=touch/app",
            "ssh://git@-oProxyCommand=touch/app",
            "git@-host:app.git",
            "https://host/a b",
        ] {
            assert!(check_repo_url(url).is_err(), "{url}");
        }
        assert!(check_repo_url("git@github.com:org/app.git").is_ok());
        assert!(check_repo_url("https://user@host/app-1.git").is_ok());
    }

    #[test]
    fn everything_else_is_a_path() {
        for path in [
            ".",
            "../app",
            "/srv/app",
            "app",
            "./a@b:c",
            "C:/x",
            "dir/user@host:x",
        ] {
            assert!(!is_repo_url(path), "{path}");
        }
    }

    #[test]
    fn normalizing_folds_dots() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(normalize(Path::new("./")), PathBuf::from("."));
    }

    #[test]
    fn relative_paths_resolve_against_the_job_file_directory() {
        let base = base_dir(Path::new("/jobs/team/demo.yaml"));
        assert_eq!(base, PathBuf::from("/jobs/team"));
        assert_eq!(resolve(&base, "../repo"), PathBuf::from("/jobs/repo"));
        assert_eq!(resolve(&base, "/abs/repo"), PathBuf::from("/abs/repo"));
    }

    #[test]
    fn a_bare_file_name_resolves_against_the_current_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(base_dir(Path::new("demo.yaml")), normalize(&cwd));
        assert!(base_dir(Path::new("jobs/demo.yaml")).is_absolute());
    }
}
