//! `runner images build [NAME] [--ca-bundle FILE] [--if-missing]`

use super::exit::{CmdResult, Failure, SUCCESS};
use crate::sandbox::images::{BuildOptions, ImageError, IMAGE_NAMES};
use crate::sandbox::{DockerSandbox, Sandbox};
use std::path::{Path, PathBuf};

pub async fn build(
    _state_dir: &Path,
    name: Option<&str>,
    ca_bundle: Option<PathBuf>,
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
        // A scratch dir outside the state dir: builds often run under sudo, and a root-owned
        // state dir would lock the user out of it.
        work_dir: std::env::temp_dir().join(format!("runner-images-{}", std::process::id())),
    };
    for name in names {
        let image = DockerSandbox::image_ref(name).expect("known image");
        if if_missing && sandbox.image_exists(image).await? {
            eprintln!("runner: {image} is present");
            continue;
        }
        eprintln!("runner: building {image}");
        let built = sandbox
            .build_image(name, &opts)
            .await
            .map_err(|e| match e {
                ImageError::Unknown(_) | ImageError::CaBundle(_) => Failure::invalid(e.to_string()),
                other => Failure::environment(other.to_string()),
            })?;
        eprintln!("runner: built {built}");
    }
    Ok(SUCCESS)
}
