//! `runner send JOB MESSAGE | --file F | -`: a person's message to a running agent job. It is
//! stored (the path between processes is the database) and the attempt's manager loop types it
//! into Aider at its next prompt and shows it to the manager. Anything but a running agent job is
//! refused with exit 2, and nothing is stored.

use super::exit::{CmdResult, Failure, SUCCESS};
use crate::attempt::redact::Redactor;
use crate::store::ControlResult;
use std::io::Read;
use std::path::Path;

/// Largest message accepted, in bytes.
pub const MESSAGE_MAX: usize = 64 << 10;

pub fn run(state_dir: &Path, query: &str, message: Option<&str>, file: Option<&Path>) -> CmdResult {
    let text = read_message(message, file)?;
    let mut store = super::open_store(state_dir)?;
    let id = store.resolve(query)?;
    let job = store.job(&id)?;
    let text = redact(&job, &text);
    match store.send_message(&id, &text)? {
        ControlResult::Stored { attempt } => {
            println!(
                "{id}: message stored; attempt {attempt} types it into Aider at its next prompt"
            );
            Ok(SUCCESS)
        }
        refused => Err(refusal(&id, refused)),
    }
}

/// `text` with the values of the job's secrets this process can see redacted, before it is
/// stored; the scheduler redacts again, with the values it read, before the transcript and the
/// event.
pub(crate) fn redact(job: &crate::store::JobRecord, text: &str) -> String {
    let values: Vec<(String, String)> = job
        .spec
        .secrets
        .iter()
        .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
        .collect();
    Redactor::new(values.iter().map(|(n, v)| (n.as_str(), v.as_str()))).redact_str(text)
}

/// Why a control request (send, pause, resume) was refused: exit 2, nothing changed.
pub(crate) fn refusal(id: &crate::state::JobId, result: ControlResult) -> Failure {
    Failure::invalid(match result {
        ControlResult::NotAgent => format!(
            "{id} is a plain command job: there is no agent to talk to (only jobs with `task:`)"
        ),
        ControlResult::NotRunning(state) => format!(
            "{id} is {state}, not running: only a running agent job takes this (see `runner ps`; wait until it runs)"
        ),
        ControlResult::Stored { .. } => "accepted".into(),
    })
}

/// The message from the argument, `--file`, or stdin for `-`: non-empty, valid UTF-8, at most
/// [`MESSAGE_MAX`] bytes.
fn read_message(message: Option<&str>, file: Option<&Path>) -> Result<String, Failure> {
    let bytes = match (message, file) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(Failure::invalid(
                "give the message as an argument, `-` for stdin, or --file F (one of them)",
            ))
        }
        (Some("-"), None) => read_capped(std::io::stdin().lock(), "stdin")?,
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(path)) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
            read_capped(f, &path.display().to_string())?
        }
    };
    check_message(bytes)
}

/// A message as sent (argument, file, stdin or HTTP body): non-empty, valid UTF-8, at most
/// [`MESSAGE_MAX`] bytes.
pub(crate) fn check_message(bytes: Vec<u8>) -> Result<String, Failure> {
    if bytes.len() > MESSAGE_MAX {
        return Err(Failure::invalid(format!(
            "the message is longer than {} KiB: shorten it, or put the details in the repository and point to them",
            MESSAGE_MAX >> 10
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| Failure::invalid("the message is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(Failure::invalid("the message is empty: say something"));
    }
    Ok(text)
}

/// Reads at most one byte past the cap, so an endless input is refused without being held.
fn read_capped(input: impl Read, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    input
        .take(MESSAGE_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::invalid(format!("cannot read {what}: {e}")))?;
    Ok(bytes)
}
