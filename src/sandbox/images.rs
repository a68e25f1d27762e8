//! The shipped images, built without a registry. Their recipes under `images/` are embedded in the
//! binary, so an installed `runner` builds them anywhere.
//!
//! `base`: `images/base/build.sh` makes a Debian root file system with debootstrap (on the host;
//! it needs root) and writes it as a tar, which is imported into the engine as
//! `runner/base:bookworm`.

use super::{DockerSandbox, SandboxError};
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The base image's reference.
pub const BASE_IMAGE: &str = "runner/base:bookworm";

const BASE_BUILD_SH: &str = include_str!("../../images/base/build.sh");

/// Names `runner images build` accepts, in build order.
pub const IMAGE_NAMES: &[&str] = &["base"];

/// Options shared by image builds.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// PEM bundle to add to the image's trust store (TLS-inspecting proxies).
    pub ca_bundle: Option<PathBuf>,
    /// Scratch directory for the root file system tar.
    pub work_dir: PathBuf,
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
            other => Err(ImageError::Unknown(other.to_string())),
        }
    }

    /// The image reference a shipped image name builds.
    pub fn image_ref(name: &str) -> Option<&'static str> {
        match name {
            "base" => Some(BASE_IMAGE),
            _ => None,
        }
    }

    async fn build_base(&self, opts: &BuildOptions) -> Result<String, ImageError> {
        if let Some(ca) = &opts.ca_bundle {
            if std::fs::metadata(ca).map(|m| !m.is_file()).unwrap_or(true) {
                return Err(ImageError::CaBundle(ca.clone()));
            }
        }
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
}
