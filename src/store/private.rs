//! The state dir is private to the runner's user: it holds transcripts, logs, results and
//! mirrors of private repositories. The directory is created 0700, and commands that use it run
//! with umask 077, so everything the runner (and SQLite, and git on the mirrors) creates in it is
//! 0600 or 0700. A state dir left readable by an older runner is tightened once, with a warning.
//!
//! Files the runner writes for the user outside the state dir (a JUnit report, a cassette, objects
//! pushed into a local repository) keep the user's own umask: see [`user_umask`].

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

/// The process's umask before [`restrict_umask`] replaced it.
static USER_UMASK: OnceLock<u32> = OnceLock::new();

/// Bits no one but the owner may have on anything in the state dir.
const GROUP_OTHER: u32 = 0o077;

/// Makes every file this process creates from now on private (umask 077), remembering the
/// user's umask for files made on the user's behalf outside the state dir.
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    let old = unsafe { libc::umask(GROUP_OTHER as libc::mode_t) } as u32;
    // A second call must not record 077 as the user's.
    let _ = USER_UMASK.set(old);
}

/// The user's umask: the one the process had before [`restrict_umask`], or the current one when
/// it was never restricted.
pub fn user_umask() -> u32 {
    if let Some(mask) = USER_UMASK.get() {
        return *mask;
    }
    // SAFETY: read the mask by setting it and putting it straight back.
    unsafe {
        let current = libc::umask(0o022);
        libc::umask(current);
        current as u32
    }
}

/// Gives a file the runner just created for the user (outside the state dir) the mode the
/// user's umask would have given it, as if the runner had never restricted its own.
pub fn give_user_mode(path: &Path) -> std::io::Result<()> {
    let mode = 0o666 & !user_umask();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Creates the state dir 0700 (its parents as the umask says), or tightens an existing one that
/// others can read: the directory to 0700 and everything in it to owner-only, with one warning
/// naming the path. A dir that is already private is not walked again.
pub fn secure_state_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.mode() & GROUP_OTHER == 0 => Ok(()),
        Ok(meta) => {
            let was = meta.mode() & 0o777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(was & !GROUP_OTHER))?;
            let mut failed = Vec::new();
            tighten_tree(dir, &mut failed);
            let not_done = match failed.first() {
                None => String::new(),
                Some(first) => format!(
                    "; {} could not be changed (first: {first}): fix them by hand",
                    failed.len()
                ),
            };
            tracing::warn!(
                "state dir {} was readable by other users (mode {was:o}): made it 0700 and its \
                 files owner-only{not_done}",
                dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                // Another process made it first: it made it private too.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// Takes group and other bits off everything under `dir`, never following symlinks (a link's
/// own mode means nothing, and its target may lie outside the state dir) and leaving files with
/// several hard links alone. The state dir's own 0700 keeps others from reaching either.
fn tighten_tree(dir: &Path, failed: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            failed.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        // A file with other links is shared with a place outside the state dir (git hard-links
        // a local repository's objects into its mirror): its mode is that place's to decide.
        if meta.file_type().is_symlink() || (meta.is_file() && meta.nlink() > 1) {
            continue;
        }
        let mode = meta.mode() & 0o7777;
        if mode & GROUP_OTHER != 0 {
            let tight = std::fs::Permissions::from_mode(mode & !GROUP_OTHER & 0o777);
            if let Err(e) = std::fs::set_permissions(&path, tight) {
                failed.push(format!("{}: {e}", path.display()));
            }
        }
        if meta.is_dir() {
            tighten_tree(&path, failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_state_dir_is_0700_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        secure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Opening it again changes nothing.
        secure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_open_state_dir_is_tightened_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let outside = tmp.path().join("outside.txt");
        std::fs::create_dir_all(dir.join("logs/job")).unwrap();
        std::fs::write(dir.join("runner.db"), "x").unwrap();
        std::fs::write(dir.join("logs/job/1.log"), "x").unwrap();
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::fs::hard_link(&outside, dir.join("logs/shared")).unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("logs"), 0o755),
            (dir.join("logs/job"), 0o755),
            (dir.join("runner.db"), 0o644),
            (dir.join("logs/job/1.log"), 0o664),
            (outside.clone(), 0o644),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        secure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("logs/job")), 0o700);
        assert_eq!(mode(&dir.join("runner.db")), 0o600);
        assert_eq!(mode(&dir.join("logs/job/1.log")), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "neither a link's target nor a hard link is touched"
        );
    }
}
