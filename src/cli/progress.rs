//! Live progress on stderr, drawn from the store's events (the ones `runner events` and
//! `runner show` print): a line per job with a spinner on a terminal, plain lines otherwise.

use crate::state::{JobId, JobState};
use crate::store::{EventBody, EventRecord};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Shows jobs' events as they are recorded.
pub struct Progress {
    bars: Option<(MultiProgress, HashMap<JobId, ProgressBar>)>,
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

    /// Shows one event of the job named `name`: as its bar's message (the bar ends with the
    /// job), or as a plain line. The text is [`super::events::describe`]'s: one line, nothing
    /// that steers a terminal.
    pub fn show(&mut self, name: &str, event: &EventRecord) {
        let what = super::events::describe(&event.body);
        let Some((multi, bars)) = &mut self.bars else {
            eprintln!("{} {name} {} {}", event.at, event.job_id, what.trim_end());
            return;
        };
        let bar = bars.entry(event.job_id.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(format!("{name} {}", event.job_id));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(what);
        if let EventBody::State { state, .. } = &event.body {
            if state.is_terminal() {
                let mark = if *state == JobState::Succeeded {
                    "✔"
                } else {
                    "✘"
                };
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{mark} {{prefix:.bold}} {{elapsed:>4}} {{wide_msg}}"
                    ))
                    .expect("valid template"),
                );
                bar.finish();
            }
        }
    }
}
