//! An agent attempt inside its sandbox: the container plan (Aider behind a small wrapper that
//! waits for the workspace), the repository upload, the transcript, and the manager loop that
//! drives Aider to a verified, exported result.
//!
//! The container plan and its wrapper are in `plan`, the repository's preparation and upload in
//! `workspace`, the transcript writer in `transcript`, and the manager loop in `drive`, which
//! ends in `finish` (verify, export, publish).

mod drive;
mod finish;
mod plan;
mod transcript;
mod workspace;

pub use drive::{aider_input, Drive, DriveEnd};
pub use plan::{after_upload, plan};
pub use transcript::write_transcript;
pub use workspace::{prepare, upload, uploaded, Prepared};

use crate::state::{Outcome, Reason};
use std::time::Duration;

/// How long Aider's output must stay quiet after a prompt before it counts as ready.
pub const QUIET: Duration = Duration::from_millis(50);

fn infra(detail: String) -> Outcome {
    Outcome::failed(Reason::Infra, None, detail)
}
