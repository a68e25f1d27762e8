//! Live progress on stderr: a line per job with a spinner on a terminal, plain lines otherwise.

use crate::scheduler::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Shows job state changes as they happen.
pub struct Progress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                HashMap::new(),
            )
        });
        Progress { bars }
    }

    /// Ends the display, leaving the cursor on a fresh line.
    pub fn done(self) {
        if let Some((multi, bars)) = self.bars {
            drop(bars);
            drop(multi);
            eprintln!();
        }
    }

    pub fn show(&mut self, event: &Event) {
        // The detail may quote the manager or the job: one line, nothing that steers a terminal.
        let detail = event
            .detail
            .as_deref()
            .map(|d| format!(": {}", super::terminal::one_line(d)))
            .unwrap_or_default();
        let Some((multi, bars)) = &mut self.bars else {
            eprintln!(
                "{} {} {} {}{detail}",
                crate::state::now_rfc3339(),
                event.name,
                event.job,
                event.state
            );
            return;
        };
        let bar = bars.entry(event.job.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(format!("{} {}", event.name, event.job));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(format!("{}{detail}", event.state));
        if event.state.is_terminal() {
            let mark = if event.state == crate::state::JobState::Succeeded {
                "✔"
            } else {
                "✘"
            };
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{mark} {{prefix:.bold}} {{elapsed:>4}} {{msg}}"
                ))
                .expect("valid template"),
            );
            bar.finish();
        }
    }
}
