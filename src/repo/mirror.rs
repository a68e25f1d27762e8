//! The mirror cache: one bare `git clone --mirror` per repository source, named by a hash of its
//! URL (or canonical path), refreshed with `git fetch --prune` on later uses. A `flock` on a
//! sibling `.lock` file keeps concurrent jobs on one repository from colliding: updates take it
//! exclusively, readers (checkout, push) take it shared. The kernel drops it when a process dies.

use super::git::{git, redact_url};
use super::local::{LocalRepo, Origin, Shadow};
use super::RepoError;
use crate::job::RepoSource;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The mirror of one repository source inside a cache directory.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// The bare mirror repository (`<cache>/<name>-<hash>.git`).
    dir: PathBuf,
    /// Where the mirror is filled from.
    origin: Origin,
    /// The source as people should read it (credentials hidden).
    shown: String,
}

/// Brings the mirror of `source` under `cache_dir` up to date (cloning it on first use) and
/// returns its directory. Blocks while another process updates the same mirror.
pub fn mirror(cache_dir: &Path, source: &RepoSource) -> Result<PathBuf, RepoError> {
    let mirror = Mirror::new(cache_dir, source)?;
    mirror.update()?;
    Ok(mirror.dir)
}

impl Mirror {
    /// Where the mirror of `source` lives; touches nothing but a local source's path.
    pub fn new(cache_dir: &Path, source: &RepoSource) -> Result<Mirror, RepoError> {
        let origin = Origin::of(source)?;
        let (key, shown) = match &origin {
            Origin::Remote(url) => (
                url.trim_end_matches('/').as_bytes().to_vec(),
                redact_url(url),
            ),
            Origin::Local(LocalRepo { path, .. }) | Origin::Folder(path) => (
                path.as_os_str().as_encoded_bytes().to_vec(),
                path.display().to_string(),
            ),
        };
        Ok(Mirror {
            dir: cache_dir.join(dir_name(&key)),
            origin,
            shown,
        })
    }

    /// The bare mirror repository.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Clones the mirror on first use, fetches (pruning deleted refs) on later ones, holding
    /// the mirror's lock exclusively meanwhile.
    pub fn update(&self) -> Result<(), RepoError> {
        let cache = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(cache).map_err(RepoError::io(cache))?;
        let _lock = FileLock::take(&lock_path(&self.dir), true, true)?;
        // A local repository is read through a shadow git dir: git never runs in its own.
        let (remote, _shadow) = match &self.origin {
            Origin::Folder(folder) => return self.snapshot(folder),
            Origin::Remote(url) => (OsString::from(url), None),
            Origin::Local(repo) => {
                let shadow = Shadow::create(cache, repo)?;
                (shadow.dir().as_os_str().to_os_string(), Some(shadow))
            }
        };
        if self.dir.join("HEAD").is_file() {
            return self.fetch(&remote);
        }
        self.clone_fresh(cache, &remote)
    }

    /// What the mirror's `origin` remote records: the URL, or the local repository's path
    /// (for messages only: a local origin is always fetched through a fresh shadow).
    fn recorded_origin(&self) -> OsString {
        match &self.origin {
            Origin::Remote(url) => OsString::from(url),
            Origin::Local(LocalRepo { path, .. }) | Origin::Folder(path) => {
                path.as_os_str().to_os_string()
            }
        }
    }

    /// A local directory that is not a git repository: its files (as they are now) become a
    /// commit in the mirror, so an agent can work on any folder. Unchanged files add no commit.
    fn snapshot(&self, source: &Path) -> Result<(), RepoError> {
        let hint = format!(
            "check that {} is readable, or make it a git repository",
            source.display()
        );
        if !self.dir.join("HEAD").is_file() {
            git(None)
                .args(["init", "--bare", "--quiet", "--template=", "-b", "main"])
                .arg(&self.dir)
                .run("creating a snapshot repository", &hint)?;
        }
        let in_snapshot = |args: &[&str]| {
            git(None)
                .arg(format!("--git-dir={}", self.dir.display()))
                .arg(format!("--work-tree={}", source.display()))
                .args([
                    "-c",
                    "user.name=runner",
                    "-c",
                    "user.email=runner@localhost",
                ])
                .args(args.iter().copied())
        };
        in_snapshot(&["add", "--all", "."]).run(&format!("snapshotting {}", self.shown), &hint)?;
        let has_head = in_snapshot(&["rev-parse", "--verify", "--quiet", "HEAD"])
            .output("reading the snapshot")?
            .success;
        if has_head
            && in_snapshot(&["diff", "--cached", "--quiet", "HEAD"])
                .output("comparing the snapshot")?
                .success
        {
            return Ok(());
        }
        in_snapshot(&[
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            "runner: snapshot of a local folder",
        ])
        .run(&format!("snapshotting {}", self.shown), &hint)?;
        Ok(())
    }

    fn fetch(&self, remote: &OsStr) -> Result<(), RepoError> {
        // The remote is named explicitly so that a moved local source (same hash, new path)
        // or a changed URL cannot make the mirror fetch something else.
        git(Some(&self.dir))
            .args(["remote", "set-url", "origin"])
            .arg(self.recorded_origin())
            .run(
                "updating the mirror's remote",
                &format!(
                    "the mirror {} may be damaged: delete it so the next run clones it afresh",
                    self.dir.display()
                ),
            )?;
        git(Some(&self.dir))
            .args(["fetch", "--prune", "--quiet", "--"])
            .arg(remote)
            .arg("+refs/*:refs/*")
            .network()
            .hiding(&remote.to_string_lossy())
            .run(
                &format!("fetching {}", self.shown),
                &format!(
                    "check that the repository is reachable with the host's credentials, \
                     or delete the mirror {} to clone it afresh",
                    self.dir.display()
                ),
            )?;
        Ok(())
    }

    fn clone_fresh(&self, cache: &Path, remote: &OsStr) -> Result<(), RepoError> {
        // Clone beside the final name and rename, so that an interrupted clone never looks
        // like a mirror.
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        let partial = cache.join(format!(".{name}.partial-{}", std::process::id()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(RepoError::io(&partial))?;
        }
        // `--no-local`: a local clone would copy (or hardlink) the origin's object files,
        // `info/alternates` included, instead of receiving a pack.
        let cloned = git(None)
            .args([
                "clone",
                "--mirror",
                "--no-local",
                "--quiet",
                "--template=",
                "--",
            ])
            .arg(remote)
            .arg(&partial)
            .network()
            .hiding(&remote.to_string_lossy())
            .run(
                &format!("cloning {}", self.shown),
                "check that `repo` names a git repository (the top of a local repository, or \
                 a URL) that the host can read with its own credentials",
            );
        let recorded = cloned.and_then(|_| {
            git(Some(&partial))
                .args(["remote", "set-url", "origin"])
                .arg(self.recorded_origin())
                .run("recording the mirror's origin", "check the cache directory")
        });
        if let Err(err) = recorded {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(err);
        }
        std::fs::rename(&partial, &self.dir).map_err(RepoError::io(&self.dir))
    }
}

/// `<last path segment>-<16 hex digits of SHA-256>.git`: unique per source, readable by people.
fn dir_name(key: &[u8]) -> String {
    let hash = Sha256::digest(key);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let text = String::from_utf8_lossy(key);
    let last = text
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let slug: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let slug = slug.trim_start_matches('.');
    if slug.is_empty() {
        format!("repo-{hex}.git")
    } else {
        format!("{slug}-{hex}.git")
    }
}

/// The lock file beside a mirror directory.
pub(crate) fn lock_path(mirror_dir: &Path) -> PathBuf {
    mirror_dir.with_extension("lock")
}

/// A held `flock`, released on drop (or by the kernel when the process ends).
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the lock on `path`. Without `create`, a missing lock file means there is nothing
    /// to coordinate with (a repository outside the cache), and no lock is taken.
    pub fn take(path: &Path, exclusive: bool, create: bool) -> Result<Option<FileLock>, RepoError> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RepoError::io(path)(e)),
        };
        let mode = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: flock on a valid, owned file descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), mode) } == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(RepoError::io(path)(err));
            }
        }
    }
}

/// The mirror's origin as people should read it, or its path when it has none.
pub(crate) fn describe(repo: &Path) -> String {
    git(Some(repo))
        .args(["config", "--get", "remote.origin.url"])
        .output("reading the origin")
        .ok()
        .filter(|out| out.success && !out.stdout.trim().is_empty())
        .map_or_else(
            || repo.display().to_string(),
            |out| redact_url(out.stdout.trim()),
        )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{commit, git_out, new_repo};
    use super::*;

    #[test]
    fn mirror_names_are_stable_readable_and_distinct() {
        let a = dir_name(b"https://github.com/org/app.git");
        assert_eq!(a, dir_name(b"https://github.com/org/app.git"));
        assert!(a.starts_with("app-") && a.ends_with(".git"), "{a}");
        assert_eq!(a.len(), "app-".len() + 16 + ".git".len());
        assert_ne!(a, dir_name(b"https://github.com/other/app.git"));
        assert!(dir_name(b"git@github.com:org/app.git").starts_with("app-"));
        assert!(dir_name(b"/home/me/src/my repo/").starts_with("myrepo-"));
        assert!(dir_name(b"/").starts_with("repo-"));
        assert!(dir_name(b"https://x/..").starts_with("repo-"));
    }

    #[test]
    fn first_use_clones_and_later_uses_fetch_with_prune() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = new_repo(tmp.path(), "origin");
        git_out(&origin, &["branch", "doomed"]);
        let cache = tmp.path().join("cache");
        let source = RepoSource::Path(origin.clone());

        let dir = mirror(&cache, &source).unwrap();
        assert!(dir.starts_with(&cache));
        assert_eq!(
            git_out(&dir, &["rev-parse", "--is-bare-repository"]),
            "true"
        );
        assert!(lock_path(&dir).is_file());
        // A marker inside the mirror survives the next use: it is fetched into, not re-cloned.
        std::fs::write(dir.join("marker"), "kept").unwrap();

        let second = commit(&origin, "two.txt", "2\n", "second");
        git_out(&origin, &["branch", "-D", "doomed"]);
        assert_eq!(mirror(&cache, &source).unwrap(), dir);
        assert!(dir.join("marker").is_file());
        assert_eq!(git_out(&dir, &["rev-parse", "main"]), second);
        let branches = git_out(&dir, &["branch", "--list"]);
        assert!(!branches.contains("doomed"), "{branches}");
    }

    #[test]
    fn concurrent_jobs_share_one_mirror() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = new_repo(tmp.path(), "origin");
        let cache = tmp.path().join("cache");
        let source = RepoSource::Path(origin);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (cache, source) = (cache.clone(), source.clone());
                std::thread::spawn(move || mirror(&cache, &source))
            })
            .collect();
        let dirs: Vec<PathBuf> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 2, "one mirror and its lock: {entries:?}");
    }

    #[test]
    fn a_plain_folder_is_snapshotted_once_per_content() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("a.txt"), "one\n").unwrap();
        let cache = tmp.path().join("cache");
        let source = RepoSource::Path(plain.clone());
        let dir = mirror(&cache, &source).unwrap();
        let first = git_out(&dir, &["rev-parse", "HEAD"]);
        assert_eq!(git_out(&dir, &["show", "HEAD:a.txt"]), "one");
        mirror(&cache, &source).unwrap();
        assert_eq!(
            git_out(&dir, &["rev-parse", "HEAD"]),
            first,
            "unchanged: no new commit"
        );
        std::fs::write(plain.join("a.txt"), "two\n").unwrap();
        mirror(&cache, &source).unwrap();
        assert_ne!(git_out(&dir, &["rev-parse", "HEAD"]), first);
        assert_eq!(git_out(&dir, &["show", "HEAD:a.txt"]), "two");
        assert!(
            !plain.join(".git").exists(),
            "the folder itself is left alone"
        );
    }
}
