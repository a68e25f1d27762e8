//! `runner logs JOB [-f] [--raw]`: the latest attempt's output; `-f` follows it (and later
//! attempts) until the job ends. On a terminal the output is shown through
//! [`super::terminal::Visible`] (control sequences as visible escapes) unless `--raw`; piped, it
//! is byte for byte what was stored.

use super::exit::{CmdResult, SUCCESS};
use super::terminal::Visible;
use crate::attempt::log_path;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

pub async fn run(state_dir: &Path, query: &str, follow: bool, raw: bool) -> CmdResult {
    let store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    let logs_dir = state_dir.join("logs");
    let mut stdout = Shown {
        out: std::io::stdout(),
        visible: (!raw && super::terminal::stdout_is_terminal()).then(Visible::default),
    };
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
            let mut buf = vec![0; 64 << 10];
            while let Ok(n @ 1..) = file.read(&mut buf) {
                stdout.write(&buf[..n]);
            }
        }
        stdout.finish();
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
                    stdout.finish();
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
            stdout.finish();
            return Ok(SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn current_offset(current: Option<(u32, u64)>) -> u64 {
    current.map(|(_, o)| o).unwrap_or(0)
}

/// Copies what was appended to `path` since `offset` to `out`, advancing `offset`.
fn copy_new(path: &Path, offset: &mut u64, out: &mut Shown) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if let Ok(n) = file.read_to_end(&mut buf) {
        *offset += n as u64;
        out.write(&buf);
    }
}

/// Standard output, as stored or made visible.
struct Shown {
    out: std::io::Stdout,
    /// Set on a terminal (without `--raw`).
    visible: Option<Visible>,
}

impl Shown {
    fn write(&mut self, bytes: &[u8]) {
        let _ = match &mut self.visible {
            Some(visible) => self.out.write_all(&visible.push(bytes)),
            None => self.out.write_all(bytes),
        };
        let _ = self.out.flush();
    }

    /// Shows what the escaper still holds (the end of an attempt's output).
    fn finish(&mut self) {
        if let Some(visible) = &mut self.visible {
            let _ = self.out.write_all(&visible.finish());
            let _ = self.out.flush();
        }
    }
}
