//! A test double for this module: a [`Sandbox`] whose `exec` runs the command on the host in a
//! directory (standing in for the container's /workspace), with stderr merged into stdout the
//! way the engine interleaves them. Only `exec` is implemented.

use crate::sandbox::{
    ContainerPlan, ContainerState, ExecOutput, ExitStatus, HostCapacity, Launched, OutputStream,
    OwnedContainer, RelayPlan, Sandbox, SandboxError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) struct HostShell {
    dir: PathBuf,
    execs: AtomicUsize,
}

impl HostShell {
    pub fn new(dir: &Path) -> Self {
        HostShell {
            dir: dir.to_path_buf(),
            execs: AtomicUsize::new(0),
        }
    }

    pub fn exec_count(&self) -> usize {
        self.execs.load(Ordering::SeqCst)
    }
}

fn unsupported() -> SandboxError {
    SandboxError::Engine("not supported by the HostShell test double".into())
}

#[async_trait]
impl Sandbox for HostShell {
    async fn capacity(&self) -> Result<HostCapacity, SandboxError> {
        Err(unsupported())
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn image_exists(&self, _image: &str) -> Result<bool, SandboxError> {
        Err(unsupported())
    }

    async fn launch(&self, _plan: &ContainerPlan) -> Result<Launched, SandboxError> {
        Err(unsupported())
    }

    async fn reattach(&self, _name: &str) -> Result<crate::sandbox::Reattached, SandboxError> {
        Err(unsupported())
    }

    async fn exec(
        &self,
        _name: &str,
        argv: &[String],
        stdin: Option<Bytes>,
        limit: usize,
    ) -> Result<ExecOutput, SandboxError> {
        assert!(stdin.is_none(), "HostShell does not feed stdin");
        self.execs.fetch_add(1, Ordering::SeqCst);
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("exec \"$@\" 2>&1")
            .arg("sh")
            .args(argv)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        let truncated = out.stdout.len() > limit;
        let mut output = out.stdout;
        output.truncate(limit);
        Ok(ExecOutput {
            code: out.status.code().map_or(-1, i64::from),
            output: Bytes::from(output),
            truncated,
        })
    }

    fn logs(&self, _name: &str, _follow: bool) -> OutputStream {
        Box::pin(futures_util::stream::empty())
    }

    async fn wait(&self, _name: &str) -> Result<ExitStatus, SandboxError> {
        Err(unsupported())
    }

    async fn stop(&self, _name: &str, _grace: Duration) -> Result<(), SandboxError> {
        Err(unsupported())
    }

    async fn inspect(&self, _name: &str) -> Result<Option<ContainerState>, SandboxError> {
        Err(unsupported())
    }

    async fn remove(&self, _name: &str) -> Result<(), SandboxError> {
        Err(unsupported())
    }

    async fn start_relay(&self, _relay: &RelayPlan) -> Result<(), SandboxError> {
        Err(unsupported())
    }

    async fn remove_legacy_llm_network(&self, _state_id: &str) -> Result<bool, SandboxError> {
        Err(unsupported())
    }

    async fn list_owned(&self, _state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError> {
        Err(unsupported())
    }
}
