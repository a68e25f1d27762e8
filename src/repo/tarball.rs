//! The tar stream that carries a work tree (with its `.git`) into the sandbox: entries owned by
//! the sandbox user (uid/gid 1000), paths relative to the work tree, symlinks stored as symlinks
//! (never followed, so nothing outside the tree is read), and a size cap checked before each
//! entry is written.

use super::RepoError;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Largest tar stream [`tar_tree`] produces: 1 GiB.
pub const DEFAULT_TAR_LIMIT: u64 = 1 << 30;

/// Owner of every entry: the sandbox's `runner` user.
const OWNER_ID: u64 = 1000;
const OWNER_NAME: &str = "runner";

/// A tar of the work tree at `dir`, at most [`DEFAULT_TAR_LIMIT`] bytes.
pub fn tar_tree(dir: &Path) -> Result<Vec<u8>, RepoError> {
    let mut out = Vec::new();
    write_tar(dir, &mut out, DEFAULT_TAR_LIMIT)?;
    Ok(out)
}

/// Streams a tar of the work tree at `dir` into `out`, failing with [`RepoError::TooLarge`]
/// before the stream would exceed `limit` bytes. Returns the bytes written. Sockets, FIFOs and
/// devices are skipped (git never tracks them).
pub fn write_tar<W: Write>(dir: &Path, out: W, limit: u64) -> Result<u64, RepoError> {
    let mut builder = tar::Builder::new(Counting {
        inner: out,
        count: 0,
    });
    builder.follow_symlinks(false);
    // Depth-first in name order: each directory's entry comes before what it holds.
    let mut stack = vec![children_of(dir, Path::new(""))?.into_iter()];
    while let Some(level) = stack.last_mut() {
        let Some(child) = level.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(&child);
        let meta = std::fs::symlink_metadata(&path).map_err(RepoError::io(&path))?;
        let size = if meta.is_file() { meta.len() } else { 0 };
        // Header, a possible long-name extension, content padded to blocks, end of archive.
        let cost = 3 * 512 + size.div_ceil(512) * 512 + 1024;
        if builder.get_ref().count + cost > limit {
            return Err(RepoError::TooLarge {
                dir: dir.to_path_buf(),
                limit,
            });
        }
        append(&mut builder, &path, &child, &meta)?;
        if meta.is_dir() {
            stack.push(children_of(dir, &child)?.into_iter());
        }
    }
    let counting = builder.into_inner().map_err(RepoError::io(dir))?;
    Ok(counting.count)
}

/// The entries of `dir/rel`, as paths relative to `dir`, sorted.
fn children_of(dir: &Path, rel: &Path) -> Result<Vec<PathBuf>, RepoError> {
    let here = dir.join(rel);
    let mut children: Vec<PathBuf> = std::fs::read_dir(&here)
        .map_err(RepoError::io(&here))?
        .map(|entry| entry.map(|e| rel.join(e.file_name())))
        .collect::<Result<_, _>>()
        .map_err(RepoError::io(&here))?;
    children.sort();
    Ok(children)
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
    meta: &Metadata,
) -> Result<(), RepoError> {
    let io = RepoError::io(path);
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_uid(OWNER_ID);
    header.set_gid(OWNER_ID);
    header
        .set_username(OWNER_NAME)
        .map_err(RepoError::io(path))?;
    header
        .set_groupname(OWNER_NAME)
        .map_err(RepoError::io(path))?;
    header.set_mtime(meta.mtime().max(0) as u64);
    // Modes as git knows them (executable or not), whatever the umask the checkout was made
    // under: the work tree lives in the private state dir, where everything is owner-only.
    let executable = meta.mode() & 0o111 != 0;
    let appended = if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        // The sandbox user must be able to create files in every directory it receives.
        header.set_mode(0o755);
        header.set_size(0);
        builder.append_data(&mut header, rel, std::io::empty())
    } else if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(RepoError::io(path))?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, rel, target)
    } else if kind.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_size(meta.len());
        let file = std::fs::File::open(path).map_err(RepoError::io(path))?;
        // Exactly the size in the header, even if the file changed since: a short read is
        // padded with zeros instead of corrupting every entry after it.
        let exact = file
            .take(meta.len())
            .chain(std::io::repeat(0))
            .take(meta.len());
        builder.append_data(&mut header, rel, exact)
    } else {
        let what = if kind.is_fifo() {
            "fifo"
        } else if kind.is_socket() {
            "socket"
        } else {
            "device"
        };
        tracing::warn!(path = %path.display(), "skipping a {what} in the work tree");
        return Ok(());
    };
    appended.map_err(io)
}

/// Counts the bytes written through it, for the size cap.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u64, u64, u32, String)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                let mut content = String::new();
                if h.entry_type() == tar::EntryType::Regular {
                    e.read_to_string(&mut content).unwrap();
                }
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                    if link.is_empty() { content } else { link },
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_relative_owned_by_the_sandbox_user_and_ordered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join(".git/refs/tags")).unwrap();
        std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/runner/work\n").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let deep = format!("{}/file.txt", "d".repeat(120));
        std::fs::create_dir(dir.join("d".repeat(120))).unwrap();
        std::fs::write(dir.join(&deep), "deep").unwrap();
        // A checkout made in the private state dir (umask 077).
        std::fs::set_permissions(dir.join(&deep), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.join(".git"), std::fs::Permissions::from_mode(0o700)).unwrap();

        let bytes = tar_tree(dir).unwrap();
        let got = entries(&bytes);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".git",
                ".git/HEAD",
                ".git/refs",
                ".git/refs/tags",
                &"d".repeat(120),
                &deep,
                "run.sh"
            ]
        );
        assert!(got.iter().all(|e| e.2 == 1000 && e.3 == 1000), "{got:?}");
        let run = got.iter().find(|e| e.0 == "run.sh").unwrap();
        assert_eq!((run.4 & 0o777, run.5.as_str()), (0o755, "#!/bin/sh\n"));
        let deep_entry = got.iter().find(|e| e.0 == deep).unwrap();
        assert_eq!((deep_entry.4, deep_entry.5.as_str()), (0o644, "deep"));
        assert_eq!(
            got[0].4, 0o755,
            "modes are git's, not the private checkout's"
        );
        assert_eq!(got[0].1, tar::EntryType::Directory);
    }

    #[test]
    fn symlinks_are_stored_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host secret").unwrap();
        let dir = tmp.path().join("tree");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
        std::os::unix::fs::symlink("../outside/secret", dir.join("rel")).unwrap();

        let bytes = tar_tree(&dir).unwrap();
        let got = entries(&bytes);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "escape");
        assert_eq!(got[0].1, tar::EntryType::Symlink);
        assert_eq!(got[0].5, outside.display().to_string());
        assert_eq!(
            (got[1].1, got[1].5.as_str()),
            (tar::EntryType::Symlink, "../outside/secret")
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("host secret"));
    }

    #[test]
    fn the_size_cap_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("big"), vec![b'x'; 64 * 1024]).unwrap();
        let err = write_tar(tmp.path(), Vec::new(), 32 * 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the work tree {} is larger than the upload limit of 32768 bytes: use a smaller \
                 repository (or ref), or raise the limit",
                tmp.path().display()
            )
        );
        let written = write_tar(tmp.path(), Vec::new(), 128 * 1024).unwrap();
        assert!(written > 64 * 1024 && written <= 128 * 1024, "{written}");
    }

    #[test]
    fn a_missing_directory_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let err = tar_tree(&tmp.path().join("gone")).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }
}
