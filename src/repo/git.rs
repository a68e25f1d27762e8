//! Running the host's `git`: hardened (no hooks, no fsmonitor, no LFS downloads), never
//! interactive (no terminal to prompt on, `GIT_TERMINAL_PROMPT=0`), and bounded in time, so a
//! hung fetch cannot hold a job slot forever.

use super::RepoError;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Time allowed for a git command that only touches local repositories.
pub(crate) const LOCAL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Time allowed for a git command that talks to a remote (clone, fetch, push, ls-remote).
pub(crate) const NETWORK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Options put before every subcommand: repository content must not make the host run programs.
const HARDENING: [&str; 6] = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "protocol.ext.allow=never",
];

/// Variables that would point git at another repository than the one we name.
const REPO_ENV: [&str; 7] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
];

/// One git invocation being built.
pub(crate) struct Git {
    /// Repository to run in (`git -C`), if any.
    dir: Option<PathBuf>,
    args: Vec<OsString>,
    timeout: Duration,
    /// Text to replace in git's messages (a URL with credentials, and how to show it).
    redact: Option<(String, String)>,
    /// Run with the user's umask instead of the state dir's 077 (git writes in the user's repo).
    user_umask: bool,
}

/// What a finished git command printed.
#[derive(Debug)]
pub(crate) struct GitOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A git command run in `dir` (or in no repository).
pub(crate) fn git(dir: Option<&Path>) -> Git {
    Git {
        dir: dir.map(Path::to_path_buf),
        args: Vec::new(),
        timeout: LOCAL_TIMEOUT,
        redact: None,
        user_umask: false,
    }
}

impl Git {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Allows [`NETWORK_TIMEOUT`] instead of [`LOCAL_TIMEOUT`].
    pub fn network(mut self) -> Self {
        self.timeout = NETWORK_TIMEOUT;
        self
    }

    /// Replaces `url` in git's messages by its [`redact_url`] form.
    pub fn hiding(mut self, url: &str) -> Self {
        let shown = redact_url(url);
        if shown != url {
            self.redact = Some((url.to_string(), shown));
        }
        self
    }

    /// Runs git with the user's umask: for commands that create files in the user's own
    /// repository (a push to a local origin), which must not come out private to the runner.
    pub fn with_user_umask(mut self) -> Self {
        self.user_umask = true;
        self
    }

    /// Runs the command and returns its output whatever its exit status.
    pub fn output(self, what: &str) -> Result<GitOutput, RepoError> {
        let mut cmd = Command::new("git");
        if let Some(dir) = &self.dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(HARDENING)
            .args(&self.args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in REPO_ENV {
            cmd.env_remove(var);
        }
        let umask = self
            .user_umask
            .then(|| crate::store::private::user_umask() as libc::mode_t);
        // SAFETY: setsid and umask are async-signal-safe. A new session has no controlling
        // terminal, so neither git nor ssh nor a credential helper can prompt on ours; it also
        // makes git the leader of a process group that a timeout can kill whole.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if let Some(mask) = umask {
                    libc::umask(mask);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(RepoError::GitMissing)?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(RepoError::GitMissing)? {
                break status;
            }
            if started.elapsed() > self.timeout {
                // SAFETY: kill on the process group this child leads (see setsid above).
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                return Err(RepoError::Timeout {
                    what: what.to_string(),
                    limit: self.timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        let text = |bytes: Vec<u8>| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match &self.redact {
                Some((secret, shown)) => text.replace(secret, shown),
                None => text,
            }
        };
        Ok(GitOutput {
            success: status.success(),
            stdout: text(stdout.join().unwrap_or_default()),
            stderr: text(stderr.join().unwrap_or_default()),
        })
    }

    /// Runs the command; a failure becomes [`RepoError::Git`] with git's message and `hint`.
    pub fn run(self, what: &str, hint: &str) -> Result<String, RepoError> {
        let out = self.output(what)?;
        if out.success {
            return Ok(out.stdout);
        }
        Err(RepoError::Git {
            what: what.to_string(),
            message: last_lines(&out.stderr),
            hint: hint.to_string(),
        })
    }
}

/// Reads a child's pipe to the end on its own thread, so neither pipe can fill up and stall it.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// The end of git's stderr on one line: the last few lines hold the reason.
pub(crate) fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "git printed no reason".to_string()
    } else {
        tail.join("; ")
    }
}

/// `url` with any `user:password@` part replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_url("https://user:tok@example.com/org/app.git"),
            "https://***@example.com/org/app.git"
        );
        assert_eq!(
            redact_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(
            redact_url("git@github.com:org/app.git"),
            "git@github.com:org/app.git"
        );
    }

    #[test]
    fn last_lines_keep_the_reason() {
        assert_eq!(last_lines(""), "git printed no reason");
        assert_eq!(last_lines("a\n\nb\nc\nfatal: d\n"), "b; c; fatal: d");
    }

    #[test]
    fn a_slow_command_is_stopped_at_its_timeout() {
        let mut cmd = git(None).args(["-c", "alias.slow=!sleep 5", "slow"]);
        cmd.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let err = cmd.output("the slow alias").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(
            err.to_string()
                .starts_with("git the slow alias took longer"),
            "{err}"
        );
    }
}
