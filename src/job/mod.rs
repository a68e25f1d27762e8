//! Job files: the YAML model (serde, `deny_unknown_fields`), validation into a typed [`JobSpec`],
//! and errors located as `path:line:col: message`. YAML is parsed only in this module.
//!
//! Hostile input is refused before any expensive work: files over [`MAX_JOB_FILE_BYTES`], alias
//! bombs, deep nesting and absurd limits each give one clear, located error.

mod argv;
mod hostile;
mod load;
mod locate;
mod numbers;
mod output;
mod paths;
mod raw;
mod schema;
mod settings;
pub mod spec;
#[cfg(test)]
mod testutil;
mod text;
pub mod units;
mod validate;
mod vars;
mod yaml_error;

pub use load::{
    job_files_in, load_file, load_paths, parse_str, parse_untrusted, UNTRUSTED_JOB_NAME,
};
pub use schema::job_schema;
pub use spec::*;

use std::fmt;
use std::path::PathBuf;

/// Largest job file accepted, in bytes.
pub const MAX_JOB_FILE_BYTES: u64 = 1 << 20;

/// A job file read and validated.
#[derive(Clone, Debug)]
pub struct LoadedJob {
    /// The file as given (joined with the directory when found by a directory walk).
    pub path: PathBuf,
    /// The validated job.
    pub spec: JobSpec,
    /// Hex SHA-256 of the file's bytes (the daemon submits each content once).
    pub content_hash: String,
}

/// One problem in one job file, located where a location exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// The job file (or the path given on the command line, when it could not be read).
    pub path: PathBuf,
    /// 1-based line and column of the offending text.
    pub location: Option<(usize, usize)>,
    /// What is wrong and how to fix it; lowercase, without the location.
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.path.display(), self.message)
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}
