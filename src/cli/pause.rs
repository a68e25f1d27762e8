//! `runner pause JOB` / `runner resume JOB`: the manager of a running agent finishes its current
//! turn, then issues none until resumed (the job stays `running`, its timeout keeps counting);
//! meanwhile `runner send` talks to Aider directly. Anything but a running agent exits 2.

use super::exit::{CmdResult, SUCCESS};
use crate::store::ControlResult;
use std::path::Path;

pub fn run(state_dir: &Path, query: &str, paused: bool) -> CmdResult {
    let mut store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    match store.set_paused(&id, paused)? {
        ControlResult::Stored { .. } if paused => {
            println!(
                "{id}: pausing after the current turn; `runner send` now talks to Aider directly"
            );
            Ok(SUCCESS)
        }
        ControlResult::Stored { .. } => {
            println!("{id}: resuming; the manager decides the next turn");
            Ok(SUCCESS)
        }
        refused => Err(super::send::refusal(&id, refused)),
    }
}
