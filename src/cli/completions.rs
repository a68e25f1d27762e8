//! `runner completions SHELL` and `runner man`: shell completions (clap_complete) and man pages
//! (clap_mangen), generated from the same clap definitions that parse the command line, so they
//! never drift from it.

use super::exit::{CmdResult, Failure, SUCCESS};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> CmdResult {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "runner", &mut out);
    write_stdout(&out)
}

/// Prints the man page `runner(1)` on stdout, or with `dir` writes it there with one page per
/// subcommand (`runner-run.1`, `runner-images-build.1`, ...).
pub fn man(dir: Option<&Path>) -> CmdResult {
    // `runner help` has no page of its own: `--help` is on every page.
    let cmd = super::Cli::command().disable_help_subcommand(true);
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Failure::environment(format!("cannot render the man page: {e}")))?;
        return write_stdout(&out);
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::environment(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(SUCCESS)
}

/// Writes `cmd`'s page and, recursively, its subcommands' pages (named `runner-sub-sub.1`).
fn write_pages(
    cmd: clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<(), Failure> {
    let cmd = cmd.disable_help_subcommand(true);
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .and_then(|()| std::fs::write(&path, &page))
        .map_err(|e| Failure::environment(format!("cannot write {}: {e}", path.display())))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub = sub
            .clone()
            .display_name(format!("{name}-{}", sub.get_name()))
            .bin_name(format!(
                "{} {}",
                cmd.get_bin_name().unwrap_or(&name),
                sub.get_name()
            ));
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`runner man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(SUCCESS),
        Err(e) => Err(Failure::environment(format!("cannot write to stdout: {e}"))),
    }
}
