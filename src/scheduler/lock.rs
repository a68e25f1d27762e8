//! One scheduler per state dir: an exclusive `flock` on `scheduler.lock`, released by the kernel
//! when the process ends (even by SIGKILL), so a crash never leaves a stale lock behind.
//!
//! An `flock` is also held, for an instant, by a child forked while the file is open (until its
//! `exec` closes the descriptor) and by a concurrent [`StateLock::is_held`] probe, so taking the
//! lock retries for a short while before it reports another scheduler.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a busy lock is retried before another scheduler is reported.
const TRANSIENT_HOLD: Duration = Duration::from_millis(500);

/// Held while a scheduler runs.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another scheduler ({holder}) is already running on state dir {dir}: stop it, or use another --state-dir")]
    Busy { dir: PathBuf, holder: String },
    #[error("cannot lock state dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock or fails at once, naming the holder.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        crate::store::private::secure_state_dir(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(state_dir.join("scheduler.lock"))
            .map_err(io)?;
        let deadline = Instant::now() + TRANSIENT_HOLD;
        let locked = loop {
            // SAFETY: flock on a valid, owned file descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 || Instant::now() >= deadline {
                break rc == 0;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Busy {
                dir: state_dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown pid".into()
                } else {
                    format!("pid {holder}")
                },
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file })
    }

    /// True when some process holds the lock (a scheduler is running).
    pub fn is_held(state_dir: &Path) -> bool {
        let Ok(file) = File::open(state_dir.join("scheduler.lock")) else {
            return false;
        };
        // SAFETY: flock on a valid, owned file descriptor; released when `file` drops.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_state_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(StateLock::is_held(dir.path()));
    }

    #[test]
    fn lock_is_free_again_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateLock::acquire(dir.path()).unwrap());
        // Other tests fork processes: a child may hold the descriptor until its exec.
        let deadline = Instant::now() + Duration::from_secs(2);
        while StateLock::is_held(dir.path()) {
            assert!(Instant::now() < deadline, "the lock stayed held after drop");
            std::thread::sleep(Duration::from_millis(10));
        }
        StateLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_probe_holding_the_lock_for_an_instant_does_not_refuse_a_scheduler() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateLock::acquire(dir.path()).unwrap());
        let probe = File::open(dir.path().join("scheduler.lock")).unwrap();
        // SAFETY: flock on a valid, owned file descriptor.
        assert_eq!(
            unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) },
            0
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(probe);
        });
        StateLock::acquire(dir.path()).unwrap();
        release.join().unwrap();
    }
}
