//! `runner logs JOB [-f]`: the latest attempt's output; `-f` follows it (and later attempts)
//! until the job ends.

use super::exit::{CmdResult, SUCCESS};
use crate::scheduler::log_path;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

pub async fn run(state_dir: &Path, query: &str, follow: bool) -> CmdResult {
    let store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    let logs_dir = state_dir.join("logs");
    let mut stdout = std::io::stdout();
    if !follow {
        let job = store.job(&id)?;
        if job.attempts == 0 {
            eprintln!(
                "runner: {id} has not started yet ({}); no output",
                job.state
            );
            return Ok(SUCCESS);
        }
        let path = log_path(&logs_dir, id.as_str(), job.attempts);
        if let Ok(mut file) = std::fs::File::open(&path) {
            let _ = std::io::copy(&mut file, &mut stdout);
        }
        return Ok(SUCCESS);
    }
    let mut current: Option<(u32, u64)> = None; // attempt, offset
    loop {
        let job = store.job(&id)?;
        let done = job.state.is_terminal();
        if job.attempts > 0 {
            let (n, offset) = match current {
                Some((n, _)) if n < job.attempts => {
                    copy_new(
                        &log_path(&logs_dir, id.as_str(), n),
                        &mut current_offset(current),
                        &mut stdout,
                    );
                    eprintln!("runner: --- attempt {} ---", job.attempts);
                    (job.attempts, 0)
                }
                Some(cur) => cur,
                None => (job.attempts, 0),
            };
            let mut offset = offset;
            copy_new(
                &log_path(&logs_dir, id.as_str(), n),
                &mut offset,
                &mut stdout,
            );
            current = Some((n, offset));
        }
        if done {
            return Ok(SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn current_offset(current: Option<(u32, u64)>) -> u64 {
    current.map(|(_, o)| o).unwrap_or(0)
}

/// Copies what was appended to `path` since `offset` to `out`, advancing `offset`.
fn copy_new(path: &Path, offset: &mut u64, out: &mut impl Write) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if let Ok(n) = file.read_to_end(&mut buf) {
        *offset += n as u64;
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}
