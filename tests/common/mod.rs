//! Shared harness for integration tests: drives the real `runner` binary against a temp state
//! dir, and removes every Docker object carrying that state dir's label when the test ends, even
//! when it fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BASE_IMAGE: &str = "runner/base:bookworm";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    daemons: Vec<Child>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        Env {
            dir,
            state,
            daemons: Vec::new(),
        }
    }

    /// A `runner` command on this env's state dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
        cmd.arg("--state-dir").arg(&self.state);
        cmd.env_remove("RUNNER_STATE_DIR");
        cmd
    }

    /// Runs `runner ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("runner runs")
    }

    /// Writes a job file into the env's dir and returns its path.
    pub fn job(&self, file: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Starts `runner daemon ARGS...` in the background (killed at the end of the test).
    pub fn spawn_daemon(&mut self, args: &[&str]) -> u32 {
        self.spawn_daemon_env(args, &[])
    }

    /// Like `spawn_daemon`, with extra environment variables.
    pub fn spawn_daemon_env(&mut self, args: &[&str], vars: &[(&str, &str)]) -> u32 {
        let child = self
            .cmd()
            .arg("daemon")
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts");
        let pid = child.id();
        self.daemons.push(child);
        pid
    }

    /// Sends a signal to a daemon started by this env and waits for it to exit.
    pub fn signal_daemon(&mut self, pid: u32, signal: &str) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        let idx = self.daemons.iter().position(|c| c.id() == pid)?;
        let mut child = self.daemons.remove(idx);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon {pid} did not exit after SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `runner show JOB --json`.
    pub fn show(&self, job: &str) -> serde_json::Value {
        let out = self.run(&["show", job, "--json"]);
        assert!(out.status.success(), "show failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("show prints JSON")
    }

    /// The events of `job` whose `type` is one of `kinds`, as `runner events --json` prints them.
    pub fn events_of(&self, job: &str, kinds: &[&str]) -> Vec<serde_json::Value> {
        stdout(&self.run(&["events", "--json", job]))
            .lines()
            .map(|l| serde_json::from_str(l).expect("events prints JSON lines"))
            .filter(|e: &serde_json::Value| kinds.contains(&e["type"].as_str().unwrap_or_default()))
            .collect()
    }

    /// `runner ps --all --json`.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["ps", "--all", "--json"]);
        assert!(out.status.success(), "ps failed: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("ps prints JSON")
            .as_array()
            .unwrap()
            .clone()
    }

    /// The job's state string.
    pub fn state_of(&self, job: &str) -> String {
        self.show(job)["state"].as_str().unwrap().to_string()
    }

    /// Waits until `job` reaches `state` (or panics after `timeout`).
    pub fn wait_state(&self, job: &str, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            // The job may not be stored yet (a `run` still starting up).
            let out = self.run(&["show", job, "--json"]);
            let (now, detail) = if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                (
                    v["state"].as_str().unwrap().to_string(),
                    v["detail"].clone(),
                )
            } else {
                ("not stored".to_string(), serde_json::Value::Null)
            };
            if now == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} is {now}, not {state}, after {timeout:?} (detail: {detail})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// This state dir's id (labels), once the database exists.
    pub fn state_id(&self) -> Option<String> {
        if !self.state.join("runner.db").exists() {
            return None;
        }
        runner::store::Store::open(&self.state)
            .ok()
            .map(|s| s.state_id().to_string())
    }

    /// Names of containers carrying this state dir's label.
    pub fn containers(&self) -> Vec<String> {
        self.labelled(&["ps", "-a", "--format", "{{.Names}}"])
    }

    /// Names of the attempts' own containers (without their gateway relays).
    pub fn job_containers(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|c| !c.ends_with("-relay"))
            .collect()
    }

    /// Waits until no container of this state dir is left (outcomes are recorded before the
    /// containers and relays are removed).
    pub fn wait_no_containers(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.containers().is_empty() {
            assert!(
                Instant::now() < deadline,
                "containers left behind: {:?}",
                self.containers()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Names of networks carrying this state dir's label.
    pub fn networks(&self) -> Vec<String> {
        self.labelled(&["network", "ls", "--format", "{{.Name}}"])
    }

    /// What the docker listing `list` prints for objects carrying this state dir's label.
    fn labelled(&self, list: &[&str]) -> Vec<String> {
        let Some(id) = self.state_id() else {
            return vec![];
        };
        let out = Command::new("docker")
            .args(list)
            .arg("--filter")
            .arg(format!("label=runner.state={id}"))
            .output()
            .expect("docker cli");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for mut child in self.daemons.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(id) = self.state_id() {
            let filter = format!("label=runner.state={id}");
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output();
            if let Ok(out) = out {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f", "-v"])
                        .args(&ids)
                        .output();
                }
            }
            let _ = Command::new("docker")
                .args(["volume", "prune", "-f", "--filter", &filter])
                .output();
            if let Ok(out) = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["network", "rm", id]).output();
                }
            }
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plain job on the base image running `sh -c SCRIPT`.
pub fn sh_job(name: &str, script: &str, extra: &str) -> String {
    format!("name: {name}\nimage: {BASE_IMAGE}\ncommand: [\"sh\", \"-c\", {script:?}]\n{extra}\n",)
}

/// The stored output of a job.
/// The text of a job's artifact of this kind (`show --json`), if it has one.
pub fn artifact_text(job: &serde_json::Value, kind: &str) -> Option<String> {
    let path = job["artifacts"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == kind)?["path"]
        .as_str()?
        .to_string();
    Some(std::fs::read_to_string(path).expect("the artifact is readable"))
}

pub fn log_of(env: &Env, job: &str) -> String {
    stdout(&env.run(&["logs", job]))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Serves `app` on an ephemeral loopback port from its own runtime (dropped with the runtime);
/// returns the base URL (`http://127.0.0.1:PORT`).
pub fn serve_on_loopback(app: axum::Router) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, runtime)
}

/// A small git repository (a README on `main`, one commit) to work on.
pub fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "# demo\n").unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "initial"]);
}

/// A `runner serve` or `runner daemon --listen` process, stopped (SIGTERM, so a daemon removes
/// its jobs' containers) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub token: String,
    /// What it printed on stderr up to the address (and the login URL for `serve`).
    pub banner: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `runner ARGS...` and reads its stderr until it says where it listens.
    pub fn start(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Server {
        use std::io::{BufRead, BufReader};
        let mut child = env
            .cmd()
            .args(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runner starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut banner = String::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if let Some(a) = line.strip_prefix("runner: listening on ") {
                addr = Some(a.trim().to_string());
            }
            if line.contains("?token=") || line.contains("the token is in") {
                break;
            }
        }
        // Keep draining stderr so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| panic!("no address printed: {banner}"));
        let token = std::fs::read_to_string(env.state.join("api-token"))
            .unwrap()
            .trim()
            .to_string();
        Server {
            child,
            addr,
            token,
            banner,
        }
    }
}
