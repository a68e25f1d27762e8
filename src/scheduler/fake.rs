//! A scripted sandbox for scheduler tests: containers are tasks whose behaviour the command names.
//!
//! `["sleep", MS]` exits 0 after MS milliseconds; `["exit", CODE]` exits with CODE at once;
//! `["oom"]` is OOM-killed; `["hang"]` runs until stopped (SIGTERM ends it, code 143);
//! `["ignore-term"]` runs until killed at the end of the grace period (code 137); `["panic"]`
//! makes `launch` panic, as a bug in an attempt would.

use crate::sandbox::{
    ContainerPlan, ContainerState, ExecOutput, ExitStatus, HostCapacity, Launched, OutputStream,
    OwnedContainer, Sandbox, SandboxError,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

struct Container {
    job: String,
    attempt: u32,
    command: Vec<String>,
    exit: watch::Sender<Option<ExitStatus>>,
    started: bool,
}

#[derive(Default)]
struct Inner {
    containers: HashMap<String, Container>,
    running: usize,
    max_running: usize,
    launches: usize,
}

/// Called with a container's name just before it is removed.
type RemoveHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone, Default)]
pub(crate) struct FakeSandbox {
    inner: Arc<Mutex<Inner>>,
    on_remove: Arc<Mutex<Option<RemoveHook>>>,
}

impl FakeSandbox {
    pub fn max_running(&self) -> usize {
        self.inner.lock().unwrap().max_running
    }

    pub fn launches(&self) -> usize {
        self.inner.lock().unwrap().launches
    }

    pub fn container_count(&self) -> usize {
        self.inner.lock().unwrap().containers.len()
    }

    /// Calls `hook` with a container's name just before each removal.
    pub fn on_remove(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_remove.lock().unwrap() = Some(Arc::new(hook));
    }

    /// Puts a container in place as if a previous scheduler had launched it.
    pub fn preexisting(&self, plan: &ContainerPlan) {
        let (tx, _) = watch::channel(None);
        self.inner.lock().unwrap().containers.insert(
            plan.name.clone(),
            Container {
                job: plan.labels.job.clone(),
                attempt: plan.labels.attempt,
                command: plan.command.clone(),
                exit: tx,
                started: false,
            },
        );
    }

    /// A watch on a container's exit status, when the container exists.
    fn exit_watch(&self, name: &str) -> Option<watch::Receiver<Option<ExitStatus>>> {
        let inner = self.inner.lock().unwrap();
        inner.containers.get(name).map(|c| c.exit.subscribe())
    }

    fn exit(&self, name: &str, status: ExitStatus) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(c) = inner.containers.get(name) {
            if c.exit.borrow().is_none() {
                let started = c.started;
                c.exit.send_replace(Some(status));
                if started {
                    inner.running -= 1;
                }
            }
        }
    }

    fn begin(&self, name: &str) {
        let command = {
            let mut inner = self.inner.lock().unwrap();
            let c = inner.containers.get_mut(name).expect("container exists");
            if c.started {
                return;
            }
            c.started = true;
            let command = c.command.clone();
            inner.running += 1;
            inner.launches += 1;
            inner.max_running = inner.max_running.max(inner.running);
            command
        };
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let code = |c: i64| ExitStatus {
                code: c,
                oom_killed: false,
            };
            match command.first().map(String::as_str) {
                Some("sleep") => {
                    let ms = command[1].parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    this.exit(&name, code(0));
                }
                Some("exit") => this.exit(&name, code(command[1].parse().unwrap())),
                Some("oom") => this.exit(
                    &name,
                    ExitStatus {
                        code: 137,
                        oom_killed: true,
                    },
                ),
                _ => {}
            }
        });
    }
}

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn capacity(&self) -> Result<HostCapacity, SandboxError> {
        Ok(HostCapacity {
            cpus: 64.0,
            memory: 1 << 40,
        })
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn image_exists(&self, _image: &str) -> Result<bool, SandboxError> {
        Ok(true)
    }

    async fn launch(&self, plan: &ContainerPlan) -> Result<Launched, SandboxError> {
        if plan.command.first().map(String::as_str) == Some("panic") {
            panic!("the fake sandbox panics launching {}", plan.name);
        }
        let started = {
            let inner = self.inner.lock().unwrap();
            inner.containers.get(&plan.name).map(|c| c.started)
        };
        if started.is_none() {
            self.preexisting(plan);
        }
        if started == Some(true) {
            return Ok(Launched {
                output: None,
                input: None,
                started: false,
            });
        }
        let output = self.logs(&plan.name, true);
        self.begin(&plan.name);
        Ok(Launched {
            output: Some(output),
            input: None,
            started: true,
        })
    }

    async fn reattach(&self, name: &str) -> Result<crate::sandbox::Reattached, SandboxError> {
        Err(SandboxError::Engine(format!(
            "the fake sandbox runs no sessions ({name})"
        )))
    }

    async fn exec(
        &self,
        _name: &str,
        _argv: &[String],
        _stdin: Option<Bytes>,
        _limit: usize,
    ) -> Result<ExecOutput, SandboxError> {
        Ok(ExecOutput {
            code: 0,
            output: Bytes::new(),
            truncated: false,
        })
    }

    fn logs(&self, name: &str, _follow: bool) -> OutputStream {
        let rx = self.exit_watch(name);
        let line = Bytes::from(format!("output of {name}\n"));
        stream::once(async move {
            if let Some(mut rx) = rx {
                let _ = rx.wait_for(Option::is_some).await;
            }
            Ok(line)
        })
        .boxed()
    }

    async fn wait(&self, name: &str) -> Result<ExitStatus, SandboxError> {
        let rx = self.exit_watch(name);
        let Some(mut rx) = rx else {
            return Err(SandboxError::NoSuchContainer(name.into()));
        };
        let status = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| SandboxError::NoSuchContainer(name.into()))?;
        Ok(status.expect("waited for Some"))
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), SandboxError> {
        let command = self
            .inner
            .lock()
            .unwrap()
            .containers
            .get(name)
            .map(|c| c.command.clone())
            .ok_or_else(|| SandboxError::NoSuchContainer(name.into()))?;
        if command.first().map(String::as_str) == Some("ignore-term") {
            tokio::time::sleep(grace).await;
            self.exit(
                name,
                ExitStatus {
                    code: 137,
                    oom_killed: false,
                },
            );
        } else {
            self.exit(
                name,
                ExitStatus {
                    code: 143,
                    oom_killed: false,
                },
            );
        }
        Ok(())
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>, SandboxError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.containers.get(name).map(|c| match *c.exit.borrow() {
            Some(status) => ContainerState::Exited(status),
            None if c.started => ContainerState::Running,
            None => ContainerState::Created,
        }))
    }

    async fn remove(&self, name: &str) -> Result<(), SandboxError> {
        let hook = self.on_remove.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(name);
        }
        self.exit(
            name,
            ExitStatus {
                code: 137,
                oom_killed: false,
            },
        );
        self.inner.lock().unwrap().containers.remove(name);
        Ok(())
    }

    async fn start_relay(&self, _relay: &crate::sandbox::RelayPlan) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn remove_legacy_llm_network(&self, _state_id: &str) -> Result<bool, SandboxError> {
        Ok(false)
    }

    async fn list_owned(&self, _state_id: &str) -> Result<Vec<OwnedContainer>, SandboxError> {
        let names: Vec<(String, String, u32)> = {
            let inner = self.inner.lock().unwrap();
            inner
                .containers
                .iter()
                .map(|(n, c)| (n.clone(), c.job.clone(), c.attempt))
                .collect()
        };
        let mut out = Vec::new();
        for (name, job, attempt) in names {
            if let Some(state) = self.inspect(&name).await? {
                out.push(OwnedContainer {
                    name,
                    job,
                    attempt,
                    state,
                    leftover: false,
                });
            }
        }
        Ok(out)
    }
}
