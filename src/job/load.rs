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
    let raw: RawJob = serde_yaml::from_str(text).map_err(|err| {
        // serde_yaml reads the whole document before deserializing, so a syntax error anywhere
        // fails this pass too. A second pass that ignores the data tells whether the text is
        // not YAML at all, so that case can be worded as such. It costs time only on failure.
        let syntax = serde_yaml::from_str::<serde::de::IgnoredAny>(text).is_err();
        vec![job_error(&err, text, path, syntax)]
    })?;
    validate(raw, text, path)
}

/// The name a job submitted over HTTP has in its errors (`job.yaml:3:5: ...`).
pub const UNTRUSTED_JOB_NAME: &str = "job.yaml";

/// Parses and validates a job that came without a file (over HTTP): untrusted input. Without
/// `jobs_from` it may name no local path (`repo` as a path, `llm.record`, `llm.replay`), and
/// nothing on the host is looked at; with it, such paths are resolved against that folder and
/// must stay inside it, as for a job file there. A `file://` repository is refused either way
/// (it reaches any folder of the host).
pub fn parse_untrusted(text: &str, jobs_from: Option<&Path>) -> Result<JobSpec, Vec<JobError>> {
    let name = Path::new(UNTRUSTED_JOB_NAME);
    check_size(text.len() as u64).map_err(|m| error(name, None, m))?;
    check_text_bytes(text.as_bytes()).map_err(|(at, m)| error(name, Some(at), m))?;
    if too_deep(text).is_none() {
        if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text) {
            let errors = local_paths(&value, text, name, jobs_from.is_some());
            if !errors.is_empty() {
                return Err(errors);
            }
        }
    }
    match jobs_from {
        Some(dir) => parse_str(text, &dir.join(UNTRUSTED_JOB_NAME)),
        None => parse_str(text, name),
    }
}

/// The local paths an untrusted job may not name (see [`parse_untrusted`]).
fn local_paths(
    value: &serde_yaml::Value,
    text: &str,
    name: &Path,
    folder_named: bool,
) -> Vec<JobError> {
    use super::locate::locate_or_parent;
    let mut errors = Vec::new();
    if let Some(repo) = value.get("repo").and_then(|v| v.as_str()) {
        if repo.starts_with("file://") {
            errors.extend(error(
                name,
                locate_or_parent(text, &["repo"]),
                "a job submitted over HTTP may not name a `file://` repository: name a remote \
                 URL (https://, ssh://), or submit the job file with `runner submit`",
            ));
        } else if !folder_named && !super::paths::is_repo_url(repo) {
            errors.extend(error(
                name,
                locate_or_parent(text, &["repo"]),
                "a job submitted over HTTP may not name a local repository path: name a remote \
                 URL, or have the operator start the server with `--jobs-from DIR` so paths \
                 inside DIR are allowed",
            ));
        }
    }
    if !folder_named {
        for key in ["record", "replay"] {
            if value.get("llm").and_then(|l| l.get(key)).is_some() {
                errors.extend(error(
                    name,
                    locate_or_parent(text, &["llm", key]),
                    format!(
                        "a job submitted over HTTP may not name a cassette (`llm.{key}`): have \
                         the operator start the server with `--jobs-from DIR` so paths inside \
                         DIR are allowed, or submit the job file with `runner submit`"
                    ),
                ));
            }
        }
    }
    errors
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{refused, write, AGENT};
    use super::*;

    #[test]
    fn a_loaded_file_carries_its_path_and_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "demo.yaml", AGENT);
        let job = load_file(&path).unwrap();
        assert_eq!(job.path, path);
        assert_eq!(job.spec.name, "demo");
        assert_eq!(job.content_hash, sha256_hex(AGENT.as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn errors_carry_the_file_path_and_location() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "bad.yaml", format!("{AGENT}privileged: true\n"));
        let errors = load_file(&path).unwrap_err();
        let shown = errors[0].to_string();
        assert_eq!(
            shown,
            format!(
                "{}:3:1: unknown field `privileged`, expected one of `name`, `task`, `command`, \
                 `repo`, `ref`, `image`, `env`, `secrets`, `resources`, `timeout`, `network`, `runtime`, \
                 `group`, `retries`, `candidates`, `select`, `agent`, `manager`, `llm`, `budget`, `verify`, `output`",
                path.display()
            )
        );
    }

    #[test]
    fn unknown_fields_that_would_loosen_the_sandbox_are_refused() {
        let err = refused(&format!(
            "{AGENT}resources:\n  cpus: 1\n  volumes: ['/:/host']\n"
        ));
        assert_eq!(err.location, Some((5, 3)));
        assert!(
            err.message
                .starts_with("resources: unknown field `volumes`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn one_job_per_file() {
        let err = refused(&format!("---\n{AGENT}---\n{AGENT}"));
        assert_eq!(err.location, Some((4, 1)));
        assert_eq!(
            err.message,
            "found a second YAML document (`---`): put one job per file"
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        for text in ["", "\n\n", "# just a comment\n", "---\n"] {
            let err = refused(text);
            assert_eq!(err.location, None);
            assert!(
                err.message
                    .starts_with("file is empty: a job needs at least `name:`"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_is_refused() {
        for text in ["- name: x\n", "just words\n", "42\n"] {
            let err = refused(text);
            assert_eq!(err.location, Some((1, 1)));
            assert!(
                err.message.contains("expected a job: a mapping of fields"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn yaml_syntax_errors_are_located() {
        let err = refused("name: x\ntask: 'unterminated\n");
        assert!(err.message.starts_with("invalid YAML: "), "{}", err.message);
        assert!(err.location.is_some());
        let err = refused("name: x\n\ttask: t\n");
        assert_eq!(err.location, Some((2, 1)));
    }

    #[test]
    fn a_directory_is_not_a_job_file() {
        let dir = tempfile::tempdir().unwrap();
        let errors = load_file(dir.path()).unwrap_err();
        assert!(
            errors[0].message.starts_with("is a directory"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn directories_list_their_yaml_files_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.yml", ".hidden.yaml", "notes.txt", "c.yaml.bak"] {
            write(dir.path(), name, AGENT);
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        write(&dir.path().join("sub.yaml"), "nested.yaml", AGENT);
        let files = job_files_in(dir.path()).unwrap();
        assert_eq!(files, [dir.path().join("a.yml"), dir.path().join("b.yaml")]);
    }

    #[test]
    fn load_paths_mixes_files_and_directories_and_collects_errors() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        write(&jobs, "1-good.yaml", AGENT);
        write(&jobs, "2-bad.yaml", "name: x\n");
        let single = write(dir.path(), "single.job", AGENT);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let missing = dir.path().join("missing.yaml");

        let (loaded, errors) =
            load_paths(&[jobs.clone(), single.clone(), empty.clone(), missing.clone()]);
        let paths: Vec<_> = loaded.iter().map(|j| j.path.clone()).collect();
        assert_eq!(paths, [jobs.join("1-good.yaml"), single]);
        let shown: Vec<_> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with(&format!("{}: neither", jobs.join("2-bad.yaml").display())));
        assert!(shown[1].starts_with(&format!("{}: directory has no job files", empty.display())));
        assert_eq!(
            shown[2],
            format!("{}: no such file or directory", missing.display())
        );
    }
}
