//! The aider image: its build context (the embedded recipe, an optional CA bundle and optional
//! wheels) as an in-memory tar, sent to the engine's classic builder on top of a `BASE` image.

use super::progress::{progress, BuildPrinter};
use super::{check_ca_bundle, BuildOptions, ImageError, AIDER_IMAGE, AIDER_VERSION, BASE_IMAGE};
use crate::sandbox::{DockerSandbox, Sandbox};
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The aider build context, as (path in the context, contents).
const AIDER_RECIPE: &[(&str, &[u8])] = &[
    (
        "Dockerfile",
        include_bytes!("../../../images/aider/Dockerfile"),
    ),
    (
        "setup-base.sh",
        include_bytes!("../../../images/aider/setup-base.sh"),
    ),
    (
        "install-aider.sh",
        include_bytes!("../../../images/aider/install-aider.sh"),
    ),
    (
        "aider-models.json",
        include_bytes!("../../../images/aider/aider-models.json"),
    ),
    (
        "aider-model-settings.yml",
        include_bytes!("../../../images/aider/aider-model-settings.yml"),
    ),
];

/// The engine answers a build request only once it has the whole context; the wait is bounded
/// by this, the build itself is not.
const BUILD_REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

impl DockerSandbox {
    pub(super) async fn build_aider(&self, opts: &BuildOptions) -> Result<String, ImageError> {
        check_ca_bundle(opts)?;
        let wheels = match &opts.wheels {
            Some(dir) => wheel_files(dir)?,
            None => Vec::new(),
        };
        let base = opts.base.as_deref().unwrap_or(BASE_IMAGE);
        let base_present = self.image_exists(base).await?;
        if !base_present {
            if base == BASE_IMAGE {
                return Err(ImageError::BaseMissing(base.into()));
            }
            progress(&format!(
                "{base} is not present: the engine will try to pull it"
            ));
        }
        if !wheels.is_empty() {
            progress(&format!(
                "installing from {} wheels in {} (no package index)",
                wheels.len(),
                opts.wheels.as_deref().unwrap_or(Path::new("")).display()
            ));
        }
        let ca_bundle = opts.ca_bundle.clone();
        let context =
            tokio::task::spawn_blocking(move || aider_context(ca_bundle.as_deref(), &wheels))
                .await
                .map_err(|e| {
                    std::io::Error::other(format!("building the context failed: {e}"))
                })??;

        let previous = self.image_id(AIDER_IMAGE).await?;
        self.run_aider_build(context, base, base_present).await?;

        match self.image_id(AIDER_IMAGE).await? {
            None => Err(ImageError::Build {
                image: AIDER_IMAGE.into(),
                message: "the engine reported no error but the image is missing".into(),
            }),
            Some(id) => {
                if let Some(old) = previous.filter(|old| *old != id) {
                    self.remove_previous(&old).await;
                }
                Ok(AIDER_IMAGE.to_string())
            }
        }
    }

    /// Sends the context to the engine's builder and shows its output as it arrives.
    async fn run_aider_build(
        &self,
        context: Vec<u8>,
        base: &str,
        base_present: bool,
    ) -> Result<(), ImageError> {
        let build_args = HashMap::from([("BASE", base)]);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(AIDER_IMAGE)
            .buildargs(&build_args)
            .rm(true)
            .forcerm(true)
            .build();
        let client = self.client().clone().with_timeout(BUILD_REQUEST_TIMEOUT);
        let body = bollard::body_full(Bytes::from(context));
        let mut output = client.build_image(options, None, Some(body));
        let mut printer = BuildPrinter::default();
        while let Some(item) = output.next().await {
            let failure = match item {
                Ok(info) => printer.show(&info),
                Err(BollardError::DockerStreamError { error }) => Some(error),
                Err(e) => return Err(self.map_err(e).into()),
            };
            if let Some(message) = failure {
                printer.finish();
                // Steps 1 and 2 are `ARG BASE` and `FROM ${BASE}`.
                let at_from = !base_present && printer.steps <= 2;
                return Err(build_failure(base, at_from, message));
            }
        }
        printer.finish();
        Ok(())
    }

    /// The engine's id of an image, or `None` when it is not present.
    async fn image_id(&self, image: &str) -> Result<Option<String>, ImageError> {
        match self.client().inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.map_err(e).into()),
        }
    }

    /// A rebuild leaves the previous image untagged (~900 MB); remove it unless a container
    /// still uses it (then the engine refuses, and `docker image prune` removes it later).
    async fn remove_previous(&self, id: &str) {
        let options = RemoveImageOptionsBuilder::new().build();
        match self.client().remove_image(id, Some(options), None).await {
            Ok(_) => progress(&format!("removed the previous {AIDER_IMAGE} ({id})")),
            Err(e) => progress(&format!(
                "kept the previous {AIDER_IMAGE} ({id}): {}; `docker image prune` removes it once unused",
                self.map_err(e)
            )),
        }
    }
}

/// The files of a wheels directory; it must hold the pinned aider-chat wheel.
fn wheel_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let problem = |problem: &str| ImageError::Wheels {
        dir: dir.to_path_buf(),
        problem: problem.to_string(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| problem(&format!("is not readable ({e})")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| problem(&format!("is not readable ({e})")))?
            .path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let aider_wheel = format!("aider_chat-{AIDER_VERSION}-");
    if files.is_empty() {
        return Err(problem("holds no files"));
    }
    if !files.iter().any(|f| {
        f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&aider_wheel))
    }) {
        return Err(problem(&format!("holds no {aider_wheel}*.whl")));
    }
    Ok(files)
}

/// The aider build context as a tar: the embedded recipe, `ca-bundle.crt` (empty without a
/// bundle) and `wheels/` (empty without wheels).
fn aider_context(ca_bundle: Option<&Path>, wheels: &[PathBuf]) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, contents) in AIDER_RECIPE {
        append_file(&mut tar, name, contents)?;
    }
    let bundle = match ca_bundle {
        Some(path) => std::fs::read(path).map_err(|_| ImageError::CaBundle(path.to_path_buf()))?,
        None => Vec::new(),
    };
    append_file(&mut tar, "ca-bundle.crt", &bundle)?;

    let mut dir = context_header(0, 0o755);
    dir.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut dir, "wheels/", std::io::empty())?;
    for wheel in wheels {
        let name =
            wheel
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ImageError::Wheels {
                    dir: wheel.parent().unwrap_or(Path::new("")).to_path_buf(),
                    problem: format!("holds a file with a non-UTF-8 name ({})", wheel.display()),
                })?;
        let file = std::fs::File::open(wheel)?;
        let mut header = context_header(file.metadata()?.len(), 0o644);
        tar.append_data(&mut header, format!("wheels/{name}"), file)?;
    }
    Ok(tar.into_inner()?)
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    name: &str,
    contents: &[u8],
) -> std::io::Result<()> {
    let mut header = context_header(contents.len() as u64, 0o644);
    tar.append_data(&mut header, name, contents)
}

/// Fixed owner and times, so an unchanged context hits the engine's build cache.
fn context_header(size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Names the likely cause of a failed build: `at_from` when it failed while getting the base.
fn build_failure(base: &str, at_from: bool, message: String) -> ImageError {
    if at_from {
        ImageError::BaseUnavailable {
            base: base.into(),
            message,
        }
    } else {
        ImageError::Build {
            image: AIDER_IMAGE.into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (path, body)
            })
            .collect()
    }

    #[test]
    fn the_image_tag_and_the_recipe_pin_the_same_version() {
        assert_eq!(AIDER_IMAGE, format!("runner/aider:{AIDER_VERSION}"));
        let install = AIDER_RECIPE
            .iter()
            .find(|(name, _)| *name == "install-aider.sh")
            .unwrap();
        let script = std::str::from_utf8(install.1).unwrap();
        assert!(script.contains(&format!("version={AIDER_VERSION}\n")));
    }

    #[test]
    fn model_metadata_names_the_test_and_default_models() {
        let (_, json) = AIDER_RECIPE
            .iter()
            .find(|(name, _)| *name == "aider-models.json")
            .unwrap();
        let models: serde_json::Value = serde_json::from_slice(json).unwrap();
        for model in ["openai/mock", "openai/gpt-4o-mini"] {
            let entry = &models[model];
            assert!(entry["input_cost_per_token"].is_f64(), "{model}");
            assert_eq!(entry["litellm_provider"], "openai", "{model}");
        }
    }

    #[test]
    fn context_without_options_has_an_empty_bundle_and_no_wheels() {
        let tar = aider_context(None, &[]).unwrap();
        let entries = entries(&tar);
        for (name, contents) in AIDER_RECIPE {
            assert_eq!(entries[*name], contents.to_vec(), "{name}");
        }
        assert!(entries["ca-bundle.crt"].is_empty());
        assert!(entries.contains_key("wheels/"));
        assert_eq!(entries.len(), AIDER_RECIPE.len() + 2);
    }

    #[test]
    fn context_carries_the_bundle_and_the_wheels() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let wheels = dir.path().join("wheels");
        std::fs::create_dir(&wheels).unwrap();
        let long_name = format!(
            "aider_chat-{AIDER_VERSION}-py3-none-any{}.whl",
            "x".repeat(100)
        );
        std::fs::write(wheels.join(&long_name), "wheel").unwrap();
        std::fs::write(wheels.join("six-1.17.0-py2.py3-none-any.whl"), "six").unwrap();
        std::fs::create_dir(wheels.join("ignored-subdir")).unwrap();

        let files = wheel_files(&wheels).unwrap();
        assert_eq!(files.len(), 2);
        let entries = entries(&aider_context(Some(&bundle), &files).unwrap());
        assert_eq!(entries["ca-bundle.crt"], b"-----BEGIN CERTIFICATE-----\n");
        assert_eq!(entries[&format!("wheels/{long_name}")], b"wheel");
        assert_eq!(entries["wheels/six-1.17.0-py2.py3-none-any.whl"], b"six");
    }

    #[test]
    fn wheels_must_include_the_pinned_aider() {
        let dir = tempfile::tempdir().unwrap();
        let err = wheel_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no files"), "{err}");
        assert!(err.contains("pip download aider-chat==0.86.2"), "{err}");

        std::fs::write(dir.path().join("aider_chat-0.86.1-py3-none-any.whl"), "").unwrap();
        let err = wheel_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds no aider_chat-0.86.2-*.whl"), "{err}");

        let err = wheel_files(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not readable"), "{err}");
    }

    #[test]
    fn a_missing_override_base_is_named() {
        let err = build_failure(
            "example/py:3.12",
            true,
            "pull access denied for example/py, repository does not exist".into(),
        );
        assert!(matches!(err, ImageError::BaseUnavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("example/py:3.12 is not present"),
            "{err}"
        );
        let err = build_failure("example/py:3.12", false, "pip failed".into());
        assert!(matches!(err, ImageError::Build { .. }), "{err}");
    }
}
