//! The gateway relay of one attempt on Docker: a container from the base image with no network
//! but loopback, running a few lines of Python that carry each TCP connection on
//! `127.0.0.1:8080` to the attempt's gateway socket, mounted read-only from the host. The job's
//! container joins this container's network namespace (`network_mode: container:<relay>`).

use super::{json_log, missing_image_hint, never_restart, status_code, DockerSandbox};
use crate::sandbox::images::BASE_IMAGE;
use crate::sandbox::{ContainerState, RelayPlan, Sandbox, SandboxError, RELAY_PORT};
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use std::time::Duration;

/// Where the attempt's socket directory appears inside the relay.
const SOCKET_DIR: &str = "/run/runner-gateway";
/// Printed once the relay listens; `start_relay` waits for it.
const READY: &str = "runner-relay ready";
/// How long a relay may take to start listening.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Memory of a relay (Python's asyncio at rest takes ~10 MB).
const MEMORY: i64 = 64 << 20;

/// Carries bytes both ways between a TCP client and the gateway socket (plain non-blocking
/// sockets: a failed write must not discard an answer already received, as a stream transport
/// would). Half-closes are passed on, so a client that shuts its sending side still gets its
/// answer, and a request the gateway refuses before reading it all (too large) is read to its end
/// before the connection closes.
const SCRIPT: &str = r#"
import asyncio, socket, sys
SOCK = "/run/runner-gateway/gateway.sock"
async def discard(loop, src, budget=64 << 20):
    while budget > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(src, 65536), 10)
        except (OSError, asyncio.TimeoutError):
            return
        if not data:
            return
        budget -= len(data)
async def pipe(loop, src, dst, then_discard=False):
    try:
        while True:
            data = await loop.sock_recv(src, 65536)
            if not data:
                return
            await loop.sock_sendall(dst, data)
    except OSError:
        if then_discard:
            await discard(loop, src)
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
async def handle(loop, client):
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    up.setblocking(False)
    try:
        await loop.sock_connect(up, SOCK)
    except OSError:
        up.close()
        client.close()
        return
    upload = asyncio.ensure_future(pipe(loop, client, up, then_discard=True))
    try:
        await pipe(loop, up, client)
        if not upload.done():
            # The gateway answered and closed before reading the whole request (one too
            # large): read the rest, so closing does not reset the connection under the answer.
            upload.cancel()
            try:
                await upload
            except asyncio.CancelledError:
                pass
            await discard(loop, client)
    finally:
        up.close()
        client.close()
async def main():
    loop = asyncio.get_running_loop()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen(128)
    server.setblocking(False)
    print("runner-relay ready", flush=True)
    running = set()
    while True:
        client, _ = await loop.sock_accept(server)
        client.setblocking(False)
        task = asyncio.ensure_future(handle(loop, client))
        running.add(task)
        task.add_done_callback(running.discard)
asyncio.run(main())
"#;

fn create_body(relay: &RelayPlan) -> ContainerCreateBody {
    let mut labels = relay.labels.to_map();
    labels.insert("runner.role".into(), "relay".into());
    ContainerCreateBody {
        image: Some(BASE_IMAGE.into()),
        cmd: Some(vec![
            "python3".into(),
            "-I".into(),
            "-c".into(),
            SCRIPT.into(),
            RELAY_PORT.to_string(),
        ]),
        user: Some(relay.user.clone()),
        labels: Some(labels),
        network_disabled: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            memory: Some(MEMORY),
            memory_swap: Some(MEMORY),
            nano_cpus: Some(500_000_000),
            pids_limit: Some(16),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(true),
            mounts: Some(vec![Mount {
                target: Some(SOCKET_DIR.into()),
                source: Some(relay.socket_dir.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(true),
                ..Default::default()
            }]),
            restart_policy: Some(never_restart()),
            log_config: Some(json_log("1m")),
            init: Some(true),
            auto_remove: Some(false),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl DockerSandbox {
    pub(super) async fn start_relay_container(
        &self,
        relay: &RelayPlan,
    ) -> Result<(), SandboxError> {
        if !self.create_relay(relay).await? {
            // Made before a restart. A running relay has printed its one ready line; one that
            // stopped is made afresh, so an old ready line is never taken for a new one.
            if self.inspect(&relay.name).await? == Some(ContainerState::Running) {
                return self.wait_until_listening(&relay.name).await;
            }
            self.remove(&relay.name).await?;
            if !self.create_relay(relay).await? {
                return Err(SandboxError::Engine(format!(
                    "the gateway relay {} came back while it was being replaced",
                    relay.name
                )));
            }
        }
        match self
            .docker
            .start_container(
                &relay.name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            Ok(()) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(self.map_err(e)),
        }
        self.wait_until_listening(&relay.name).await
    }

    /// Creates the relay; false when one of that name exists already.
    async fn create_relay(&self, relay: &RelayPlan) -> Result<bool, SandboxError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&relay.name)
            .build();
        match self
            .docker
            .create_container(Some(options), create_body(relay))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) if status_code(&e) == Some(404) => Err(SandboxError::ImageMissing {
                image: BASE_IMAGE.into(),
                hint: missing_image_hint(BASE_IMAGE),
            }),
            Err(e) => Err(self.map_err(e)),
        }
    }

    /// Reads the relay's output until it says it listens (or it exits, or time runs out).
    async fn wait_until_listening(&self, name: &str) -> Result<(), SandboxError> {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.long.logs(name, Some(options));
        let mut seen = Vec::new();
        let found = tokio::time::timeout(READY_WITHIN, async {
            while let Some(frame) = logs.next().await {
                let frame = frame.map_err(|e| self.map_err(e))?;
                seen.extend_from_slice(&frame.into_bytes());
                if String::from_utf8_lossy(&seen).contains(READY) {
                    return Ok(true);
                }
                seen.truncate(64 << 10);
            }
            Ok::<bool, SandboxError>(false)
        })
        .await;
        match found {
            Ok(Ok(true)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Ok(Ok(false)) | Err(_) => Err(SandboxError::Engine(format!(
                "the gateway relay {name} did not start listening within {}s: {}",
                READY_WITHIN.as_secs(),
                String::from_utf8_lossy(&seen).trim()
            ))),
        }
    }
}
