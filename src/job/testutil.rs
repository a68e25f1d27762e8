//! Helpers shared by this module's unit tests: parse a job written inline, and pick apart errors.

use super::{parse_str, JobError, JobSpec};
use std::path::{Path, PathBuf};

/// A minimal valid agent job, to which tests append the fields they are about.
pub(crate) const AGENT: &str = "name: demo\ntask: say hello\n";
/// A minimal valid plain job.
pub(crate) const COMMAND: &str = "name: demo\ncommand: [make, test]\nimage: runner/base:bookworm\n";

/// Parses `text` as if it were the file `job.yaml` in `dir`.
pub(crate) fn parse_in(dir: &Path, text: &str) -> Result<JobSpec, Vec<JobError>> {
    parse_str(text, &dir.join("job.yaml"))
}

/// Parses `text` as the file `/nonexistent-runner-test/job.yaml`.
pub(crate) fn parse(text: &str) -> Result<JobSpec, Vec<JobError>> {
    parse_str(text, &PathBuf::from("/nonexistent-runner-test/job.yaml"))
}

/// Parses `text`, expecting exactly one error; returns its location and message.
#[track_caller]
pub(crate) fn one_error(text: &str) -> (Option<(usize, usize)>, String) {
    match parse(text) {
        Ok(spec) => panic!("expected an error, got {spec:?}"),
        Err(errors) => {
            assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
            (errors[0].location, errors[0].message.clone())
        }
    }
}

/// Parses `text`, expecting success.
#[track_caller]
pub(crate) fn ok(text: &str) -> JobSpec {
    parse(text).unwrap_or_else(|errors| {
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("expected a valid job, got:\n{}", shown.join("\n"))
    })
}

/// Asserts that the agent job plus `extra` (which starts on line 3) fails with one error at `at`
/// whose message starts with `starts` (and, like every message, starts in lowercase).
#[track_caller]
pub(crate) fn assert_agent_error(extra: &str, at: (usize, usize), starts: &str) {
    let (location, message) = one_error(&format!("{AGENT}{extra}"));
    assert_eq!(location, Some(at), "{extra}: {message}");
    assert!(message.starts_with(starts), "{extra}: {message}");
    assert!(!message.starts_with(char::is_uppercase), "{message}");
}

/// Runs `f`, asserting it finishes well under a second: hostile input must be refused fast.
#[track_caller]
pub(crate) fn quickly<T>(f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let result = f();
    let elapsed = start.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "took {elapsed:?}"
    );
    result
}

/// Parses `text` quickly, expecting exactly one error.
#[track_caller]
pub(crate) fn refused(text: &str) -> JobError {
    let errors = quickly(|| parse(text)).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

/// Writes a file into `dir` and returns its path.
pub(crate) fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
