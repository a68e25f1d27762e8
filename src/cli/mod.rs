//! The command line: clap definitions, one file per subcommand, exit codes in [`exit`].

mod backend;
mod cancel;
mod completions;
mod daemon;
pub(crate) mod events;
pub mod exit;
mod follow;
mod gc;
mod github;
mod images;
mod logs;
pub mod output;
mod pause;
mod progress;
mod ps;
mod run;
mod schema;
pub(crate) mod send;
mod serve;
mod show;
mod submit;
mod terminal;
mod validate;

use crate::scheduler::policy;
use backend::BackendArgs;
use clap::{Args, Parser, Subcommand};
use exit::{CmdResult, Failure};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs AI coding tasks and plain commands in hardened Docker sandboxes.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about)]
pub struct Cli {
    /// State directory: database, logs, artifacts, caches.
    #[arg(
        long,
        global = true,
        env = "RUNNER_STATE_DIR",
        default_value = ".runner"
    )]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check job files (or directories of *.yaml/*.yml); exit 2 with located errors if any is invalid.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate and queue jobs (durable when this returns); print their ids.
    Submit {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Follow the jobs until they end, like `run` (a scheduler must be running).
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run jobs in the foreground until all have ended; exit 0 if all succeeded.
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        backend: BackendArgs,
        /// Print the jobs as a JSON array on stdout at the end.
        #[arg(long)]
        json: bool,
        /// Write a JUnit XML report (one test case per job).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Long-lived scheduler: runs submitted jobs and submits new or changed files of --jobs-dir.
    Daemon {
        /// Directory whose job files are submitted once per content.
        #[arg(long, value_name = "DIR")]
        jobs_dir: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        backend: BackendArgs,
        /// Also serve mission control (pages, API, metrics) on this address, like `runner serve`.
        #[arg(long, value_name = "ADDR", value_parser = crate::serve::parse_listen)]
        listen: Option<std::net::SocketAddr>,
        /// Jobs submitted over HTTP may name local paths (`repo`, cassettes) inside DIR.
        #[arg(long, value_name = "DIR", requires = "listen")]
        jobs_from: Option<PathBuf>,
    },
    /// Mission control for this state dir: web pages, the HTTP API (/api/v1) and /metrics. Every
    /// request needs the token in <state dir>/api-token; the login URL is printed on stderr.
    Serve {
        /// Address to listen on (IP:PORT; port 0 picks a free one). Anything but loopback is
        /// reachable by others: a warning is printed.
        #[arg(long, value_name = "ADDR", default_value = crate::serve::DEFAULT_LISTEN, value_parser = crate::serve::parse_listen)]
        listen: std::net::SocketAddr,
        /// Jobs submitted over HTTP may name local paths (`repo`, cassettes) inside DIR; without
        /// it they may name none.
        #[arg(long, value_name = "DIR")]
        jobs_from: Option<PathBuf>,
    },
    /// List jobs (queued and active; --all for every job).
    Ps {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One job in full: spec, state, attempts, usage, artifacts.
    Show {
        /// Job id, unique id prefix, or name (the newest job of that name).
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// A job's output; -f follows it until the job ends. On a terminal, control characters are
    /// shown as visible escapes (`\x1b`); piped or with --raw, the output is as stored.
    Logs {
        job: String,
        #[arg(short, long)]
        follow: bool,
        /// Print the output byte for byte, control sequences included, even on a terminal.
        #[arg(long)]
        raw: bool,
    },
    /// What happened to a job, in order (every state change of every attempt); -f follows
    /// until the job ends.
    Events {
        /// Job id, unique id prefix, or name (the newest job of that name).
        job: String,
        #[arg(short, long)]
        follow: bool,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Send a message to a running agent job: typed into Aider at its next prompt and shown
    /// to the manager as the operator's instruction.
    Send {
        /// Job id, unique id prefix, or name (the newest job of that name).
        job: String,
        /// The message; `-` reads it from stdin.
        #[arg(required_unless_present = "file")]
        message: Option<String>,
        /// Read the message from this file.
        #[arg(long, conflicts_with = "message")]
        file: Option<PathBuf>,
    },
    /// Let a running agent's current turn finish, then stop its manager issuing turns (the job
    /// stays running; `runner send` talks to Aider directly meanwhile).
    Pause {
        /// Job id, unique id prefix, or name (the newest job of that name).
        job: String,
    },
    /// Hand a paused agent back to its manager.
    Resume {
        /// Job id, unique id prefix, or name (the newest job of that name).
        job: String,
    },
    /// Cancel a queued job, or stop a running one (grace, then kill).
    Cancel {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Remove containers (or Kubernetes objects) of this state dir that no live job owns, and
    /// expired logs.
    Gc {
        #[command(flatten)]
        backend: BackendArgs,
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Logs and artifacts of jobs that ended longer ago than this are removed.
        #[arg(long, default_value = "7d", value_parser = parse_duration_arg)]
        older_than: Duration,
    },
    /// Build the shipped images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Print the JSON Schema of job files (for editors: `# yaml-language-server: $schema=FILE`).
    Schema,
    /// Print a shell completion script (see the README for where to put it).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page runner(1); with --dir, write it and one page per subcommand there.
    Man {
        /// Write runner.1, runner-run.1, ... into this directory instead (e.g.
        /// ~/.local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl Command {
    /// Whether the command reads or writes the state dir (all but `validate`, `images`,
    /// `schema`, `completions` and `man`, which leave files the user's umask should govern).
    fn uses_state_dir(&self) -> bool {
        !matches!(
            self,
            Command::Validate { .. }
                | Command::Images { .. }
                | Command::Schema
                | Command::Completions { .. }
                | Command::Man { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build shipped images (all when no name is given): base, aider.
    Build {
        name: Option<String>,
        /// PEM bundle added to the image's trust store (TLS-inspecting proxies; the aider build
        /// uses the host's bundle when none is given).
        #[arg(long, env = "RUNNER_CA_BUNDLE", value_name = "FILE")]
        ca_bundle: Option<PathBuf>,
        /// The aider image's base (its BASE build argument): a Debian-based image with Python 3.10–3.12.
        #[arg(long, env = "RUNNER_AIDER_BASE", value_name = "IMAGE")]
        base: Option<String>,
        /// Install Aider from these wheels (`pip download aider-chat==0.86.2 -d DIR`) instead of a package index.
        #[arg(long, env = "RUNNER_WHEELS_DIR", value_name = "DIR")]
        wheels: Option<PathBuf>,
        /// Do nothing for images already present.
        #[arg(long)]
        if_missing: bool,
    },
}

/// Scheduler limits shared by `run` and `daemon`.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Most jobs running at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
    /// Most jobs running at once in a group, as NAME=N (repeatable).
    #[arg(long = "group-limit", value_name = "NAME=N", value_parser = parse_group_limit)]
    pub group_limits: Vec<(String, usize)>,
    /// CPU budget shared by running jobs (default: the engine's CPU count).
    #[arg(long)]
    pub host_cpus: Option<f64>,
    /// Memory budget shared by running jobs, e.g. 16g (default: the engine's memory).
    #[arg(long, value_parser = parse_size_arg)]
    pub host_memory: Option<u64>,
    /// Most LLM calls in flight to each upstream (base URL), the agents' and the managers'
    /// together; more wait for a free slot instead of provoking rate limits (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub llm_concurrency: Option<u32>,
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub stop_grace: Duration,
    /// Most output stored per attempt; beyond it the head and the tail are kept and the cut is marked.
    #[arg(long, default_value = "16m", value_parser = parse_log_cap)]
    pub log_cap: u64,
    /// A host variable jobs may read as a secret, by name or glob like `CI_*` (repeatable). None
    /// given: any variable but credentials (OPENAI_API_KEY, GITHUB_TOKEN, those of the two flags
    /// below), which must always be named exactly.
    #[arg(long = "allow-secret", value_name = "NAME|GLOB", value_parser = policy::parse_secret_pattern)]
    pub allow_secrets: Vec<String>,
    /// Jobs may send the LLM key in host variable NAME to URL and below (`llm.api_key_env`,
    /// `llm.base_url`; repeatable). Always allowed: OPENAI_API_KEY to the scheduler's
    /// OPENAI_BASE_URL/OPENAI_API_BASE and to https://api.openai.com/v1.
    #[arg(long = "allow-llm-key", value_name = "NAME=URL", value_parser = policy::parse_credential_rule)]
    pub allow_llm_keys: Vec<policy::CredentialRule>,
    /// Jobs may send the pull-request token in host variable NAME to URL and below
    /// (`output.token_env`, `output.api_url`; repeatable). Always allowed: GITHUB_TOKEN to
    /// https://api.github.com.
    #[arg(long = "allow-pr-token", value_name = "NAME=URL", value_parser = policy::parse_credential_rule)]
    pub allow_pr_tokens: Vec<policy::CredentialRule>,
}

fn parse_log_cap(s: &str) -> Result<u64, String> {
    let bytes = parse_size_arg(s)?;
    if !(1024..=(1 << 40)).contains(&bytes) {
        return Err(format!(
            "{s:?} is out of range: give a size from 1k to 1t, like 16m"
        ));
    }
    Ok(bytes)
}

fn parse_group_limit(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=N (e.g. --group-limit db=1)"))?;
    let n: usize = n
        .parse()
        .map_err(|_| format!("{n:?} is not a number (e.g. --group-limit db=1)"))?;
    if n == 0 {
        return Err("a group limit must be at least 1".into());
    }
    Ok((name.to_string(), n))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::job::units::parse_duration(s)
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::job::units::parse_size(s).map(|b| b.0)
}

impl LimitArgs {
    fn config(&self, state_dir: &Path) -> Result<crate::scheduler::SchedulerConfig, Failure> {
        let mut config = crate::scheduler::SchedulerConfig::new(state_dir);
        config.prices = load_prices(state_dir)?;
        config.parallel = self.parallel as usize;
        config.group_limits = self.group_limits.iter().cloned().collect();
        config.host_cpus = self.host_cpus;
        config.host_memory = self.host_memory;
        config.llm_concurrency = self.llm_concurrency.map(|n| n as usize);
        config.attempt.stop_grace = self.stop_grace;
        config.attempt.log_cap = self.log_cap;
        config.attempt.policy = policy::Policy::new(
            self.allow_secrets.clone(),
            self.allow_llm_keys.clone(),
            self.allow_pr_tokens.clone(),
        );
        Ok(config)
    }
}

/// The price table: built in, plus `RUNNER_PRICES` or `<state dir>/prices.json` when present.
fn load_prices(state_dir: &Path) -> Result<crate::llm::Prices, Failure> {
    let file = std::env::var_os("RUNNER_PRICES")
        .map(PathBuf::from)
        .or_else(|| Some(state_dir.join("prices.json")).filter(|p| p.exists()));
    crate::llm::Prices::load(file.as_deref()).map_err(Failure::invalid)
}

/// Runs the parsed command line; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    // Absolute, so that the paths stored for artifacts still name them for a process started in
    // another directory (`runner serve` serving an artifact of `runner run --state-dir .runner`).
    let state_dir = std::path::absolute(&cli.state_dir).unwrap_or_else(|_| cli.state_dir.clone());
    if cli.command.uses_state_dir() {
        // Before anything opens the state dir: what it holds is for this user only.
        crate::store::private::restrict_umask();
    }
    let result: CmdResult = match cli.command {
        Command::Validate { paths } => validate::run(&paths),
        Command::Submit { paths, wait, json } => submit::run(&state_dir, &paths, wait, json).await,
        Command::Run {
            paths,
            limits,
            backend,
            json,
            junit,
        } => {
            run::run(
                &state_dir,
                &paths,
                &limits,
                &backend,
                json,
                junit.as_deref(),
            )
            .await
        }
        Command::Daemon {
            jobs_dir,
            limits,
            backend,
            listen,
            jobs_from,
        } => daemon::run(&state_dir, jobs_dir, &limits, &backend, listen, jobs_from).await,
        Command::Serve { listen, jobs_from } => serve::run(&state_dir, listen, jobs_from).await,
        Command::Ps { all, json } => ps::run(&state_dir, all, json),
        Command::Show { job, json } => show::run(&state_dir, &job, json),
        Command::Logs { job, follow, raw } => logs::run(&state_dir, &job, follow, raw).await,
        Command::Events { job, follow, json } => events::run(&state_dir, &job, follow, json).await,
        Command::Send { job, message, file } => {
            send::run(&state_dir, &job, message.as_deref(), file.as_deref())
        }
        Command::Pause { job } => pause::run(&state_dir, &job, true),
        Command::Resume { job } => pause::run(&state_dir, &job, false),
        Command::Cancel { jobs } => cancel::run(&state_dir, &jobs),
        Command::Gc {
            backend,
            dry_run,
            older_than,
        } => gc::run(&state_dir, &backend, dry_run, older_than).await,
        Command::Schema => schema::run(),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { dir } => completions::man(dir.as_deref()),
        Command::Images { command } => match command {
            ImagesCommand::Build {
                name,
                ca_bundle,
                base,
                wheels,
                if_missing,
            } => {
                images::build(
                    &state_dir,
                    name.as_deref(),
                    ca_bundle,
                    base,
                    wheels,
                    if_missing,
                )
                .await
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("runner: {}", failure.message);
            failure.code
        }
    }
}

/// Opens the state dir's store (exit 3 when that fails).
fn open_store(state_dir: &Path) -> Result<crate::store::Store, Failure> {
    Ok(crate::store::Store::open(state_dir)?)
}

/// Connects to Docker (exit 3 naming DOCKER_HOST when unreachable).
async fn connect_docker() -> Result<crate::sandbox::DockerSandbox, Failure> {
    Ok(crate::sandbox::DockerSandbox::connect().await?)
}

/// Loads job files, printing every error; exit 2 if any is invalid.
/// `consequence` ends the summary line ("nothing was submitted").
fn load_jobs(paths: &[PathBuf], consequence: &str) -> Result<Vec<crate::job::LoadedJob>, Failure> {
    let (loaded, errors) = crate::job::load_paths(paths);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        return Err(Failure::invalid(format!(
            "{} problem{} in job files{consequence}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(loaded)
}

/// Resolves the shutdown signals: the first SIGINT/SIGTERM drains, the second stops running jobs,
/// a third leaves at once.
fn install_signals() -> crate::scheduler::Shutdown {
    let shutdown = crate::scheduler::Shutdown::default();
    let s = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("runner: draining: no new jobs start, running jobs finish (signal again to stop them)");
                s.drain.cancel();
            } else if count == 2 {
                eprintln!("runner: stopping running jobs (grace, then kill; signal again to leave at once)");
                s.kill.cancel();
            } else {
                // Containers left running are adopted by the next scheduler on this state dir.
                eprintln!(
                    "runner: leaving now; running containers are adopted by the next scheduler"
                );
                std::process::exit(130);
            }
        }
    });
    shutdown
}
