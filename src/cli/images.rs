//! `runner images build [NAME] [--ca-bundle FILE] [--base IMAGE] [--wheels DIR] [--if-missing]`

use super::exit::{CmdResult, Failure, SUCCESS};
use crate::sandbox::images::{BuildOptions, ImageError, HOST_CA_BUNDLE, IMAGE_NAMES};
use crate::sandbox::{DockerSandbox, Sandbox};
use std::path::{Path, PathBuf};

pub async fn build(
    _state_dir: &Path,
    name: Option<&str>,
    ca_bundle: Option<PathBuf>,
    base: Option<String>,
    wheels: Option<PathBuf>,
    if_missing: bool,
) -> CmdResult {
    let names: Vec<&str> = match name {
        Some(n) if IMAGE_NAMES.contains(&n) => vec![n],
        Some(n) => {
            return Err(Failure::invalid(
                ImageError::Unknown(n.to_string()).to_string(),
            ))
        }
        None => IMAGE_NAMES.to_vec(),
    };
    let sandbox = super::connect_docker().await?;
    let opts = BuildOptions {
        ca_bundle,
        // A scratch dir outside the state dir: the base build runs under sudo, and a root-owned
        // state dir would lock the user out of it.
        work_dir: std::env::temp_dir().join(format!("runner-images-{}", std::process::id())),
        base: base.filter(|b| !b.trim().is_empty()),
        wheels: wheels.filter(|w| !w.as_os_str().is_empty()),
    };
    for name in names {
        let image = DockerSandbox::image_ref(name).expect("known image");
        if if_missing && sandbox.image_exists(image).await? {
            eprintln!("runner: {image} is present");
            continue;
        }
        eprintln!("runner: building {image}");
        let mut opts = opts.clone();
        if name == "aider" && opts.ca_bundle.is_none() && Path::new(HOST_CA_BUNDLE).is_file() {
            // Package downloads on our build machines pass through a TLS-inspecting proxy.
            eprintln!(
                "runner: adding the host's CA bundle {HOST_CA_BUNDLE} to the build \
                 (for TLS-inspecting proxies; --ca-bundle chooses another)"
            );
            opts.ca_bundle = Some(PathBuf::from(HOST_CA_BUNDLE));
        }
        let started = std::time::Instant::now();
        let built = sandbox
            .build_image(name, &opts)
            .await
            .map_err(|e| match e {
                ImageError::Unknown(_) | ImageError::CaBundle(_) | ImageError::Wheels { .. } => {
                    Failure::invalid(e.to_string())
                }
                other => Failure::environment(other.to_string()),
            })?;
        eprintln!("runner: built {built} in {}s", started.elapsed().as_secs());
    }
    Ok(SUCCESS)
}
