//! What a job leaves behind: the `verify` step run inside the sandbox, the export of the work
//! (a patch of everything since the base commit, and a git bundle of the commits), and the
//! GitHub pull request for `output.mode: pr`. Everything that touches the container goes through
//! the [`Sandbox`](crate::sandbox::Sandbox) trait; pushing the branch happens on the host (see
//! [`crate::repo::push_branch`]).

mod export;
mod github;
pub mod patch_paths;
#[cfg(test)]
mod testutil;
mod verify;

pub use export::{export, Exported, MAX_RESULT_BYTES};
pub use github::{github_repo_of, open_pull_request, pr_repo_of};
pub use verify::{verify, VerifyResult};

use crate::sandbox::SandboxError;
use std::path::PathBuf;

/// Errors from verifying, exporting or publishing a result.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The sandbox could not run a command.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// `verify` has no program to run.
    #[error(
        "the verify command is empty: give a program and its arguments, like `[sh, -c, make test]`"
    )]
    EmptyVerify,
    /// The base commit is not a full hex commit id.
    #[error("`{0}` is not a full commit id: pass the base commit the checkout reported")]
    BadBase(String),
    /// A git step inside the container failed.
    #[error("{step} failed in container {container} (exit code {code}): {output}")]
    Container {
        step: String,
        container: String,
        code: i64,
        output: String,
    },
    /// The patch or the bundle is too large to export.
    #[error("the result {what} is larger than {limit} bytes: ask for smaller changes, or export the work tree another way")]
    TooLarge { what: &'static str, limit: usize },
    /// The result names a path outside the repository or inside its `.git`.
    #[error("the result changes `{path}`{}, but {why}: it was not exported and nothing was pushed; a job may change files inside its repository only (not `.git`, not outside it)", line.map(|l| format!(" (patch line {l})")).unwrap_or_default())]
    UnsafePath {
        path: String,
        line: Option<usize>,
        why: &'static str,
    },
    /// An exported file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `repo` is not `owner/name`.
    #[error("`{0}` is not a GitHub repository name like `owner/name`")]
    BadRepo(String),
    /// The GitHub API could not be reached.
    #[error(
        "cannot reach the GitHub API at {url}: {message}: check the network and `output.api_url`"
    )]
    Request { url: String, message: String },
    /// GitHub answered with an error.
    #[error("github refused to open the pull request on {repo} ({status}): {message}: {hint}")]
    GitHub {
        repo: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
}

/// Lowercase hex SHA-256 of the file at `path`, read in pieces (a bundle may be 256 MiB): what
/// identifies an exported result between its export and its delivery.
pub async fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&path)?, &mut hasher)?;
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })
    .await
    .map_err(std::io::Error::other)?
}
