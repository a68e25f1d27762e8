//! `runner schema`: the JSON Schema of job files on stdout (see `job::job_schema`).

use super::exit::{CmdResult, Failure, SUCCESS};
use std::io::Write;

pub fn run() -> CmdResult {
    let text = serde_json::to_string_pretty(&crate::job::job_schema())
        .map_err(|e| Failure::environment(format!("cannot encode the schema: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(SUCCESS),
        Err(e) => Err(Failure::environment(format!("cannot write to stdout: {e}"))),
    }
}
