//! The shipped images, built without a registry. Their recipes under `images/` are embedded in the
//! binary, so an installed `runner` builds them anywhere.
//!
//! `base`: `images/base/build.sh` makes a Debian root file system with debootstrap (on the host;
//! it needs root) and writes it as a tar, which is imported into the engine as
//! `runner/base:bookworm`.
//!
//! `aider`: `images/aider/` is a Dockerfile context that installs a pinned `aider-chat` in a venv
//! on top of a `BASE` image (default `runner/base:bookworm`). The runner sends it to the engine's
//! classic builder as an in-memory tar, together with an optional CA bundle (`ca-bundle.crt`,
//! empty when none is given) and optional wheels (`wheels/`, for builds that cannot reach a
//! package index).

use super::{DockerSandbox, Sandbox, SandboxError};
use bollard::errors::Error as BollardError;
use bollard::models::BuildInfo;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// The base image's reference.
pub const BASE_IMAGE: &str = "runner/base:bookworm";
/// The `aider-chat` version the aider image pins (also in `images/aider/install-aider.sh`).
pub const AIDER_VERSION: &str = "0.86.2";
/// The aider image's reference.
pub const AIDER_IMAGE: &str = "runner/aider:0.86.2";
/// Where Debian-like hosts keep their CA bundle; the CLI adds it to aider builds by default.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const BASE_BUILD_SH: &str = include_str!("../../images/base/build.sh");

/// The aider build context, as (path in the context, contents).
const AIDER_RECIPE: &[(&str, &[u8])] = &[
    (
        "Dockerfile",
        include_bytes!("../../images/aider/Dockerfile"),
    ),
    (
        "setup-base.sh",
        include_bytes!("../../images/aider/setup-base.sh"),
    ),
    (
        "install-aider.sh",
        include_bytes!("../../images/aider/install-aider.sh"),
    ),
    (
        "aider-models.json",
        include_bytes!("../../images/aider/aider-models.json"),
    ),
    (
        "aider-model-settings.yml",
        include_bytes!("../../images/aider/aider-model-settings.yml"),
    ),
];

/// Names `runner images build` accepts, in build order (aider builds on base).
pub const IMAGE_NAMES: &[&str] = &["base", "aider"];

/// The engine answers a build request only once it has the whole context; the wait is bounded
/// by this, the build itself is not.
const BUILD_REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Options shared by image builds.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// PEM bundle to add to the image's trust store (TLS-inspecting proxies).
    pub ca_bundle: Option<PathBuf>,
    /// Scratch directory for the root file system tar.
    pub work_dir: PathBuf,
    /// The aider image's `BASE` build argument (default [`BASE_IMAGE`]); any Debian-based image
    /// with Python 3.10–3.12, pulled by the engine if it is not present.
    pub base: Option<String>,
    /// Wheels from `pip download aider-chat==0.86.2 -d DIR` (made with the base image's Python):
    /// the aider build installs from them without contacting a package index.
    pub wheels: Option<PathBuf>,
}

/// Errors from image builds.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown image {0:?} (known: {known})", known = IMAGE_NAMES.join(", "))]
    Unknown(String),
    #[error("the CA bundle {0} is not readable: pass an existing PEM file to --ca-bundle (or RUNNER_CA_BUNDLE)")]
    CaBundle(PathBuf),
    #[error("building the {image} root file system failed ({status}); its output is above")]
    Script { image: String, status: String },
    #[error("cannot run the build script: {0} (is bash installed?)")]
    Spawn(#[source] std::io::Error),
    /// The default base of the aider image is not present; it is never pulled.
    #[error("the base image {0} is missing: build it first with `runner images build base`")]
    BaseMissing(String),
    /// A `--base` override is neither present nor pullable.
    #[error("the base image {base} is not present and could not be pulled ({message}): `docker load` it, or build on {BASE_IMAGE}")]
    BaseUnavailable { base: String, message: String },
    #[error("the wheels directory {dir} {problem}: fill it with `pip download aider-chat=={AIDER_VERSION} -d {dir}` with the base image's Python (3.11 for {BASE_IMAGE})", dir = .dir.display())]
    Wheels { dir: PathBuf, problem: String },
    #[error("building {image} failed: {message} (the build output is above)")]
    Build { image: String, message: String },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl DockerSandbox {
    /// Builds one shipped image by name.
    pub async fn build_image(&self, name: &str, opts: &BuildOptions) -> Result<String, ImageError> {
        match name {
            "base" => self.build_base(opts).await,
            "aider" => self.build_aider(opts).await,
            other => Err(ImageError::Unknown(other.to_string())),
        }
    }

    /// The image reference a shipped image name builds.
    pub fn image_ref(name: &str) -> Option<&'static str> {
        match name {
            "base" => Some(BASE_IMAGE),
            "aider" => Some(AIDER_IMAGE),
            _ => None,
        }
    }

    async fn build_base(&self, opts: &BuildOptions) -> Result<String, ImageError> {
        check_ca_bundle(opts)?;
        std::fs::create_dir_all(&opts.work_dir)?;
        let script = opts.work_dir.join("build-base.sh");
        std::fs::write(&script, BASE_BUILD_SH)?;
        let rootfs = opts.work_dir.join("base-rootfs.tar");
        let result = self.run_base_script(&script, &rootfs, opts).await;
        let _ = std::fs::remove_file(&script);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&rootfs);
            return Err(e);
        }
        let imported = self.import_rootfs(&rootfs).await;
        let _ = std::fs::remove_file(&rootfs);
        imported?;
        Ok(BASE_IMAGE.to_string())
    }

    async fn run_base_script(
        &self,
        script: &Path,
        rootfs: &Path,
        opts: &BuildOptions,
    ) -> Result<(), ImageError> {
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(rootfs);
        if let Some(ca) = &opts.ca_bundle {
            cmd.env("RUNNER_CA_BUNDLE", ca);
        }
        // The script's progress goes to our stderr: the user sees debootstrap working.
        cmd.stdout(std::process::Stdio::null());
        let status = cmd.status().await.map_err(ImageError::Spawn)?;
        if !status.success() {
            return Err(ImageError::Script {
                image: BASE_IMAGE.into(),
                status: status.to_string(),
            });
        }
        Ok(())
    }

    async fn import_rootfs(&self, rootfs: &Path) -> Result<(), ImageError> {
        let (repo, tag) = BASE_IMAGE.split_once(':').expect("image ref has a tag");
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![
                "WORKDIR /workspace".into(),
                "ENV LANG=C.UTF-8".into(),
                r#"CMD ["/bin/sh"]"#.into(),
            ])
            .build();
        let file = tokio::fs::File::open(rootfs).await?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let mut progress = self.client().create_image(Some(options), Some(body), None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| self.map_err(e))?;
        }
        Ok(())
    }

    async fn build_aider(&self, opts: &BuildOptions) -> Result<String, ImageError> {
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

fn check_ca_bundle(opts: &BuildOptions) -> Result<(), ImageError> {
    if let Some(ca) = &opts.ca_bundle {
        if std::fs::metadata(ca).map(|m| !m.is_file()).unwrap_or(true) {
            return Err(ImageError::CaBundle(ca.clone()));
        }
    }
    Ok(())
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

fn progress(line: &str) {
    eprintln!("runner: {line}");
}

/// Turns the engine's build output into readable lines on stderr: each step, then the output of
/// its command, indented; layer ids and intermediate-container chatter are dropped.
#[derive(Default)]
struct BuildPrinter {
    /// Output text after the last newline (the engine splits lines across messages).
    partial: String,
    /// The last status line (pull progress repeats them).
    last_status: Option<String>,
    /// How many steps have started.
    steps: u32,
}

impl BuildPrinter {
    /// Prints what `info` carries; returns the error message when the build failed.
    fn show(&mut self, info: &BuildInfo) -> Option<String> {
        if let Some(text) = &info.stream {
            self.partial.push_str(text);
            while let Some(end) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=end).collect();
                if line.starts_with("Step ") {
                    self.steps += 1;
                }
                self.print(&line);
            }
        }
        if let Some(status) = &info.status {
            let line = match &info.id {
                Some(id) => format!("{id}: {status}"),
                None => status.clone(),
            };
            if info.progress.is_none() && self.last_status.as_ref() != Some(&line) {
                self.print(&line);
                self.last_status = Some(line);
            }
        }
        let detail = info.error_detail.as_ref().and_then(|d| d.message.clone());
        detail.or_else(|| info.error.clone())
    }

    /// Prints a line left without a newline.
    fn finish(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        self.print(&rest);
    }

    fn print(&self, raw: &str) {
        if let Some(line) = readable(raw) {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{line}");
        }
    }
}

/// One line of build output as shown to the user, or `None` for noise.
fn readable(raw: &str) -> Option<String> {
    let line = strip_ansi(raw);
    let line = line.trim_end();
    let trimmed = line.trim_start();
    if trimmed.is_empty()
        || trimmed.starts_with("--->")
        || trimmed.starts_with("Removing intermediate container")
        || trimmed.starts_with("Successfully built")
    {
        return None;
    }
    if let Some(step) = line.strip_prefix("Step ") {
        // Long RUN lines (the warm-up) would wrap over several screen lines.
        let step: String = step.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut shown: String = step.chars().take(100).collect();
        if shown.len() < step.len() {
            shown.truncate(shown.trim_end().len());
            shown.push_str(" …");
        }
        return Some(format!("runner: aider: step {shown}"));
    }
    Some(format!("    {line}"))
}

/// Removes terminal escape sequences (`ESC [ ... letter`) and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
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
    fn build_output_is_readable() {
        assert_eq!(
            readable("Step 5/15 : RUN sh /tmp/runner/setup-base.sh\n").as_deref(),
            Some("runner: aider: step 5/15 : RUN sh /tmp/runner/setup-base.sh")
        );
        let long = format!("Step 15/15 : RUN {}\n", "x ".repeat(100));
        let shown = readable(&long).unwrap();
        assert!(
            shown.ends_with(" x …") && shown.chars().count() < 130,
            "{shown}"
        );
        assert_eq!(readable(" ---> Running in 74bafa4b9bb5\n"), None);
        assert_eq!(readable(" ---> 93bb8707460b\n"), None);
        assert_eq!(
            readable("Removing intermediate container 74bafa4b9bb5\n"),
            None
        );
        assert_eq!(readable("\n"), None);
        assert_eq!(
            readable("\u{1b}[0mCollecting aider-chat==0.86.2\r\n").as_deref(),
            Some("    Collecting aider-chat==0.86.2")
        );
    }

    #[test]
    fn lines_split_across_messages_are_joined_and_errors_returned() {
        let mut printer = BuildPrinter::default();
        let stream = |s: &str| BuildInfo {
            stream: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(printer.show(&stream("Step 1/2 : ARG")), None);
        assert_eq!(printer.partial, "Step 1/2 : ARG");
        printer.show(&stream(" BASE\nout"));
        assert_eq!(printer.partial, "out");
        assert_eq!(printer.steps, 1);
        let failed = BuildInfo {
            error: Some("old".into()),
            error_detail: Some(bollard::models::ErrorDetail {
                code: Some(1),
                message: Some("The command '/bin/sh -c x' returned a non-zero code: 1".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            printer.show(&failed).as_deref(),
            Some("The command '/bin/sh -c x' returned a non-zero code: 1")
        );
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
