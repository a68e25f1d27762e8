//! Build output as the user sees it: the runner's own status lines, and the engine's build
//! stream turned into readable lines on stderr.

use bollard::models::BuildInfo;
use std::io::Write;

pub(super) fn progress(line: &str) {
    eprintln!("runner: {line}");
}

/// Turns the engine's build output into readable lines on stderr: each step, then the output of
/// its command, indented; layer ids and intermediate-container chatter are dropped.
#[derive(Default)]
pub(super) struct BuildPrinter {
    /// Output text after the last newline (the engine splits lines across messages).
    partial: String,
    /// The last status line (pull progress repeats them).
    last_status: Option<String>,
    /// How many steps have started.
    pub(super) steps: u32,
}

impl BuildPrinter {
    /// Prints what `info` carries; returns the error message when the build failed.
    pub(super) fn show(&mut self, info: &BuildInfo) -> Option<String> {
        if let Some(text) = &info.stream {
            self.partial.push_str(text);
            while let Some(end) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=end).collect();
                if line.starts_with("Step ") {
                    self.steps += 1;
                }
                self.print(&line);
            }
        }
        if let Some(status) = &info.status {
            let line = match &info.id {
                Some(id) => format!("{id}: {status}"),
                None => status.clone(),
            };
            if info.progress.is_none() && self.last_status.as_ref() != Some(&line) {
                self.print(&line);
                self.last_status = Some(line);
            }
        }
        let detail = info.error_detail.as_ref().and_then(|d| d.message.clone());
        detail.or_else(|| info.error.clone())
    }

    /// Prints a line left without a newline.
    pub(super) fn finish(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        self.print(&rest);
    }

    fn print(&self, raw: &str) {
        if let Some(line) = readable(raw) {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{line}");
        }
    }
}

/// One line of build output as shown to the user, or `None` for noise.
fn readable(raw: &str) -> Option<String> {
    let line = strip_ansi(raw);
    let line = line.trim_end();
    let trimmed = line.trim_start();
    if trimmed.is_empty()
        || trimmed.starts_with("--->")
        || trimmed.starts_with("Removing intermediate container")
        || trimmed.starts_with("Successfully built")
    {
        return None;
    }
    if let Some(step) = line.strip_prefix("Step ") {
        // Long RUN lines (the warm-up) would wrap over several screen lines.
        let step: String = step.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut shown: String = step.chars().take(100).collect();
        if shown.len() < step.len() {
            shown.truncate(shown.trim_end().len());
            shown.push_str(" …");
        }
        return Some(format!("runner: aider: step {shown}"));
    }
    Some(format!("    {line}"))
}

/// Removes terminal escape sequences (`ESC [ ... letter`) and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_is_readable() {
        assert_eq!(
            readable("Step 5/15 : RUN sh /tmp/runner/setup-base.sh\n").as_deref(),
            Some("runner: aider: step 5/15 : RUN sh /tmp/runner/setup-base.sh")
        );
        let long = format!("Step 15/15 : RUN {}\n", "x ".repeat(100));
        let shown = readable(&long).unwrap();
        assert!(
            shown.ends_with(" x …") && shown.chars().count() < 130,
            "{shown}"
        );
        assert_eq!(readable(" ---> Running in 74bafa4b9bb5\n"), None);
        assert_eq!(readable(" ---> 93bb8707460b\n"), None);
        assert_eq!(
            readable("Removing intermediate container 74bafa4b9bb5\n"),
            None
        );
        assert_eq!(readable("\n"), None);
        assert_eq!(
            readable("\u{1b}[0mCollecting aider-chat==0.86.2\r\n").as_deref(),
            Some("    Collecting aider-chat==0.86.2")
        );
    }

    #[test]
    fn lines_split_across_messages_are_joined_and_errors_returned() {
        let mut printer = BuildPrinter::default();
        let stream = |s: &str| BuildInfo {
            stream: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(printer.show(&stream("Step 1/2 : ARG")), None);
        assert_eq!(printer.partial, "Step 1/2 : ARG");
        printer.show(&stream(" BASE\nout"));
        assert_eq!(printer.partial, "out");
        assert_eq!(printer.steps, 1);
        let failed = BuildInfo {
            error: Some("old".into()),
            error_detail: Some(bollard::models::ErrorDetail {
                code: Some(1),
                message: Some("The command '/bin/sh -c x' returned a non-zero code: 1".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            printer.show(&failed).as_deref(),
            Some("The command '/bin/sh -c x' returned a non-zero code: 1")
        );
    }
}
