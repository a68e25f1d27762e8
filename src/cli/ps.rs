//! `runner ps [--all] [--json]`

use super::exit::{CmdResult, SUCCESS};
use super::output;
use std::path::Path;

pub fn run(state_dir: &Path, all: bool, json: bool) -> CmdResult {
    let store = super::open_store(state_dir)?;
    let jobs = store.list(all)?;
    if json {
        let list: Vec<_> = jobs.iter().map(output::job_summary_json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        print!("{}", output::table(&jobs));
    }
    Ok(SUCCESS)
}
