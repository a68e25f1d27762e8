//! Exit codes (docs/design.md, "Command line") and the error type that carries one.

/// Every job succeeded (or the command did what it was asked).
pub const SUCCESS: i32 = 0;
/// At least one job did not succeed.
pub const JOB_FAILED: i32 = 1;
/// Invalid input: a bad job file, flag or job id.
pub const INVALID_INPUT: i32 = 2;
/// Environment problem: Docker unreachable, image missing, state dir unusable or locked.
pub const ENVIRONMENT: i32 = 3;

/// A command failed; `message` names the thing and the fix.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure {
            code: INVALID_INPUT,
            message: message.into(),
        }
    }

    pub fn environment(message: impl Into<String>) -> Self {
        Failure {
            code: ENVIRONMENT,
            message: message.into(),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(_) | StoreError::Ambiguous { .. } => {
                Failure::invalid(e.to_string())
            }
            other => Failure::environment(other.to_string()),
        }
    }
}

impl From<crate::sandbox::SandboxError> for Failure {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        Failure::environment(e.to_string())
    }
}

impl From<crate::scheduler::SchedulerError> for Failure {
    fn from(e: crate::scheduler::SchedulerError) -> Self {
        Failure::environment(e.to_string())
    }
}

impl From<crate::scheduler::LockError> for Failure {
    fn from(e: crate::scheduler::LockError) -> Self {
        Failure::environment(e.to_string())
    }
}

/// What a command returns: an exit code, or a failure to print.
pub type CmdResult = Result<i32, Failure>;
