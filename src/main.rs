use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    // Die quietly on a closed pipe (`runner ps | head`) like other command-line tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread uses it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = runner::cli::Cli::parse();
    let default = if matches!(cli.command, runner::cli::Command::Daemon { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RUNNER_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(runner::cli::main(cli).await);
}
