//! The job's repository on the host: a bare mirror per source in a cache (cloned once, then
//! fetched), a self-contained work tree checked out from it at the job's ref, the tar stream that
//! carries that work tree into the sandbox, and pushing a result branch back with the host's
//! credentials.
//!
//! Everything here runs the host's `git` synchronously; async callers wrap the calls in
//! `spawn_blocking`. Concurrent jobs on one repository share its mirror: an update takes the
//! mirror's lock exclusively, a checkout or a push takes it shared.

mod checkout;
mod git;
mod local;
mod mirror;
mod push;
#[cfg(test)]
mod safety_tests;
mod tarball;
#[cfg(test)]
pub(crate) mod testutil;

pub use checkout::{checkout, Checkout, WORK_BRANCH};
pub use git::redact_url;
pub(crate) use local::gitfile_path;
pub use mirror::{mirror, Mirror};
pub use push::push_branch;
pub use tarball::{tar_tree, write_tar, DEFAULT_TAR_LIMIT};

use std::path::PathBuf;
use std::time::Duration;

/// Errors from preparing a repository or pushing a result. Each message names the repository
/// or path it is about and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The `git` program could not be started.
    #[error("cannot run git on the host: {0}: install git, or put it on PATH")]
    GitMissing(#[source] std::io::Error),
    /// A git command failed; `message` is the end of git's own output.
    #[error("{what} failed: {message}: {hint}")]
    Git {
        what: String,
        message: String,
        hint: String,
    },
    /// A git command ran longer than allowed and was killed.
    #[error("git {what} took longer than {}s and was stopped: check the network and the repository's size", limit.as_secs())]
    Timeout { what: String, limit: Duration },
    /// The job's `ref` names nothing in the repository.
    #[error("ref `{git_ref}` is not a branch, tag or commit of {repo}: fix `ref` in the job file (a commit must be reachable from a branch or tag there)")]
    UnknownRef { git_ref: String, repo: String },
    /// The repository has no commit to start from.
    #[error("{repo} has no commits (its HEAD names no commit): push a first commit, or set `ref` to a branch that has one")]
    NoCommits { repo: String },
    /// The checkout destination is already in use.
    #[error("cannot check out into {0}: it exists and is not empty: remove it, or choose another directory")]
    DestinationInUse(PathBuf),
    /// The work tree is too large to upload into the sandbox.
    #[error("the work tree {dir} is larger than the upload limit of {limit} bytes: use a smaller repository (or ref), or raise the limit")]
    TooLarge { dir: PathBuf, limit: u64 },
    /// A result branch would overwrite a different existing branch.
    #[error("branch `{branch}` already exists in {repo} at {existing}, not at the result {wanted}: choose another `output.branch`, or delete that branch first")]
    BranchExists {
        branch: String,
        repo: String,
        existing: String,
        wanted: String,
    },
    /// The branch name is not one git accepts.
    #[error("`{0}` is not a valid branch name: use one like `runner/fix-greeting`")]
    BadBranch(String),
    /// The result bundle cannot be used.
    #[error("bundle {path} cannot be used: {message}: export the result again")]
    BadBundle { path: PathBuf, message: String },
    /// The result's commits name a path outside the repository or inside its `.git`.
    #[error("the result bundle {} changes `{path}`, but {why}: nothing was pushed; a job may change files inside its repository only", bundle.display())]
    UnsafePath {
        bundle: PathBuf,
        path: String,
        why: &'static str,
    },
    /// A `file://` URL names another host (git would ignore it and use this host's path).
    #[error("`{0}` names a host: a `file://` URL reaches this host only; write `file:///path/to/repo` (or `file://localhost/...`), or use an `ssh://` URL for another host")]
    FileUrlHost(String),
    /// A local path looks like a git repository but cannot be used as one.
    #[error("{} is not a usable git repository: {why}: name a repository's top folder or a bare repository", path.display())]
    NotARepository { path: PathBuf, why: String },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RepoError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RepoError {
        let path = path.into();
        move |source| RepoError::Io { path, source }
    }
}
