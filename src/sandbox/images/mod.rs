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
//!
//! This module holds the names, options and errors, and dispatches a build by name: `base` builds
//! the root file system image, `aider` sends the aider context to the engine's builder, and
//! `progress` shows the build's output.

mod aider;
mod base;
mod progress;

use super::{DockerSandbox, SandboxError};
use std::path::PathBuf;

/// The base image's reference.
pub const BASE_IMAGE: &str = "runner/base:bookworm";
/// The `aider-chat` version the aider image pins (also in `images/aider/install-aider.sh`).
pub const AIDER_VERSION: &str = "0.86.2";
/// The aider image's reference.
pub const AIDER_IMAGE: &str = "runner/aider:0.86.2";
/// Where Debian-like hosts keep their CA bundle; the CLI adds it to aider builds by default.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Names `runner images build` accepts, in build order (aider builds on base).
pub const IMAGE_NAMES: &[&str] = &["base", "aider"];

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
}

fn check_ca_bundle(opts: &BuildOptions) -> Result<(), ImageError> {
    if let Some(ca) = &opts.ca_bundle {
        if std::fs::metadata(ca).map(|m| !m.is_file()).unwrap_or(true) {
            return Err(ImageError::CaBundle(ca.clone()));
        }
    }
    Ok(())
}
