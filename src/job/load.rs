//! Entry points: parse a job from text, load one file, or load every job file named on a command
//! line (files and directories). Cheap guards run first so hostile input is refused fast.

use super::hostile::{check_size, check_text_bytes, is_empty, too_deep, MAX_FLOW_NESTING};
use super::raw::RawJob;
use super::spec::JobSpec;
use super::validate::validate;
use super::yaml_error::job_error;
use super::{JobError, LoadedJob, MAX_JOB_FILE_BYTES};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

fn error(
    path: &Path,
    location: Option<(usize, usize)>,
    message: impl Into<String>,
) -> Vec<JobError> {
    vec![JobError {
        path: path.to_path_buf(),
        location,
        message: message.into(),
    }]
}

/// Parses and validates one job from `text`.
///
/// `path` names the file in messages, and relative paths in the job (`repo`, `llm.record`,
/// `llm.replay`) are resolved against its directory.
pub fn parse_str(text: &str, path: &Path) -> Result<JobSpec, Vec<JobError>> {
    check_size(text.len() as u64).map_err(|m| error(path, None, m))?;
    check_text_bytes(text.as_bytes()).map_err(|(at, m)| error(path, Some(at), m))?;
    if is_empty(text) {
        return Err(error(
            path,
            None,
            "file is empty: a job needs at least `name:` and either `task:` or `command:`",
        ));
    }
    if let Some(at) = too_deep(text) {
        return Err(error(
            path,
            Some(at),
            format!(
                "brackets are nested more than {MAX_FLOW_NESTING} levels deep: \
                 a job file needs only a few levels (is this the right file?)"
            ),
        ));
    }
    // A first pass that only checks the syntax, so plain YAML mistakes are reported as such
    // rather than as a puzzling type error about a job field.
    if let Err(err) = serde_yaml::from_str::<serde::de::IgnoredAny>(text) {
        return Err(vec![job_error(&err, text, path, true)]);
    }
    let raw: RawJob =
        serde_yaml::from_str(text).map_err(|err| vec![job_error(&err, text, path, false)])?;
    validate(raw, text, path)
}

/// Reads, hashes and validates the job file at `path`.
///
/// Files over [`MAX_JOB_FILE_BYTES`] are refused before they are read; at most one byte past the
/// limit is ever read, even from a file that grows or lies about its size.
pub fn load_file(path: &Path) -> Result<LoadedJob, Vec<JobError>> {
    let cannot_read =
        |e: std::io::Error| error(path, None, format!("cannot read the job file: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(error(
            path,
            None,
            format!("is {what}: give the path of a job file (`*.yaml`)"),
        ));
    }
    check_size(meta.len()).map_err(|m| error(path, None, m))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JOB_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot_read)?;
    check_size(bytes.len() as u64).map_err(|m| error(path, None, m))?;
    let text = check_text_bytes(&bytes).map_err(|(at, m)| error(path, Some(at), m))?;
    let spec = parse_str(text, path)?;
    Ok(LoadedJob {
        path: path.to_path_buf(),
        spec,
        content_hash: sha256_hex(&bytes),
    })
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The job files in `dir`: its `*.yaml` and `*.yml` files, not recursively, hidden files
/// skipped, sorted by name. Used by `validate`, `submit`, `run` and the daemon's jobs dir.
pub fn job_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if name.starts_with('.') || !is_yaml {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: a link to a job file counts, a directory named `x.yaml` does not.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every job named by `paths` (files, or directories of job files), collecting every
/// error instead of stopping at the first bad file.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<LoadedJob>, Vec<JobError>) {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                errors.extend(error(path, None, "no such file or directory"));
                continue;
            }
            Err(e) => {
                errors.extend(error(path, None, format!("cannot read: {e}")));
                continue;
            }
            Ok(meta) if meta.is_dir() => match job_files_in(path) {
                Ok(files) if files.is_empty() => {
                    errors.extend(error(
                        path,
                        None,
                        "directory has no job files: add `*.yaml` or `*.yml` files, or name the files",
                    ));
                    continue;
                }
                Ok(files) => files,
                Err(e) => {
                    errors.extend(error(path, None, format!("cannot list the directory: {e}")));
                    continue;
                }
            },
            Ok(_) => vec![path.clone()],
        };
        for file in files {
            match load_file(&file) {
                Ok(job) => jobs.push(job),
                Err(errs) => errors.extend(errs),
            }
        }
    }
    (jobs, errors)
}
