//! `runner cancel JOB...`

use super::exit::{CmdResult, SUCCESS};
use crate::store::CancelResult;
use std::path::Path;

pub fn run(state_dir: &Path, queries: &[String]) -> CmdResult {
    let mut store = super::open_store(state_dir)?;
    for query in queries {
        let id = store.resolve(query)?;
        match store.cancel(&id)? {
            CancelResult::Cancelled => println!("{id}: cancelled"),
            CancelResult::Requested => {
                println!("{id}: stopping (the scheduler stops it: grace, then kill)")
            }
            CancelResult::AlreadyFinished(state) => println!("{id}: already {state}"),
        }
    }
    Ok(SUCCESS)
}
