//! `runner validate PATH...`

use super::exit::{CmdResult, SUCCESS};
use std::path::PathBuf;

pub fn run(paths: &[PathBuf]) -> CmdResult {
    let loaded = super::load_jobs(paths, "")?;
    for job in &loaded {
        println!("{}: ok ({})", job.path.display(), job.spec.name);
    }
    Ok(SUCCESS)
}
