//! Local origins (a path, or a `file://` URL) without trusting their `.git`.
//!
//! Git runs the hooks and config commands of the repository it operates in. Over a local
//! transport the server half (`upload-pack` for a clone or fetch, `receive-pack` for a push)
//! runs *in the origin*, with the origin's config and hooks, and the `-c` options the runner
//! passes do not reach it (git drops them for local children). A hostile repository would run
//! its `pre-receive` or `core.alternateRefsCommand` on the host.
//!
//! So git never runs in the origin's git dir. Each operation gets a *shadow*: a git dir the
//! runner makes in its cache with its own `config` (bare, no hooks, no automatic gc) and a copy
//! of the origin's `HEAD`, whose `objects`, `refs`, `packed-refs` and `reftable` are symlinks
//! to the origin's. Git then reads and writes the origin's objects and refs through the shadow
//! and reads nothing else of the origin: no config, no hooks, no `info/attributes`.

use super::RepoError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a repository source is, as the rest of the module needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Anything git reaches over a network transport (`https://`, `ssh://`, `git@host:path`).
    Remote(String),
    /// A git repository on this host.
    Local(LocalRepo),
    /// A local directory that is not a git repository (it is snapshotted).
    Folder(PathBuf),
}

/// A git repository on this host, as found on disk (nothing of it run or parsed by git).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalRepo {
    /// What the job named, canonical: the work tree, or the bare repository.
    pub path: PathBuf,
    /// The git dir: `<path>/.git`, where a gitfile leads, or `path` for a bare repository.
    pub git_dir: PathBuf,
    /// Where objects and refs live: `git_dir`, or what its `commondir` names (a linked work tree).
    pub common_dir: PathBuf,
}

impl Origin {
    /// Classifies `source`: a `file://` URL is local like a path.
    pub fn of(source: &crate::job::RepoSource) -> Result<Origin, RepoError> {
        match source {
            crate::job::RepoSource::Url(url) => match file_url_path(url) {
                Some(path) => Origin::local(&path?),
                None => Ok(Origin::Remote(url.clone())),
            },
            crate::job::RepoSource::Path(path) => Origin::local(path),
        }
    }

    fn local(path: &Path) -> Result<Origin, RepoError> {
        let path = std::fs::canonicalize(path).map_err(RepoError::io(path))?;
        let dot_git = path.join(".git");
        let git_dir = match std::fs::metadata(&dot_git) {
            Ok(meta) if meta.is_dir() => dot_git,
            Ok(_) => gitfile_target(&dot_git)?,
            Err(_) if path.join("HEAD").is_file() && path.join("objects").is_dir() => path.clone(),
            Err(_) => return Ok(Origin::Folder(path)),
        };
        let common_dir = match read_small(&git_dir.join("commondir")) {
            Some(text) => git_dir.join(text.trim()),
            None => git_dir.clone(),
        };
        Ok(Origin::Local(LocalRepo {
            path,
            git_dir,
            common_dir,
        }))
    }
}

/// The path of a `file://` URL (`None` for any other URL). Only an empty host or `localhost`
/// is accepted: git would silently ignore any other host and use the path on this one.
pub(crate) fn file_url_path(url: &str) -> Option<Result<PathBuf, RepoError>> {
    let rest = url.strip_prefix("file://")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) || path.is_empty() {
        return Some(Err(RepoError::FileUrlHost(url.to_string())));
    }
    Some(Ok(PathBuf::from(percent_decode(path))))
}

/// `%XX` escapes decoded, as git does for `file://` URLs.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path a gitfile's text names (`gitdir: <path>` on its first line), as written.
pub(crate) fn gitfile_path(text: &str) -> Option<&str> {
    text.lines()
        .next()
        .and_then(|line| line.strip_prefix("gitdir:"))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Where the gitfile `dot_git` (`gitdir: <path>`) leads, relative to its folder.
fn gitfile_target(dot_git: &Path) -> Result<PathBuf, RepoError> {
    let text = read_small(dot_git).unwrap_or_default();
    let target = gitfile_path(&text).ok_or_else(|| RepoError::NotARepository {
        path: dot_git.to_path_buf(),
        why: "it is a file but not a gitfile (`gitdir: <path>`)".into(),
    })?;
    Ok(dot_git.parent().unwrap_or(Path::new("/")).join(target))
}

/// A small text file's content, or `None` when it is missing, unreadable or not small.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// A git dir made for one operation on a [`LocalRepo`]; removed when dropped. After a crash it
/// is removed by the next shadow made in the same cache.
#[derive(Debug)]
pub(crate) struct Shadow {
    dir: PathBuf,
}

/// The shadow's own config: a bare repository, no hooks, no fsmonitor, nothing done after a
/// push (`gc --auto` would pack the origin's refs into the shadow's own `packed-refs`).
const SHADOW_CONFIG: &str = "[core]\n\
\trepositoryformatversion = 1\n\
\tbare = true\n\
\thooksPath = /dev/null\n\
\tfsmonitor = false\n\
\tlogAllRefUpdates = false\n\
\talternateRefsCommand = :\n\
[receive]\n\
\tautogc = false\n\
[gc]\n\
\tauto = 0\n";

/// The parts of the origin's git dir the shadow links to: data git reads and writes, never
/// anything it runs or that tells it what to run.
const LINKED: [&str; 5] = ["objects", "refs", "packed-refs", "reftable", "shallow"];

/// Prefix of shadow directory names in the cache.
const PREFIX: &str = ".shadow-";

impl Shadow {
    /// Makes a shadow of `repo` inside `cache`.
    pub fn create(cache: &Path, repo: &LocalRepo) -> Result<Shadow, RepoError> {
        std::fs::create_dir_all(cache).map_err(RepoError::io(cache))?;
        sweep(cache);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = cache.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(RepoError::io(&dir))?;
        }
        std::fs::create_dir(&dir).map_err(RepoError::io(&dir))?;
        let shadow = Shadow { dir };
        shadow.fill(repo)?;
        Ok(shadow)
    }

    fn fill(&self, repo: &LocalRepo) -> Result<(), RepoError> {
        let not_repo = |why: &str| RepoError::NotARepository {
            path: repo.path.clone(),
            why: why.to_string(),
        };
        let head = read_small(&repo.git_dir.join("HEAD"))
            .ok_or_else(|| not_repo("it has no readable HEAD"))?;
        let head = head.trim();
        let symref = head
            .strip_prefix("ref: refs/")
            .is_some_and(|r| !r.is_empty() && !r.chars().any(char::is_control));
        let commit = matches!(head.len(), 40 | 64) && head.bytes().all(|b| b.is_ascii_hexdigit());
        if !symref && !commit {
            return Err(not_repo("its HEAD names neither a branch nor a commit"));
        }
        if !repo.common_dir.join("objects").is_dir() {
            return Err(not_repo("it has no objects directory"));
        }
        for name in LINKED {
            let target = repo.common_dir.join(name);
            if std::fs::symlink_metadata(&target).is_ok() {
                let link = self.dir.join(name);
                std::os::unix::fs::symlink(&target, &link).map_err(RepoError::io(&link))?;
            }
        }
        let write = |name: &str, text: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, text).map_err(RepoError::io(&path))
        };
        write("HEAD", &format!("{head}\n"))?;
        write(
            "config",
            &format!("{SHADOW_CONFIG}{}", extensions(&repo.common_dir)),
        )
    }

    /// Refuses to push `branch` into `repo` when a directory the new ref (or its lock file) would
    /// be written in is a symlink: git would follow it and write the ref file wherever it leads.
    pub fn check_ref_dirs(repo: &LocalRepo, branch: &str) -> Result<(), RepoError> {
        // `objects` (the pack lands there), then `refs`, `refs/heads`, ... down to the ref's
        // own folder.
        let mut dirs = vec![repo.common_dir.join("objects")];
        let mut dir = repo.common_dir.join("refs");
        dirs.push(dir.clone());
        dir.push("heads");
        dirs.push(dir.clone());
        let parts: Vec<&str> = branch.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            dir.push(part);
            dirs.push(dir.clone());
        }
        // Loose objects land in `objects/xx/`, packs in `objects/pack/`: none may lead elsewhere.
        if let Ok(entries) = std::fs::read_dir(repo.common_dir.join("objects")) {
            dirs.extend(entries.flatten().map(|e| e.path()));
        }
        for dir in dirs {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(RepoError::NotARepository {
                    path: repo.path.clone(),
                    why: format!(
                        "{} is a symlink, and a push would write through it",
                        dir.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The shadow git dir, to clone, fetch, list or push.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // Only the directory's own entries go: the symlinks, never what they point to.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The origin's object format and ref storage, read from its config file as plain text (git
/// would follow its `include.path`s): the shadow must read the origin's data the same way.
fn extensions(common_dir: &Path) -> String {
    let text = read_config(&common_dir.join("config"));
    let mut section = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        let safe_value = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if section == "extensions"
            && matches!(key.as_str(), "objectformat" | "refstorage")
            && safe_value
        {
            out.push_str(&format!("\t{key} = {value}\n"));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("[extensions]\n{out}")
    }
}

/// A config file's text (at most 1 MiB), or nothing.
fn read_config(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(1 << 20).read_to_string(&mut text);
    }
    text
}

/// Removes shadows whose process is gone (killed before it could remove its own).
fn sweep(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_local_paths_on_this_host_only() {
        let path = |url: &str| file_url_path(url).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(path("https://x/y"), None);
        assert_eq!(
            path("file:///srv/git/app.git"),
            Some(Ok(PathBuf::from("/srv/git/app.git")))
        );
        assert_eq!(
            path("file://localhost/srv/my%20app"),
            Some(Ok(PathBuf::from("/srv/my app")))
        );
        for bad in ["file://evil.example/srv/app", "file://localhost", "file://"] {
            assert!(
                path(bad).unwrap().unwrap_err().contains("names a host"),
                "{bad}"
            );
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn only_the_object_format_and_ref_storage_are_taken_from_the_origin_config() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("config"),
            "[core]\n\thooksPath = /x\n\tfsmonitor = touch /tmp/m\n[extensions]\n\
             \tobjectFormat = sha256\n\trefStorage = reftable\n\tworktreeConfig = true\n\
             [include]\n\tpath = /etc/evil\n",
        )
        .unwrap();
        assert_eq!(
            extensions(tmp.path()),
            "[extensions]\n\tobjectformat = sha256\n\trefstorage = reftable\n"
        );
        assert_eq!(extensions(&tmp.path().join("none")), "");
    }
}
